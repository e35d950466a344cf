//! Offline lookups in a breached-password corpus: the SHA-1 of every password seen in public
//! breaches, as the public corpora distribute it. Nothing is ever sent anywhere: the corpus is
//! a file or a directory the operator downloaded.
//!
//! Two layouts are read, the two the corpora come in:
//! - **sorted**: one file, one upper- or lower-case SHA-1 in hex per line, optionally followed
//!   by `:count`, sorted by hash (the "ordered by hash" download). Looked up by binary search
//!   over the file, so a corpus of tens of gigabytes costs a few dozen reads, not memory.
//! - **prefix range**: a directory of files named by the hash's first five hex digits
//!   (`ABCDE` or `ABCDE.txt`), each line the remaining 35 digits and `:count` (the layout of
//!   the range API, downloaded).

use crate::Password;
use sha1::Digest as _;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BreachedError {
    #[error("cannot read the breached-password corpus {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A breached-password corpus on disk.
#[derive(Debug, Clone)]
pub enum BreachedPasswords {
    Sorted(PathBuf),
    PrefixRange(PathBuf),
}

impl BreachedPasswords {
    /// A directory is read as the prefix-range layout, a file as the sorted one.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, BreachedError> {
        let path = path.into();
        let metadata = std::fs::metadata(&path).map_err(|source| io(&path, source))?;
        Ok(if metadata.is_dir() {
            Self::PrefixRange(path)
        } else {
            Self::Sorted(path)
        })
    }

    /// Whether `password` is in the corpus. Blocking file reads: call it off the async
    /// threads.
    pub fn contains(&self, password: &Password) -> Result<bool, BreachedError> {
        let digest = sha1::Sha1::digest(password.expose_secret().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        match self {
            Self::Sorted(path) => sorted_contains(path, &hex),
            Self::PrefixRange(dir) => range_contains(dir, &hex),
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> BreachedError {
    BreachedError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The hash part of a corpus line, upper-cased (`HASH[:count]`, any line ending).
fn hash_of(line: &str) -> String {
    line.trim_end()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

fn sorted_contains(path: &Path, hex: &str) -> Result<bool, BreachedError> {
    let mut file = File::open(path).map_err(|e| io(path, e))?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    // Invariant: a line equal to `hex`, if any, starts in [lo, hi).
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let Some((start, line)) = line_at_or_after(&mut file, mid).map_err(|e| io(path, e))? else {
            hi = mid;
            continue;
        };
        if start >= hi {
            hi = mid;
            continue;
        }
        match hash_of(&line).as_str().cmp(hex) {
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Less => lo = start + line.len() as u64,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(false)
}

/// The first whole line starting at or after `pos`: its offset and its text (with its line
/// ending, so that offset + length is the next line's start).
fn line_at_or_after(file: &mut File, pos: u64) -> std::io::Result<Option<(u64, String)>> {
    let start_search = pos.saturating_sub(1);
    file.seek(SeekFrom::Start(start_search))?;
    let mut reader = BufReader::new(file.by_ref());
    let mut start = start_search;
    if pos > 0 {
        // Skip the rest of the line `pos - 1` is in: a line starts after a newline.
        let mut skipped = Vec::new();
        let n = reader.read_until(b'\n', &mut skipped)?;
        if n == 0 {
            return Ok(None);
        }
        start += n as u64;
    }
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some((start, line)))
}

fn range_contains(dir: &Path, hex: &str) -> Result<bool, BreachedError> {
    let (prefix, suffix) = hex.split_at(5);
    let candidates = [dir.join(prefix), dir.join(format!("{prefix}.txt"))];
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        // No file for the prefix: nothing breached starts with it.
        return Ok(false);
    };
    let file = File::open(path).map_err(|e| io(path, e))?;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| io(path, e))?;
        if hash_of(&line) == suffix {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sha1_hex(password: &str) -> String {
        sha1::Sha1::digest(password.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    #[test]
    fn finds_every_entry_of_a_sorted_file_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let breached: Vec<String> = (0..500).map(|i| format!("password{i}")).collect();
        let mut lines: Vec<String> = breached.iter().map(|p| sha1_hex(p)).collect();
        lines.sort();
        let path = dir.path().join("ordered-by-hash.txt");
        let mut file = File::create(&path).expect("create");
        for (i, hash) in lines.iter().enumerate() {
            // Mixed case and line endings, with and without counts, as downloads have them.
            let hash = if i % 3 == 0 {
                hash.to_lowercase()
            } else {
                hash.clone()
            };
            let ending = if i % 2 == 0 { "\r\n" } else { "\n" };
            if i % 5 == 0 {
                write!(file, "{hash}{ending}").expect("write");
            } else {
                write!(file, "{hash}:{i}{ending}").expect("write");
            }
        }
        drop(file);
        let corpus = BreachedPasswords::open(&path).expect("open");
        assert!(matches!(corpus, BreachedPasswords::Sorted(_)));
        for password in &breached {
            assert!(
                corpus
                    .contains(&Password::new(password.as_str()))
                    .expect("read"),
                "{password}"
            );
        }
        for password in ["password500", "correct horse battery staple", ""] {
            assert!(
                !corpus.contains(&Password::new(password)).expect("read"),
                "{password}"
            );
        }
    }

    #[test]
    fn finds_entries_of_the_prefix_range_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, password) in ["hunter2", "letmein", "qwerty123"].iter().enumerate() {
            let hex = sha1_hex(password);
            let (prefix, suffix) = hex.split_at(5);
            let name = if i == 0 {
                format!("{prefix}.txt")
            } else {
                prefix.to_owned()
            };
            std::fs::write(
                dir.path().join(name),
                format!("0000000000000000000000000000000000A:1\r\n{suffix}:42\r\n"),
            )
            .expect("write");
        }
        let corpus = BreachedPasswords::open(dir.path()).expect("open");
        assert!(matches!(corpus, BreachedPasswords::PrefixRange(_)));
        for password in ["hunter2", "letmein", "qwerty123"] {
            assert!(
                corpus.contains(&Password::new(password)).expect("read"),
                "{password}"
            );
        }
        assert!(!corpus.contains(&Password::new("hunter3")).expect("read"));
    }
}

//! Stored password hashes, parsed once into a typed value and verified in constant time.

use crate::argon2id::{Argon2Config, Argon2Hash, Scratch};
use base64::Engine as _;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Which format the stored hashes are in: named, or detected from each string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashFormat {
    /// Detect from the string's prefix.
    #[default]
    Auto,
    /// `$2a$`, `$2b$`, `$2y$` (and `$2x$`) bcrypt.
    Bcrypt,
    /// `$argon2id$`, `$argon2i$`, `$argon2d$` PHC strings.
    Argon2,
    /// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`.
    DjangoPbkdf2Sha256,
}

/// The scheme a stored hash uses: a bounded set, safe for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashScheme {
    Argon2id,
    Argon2i,
    Argon2d,
    Bcrypt,
    DjangoPbkdf2Sha256,
}

impl HashScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            HashScheme::Argon2id => "argon2id",
            HashScheme::Argon2i => "argon2i",
            HashScheme::Argon2d => "argon2d",
            HashScheme::Bcrypt => "bcrypt",
            HashScheme::DjangoPbkdf2Sha256 => "django_pbkdf2_sha256",
        }
    }
}

/// A stored hash that could not be parsed. Carries only the first characters of the string,
/// enough for an operator to recognize the format and never enough to leak the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored password hash starting with {prefix:?} is not a valid {expected} hash")]
pub struct ParseHashError {
    pub prefix: String,
    pub expected: &'static str,
}

impl ParseHashError {
    fn new(stored: &str, expected: &'static str) -> Self {
        // At most 4 characters: "$2b$", "$arg", "pbkd" identify a format; more would start
        // revealing salt or cost details of a real user's hash.
        Self {
            prefix: stored.chars().take(4).collect(),
            expected,
        }
    }
}

/// A parsed stored hash.
#[derive(Clone)]
pub struct StoredHash(Inner);

#[derive(Clone)]
enum Inner {
    Argon2(Argon2Hash),
    Bcrypt(String),
    DjangoPbkdf2Sha256 {
        iterations: u32,
        salt: String,
        expected: Vec<u8>,
    },
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredHash({})", self.scheme().as_str())
    }
}

/// Django caps nothing, but a stored iteration count is data: refuse absurd ones rather than
/// spin a hashing thread for minutes.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

impl StoredHash {
    /// Parse `stored` as `format`.
    pub fn parse(stored: &str, format: HashFormat) -> Result<Self, ParseHashError> {
        let format = match format {
            HashFormat::Auto => Self::detect(stored).ok_or_else(|| {
                ParseHashError::new(stored, "recognized (bcrypt, argon2, Django PBKDF2)")
            })?,
            named => named,
        };
        match format {
            HashFormat::Argon2 => Argon2Hash::parse(stored)
                .map(|h| Self(Inner::Argon2(h)))
                .ok_or_else(|| ParseHashError::new(stored, "argon2 PHC")),
            HashFormat::Bcrypt => parse_bcrypt(stored)
                .map(|s| Self(Inner::Bcrypt(s)))
                .ok_or_else(|| ParseHashError::new(stored, "bcrypt")),
            HashFormat::DjangoPbkdf2Sha256 => parse_django_pbkdf2(stored)
                .ok_or_else(|| ParseHashError::new(stored, "Django pbkdf2_sha256")),
            HashFormat::Auto => unreachable_auto(stored),
        }
    }

    fn detect(stored: &str) -> Option<HashFormat> {
        if ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            Some(HashFormat::Bcrypt)
        } else if stored.starts_with("$argon2") {
            Some(HashFormat::Argon2)
        } else if stored.starts_with("pbkdf2_sha256$") {
            Some(HashFormat::DjangoPbkdf2Sha256)
        } else {
            None
        }
    }

    pub fn scheme(&self) -> HashScheme {
        match &self.0 {
            Inner::Argon2(h) => match h.algorithm {
                argon2::Algorithm::Argon2id => HashScheme::Argon2id,
                argon2::Algorithm::Argon2i => HashScheme::Argon2i,
                argon2::Algorithm::Argon2d => HashScheme::Argon2d,
            },
            Inner::Bcrypt(_) => HashScheme::Bcrypt,
            Inner::DjangoPbkdf2Sha256 { .. } => HashScheme::DjangoPbkdf2Sha256,
        }
    }

    /// Whether a successful login should re-hash the password with the current argon2id
    /// parameters.
    pub fn needs_upgrade(&self, config: &Argon2Config) -> bool {
        match &self.0 {
            Inner::Argon2(h) => config.is_weaker(h.algorithm, h.version, &h.params),
            Inner::Bcrypt(_) | Inner::DjangoPbkdf2Sha256 { .. } => true,
        }
    }

    pub(crate) fn verify(
        &self,
        scratch: &mut Scratch,
        keep_blocks: usize,
        password: &[u8],
    ) -> bool {
        match &self.0 {
            Inner::Argon2(h) => h.verify(scratch, keep_blocks, password),
            // bcrypt::verify compares in constant time and, like the PHP/Python/C
            // implementations legacy apps used, only looks at the first 72 bytes.
            Inner::Bcrypt(stored) => bcrypt::verify(password, stored).unwrap_or(false),
            Inner::DjangoPbkdf2Sha256 {
                iterations,
                salt,
                expected,
            } => {
                let mut out = vec![0u8; expected.len()];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    password,
                    salt.as_bytes(),
                    *iterations,
                    &mut out,
                );
                bool::from(out.ct_eq(expected))
            }
        }
    }
}

// `Auto` is resolved by `detect` before the second match; keep the compiler honest without
// a panic path that a request could reach.
fn unreachable_auto(stored: &str) -> Result<StoredHash, ParseHashError> {
    Err(ParseHashError::new(stored, "recognized"))
}

fn parse_bcrypt(stored: &str) -> Option<String> {
    // $2b$12$ + 53 characters of salt and hash.
    let bytes = stored.as_bytes();
    let well_formed = stored.len() == 60
        && ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| stored.starts_with(p))
        && bytes[6] == b'$'
        && stored[4..6]
            .parse::<u32>()
            .is_ok_and(|cost| (4..=31).contains(&cost))
        && stored[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    well_formed.then(|| stored.to_owned())
}

fn parse_django_pbkdf2(stored: &str) -> Option<StoredHash> {
    let mut parts = stored.split('$');
    let (Some("pbkdf2_sha256"), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let iterations: u32 = iterations.parse().ok()?;
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS || salt.is_empty() {
        return None;
    }
    let expected = base64::engine::general_purpose::STANDARD
        .decode(hash)
        .ok()?;
    if expected.is_empty() {
        return None;
    }
    Some(StoredHash(Inner::DjangoPbkdf2Sha256 {
        iterations,
        salt: salt.to_owned(),
        expected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(stored: &str, password: &str) -> bool {
        let hash = StoredHash::parse(stored, HashFormat::Auto).expect("parses");
        hash.verify(&mut Scratch::default(), 1 << 20, password.as_bytes())
    }

    // Vectors produced by the reference implementations, not by this crate:
    // bcrypt.hashpw(b"password", gensalt(4)) (Python bcrypt), Django 5's
    // make_password("correct horse"), argon2-cffi PasswordHasher(t=1, m=1024, p=1).hash("pässwörd").
    const BCRYPT_2B: &str = "$2b$04$qNfuqQRa6pvV465bs0i8MuQgpfGq/QdX9J.UDjEMrSx5motZzhXQK";
    const DJANGO: &str =
        "pbkdf2_sha256$1000000$hjZviU2rfKZb8h3ni18KjQ$cFjf41KwwN9deZy48DGkP87G2+no8aimGEp4snJXhzk=";
    const ARGON2_CFFI: &str = "$argon2id$v=19$m=1024,t=1,p=1$xqYH3E9892/9d5YtledHrg$afUNDguUbm4dSht18KO5FRbrygHaU0lVx3c/rLlNMCc";

    #[test]
    fn parse_errors_show_only_a_prefix() {
        let err = StoredHash::parse("$2b$10$abcdefghijklmnopqrstuvwxyz", HashFormat::Auto)
            .expect_err("too short for bcrypt");
        assert_eq!(err.prefix, "$2b$");
        assert!(!err.to_string().contains("abcdef"));
        let err = StoredHash::parse("5f4dcc3b5aa765d61d8327deb882cf99", HashFormat::Auto)
            .expect_err("plain digests are never guessed");
        assert_eq!(err.prefix, "5f4d");
    }

    #[test]
    fn bcrypt_from_reference_vector() {
        assert!(verify(BCRYPT_2B, "password"));
        assert!(!verify(BCRYPT_2B, "Password"));
    }

    #[test]
    fn django_from_reference_vector() {
        assert!(verify(DJANGO, "correct horse"));
        assert!(!verify(DJANGO, "correct horse "));
    }

    #[test]
    fn argon2_from_reference_vector() {
        assert!(verify(ARGON2_CFFI, "pässwörd"));
        assert!(!verify(ARGON2_CFFI, "passwörd"));
    }

    #[test]
    fn argon2_phc_round_trip_and_upgrade_rules() {
        let config = Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let mut scratch = Scratch::default();
        let phc =
            crate::argon2id::hash(&config, &mut scratch, "pässwörd".as_bytes()).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let parsed = StoredHash::parse(&phc, HashFormat::Argon2).expect("parses");
        assert_eq!(parsed.scheme(), HashScheme::Argon2id);
        assert!(parsed.verify(&mut scratch, 1024, "pässwörd".as_bytes()));
        assert!(!parsed.verify(&mut scratch, 1024, "passwörd".as_bytes()));
        assert!(!parsed.needs_upgrade(&config));
        assert!(parsed.needs_upgrade(&Argon2Config::default()));
        assert!(
            StoredHash::parse(BCRYPT_2B, HashFormat::Bcrypt)
                .expect("bcrypt")
                .needs_upgrade(&config)
        );
    }

    #[test]
    fn corrupted_hashes_are_rejected_not_verified() {
        for bad in [
            "$2b$99$qNfuqQRa6pvV465bs0i8MuQgpfGq/QdX9J.UDjEMrSx5motZzhXQK",
            "$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$aGFzaA",
            "pbkdf2_sha256$0$salt$aGFzaA==",
            "pbkdf2_sha256$1000$salt$!!!",
            "",
        ] {
            assert!(StoredHash::parse(bad, HashFormat::Auto).is_err(), "{bad}");
        }
    }
}

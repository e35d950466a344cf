//! Unix crypt: SHA-512 (`$6$`), SHA-256 (`$5$`) and MD5 (`$1$`).

use super::*;

pub(super) fn parse_crypt(stored: &str) -> Option<Inner> {
    if let Some(rest) = stored.strip_prefix("$1$") {
        let (salt, hash) = rest.split_once('$')?;
        if salt.is_empty() || salt.len() > 8 || hash.len() != 22 {
            return None;
        }
        return Some(Inner::Md5Crypt {
            salt: salt.to_owned(),
            expected: stored.to_owned(),
        });
    }
    let sha512 = stored.starts_with("$6$");
    if !sha512 && !stored.starts_with("$5$") {
        return None;
    }
    // rounds=N is optional; refuse absurd counts before the crate would run them.
    if let Some(rounds) = stored[3..].strip_prefix("rounds=") {
        let n: u32 = rounds.split('$').next()?.parse().ok()?;
        if n > MAX_ITERATIONS {
            return None;
        }
    }
    let fields = stored.split('$').count();
    (4..=5).contains(&fields).then(|| Inner::ShaCrypt {
        hash: stored.to_owned(),
        sha512,
    })
}

/// The MD5-based crypt(3) of FreeBSD and glibc (`$1$`).
pub(super) fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    let alt = md5::Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = md5::Md5::new()
        .chain_update(password)
        .chain_update(b"$1$")
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize().to_vec();
    for round in 0..1000 {
        let mut c = md5::Md5::new();
        if round & 1 == 1 {
            c.update(password)
        } else {
            c.update(&fin)
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(&fin)
        } else {
            c.update(password)
        }
        fin = c.finalize().to_vec();
    }
    let mut out = format!("$1${}$", String::from_utf8_lossy(salt));
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        to64(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    to64(u32::from(fin[11]), 2);
    out
}

//! phpass (WordPress `$P$`, phpBB `$H$`) and Drupal 7 (`$S$`): iterated MD5 / SHA-512.

use super::*;

pub(super) fn parse_phpass(stored: &str, drupal: bool) -> Option<Inner> {
    let prefix_ok = if drupal {
        stored.starts_with("$S$")
    } else {
        stored.starts_with("$P$") || stored.starts_with("$H$")
    };
    let expected_len = if drupal { 55 } else { 34 };
    if !prefix_ok || stored.len() != expected_len || !stored.is_ascii() {
        return None;
    }
    let count_log2 = u32::try_from(ITOA64.iter().position(|&c| c == stored.as_bytes()[3])?).ok()?;
    if !(7..=30).contains(&count_log2) || (drupal && count_log2 > 24) {
        return None;
    }
    Some(Inner::Phpass {
        drupal,
        count_log2,
        salt: stored[4..12].to_owned(),
        expected: stored.to_owned(),
    })
}

/// phpass's own base64 (least significant bits first).
pub(super) fn encode64(input: &[u8], count: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    let itoa = |v: u32| ITOA64[(v & 0x3f) as usize] as char;
    while i < count {
        let mut value = u32::from(input[i]);
        i += 1;
        out.push(itoa(value));
        if i < count {
            value |= u32::from(input[i]) << 8;
        }
        out.push(itoa(value >> 6));
        if i >= count {
            break;
        }
        i += 1;
        if i < count {
            value |= u32::from(input[i]) << 16;
        }
        out.push(itoa(value >> 12));
        if i >= count {
            break;
        }
        i += 1;
        out.push(itoa(value >> 18));
    }
    out
}

pub(super) fn phpass(
    password: &[u8],
    ident: &str,
    salt: &str,
    count_log2: u32,
    drupal: bool,
) -> String {
    let count = 1u64 << count_log2;
    let (hash, len) = if drupal {
        let mut hash = sha2::Sha512::new()
            .chain_update(salt.as_bytes())
            .chain_update(password)
            .finalize()
            .to_vec();
        for _ in 0..count {
            hash = sha2::Sha512::new()
                .chain_update(&hash)
                .chain_update(password)
                .finalize()
                .to_vec();
        }
        (hash, 55)
    } else {
        let mut hash = md5::Md5::new()
            .chain_update(salt.as_bytes())
            .chain_update(password)
            .finalize()
            .to_vec();
        for _ in 0..count {
            hash = md5::Md5::new()
                .chain_update(&hash)
                .chain_update(password)
                .finalize()
                .to_vec();
        }
        (hash, 34)
    };
    let mut out = format!(
        "{ident}{}{salt}{}",
        ITOA64[count_log2 as usize] as char,
        encode64(&hash, hash.len())
    );
    out.truncate(len);
    out
}

//! scrypt in its PHC form (`$scrypt$ln=…,r=…,p=…$salt$hash`).

use super::*;

pub(super) fn parse_scrypt(stored: &str) -> Option<Inner> {
    let ("scrypt", params, salt, hash) = dollar_fields(stored)? else {
        return None;
    };
    let (mut log_n, mut r, mut p) = (None, None, None);
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=')?;
        match k {
            "ln" => log_n = v.parse::<u8>().ok(),
            "r" => r = v.parse::<u32>().ok(),
            "p" => p = v.parse::<u32>().ok(),
            _ => return None,
        }
    }
    let (log_n, r, p) = (log_n?, r?, p?);
    let memory = 128u64
        .checked_mul(u64::from(r))?
        .checked_mul(1u64.checked_shl(u32::from(log_n))?)?;
    if memory > MAX_SCRYPT_MEMORY || u64::from(p) > 16 {
        return None;
    }
    let params = scrypt::Params::new(log_n, r, p).ok()?;
    let salt = b64_any(salt)?;
    let expected = b64_any(hash)?;
    (!expected.is_empty()).then_some(Inner::Scrypt {
        params,
        salt,
        expected,
    })
}

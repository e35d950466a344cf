//! ASP.NET: Identity v2/v3 (base64 of a versioned PBKDF2 record) and Membership SHA-1
//! (a base64 digest with the salt in its own column).

use super::*;

/// ASP.NET Identity: v2 is 0x00 | salt(16) | subkey(32); v3 is 0x01 | prf | iterations |
/// salt length (big-endian u32 each) | salt | subkey.
pub(super) fn looks_like_aspnet_identity(stored: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(stored) else {
        return false;
    };
    match bytes.first() {
        Some(0x00) => bytes.len() == 49,
        Some(0x01) => bytes.len() >= 13 + 16 && bytes.get(1..4) == Some(&[0, 0, 0]),
        _ => false,
    }
}

pub(super) fn parse_aspnet_identity(stored: &str) -> Option<Inner> {
    let bytes = STANDARD.decode(stored).ok()?;
    match bytes.first()? {
        0x00 if bytes.len() == 49 => Some(Inner::Pbkdf2 {
            prf: Prf::Sha1,
            iterations: 1000,
            salt: bytes[1..17].to_vec(),
            expected: bytes[17..].to_vec(),
            scheme: HashScheme::AspnetIdentityV2,
        }),
        0x01 => {
            let u32_at = |i: usize| -> Option<u32> {
                Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
            };
            let prf = match u32_at(1)? {
                0 => Prf::Sha1,
                1 => Prf::Sha256,
                2 => Prf::Sha512,
                _ => return None,
            };
            let iterations = u32_at(5)?;
            let salt_len = usize::try_from(u32_at(9)?).ok()?;
            if iterations == 0 || iterations > MAX_ITERATIONS || salt_len < 8 {
                return None;
            }
            let salt = bytes.get(13..13 + salt_len)?.to_vec();
            let expected = bytes.get(13 + salt_len..)?.to_vec();
            (expected.len() >= 16).then_some(Inner::Pbkdf2 {
                prf,
                iterations,
                salt,
                expected,
                scheme: HashScheme::AspnetIdentityV3,
            })
        }
        _ => None,
    }
}

pub(super) fn parse_membership(stored: &str, salt: Option<&str>) -> Option<StoredHash> {
    let digest = DigestHash {
        algorithm: DigestAlgorithm::Sha1,
        salt: STANDARD.decode(salt?.trim()).ok()?,
        salt_first: true,
        password_bytes: PasswordBytes::Utf16Le,
        hmac_key: None,
        expected: STANDARD.decode(stored.trim()).ok()?,
        scheme: HashScheme::AspnetMembershipSha1,
    };
    (digest.expected.len() == 20).then(|| digest.into_stored())
}

//! PBKDF2: the PHC form (`$pbkdf2-sha256$…`) and Django's (`pbkdf2_sha256$iterations$salt$hash`).

use super::*;

pub(super) fn parse_pbkdf2_phc(stored: &str) -> Option<Inner> {
    let (id, iterations, salt, hash) = dollar_fields(stored)?;
    let (prf, scheme) = match id {
        "pbkdf2" => (Prf::Sha1, HashScheme::Pbkdf2Sha1),
        "pbkdf2-sha256" => (Prf::Sha256, HashScheme::Pbkdf2Sha256),
        "pbkdf2-sha512" => (Prf::Sha512, HashScheme::Pbkdf2Sha512),
        _ => return None,
    };
    let iterations: u32 = iterations.parse().ok()?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return None;
    }
    let expected = ab64(hash)?;
    (!expected.is_empty()).then_some(Inner::Pbkdf2 {
        prf,
        iterations,
        salt: ab64(salt)?,
        expected,
        scheme,
    })
}

pub(super) fn parse_django_pbkdf2(stored: &str, id: &str, prf: Prf) -> Option<Inner> {
    let mut parts = stored.split('$');
    let (Some(found), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if found != id || salt.is_empty() {
        return None;
    }
    let iterations: u32 = iterations.parse().ok()?;
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return None;
    }
    let expected = STANDARD.decode(hash).ok()?;
    let scheme = if prf == Prf::Sha1 {
        HashScheme::Pbkdf2Sha1
    } else {
        HashScheme::Pbkdf2Sha256
    };
    (!expected.is_empty()).then(|| Inner::Pbkdf2 {
        prf,
        iterations,
        salt: salt.as_bytes().to_vec(),
        expected,
        scheme,
    })
}

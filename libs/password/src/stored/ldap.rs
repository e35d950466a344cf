//! LDAP `{SSHA}`-family values: a salted SHA digest, base64.

use super::*;

pub(super) fn parse_ldap(stored: &str) -> Option<Inner> {
    // Split on the braces rather than slicing at byte offsets: a stored value that does not
    // start with '{' (or puts '}' first) must be refused, not panic (found by the fuzzer).
    let (scheme, encoded) = stored.strip_prefix('{')?.split_once('}')?;
    let scheme = scheme.to_ascii_uppercase();
    let bytes = STANDARD.decode(encoded).ok()?;
    let (algorithm, salted) = match scheme.as_str() {
        "SHA" => (DigestAlgorithm::Sha1, false),
        "SSHA" => (DigestAlgorithm::Sha1, true),
        "SSHA256" => (DigestAlgorithm::Sha256, true),
        "SSHA512" => (DigestAlgorithm::Sha512, true),
        "MD5" => (DigestAlgorithm::Md5, false),
        "SMD5" => (DigestAlgorithm::Md5, true),
        _ => return None,
    };
    let len = algorithm.len();
    if bytes.len() < len || (!salted && bytes.len() != len) {
        return None;
    }
    Some(Inner::Digest(DigestHash {
        algorithm,
        expected: bytes[..len].to_vec(),
        salt: bytes[len..].to_vec(),
        salt_first: false,
        password_bytes: PasswordBytes::Utf8,
        hmac_key: None,
        scheme: HashScheme::Ldap,
    }))
}

//! Every stored-hash parser, on arbitrary strings: a legacy database is data we do not
//! control. Parsing must never panic, and must refuse costs that would allocate or spin
//! without bound (verifying is not fuzzed: a parsed hash's cost is capped by the parser).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trickle_password::{
    Argon2Config, DigestAlgorithm, DigestEncoding, DigestTemplate, HashFormat, SaltPosition,
    StoredHash,
};

const FORMATS: [HashFormat; 18] = [
    HashFormat::Auto,
    HashFormat::Bcrypt,
    HashFormat::Argon2,
    HashFormat::Scrypt,
    HashFormat::Pbkdf2,
    HashFormat::DjangoPbkdf2Sha256,
    HashFormat::DjangoPbkdf2Sha1,
    HashFormat::DjangoBcryptSha256,
    HashFormat::DjangoArgon2,
    HashFormat::AspnetIdentity,
    HashFormat::Phpass,
    HashFormat::Drupal7,
    HashFormat::WordpressBcrypt,
    HashFormat::Crypt,
    HashFormat::Ldap,
    HashFormat::AspnetMembershipSha1,
    HashFormat::SaltedDigest,
    HashFormat::Auto,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(selector) % FORMATS.len()];
    let text = String::from_utf8_lossy(rest);
    // A NUL splits the stored value from its salt column, as the connector reads them.
    let (stored, salt) = match text.split_once('\0') {
        Some((stored, salt)) => (stored, Some(salt)),
        None => (text.as_ref(), None),
    };
    // The template's shape comes from the selector's high bits.
    let template = DigestTemplate {
        algorithm: [
            DigestAlgorithm::Md5,
            DigestAlgorithm::Sha1,
            DigestAlgorithm::Sha256,
            DigestAlgorithm::Sha512,
        ][usize::from(selector >> 5) % 4],
        salt_position: if selector & 0x80 == 0 {
            SaltPosition::Before
        } else {
            SaltPosition::After
        },
        encoding: if selector & 0x40 == 0 {
            DigestEncoding::Hex
        } else {
            DigestEncoding::Base64
        },
        hmac_key: String::new(),
    };
    if let Ok(parsed) = StoredHash::parse_with(stored, salt, format, Some(&template)) {
        let _ = parsed.scheme();
        let _ = parsed.needs_upgrade(&Argon2Config::default());
        let _ = parsed.portable();
        let _ = format!("{parsed:?}");
    }
});

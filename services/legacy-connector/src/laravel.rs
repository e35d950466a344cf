//! Laravel's encrypted values (`Crypt::encrypt`, what Fortify stores in `two_factor_secret`):
//! base64 of the JSON `{"iv", "value", "mac", "tag"}`, where `value` is AES-256-CBC (PKCS#7)
//! of the PHP-serialized plaintext and `mac` is HMAC-SHA256 over `iv . value` (both base64),
//! keyed with the app's `APP_KEY`. The MAC is checked first, in constant time, as Laravel does.

use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use zeroize::Zeroizing;

/// An app's `APP_KEY`. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct AppKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl AppKey {
    /// `base64:…` as in `.env`, or the 32 raw characters of an old-style key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = match text.strip_prefix("base64:") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "APP_KEY is not valid base64".to_owned())?,
            None => text.as_bytes().to_vec(),
        };
        if bytes.len() != 32 {
            return Err(format!(
                "APP_KEY must be 32 bytes (AES-256-CBC), not {}",
                bytes.len()
            ));
        }
        Ok(Self(Zeroizing::new(bytes)))
    }
}

#[derive(serde::Deserialize)]
struct Payload {
    iv: String,
    value: String,
    mac: String,
}

/// Decrypt one Laravel-encrypted value and undo PHP's `serialize` of a string, if it is one.
pub fn decrypt(key: &AppKey, encrypted: &str) -> Result<Zeroizing<String>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let json = b64
        .decode(encrypted.trim())
        .map_err(|_| "not a Laravel encrypted value (base64)".to_owned())?;
    let payload: Payload = serde_json::from_slice(&json)
        .map_err(|_| "not a Laravel encrypted value (JSON)".to_owned())?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&key.0).map_err(|_| "bad APP_KEY".to_owned())?;
    mac.update(payload.iv.as_bytes());
    mac.update(payload.value.as_bytes());
    let expected = hex_decode(&payload.mac).ok_or("the MAC is not hex")?;
    mac.verify_slice(&expected)
        .map_err(|_| "the MAC does not match: another APP_KEY encrypted it".to_owned())?;
    let iv = b64
        .decode(&payload.iv)
        .map_err(|_| "the IV is not base64".to_owned())?;
    let ciphertext = b64
        .decode(&payload.value)
        .map_err(|_| "the value is not base64".to_owned())?;
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key.0, &iv)
        .map_err(|_| "the IV is not 16 bytes".to_owned())?
        .decrypt_padded_vec::<Pkcs7>(&ciphertext)
        .map_err(|_| "the value does not decrypt".to_owned())?;
    let plain =
        Zeroizing::new(String::from_utf8(plain).map_err(|_| "the value is not text".to_owned())?);
    Ok(Zeroizing::new(
        crate::php::unserialize_string(&plain)?.to_owned(),
    ))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Python's `cryptography` following Illuminate\Encryption\Encrypter::encrypt
    /// (tests/vectors/generate_factors.py): a random APP_KEY, Fortify-like base32 secrets.
    #[test]
    fn decrypts_what_laravel_encrypts_and_refuses_another_key() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/vectors/totp-factors.json"))
                .expect("vectors");
        let laravel = &vectors["laravel"];
        let key = AppKey::parse(laravel["app_key"].as_str().expect("key")).expect("key");
        for user in laravel["users"].as_array().expect("users") {
            let secret = decrypt(&key, user["two_factor_secret"].as_str().expect("secret"))
                .expect("decrypts");
            assert_eq!(secret.as_str(), user["secret"].as_str().expect("plain"));
        }
        let other = AppKey::parse(&format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ))
        .expect("key");
        let first = laravel["users"][0]["two_factor_secret"]
            .as_str()
            .expect("s");
        assert!(
            decrypt(&other, first)
                .expect_err("another key")
                .contains("MAC")
        );
        assert!(decrypt(&key, "not base64!").is_err());
        assert!(AppKey::parse("base64:c2hvcnQ=").is_err());
        assert_eq!(format!("{key:?}"), "AppKey(<redacted>)");
    }
}

//! Second factors at rest: TOTP secrets sealed with AES-256-GCM under a named key (so keys
//! can rotate: the current one seals, every configured one opens, and a factor sealed with
//! an older key is resealed when next used), bound to their user so that a ciphertext
//! copied to another user's row does not open. And recovery codes: 80 random bits each,
//! stored as SHA-256.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use trickle_password::totp::TotpSecret;

/// Why the factor keys cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FactorKeyError {
    #[error(
        "[store] factor_key must be ID:KEY, KEY being 32 bytes in base64 (`trickle gen-factor-key` prints one)"
    )]
    Inline,
    #[error("cannot read factor key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("factor key {0:?} is not 32 bytes in base64")]
    Key(String),
    #[error("[store] current_factor_key {0:?} is not a file in factor_keys_dir")]
    NoCurrent(String),
    #[error(
        "[store] factor_keys_dir is set: name the key that seals new factors in current_factor_key"
    )]
    CurrentUnset,
}

/// The keys that seal second-factor secrets.
#[derive(Clone)]
pub struct FactorKeys {
    current: String,
    keys: Arc<BTreeMap<String, LessSafeKey>>,
}

impl std::fmt::Debug for FactorKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorKeys")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A sealed secret could not be opened: a key missing from the configuration, or a row
/// that was tampered with.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the second-factor secret sealed with key {key_id:?}: {why}")]
pub struct OpenError {
    pub key_id: String,
    why: &'static str,
}

fn key_from_base64(id: &str, text: &str) -> Result<LessSafeKey, FactorKeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| FactorKeyError::Key(id.to_owned()))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| FactorKeyError::Key(id.to_owned()))?;
    Ok(LessSafeKey::new(unbound))
}

/// 32 random bytes in base64: a new factor key.
pub fn generate_key() -> Result<String, getrandom::Error> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()))
}

fn aad(user_id: &str) -> Vec<u8> {
    format!("trickle.totp.v1:{user_id}").into_bytes()
}

impl FactorKeys {
    /// From `[store]`: `factor_keys_dir` + `current_factor_key` (one file per key, named by
    /// its id), or `factor_key` (`ID:KEY`). `None` when neither is set: second factors are
    /// then unavailable (enrollment answers FACTORS_NOT_CONFIGURED).
    pub fn load(inline: &str, dir: &str, current: &str) -> Result<Option<Self>, FactorKeyError> {
        if !dir.is_empty() {
            if current.is_empty() {
                return Err(FactorKeyError::CurrentUnset);
            }
            let mut keys = BTreeMap::new();
            let entries = std::fs::read_dir(dir).map_err(|source| FactorKeyError::Read {
                path: dir.to_owned(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| FactorKeyError::Read {
                    path: dir.to_owned(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Kubernetes mounts Secrets through dot-named links (..data, ..2024_…).
                if name.starts_with('.') || !entry.path().is_file() {
                    continue;
                }
                let text = zeroize::Zeroizing::new(std::fs::read_to_string(entry.path()).map_err(
                    |source| FactorKeyError::Read {
                        path: entry.path().display().to_string(),
                        source,
                    },
                )?);
                keys.insert(name.clone(), key_from_base64(&name, &text)?);
            }
            if !keys.contains_key(current) {
                return Err(FactorKeyError::NoCurrent(current.to_owned()));
            }
            return Ok(Some(Self {
                current: current.to_owned(),
                keys: Arc::new(keys),
            }));
        }
        if inline.trim().is_empty() {
            return Ok(None);
        }
        let (id, key) = inline
            .trim()
            .split_once(':')
            .ok_or(FactorKeyError::Inline)?;
        if id.is_empty() {
            return Err(FactorKeyError::Inline);
        }
        let mut keys = BTreeMap::new();
        keys.insert(id.to_owned(), key_from_base64(id, key)?);
        Ok(Some(Self {
            current: id.to_owned(),
            keys: Arc::new(keys),
        }))
    }

    /// The id of the key that seals new secrets.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Seal `secret` for `user_id` with the current key: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, user_id: &str, secret: &TotpSecret) -> Result<(String, Vec<u8>), String> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or_else(|| "the current factor key is missing".to_owned())?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let mut sealed = secret.expose_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(user_id)),
            &mut sealed,
        )
        .map_err(|_| "sealing failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok((self.current.clone(), out))
    }

    pub fn open(
        &self,
        key_id: &str,
        user_id: &str,
        sealed: &[u8],
    ) -> Result<TotpSecret, OpenError> {
        let error = |why| OpenError {
            key_id: key_id.to_owned(),
            why,
        };
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| error("the key is not configured"))?;
        let (nonce, ciphertext) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| error("too short"))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| error("bad nonce"))?;
        let mut buffer = zeroize::Zeroizing::new(ciphertext.to_vec());
        let plain = key
            .open_in_place(nonce, Aad::from(aad(user_id)), &mut buffer)
            .map_err(|_| error("authentication failed"))?;
        TotpSecret::from_bytes(plain.to_vec()).map_err(|_| error("bad secret length"))
    }
}

/// Recovery codes handed out when a factor is confirmed.
pub const RECOVERY_CODES: usize = 10;

/// A recovery code: 16 base32 characters (80 bits) in groups of four, lower case.
pub fn generate_recovery_code() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)?;
    let mut bits: u128 = 0;
    for byte in bytes {
        bits = (bits << 8) | u128::from(byte);
    }
    let mut code = String::with_capacity(19);
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            code.push('-');
        }
        let index = ((bits >> (75 - 5 * i)) & 31) as usize;
        code.push(char::from(ALPHABET[index]));
    }
    Ok(code)
}

/// A recovery code as typed (any case, dashes and spaces anywhere), normalized; `None` when
/// it cannot be one.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    (code.len() == 16 && code.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')))
        .then_some(code)
}

/// The stored form of a normalized recovery code.
pub fn recovery_code_hash(normalized: &str) -> String {
    sha2::Sha256::digest(normalized.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(id: &str) -> (String, FactorKeys) {
        let key = generate_key().expect("rng");
        let keys = FactorKeys::load(&format!("{id}:{key}"), "", "")
            .expect("valid")
            .expect("set");
        (key, keys)
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let (_, keys) = keys("k1");
        let secret = TotpSecret::generate().expect("rng");
        let (key_id, sealed) = keys.seal("user-a", &secret).expect("seal");
        assert_eq!(key_id, "k1");
        assert!(
            !sealed
                .windows(secret.expose_bytes().len())
                .any(|w| w == secret.expose_bytes()),
            "the secret must not appear in what is stored"
        );
        let opened = keys.open("k1", "user-a", &sealed).expect("open");
        assert_eq!(opened.expose_bytes(), secret.expose_bytes());
        assert!(
            keys.open("k1", "user-b", &sealed).is_err(),
            "bound to the user"
        );
        assert!(keys.open("k2", "user-a", &sealed).is_err(), "unknown key");
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(keys.open("k1", "user-a", &tampered).is_err());
        let (_, other) = self::keys("k1");
        assert!(
            other.open("k1", "user-a", &sealed).is_err(),
            "another key of the same name"
        );
    }

    #[test]
    fn a_key_directory_rotates_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = generate_key().expect("rng");
        std::fs::write(dir.path().join("2025"), &old).expect("write");
        let before = FactorKeys::load("", &dir.path().display().to_string(), "2025")
            .expect("valid")
            .expect("set");
        let secret = TotpSecret::generate().expect("rng");
        let (old_id, sealed) = before.seal("u", &secret).expect("seal");
        std::fs::write(dir.path().join("2026"), generate_key().expect("rng")).expect("write");
        let after = FactorKeys::load("", &dir.path().display().to_string(), "2026")
            .expect("valid")
            .expect("set");
        assert_eq!(after.current_id(), "2026");
        assert!(
            after.open(&old_id, "u", &sealed).is_ok(),
            "old keys still open"
        );
        assert_eq!(after.seal("u", &secret).expect("seal").0, "2026");
        assert!(matches!(
            FactorKeys::load("", &dir.path().display().to_string(), "2027"),
            Err(FactorKeyError::NoCurrent(_))
        ));
        assert!(matches!(
            FactorKeys::load("", &dir.path().display().to_string(), ""),
            Err(FactorKeyError::CurrentUnset)
        ));
        assert!(FactorKeys::load("nokey", "", "").is_err());
        assert!(FactorKeys::load("k:c2hvcnQ=", "", "").is_err());
        assert!(FactorKeys::load("", "", "").expect("valid").is_none());
        assert!(!format!("{after:?}").contains(&old));
    }

    #[test]
    fn recovery_codes_are_random_normalized_and_hashed() {
        let a = generate_recovery_code().expect("rng");
        let b = generate_recovery_code().expect("rng");
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        let typed = a.to_uppercase().replace('-', " ");
        assert_eq!(
            normalize_recovery_code(&typed).as_deref(),
            Some(a.replace('-', "").as_str())
        );
        assert_eq!(normalize_recovery_code("123456"), None);
        assert_eq!(recovery_code_hash("x").len(), 64);
    }
}

//! Passwords and password hashes, shared by the user-store and the legacy-connector.
//!
//! - [`Password`] carries a plaintext password; its `Debug` prints nothing and it is wiped on
//!   drop.
//! - [`StoredHash`] is a stored hash string parsed once into a typed value (argon2 PHC,
//!   bcrypt, scrypt, PBKDF2 in its PHC/Django/ASP.NET forms, phpass, crypt(3), LDAP, salted
//!   digests, …), verified in constant time.
//! - [`HashPool`] runs hashing and verifying on a bounded set of dedicated threads, off the
//!   async executor, each with its own reused argon2 memory.
//! - [`totp`]: RFC 6238 second factors (secrets, codes, otpauth URIs), for the store and
//!   for reading the factors of legacy users.

mod argon2id;
mod breached;
mod pool;
mod stored;
pub mod totp;

pub use argon2id::Argon2Config;
pub use breached::{BreachedError, BreachedPasswords};
pub use pool::{HashPool, HashPriority, PoolError, Verification};
pub use stored::{
    Auth0CustomHash, DigestAlgorithm, DigestEncoding, DigestTemplate, HashCost, HashFormat,
    HashLimits, HashScheme, ParseHashError, SaltPosition, StoredHash, Unverifiable,
    auth0_custom_hash,
};

use zeroize::Zeroizing;

/// What a `Debug` impl prints for a secret setting: whether one is set, never its value.
pub fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

/// The longest password any service accepts for checking (bytes): the sign-up maximum, so
/// nobody can hold a password that could not log in. Longer input is an attack on the
/// hasher (sha-crypt and PBKDF2 over HMAC cost grows with the password's length).
pub const MAX_PASSWORD_BYTES: usize = MAX_NEW_PASSWORD_BYTES;
/// New passwords (sign-up, reset, change): NIST SP 800-63B — at least 8 characters, at most
/// 1024 bytes here, no composition rules.
pub const MIN_NEW_PASSWORD_CHARS: usize = 8;
pub const MAX_NEW_PASSWORD_BYTES: usize = 1024;

/// Why a password cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is required")]
    Empty,
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("password must be at least {MIN_NEW_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("password must be at most {MAX_NEW_PASSWORD_BYTES} bytes")]
    NewTooLong,
}

impl PasswordError {
    /// Too short is a weak password (reason WEAK_PASSWORD); the others are malformed input.
    pub fn is_weak(self) -> bool {
        matches!(self, PasswordError::TooShort)
    }
}

/// A plaintext password. Never printed, wiped from memory when dropped.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    /// The password's bytes, for the hashing functions only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Length in bytes (UTF-8), for the password policy.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A password presented for checking (login): present and of sane size.
    pub fn check_presented(&self) -> Result<(), PasswordError> {
        if self.is_empty() {
            Err(PasswordError::Empty)
        } else if self.len() > MAX_PASSWORD_BYTES {
            Err(PasswordError::TooLong)
        } else {
            Ok(())
        }
    }

    /// A new password (sign-up, reset, change) against the policy.
    pub fn check_new(&self) -> Result<(), PasswordError> {
        if self.is_empty() {
            Err(PasswordError::Empty)
        } else if self.len() > MAX_NEW_PASSWORD_BYTES {
            Err(PasswordError::NewTooLong)
        } else if self.0.chars().count() < MIN_NEW_PASSWORD_CHARS {
            Err(PasswordError::TooShort)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_password() {
        let password = Password::new("hunter2-secret");
        let printed = format!("{password:?} {:#?}", password);
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}

/// Hashes in the legacy formats, for seeding the `trickle dev` demo database and test
/// fixtures. Trickle itself only ever writes argon2id.
pub mod legacy_formats {
    use base64::Engine as _;

    /// A `$2b$` bcrypt hash.
    pub fn bcrypt(password: &str, cost: u32) -> Result<String, String> {
        bcrypt::hash(password, cost).map_err(|e| e.to_string())
    }

    /// A Django `pbkdf2_sha256$iterations$salt$hash` string.
    pub fn django_pbkdf2_sha256(password: &str, iterations: u32) -> Result<String, String> {
        let mut raw = [0u8; 12];
        getrandom::fill(&mut raw).map_err(|e| e.to_string())?;
        // Django salts are alphanumeric strings.
        let salt: String = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(raw)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            password.as_bytes(),
            salt.as_bytes(),
            iterations,
            &mut out,
        );
        Ok(format!(
            "pbkdf2_sha256${iterations}${salt}${}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// An argon2id PHC string with the given parameters.
    pub fn argon2id(password: &str, config: &crate::Argon2Config) -> Result<String, String> {
        crate::argon2id::hash(
            config,
            &mut crate::argon2id::Scratch::default(),
            password.as_bytes(),
        )
        .map_err(|e| e.to_string())
    }
}

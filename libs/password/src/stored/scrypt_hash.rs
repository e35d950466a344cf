//! scrypt in its PHC form (`$scrypt$ln=…,r=…,p=…$salt$hash`), and Firebase Authentication's
//! modified scrypt in Trickle's form of it:
//! `$firebase-scrypt$ln=<mem_cost>,r=<rounds>,p=1,sep=<salt separator>,key=<signer key>$<salt>$<hash>`
//! (base64 throughout). Firebase derives 32 bytes with scrypt over the password and
//! salt + separator, and stores the project's signer key encrypted with them by AES-256-CTR
//! (zero IV); verifying is doing the same and comparing.

use super::*;

pub(super) fn parse_scrypt(stored: &str) -> Option<Inner> {
    let (id, params, salt, hash) = dollar_fields(stored)?;
    let firebase = match id {
        "scrypt" => false,
        "firebase-scrypt" => true,
        _ => return None,
    };
    let (mut log_n, mut r, mut p) = (None, None, None);
    let (mut separator, mut signer_key) = (None, None);
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=')?;
        match k {
            "ln" => log_n = v.parse::<u8>().ok(),
            "r" => r = v.parse::<u32>().ok(),
            "p" => p = v.parse::<u32>().ok(),
            "sep" if firebase => separator = Some(b64_any(v)?),
            "key" if firebase => signer_key = Some(b64_any(v)?),
            _ => return None,
        }
    }
    let firebase = if firebase {
        let signer_key = signer_key.filter(|k| !k.is_empty())?;
        Some(FirebaseScrypt {
            separator: separator.unwrap_or_default(),
            signer_key,
        })
    } else {
        None
    };
    let (log_n, r, p) = (log_n?, r?, p?);
    let memory = 128u64
        .checked_mul(u64::from(r))?
        .checked_mul(1u64.checked_shl(u32::from(log_n))?)?;
    if memory > MAX_SCRYPT_MEMORY || u64::from(p) > 16 {
        return None;
    }
    let salt = b64_any(salt)?;
    let expected = b64_any(hash)?;
    // Firebase derives a 32-byte key (AES-256); the hash is the signer key encrypted.
    if firebase
        .as_ref()
        .is_some_and(|f| f.signer_key.len() != expected.len())
    {
        return None;
    }
    let params = scrypt::Params::new(log_n, r, p).ok()?;
    (!expected.is_empty()).then_some(Inner::Scrypt {
        params,
        salt,
        expected,
        firebase,
    })
}

/// The project-wide parts of a Firebase scrypt hash.
#[derive(Clone)]
pub(super) struct FirebaseScrypt {
    separator: Vec<u8>,
    signer_key: Vec<u8>,
}

impl FirebaseScrypt {
    pub(super) fn verify(
        &self,
        params: &scrypt::Params,
        salt: &[u8],
        expected: &[u8],
        password: &[u8],
    ) -> bool {
        use aes::cipher::{BlockCipherEncrypt as _, KeyInit as _};
        let mut salted = salt.to_vec();
        salted.extend_from_slice(&self.separator);
        let mut derived = zeroize::Zeroizing::new([0u8; 32]);
        if scrypt::scrypt(password, &salted, params, derived.as_mut()).is_err() {
            return false;
        }
        let Ok(cipher) = aes::Aes256::new_from_slice(derived.as_ref()) else {
            return false;
        };
        // AES-256-CTR with a zero IV: the counter is the whole block, big-endian.
        let mut encrypted = Vec::with_capacity(self.signer_key.len());
        for (counter, chunk) in self.signer_key.chunks(16).enumerate() {
            let mut block = aes::Block::from((counter as u128).to_be_bytes());
            cipher.encrypt_block(&mut block);
            encrypted.extend(chunk.iter().zip(block.iter()).map(|(k, s)| k ^ s));
        }
        bool::from(encrypted.ct_eq(expected))
    }
}

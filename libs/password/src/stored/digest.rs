//! Salted digests built by a template (`[legacy.salted_digest]`), and the store's portable
//! form of them (`$trickle-digest$…`).

use super::*;

pub(super) fn parse_template(
    stored: &str,
    salt: Option<&str>,
    template: &DigestTemplate,
) -> Option<StoredHash> {
    let expected = match template.encoding {
        DigestEncoding::Hex => unhex(&stored.trim().to_ascii_lowercase())?,
        DigestEncoding::Base64 => STANDARD.decode(stored.trim()).ok()?,
    };
    let digest = DigestHash {
        algorithm: template.algorithm,
        salt: salt.unwrap_or_default().as_bytes().to_vec(),
        salt_first: template.salt_position == SaltPosition::Before,
        password_bytes: PasswordBytes::Utf8,
        hmac_key: (!template.hmac_key.is_empty()).then(|| template.hmac_key.as_bytes().to_vec()),
        expected,
        scheme: HashScheme::SaltedDigest,
    };
    let hmac_len_ok =
        digest.hmac_key.is_some() || digest.expected.len() == template.algorithm.len();
    (hmac_len_ok && digest.expected.len() == template.algorithm.len()).then(|| digest.into_stored())
}

/// The store's own form of a digest whose parts came from several columns:
/// `$trickle-digest$alg=sha1,salt=before,pw=utf16le$<salt b64>$<digest b64>` (`pw=`: `utf8`,
/// `utf16le` or `latin1`), with
/// `,key=<hex>` for an HMAC whose key came with the hash (an import file's, per user; a
/// legacy app's configured key never leaves the connector).
pub(super) fn parse_portable_digest(stored: &str) -> Option<StoredHash> {
    let ("trickle-digest", params, salt, expected) = dollar_fields(stored)? else {
        return None;
    };
    let (mut algorithm, mut salt_first, mut password_bytes, mut hmac_key) =
        (None, true, PasswordBytes::Utf8, None);
    for kv in params.split(',') {
        match kv.split_once('=')? {
            ("alg", v) => algorithm = DigestAlgorithm::parse(v),
            ("salt", "before") => salt_first = true,
            ("salt", "after") => salt_first = false,
            ("pw", v) => password_bytes = PasswordBytes::parse(v)?,
            ("key", v) => hmac_key = Some(unhex(v).filter(|k| !k.is_empty())?),
            _ => return None,
        }
    }
    let algorithm = algorithm?;
    let expected = b64_any(expected)?;
    // ASP.NET Membership's own digest is SHA-1 over salt + UTF-16LE; any other combination
    // is a salted digest like the rest.
    let membership = password_bytes == PasswordBytes::Utf16Le
        && algorithm == DigestAlgorithm::Sha1
        && hmac_key.is_none();
    (expected.len() == algorithm.len()).then(|| StoredHash {
        inner: Inner::Digest(DigestHash {
            algorithm,
            salt: b64_any(salt).unwrap_or_default(),
            salt_first,
            password_bytes,
            hmac_key,
            expected,
            scheme: if membership {
                HashScheme::AspnetMembershipSha1
            } else {
                HashScheme::SaltedDigest
            },
        }),
        portable: Some(stored.to_owned()),
    })
}

impl DigestAlgorithm {
    pub(super) fn len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 16,
            DigestAlgorithm::Sha1 => 20,
            DigestAlgorithm::Sha256 => 32,
            DigestAlgorithm::Sha512 => 64,
            DigestAlgorithm::Md4 => 16,
            DigestAlgorithm::Sha224 => 28,
            DigestAlgorithm::Sha384 => 48,
            DigestAlgorithm::Ripemd160 => 20,
            DigestAlgorithm::Whirlpool => 64,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "md5",
            DigestAlgorithm::Sha1 => "sha1",
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
            DigestAlgorithm::Md4 => "md4",
            DigestAlgorithm::Sha224 => "sha224",
            DigestAlgorithm::Sha384 => "sha384",
            DigestAlgorithm::Ripemd160 => "ripemd160",
            DigestAlgorithm::Whirlpool => "whirlpool",
        }
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "md5" => DigestAlgorithm::Md5,
            "sha1" => DigestAlgorithm::Sha1,
            "sha256" => DigestAlgorithm::Sha256,
            "sha512" => DigestAlgorithm::Sha512,
            "md4" => DigestAlgorithm::Md4,
            "sha224" => DigestAlgorithm::Sha224,
            "sha384" => DigestAlgorithm::Sha384,
            "ripemd160" => DigestAlgorithm::Ripemd160,
            "whirlpool" => DigestAlgorithm::Whirlpool,
            _ => return None,
        })
    }

    pub(super) fn digest(self, key: Option<&[u8]>, message: &[u8]) -> Vec<u8> {
        match (self, key) {
            (DigestAlgorithm::Md5, None) => md5::Md5::digest(message).to_vec(),
            (DigestAlgorithm::Sha1, None) => sha1::Sha1::digest(message).to_vec(),
            (DigestAlgorithm::Sha256, None) => sha2::Sha256::digest(message).to_vec(),
            (DigestAlgorithm::Sha512, None) => sha2::Sha512::digest(message).to_vec(),
            (DigestAlgorithm::Md5, Some(k)) => hmac::<md5::Md5>(k, message),
            (DigestAlgorithm::Sha1, Some(k)) => hmac::<sha1::Sha1>(k, message),
            (DigestAlgorithm::Sha256, Some(k)) => hmac::<sha2::Sha256>(k, message),
            (DigestAlgorithm::Sha512, Some(k)) => hmac::<sha2::Sha512>(k, message),
            (DigestAlgorithm::Md4, None) => md4::Md4::digest(message).to_vec(),
            (DigestAlgorithm::Sha224, None) => sha2::Sha224::digest(message).to_vec(),
            (DigestAlgorithm::Sha384, None) => sha2::Sha384::digest(message).to_vec(),
            (DigestAlgorithm::Ripemd160, None) => ripemd::Ripemd160::digest(message).to_vec(),
            (DigestAlgorithm::Whirlpool, None) => whirlpool::Whirlpool::digest(message).to_vec(),
            (DigestAlgorithm::Md4, Some(k)) => hmac::<md4::Md4>(k, message),
            (DigestAlgorithm::Sha224, Some(k)) => hmac::<sha2::Sha224>(k, message),
            (DigestAlgorithm::Sha384, Some(k)) => hmac::<sha2::Sha384>(k, message),
            (DigestAlgorithm::Ripemd160, Some(k)) => hmac::<ripemd::Ripemd160>(k, message),
            (DigestAlgorithm::Whirlpool, Some(k)) => hmac::<whirlpool::Whirlpool>(k, message),
        }
    }
}

impl DigestHash {
    pub(super) fn verify(&self, password: &[u8]) -> bool {
        let Some(password) = self.password_bytes.encode(password) else {
            return false;
        };
        let mut message = Vec::with_capacity(password.len() + self.salt.len());
        if self.salt_first {
            message.extend_from_slice(&self.salt);
            message.extend_from_slice(&password);
        } else {
            message.extend_from_slice(&password);
            message.extend_from_slice(&self.salt);
        }
        let computed = self.algorithm.digest(self.hmac_key.as_deref(), &message);
        bool::from(computed.ct_eq(&self.expected))
    }

    pub(super) fn into_stored(self) -> StoredHash {
        let portable = self.hmac_key.is_none().then(|| {
            format!(
                "$trickle-digest$alg={},salt={},pw={}${}${}",
                self.algorithm.name(),
                if self.salt_first { "before" } else { "after" },
                self.password_bytes.name(),
                STANDARD_NO_PAD.encode(&self.salt),
                STANDARD_NO_PAD.encode(&self.expected),
            )
        });
        StoredHash {
            inner: Inner::Digest(self),
            portable,
        }
    }
}

impl PasswordBytes {
    pub(super) fn name(self) -> &'static str {
        match self {
            PasswordBytes::Utf8 => "utf8",
            PasswordBytes::Utf16Le => "utf16le",
            PasswordBytes::Latin1 => "latin1",
        }
    }

    pub(super) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "utf8" => PasswordBytes::Utf8,
            "utf16le" => PasswordBytes::Utf16Le,
            "latin1" => PasswordBytes::Latin1,
            _ => return None,
        })
    }

    /// The bytes that were hashed for `password` (UTF-8 as typed); `None` when the password
    /// cannot be written this way (a character past U+00FF in Latin-1).
    fn encode(self, password: &[u8]) -> Option<Vec<u8>> {
        match self {
            PasswordBytes::Utf8 => Some(password.to_vec()),
            // ASP.NET hashes the UTF-16LE code units of the password.
            PasswordBytes::Utf16Le => Some(
                String::from_utf8_lossy(password)
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect(),
            ),
            PasswordBytes::Latin1 => String::from_utf8_lossy(password)
                .chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect(),
        }
    }
}

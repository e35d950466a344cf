//! Password hashes from other identity providers' export files, rewritten into a stored form
//! this module's parser reads by itself (`HashFormat::Auto`), so that an imported user is
//! verified by the store like a backfilled one and upgraded to argon2id at their next login.
//!
//! Auth0's `custom_password_hash` (its bulk user import schema): `bcrypt`, `argon2` and
//! `ldap` are already self-describing; `pbkdf2` PHC strings (`i=…,l=…`, standard base64)
//! become passlib's form; `md5`, `sha1`, `sha256` and `sha512` with a salt before or after
//! the password become `$trickle-digest$…`; raw `scrypt` becomes a PHC `$scrypt$` string.
//! `md4` joins them. `hmac` (every digest Auth0 documents: md4, md5, ripemd160, sha1, sha224,
//! sha256, sha384, sha512, whirlpool) becomes `$trickle-digest$` with the user's key.
//! Passwords may have been encoded as UTF-8 (ASCII), UTF-16LE (`ucs2`) or Latin-1 (`binary`).

use super::*;

/// An encoded value of Auth0's schema: `{"value": …, "encoding": "utf8"|"hex"|"base64"}`.
#[derive(Clone, Deserialize)]
struct Auth0Encoded {
    value: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// The salt of an Auth0 custom hash; `position` is `prefix` (default) or `suffix`.
#[derive(Clone, Deserialize)]
struct Auth0Salt {
    value: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    position: Option<String>,
}

/// The hash of an Auth0 custom hash (`digest` and `key` belong to `hmac`).
#[derive(Clone, Deserialize)]
struct Auth0HashValue {
    value: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    key: Option<Auth0Encoded>,
}

#[derive(Clone, Deserialize)]
struct Auth0PasswordEncoding {
    #[serde(default)]
    encoding: Option<String>,
}

/// `custom_password_hash` of Auth0's user import schema. `Debug` names the algorithm only.
#[derive(Clone, Deserialize)]
pub struct Auth0CustomHash {
    algorithm: String,
    hash: Auth0HashValue,
    #[serde(default)]
    salt: Option<Auth0Salt>,
    #[serde(default)]
    password: Option<Auth0PasswordEncoding>,
    #[serde(default)]
    keylen: Option<u32>,
    #[serde(default)]
    cost: Option<u64>,
    #[serde(default, rename = "blockSize")]
    block_size: Option<u32>,
    #[serde(default)]
    parallelization: Option<u32>,
}

impl std::fmt::Debug for Auth0CustomHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth0CustomHash")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Bytes of an encoded value; `default` is the encoding when none is named.
fn decode(value: &str, encoding: Option<&str>, default: &str) -> Result<Vec<u8>, String> {
    match encoding.unwrap_or(default) {
        "utf8" | "utf-8" | "ascii" => Ok(value.as_bytes().to_vec()),
        "hex" => unhex(&value.to_ascii_lowercase()).ok_or_else(|| "not valid hex".to_owned()),
        "base64" => b64_any(value.trim()).ok_or_else(|| "not valid base64".to_owned()),
        other => Err(format!("encoding {other:?} is not supported")),
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// passlib's adapted base64.
fn ab64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes).replace('+', ".")
}

/// How the password was turned into bytes: `pw=` of `$trickle-digest$`.
fn password_encoding(hash: &Auth0CustomHash) -> Result<&'static str, String> {
    match hash
        .password
        .as_ref()
        .and_then(|p| p.encoding.as_deref())
        .unwrap_or("utf8")
    {
        // ASCII passwords are the same bytes in UTF-8.
        "utf8" | "utf-8" | "ascii" => Ok("utf8"),
        "utf16le" | "utf-16le" | "ucs2" | "ucs-2" => Ok("utf16le"),
        "latin1" | "binary" => Ok("latin1"),
        other => Err(format!("password encoding {other:?} is not supported")),
    }
}

/// The salt's bytes, and whether it goes `before` or `after` the password.
fn salt_and_position(hash: &Auth0CustomHash) -> Result<(Vec<u8>, &'static str), String> {
    match &hash.salt {
        Some(salt) => Ok((
            decode(&salt.value, salt.encoding.as_deref(), "utf8")?,
            match salt.position.as_deref().unwrap_or("prefix") {
                "prefix" => "before",
                "suffix" => "after",
                other => return Err(format!("salt.position {other:?} is not known")),
            },
        )),
        None => Ok((Vec::new(), "before")),
    }
}

/// Rewrite an Auth0 `custom_password_hash` into a stored form Trickle verifies, or say why
/// it cannot be (never quoting the hash).
pub fn auth0_custom_hash(hash: &Auth0CustomHash) -> Result<String, String> {
    let algorithm = hash.algorithm.as_str();
    let stored = match algorithm {
        "bcrypt" | "argon2" | "ldap" => {
            if !matches!(hash.hash.encoding.as_deref(), None | Some("utf8" | "utf-8")) {
                return Err(format!("{algorithm}: hash.encoding must be utf8"));
            }
            if password_encoding(hash)? != "utf8" {
                return Err(format!("{algorithm}: only UTF-8 passwords are supported"));
            }
            hash.hash.value.trim().to_owned()
        }
        "pbkdf2" => pbkdf2_phc_to_passlib(hash.hash.value.trim())?,
        "md4" | "md5" | "sha1" | "sha256" | "sha512" => {
            let digest = decode(&hash.hash.value, hash.hash.encoding.as_deref(), "hex")?;
            let (salt, position) = salt_and_position(hash)?;
            format!(
                "$trickle-digest$alg={algorithm},salt={position},pw={}${}${}",
                password_encoding(hash)?,
                b64(&salt),
                b64(&digest)
            )
        }
        "scrypt" => {
            if password_encoding(hash)? != "utf8" {
                return Err("scrypt: only UTF-8 passwords are supported".into());
            }
            let n = hash.cost.unwrap_or(16384);
            if n < 2 || !n.is_power_of_two() {
                return Err("scrypt: cost must be a power of two".into());
            }
            let log_n = n.trailing_zeros();
            let r = hash.block_size.unwrap_or(8);
            let p = hash.parallelization.unwrap_or(1);
            let expected = decode(&hash.hash.value, hash.hash.encoding.as_deref(), "base64")?;
            if let Some(keylen) = hash.keylen
                && usize::try_from(keylen).ok() != Some(expected.len())
            {
                return Err("scrypt: the hash is not keylen bytes long".into());
            }
            let salt = match &hash.salt {
                Some(salt) if salt.position.as_deref().unwrap_or("prefix") == "prefix" => {
                    decode(&salt.value, salt.encoding.as_deref(), "utf8")?
                }
                Some(_) => return Err("scrypt: the salt has no position".into()),
                None => return Err("scrypt: a salt is required".into()),
            };
            format!(
                "$scrypt$ln={log_n},r={r},p={p}${}${}",
                b64(&salt),
                b64(&expected)
            )
        }
        "hmac" => {
            let digest_name = hash.hash.digest.as_deref().unwrap_or_default();
            if DigestAlgorithm::parse(digest_name).is_none() {
                return Err(format!(
                    "hmac: digest {digest_name:?} is not known (md4, md5, ripemd160, sha1, \
                     sha224, sha256, sha384, sha512, whirlpool)"
                ));
            }
            let key = hash
                .hash
                .key
                .as_ref()
                .ok_or_else(|| "hmac: hash.key is required".to_owned())
                .and_then(|k| decode(&k.value, k.encoding.as_deref(), "utf8"))?;
            if key.is_empty() {
                return Err("hmac: the key is empty".into());
            }
            let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let (salt, position) = salt_and_position(hash)?;
            let digest = decode(&hash.hash.value, hash.hash.encoding.as_deref(), "hex")?;
            format!(
                "$trickle-digest$alg={digest_name},salt={position},pw={},key={key_hex}${}${}",
                password_encoding(hash)?,
                b64(&salt),
                b64(&digest)
            )
        }
        other => return Err(format!("algorithm {other:?} is not known")),
    };
    // The rewritten form must be one the store reads, as the family it claims to be.
    let parsed = StoredHash::parse(&stored, HashFormat::Auto)
        .map_err(|_| format!("{algorithm}: the hash is malformed"))?;
    let family_ok = match algorithm {
        "bcrypt" => parsed.scheme() == HashScheme::Bcrypt,
        "argon2" => matches!(
            parsed.scheme(),
            HashScheme::Argon2id | HashScheme::Argon2i | HashScheme::Argon2d
        ),
        "ldap" => parsed.scheme() == HashScheme::Ldap,
        _ => true,
    };
    if !family_ok {
        return Err(format!("{algorithm}: the hash is of another algorithm"));
    }
    Ok(stored)
}

/// `$pbkdf2-sha256$i=100000,l=32$<salt b64>$<hash b64>` (the PHC form Auth0 documents) as
/// passlib's `$pbkdf2-sha256$100000$<ab64 salt>$<ab64 hash>`.
fn pbkdf2_phc_to_passlib(phc: &str) -> Result<String, String> {
    let (id, params, salt, hash) =
        dollar_fields(phc).ok_or_else(|| "pbkdf2: not a PHC string".to_owned())?;
    let id = match id {
        "pbkdf2-sha1" | "pbkdf2" => "pbkdf2",
        "pbkdf2-sha256" => "pbkdf2-sha256",
        "pbkdf2-sha512" => "pbkdf2-sha512",
        other => return Err(format!("pbkdf2: digest {other:?} is not supported")),
    };
    let mut iterations = None;
    let mut length = None;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("i", v)) => iterations = v.parse::<u32>().ok(),
            Some(("l", v)) => length = v.parse::<usize>().ok(),
            _ => return Err("pbkdf2: parameters must be i=…,l=…".into()),
        }
    }
    let iterations = iterations.ok_or_else(|| "pbkdf2: no iterations (i=)".to_owned())?;
    let salt = b64_any(salt).ok_or_else(|| "pbkdf2: the salt is not base64".to_owned())?;
    let hash = b64_any(hash).ok_or_else(|| "pbkdf2: the hash is not base64".to_owned())?;
    if length.is_some_and(|l| l != hash.len()) {
        return Err("pbkdf2: the hash is not l bytes long".into());
    }
    Ok(format!(
        "${id}${iterations}${}${}",
        ab64(&salt),
        ab64(&hash)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(json: &str) -> Auth0CustomHash {
        serde_json::from_str(json).expect("schema")
    }

    #[test]
    fn salted_sha256_with_a_suffix_salt_verifies() {
        // sha256("hunter2" + "NaCl")
        let digest = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(b"hunter2NaCl");
            h.finalize()
        };
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let hash = custom(&format!(
            r#"{{"algorithm":"sha256","hash":{{"value":"{hex}","encoding":"hex"}},"salt":{{"value":"NaCl","encoding":"utf8","position":"suffix"}}}}"#
        ));
        let stored = auth0_custom_hash(&hash).expect("convertible");
        let parsed = StoredHash::parse(&stored, HashFormat::Auto).expect("readable");
        assert!(parsed.verify_password("hunter2"));
        assert!(!parsed.verify_password("hunter3"));
        assert!(
            !format!("{hash:?}").contains(&hex),
            "Debug names the algorithm only"
        );
    }

    /// Vectors from OpenSSL's command line (`openssl dgst -md4|-whirlpool|-ripemd160
    /// [-hmac key] -provider legacy -provider default`) and Python's hashlib/hmac.
    #[test]
    fn md4_ripemd_whirlpool_sha224_sha384_and_latin1_verify_against_outside_vectors() {
        for (json, password) in [
            (
                r#"{"algorithm":"md4","hash":{"value":"a448017aaf21d8525fc10ae87aa6729d"}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"32c43d6d6eda7f1e464711473b956b68","digest":"md4","key":{"value":"key"}}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"cc54c8afbd90efeb6fc30b50853cd9ecb775f96f8bc6bc0282f86ebf398f4b32ce59ab14a347bb927997c17fdf4dac791d8a87a9faba4b00e2ab7febaea35c88","digest":"whirlpool","key":{"value":"key"}}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"a2d59994caa718567e961021bb51f9f495204eb8","digest":"ripemd160","key":{"value":"key"}},"salt":{"value":"salt"}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"30ddb9c8f347cffbfb44e519d814f074cf4047a55d6f563324f1c6a33920e5edfb2a34bac60bdc96cd33a95623d7d638","digest":"sha384","key":{"value":"key"}}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"f524670b7e34f31467de0aa96593861cf65117d414fb2d86158d760e","digest":"sha224","key":{"value":"key"}}}"#,
                "abc",
            ),
            (
                r#"{"algorithm":"md5","hash":{"value":"961f50f6282239d09e48f812c1ca7276"},"password":{"encoding":"latin1"}}"#,
                "café",
            ),
        ] {
            let stored = auth0_custom_hash(&custom(json)).expect(json);
            let parsed = StoredHash::parse(&stored, HashFormat::Auto).expect("readable");
            assert!(parsed.verify_password(password), "{json}");
            assert!(!parsed.verify_password("abd"), "{json}");
        }
        // Latin-1 cannot write a character past U+00FF: such a password never matches.
        let latin1 = auth0_custom_hash(&custom(
            r#"{"algorithm":"md5","hash":{"value":"961f50f6282239d09e48f812c1ca7276"},"password":{"encoding":"latin1"}}"#,
        ))
        .expect("latin1");
        let parsed = StoredHash::parse(&latin1, HashFormat::Auto).expect("readable");
        assert!(!parsed.verify_password("caf\u{0113}"));
    }

    #[test]
    fn unsupported_and_malformed_hashes_say_why_without_the_hash() {
        for (json, why) in [
            (
                r#"{"algorithm":"hmac","hash":{"value":"abcd","digest":"sha1"}}"#,
                "key is required",
            ),
            (
                r#"{"algorithm":"hmac","hash":{"value":"abcd","digest":"tiger","key":{"value":"k"}}}"#,
                "not known",
            ),
            (
                r#"{"algorithm":"md4","hash":{"value":"abcd"}}"#,
                "malformed",
            ),
            (
                r#"{"algorithm":"bcrypt","hash":{"value":"$2b$10$short"}}"#,
                "malformed",
            ),
            (
                r#"{"algorithm":"argon2","hash":{"value":"$2b$04$abcdefghijklmnopqrstuu5vn6HCZJnNfFp3pvDjVYGT/8Y.5pJKO"}}"#,
                "another algorithm",
            ),
            (r#"{"algorithm":"sha1","hash":{"value":"zz"}}"#, "hex"),
            (r#"{"algorithm":"rot13","hash":{"value":"x"}}"#, "not known"),
            (
                r#"{"algorithm":"md5","hash":{"value":"00"},"password":{"encoding":"utf32"}}"#,
                "utf32",
            ),
        ] {
            let error = auth0_custom_hash(&custom(json)).expect_err(json);
            assert!(error.contains(why), "{json}: {error}");
            assert!(!error.contains("abcdefghij"), "{error}");
        }
    }
}

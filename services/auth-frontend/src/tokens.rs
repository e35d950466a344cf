//! Access tokens: JWTs signed with Ed25519 (`alg: EdDSA`, RFC 8037), and the JWK Set that
//! verifies them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::time::Duration;

/// Tokens longer than this are not ours; refuse before any decoding.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no token signing key: set [tokens] signing_key_file or TRICKLE_TOKENS__SIGNING_KEY")]
    Missing,
    #[error("cannot read the token signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the token signing key is not a PKCS#8 PEM Ed25519 private key (make one with `openssl genpkey -algorithm ed25519`)"
    )]
    Invalid,
    #[error("cannot generate a signing key: {0}")]
    Generate(String),
    #[error("cannot read the token key directory {path}: {source}")]
    ReadDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the token key file {file} is neither a PKCS#8 PEM Ed25519 private key nor an SPKI PEM Ed25519 public key"
    )]
    InvalidInSet { file: String },
    #[error(
        "[tokens] claims: {name:?} = {path:?} — the name must not be a claim Trickle sets itself, and the path must be app_metadata.KEY or user_metadata.KEY"
    )]
    BadProfileClaim { name: String, path: String },
    #[error(
        "[tokens] current_key = {name:?} is not a private key file in {dir} (files there: {found})"
    )]
    NoCurrent {
        name: String,
        dir: String,
        found: String,
    },
    #[error("[tokens] keys_dir is set: also set current_key, the file name of the key that signs")]
    CurrentUnset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed, not signed by this issuer, or not meant for this audience")]
    Invalid,
    #[error("the token has expired")]
    Expired,
}

/// The claims Trickle puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub legacy_id: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
    /// Present (true) only when the user should choose a new password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub password_change_required: bool,
    /// How the user authenticated (RFC 8176): `pwd`, plus `otp` and `mfa` with a second
    /// factor. Empty in tokens issued before second factors existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Claims copied from the user's profile (`[tokens] claims`).
    #[serde(flatten)]
    pub profile: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// A public key of the JWK Set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    pub kid: String,
    /// base64url, no padding.
    pub x: String,
}

/// Signs access tokens with the current Ed25519 key and validates them with any key of the
/// set: after a rotation the previous keys keep verifying (and stay in the JWKS) until the
/// operator removes them, once their last token has expired.
#[derive(Clone)]
pub struct TokenIssuer {
    signing: SigningKey,
    kid: String,
    /// Every key that verifies, the current one first, by kid.
    verifying: Vec<(String, VerifyingKey)>,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// `[tokens] claims`: claim name → (metadata, key) in the user's profile.
    profile_claims: Vec<(String, ProfileField)>,
}

/// Which metadata of a profile a configured claim reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metadata {
    App,
    User,
}

type ProfileField = (Metadata, String);

/// Claims Trickle sets itself: a configured claim may not take their names.
const RESERVED_CLAIMS: &[&str] = &[
    "sub",
    "email",
    "legacy_id",
    "iat",
    "exp",
    "nbf",
    "iss",
    "aud",
    "jti",
    "amr",
    "password_change_required",
];

/// The most the configured claims may add to one token (serialized JSON).
const MAX_PROFILE_CLAIM_BYTES: usize = 2048;

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// `[tokens] claims`, checked: names Trickle does not set itself, paths into the metadata.
fn profile_claims(
    configured: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, ProfileField)>, KeyError> {
    configured
        .iter()
        .map(|(name, path)| {
            let bad = || KeyError::BadProfileClaim {
                name: name.clone(),
                path: path.clone(),
            };
            if name.is_empty() || RESERVED_CLAIMS.contains(&name.as_str()) {
                return Err(bad());
            }
            let field = match path.split_once('.') {
                Some(("app_metadata", key)) if !key.is_empty() => (Metadata::App, key.to_owned()),
                Some(("user_metadata", key)) if !key.is_empty() => (Metadata::User, key.to_owned()),
                _ => return Err(bad()),
            };
            Ok((name.clone(), field))
        })
        .collect()
}

/// A protobuf `Value` as JSON.
fn json_of(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(json_of).collect())
        }
        Some(Kind::StructValue(object)) => serde_json::Value::Object(
            object
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), json_of(v)))
                .collect(),
        ),
    }
}

/// Generate a new Ed25519 key as PKCS#8 PEM (for `trickle dev` and tests).
pub fn generate_signing_key_pem() -> Result<String, KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Generate(e.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    Ok(pem.to_string())
}

/// The kid of a public key: RFC 7638-style, derived from the key, so rotating the key
/// rotates the kid and every replica computes the same one.
fn kid_of(key: &VerifyingKey) -> String {
    let digest = sha2::Sha256::digest(key.as_bytes());
    B64.encode(&digest[..12])
}

/// A key of the set: a private key (it could sign) or a public one (verify only).
fn parse_key(pem: &str) -> Option<(Option<SigningKey>, VerifyingKey)> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    if let Ok(signing) = SigningKey::from_pkcs8_pem(pem.trim()) {
        let verifying = signing.verifying_key();
        return Some((Some(signing), verifying));
    }
    VerifyingKey::from_public_key_pem(pem.trim())
        .ok()
        .map(|verifying| (None, verifying))
}

impl TokenIssuer {
    pub fn from_config(config: &crate::config::TokenConfig) -> Result<Self, KeyError> {
        let profile_claims = profile_claims(&config.claims)?;
        let mut issuer = Self::keys_from_config(config)?;
        issuer.profile_claims = profile_claims;
        Ok(issuer)
    }

    fn keys_from_config(config: &crate::config::TokenConfig) -> Result<Self, KeyError> {
        if !config.keys_dir.is_empty() {
            return Self::from_dir(config);
        }
        let pem = if !config.signing_key.trim().is_empty() {
            config.signing_key.clone()
        } else if !config.signing_key_file.is_empty() {
            std::fs::read_to_string(&config.signing_key_file).map_err(|source| KeyError::Read {
                path: config.signing_key_file.clone(),
                source,
            })?
        } else {
            return Err(KeyError::Missing);
        };
        Self::from_pem(
            &pem,
            &config.issuer,
            &config.audience,
            Duration::from_secs(config.ttl_seconds.max(1)),
        )
    }

    pub fn from_pem(
        pem: &str,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, KeyError> {
        let signing = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|_| KeyError::Invalid)?;
        let verifying = signing.verifying_key();
        let kid = kid_of(&verifying);
        Ok(Self {
            signing,
            verifying: vec![(kid.clone(), verifying)],
            kid,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            profile_claims: Vec::new(),
        })
    }

    /// A key set from a directory (a Kubernetes Secret mounted with one file per key): the
    /// file named `current_key` signs; every other key file (private or public PEM) only
    /// verifies. Hidden files (the `..data` links of a Secret volume) are skipped.
    fn from_dir(config: &crate::config::TokenConfig) -> Result<Self, KeyError> {
        if config.current_key.trim().is_empty() {
            return Err(KeyError::CurrentUnset);
        }
        let dir = &config.keys_dir;
        let read_dir_error = |source| KeyError::ReadDir {
            path: dir.clone(),
            source,
        };
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .map_err(read_dir_error)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.is_file()
                    && !path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        files.sort();
        let mut current = None;
        let mut others = Vec::new();
        for path in &files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let (signing, verifying) =
                parse_key(&pem).ok_or_else(|| KeyError::InvalidInSet { file: name.clone() })?;
            if name == config.current_key.trim() {
                current = signing.map(|s| (s, verifying));
            } else {
                others.push(verifying);
            }
        }
        let Some((signing, verifying)) = current else {
            return Err(KeyError::NoCurrent {
                name: config.current_key.clone(),
                dir: dir.clone(),
                found: files
                    .iter()
                    .filter_map(|p| p.file_name().and_then(|n| n.to_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let kid = kid_of(&verifying);
        let mut keys = vec![(kid.clone(), verifying)];
        for key in others {
            let other_kid = kid_of(&key);
            if !keys.iter().any(|(k, _)| *k == other_kid) {
                keys.push((other_kid, key));
            }
        }
        Ok(Self {
            signing,
            verifying: keys,
            kid,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: Duration::from_secs(config.ttl_seconds.max(1)),
            profile_claims: Vec::new(),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The kid of the key that signs new tokens.
    pub fn current_kid(&self) -> &str {
        &self.kid
    }

    /// The JWK Set: every key that verifies, the signing key first.
    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.verifying
            .iter()
            .map(|(kid, key)| PublicJwk {
                kid: kid.clone(),
                x: B64.encode(key.as_bytes()),
            })
            .collect()
    }

    /// Issue a token for a user, valid from `now` (seconds since the epoch).
    pub fn issue(&self, user_id: &str, email: &str, legacy_id: &str, now: i64) -> String {
        self.sign(&self.claims(user_id, email, legacy_id, now))
    }

    /// The token of a login: [`TokenIssuer::issue`] plus what the user record says — a
    /// required password change, and the `[tokens] claims` taken from the profile.
    pub fn issue_for(
        &self,
        user: &trickle_proto::auth::v1::User,
        amr: &[&str],
        now: i64,
    ) -> String {
        let mut claims = self.claims(&user.user_id, &user.email, &user.legacy_id, now);
        claims.password_change_required = user.password_change_required;
        claims.amr = amr.iter().map(|&method| method.to_owned()).collect();
        claims.profile = self.profile_claims_of(user);
        self.sign(&claims)
    }

    /// The configured claims of `user`'s profile, or none when together they are larger
    /// than [`MAX_PROFILE_CLAIM_BYTES`] (a token must stay a header's size).
    fn profile_claims_of(
        &self,
        user: &trickle_proto::auth::v1::User,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let Some(profile) = &user.profile else {
            return out;
        };
        for (name, (metadata, key)) in &self.profile_claims {
            let source = match metadata {
                Metadata::App => &profile.app_metadata,
                Metadata::User => &profile.user_metadata,
            };
            if let Some(value) = source.as_ref().and_then(|s| s.fields.get(key)) {
                out.insert(name.clone(), json_of(value));
            }
        }
        let size = serde_json::to_vec(&out).map_or(usize::MAX, |v| v.len());
        if size > MAX_PROFILE_CLAIM_BYTES {
            tracing::warn!(
                trickle.user.id = %user.user_id,
                bytes = size,
                "the profile claims of this user are over {MAX_PROFILE_CLAIM_BYTES} bytes; the token carries none"
            );
            return serde_json::Map::new();
        }
        out
    }

    fn claims(&self, user_id: &str, email: &str, legacy_id: &str, now: i64) -> Claims {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        Claims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            legacy_id: legacy_id.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid_like(),
            password_change_required: false,
            amr: Vec::new(),
            profile: serde_json::Map::new(),
        }
    }

    fn sign(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: "JWT".into(),
            kid: self.kid.clone(),
        };
        // Serializing these plain structs cannot fail.
        let header = B64.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = self.signing.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }

    /// Check signature, issuer, audience and expiry at `now`.
    pub fn validate(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let (header, payload) = signed.split_once('.').ok_or(TokenError::Invalid)?;
        if payload.contains('.') {
            return Err(TokenError::Invalid);
        }
        let header: Header = decode_json(header)?;
        // Only our algorithm and our keys: never let the token choose how it is verified.
        if header.alg != "EdDSA" {
            return Err(TokenError::Invalid);
        }
        let Some((_, key)) = self.verifying.iter().find(|(kid, _)| *kid == header.kid) else {
            return Err(TokenError::Invalid);
        };
        let signature = B64.decode(signature).map_err(|_| TokenError::Invalid)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Invalid)?;
        key.verify_strict(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid)?;
        let claims: Claims = decode_json(payload)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(TokenError::Invalid);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = B64.decode(part).map_err(|_| TokenError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)
}

/// A random token id (128 bits, base64url).
fn uuid_like() -> String {
    let mut bytes = [0u8; 16];
    // A failing OS RNG leaves the id zeroed; the id is informational, not a secret.
    let _ = getrandom::fill(&mut bytes);
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let pem = generate_signing_key_pem().expect("key");
        TokenIssuer::from_pem(&pem, "trickle", "internal", Duration::from_secs(60)).expect("issuer")
    }

    #[test]
    fn round_trip_and_rejections() {
        let issuer = issuer();
        let token = issuer.issue("u1", "a@example.com", "42", 1_000);
        let claims = issuer.validate(&token, 1_010).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.legacy_id.as_str(), claims.exp),
            ("u1", "42", 1_060)
        );
        assert_eq!(issuer.validate(&token, 1_060), Err(TokenError::Expired));
        // Another key with the same issuer and audience.
        assert_eq!(
            self::issuer().validate(&token, 1_010),
            Err(TokenError::Invalid)
        );
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(br#"{"sub":"admin","email":"a@example.com","iat":1000,"exp":9999999999,"iss":"trickle","aud":"internal","jti":"x"}"#);
        parts[1] = &forged;
        assert_eq!(
            issuer.validate(&parts.join("."), 1_010),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer.validate("not.a.jwt", 1_010),
            Err(TokenError::Invalid)
        );
        assert_eq!(issuer.validate("", 1_010), Err(TokenError::Invalid));
    }

    /// Configured claims come from the profile, are bounded, and may not shadow ours.
    #[test]
    fn profile_claims_are_copied_bounded_and_checked() {
        use prost_types::{ListValue, Struct, Value, value::Kind};
        let mut config = crate::config::TokenConfig {
            signing_key: generate_signing_key_pem().expect("key"),
            ..Default::default()
        };
        config
            .claims
            .insert("roles".into(), "app_metadata.roles".into());
        config
            .claims
            .insert("locale".into(), "user_metadata.locale".into());
        let issuer = TokenIssuer::from_config(&config).expect("issuer");
        let text = |s: &str| Value {
            kind: Some(Kind::StringValue(s.into())),
        };
        let user = |roles: Vec<Value>| trickle_proto::auth::v1::User {
            user_id: "u1".into(),
            email: "a@example.com".into(),
            profile: Some(trickle_proto::auth::v1::Profile {
                app_metadata: Some(Struct {
                    fields: [(
                        "roles".to_owned(),
                        Value {
                            kind: Some(Kind::ListValue(ListValue { values: roles })),
                        },
                    )]
                    .into_iter()
                    .collect(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = issuer.issue_for(&user(vec![text("admin"), text("editor")]), &["pwd"], 1_000);
        let claims = issuer.validate(&token, 1_001).expect("valid");
        assert_eq!(
            claims.profile.get("roles"),
            Some(&serde_json::json!(["admin", "editor"]))
        );
        assert!(
            !claims.profile.contains_key("locale"),
            "absent stays absent"
        );
        // Too large: no profile claims at all, the token still issued.
        let many: Vec<Value> = (0..400).map(|i| text(&format!("role-{i}"))).collect();
        let claims = issuer
            .validate(&issuer.issue_for(&user(many), &["pwd"], 1_000), 1_001)
            .expect("valid");
        assert!(claims.profile.is_empty());

        for (name, path) in [
            ("sub", "app_metadata.x"),
            ("exp", "app_metadata.x"),
            ("roles", "profile.roles"),
            ("roles", "app_metadata."),
        ] {
            let mut bad = config.clone();
            bad.claims.clear();
            bad.claims.insert(name.into(), path.into());
            assert!(
                matches!(
                    TokenIssuer::from_config(&bad),
                    Err(KeyError::BadProfileClaim { .. })
                ),
                "{name} = {path}"
            );
        }
    }

    fn config_for(dir: &std::path::Path, current: &str) -> crate::config::TokenConfig {
        crate::config::TokenConfig {
            keys_dir: dir.display().to_string(),
            current_key: current.into(),
            ..Default::default()
        }
    }

    /// A rotation: the new key signs, tokens of the old one still validate while it is in
    /// the set (as a private or a public key), and stop once it is removed.
    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_old_key_leaves_the_set() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let old_pem = generate_signing_key_pem().expect("key");
        std::fs::write(dir.path().join("2026-10.pem"), &old_pem).expect("write");
        // A Secret volume's bookkeeping entries are not keys.
        std::fs::write(dir.path().join("..data"), "not a key").expect("write");
        let before = TokenIssuer::from_config(&config_for(dir.path(), "2026-10.pem")).expect("set");
        let now = chrono::Utc::now().timestamp();
        let old_token = before.issue("u1", "a@example.com", "", now);

        std::fs::write(
            dir.path().join("2026-11.pem"),
            generate_signing_key_pem().expect("key"),
        )
        .expect("write");
        let after = TokenIssuer::from_config(&config_for(dir.path(), "2026-11.pem")).expect("set");
        assert_ne!(after.current_kid(), before.current_kid());
        let kids: Vec<String> = after.jwks().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, [after.current_kid(), before.current_kid()]);
        assert!(after.validate(&old_token, now + 1).is_ok());
        let new_token = after.issue("u1", "a@example.com", "", now);
        assert!(after.validate(&new_token, now + 1).is_ok());

        // The old key kept as a public key only: still verifies.
        let public = SigningKey::from_pkcs8_pem(&old_pem)
            .expect("key")
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        std::fs::write(dir.path().join("2026-10.pem"), public).expect("write");
        let public_only =
            TokenIssuer::from_config(&config_for(dir.path(), "2026-11.pem")).expect("set");
        assert!(public_only.validate(&old_token, now + 1).is_ok());

        std::fs::remove_file(dir.path().join("2026-10.pem")).expect("remove");
        let removed =
            TokenIssuer::from_config(&config_for(dir.path(), "2026-11.pem")).expect("set");
        assert_eq!(
            removed.validate(&old_token, now + 1),
            Err(TokenError::Invalid)
        );
        assert_eq!(removed.jwks().len(), 1);
    }

    #[test]
    fn a_key_set_without_its_current_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.pem"),
            generate_signing_key_pem().expect("key"),
        )
        .expect("write");
        let err = TokenIssuer::from_config(&config_for(dir.path(), "b.pem")).expect_err("missing");
        assert!(err.to_string().contains("a.pem"), "{err}");
        std::fs::write(dir.path().join("junk.pem"), "junk").expect("write");
        let err = TokenIssuer::from_config(&config_for(dir.path(), "a.pem")).expect_err("junk");
        assert!(err.to_string().contains("junk.pem"), "{err}");
    }
}

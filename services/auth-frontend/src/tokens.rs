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

/// Signs and validates access tokens with one Ed25519 key.
#[derive(Clone)]
pub struct TokenIssuer {
    signing: SigningKey,
    verifying: VerifyingKey,
    kid: String,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
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

impl TokenIssuer {
    pub fn from_config(config: &crate::config::TokenConfig) -> Result<Self, KeyError> {
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
        // RFC 7638-style: a stable id derived from the public key, so rotating the key
        // rotates the kid.
        let digest = sha2::Sha256::digest(verifying.as_bytes());
        let kid = B64.encode(&digest[..12]);
        Ok(Self {
            signing,
            verifying,
            kid,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn jwk(&self) -> PublicJwk {
        PublicJwk {
            kid: self.kid.clone(),
            x: B64.encode(self.verifying.as_bytes()),
        }
    }

    /// Issue a token for a user, valid from `now` (seconds since the epoch).
    pub fn issue(&self, user_id: &str, email: &str, legacy_id: &str, now: i64) -> String {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            legacy_id: legacy_id.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid_like(),
        };
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
        // Only our algorithm and our key: never let the token choose how it is verified.
        if header.alg != "EdDSA" || header.kid != self.kid {
            return Err(TokenError::Invalid);
        }
        let signature = B64.decode(signature).map_err(|_| TokenError::Invalid)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Invalid)?;
        self.verifying
            .verify_strict(signed.as_bytes(), &signature)
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
}

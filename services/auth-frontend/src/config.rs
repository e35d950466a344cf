//! The `[frontend]` and `[tokens]` sections of the configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendConfig {
    /// Where the public gRPC API listens.
    pub listen: String,
    /// The user-store's gRPC address.
    pub store_url: String,
    /// The migration coordinator's gRPC address.
    pub coordinator_url: String,
    /// Deadline for one call to the user-store or the coordinator. A first login includes
    /// the legacy check and an argon2 hash, so keep it above the coordinator's legacy deadline.
    pub upstream_timeout_ms: u64,
    /// How often the frontend re-reads the migration mode from the coordinator.
    pub mode_refresh_ms: u64,
    /// Where `/metrics` is served for Prometheus; empty: nowhere.
    pub metrics_listen: String,
    /// Mutual TLS for the frontend's calls to the store and the coordinator (its public
    /// listener is not affected).
    pub tls: trickle_service_kit::tls::TlsConfig,
    /// Mutual TLS on the public API: callers must present a certificate from `ca_file`, and
    /// failed logins are also counted per calling client (its certificate's fingerprint).
    pub public_tls: trickle_service_kit::tls::TlsConfig,
    /// Opt-in: with a key, the login span carries `trickle.user.email_hash`, an HMAC-SHA256
    /// of the normalized email under this key. Empty (default): emails never reach telemetry.
    pub telemetry_email_hash_key: String,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            store_url: "http://127.0.0.1:50052".into(),
            coordinator_url: "http://127.0.0.1:50054".into(),
            upstream_timeout_ms: 10_000,
            mode_refresh_ms: 2000,
            metrics_listen: "127.0.0.1:9101".into(),
            tls: trickle_service_kit::tls::TlsConfig::default(),
            public_tls: trickle_service_kit::tls::TlsConfig::default(),
            telemetry_email_hash_key: String::new(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// Lifetime of an access token.
    pub ttl_seconds: u64,
    /// A PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub signing_key_file: String,
    /// The same key inline, for `TRICKLE_TOKENS__SIGNING_KEY` from a Secret. Wins over the file.
    pub signing_key: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("signing_key_file", &self.signing_key_file)
            .field(
                "signing_key",
                &if self.signing_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "trickle".into(),
            audience: "internal".into(),
            ttl_seconds: 900,
            signing_key_file: String::new(),
            signing_key: String::new(),
        }
    }
}

//! The `[frontend]` and `[tokens]` sections of the configuration.

use serde::Deserialize;

#[derive(Clone, Deserialize)]
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
    /// How long a replica remembers that a token's user exists and when their password last
    /// changed: a deletion or a password change reaches ValidateToken within this. 0: ask
    /// the store for every validation.
    pub token_subject_cache_ms: u64,
    /// Serve gRPC reflection on the public API (grpcurl without a .proto). Off by default:
    /// it is a map of the API for anyone who can reach the port. `trickle dev` turns it on.
    pub reflection: bool,
    /// With `[frontend.public_tls]`, the certificate identities allowed to call each
    /// privileged RPC (see [`PrivilegedCallers`]).
    pub privileged_callers: PrivilegedCallers,
    /// Opt-in: with a key, the login span carries `trickle.user.email_hash`, an HMAC-SHA256
    /// of the normalized email under this key. Empty (default): emails never reach telemetry.
    pub telemetry_email_hash_key: String,
}

impl std::fmt::Debug for FrontendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendConfig")
            .field("listen", &self.listen)
            .field("store_url", &self.store_url)
            .field("coordinator_url", &self.coordinator_url)
            .field("upstream_timeout_ms", &self.upstream_timeout_ms)
            .field("mode_refresh_ms", &self.mode_refresh_ms)
            .field("token_subject_cache_ms", &self.token_subject_cache_ms)
            .field("metrics_listen", &self.metrics_listen)
            .field("tls", &self.tls)
            .field("public_tls", &self.public_tls)
            .field("reflection", &self.reflection)
            .field("privileged_callers", &self.privileged_callers)
            .field(
                "telemetry_email_hash_key",
                &trickle_password::redacted(&self.telemetry_email_hash_key),
            )
            .finish()
    }
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
            token_subject_cache_ms: 2000,
            reflection: false,
            privileged_callers: PrivilegedCallers::default(),
            telemetry_email_hash_key: String::new(),
        }
    }
}

/// `[frontend.privileged_callers]`: who may call the RPCs that act on an account without its
/// password. Each key lists certificate identities (DNS names of client certificates under
/// `[frontend.public_tls]`); a caller not listed gets `PERMISSION_DENIED`. A key left out
/// means: any caller with a valid certificate — except `create_password_reset_ticket`,
/// which is closed unless named, since a reset ticket in the wrong hands takes the account.
///
/// Without `[frontend.public_tls]` there is no caller identity to check: setting any key is
/// then a start error, and only the NetworkPolicy stands between callers and these RPCs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivilegedCallers {
    pub create_password_reset_ticket: Option<Vec<String>>,
    pub create_email_verification_ticket: Option<Vec<String>>,
    pub delete_user: Option<Vec<String>>,
    pub change_email: Option<Vec<String>>,
    pub get_user: Option<Vec<String>>,
    /// BlockUser, UnblockUser and RequirePasswordChange.
    pub account_state: Option<Vec<String>>,
    /// EnrollTotp, ConfirmTotp and RemoveFactor: whoever can call RemoveFactor takes an
    /// account's second factor away.
    pub factors: Option<Vec<String>>,
    /// UpdateAppMetadata: app_metadata holds what applications decide (roles, a plan) and
    /// what tokens may carry as claims.
    pub app_metadata: Option<Vec<String>>,
}

impl PrivilegedCallers {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Method path → allowed identities, as the server's caller policy takes them.
    pub fn per_method(&self) -> std::collections::HashMap<String, Vec<String>> {
        let method = |name: &str| format!("/trickle.auth.v1.AuthService/{name}");
        let mut map = std::collections::HashMap::new();
        map.insert(
            method("CreatePasswordResetTicket"),
            self.create_password_reset_ticket
                .clone()
                .unwrap_or_default(),
        );
        for (name, list) in [
            (
                "CreateEmailVerificationTicket",
                &self.create_email_verification_ticket,
            ),
            ("DeleteUser", &self.delete_user),
            ("ChangeEmail", &self.change_email),
            ("GetUser", &self.get_user),
            ("BlockUser", &self.account_state),
            ("UnblockUser", &self.account_state),
            ("RequirePasswordChange", &self.account_state),
            ("EnrollTotp", &self.factors),
            ("ConfirmTotp", &self.factors),
            ("RemoveFactor", &self.factors),
            ("UpdateAppMetadata", &self.app_metadata),
        ] {
            if let Some(list) = list {
                map.insert(method(name), list.clone());
            }
        }
        map
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
    /// A key set for rotation: a directory (a mounted Secret) with one PEM file per key.
    /// `current_key` signs; every other file (PKCS#8 private or SPKI public key) still
    /// verifies and is published in the JWKS. Wins over `signing_key[_file]`.
    pub keys_dir: String,
    /// The file name in `keys_dir` of the key that signs new tokens.
    pub current_key: String,
    /// Claims copied from the user's profile into their tokens: claim name → where in the
    /// profile, `app_metadata.KEY` or `user_metadata.KEY` (e.g. `roles =
    /// "app_metadata.roles"`). At most 2 KiB of them per token; a user whose values are
    /// larger gets a token without them (and a warning).
    pub claims: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("signing_key_file", &self.signing_key_file)
            .field("keys_dir", &self.keys_dir)
            .field("current_key", &self.current_key)
            .field("claims", &self.claims)
            .field(
                "signing_key",
                &trickle_password::redacted(&self.signing_key),
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
            keys_dir: String::new(),
            current_key: String::new(),
            claims: std::collections::BTreeMap::new(),
        }
    }
}

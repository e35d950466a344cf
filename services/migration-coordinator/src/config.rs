//! The `[migration]` section of the configuration.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Users the store does not have are checked against the legacy store and imported.
    #[default]
    Import,
    /// The store is the only source of users; the legacy store is never asked.
    Authoritative,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Import => "import",
            Mode::Authoritative => "authoritative",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "import" => Some(Mode::Import),
            "authoritative" => Some(Mode::Authoritative),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationConfig {
    /// Where the coordinator's gRPC server listens.
    pub listen: String,
    /// Where the operators' API (`MigrationAdmin`: status, mode switch, backfill) listens.
    /// Never the address in `[frontend] coordinator_url`: the frontend has no business
    /// switching the mode, and a NetworkPolicy keeps everyone but operators off this port.
    pub admin_listen: String,
    /// With mutual TLS on, the certificate identities (DNS names) allowed on `admin_listen`
    /// (for example the `trickle admin` client certificate of your operators).
    pub admin_allowed_callers: Vec<String>,
    /// Where `/metrics` is served for Prometheus; empty: nowhere.
    pub metrics_listen: String,
    /// Mutual TLS: only callers with a certificate from `ca_file` are served, and the
    /// coordinator presents its certificate to the store and the legacy connector.
    pub tls: trickle_service_kit::tls::TlsConfig,
    /// How often the coordinator refreshes the users-migrated and legacy-users-remaining
    /// gauges (it counts in the store and asks the legacy connector).
    pub status_refresh_seconds: u64,
    /// The mode on first start. Afterwards the mode lives in the coordinator's database.
    pub mode: Mode,
    /// The coordinator's own tables (mode, ledger). Empty: the store's database.
    pub database_url: trickle_service_kit::db::DatabaseUrl,
    pub max_connections: u32,
    /// The user-store's gRPC address.
    pub store_url: String,
    /// The legacy connector's gRPC address.
    pub legacy_url: String,
    /// Deadline for one call to the legacy connector; past it the login is UNAVAILABLE.
    pub legacy_timeout_ms: u64,
    /// Consecutive failed calls to the legacy connector (unreachable, or past the deadline)
    /// after which first logins answer UNAVAILABLE at once instead of asking it (0: never).
    pub legacy_breaker_failures: u32,
    /// How long the circuit stays open before one call probes the legacy store again.
    pub legacy_breaker_open_ms: u64,
    /// Deadline for one call to the user-store.
    pub store_timeout_ms: u64,
    /// How long a replica trusts the mode it last read before reading it again.
    pub mode_cache_ms: u64,
    /// A running backfill whose coordinator sent no heartbeat for this long is taken over
    /// by another replica (or by this one after a restart).
    pub backfill_lease_seconds: u64,
    /// A password reset that migrates a legacy user marks their email verified: the reset
    /// ticket reached that address. Off by default, since how the ticket is delivered is the
    /// calling service's business.
    pub reset_verifies_email: bool,
    /// How often WatchEvents streams and the webhook look for new events when they have
    /// caught up.
    pub events_poll_ms: u64,
    /// Where every event is POSTed (JSON, signed with `webhook_secret`). Empty: no webhook.
    /// Must be https:// unless the host is a loopback address.
    pub webhook_url: String,
    /// The HMAC-SHA256 key of the `Trickle-Signature` header; at least 16 bytes. Secret:
    /// set it through `TRICKLE_MIGRATION__WEBHOOK_SECRET` from a Kubernetes Secret.
    pub webhook_secret: WebhookSecret,
    /// Events per POST.
    pub webhook_batch: u32,
    /// Tries of one POST before its events are given up (counted as `dead_letter`).
    pub webhook_max_attempts: u32,
    /// The wait after the first failed try; it doubles each time up to `webhook_backoff_max_ms`.
    pub webhook_backoff_ms: u64,
    pub webhook_backoff_max_ms: u64,
    /// Deadline of one POST.
    pub webhook_timeout_ms: u64,
    /// One coordinator replica delivers at a time; another takes over when its lease has
    /// not been renewed for this long.
    pub webhook_lease_seconds: u64,
}

/// The webhook's signing key; `Debug` says only whether it is set.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(trickle_password::redacted(&self.0))
    }
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50054".into(),
            admin_listen: "127.0.0.1:50055".into(),
            admin_allowed_callers: Vec::new(),
            metrics_listen: "127.0.0.1:9104".into(),
            tls: trickle_service_kit::tls::TlsConfig::default(),
            status_refresh_seconds: 30,
            mode: Mode::Import,
            database_url: Default::default(),
            max_connections: 5,
            store_url: "http://127.0.0.1:50052".into(),
            legacy_url: "http://127.0.0.1:50053".into(),
            legacy_timeout_ms: 3000,
            legacy_breaker_failures: 5,
            legacy_breaker_open_ms: 5000,
            store_timeout_ms: 10_000,
            mode_cache_ms: 2000,
            backfill_lease_seconds: 30,
            reset_verifies_email: false,
            events_poll_ms: 250,
            webhook_url: String::new(),
            webhook_secret: WebhookSecret::default(),
            webhook_batch: 100,
            webhook_max_attempts: 12,
            webhook_backoff_ms: 1000,
            webhook_backoff_max_ms: 300_000,
            webhook_timeout_ms: 10_000,
            webhook_lease_seconds: 30,
        }
    }
}

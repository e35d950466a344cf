//! The `[store]` section of the configuration.

use serde::Deserialize;
use trickle_password::Argon2Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the user-store's gRPC server listens.
    pub listen: String,
    /// `postgres://…` in production, `sqlite://path?mode=rwc` embedded.
    pub database_url: trickle_service_kit::db::DatabaseUrl,
    pub max_connections: u32,
    /// Parameters of the argon2id hashes the store writes.
    pub argon2: Argon2Config,
    /// Hashing threads; 0 = one per core.
    pub hash_workers: usize,
    /// Hashing jobs admitted beyond those running before logins are refused as overloaded.
    pub hash_queue: usize,
    /// How hashing threads rank against the store's other threads: `idle` (SCHED_IDLE, the
    /// default: cheap calls never wait behind hashing) or `nice` (nice 10: hashing keeps a
    /// share of a contended core).
    pub hash_priority: trickle_password::HashPriority,
    /// Where `/metrics` is served for Prometheus; empty: nowhere.
    pub metrics_listen: String,
    /// Mutual TLS: only callers with a certificate from `ca_file` are served.
    pub tls: trickle_service_kit::tls::TlsConfig,
    /// Failed logins per email within `login_throttle_window_seconds` before the email is
    /// locked for `login_throttle_lockout_seconds` (0: no throttling). Per (email, source)
    /// when the caller names the attempt's source (auth.v1.LoginRequest.attempt_source).
    pub login_throttle_failures: u32,
    /// Failed logins per email from all sources together that lock it for everyone, when
    /// attempts name their source (at least `login_throttle_failures`).
    pub login_throttle_email_ceiling: u32,
    pub login_throttle_window_seconds: u64,
    pub login_throttle_lockout_seconds: u64,
    /// Failed logins through one calling client (known when the frontend's public API
    /// requires client certificates) within the window that lock that client out; 0
    /// disables.
    pub client_throttle_failures: u32,
    pub client_throttle_window_seconds: u64,
    pub client_throttle_lockout_seconds: u64,
    /// How long a password reset ticket stays valid.
    pub reset_ticket_ttl_seconds: u64,
    /// How long an email verification ticket stays valid.
    pub verification_ticket_ttl_seconds: u64,
    /// How often expired tickets and stale throttle rows are deleted (every replica may do
    /// it; the deletes are idempotent). 0: never.
    pub prune_interval_seconds: u64,
    /// How long a ticket is kept after it expired, so that a late redemption still answers
    /// TICKET_EXPIRED rather than TICKET_INVALID.
    pub prune_tickets_after_seconds: u64,
    /// A breached-password corpus (SHA-1 hashes; a sorted file, or a directory in the
    /// prefix-range layout). A user who migrates with a password found there, or shorter than
    /// the sign-up minimum, must change it (`password_change_required`). Read offline; never
    /// sent anywhere. Empty: only the length is checked.
    pub breached_passwords: String,
    /// The key that seals second-factor (TOTP) secrets at rest, `ID:KEY` with KEY 32 random
    /// bytes in base64 (`trickle gen-factor-key`); for `TRICKLE_STORE__FACTOR_KEY` from a
    /// Secret. The id is stored with each factor. Empty, and no `factor_keys_dir`: second
    /// factors cannot be enrolled.
    pub factor_key: FactorKeySetting,
    /// Keys for rotation: a directory (a mounted Secret) with one file per key, named by its
    /// id, holding the base64 key. `current_factor_key` seals new secrets (and reseals old
    /// ones when they are next used); every other key still opens. Wins over `factor_key`.
    pub factor_keys_dir: String,
    pub current_factor_key: String,
    /// The issuer authenticator apps show next to the account (otpauth URIs).
    pub totp_issuer: String,
    /// How long a login's second-factor challenge stays valid.
    pub mfa_challenge_ttl_seconds: u64,
    /// How often committed events get their position (the delay before WatchEvents and
    /// webhooks can see them).
    pub events_sequence_ms: u64,
    /// Events older than this are deleted by the retention task (the newest one is always
    /// kept). A consumer that stays away longer must resume from the oldest kept.
    pub events_retention_hours: u64,
    /// How long a login's `last_login_at` may wait to be written, batched with the other
    /// logins of that window (one statement for all of them), after the login has answered.
    /// A crash loses at most this much of it; a stop writes it first. The LOGIN_SUCCEEDED
    /// event is written before the login answers either way. 0: written with the login,
    /// before it answers.
    pub last_login_flush_ms: u64,
}

/// A key given in the configuration; `Debug` says only whether it is set.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct FactorKeySetting(pub String);

impl std::fmt::Debug for FactorKeySetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(trickle_password::redacted(&self.0))
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50052".into(),
            database_url: "sqlite://./trickle-data/store.db".into(),
            max_connections: 10,
            argon2: Argon2Config::default(),
            hash_workers: 0,
            hash_queue: 256,
            hash_priority: trickle_password::HashPriority::Idle,
            metrics_listen: "127.0.0.1:9102".into(),
            tls: trickle_service_kit::tls::TlsConfig::default(),
            login_throttle_failures: 10,
            login_throttle_email_ceiling: 100,
            login_throttle_window_seconds: 900,
            login_throttle_lockout_seconds: 900,
            client_throttle_failures: 1000,
            client_throttle_window_seconds: 900,
            client_throttle_lockout_seconds: 300,
            reset_ticket_ttl_seconds: 3600,
            verification_ticket_ttl_seconds: 86_400,
            prune_interval_seconds: 300,
            prune_tickets_after_seconds: 86_400,
            breached_passwords: String::new(),
            factor_key: FactorKeySetting::default(),
            factor_keys_dir: String::new(),
            current_factor_key: String::new(),
            totp_issuer: "Trickle".into(),
            mfa_challenge_ttl_seconds: 300,
            events_sequence_ms: 100,
            events_retention_hours: 168,
            last_login_flush_ms: 1000,
        }
    }
}

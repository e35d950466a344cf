//! The `[legacy]` section of the configuration.

use serde::Deserialize;
use trickle_password::{DigestTemplate, HashFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A PostgreSQL, MySQL/MariaDB or SQLite database read with configured queries.
    #[default]
    Sql,
    /// A web service with Basic Auth (`[legacy.http]`).
    Http,
}

/// The type of the legacy id, for the backfill's keyset pagination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    /// Integer ids: the cursor is bound as a 64-bit integer.
    #[default]
    Integer,
    /// Text ids (UUIDs, …): the cursor is bound as text.
    Text,
}

/// How the legacy app stored TOTP secrets (`totp_secret` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TotpEncoding {
    /// RFC 4648 base32, as authenticator apps show them (most apps, pyotp, ASP.NET Identity).
    #[default]
    Base32,
    /// Hexadecimal (django-otp).
    Hex,
    /// Laravel-encrypted base32 (Fortify's `two_factor_secret`), with `laravel_app_key`.
    Laravel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegacyConfig {
    /// Where the legacy-connector's gRPC server listens.
    pub listen: String,
    pub backend: Backend,
    /// A legacy app whose schema Trickle knows (`wordpress`, `django`, `laravel`,
    /// `aspnet-identity`, `aspnet-membership`): it fills in the queries and the hash format
    /// you leave empty.
    pub preset: Option<crate::presets::Preset>,
    /// The app's table prefix (WordPress: `wp_` unless set).
    pub table_prefix: Option<String>,
    /// Whether the preset reads the app's second factors (`wordpress`: the Two Factor
    /// plugin's TOTP key; `aspnet-identity`: the authenticator key of users with
    /// TwoFactorEnabled; `django`: django-otp's confirmed TOTP device). On by default,
    /// except for `django`, whose apps have django-otp's table only when they use it: set
    /// `true` there if they do.
    pub preset_factors: Option<bool>,
    /// For `backend = "http"`.
    pub http: crate::http::HttpConfig,
    /// Where `/metrics` is served for Prometheus; empty: nowhere.
    pub metrics_listen: String,
    /// Mutual TLS: only callers with a certificate from `ca_file` are served.
    pub tls: trickle_service_kit::tls::TlsConfig,
    /// `postgres://…`, `mysql://…` or `sqlite://…`.
    pub database_url: trickle_service_kit::db::DatabaseUrl,
    /// Looks a user up by email. One parameter: the email, lower-cased. Returns `id`, `email`,
    /// `password_hash` and optionally `email_verified`, `name`, `given_name`, `family_name`,
    /// `nickname`, `picture`. Placeholders: `?` for MySQL/MariaDB and SQLite, `$1` for
    /// PostgreSQL. Compare case-insensitively (e.g. `lower(email) = ?`) unless the column's
    /// collation already does.
    pub find_user: String,
    /// Counts the legacy users (no parameter), e.g. `SELECT COUNT(*) FROM users`. Optional:
    /// without it the migration status cannot say how many users remain, and switching to
    /// AUTHORITATIVE needs `force`.
    pub count_users: String,
    /// Lists every user for the backfill, ordered by id, with the same columns as
    /// find_user. Two parameters: the last id of the previous page, and the page size, e.g.
    /// `SELECT id, email, password_hash FROM users WHERE id > ? ORDER BY id LIMIT ?`
    /// (`$1`, `$2` on PostgreSQL). Optional: without it there is no backfill.
    pub list_users: String,
    /// The type of the id column, for `list_users`' first parameter (and `find_roles`').
    pub list_users_cursor: CursorKind,
    /// A user's roles or groups, one row per role in a `role` column. One parameter: the
    /// user's legacy id. E.g. `SELECT r.name AS role FROM user_roles ur JOIN roles r ON
    /// r.id = ur.role_id WHERE ur.user_id = ?`. Optional; run only after a right password,
    /// for the read-only lookup, and per user by the backfill. The roles land in the store
    /// as `app_metadata.roles`.
    pub find_roles: String,
    /// How `find_user`'s optional `totp_secret` column encodes a user's TOTP secret. With
    /// the secret, optional `totp_algorithm` (SHA1, SHA256, SHA512), `totp_digits` and
    /// `totp_period` columns; a NULL or empty secret: no second factor. A user with one never
    /// migrates on the password alone (the first login asks for a code).
    pub totp_secret_encoding: TotpEncoding,
    /// The Laravel app's `APP_KEY` (`base64:…`), to read Fortify's encrypted second-factor
    /// secrets (`totp_secret_encoding = "laravel"`; the `laravel` preset reads them when it
    /// is set). A secret: pass it as `TRICKLE_LEGACY__LARAVEL_APP_KEY` from a Secret.
    pub laravel_app_key: ConfiguredHash,
    /// Other columns of `find_user` / `list_users` to carry into the store's metadata:
    /// column → `user_metadata.KEY` or `app_metadata.KEY` (the value as the column types it),
    /// or `user_metadata` / `app_metadata` for a JSON column holding an object, merged in.
    /// E.g. `plan = "app_metadata.plan"`, `preferences = "user_metadata"`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// For `hash_format = "salted_digest"`: how the legacy app built its digests.
    pub salted_digest: Option<DigestTemplate>,
    /// `auto` (detect each hash's format from its prefix) or a named format: `bcrypt`,
    /// `argon2`, `scrypt`, `pbkdf2`, `django_pbkdf2_sha256`, `django_pbkdf2_sha1`,
    /// `django_bcrypt_sha256`, `django_argon2`, `aspnet_identity`, `phpass`, `drupal7`,
    /// `wordpress_bcrypt`, `crypt`, `ldap`, `aspnet_membership_sha1` (salt from a
    /// `password_salt` column), `salted_digest` (with `[legacy.salted_digest]`).
    pub hash_format: HashFormat,
    /// Deadline for one legacy query; past it the answer is UNAVAILABLE.
    pub query_timeout_ms: u64,
    pub max_connections: u32,
    /// Threads verifying legacy hashes; 0 = one per core.
    pub hash_workers: usize,
    pub hash_queue: usize,
    /// How hashing threads rank against the connector's other threads: `idle` (default) or
    /// `nice`, as `[store] hash_priority`.
    pub hash_priority: trickle_password::HashPriority,
    /// Caps on what verifying one stored legacy hash may cost. A stored hash is data: one
    /// with an absurd cost (argon2 with 4 GiB, PBKDF2 with a billion rounds) would take a
    /// hashing thread for minutes or the pod past its memory limit. A hash above a cap is
    /// treated as unusable (the login fails; the connector logs which legacy id). Size the
    /// connector's memory as 64 MiB + hash_workers × `max_hash_memory_kib`.
    pub hash_limits: trickle_password::HashLimits,
    /// A hash of a random password at your legacy store's usual cost (same format as its
    /// hashes), verified for logins that have no real hash to check (an unknown email, or a
    /// migrated user's wrong password), so that they cost what a real check does. Optional:
    /// without it the connector picks one at start from the first `list_users` page (the
    /// median cost of a few real hashes). Set it when that page is not typical (the oldest
    /// users' hashes are cheaper or dearer than the rest) or when there is no `list_users`.
    pub dummy_hash: ConfiguredHash,
}

/// A stored hash or key given in the configuration; `Debug` says only whether it is set.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct ConfiguredHash(pub String);

impl std::fmt::Debug for ConfiguredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(trickle_password::redacted(&self.0))
    }
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50053".into(),
            backend: Backend::Sql,
            preset: None,
            preset_factors: None,
            table_prefix: None,
            http: crate::http::HttpConfig::default(),
            metrics_listen: "127.0.0.1:9103".into(),
            tls: trickle_service_kit::tls::TlsConfig::default(),
            database_url: Default::default(),
            // Empty: the preset's, or `SELECT id, email, password_hash FROM users WHERE
            // lower(email) = ?` without one.
            find_user: String::new(),
            count_users: String::new(),
            salted_digest: None,
            totp_secret_encoding: TotpEncoding::Base32,
            metadata: std::collections::BTreeMap::new(),
            laravel_app_key: ConfiguredHash::default(),
            list_users: String::new(),
            list_users_cursor: CursorKind::Integer,
            find_roles: String::new(),
            hash_format: HashFormat::Auto,
            query_timeout_ms: 2000,
            max_connections: 5,
            hash_workers: 0,
            hash_queue: 256,
            hash_priority: trickle_password::HashPriority::Idle,
            hash_limits: trickle_password::HashLimits::default(),
            dummy_hash: ConfiguredHash::default(),
        }
    }
}

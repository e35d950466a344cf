//! The SQL backend: a legacy PostgreSQL, MySQL/MariaDB or SQLite database read through the
//! operator's `find_user` query, always with the email bound as a parameter.
//!
//! Longer than our usual file on purpose: `SqlBackend`'s operations (login, equalizing a
//! refusal, lookup, count, list pages) share its pool, the timing wrapper and the refusal
//! hash's state, and read best side by side. Row decoding lives in `rows.rs`.

use crate::config::{CursorKind, LegacyConfig};
use crate::error::LegacyError;
use sqlx::Row;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};
use trickle_password::{DigestTemplate, HashFormat, HashPool, Password, StoredHash};
use trickle_service_kit::Email;

/// A user as the legacy store knows them, without the hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyUser {
    pub legacy_id: String,
    pub email: String,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    /// Disabled in the legacy store (an optional `blocked` column): imported blocked.
    pub blocked: bool,
    /// Roles or groups (`find_roles`), sorted, without repeats: they land in the store as
    /// `app_metadata.roles`.
    pub roles: Vec<String>,
    /// The user's TOTP second factor in the legacy app.
    pub totp: Option<Totp>,
    /// Columns mapped by `[legacy.metadata]`.
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
}

impl LegacyUser {
    /// Metadata over what the store accepts is left out, with a warning: the user still
    /// migrates, without it.
    pub fn cap_metadata(&mut self) {
        for (name, object) in [
            ("user_metadata", &mut self.user_metadata),
            ("app_metadata", &mut self.app_metadata),
        ] {
            let size = serde_json::to_vec(&*object).map_or(usize::MAX, |v| v.len());
            if size > MAX_METADATA_BYTES {
                tracing::warn!(
                    trickle.legacy.id = %self.legacy_id,
                    bytes = size,
                    "the legacy {name} is over {MAX_METADATA_BYTES} bytes; left out"
                );
                object.clear();
            }
        }
    }
}

/// Where `[legacy.metadata]` puts one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    pub column: String,
    /// `true`: app_metadata; `false`: user_metadata.
    pub app: bool,
    /// `None`: the column holds a JSON object, merged in.
    pub key: Option<String>,
}

/// The most metadata one legacy user may bring (JSON), as the store accepts it.
const MAX_METADATA_BYTES: usize = 16 * 1024;

impl MetadataColumn {
    /// `[legacy.metadata]`, checked: column names are identifiers, targets are
    /// `user_metadata[.KEY]` or `app_metadata[.KEY]`.
    pub fn parse_all(
        config: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<Self>, LegacyError> {
        config
            .iter()
            .map(|(column, target)| {
                let identifier = !column.is_empty()
                    && column.len() <= 64
                    && column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !identifier {
                    return Err(LegacyError::Config(format!(
                        "[legacy.metadata] {column:?}: a column name (letters, digits, '_')"
                    )));
                }
                let (object, key) = match target.split_once('.') {
                    Some((object, key)) => (object, Some(key)),
                    None => (target.as_str(), None),
                };
                let app = match object {
                    "app_metadata" => true,
                    "user_metadata" => false,
                    _ => {
                        return Err(LegacyError::Config(format!(
                            "[legacy.metadata] {column}: {target:?} is not user_metadata[.KEY] or app_metadata[.KEY]"
                        )));
                    }
                };
                if key.is_some_and(|k| k.is_empty() || k.len() > 128) {
                    return Err(LegacyError::Config(format!(
                        "[legacy.metadata] {column}: the key after {object}. must be 1 to 128 bytes"
                    )));
                }
                if app && key == Some("roles") {
                    return Err(LegacyError::Config(format!(
                        "[legacy.metadata] {column}: app_metadata.roles is find_roles'"
                    )));
                }
                Ok(Self {
                    column: column.clone(),
                    app,
                    key: key.map(str::to_owned),
                })
            })
            .collect()
    }
}

/// Roles one legacy user may bring (more are cut, with a warning).
const MAX_ROLES: usize = 100;
/// The longest role name kept (longer ones are skipped, with a warning).
const MAX_ROLE_BYTES: usize = 128;

/// A legacy row with its hash, parsed. Stays inside this crate.
struct Candidate {
    user: LegacyUser,
    /// The hash, or why no password can match this record.
    hash: Result<StoredHash, UnusableHash>,
}

/// Why a legacy record's hash cannot be used as it is: the class (which the preflight census
/// counts), the scheme when it is known, and a sentence for logs and reports. Never the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableHash {
    pub problem: HashProblem,
    pub scheme: Option<&'static str>,
    pub reason: String,
}

/// The classes of [`UnusableHash`]; `ConnectorOnly` still verifies here, it only cannot
/// leave the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProblem {
    ConnectorOnly,
    Empty,
    Locked,
    UnknownFormat,
    OverCostLimits,
    UnreadableFactor,
}

impl From<trickle_password::Unverifiable> for UnusableHash {
    fn from(refused: trickle_password::Unverifiable) -> Self {
        match refused {
            trickle_password::Unverifiable::Unreadable(e) => {
                Self::new(HashProblem::UnknownFormat, e.to_string())
            }
            over @ trickle_password::Unverifiable::OverCostLimits { scheme, .. } => Self {
                problem: HashProblem::OverCostLimits,
                scheme: Some(scheme.as_str()),
                reason: format!("{over} ([legacy.hash_limits])"),
            },
        }
    }
}

impl UnusableHash {
    pub(crate) fn new(problem: HashProblem, reason: impl Into<String>) -> Self {
        Self {
            problem,
            scheme: None,
            reason: reason.into(),
        }
    }
}

/// At most this many legacy ids are remembered as "already logged as unusable"; past it the
/// memory starts over (and each id may be logged once more).
const MAX_REMEMBERED_UNUSABLE: usize = 100_000;

/// A legacy user listed for the backfill: their hash in a form the store can verify
/// (with its scheme), or why it cannot be carried over.
#[derive(Debug)]
pub struct ListedUser {
    pub user: LegacyUser,
    pub hash: Result<(String, &'static str), UnusableHash>,
}

/// A legacy login's answer. Unknown email and wrong password are one variant on purpose.
#[derive(Debug)]
pub enum LoginOutcome {
    /// The record exists but no password can ever match it (see `unusable_password` in
    /// the contract); answered like [`LoginOutcome::Rejected`].
    UnusablePassword,
    Authenticated(LegacyUser),
    Rejected,
}

/// How many real hashes are timed to choose the refusal hash.
const REFUSAL_HASH_SAMPLE: usize = 7;
/// How long after a failed attempt to choose the refusal hash the next one may start.
const REFUSAL_HASH_RETRY: Duration = Duration::from_secs(30);
/// The password an equalizing verification checks: long enough for any scheme's full cost,
/// and never a real one (no caller's password travels for equalization).
const REFUSAL_PROBE: &str = "trickle-equalizes-a-refused-login";

/// The hash a refused login verifies when it has no real one: the configured or chosen one;
/// until then the first real hash verified (fixed from then on: a hash a later login brings
/// would let whoever logs in set the price of a refusal).
#[derive(Debug, Default)]
struct RefusalHash {
    chosen: Option<StoredHash>,
    first_seen: Option<StoredHash>,
    /// When choosing last began, so that a database down at start is retried, not hammered.
    last_attempt: Option<std::time::Instant>,
}

impl RefusalHash {
    fn current(&self) -> Option<StoredHash> {
        self.chosen.clone().or_else(|| self.first_seen.clone())
    }

    fn retry_due(&self, can_list: bool) -> bool {
        can_list
            && self.chosen.is_none()
            && self
                .last_attempt
                .is_none_or(|at| at.elapsed() >= REFUSAL_HASH_RETRY)
    }

    /// Whether this caller should choose now (and mark the attempt).
    fn begin_choosing(&mut self, can_list: bool) -> bool {
        if !self.retry_due(can_list) {
            return false;
        }
        self.last_attempt = Some(std::time::Instant::now());
        true
    }
}

/// The `[legacy] dummy_hash`, parsed with the store's hash format.
fn configured_refusal_hash(config: &LegacyConfig) -> Result<RefusalHash, LegacyError> {
    let configured = config.dummy_hash.0.trim();
    if configured.is_empty() {
        return Ok(RefusalHash::default());
    }
    let hash = StoredHash::parse_with(
        configured,
        None,
        config.hash_format,
        config.salted_digest.as_ref(),
    )
    .map_err(|e| LegacyError::Config(format!("[legacy] dummy_hash cannot be read: {e}")))?;
    if let Some(over) = hash.cost().exceeds(&config.hash_limits) {
        return Err(LegacyError::Config(format!(
            "[legacy] dummy_hash is over [legacy.hash_limits]: {over}"
        )));
    }
    Ok(RefusalHash {
        chosen: Some(hash),
        ..RefusalHash::default()
    })
}

/// How many rows one email may match (legacy stores sometimes hold `Bob@x` and `bob@x`):
/// each is tried, and a larger result is a misconfigured query.
const MAX_ROWS_PER_EMAIL: usize = 8;

/// The legacy database, through the native driver of its kind: legacy schemas use column
/// types (MySQL `TINYINT(1)`, PostgreSQL `int4`, …) that sqlx's type-erased `Any` driver
/// refuses to map.
#[derive(Debug, Clone)]
enum LegacyPool {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

macro_rules! with_legacy_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            LegacyPool::Postgres($p) => $body,
            LegacyPool::MySql($p) => $body,
            LegacyPool::Sqlite($p) => $body,
        }
    };
}

impl LegacyPool {
    /// Lazy: the connector starts while the legacy database is down; each request then
    /// fails with UNAVAILABLE.
    fn connect_lazy(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, LegacyError> {
        let unusable = |e: sqlx::Error| {
            LegacyError::Config(format!("[legacy] database_url is not usable: {e}"))
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(LegacyPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(url)
                    .map_err(unusable)?,
            ))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            Ok(LegacyPool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(&url)
                    .map_err(unusable)?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(LegacyPool::Sqlite(
                trickle_service_kit::db::sqlite_pool_options()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_lazy(url)
                    .map_err(unusable)?,
            ))
        } else {
            let scheme: String = url
                .split(':')
                .next()
                .unwrap_or_default()
                .chars()
                .take(16)
                .collect();
            Err(LegacyError::Config(format!(
                "[legacy] database_url must start with postgres://, mysql:// or sqlite:// (got {scheme:?})"
            )))
        }
    }
}

impl LegacyPool {
    fn kind(&self) -> &'static str {
        match self {
            LegacyPool::Postgres(_) => "PostgreSQL",
            LegacyPool::MySql(_) => "MySQL/MariaDB",
            LegacyPool::Sqlite(_) => "SQLite",
        }
    }
}

/// Whether `url` asks for an encrypted connection: PostgreSQL's `sslmode` `require`,
/// `verify-ca`, `verify-full`, or MySQL's `ssl-mode` `REQUIRED`, `VERIFY_CA`,
/// `VERIFY_IDENTITY` (`prefer`/`PREFERRED` fall back to plain text, so nothing to check).
fn url_requires_tls(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        matches!(key, "sslmode" | "ssl-mode" | "ssl_mode")
            && matches!(
                value.to_ascii_lowercase().replace('_', "-").as_str(),
                "require" | "required" | "verify-ca" | "verify-full" | "verify-identity"
            )
    })
}

#[derive(Debug, Clone)]
pub struct SqlBackend {
    pool: LegacyPool,
    /// The URL asks for TLS: checked once at start (see [`SqlBackend::check_tls`]).
    requires_tls: bool,
    find_user: Arc<str>,
    list_users: Option<Arc<str>>,
    list_users_cursor: CursorKind,
    find_roles: Option<Arc<str>>,
    count_users: Option<Arc<str>>,
    hash_format: HashFormat,
    /// What verifying one stored hash may cost.
    hash_limits: trickle_password::HashLimits,
    salted_digest: Option<DigestTemplate>,
    totp_encoding: crate::config::TotpEncoding,
    metadata: Arc<[MetadataColumn]>,
    /// For `totp_secret_encoding = "laravel"`.
    laravel_app_key: Option<crate::laravel::AppKey>,
    query_timeout: Duration,
    hasher: HashPool,
    /// The hash a refusal verifies when it has no real one to check.
    refusal_hash: Arc<RwLock<RefusalHash>>,
    /// Legacy ids already logged as having no usable password.
    unusable_logged: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl SqlBackend {
    pub fn new(config: &LegacyConfig, hasher: HashPool) -> Result<Self, LegacyError> {
        if config.database_url.is_empty() {
            return Err(LegacyError::Config(
                "[legacy] database_url is not set".into(),
            ));
        }
        if config.find_user.trim().is_empty() {
            return Err(LegacyError::Config("[legacy] find_user is empty".into()));
        }
        let query_timeout = Duration::from_millis(config.query_timeout_ms.max(1));
        let pool = LegacyPool::connect_lazy(
            &config.database_url,
            config.max_connections.max(1),
            query_timeout,
        )?;
        Ok(Self {
            pool,
            requires_tls: url_requires_tls(&config.database_url),
            find_user: Arc::from(config.find_user.as_str()),
            list_users: (!config.list_users.trim().is_empty())
                .then(|| Arc::from(config.list_users.as_str())),
            list_users_cursor: config.list_users_cursor,
            find_roles: (!config.find_roles.trim().is_empty())
                .then(|| Arc::from(config.find_roles.as_str())),
            count_users: (!config.count_users.trim().is_empty())
                .then(|| Arc::from(config.count_users.as_str())),
            hash_format: config.hash_format,
            hash_limits: config.hash_limits,
            salted_digest: config.salted_digest.clone(),
            totp_encoding: config.totp_secret_encoding,
            metadata: MetadataColumn::parse_all(&config.metadata)?.into(),
            laravel_app_key: match config.totp_secret_encoding {
                crate::config::TotpEncoding::Laravel => Some(
                    crate::laravel::AppKey::parse(&config.laravel_app_key.0).map_err(|e| {
                        LegacyError::Config(format!(
                            "[legacy] laravel_app_key (needed to read Fortify's second factors): {e}"
                        ))
                    })?,
                ),
                _ => None,
            },
            query_timeout,
            hasher,
            refusal_hash: Arc::new(RwLock::new(configured_refusal_hash(config)?)),
            unusable_logged: Arc::default(),
        })
    }

    /// Choose the hash refusals verify, from real legacy hashes, unless the configuration
    /// named one: the median cost of the first `list_users` page's usable hashes. Called at
    /// start; when the database cannot be read then, retried from later refusals.
    pub async fn choose_refusal_hash(&self) {
        if self.list_users.is_none()
            && self
                .refusal_hash
                .read()
                .is_ok_and(|state| state.chosen.is_none() && state.last_attempt.is_none())
        {
            if let Ok(mut state) = self.refusal_hash.write() {
                state.last_attempt = Some(std::time::Instant::now());
            }
            tracing::warn!(
                "neither [legacy] list_users nor dummy_hash is set: a refused login for an unknown email costs what the first legacy hash this process verifies costs (and argon2id defaults until then); set dummy_hash to a hash of your legacy store's usual cost"
            );
            return;
        }
        let due = match self.refusal_hash.write() {
            Ok(mut state) => state.begin_choosing(self.list_users.is_some()),
            Err(_) => false,
        };
        if !due {
            return;
        }
        let sample = match self.list_records(None, REFUSAL_HASH_SAMPLE).await {
            Ok(records) => records
                .into_iter()
                .filter_map(|(_, hash)| hash.ok())
                .collect::<Vec<_>>(),
            Err(error) => {
                tracing::warn!(error = %error, "cannot read legacy hashes to price refused logins; trying again later");
                return;
            }
        };
        let Some(chosen) = self.hasher.representative(sample).await else {
            tracing::warn!(
                "the first list_users page has no usable hash; refused logins of unknown emails cost what the first legacy hash verified costs ([legacy] dummy_hash sets it)"
            );
            return;
        };
        tracing::info!(
            trickle.hash.scheme = chosen.scheme().as_str(),
            "refused logins verify a hash of the legacy store's median cost"
        );
        if let Ok(mut state) = self.refusal_hash.write() {
            state.chosen = Some(chosen);
        }
    }

    /// When the URL asks for TLS, connect once at start: a wrong CA, a certificate for another
    /// host or a server without TLS is a configuration error the operator must see at once,
    /// not a stream of UNAVAILABLE logins. A database that is merely down is not: the
    /// connector starts without it, as always, and logins fail with UNAVAILABLE until it is up.
    pub async fn check_tls(&self) -> Result<(), LegacyError> {
        if !self.requires_tls {
            return Ok(());
        }
        let attempt = with_legacy_pool!(&self.pool, p => p.acquire().await.map(drop));
        let down = |error: &sqlx::Error| match error {
            sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ),
            _ => false,
        };
        match attempt {
            Ok(()) => Ok(()),
            Err(error) if down(&error) => {
                tracing::warn!(error = %error, "the legacy database cannot be reached at start; its TLS settings will be checked on first use");
                Ok(())
            }
            Err(error) => Err(LegacyError::Config(format!(
                "cannot connect to the legacy database ({}): {}",
                self.pool.kind(),
                trickle_service_kit::db::describe_connect_error(&error)
            ))),
        }
    }

    #[tracing::instrument(name = "legacy.login", skip_all, fields(trickle.legacy.id, trickle.hash.scheme))]
    pub async fn login(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<LoginOutcome, LegacyError> {
        let candidates = self.find(email).await?;
        if candidates.is_empty() {
            self.verify_refusal_hash(password).await?;
            return Ok(LoginOutcome::Rejected);
        }
        let mut unusable = false;
        for candidate in candidates {
            let hash = match candidate.hash {
                Ok(hash) => hash,
                Err(why) => {
                    // No password can match: spend what a wrong password costs, so the
                    // answer is the same in code and in time, and count it apart.
                    unusable = true;
                    self.note_unusable(&candidate.user.legacy_id, &why.reason);
                    self.verify_refusal_hash(password.clone()).await?;
                    continue;
                }
            };
            let scheme = hash.scheme();
            let verification = self.hasher.verify(password.clone(), hash.clone()).await?;
            if let Ok(mut state) = self.refusal_hash.write() {
                state.first_seen.get_or_insert(hash);
            }
            if verification.matches {
                let span = tracing::Span::current();
                span.record("trickle.legacy.id", candidate.user.legacy_id.as_str());
                span.record("trickle.hash.scheme", scheme.as_str());
                // Roles only once the password is known right: a refusal never reads them.
                let user = self.with_roles(candidate.user).await?;
                return Ok(LoginOutcome::Authenticated(user));
            }
        }
        Ok(if unusable {
            LoginOutcome::UnusablePassword
        } else {
            LoginOutcome::Rejected
        })
    }

    /// What [`SqlBackend::login`] spends on a refusal, for a login refused elsewhere: the
    /// same query, and (unless `lookup_only`) a verification of each row's hash, or of the
    /// refusal hash, against a password nobody has. Nothing is logged or counted: no login
    /// happened here.
    #[tracing::instrument(name = "legacy.equalize_refused_login", skip_all)]
    pub async fn equalize_refused_login(
        &self,
        email: &Email,
        lookup_only: bool,
    ) -> Result<(), LegacyError> {
        let candidates = self.find(email).await?;
        if lookup_only {
            return Ok(());
        }
        let probe = Password::new(REFUSAL_PROBE);
        if candidates.is_empty() {
            return self.verify_refusal_hash(probe).await;
        }
        for candidate in candidates {
            match candidate.hash {
                Ok(hash) => {
                    self.hasher.verify(probe.clone(), hash).await?;
                }
                Err(_) => self.verify_refusal_hash(probe.clone()).await?,
            }
        }
        Ok(())
    }

    /// Log a legacy user without a usable password once (per process), not at every login:
    /// such rows are common (accounts without a password, disabled ones) and a guesser could
    /// otherwise flood the logs.
    fn note_unusable(&self, legacy_id: &str, why: &str) {
        let first_time = self.unusable_logged.lock().is_ok_and(|mut seen| {
            if seen.len() >= MAX_REMEMBERED_UNUSABLE {
                seen.clear();
            }
            seen.insert(legacy_id.to_owned())
        });
        if first_time {
            tracing::warn!(
                trickle.legacy.id = legacy_id,
                reason = why,
                "legacy user has no usable password hash; logins to it are refused like a wrong password"
            );
        }
        trickle_telemetry::metrics::metrics()
            .legacy_errors
            .with_label_values(&["unusable_legacy_hash"])
            .inc();
    }

    #[tracing::instrument(name = "legacy.get_user", skip_all)]
    pub async fn get_user(&self, email: &Email) -> Result<Option<LegacyUser>, LegacyError> {
        match self.find(email).await?.into_iter().next() {
            Some(candidate) => Ok(Some(self.with_roles(candidate.user).await?)),
            None => Ok(None),
        }
    }

    /// `user` with their roles from `find_roles` (unchanged without the query).
    async fn with_roles(&self, mut user: LegacyUser) -> Result<LegacyUser, LegacyError> {
        let Some(find_roles) = &self.find_roles else {
            return Ok(user);
        };
        let sql = sqlx::AssertSqlSafe(find_roles.to_string());
        // The id is bound as the type the legacy schema gives it (see list_users_cursor):
        // PostgreSQL compares an integer column to a text parameter no better than not at all.
        let integer_id = match self.list_users_cursor {
            CursorKind::Integer => user.legacy_id.parse::<i64>().ok(),
            CursorKind::Text => None,
        };
        let text_id = user.legacy_id.clone();
        let found: Vec<String> = self
            .measured("find_roles", async {
                with_legacy_pool!(&self.pool, pool => async {
                    let query = sqlx::query(sql);
                    let query = match integer_id {
                        Some(id) => query.bind(id),
                        None => query.bind(text_id),
                    };
                    let rows = query.fetch_all(pool).await.map_err(classify)?;
                    let mut roles = Vec::with_capacity(rows.len());
                    for row in &rows {
                        if let Some(role) = row.text_or_integer("role")? {
                            roles.push(role);
                        }
                    }
                    Ok(roles)
                }.await)
            })
            .await?;
        let mut roles: Vec<String> = found
            .into_iter()
            // A PHP-serialized array of flags (WordPress' capabilities): its true keys.
            .flat_map(|role| crate::php::true_keys_of_array(&role).unwrap_or_else(|| vec![role]))
            .map(|role| role.trim().to_owned())
            .filter(|role| !role.is_empty())
            .filter(|role| {
                let fits = role.len() <= MAX_ROLE_BYTES;
                if !fits {
                    tracing::warn!(trickle.legacy.id = %user.legacy_id, "a legacy role name over {MAX_ROLE_BYTES} bytes was left out");
                }
                fits
            })
            .collect();
        roles.sort();
        roles.dedup();
        if roles.len() > MAX_ROLES {
            tracing::warn!(trickle.legacy.id = %user.legacy_id, roles = roles.len(), "more than {MAX_ROLES} legacy roles; the rest were left out");
            roles.truncate(MAX_ROLES);
        }
        user.roles = roles;
        Ok(user)
    }

    /// The number of legacy users, through the `count_users` query.
    pub async fn count_users(&self) -> Result<i64, LegacyError> {
        let Some(count_users) = &self.count_users else {
            return Err(LegacyError::CountUnsupported);
        };
        let sql = sqlx::AssertSqlSafe(count_users.to_string());
        self.measured("count_users", async {
            with_legacy_pool!(&self.pool, pool => async {
                let row = sqlx::query(sql).fetch_one(pool).await.map_err(classify)?;
                row.try_get::<i64, _>(0)
                    .or_else(|_| row.try_get::<i32, _>(0).map(i64::from))
                    .map_err(|e| LegacyError::Config(format!("count_users must return one integer: {e}")))
            }.await)
        })
        .await
    }

    /// One query to the legacy store: cut off at the deadline, timed and counted.
    async fn measured<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = Result<T, LegacyError>>,
    ) -> Result<T, LegacyError> {
        let metrics = trickle_telemetry::metrics::metrics();
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.query_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(LegacyError::Timeout(
                    self.query_timeout
                        .as_millis()
                        .try_into()
                        .unwrap_or(u64::MAX),
                ))
            });
        metrics
            .legacy_request_duration
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let reason = match e {
                LegacyError::Timeout(_) => "timeout",
                LegacyError::Database(_) => "unavailable",
                LegacyError::Config(_) => "config",
                _ => "other",
            };
            metrics.legacy_errors.with_label_values(&[reason]).inc();
        }
        result
    }

    /// Verify the refusal hash (and discard the answer). Until one is chosen, the first real
    /// legacy hash this process verified stands in — never a later one, which whoever logs
    /// in could pick — and before that the pool's argon2id dummy.
    async fn verify_refusal_hash(&self, password: Password) -> Result<(), LegacyError> {
        let (hash, retry) = match self.refusal_hash.read() {
            Ok(state) => (state.current(), state.retry_due(self.list_users.is_some())),
            Err(_) => (None, false),
        };
        if retry {
            let backend = self.clone();
            tokio::spawn(async move { backend.choose_refusal_hash().await });
        }
        match hash {
            Some(hash) => self.hasher.verify(password, hash).await.map(|_| ())?,
            None => self.hasher.verify_dummy(password).await?,
        }
        Ok(())
    }

    async fn find(&self, email: &Email) -> Result<Vec<Candidate>, LegacyError> {
        // The operator's query, verbatim; the email is only ever a bound parameter.
        let sql = sqlx::AssertSqlSafe(self.find_user.to_string());
        let email_param = email.normalized().to_owned();
        let fetched = self
            .measured("find_user", async {
                with_legacy_pool!(&self.pool, pool => async {
                let rows = sqlx::query(sql).bind(email_param).fetch_all(pool).await.map_err(classify)?;
                if rows.len() > MAX_ROWS_PER_EMAIL {
                    return Err(LegacyError::Config(format!(
                        "find_user returned {} rows for one email; it must select by email",
                        rows.len()
                    )));
                }
                rows.iter().map(|row| self.candidate(row)).collect::<Result<Vec<_>, _>>()
            }.await)
            })
            .await?;
        let mut candidates = Vec::with_capacity(fetched.len());
        for candidate in fetched {
            // A query that ignores its parameter or matches loosely must not log anyone in
            // as somebody else.
            if candidate.user.email.trim().to_lowercase() == email.normalized() {
                candidates.push(candidate);
            } else {
                tracing::warn!(
                    "find_user returned a row whose email differs from the one asked for; ignoring it"
                );
            }
        }
        Ok(candidates)
    }

    fn candidate(&self, row: &impl LegacyRow) -> Result<Candidate, LegacyError> {
        let (user, hash) = self.record(row)?;
        Ok(Candidate { user, hash })
    }

    /// A legacy row: the user, and their hash or why it cannot be read.
    fn record(
        &self,
        row: &impl LegacyRow,
    ) -> Result<(LegacyUser, Result<StoredHash, UnusableHash>), LegacyError> {
        let legacy_id = row
            .text_or_integer("id")?
            .ok_or_else(|| LegacyError::Config("the query returned a NULL id".into()))?;
        let email = row
            .text("email")?
            .ok_or_else(|| LegacyError::Config("the query returned a NULL email".into()))?;
        let hash = match row.text("password_hash")? {
            None => Err(UnusableHash::new(
                HashProblem::Empty,
                "no password_hash (NULL)",
            )),
            Some(hash) if hash.trim().is_empty() => Err(UnusableHash::new(
                HashProblem::Empty,
                "an empty password_hash",
            )),
            // Unix shadow files, Django's set_unusable_password() and many apps lock an
            // account with a leading '!' or '*' (alone, or before the real hash).
            Some(hash) if hash.trim_start().starts_with(['!', '*']) => Err(UnusableHash::new(
                HashProblem::Locked,
                "a disabled-account marker ('!' or '*')",
            )),
            Some(hash) => {
                let salt = row.optional_text("password_salt")?;
                StoredHash::parse_within(
                    hash.trim(),
                    salt.as_deref(),
                    self.hash_format,
                    self.salted_digest.as_ref(),
                    &self.hash_limits,
                )
                .map_err(UnusableHash::from)
            }
        };
        let user = LegacyUser {
            legacy_id,
            email,
            email_verified: row.optional_flag("email_verified")?,
            name: row.optional_text("name")?,
            given_name: row.optional_text("given_name")?,
            family_name: row.optional_text("family_name")?,
            nickname: row.optional_text("nickname")?,
            picture: row.optional_text("picture")?,
            blocked: row.optional_flag("blocked")?,
            roles: Vec::new(),
            totp: None,
            user_metadata: serde_json::Map::new(),
            app_metadata: serde_json::Map::new(),
        };
        let user = self.with_metadata(row, user)?;
        // A second factor that cannot be read must not let the user in on the password
        // alone: the record is unusable, and says why (logged once per user).
        let (user, hash) = match self.totp(row) {
            Ok(totp) => (LegacyUser { totp, ..user }, hash),
            Err(why) => (
                user,
                Err(UnusableHash::new(HashProblem::UnreadableFactor, why)),
            ),
        };
        Ok((user, hash))
    }

    /// The `[legacy.metadata]` columns of a row. A JSON column that holds no object, or
    /// metadata over what the store accepts, is left out with a warning: the user still
    /// migrates, without it.
    fn with_metadata(
        &self,
        row: &impl LegacyRow,
        mut user: LegacyUser,
    ) -> Result<LegacyUser, LegacyError> {
        for mapping in self.metadata.iter() {
            let Some(value) = row.json_value(&mapping.column)? else {
                continue;
            };
            let target = if mapping.app {
                &mut user.app_metadata
            } else {
                &mut user.user_metadata
            };
            match (&mapping.key, value) {
                (Some(key), value) => {
                    target.insert(key.clone(), value);
                }
                (None, serde_json::Value::String(text)) => {
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(serde_json::Value::Object(object)) => target.extend(object),
                        _ => tracing::warn!(
                            trickle.legacy.id = %user.legacy_id,
                            column = %mapping.column,
                            "[legacy.metadata]: the column holds no JSON object; left out"
                        ),
                    }
                }
                (None, _) => tracing::warn!(
                    trickle.legacy.id = %user.legacy_id,
                    column = %mapping.column,
                    "[legacy.metadata]: the column holds no JSON object; left out"
                ),
            }
        }
        user.cap_metadata();
        Ok(user)
    }

    /// The optional `totp_secret` column (and its parameters), decoded.
    fn totp(&self, row: &impl LegacyRow) -> Result<Option<Totp>, String> {
        let unreadable = |what: String| format!("an unreadable second factor ({what})");
        let Some(secret) = row
            .optional_text("totp_secret")
            .map_err(|e| unreadable(e.to_string()))?
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(None);
        };
        let secret = match self.totp_encoding {
            crate::config::TotpEncoding::Base32 => TotpSecret::from_base32(&secret),
            crate::config::TotpEncoding::Hex => TotpSecret::from_hex(&secret),
            crate::config::TotpEncoding::Laravel => {
                let key = self
                    .laravel_app_key
                    .as_ref()
                    .ok_or_else(|| unreadable("no laravel_app_key".into()))?;
                let decrypted = crate::laravel::decrypt(key, &secret).map_err(unreadable)?;
                TotpSecret::from_base32(&decrypted)
            }
        }
        .map_err(|e| unreadable(e.to_string()))?;
        let number = |column: &str, default: u32| -> Result<u32, String> {
            match row
                .optional_integer(column)
                .map_err(|e| unreadable(e.to_string()))?
            {
                None => Ok(default),
                Some(n) => u32::try_from(n).map_err(|_| unreadable(format!("{column} {n}"))),
            }
        };
        let algorithm = match row
            .optional_text("totp_algorithm")
            .map_err(|e| unreadable(e.to_string()))?
        {
            None => TotpAlgorithm::Sha1,
            Some(name) => TotpAlgorithm::parse(&name)
                .ok_or_else(|| unreadable(format!("totp_algorithm {name:?}")))?,
        };
        // django-otp's t0 (the Unix time codes count from): anything but 0 is rare, and
        // not supported — refused rather than checked against the wrong steps.
        if number("totp_t0", 0)? != 0 {
            return Err(unreadable("a t0 other than 0".into()));
        }
        let params = TotpParams {
            algorithm,
            digits: number("totp_digits", 6)?,
            period_seconds: number("totp_period", 30)?,
        };
        Totp::new(secret, params)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }

    /// One page of every legacy user, after `after` in legacy-id order, through the
    /// `list_users` query (parameters: the cursor, then the page size).
    pub async fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedUser>, LegacyError> {
        let records = self.list_records(after, limit).await?;
        let mut listed = Vec::with_capacity(records.len());
        for (user, hash) in records {
            let hash = hash.and_then(|h| {
                let scheme = h.scheme().as_str();
                h.portable()
                    .map(|p| (p.to_owned(), scheme))
                    .ok_or_else(|| UnusableHash {
                        problem: HashProblem::ConnectorOnly,
                        scheme: Some(scheme),
                        reason: format!("{scheme} with a key only the connector holds"),
                    })
            });
            // One roles query per user: simple, and the backfill's pages are streamed, so
            // it costs time, not memory.
            let user = self.with_roles(user).await?;
            listed.push(ListedUser { user, hash });
        }
        Ok(listed)
    }

    /// The `list_users` query's rows, parsed.
    async fn list_records(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(LegacyUser, Result<StoredHash, UnusableHash>)>, LegacyError> {
        let Some(list_users) = &self.list_users else {
            return Err(LegacyError::ListUnsupported);
        };
        let sql = sqlx::AssertSqlSafe(list_users.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let cursor_kind = self.list_users_cursor;
        let integer_cursor = match (cursor_kind, after) {
            (CursorKind::Integer, Some(after)) => Some(after.parse::<i64>().map_err(|_| {
                LegacyError::Config(format!(
                    "legacy id {after:?} is not an integer (list_users_cursor)"
                ))
            })?),
            (CursorKind::Integer, None) => Some(i64::MIN),
            (CursorKind::Text, _) => None,
        };
        let text_cursor = after.unwrap_or_default().to_owned();
        self.measured("list_users", async {
            with_legacy_pool!(&self.pool, pool => async {
                let query = sqlx::query(sql);
                let query = match integer_cursor {
                    Some(cursor) => query.bind(cursor),
                    None => query.bind(text_cursor),
                };
                let rows = query.bind(limit).fetch_all(pool).await.map_err(classify)?;
                rows.iter().map(|row| self.record(row)).collect()
            }.await)
        })
        .await
    }
}

mod rows;

use rows::{LegacyRow, classify};

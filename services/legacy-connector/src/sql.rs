//! The SQL backend: a legacy PostgreSQL, MySQL/MariaDB or SQLite database read through the
//! operator's `find_user` query, always with the email bound as a parameter.

use crate::config::LegacyConfig;
use crate::error::LegacyError;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use trickle_password::{HashFormat, HashPool, Password, StoredHash};
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
}

/// A legacy row with its hash, parsed. Stays inside this crate.
struct Candidate {
    user: LegacyUser,
    hash: StoredHash,
}

/// A legacy login's answer. Unknown email and wrong password are one variant on purpose.
#[derive(Debug)]
pub enum LoginOutcome {
    Authenticated(LegacyUser),
    Rejected,
}

/// How many rows one email may match (legacy stores sometimes hold `Bob@x` and `bob@x`):
/// each is tried, and a larger result is a misconfigured query.
const MAX_ROWS_PER_EMAIL: usize = 8;

#[derive(Debug, Clone)]
pub struct SqlBackend {
    pool: AnyPool,
    find_user: Arc<str>,
    hash_format: HashFormat,
    query_timeout: Duration,
    hasher: HashPool,
    /// The last real hash seen, verified for unknown emails so that they cost what a wrong
    /// password costs (a legacy store's hashes usually share one format and cost).
    dummy: Arc<RwLock<Option<StoredHash>>>,
}

impl SqlBackend {
    pub fn new(config: &LegacyConfig, hasher: HashPool) -> Result<Self, LegacyError> {
        sqlx::any::install_default_drivers();
        if config.database_url.is_empty() {
            return Err(LegacyError::Config("[legacy] database_url is not set".into()));
        }
        if config.find_user.trim().is_empty() {
            return Err(LegacyError::Config("[legacy] find_user is empty".into()));
        }
        let query_timeout = Duration::from_millis(config.query_timeout_ms.max(1));
        // Lazy: the connector starts (and reports healthy for the store path's sake) while
        // the legacy database is down; each request then fails with UNAVAILABLE.
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(query_timeout)
            .connect_lazy(&config.database_url)
            .map_err(|e| LegacyError::Config(format!("[legacy] database_url is not usable: {e}")))?;
        Ok(Self {
            pool,
            find_user: Arc::from(config.find_user.as_str()),
            hash_format: config.hash_format,
            query_timeout,
            hasher,
            dummy: Arc::new(RwLock::new(None)),
        })
    }

    #[tracing::instrument(name = "legacy.login", skip_all)]
    pub async fn login(&self, email: &Email, password: Password) -> Result<LoginOutcome, LegacyError> {
        let candidates = self.find(email).await?;
        if candidates.is_empty() {
            self.verify_dummy(password).await?;
            return Ok(LoginOutcome::Rejected);
        }
        for candidate in candidates {
            let scheme = candidate.hash.scheme();
            let verification = self.hasher.verify(password.clone(), candidate.hash.clone()).await?;
            self.remember_dummy(candidate.hash);
            if verification.matches {
                tracing::debug!(trickle.legacy.id = %candidate.user.legacy_id, scheme = scheme.as_str(), "legacy password verified");
                return Ok(LoginOutcome::Authenticated(candidate.user));
            }
        }
        Ok(LoginOutcome::Rejected)
    }

    #[tracing::instrument(name = "legacy.get_user", skip_all)]
    pub async fn get_user(&self, email: &Email) -> Result<Option<LegacyUser>, LegacyError> {
        Ok(self.find(email).await?.into_iter().next().map(|c| c.user))
    }

    async fn verify_dummy(&self, password: Password) -> Result<(), LegacyError> {
        let dummy = self.dummy.read().ok().and_then(|d| d.clone());
        match dummy {
            Some(hash) => self.hasher.verify(password, hash).await.map(|_| ())?,
            None => self.hasher.verify_dummy(password).await?,
        }
        Ok(())
    }

    fn remember_dummy(&self, hash: StoredHash) {
        if let Ok(mut slot) = self.dummy.write() {
            *slot = Some(hash);
        }
    }

    async fn find(&self, email: &Email) -> Result<Vec<Candidate>, LegacyError> {
        let query = sqlx::query(sqlx::AssertSqlSafe(self.find_user.to_string())).bind(email.normalized().to_owned());
        let rows = tokio::time::timeout(self.query_timeout, query.fetch_all(&self.pool))
            .await
            .map_err(|_| LegacyError::Timeout(self.query_timeout.as_millis().try_into().unwrap_or(u64::MAX)))?
            .map_err(classify)?;
        if rows.len() > MAX_ROWS_PER_EMAIL {
            return Err(LegacyError::Config(format!(
                "find_user returned {} rows for one email; it must select by email",
                rows.len()
            )));
        }
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            let candidate = self.candidate(row)?;
            // A query that ignores its parameter or matches loosely must not log anyone in
            // as somebody else.
            if candidate.user.email.trim().to_lowercase() == email.normalized() {
                candidates.push(candidate);
            } else {
                tracing::warn!("find_user returned a row whose email differs from the one asked for; ignoring it");
            }
        }
        Ok(candidates)
    }

    fn candidate(&self, row: &AnyRow) -> Result<Candidate, LegacyError> {
        let legacy_id = text_or_integer(row, "id")?
            .ok_or_else(|| LegacyError::Config("find_user returned a NULL id".into()))?;
        let email = text(row, "email")?.ok_or_else(|| LegacyError::Config("find_user returned a NULL email".into()))?;
        let hash = text(row, "password_hash")?
            .ok_or_else(|| LegacyError::Config(format!("legacy user {legacy_id} has no password_hash")))?;
        let hash = StoredHash::parse(hash.trim(), self.hash_format)
            .map_err(|e| LegacyError::Config(format!("legacy user {legacy_id}: {e}")))?;
        let user = LegacyUser {
            legacy_id,
            email,
            email_verified: optional_flag(row, "email_verified")?,
            name: optional_text(row, "name")?,
            given_name: optional_text(row, "given_name")?,
            family_name: optional_text(row, "family_name")?,
            nickname: optional_text(row, "nickname")?,
            picture: optional_text(row, "picture")?,
        };
        Ok(Candidate { user, hash })
    }
}

/// Database errors are "the legacy store cannot be asked", except those that say the query
/// itself does not fit the database.
fn classify(error: sqlx::Error) -> LegacyError {
    match error {
        sqlx::Error::ColumnNotFound(column) => {
            LegacyError::Config(format!("find_user does not return the column {column:?}"))
        }
        sqlx::Error::Database(db) if is_query_error(db.code().as_deref()) => {
            LegacyError::Config(format!("find_user failed: {}", db.message()))
        }
        other => LegacyError::Database(other),
    }
}

/// SQLSTATE classes of a query that can never succeed: syntax errors and unknown objects
/// (class 42), wrong parameter counts (07).
fn is_query_error(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("42") || c.starts_with("07"))
}

fn has_column(row: &AnyRow, column: &str) -> bool {
    row.try_column(column).is_ok()
}

fn decode_error(column: &str, e: &sqlx::Error) -> LegacyError {
    LegacyError::Config(format!("find_user column {column:?} has an unsupported type: {e}"))
}

/// A text column, accepting bytes holding UTF-8 (MySQL binary collations).
fn text(row: &AnyRow, column: &str) -> Result<Option<String>, LegacyError> {
    match row.try_get::<Option<String>, _>(column) {
        Ok(value) => Ok(value),
        Err(sqlx::Error::ColumnNotFound(_)) => {
            Err(LegacyError::Config(format!("find_user does not return the column {column:?}")))
        }
        Err(first) => match row.try_get::<Option<Vec<u8>>, _>(column) {
            Ok(bytes) => Ok(bytes.and_then(|b| String::from_utf8(b).ok())),
            Err(_) => Err(decode_error(column, &first)),
        },
    }
}

/// The id column: text or any integer type.
fn text_or_integer(row: &AnyRow, column: &str) -> Result<Option<String>, LegacyError> {
    if let Ok(v) = row.try_get::<Option<i64>, _>(column) {
        return Ok(v.map(|v| v.to_string()));
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(column) {
        return Ok(v.map(|v| v.to_string()));
    }
    text(row, column)
}

fn optional_text(row: &AnyRow, column: &str) -> Result<Option<String>, LegacyError> {
    if !has_column(row, column) {
        return Ok(None);
    }
    Ok(text(row, column)?.filter(|s| !s.is_empty()))
}

/// A boolean column as legacy schemas store them: boolean, 0/1 integer, or text.
fn optional_flag(row: &AnyRow, column: &str) -> Result<bool, LegacyError> {
    if !has_column(row, column) {
        return Ok(false);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(column) {
        return Ok(v.unwrap_or(false));
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(column) {
        return Ok(v.is_some_and(|v| v != 0));
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(column) {
        return Ok(v.is_some_and(|v| v != 0));
    }
    if let Ok(v) = row.try_get::<Option<i16>, _>(column) {
        return Ok(v.is_some_and(|v| v != 0));
    }
    Ok(text(row, column)?.is_some_and(|s| matches!(s.trim().to_ascii_lowercase().as_str(), "1" | "true" | "t" | "yes" | "y")))
}

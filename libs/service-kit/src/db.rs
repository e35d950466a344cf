//! The database of the services that own tables (user-store, migration-coordinator):
//! PostgreSQL in production, SQLite as the embedded default.
//!
//! Queries are written once with `$1`-style placeholders, which both drivers accept, and run
//! against either pool through [`with_db!`](crate::with_db).

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Pool settings for a SQLite file: no ping before a connection is handed out.
///
/// sqlx's default pings every connection on every acquire, and again (in a task of its own)
/// on every release; for SQLite each ping is a round trip to the connection's worker thread,
/// so each statement cost three thread hand-offs where one carries the work (~13 % of a
/// migrated login's context switches in `trickle dev`). A SQLite connection is a file
/// handle in this process: it cannot be dropped by a server, a proxy or a failover, which
/// is what the acquire ping is for. The release ping stays (sqlx always sends it; it
/// settles what a cancelled statement left behind). PostgreSQL and MySQL pools keep the
/// acquire ping: there a connection the server dropped while idle is found and replaced
/// before a statement is lost on it (the fault tests terminate backends mid-load and
/// expect every login after the faults to succeed).
pub fn sqlite_pool_options() -> sqlx::sqlite::SqlitePoolOptions {
    sqlx::sqlite::SqlitePoolOptions::new().test_before_acquire(false)
}

/// A database URL from the configuration. It usually carries a password, so `Debug` prints
/// it without one (and without a `password=` parameter); the URL itself is reached through
/// `Deref<Target = str>` where a connection is made.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password (user info and `password=` parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// `scheme://user:secret@host/db?password=x&sslmode=y` → `scheme://user:***@host/db?password=***&sslmode=y`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            // The user info ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_owned(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "database URL must start with postgres:// or sqlite:// (got a URL starting with {0:?})"
    )]
    UnsupportedUrl(String),
    /// The cause is flattened into the message (not a `source`), so that an error chain
    /// printed with `{:#}` names it once.
    #[error("cannot connect to the {role} database ({kind}): {}", describe_connect_error(.cause))]
    Connect {
        role: &'static str,
        kind: &'static str,
        cause: sqlx::Error,
    },
    #[error("cannot apply the schema migrations to the {kind} database: {cause}")]
    Migrate {
        kind: &'static str,
        cause: sqlx::migrate::MigrateError,
    },
}

/// Run `$body` with `$pool` bound to whichever pool `$db` holds. The body is compiled once
/// per driver, so each gets its own statically typed code.
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Postgres($pool) => $body,
            $crate::db::Db::Sqlite($pool) => $body,
        }
    };
}

/// Only the scheme: URLs carry passwords and must not reach an error message whole.
fn scheme_of(url: &str) -> String {
    url.split(':')
        .next()
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect()
}

impl Db {
    /// Connect to `url` (`postgres://…` or `sqlite:…`); `role` names the database in errors
    /// ("user-store", "migration-coordinator"). A SQLite file is created if missing, but not
    /// its directory.
    ///
    /// PostgreSQL URLs take libpq's TLS parameters: `sslmode` (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`), `sslrootcert`, `sslcert`, `sslkey`. The connection is made
    /// here, at start, so a wrong CA or a server without TLS stops the service with one clear
    /// error instead of failing every request.
    pub async fn connect(
        role: &'static str,
        url: &str,
        max_connections: u32,
    ) -> Result<Self, DbError> {
        let acquire_timeout = Duration::from_secs(5);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|cause| DbError::Connect {
                role,
                kind: "PostgreSQL",
                cause,
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await
                .map_err(|cause| DbError::Connect {
                    role,
                    kind: "PostgreSQL",
                    cause,
                })?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|cause| DbError::Connect {
                    role,
                    kind: "SQLite",
                    cause,
                })?
                .create_if_missing(true)
                // WAL lets readers proceed while one writer commits; the busy timeout makes
                // concurrent writers wait for the lock instead of failing.
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = sqlite_pool_options()
                .max_connections(max_connections)
                .acquire_timeout(acquire_timeout)
                .connect_with(options)
                .await
                .map_err(|cause| DbError::Connect {
                    role,
                    kind: "SQLite",
                    cause,
                })?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(DbError::UnsupportedUrl(scheme_of(url)))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "PostgreSQL",
            Db::Sqlite(_) => "SQLite",
        }
    }

    /// Apply the embedded schema migrations for this database kind.
    pub async fn migrate(&self, postgres: &Migrator, sqlite: &Migrator) -> Result<(), DbError> {
        let kind = self.kind();
        let result = match self {
            Db::Postgres(pool) => postgres.run(pool).await,
            Db::Sqlite(pool) => sqlite.run(pool).await,
        };
        result.map_err(|cause| DbError::Migrate { kind, cause })
    }

    pub async fn close(&self) {
        with_db!(self, pool => pool.close().await)
    }
}

/// An error of connecting, in one line an operator can act on. sqlx's TLS errors say what
/// failed but not which knob decides it.
pub fn describe_connect_error(error: &sqlx::Error) -> String {
    // A failed handshake reaches us as an I/O error carrying rustls' verdict.
    let handshake = match error {
        sqlx::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    };
    let tls_cause = match (error, handshake) {
        (_, Some(verdict)) => Some(verdict),
        (sqlx::Error::Tls(cause), None) => {
            let mut text = cause.to_string();
            let mut source = std::error::Error::source(&**cause);
            while let Some(inner) = source {
                let inner_text = inner.to_string();
                if !text.contains(&inner_text) {
                    text.push_str(": ");
                    text.push_str(&inner_text);
                }
                source = inner.source();
            }
            Some(text)
        }
        _ => None,
    };
    match tls_cause {
        Some(cause) => format!(
            "TLS failed: {cause} (check the URL's sslmode/ssl-mode, and that its CA file \
             (sslrootcert/ssl-ca) signed the server's certificate for the host name in the URL)"
        ),
        None => error.to_string(),
    }
}

/// Whether an error is a unique-constraint violation (SQLSTATE 23505 on PostgreSQL,
/// SQLITE_CONSTRAINT_UNIQUE / PRIMARYKEY on SQLite).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

/// Whether an error means the database could not be reached or answered in time, as
/// opposed to a bug or a constraint.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // The server speaks, but only to say the connection is going away: SQLSTATE class 08
        // (connection exception) or 57P (PostgreSQL shut down, or an operator terminated the
        // backend). The next connection will likely work: a retry, not a bug.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// Rows in PostgreSQL's `COPY … FROM STDIN` text format, built field by field: the bulk
/// writes (a backfill page, its ledger rows) stream this instead of binding one array per
/// column, and a plain `COPY` inserts without `ON CONFLICT`'s speculative insertion. Fields are escaped here (backslash, tab,
/// newline, carriage return), so any text a legacy database held arrives byte for byte.
#[derive(Debug, Default)]
pub struct CopyRows {
    text: String,
    fields_in_row: usize,
    rows: usize,
    /// The last timestamp written and its text: a page's rows share one, and formatting
    /// it for each row was the bulk writers' largest cost of their own.
    last_timestamp: Option<(chrono::DateTime<chrono::Utc>, String)>,
}

impl CopyRows {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// A text field; `None` is SQL NULL (`\N`), distinct from the empty string.
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.separate();
        match value {
            None => self.text.push_str("\\N"),
            Some(value) => {
                for c in value.chars() {
                    match c {
                        '\\' => self.text.push_str("\\\\"),
                        '\t' => self.text.push_str("\\t"),
                        '\n' => self.text.push_str("\\n"),
                        '\r' => self.text.push_str("\\r"),
                        c => self.text.push(c),
                    }
                }
            }
        }
        self
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.separate();
        self.text.push(if value { 't' } else { 'f' });
        self
    }

    /// A `timestamptz`, to the microsecond PostgreSQL keeps.
    pub fn timestamp(&mut self, value: chrono::DateTime<chrono::Utc>) -> &mut Self {
        self.separate();
        match &self.last_timestamp {
            Some((last, text)) if *last == value => self.text.push_str(text),
            _ => {
                let text = value.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
                self.text.push_str(&text);
                self.last_timestamp = Some((value, text));
            }
        }
        self
    }

    pub fn end_row(&mut self) {
        self.text.push('\n');
        self.fields_in_row = 0;
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    fn separate(&mut self) {
        if self.fields_in_row > 0 {
            self.text.push('\t');
        }
        self.fields_in_row += 1;
    }
}

/// Stream `rows` into a `COPY … FROM STDIN` on `conn` and finish it, on a task of its own,
/// then hand the connection back (a transaction goes on there, and commits or rolls back as
/// usual).
///
/// Why a task: a caller may go away half-way (an RPC its client cancelled, a backfill page
/// dropped when its job is cancelled). sqlx does not survive a COPY abandoned that way: it
/// writes `CopyFail` (or nothing, before the server's `CopyInResponse`) and never reads the
/// server's answer, so the connection goes back to the pool one answer behind, and the next
/// statement on it reads another's reply ("expected ParseComplete, got ReadyForQuery", or a
/// `SELECT` that answers no row). Run to its end here, the COPY leaves the connection in step
/// whether or not anyone waits for it; if nobody does, the connection is dropped on the task
/// (a transaction then rolls back, which sqlx does keep in step).
pub async fn copy_in<C>(
    mut conn: C,
    statement: &'static str,
    rows: CopyRows,
) -> Result<C, sqlx::Error>
where
    C: std::ops::DerefMut<Target = sqlx::PgConnection> + Send + 'static,
{
    tokio::spawn(async move {
        let mut copy = conn.copy_in_raw(statement).await?;
        copy.send(rows.as_bytes()).await?;
        copy.finish().await?;
        Ok(conn)
    })
    .await
    // Only a panic or the runtime shutting down stops the task: the connection is gone.
    .map_err(|_| sqlx::Error::WorkerCrashed)?
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_rows_escape_what_the_text_format_reserves() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T20:01:02.123456789Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let mut rows = super::CopyRows::default();
        rows.text(Some("tab\there\nnew\r\\N back\\slash"))
            .text(None)
            .text(Some(""))
            .boolean(true)
            .timestamp(at);
        rows.end_row();
        rows.text(Some("Zürich")).boolean(false).timestamp(at);
        rows.end_row();
        rows.timestamp(at + chrono::Duration::microseconds(1));
        rows.end_row();
        assert_eq!(
            std::str::from_utf8(rows.as_bytes()).expect("utf-8"),
            "tab\\there\\nnew\\r\\\\N back\\\\slash\t\\N\t\tt\t2026-12-06 20:01:02.123456+00\n\
             Zürich\tf\t2026-12-06 20:01:02.123456+00\n\
             2026-12-06 20:01:02.123457+00\n"
        );
        assert_eq!(rows.rows(), 3);
    }

    #[test]
    fn debug_prints_a_database_url_without_its_password() {
        let url = super::DatabaseUrl::from(
            "postgres://trickle:hunter2@db.example.com:5432/app?sslmode=verify-full&password=hunter3",
        );
        let printed = format!("{url:?}");
        assert!(!printed.contains("hunter"), "{printed}");
        assert!(
            printed.contains("trickle:***@db.example.com:5432/app"),
            "{printed}"
        );
        assert!(printed.contains("sslmode=verify-full"), "{printed}");
        assert_eq!(
            super::redact_url("sqlite:///var/lib/trickle/store.db?mode=rwc"),
            "sqlite:///var/lib/trickle/store.db?mode=rwc"
        );
        assert_eq!(
            &*url,
            "postgres://trickle:hunter2@db.example.com:5432/app?sslmode=verify-full&password=hunter3"
        );
    }
}

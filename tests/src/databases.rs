//! Fresh real databases per test: PostgreSQL and MariaDB databases created and dropped, SQLite
//! files in the test's directory; the legacy `users` table and the store's tables as tests
//! read and fill them.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection as _, Executor as _};
use std::sync::Arc;

/// Which databases a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Store and coordinator on PostgreSQL, legacy database on MariaDB.
    PostgresMariaDb,
    /// Store, coordinator and legacy database in SQLite files.
    Sqlite,
    /// Store, coordinator and legacy database all on PostgreSQL (legacy with `$1`
    /// placeholders, `integer` ids and `boolean` flags).
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("TRICKLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn mysql_admin_url() -> String {
    std::env::var("TRICKLE_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// Replace the database name of a server URL.
fn with_database(server_url: &str, database: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host_part}/{database}{query}")
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A database created for one test and dropped when the test ends, pass or fail.
pub struct TestDatabase {
    pub url: String,
    drop_sql: Option<(String, String)>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestDatabase {
    pub async fn postgres() -> Self {
        let admin = postgres_admin_url();
        let name = unique_name("trickle_test");
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test ({e}); set TRICKLE_TEST_POSTGRES_URL"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .expect("create database");
        let _ = conn.close().await;
        Self {
            url: with_database(&admin, &name),
            drop_sql: Some((
                admin,
                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )),
            _dir: None,
        }
    }

    pub async fn mariadb() -> Self {
        let admin = mysql_admin_url();
        let name = unique_name("trickle_legacy");
        let mut conn = sqlx::MySqlConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("MariaDB/MySQL at {admin} is required for this test ({e}); set TRICKLE_TEST_MYSQL_URL"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .await
            .expect("create database");
        let _ = conn.close().await;
        Self {
            url: with_database(&admin, &name),
            drop_sql: Some((admin, format!("DROP DATABASE IF EXISTS `{name}`"))),
            _dir: None,
        }
    }

    pub fn sqlite(dir: &Arc<tempfile::TempDir>, file: &str) -> Self {
        Self {
            url: format!("sqlite://{}?mode=rwc", dir.path().join(file).display()),
            drop_sql: None,
            _dir: Some(Arc::clone(dir)),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, sql)) = self.drop_sql.take() else {
            return;
        };
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                sqlx::any::install_default_drivers();
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// A user of the legacy database, as a test creates it.
#[derive(Debug, Clone)]
pub struct LegacyRecord {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    /// Disabled in the legacy app.
    pub blocked: bool,
    /// A TOTP secret (base32), when the user has a second factor in the legacy app.
    pub totp_secret: Option<String>,
}

impl LegacyRecord {
    pub fn new(id: i64, email: &str, password_hash: String) -> Self {
        Self {
            id,
            email: email.into(),
            password_hash,
            email_verified: false,
            name: None,
            given_name: None,
            family_name: None,
            nickname: None,
            picture: None,
            blocked: false,
            totp_secret: None,
        }
    }
}

/// The legacy database of a test: a plain `users` table like many legacy apps have.
pub struct LegacyDb {
    pub database: TestDatabase,
    pub pool: AnyPool,
    pub find_user: String,
    pub list_users: String,
}

impl LegacyDb {
    pub async fn create(backend: Backend, dir: &Arc<tempfile::TempDir>) -> Self {
        sqlx::any::install_default_drivers();
        let (database, ddl, find_user) = match backend {
            Backend::PostgresMariaDb => (
                TestDatabase::mariadb().await,
                "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL, password_hash VARCHAR(255) NOT NULL, \
                 email_verified TINYINT(1) NOT NULL DEFAULT 0, name VARCHAR(255), given_name VARCHAR(255), \
                 family_name VARCHAR(255), nickname VARCHAR(255), picture VARCHAR(1024), \
                 blocked TINYINT(1) NOT NULL DEFAULT 0, totp_secret VARCHAR(64))",
                // MariaDB's default collation already compares case-insensitively.
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret \
                 FROM users WHERE email = ?",
            ),
            Backend::Postgres => (
                TestDatabase::postgres().await,
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
                 email_verified BOOLEAN NOT NULL DEFAULT FALSE, name TEXT, given_name TEXT, family_name TEXT, \
                 nickname TEXT, picture TEXT, blocked BOOLEAN NOT NULL DEFAULT FALSE, totp_secret TEXT)",
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret \
                 FROM users WHERE lower(email) = $1",
            ),
            Backend::Sqlite => (
                TestDatabase::sqlite(dir, "legacy.db"),
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
                 email_verified INTEGER NOT NULL DEFAULT 0, name TEXT, given_name TEXT, family_name TEXT, nickname TEXT, picture TEXT, \
                 blocked INTEGER NOT NULL DEFAULT 0, totp_secret TEXT)",
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret \
                 FROM users WHERE lower(email) = ?",
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .expect("connect to the legacy database");
        pool.execute(ddl)
            .await
            .expect("create the legacy users table");
        let columns = "id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret";
        let list_users = match backend {
            Backend::Postgres => {
                format!("SELECT {columns} FROM users WHERE id > $1 ORDER BY id LIMIT $2")
            }
            _ => format!("SELECT {columns} FROM users WHERE id > ? ORDER BY id LIMIT ?"),
        };
        Self {
            database,
            pool,
            find_user: find_user.into(),
            list_users,
        }
    }

    pub async fn insert(&self, record: &LegacyRecord) {
        let sql = if self.database.url.starts_with("postgres") {
            "INSERT INTO users (id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret) \
             VALUES ($1, $2, $3, $4 = 1, $5, $6, $7, $8, $9, $10 = 1, $11)"
        } else {
            "INSERT INTO users (id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture, blocked, totp_secret) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        };
        let verified = i32::from(record.email_verified);
        sqlx::query(sql)
            .bind(i32::try_from(record.id).expect("small legacy ids"))
            .bind(&record.email)
            .bind(&record.password_hash)
            .bind(verified)
            .bind(record.name.clone())
            .bind(record.given_name.clone())
            .bind(record.family_name.clone())
            .bind(record.nickname.clone())
            .bind(record.picture.clone())
            .bind(i32::from(record.blocked))
            .bind(record.totp_secret.clone())
            .execute(&self.pool)
            .await
            .expect("insert legacy user");
    }

    /// An empty legacy database of `backend`'s legacy kind, for an app's own schema
    /// (`ddl`: statements separated by `;`).
    pub async fn with_schema(backend: Backend, dir: &Arc<tempfile::TempDir>, ddl: &str) -> Self {
        sqlx::any::install_default_drivers();
        let database = match backend {
            Backend::PostgresMariaDb => TestDatabase::mariadb().await,
            Backend::Postgres => TestDatabase::postgres().await,
            Backend::Sqlite => TestDatabase::sqlite(dir, "legacy.db"),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&database.url)
            .await
            .expect("connect to the legacy database");
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            pool.execute(sqlx::AssertSqlSafe(statement.to_owned()))
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        Self {
            database,
            pool,
            find_user: String::new(),
            list_users: String::new(),
        }
    }

    /// Run one statement of test data.
    pub async fn execute(&self, sql: String) {
        self.pool
            .execute(sqlx::AssertSqlSafe(sql.clone()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Many users at once (multi-row inserts): `(id, email, hash)`. Test data only — the
    /// values are written into the SQL, so they must not contain quotes.
    pub async fn insert_many(&self, users: &[(i64, String, String)]) {
        for chunk in users.chunks(250) {
            let values: Vec<String> = chunk
                .iter()
                .map(|(id, email, hash)| {
                    assert!(!email.contains('\'') && !hash.contains('\''));
                    format!("({id}, '{email}', '{hash}')")
                })
                .collect();
            let sql = format!(
                "INSERT INTO users (id, email, password_hash) VALUES {}",
                values.join(", ")
            );
            self.pool
                .execute(sqlx::AssertSqlSafe(sql))
                .await
                .expect("insert legacy users");
        }
    }

    pub async fn set_password_hash(&self, id: i64, hash: &str) {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("update");
    }
}

/// The store and coordinator databases of a test.
pub struct StoreDb {
    pub database: TestDatabase,
    pub pool: AnyPool,
}

impl StoreDb {
    pub async fn create(backend: Backend, dir: &Arc<tempfile::TempDir>) -> Self {
        sqlx::any::install_default_drivers();
        let database = match backend {
            Backend::PostgresMariaDb | Backend::Postgres => TestDatabase::postgres().await,
            Backend::Sqlite => TestDatabase::sqlite(dir, "store.db"),
        };
        // Lazy: the tables exist only once the user-store has applied its migrations.
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect_lazy(&database.url)
            .expect("store pool");
        Self { database, pool }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    pub async fn user_count(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM users").await
    }

    pub async fn migration_event_count(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM migration_events").await
    }

    /// The stored hash of a user, to prove it never leaks.
    pub async fn password_hash(&self, email: &str) -> String {
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = $1")
            .bind(email.to_owned())
            .fetch_one(&self.pool)
            .await
            .expect("password hash")
    }
}

/// Hashes for fixtures. bcrypt at cost 10 like most legacy PHP apps.
pub fn bcrypt(password: &str) -> String {
    trickle_password::legacy_formats::bcrypt(password, 10).expect("bcrypt")
}

// ---- faults ------------------------------------------------------------------------------

//! The test kit for Trickle's end-to-end tests: fresh real databases per test (PostgreSQL,
//! MariaDB, SQLite files), the four services started on `127.0.0.1:0` and talking real gRPC,
//! and a log capture to prove that no secret is ever logged.
//!
//! Database servers are found through `TRICKLE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TRICKLE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`). A server that cannot be reached fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection as _, Executor as _};
use std::sync::{Arc, Mutex, OnceLock};
use tonic::transport::Channel;
use trickle::config::Config;
use trickle::services::Cluster;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_service_kit::Clock;

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
                 family_name VARCHAR(255), nickname VARCHAR(255), picture VARCHAR(1024))",
                // MariaDB's default collation already compares case-insensitively.
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture \
                 FROM users WHERE email = ?",
            ),
            Backend::Postgres => (
                TestDatabase::postgres().await,
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
                 email_verified BOOLEAN NOT NULL DEFAULT FALSE, name TEXT, given_name TEXT, family_name TEXT, \
                 nickname TEXT, picture TEXT)",
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture \
                 FROM users WHERE lower(email) = $1",
            ),
            Backend::Sqlite => (
                TestDatabase::sqlite(dir, "legacy.db"),
                "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
                 email_verified INTEGER NOT NULL DEFAULT 0, name TEXT, given_name TEXT, family_name TEXT, nickname TEXT, picture TEXT)",
                "SELECT id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture \
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
        let columns = "id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture";
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
        let (sql, verified) = if self.database.url.starts_with("postgres") {
            (
                "INSERT INTO users (id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture) \
                 VALUES ($1, $2, $3, $4 = 1, $5, $6, $7, $8, $9)",
                i32::from(record.email_verified),
            )
        } else {
            (
                "INSERT INTO users (id, email, password_hash, email_verified, name, given_name, family_name, nickname, picture) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                i32::from(record.email_verified),
            )
        };
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

/// One test's Trickle: databases and the four services. Fields drop in order: the services
/// stop before their databases are dropped.
pub struct TestTrickle {
    pub cluster: Cluster,
    /// The time all four services read: a test moves it forward (a ticket expires, a lock
    /// ends, the breaker's pause passes) instead of sleeping.
    pub clock: Clock,
    pub config: Config,
    pub signing_key_pem: String,
    pub legacy: LegacyDb,
    pub store: StoreDb,
    pub dir: Arc<tempfile::TempDir>,
}

/// For tests that load the hashing pools on purpose: deadlines that a busy two-core machine
/// cannot miss (the deadline tests keep the short ones).
pub fn generous_deadlines(config: &mut Config) {
    config.legacy.query_timeout_ms = 20_000;
    config.migration.legacy_timeout_ms = 30_000;
    config.migration.store_timeout_ms = 30_000;
    config.frontend.upstream_timeout_ms = 40_000;
}

/// Settings a test may change before the services start.
pub fn base_config(store: &StoreDb, legacy: &LegacyDb, signing_key_pem: &str) -> Config {
    let mut config = Config::default();
    config.frontend.listen = "127.0.0.1:0".into();
    config.store.listen = "127.0.0.1:0".into();
    config.legacy.listen = "127.0.0.1:0".into();
    config.migration.listen = "127.0.0.1:0".into();
    config.migration.admin_listen = "127.0.0.1:0".into();
    config.frontend.metrics_listen = "127.0.0.1:0".into();
    config.store.metrics_listen = "127.0.0.1:0".into();
    config.legacy.metrics_listen = "127.0.0.1:0".into();
    config.migration.metrics_listen = "127.0.0.1:0".into();
    config.store.database_url = store.database.url.clone().into();
    config.migration.database_url = store.database.url.clone().into();
    config.legacy.database_url = legacy.database.url.clone().into();
    config.legacy.find_user = legacy.find_user.clone();
    config.legacy.count_users = "SELECT COUNT(*) FROM users".into();
    config.legacy.list_users = legacy.list_users.clone();
    config.migration.backfill_lease_seconds = 1;
    // Tests switch modes and watch other replicas follow: keep the caches short.
    config.migration.mode_cache_ms = 200;
    config.frontend.mode_refresh_ms = 200;
    config.legacy.query_timeout_ms = 1500;
    config.migration.legacy_timeout_ms = 2500;
    config.tokens.signing_key = signing_key_pem.to_owned();
    config
}

impl TestTrickle {
    /// A legacy user whose password is stored as bcrypt (cost 10).
    pub async fn legacy_user(&self, legacy_id: i64, email: &str, password: &str) {
        self.legacy
            .insert(&LegacyRecord::new(legacy_id, email, bcrypt(password)))
            .await;
    }

    /// Log in through the public API (plain gRPC to the frontend), expecting success.
    pub async fn login_ok(
        &self,
        email: &str,
        password: &str,
    ) -> trickle_proto::auth::v1::LoginResponse {
        self.client()
            .await
            .login(trickle_proto::auth::v1::LoginRequest {
                email: email.into(),
                password: password.into(),
                attempt_source: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("login of {email}: {status:?}"))
            .into_inner()
    }

    /// Fresh databases and the four services on them.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let legacy = LegacyDb::create(backend, &dir).await;
        Self::start_with_legacy(backend, dir, legacy, adjust).await
    }

    /// Start on a legacy database the test built itself (an app's real schema).
    pub async fn start_with_legacy(
        backend: Backend,
        dir: Arc<tempfile::TempDir>,
        legacy: LegacyDb,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        capture_logs();
        let store = StoreDb::create(backend, &dir).await;
        let signing_key_pem =
            trickle_auth_frontend::tokens::generate_signing_key_pem().expect("signing key");
        let mut config = base_config(&store, &legacy, &signing_key_pem);
        adjust(&mut config);
        let clock = Clock::system();
        let cluster = Cluster::start_with_clock(&config, clock.clone())
            .await
            .expect("start the four services");
        Self {
            cluster,
            clock,
            config,
            signing_key_pem,
            legacy,
            store,
            dir,
        }
    }

    pub async fn client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::connect(self.cluster.frontend.url())
            .await
            .expect("connect to the frontend")
    }

    pub async fn admin(&self) -> MigrationAdminClient<Channel> {
        MigrationAdminClient::connect(self.cluster.coordinator.admin_url())
            .await
            .expect("connect to the coordinator")
    }

    /// Start a second set of services on the same store database, with `adjust` applied
    /// (another replica, or one whose legacy database is unreachable).
    pub async fn second_cluster(&self, adjust: impl FnOnce(&mut Config)) -> Cluster {
        let mut config = self.config.clone();
        adjust(&mut config);
        // The same clock: replicas of one deployment agree on the time.
        Cluster::start_with_clock(&config, self.clock.clone())
            .await
            .expect("start the second set of services")
    }
}

/// Hashes for fixtures. bcrypt at cost 10 like most legacy PHP apps.
pub fn bcrypt(password: &str) -> String {
    trickle_password::legacy_formats::bcrypt(password, 10).expect("bcrypt")
}

// ---- faults ------------------------------------------------------------------------------

/// A TCP proxy to `target` that can play dead: while `alive` is false it accepts connections
/// and never answers (a legacy database that hangs). Counts the connections it accepted.
pub struct SwitchableProxy {
    pub addr: std::net::SocketAddr,
    pub alive: Arc<std::sync::atomic::AtomicBool>,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl SwitchableProxy {
    pub async fn start(target: String, alive: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(alive));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, count) = (alive.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    held.push(socket);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            addr,
            alive,
            accepted,
            task,
        }
    }
}

// ---- TLS -------------------------------------------------------------------------------

/// Certificates for mutual TLS tests, made with the `openssl` command: a CA and two
/// certificates it signed (valid for 127.0.0.1 and localhost, server and client use), and a
/// look-alike certificate signed by another CA.
pub struct TestPki {
    pub service: trickle_service_kit::tls::TlsConfig,
    /// A second certificate from the trusted CA (another client).
    pub second: trickle_service_kit::tls::TlsConfig,
    /// Same names and uses, signed by a CA nobody trusts.
    pub rogue: trickle_service_kit::tls::TlsConfig,
    pub ca_pem: String,
    _dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const P256: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

impl TestPki {
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        for ca in ["trusted", "rogue"] {
            let subject = format!("/CN={ca} test CA");
            let (key, cert) = (path(&format!("{ca}-ca.key")), path(&format!("{ca}-ca.pem")));
            let mut args = vec!["req", "-x509"];
            args.extend(P256);
            args.extend([
                "-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject,
            ]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&args);
        }
        let ca_pem = std::fs::read_to_string(path("trusted-ca.pem")).expect("ca");
        let mut pki = Self {
            ca_pem,
            service: Default::default(),
            second: Default::default(),
            rogue: Default::default(),
            _dir: dir,
        };
        pki.service = pki.issue_by("service", "service.trickle.test", "trusted");
        pki.second = pki.issue_by("second", "second.trickle.test", "trusted");
        pki.rogue = pki.issue_by("rogue", "service.trickle.test", "rogue");
        pki
    }

    /// A certificate from the trusted CA for `127.0.0.1`, `localhost` and `identity` (a DNS
    /// name that `allowed_callers` can name), server and client use.
    pub fn issue(&self, identity: &str) -> trickle_service_kit::tls::TlsConfig {
        self.issue_by(&identity.replace('.', "-"), identity, "trusted")
    }

    fn issue_by(
        &self,
        file: &str,
        identity: &str,
        ca: &str,
    ) -> trickle_service_kit::tls::TlsConfig {
        let path = |name: &str| self._dir.path().join(name).display().to_string();
        let ext = path(&format!("{file}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{identity}\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            ),
        )
        .expect("write extensions");
        let (key, csr, cert) = (
            path(&format!("{file}.key")),
            path(&format!("{file}.csr")),
            path(&format!("{file}.pem")),
        );
        let subject = format!("/CN=trickle-{file}");
        let mut args = vec!["req"];
        args.extend(P256);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&args);
        let (ca_cert, ca_key) = (path(&format!("{ca}-ca.pem")), path(&format!("{ca}-ca.key")));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        trickle_service_kit::tls::TlsConfig {
            ca_file: path("trusted-ca.pem"),
            cert_file: cert,
            key_file: key,
            allowed_callers: Vec::new(),
        }
    }

    /// The trusted CA's certificate file.
    pub fn ca_file(&self) -> String {
        self._dir
            .path()
            .join("trusted-ca.pem")
            .display()
            .to_string()
    }
}

// ---- log capture ------------------------------------------------------------------------

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut inner) = self.0.lock() {
            inner.extend_from_slice(buf);
        }
        if std::env::var_os("TRICKLE_TEST_LOG_STDERR").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the services of every test in this binary logged and exported.
struct Captured {
    logs: Arc<Mutex<Vec<u8>>>,
    spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>,
    guard: trickle_telemetry::TelemetryGuard,
}

static CAPTURED: OnceLock<Captured> = OnceLock::new();

type SpanBuffer = Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>;

/// An OTLP/gRPC trace receiver, like a collector's, keeping what it receives and the
/// `x-api-key` header each export carried (how vendors take their API key).
struct OtlpReceiver {
    spans: SpanBuffer,
    api_keys: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpReceiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        if let Some(key) = request.metadata().get("x-api-key")
            && let (Ok(key), Ok(mut keys)) = (key.to_str(), self.api_keys.lock())
        {
            keys.push(key.to_owned());
        }
        let resource_spans = request.into_inner().resource_spans;
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(resource_spans);
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A running OTLP receiver (a collector stand-in that is a real OTLP/gRPC server).
pub struct OtlpSink {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS.
    pub endpoint: String,
    pub spans: SpanBuffer,
    pub api_keys: Arc<Mutex<Vec<String>>>,
}

impl OtlpSink {
    /// The `service.name` of every resource that exported spans.
    pub fn service_names(&self) -> Vec<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let spans = self.spans.lock().expect("spans");
        spans
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .filter(|kv| kv.key == "service.name")
            .filter_map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(name)) => Some(name.clone()),
                    _ => None,
                },
            )
            .collect()
    }
}

/// Start an OTLP receiver on a thread and runtime of its own (it must outlive every test's
/// runtime), serving TLS with `tls`'s certificate when given.
pub fn start_otlp_sink(tls: Option<&trickle_service_kit::tls::TlsConfig>) -> OtlpSink {
    let spans: SpanBuffer = Arc::new(Mutex::new(Vec::new()));
    let api_keys = Arc::new(Mutex::new(Vec::new()));
    let server_tls = tls.map(|tls| {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            std::fs::read(&tls.cert_file).expect("cert"),
            std::fs::read(&tls.key_file).expect("key"),
        ))
    });
    let receiver = OtlpReceiver {
        spans: Arc::clone(&spans),
        api_keys: Arc::clone(&api_keys),
    };
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
                address_tx.send(listener.local_addr().expect("addr")).expect("send address");
                let service =
                    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(receiver);
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = server_tls {
                    builder = builder.tls_config(tls).expect("receiver TLS");
                }
                let _ = builder
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            });
        })
        .expect("start the OTLP receiver");
    let addr = address_rx.recv().expect("receiver address");
    let endpoint = if tls.is_some() {
        format!("https://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    OtlpSink {
        endpoint,
        spans,
        api_keys,
    }
}

/// Set `TRICKLE_TEST_LOG_STDERR=1` to see the logs on stderr too (with `--nocapture`).
///
/// Install, once per test binary, Trickle's own telemetry (the same code the services run
/// with) writing JSON log lines at DEBUG (Trickle's crates at TRACE) to memory and exporting
/// spans over OTLP/gRPC to a receiver in this process.
pub fn capture_logs() {
    CAPTURED.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = start_otlp_sink(None);
        let (endpoint, spans) = (sink.endpoint, sink.spans);
        let writer = SharedBuffer(Arc::clone(&logs));
        let guard = trickle_telemetry::logs::init_with_writer(
            "trickle-tests",
            trickle_telemetry::LogFormat::Json,
            move || writer.clone(),
            Some(&endpoint),
            Some(
                "debug,trickle_user_store=trace,trickle_legacy_connector=trace,trickle_migration_coordinator=trace,\
                 trickle_auth_frontend=trace,trickle_password=trace,trickle_service_kit=trace,trickle_telemetry=trace,\
                 opentelemetry=warn,opentelemetry_sdk=warn",
            ),
        )
        .expect("install telemetry");
        Captured { logs, spans, guard }
    });
}

/// Everything logged so far by every test in this binary.
pub fn captured_logs() -> String {
    let captured = CAPTURED.get().expect("capture_logs was called");
    let bytes = captured.logs.lock().expect("log buffer").clone();
    let mut out = String::from_utf8_lossy(&bytes).into_owned();
    out.push('\n');
    out
}

/// Every span exported so far, after flushing the exporter.
pub fn exported_spans() -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    let captured = CAPTURED.get().expect("capture_logs was called");
    captured.guard.force_flush();
    let resource_spans = captured.spans.lock().expect("spans").clone();
    resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

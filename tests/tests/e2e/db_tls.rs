//! The databases over TLS: the store and the coordinator on PostgreSQL with `sslmode`
//! `require` and `verify-full`, the legacy connector on MariaDB with `ssl-mode`
//! `VERIFY_IDENTITY` and on PostgreSQL with `require`. Encryption is proven from the server's
//! side (`pg_stat_ssl`, MariaDB's session `Ssl_cipher`), not taken from the client's word; a
//! wrong CA or a server without TLS is one clear start error naming the database.
//!
//! The machine's PostgreSQL serves Debian's snakeoil certificate (CN and SAN `localhost`,
//! self-signed, so it is its own CA); MariaDB serves the certificate of the throwaway CA that
//! `tests/tls/mariadb-tls.sh` made (.ci/run runs it).

use sqlx::Connection as _;
use trickle_tests::{Backend, LegacyDb, TestPki, TestTrickle};

/// The CA of the local PostgreSQL's certificate (`SHOW ssl_cert_file`; self-signed).
fn postgres_ca() -> String {
    std::env::var("TRICKLE_TEST_POSTGRES_TLS_CA")
        .unwrap_or_else(|_| "/etc/ssl/certs/ssl-cert-snakeoil.pem".into())
}

fn mariadb_ca() -> String {
    let ca = std::env::var("TRICKLE_TEST_MYSQL_TLS_CA")
        .unwrap_or_else(|_| "/etc/mysql/trickle-tls/ca.pem".into());
    assert!(
        std::path::Path::new(&ca).exists(),
        "{ca} is missing: run tests/tls/mariadb-tls.sh (as .ci/run does) to turn on TLS in MariaDB"
    );
    ca
}

/// `url` with the host the server's certificate names, and `params` added.
fn with_tls(url: &str, params: &str) -> trickle_service_kit::db::DatabaseUrl {
    let url = url.replacen("@127.0.0.1:", "@localhost:", 1);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}").into()
}

/// How many of the connections to `database` PostgreSQL itself sees as encrypted, and how
/// many as plain text.
async fn postgres_connections_by_tls(database_url: &str) -> (i64, i64) {
    let database = database_url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("database name")
        .to_owned();
    let mut admin = sqlx::PgConnection::connect(&trickle_tests::postgres_admin_url())
        .await
        .expect("admin connection");
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl")
}

/// A first login; the profile name the legacy query filled in (here: the TLS cipher).
async fn first_login(trickle: &TestTrickle, email: &str, password: &str) -> String {
    let response = trickle.login_ok(email, password).await;
    assert!(response.migrated);
    response
        .user
        .and_then(|u| u.profile)
        .map(|p| p.name)
        .unwrap_or_default()
}

/// Store on PostgreSQL with `verify-full` against the server's CA, coordinator with
/// `require`, legacy on MariaDB with `VERIFY_IDENTITY`: a migration works, every store and
/// coordinator connection is encrypted as PostgreSQL sees it, and the legacy connector's own
/// session reports a cipher (its find_user query reads `Ssl_cipher` into the profile name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_coordinator_and_legacy_reach_their_databases_over_verified_tls() {
    let ca = mariadb_ca();
    let trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        config.store.database_url = with_tls(
            &config.store.database_url,
            &format!("sslmode=verify-full&sslrootcert={}", postgres_ca()),
        );
        config.migration.database_url = with_tls(&config.migration.database_url, "sslmode=require");
        config.legacy.database_url = with_tls(
            &config.legacy.database_url,
            &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
        );
        config.legacy.find_user = "SELECT id, email, password_hash, email_verified, \
             (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'SSL_CIPHER') AS name \
             FROM users WHERE email = ?"
            .into();
    })
    .await;
    trickle
        .legacy_user(1, "alice@example.com", "alice-password")
        .await;
    let cipher = first_login(&trickle, "alice@example.com", "alice-password").await;
    assert!(
        !cipher.is_empty(),
        "MariaDB saw no cipher on the connector's session: the legacy connection is plain text"
    );

    let (encrypted, plain) = postgres_connections_by_tls(&trickle.store.database.url).await;
    assert!(
        encrypted >= 1,
        "no encrypted connection to the store database"
    );
    assert_eq!(plain, 0, "plain-text connections to the store database");
}

/// A legacy database on PostgreSQL with `sslmode=require`: the connector's own session is
/// encrypted as PostgreSQL reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_postgres_over_tls() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let legacy = LegacyDb::create(Backend::Postgres, &dir).await;
    let trickle = TestTrickle::start_with_legacy(Backend::Sqlite, dir, legacy, |config| {
        config.legacy.database_url = with_tls(&config.legacy.database_url, "sslmode=require");
        config.legacy.find_user = "SELECT id, email, password_hash, email_verified, \
             (SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS name \
             FROM users WHERE lower(email) = $1"
            .into();
    })
    .await;
    trickle
        .legacy_user(7, "bob@example.com", "bob-password")
        .await;
    let cipher = first_login(&trickle, "bob@example.com", "bob-password").await;
    assert!(
        !cipher.is_empty(),
        "PostgreSQL saw no cipher on the connector's session"
    );
}

/// A start error as `trickle serve` prints it: the error and its sources, joined by ": ".
fn printed(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The start error names the database, says it is TLS, and says its cause once.
fn one_clear_error(error: &dyn std::error::Error, database: &str) -> String {
    let text = printed(error);
    assert!(text.contains(database), "names the database: {text}");
    assert!(text.contains("TLS"), "says it is TLS: {text}");
    assert_eq!(
        text.matches("cannot connect").count(),
        1,
        "the cause is said once: {text}"
    );
    text
}

/// A CA that did not sign the server's certificate, and a server that does not speak TLS,
/// stop the service at start with one error naming the database — for the store on
/// PostgreSQL and for the legacy connector on MariaDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_server_without_tls_is_one_clear_start_error() {
    let pki = TestPki::create();
    let wrong_ca = pki.ca_file();
    let dir = tempfile::tempdir().expect("tempdir");

    let store_db = trickle_tests::TestDatabase::postgres().await;
    let mut store = trickle_user_store::StoreConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        database_url: with_tls(
            &store_db.url,
            &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
        ),
        ..Default::default()
    };
    let err = trickle_user_store::build(&store)
        .await
        .expect_err("a CA that did not sign PostgreSQL's certificate");
    let text = one_clear_error(&err, "user-store database (PostgreSQL)");
    assert!(text.contains("sslrootcert"), "says what to check: {text}");

    // A "PostgreSQL" that answers the TLS request with 'N' (no TLS), as a server with
    // ssl = off does.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = plain.local_addr().expect("addr").port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = plain.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_ok() {
                let _ = socket.write_all(b"N").await;
            }
        }
    });
    store.database_url = format!(
        "postgres://postgres@localhost:{port}/trickle?sslmode=verify-full&sslrootcert={}",
        postgres_ca()
    )
    .into();
    let err = trickle_user_store::build(&store)
        .await
        .expect_err("a server without TLS under verify-full");
    one_clear_error(&err, "user-store database (PostgreSQL)");

    // The legacy connector connects lazily, but a URL that asks for verified TLS is checked
    // at start: MariaDB with a CA that did not sign its certificate.
    let legacy_db = trickle_tests::TestDatabase::mariadb().await;
    let legacy = trickle_legacy_connector::LegacyConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        database_url: with_tls(
            &legacy_db.url,
            &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={wrong_ca}"),
        ),
        find_user: "SELECT id, email, password_hash FROM users WHERE email = ?".into(),
        ..Default::default()
    };
    let err = trickle_legacy_connector::build(&legacy)
        .await
        .expect_err("a CA that did not sign MariaDB's certificate");
    one_clear_error(&err, "legacy database (MySQL/MariaDB)");
    drop(dir);
}

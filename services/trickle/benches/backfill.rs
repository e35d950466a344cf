//! Backfill throughput against a raw `COPY` of the same rows into the same indexed table.
//!
//!     cargo bench -p trickle --bench backfill                    # 1,000,000 users
//!     TRICKLE_BENCH_USERS=100000 cargo bench -p trickle --bench backfill
//!
//! `TRICKLE_BENCH_LEGACY=import` (also part of the default) measures `trickle admin import`
//! of a `jsonl` file of the same users instead, the CLI being a process of its own.
//!
//! For each legacy kind (PostgreSQL, MariaDB) it seeds a legacy `users` table, starts the
//! user-store, the legacy connector and the coordinator as separate `trickle serve`
//! processes on a fresh PostgreSQL store, runs a backfill through them, and reads each
//! process's peak resident set (VmHWM). The baseline is `COPY` of the same rows into a fresh
//! store database with the same schema and indexes, in the same run. Needs the test databases
//! (TRICKLE_TEST_POSTGRES_URL, TRICKLE_TEST_MYSQL_URL, defaults as in the tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection as _, Executor as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_proto::migration::v1::{BackfillState, GetBackfillRequest, StartBackfillRequest};

const BATCH: i32 = 2500;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn with_database(server: &str, database: &str) -> String {
    let base = server.split('?').next().unwrap_or(server);
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{host}/{database}")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peak_rss_mib(child: &Child) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Services {
    children: Vec<(&'static str, Child)>,
    admin: String,
}

impl Drop for Services {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn serve(service: &'static str, vars: &[(String, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trickle"));
    command
        .args(["serve", service])
        // TRICKLE_BENCH_LOG=sqlx::query=debug shows each statement's time, for example.
        .env(
            "RUST_LOG",
            std::env::var("TRICKLE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in vars {
        command.env(k, v);
    }
    command.spawn().expect("start trickle serve")
}

async fn start_services(
    store_url: &str,
    legacy_url: &str,
    find_user: &str,
    list_users: &str,
) -> Services {
    let (store, legacy, coordinator) = (free_port(), free_port(), free_port());
    let admin_port = free_port();
    let common = |extra: &[(&str, String)]| -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("TRICKLE_STORE__DATABASE_URL".into(), store_url.to_owned()),
            ("TRICKLE_STORE__LISTEN".into(), format!("127.0.0.1:{store}")),
            ("TRICKLE_STORE__METRICS_LISTEN".into(), String::new()),
            (
                "TRICKLE_LEGACY__LISTEN".into(),
                format!("127.0.0.1:{legacy}"),
            ),
            ("TRICKLE_LEGACY__METRICS_LISTEN".into(), String::new()),
            ("TRICKLE_LEGACY__DATABASE_URL".into(), legacy_url.to_owned()),
            ("TRICKLE_LEGACY__FIND_USER".into(), find_user.to_owned()),
            ("TRICKLE_LEGACY__LIST_USERS".into(), list_users.to_owned()),
            (
                "TRICKLE_LEGACY__COUNT_USERS".into(),
                "SELECT COUNT(*) FROM users".into(),
            ),
            (
                "TRICKLE_MIGRATION__LISTEN".into(),
                format!("127.0.0.1:{coordinator}"),
            ),
            ("TRICKLE_MIGRATION__METRICS_LISTEN".into(), String::new()),
            (
                "TRICKLE_MIGRATION__ADMIN_LISTEN".into(),
                format!("127.0.0.1:{admin_port}"),
            ),
            (
                "TRICKLE_MIGRATION__STORE_URL".into(),
                format!("http://127.0.0.1:{store}"),
            ),
            (
                "TRICKLE_MIGRATION__LEGACY_URL".into(),
                format!("http://127.0.0.1:{legacy}"),
            ),
        ];
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        vars
    };
    let vars = common(&[]);
    let children = vec![
        ("user-store", serve("user-store", &vars)),
        ("legacy-connector", serve("legacy-connector", &vars)),
        ("coordinator", serve("coordinator", &vars)),
    ];
    let admin = format!("http://127.0.0.1:{admin_port}");
    // Wait for the coordinator (it starts last in the chain of dependencies it needs).
    let deadline = Instant::now() + Duration::from_secs(60);
    while MigrationAdminClient::connect(admin.clone()).await.is_err() {
        assert!(Instant::now() < deadline, "services did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Services { children, admin }
}

async fn fresh_postgres(admin: &str, name: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .await
    .expect("drop");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await
        .expect("create");
    with_database(admin, name)
}

fn migrate(store_url: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_trickle"))
        .arg("migrate")
        .env("TRICKLE_STORE__DATABASE_URL", store_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect("trickle migrate");
    assert!(status.success());
}

/// `COPY` of `users` rows shaped like the backfill's into a fresh, migrated store.
async fn copy_baseline(pg_admin: &str, users: i64, hash: &str) -> f64 {
    let url = fresh_postgres(pg_admin, "trickle_bench_copy").await;
    migrate(&url);
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY users (user_id, email, display_email, email_verified, legacy_id, password_hash, source, created_at, updated_at) FROM STDIN",
        )
        .await
        .expect("copy");
    let now = "2026-11-26 00:00:00+00";
    let mut chunk = String::with_capacity(4 << 20);
    for id in 1..=users {
        let email = format!("user{id}@example.com");
        chunk.push_str(&format!(
            "{}\t{email}\t{email}\tf\t{id}\t{hash}\tbackfill\t{now}\t{now}\n",
            uuid::Uuid::now_v7()
        ));
        if chunk.len() > (4 << 20) - 512 {
            copy.send(chunk.as_bytes()).await.expect("send");
            chunk.clear();
        }
    }
    copy.send(chunk.as_bytes()).await.expect("send");
    copy.finish().await.expect("finish");
    users as f64 / started.elapsed().as_secs_f64()
}

#[derive(Debug)]
struct Run {
    legacy: &'static str,
    users: i64,
    seconds: f64,
    users_per_second: f64,
    copy_per_second: f64,
    peak_mib: Vec<(&'static str, f64)>,
}

async fn run(legacy: &'static str, users: i64, hash: &str) -> Run {
    let pg_admin = env(
        "TRICKLE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let my_admin = env("TRICKLE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306");
    let columns = "id, email, password_hash, email_verified, name";
    let (legacy_url, find_user, list_users) = if legacy == "postgresql" {
        let url = fresh_postgres(&pg_admin, "trickle_bench_legacy").await;
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("legacy");
        conn.execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL, \
             email_verified BOOLEAN NOT NULL DEFAULT FALSE, name TEXT)",
        )
        .await
        .expect("table");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, email, password_hash) SELECT g, 'user' || g || '@example.com', '{hash}' \
             FROM generate_series(1, {users}) g"
        )))
        .await
        .expect("seed");
        (
            url,
            format!("SELECT {columns} FROM users WHERE lower(email) = $1"),
            format!("SELECT {columns} FROM users WHERE id > $1 ORDER BY id LIMIT $2"),
        )
    } else {
        let mut conn = sqlx::MySqlConnection::connect(&my_admin)
            .await
            .expect("MariaDB");
        conn.execute("DROP DATABASE IF EXISTS trickle_bench_legacy")
            .await
            .expect("drop");
        conn.execute("CREATE DATABASE trickle_bench_legacy")
            .await
            .expect("create");
        let url = with_database(&my_admin, "trickle_bench_legacy");
        let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("legacy");
        conn.execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL, password_hash VARCHAR(255) NOT NULL, \
             email_verified TINYINT(1) NOT NULL DEFAULT 0, name VARCHAR(255), KEY (email))",
        )
        .await
        .expect("table");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO users (id, email, password_hash) SELECT seq, CONCAT('user', seq, '@example.com'), '{hash}' \
             FROM seq_1_to_{users}"
        )))
        .await
        .expect("seed");
        (
            url,
            format!("SELECT {columns} FROM users WHERE email = ?"),
            format!("SELECT {columns} FROM users WHERE id > ? ORDER BY id LIMIT ?"),
        )
    };

    let copy_per_second = copy_baseline(&pg_admin, users, hash).await;

    let store_url = fresh_postgres(&pg_admin, "trickle_bench_store").await;
    migrate(&store_url);
    let mut services = start_services(&store_url, &legacy_url, &find_user, &list_users).await;
    let mut admin = MigrationAdminClient::connect(services.admin.clone())
        .await
        .expect("admin");
    // The connector binds its port only once it is ready (it prices refusals from the first
    // page of users first): wait until the coordinator can count through it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin
        .get_status(trickle_proto::migration::v1::GetStatusRequest {})
        .await
        .map(|s| s.into_inner().legacy_users_total.is_none())
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the legacy connector did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: BATCH })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    let done = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = admin
            .get_backfill(GetBackfillRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("status")
            .into_inner()
            .backfill
            .expect("job");
        if b.state != i32::from(BackfillState::Running) {
            break b;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(done.state, i32::from(BackfillState::Completed), "{done:?}");
    assert_eq!(done.imported, users, "{done:?}");
    let peak_mib = services
        .children
        .iter()
        .map(|(name, child)| (*name, peak_rss_mib(child)))
        .collect();
    services.children.iter_mut().for_each(|(_, c)| {
        let _ = c.kill();
    });
    Run {
        legacy,
        users,
        seconds,
        users_per_second: users as f64 / seconds,
        copy_per_second,
        peak_mib,
    }
}

/// An import of `users` from a `jsonl` file through `trickle admin import` (a separate
/// process, like an operator's) into a fresh PostgreSQL store, against the same COPY.
async fn run_import(users: i64, hash: &str) -> Run {
    use std::io::Write as _;
    let pg_admin = env(
        "TRICKLE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    // The legacy connector needs a database to start; the import never asks it.
    let legacy_url = fresh_postgres(&pg_admin, "trickle_bench_legacy").await;
    let mut conn = sqlx::PgConnection::connect(&legacy_url)
        .await
        .expect("legacy");
    conn.execute("CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT NOT NULL, password_hash TEXT NOT NULL)")
        .await
        .expect("table");
    let dir = std::env::temp_dir().join("trickle-bench-import");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("users.jsonl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("file"));
        for id in 1..=users {
            writeln!(
                out,
                r#"{{"legacy_id":"{id}","email":"user{id}@example.com","email_verified":true,"name":"User {id}","password_hash":"{hash}"}}"#
            )
            .expect("write");
        }
    }
    let copy_per_second = copy_baseline(&pg_admin, users, hash).await;
    let store_url = fresh_postgres(&pg_admin, "trickle_bench_store").await;
    migrate(&store_url);
    let mut services = start_services(
        &store_url,
        &legacy_url,
        "SELECT id, email, password_hash FROM users WHERE email = $1",
        "SELECT id, email, password_hash FROM users WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .await;
    let started = Instant::now();
    let mut cli = Command::new(env!("CARGO_BIN_EXE_trickle"))
        .args([
            "admin",
            "--json",
            "--addr",
            &services.admin,
            "import",
            "--format",
            "jsonl",
        ])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("trickle admin import");
    // Peak RSS is read while the process lives: sample it until it exits.
    let mut cli_peak = 0.0f64;
    let status = loop {
        cli_peak = cli_peak.max(peak_rss_mib(&cli));
        if let Some(status) = cli.try_wait().expect("wait") {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut cli.stdout.take().expect("stdout"), &mut printed)
        .expect("summary");
    assert!(status.success(), "import failed: {printed}");
    let summary: serde_json::Value = serde_json::from_str(&printed).expect("JSON summary");
    assert_eq!(summary["imported"], users, "{summary}");
    let mut peak_mib: Vec<(&'static str, f64)> = services
        .children
        .iter()
        .filter(|(name, _)| *name != "legacy-connector")
        .map(|(name, child)| (*name, peak_rss_mib(child)))
        .collect();
    peak_mib.push(("trickle admin import", cli_peak));
    services.children.iter_mut().for_each(|(_, c)| {
        let _ = c.kill();
    });
    let _ = std::fs::remove_file(&file);
    Run {
        legacy: "jsonl file",
        users,
        seconds,
        users_per_second: users as f64 / seconds,
        copy_per_second,
        peak_mib,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run either way.
    let users: i64 = env("TRICKLE_BENCH_USERS", "1000000")
        .parse()
        .expect("TRICKLE_BENCH_USERS");
    let kinds: Vec<&'static str> = match env("TRICKLE_BENCH_LEGACY", "postgresql,mariadb").as_str()
    {
        "postgresql" => vec!["postgresql"],
        "mariadb" => vec!["mariadb"],
        "import" => vec!["import"],
        _ => vec!["postgresql", "mariadb", "import"],
    };
    // One real bcrypt hash for everyone: a backfill moves hashes, it never computes them.
    let hash = trickle_password::legacy_formats::bcrypt("benchmark", 10).expect("bcrypt");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "backfill (batch {BATCH}) and file import (pages of 2500) of {users} users into a PostgreSQL store, services as separate processes"
    );
    println!(
        "| source | users | seconds | users/s | COPY rows/s | ratio | peak RSS per process (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for kind in kinds {
        let r = if kind == "import" {
            runtime.block_on(run_import(users, &hash))
        } else {
            runtime.block_on(run(kind, users, &hash))
        };
        let peaks: Vec<String> = r
            .peak_mib
            .iter()
            .map(|(name, mib)| format!("{name} {mib:.0}"))
            .collect();
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.2} | {} |",
            r.legacy,
            r.users,
            r.seconds,
            r.users_per_second,
            r.copy_per_second,
            r.users_per_second / r.copy_per_second,
            peaks.join(" / ")
        );
    }
}

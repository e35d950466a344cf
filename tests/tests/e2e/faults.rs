//! Faults of the parts around Trickle: a legacy database that hangs, is unreachable or dies
//! (deadlines, the circuit breaker), and a store database whose connections are dropped under
//! load. Migrated users never notice; nothing is half-written.

use crate::support::{alice, assert_status, login, login_refused};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_proto::auth::v1::SignUpRequest;
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyRecord, SwitchableProxy, TestTrickle, bcrypt};

on_both_backends!(legacy_unreachable_is_unavailable_but_migrated_users_log_in,);

/// A replica of `trickle` whose legacy connector reaches MariaDB through a
/// [`SwitchableProxy`] that starts out hanging (it accepts connections and never answers,
/// like a database far slower than any deadline); `adjust` sets the deadlines.
async fn replica_with_hanging_legacy(
    trickle: &TestTrickle,
    adjust: impl FnOnce(&mut trickle::config::Config),
) -> (trickle::services::Cluster, SwitchableProxy) {
    let mariadb = trickle_tests::mysql_admin_url();
    let server = mariadb
        .trim_start_matches("mysql://")
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split(['/', '?']).next())
        .expect("host:port")
        .to_owned();
    let proxy = SwitchableProxy::start(server.clone(), false).await;
    let replica = trickle
        .second_cluster(|config| {
            config.legacy.database_url = trickle
                .legacy
                .database
                .url
                .replace(&server, &proxy.addr.to_string())
                .into();
            adjust(config);
        })
        .await;
    (replica, proxy)
}

/// The legacy database answers slower than the deadline (it accepts connections and never
/// replies) while eight callers mix logins of migrated users with first logins: every
/// migrated login succeeds, every first login is UNAVAILABLE / LEGACY_UNAVAILABLE within the
/// coordinator's deadline (plus scheduling slack), and nothing is written for them. The
/// circuit breaker is off so that every first login really waits on the slow database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_legacy_database_under_mixed_load_fails_only_first_logins_within_the_deadline() {
    let trickle = TestTrickle::start(Backend::PostgresMariaDb).await;
    let hash = trickle_password::legacy_formats::bcrypt("legacy-password", 4).expect("bcrypt");
    let users: Vec<(i64, String, String)> = (1..=8)
        .map(|id| (id, format!("user{id}@example.com"), hash.clone()))
        .collect();
    trickle.legacy.insert_many(&users).await;
    let mut client = trickle.client().await;
    for id in 1..=4 {
        client
            .login(login(&format!("user{id}@example.com"), "legacy-password"))
            .await
            .expect("migrates before the database slows down");
    }

    let deadline = Duration::from_millis(1000);
    let (replica, slow) = replica_with_hanging_legacy(&trickle, |config| {
        config.legacy.query_timeout_ms = 5_000;
        config.migration.legacy_timeout_ms = deadline.as_millis() as u64;
        config.migration.legacy_breaker_failures = 0;
    })
    .await;
    let client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect");

    let until = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while Instant::now() < until {
                    // Workers 0-3 log in migrated users, 4-7 users still in the legacy store.
                    let id = worker + 1;
                    let started = Instant::now();
                    let result = client
                        .login(login(&format!("user{id}@example.com"), "legacy-password"))
                        .await;
                    calls.push((id, started.elapsed(), result.map(|_| ())));
                }
                calls
            })
        })
        .collect();
    let (mut migrated_ok, mut first_refused) = (0, 0);
    let mut slowest_refusal = Duration::ZERO;
    for worker in workers {
        for (id, took, result) in worker.await.expect("worker") {
            if id <= 4 {
                result.unwrap_or_else(|s| panic!("migrated user{id} failed: {s:?}"));
                migrated_ok += 1;
            } else {
                let status = result.expect_err("the legacy database is too slow");
                assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
                slowest_refusal = slowest_refusal.max(took);
                first_refused += 1;
            }
        }
    }
    eprintln!(
        "slow legacy: {migrated_ok} migrated logins ok, {first_refused} first logins refused, \
         slowest refusal {slowest_refusal:?} (deadline {deadline:?})"
    );
    assert!(migrated_ok > 0 && first_refused > 0);
    assert!(
        slowest_refusal < deadline + Duration::from_millis(1500),
        "a first login waited {slowest_refusal:?}, past the {deadline:?} deadline"
    );
    assert_eq!(
        trickle.store.user_count().await,
        4,
        "nothing written for the others"
    );
    slow.task.abort();
}

/// The legacy database hangs: after a run of failures the coordinator stops sending first
/// logins to it (no new connection attempts), migrated users are untouched, and when the
/// database answers again one probe closes the circuit and migration resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_spares_a_dead_legacy_store_and_recovers() {
    let trickle = TestTrickle::start(Backend::PostgresMariaDb).await;
    alice(&trickle, "through-the-looking-glass").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "bob@example.com",
            bcrypt("bob-password"),
        ))
        .await;
    trickle
        .client()
        .await
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("alice migrates");

    let open_for = Duration::from_secs(60);
    let (replica, proxy) = replica_with_hanging_legacy(&trickle, |config| {
        config.legacy.query_timeout_ms = 400;
        config.migration.legacy_timeout_ms = 1500;
        config.migration.legacy_breaker_failures = 2;
        config.migration.legacy_breaker_open_ms = open_for.as_millis() as u64;
    })
    .await;
    let mut client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect");

    for _ in 0..2 {
        login_refused(
            &mut client,
            "bob@example.com",
            "bob-password",
            Code::Unavailable,
            reason::LEGACY_UNAVAILABLE,
        )
        .await;
    }
    let tried = proxy.accepted.load(Ordering::SeqCst);
    assert!(tried >= 1, "the legacy connector tried to connect");
    // Open: the same answer, without a single new connection to the dead database.
    for _ in 0..5 {
        login_refused(
            &mut client,
            "bob@example.com",
            "bob-password",
            Code::Unavailable,
            reason::LEGACY_UNAVAILABLE,
        )
        .await;
        client
            .login(login("alice@example.com", "through-the-looking-glass"))
            .await
            .expect("migrated users are unaffected");
    }
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        tried,
        "no connection attempts while the circuit is open"
    );
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing written for bob"
    );

    // The database is back; after the pause one probe goes through and closes the circuit.
    proxy.alive.store(true, Ordering::SeqCst);
    trickle.clock.advance(open_for);
    let answer = client
        .login(login("bob@example.com", "bob-password"))
        .await
        .expect("bob migrates once the legacy store is back")
        .into_inner();
    assert!(answer.migrated);
    client
        .sign_up(SignUpRequest {
            email: "new@example.com".into(),
            password: "a fine new password".into(),
            profile: None,
        })
        .await
        .expect("the legacy check works again");
    replica.stop().await.expect("stop");
    proxy.task.abort();
}

/// PostgreSQL drops every connection of the store's database every 40 ms while first logins
/// run: a login that answered success has its user (exactly one row), a login that failed says
/// UNAVAILABLE (retry) rather than anything else, and the services recover without a restart:
/// afterwards everyone logs in and there is still one row per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_connections_dropped_mid_load_lose_nothing_and_recover() {
    let trickle =
        TestTrickle::start_with(Backend::PostgresMariaDb, trickle_tests::generous_deadlines).await;
    const USERS: usize = 48;
    let hash = bcrypt("pass-word");
    let users: Vec<_> = (0..USERS)
        .map(|i| (i as i64 + 1, format!("user{i}@example.com"), hash.clone()))
        .collect();
    trickle.legacy.insert_many(&users).await;
    let database = trickle
        .store
        .database
        .url
        .rsplit('/')
        .next()
        .and_then(|name| name.split('?').next())
        .expect("database name")
        .to_owned();

    let client = trickle.client().await;
    let logins = tokio::spawn(async move {
        let mut answers = Vec::new();
        // Eight at a time: enough to have logins in every stage when the connections drop.
        for chunk in (0..USERS).collect::<Vec<_>>().chunks(8) {
            let batch = chunk.iter().map(|i| {
                let mut client = client.clone();
                async move {
                    let email = format!("user{i}@example.com");
                    let answer = client.login(login(&email, "pass-word")).await;
                    (email, answer)
                }
            });
            answers.extend(futures::future::join_all(batch).await);
        }
        answers
    });
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&trickle_tests::postgres_admin_url())
            .await
            .expect("admin connection");
    let mut terminated = 0;
    while !logins.is_finished() {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .expect("terminate backends");
        terminated += killed.len();
    }
    let answers = logins.await.expect("logins");
    assert!(terminated > 0, "connections were dropped");

    let mut succeeded = 0;
    for (email, answer) in &answers {
        match answer {
            Ok(_) => {
                succeeded += 1;
                let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
                    .bind(email.clone())
                    .fetch_one(&trickle.store.pool)
                    .await
                    .expect("count");
                assert_eq!(rows, 1, "{email} logged in: one user row");
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{email}: {status:?}"),
        }
    }
    println!(
        "{terminated} connections terminated; {succeeded} of {USERS} logins succeeded during the faults"
    );

    // Recovered, without a restart: everyone logs in, and nobody was created twice.
    let mut client = trickle.client().await;
    for (email, _) in &answers {
        client
            .login(login(email, "pass-word"))
            .await
            .unwrap_or_else(|status| panic!("{email} after recovery: {status:?}"));
    }
    assert_eq!(trickle.store.user_count().await, USERS as i64);
}

async fn legacy_unreachable_is_unavailable_but_migrated_users_log_in(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "bob@example.com",
            bcrypt("bob-password"),
        ))
        .await;
    trickle
        .client()
        .await
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("alice migrates");

    // A second set of services on the same store, whose legacy database cannot be used.
    // Accepts connections and never answers: a legacy database that hangs.
    let hole = SwitchableProxy::start(String::new(), false).await;
    let query_timeout_ms = 500;
    let broken = trickle
        .second_cluster(|config| {
            config.legacy.database_url = match backend {
                // Accepts the connection and never speaks: the deadline must cut it off.
                Backend::PostgresMariaDb => format!("mysql://root@{}/legacy", hole.addr).into(),
                Backend::Postgres => format!("postgres://postgres@{}/legacy", hole.addr).into(),
                // A file that cannot exist.
                Backend::Sqlite => "sqlite:///nonexistent-directory/legacy.db?mode=ro".into(),
            };
            config.legacy.query_timeout_ms = query_timeout_ms;
            config.migration.legacy_timeout_ms = 2000;
        })
        .await;
    let mut client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        broken.frontend.url(),
    )
    .await
    .expect("connect");

    let started = Instant::now();
    let status = client
        .login(login("bob@example.com", "bob-password"))
        .await
        .expect_err("legacy is down");
    let waited = started.elapsed();
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
    // The legacy deadline is 2 s (coordinator) / 0.5 s (query); a hang would take far longer.
    assert!(
        waited < Duration::from_millis(2000 + 1500),
        "answered after {waited:?}"
    );
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing written for bob"
    );

    for _ in 0..3 {
        let ok = client
            .login(login("alice@example.com", "through-the-looking-glass"))
            .await
            .expect("migrated users are unaffected");
        assert!(!ok.into_inner().migrated);
    }
    // Signing up cannot rule out a legacy account either: refuse rather than risk a duplicate.
    let status = client
        .sign_up(SignUpRequest {
            email: "new@example.com".into(),
            password: "a fine new password".into(),
            profile: None,
        })
        .await
        .expect_err("sign-up needs the legacy check");
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
    broken.stop().await.expect("stop");
    hole.task.abort();
}

//! `trickle bench` against a running Trickle: every scenario runs, the floor is measured,
//! and what the bench says it migrated really is in the store.

use clap::Parser as _;
use std::time::Duration;
use tonic::Code;
use trickle::bench::{self, BenchArgs, Scenario};
use trickle_proto::auth::v1::{LoginRequest, SignUpRequest};
use trickle_service_kit::rpc::{self, reason};
use trickle_tests::{Backend, TestTrickle, generous_deadlines};

/// The bench's own command line, so the test exercises the flags an operator types.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench_reports_every_scenario_against_the_floor(backend: Backend) {
    // Hashing at nice 10, not SCHED_IDLE: the suite's other tests run beside this one, and
    // under SCHED_IDLE their threads could leave the hashing no CPU for a whole 1.5 s
    // scenario (it happened in CI). This test is about what the bench reports.
    let trickle = TestTrickle::start_with(backend, |config| {
        generous_deadlines(config);
        config.store.hash_priority = trickle_password::HashPriority::Nice;
        config.legacy.hash_priority = trickle_password::HashPriority::Nice;
    })
    .await;
    let addr = format!("http://{}", trickle.cluster.frontend.local_addr);
    let pid = std::process::id().to_string();
    let cli = Cli::parse_from([
        "bench",
        "--addr",
        &addr,
        "--legacy-database-url",
        &trickle.legacy.database.url,
        "--legacy-hash",
        "bcrypt:4",
        "--duration",
        "1.5",
        "--warmup",
        "0.3",
        "--floor-seconds",
        "0.5",
        "--users",
        "4",
        "--concurrency",
        "4",
        "--under-load",
        "2",
        "--watch-pid",
        &pid,
    ]);
    let before = trickle.store.user_count().await;
    let report = bench::execute(cli.bench, trickle.config.store.argon2, |_| {})
        .await
        .expect("the benchmark runs");

    let floor = report
        .floors
        .argon2id_verify
        .as_ref()
        .expect("verify floor");
    assert_eq!(floor.per_second_by_threads.len(), report.cores);
    assert_eq!(floor.threads, (1..=report.cores).collect::<Vec<_>>());
    assert_eq!(report.hash_threads, None);
    assert!(floor.best_per_second > 0.0);
    assert!(report.floors.first_login.is_some() && report.floors.argon2id_hash.is_some());
    let names: Vec<Scenario> = report.scenarios.iter().map(|s| s.scenario).collect();
    assert_eq!(
        names,
        [
            Scenario::MigratedLogin,
            Scenario::FirstLogin,
            Scenario::ValidateToken,
            Scenario::GetUser,
            Scenario::SignUp
        ]
    );
    for s in &report.scenarios {
        assert!(s.ok > 0, "{:?} did nothing: {:?}", s.scenario, s.errors);
        assert!(
            s.errors.is_empty(),
            "{:?} failed calls: {:?}",
            s.scenario,
            s.errors
        );
        assert!(s.latency_ms.p50 > 0.0 && s.latency_ms.p50 <= s.latency_ms.p99);
        assert_eq!(s.memory.len(), 1);
        assert!(s.memory[0].rss_peak_mib > 0.0);
        if s.scenario == Scenario::ValidateToken || s.scenario == Scenario::GetUser {
            assert!(s.background_logins_per_second.unwrap_or(0.0) > 0.0);
            assert_eq!(
                s.background_login_errors.as_ref().map(|e| e.len()),
                Some(0),
                "{:?}",
                s.background_login_errors
            );
        } else {
            assert!(s.ratio.unwrap_or(0.0) > 0.0);
        }
    }
    // Every first login the bench counted moved a legacy user into the store, and every
    // sign-up made one: the store holds at least that many new users (warm-up calls add more).
    let first = &report.scenarios[1];
    let sign_up = &report.scenarios[4];
    let created = trickle.store.user_count().await - before;
    assert!(
        created >= 4 + i64::try_from(first.ok + sign_up.ok).unwrap(),
        "store grew by {created}, bench counted {} first logins and {} sign-ups",
        first.ok,
        sign_up.ok
    );
    let migrated = trickle
        .store
        .count("SELECT COUNT(*) FROM users WHERE email LIKE 'bench-%-l%@bench.trickle.invalid' AND legacy_id IS NOT NULL")
        .await;
    assert!(migrated >= i64::try_from(first.ok).unwrap());
    // The human report names every scenario.
    let text = bench::render(&report);
    for name in [
        "migrated-login",
        "first-login",
        "validate-token",
        "get-user",
        "sign-up",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

/// A flood beyond the store's hashing queue (one thread, one queued job) is refused with
/// RESOURCE_EXHAUSTED / OVERLOADED and a RetryInfo delay that says when there is room,
/// passed through the frontend; a caller that waits for it gets in. The bench's callers wait
/// for it too, and `--hash-threads` measures the floor at exactly that many threads.
async fn a_flood_is_told_when_to_come_back(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        generous_deadlines(config);
        config.store.hash_workers = 1;
        config.store.hash_queue = 1;
    })
    .await;
    let password = "flood-password";
    let mut client = trickle.client().await;
    // Six users, four logins each: within what the per-email throttle lets run at once, so
    // that the hashing pool is what refuses.
    for user in 0..6 {
        client
            .sign_up(SignUpRequest {
                email: format!("flood{user}@example.com"),
                password: password.into(),
                profile: None,
            })
            .await
            .expect("sign up");
    }
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..24 {
        let mut client = client.clone();
        calls.spawn(async move {
            client
                .login(LoginRequest {
                    email: format!("flood{}@example.com", call % 6),
                    password: password.into(),
                    attempt_source: String::new(),
                })
                .await
        });
    }
    let (mut admitted, mut delays) = (0, Vec::new());
    while let Some(answer) = calls.join_next().await {
        match answer.expect("login task") {
            Ok(_) => admitted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(rpc::reason_of(&status).as_deref(), Some(reason::OVERLOADED));
                delays.push(rpc::retry_delay_of(&status).expect("a RetryInfo delay"));
            }
        }
    }
    assert!(admitted >= 1, "the admitted logins succeed");
    assert!(
        !delays.is_empty(),
        "24 logins at once on a pool of 2: some are refused"
    );
    let longest = delays.iter().max().copied().unwrap_or_default();
    assert!(
        delays
            .iter()
            .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(10)),
        "{delays:?}"
    );
    tokio::time::sleep(longest).await;
    trickle.login_ok("flood0@example.com", password).await;

    let addr = format!("http://{}", trickle.cluster.frontend.local_addr);
    let cli = Cli::parse_from([
        "bench",
        "--addr",
        &addr,
        "--scenario",
        "migrated-login",
        "--hash-threads",
        "1",
        "--duration",
        "1.5",
        "--warmup",
        "0.3",
        "--floor-seconds",
        "0.5",
        "--users",
        "4",
        "--concurrency",
        "8",
    ]);
    let report = bench::execute(cli.bench, trickle.config.store.argon2, |_| {})
        .await
        .expect("the benchmark runs");
    assert_eq!(report.hash_threads, Some(1));
    assert!(report.honors_retry_info);
    let floor = report.floors.argon2id_verify.as_ref().expect("floor");
    assert_eq!(
        (floor.threads.as_slice(), floor.best_threads),
        (&[1][..], 1)
    );
    let logins = &report.scenarios[0];
    assert!(logins.ok > 0, "{:?}", logins.errors);
    assert!(
        logins.errors.keys().all(|k| k == "ResourceExhausted"),
        "{:?}",
        logins.errors
    );
}

mod postgres_mariadb {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_told_when_to_come_back() {
        super::a_flood_is_told_when_to_come_back(trickle_tests::Backend::PostgresMariaDb).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_reports_every_scenario_against_the_floor() {
        super::bench_reports_every_scenario_against_the_floor(
            trickle_tests::Backend::PostgresMariaDb,
        )
        .await;
    }
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_is_told_when_to_come_back() {
        super::a_flood_is_told_when_to_come_back(trickle_tests::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bench_reports_every_scenario_against_the_floor() {
        super::bench_reports_every_scenario_against_the_floor(trickle_tests::Backend::Sqlite).await;
    }
}

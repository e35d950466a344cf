//! `trickle bench` against a running Trickle: every scenario runs, the floor is measured,
//! and what the bench says it migrated really is in the store.

use clap::Parser as _;
use trickle::bench::{self, BenchArgs, Scenario};
use trickle_tests::{Backend, TestTrickle, generous_deadlines};

/// The bench's own command line, so the test exercises the flags an operator types.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench_reports_every_scenario_against_the_floor(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, generous_deadlines).await;
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

mod postgres_mariadb {
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
    async fn bench_reports_every_scenario_against_the_floor() {
        super::bench_reports_every_scenario_against_the_floor(trickle_tests::Backend::Sqlite).await;
    }
}

//! Retention: the store's periodic task deletes tickets long expired and throttle rows that
//! count nothing any more, keeps the rest, and counts what it removed.

use sqlx::Executor as _;
use std::time::{Duration, Instant};
use trickle_tests::{Backend, TestTrickle};

async fn remaining(pool: &sqlx::AnyPool, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .expect("select")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tickets_and_spent_throttle_rows_are_pruned() {
    let trickle = TestTrickle::start_with(Backend::PostgresMariaDb, |config| {
        config.store.prune_interval_seconds = 1;
        config.store.prune_tickets_after_seconds = 3600;
        config.store.login_throttle_window_seconds = 900;
        config.store.client_throttle_window_seconds = 900;
    })
    .await;
    let pruned = |table: &str| {
        trickle_telemetry::metrics::metrics()
            .pruned_rows
            .with_label_values(&[table])
            .get()
    };
    let (tickets_before, throttle_before) = (pruned("tickets"), pruned("login_throttle"));
    let pool = &trickle.store.pool;
    for (hash, expired) in [
        ("pruned-ticket", "now() - interval '2 hours'"),
        ("recently-expired-ticket", "now() - interval '10 minutes'"),
        ("live-ticket", "now() + interval '1 hour'"),
    ] {
        pool.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tickets (ticket_hash, kind, legacy_id, email, created_at, expires_at) \
             VALUES ('{hash}', 'password_reset', '1', 'x@example.com', now() - interval '3 hours', {expired})"
        )))
        .await
        .expect("insert ticket");
    }
    for (email, started, locked) in [
        ("spent@example.com", "now() - interval '1 hour'", "NULL"),
        (
            "locked@example.com",
            "now() - interval '1 hour'",
            "now() + interval '1 hour'",
        ),
        (
            "counting@example.com",
            "now() - interval '1 minute'",
            "NULL",
        ),
    ] {
        pool.execute(sqlx::AssertSqlSafe(format!(
            "INSERT INTO login_throttle (email, failures, window_started_at, locked_until) \
             VALUES ('{email}', 3, {started}, {locked})"
        )))
        .await
        .expect("insert throttle row");
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tickets = remaining(pool, "SELECT ticket_hash FROM tickets ORDER BY ticket_hash").await;
        let throttle = remaining(pool, "SELECT email FROM login_throttle ORDER BY email").await;
        // The counter moves just after the delete commits: wait for both, not only the rows.
        if !tickets.contains(&"pruned-ticket".to_owned())
            && !throttle.contains(&"spent@example.com".to_owned())
            && pruned("tickets") > tickets_before
            && pruned("login_throttle") > throttle_before
        {
            assert_eq!(tickets, ["live-ticket", "recently-expired-ticket"]);
            assert_eq!(throttle, ["counting@example.com", "locked@example.com"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was pruned and counted: {tickets:?} {throttle:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(pruned("tickets") > tickets_before);
    assert!(pruned("login_throttle") > throttle_before);
}

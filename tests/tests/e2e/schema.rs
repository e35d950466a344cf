//! Schema migrations as a rollout runs them: replicas that start together on a fresh
//! PostgreSQL database migrate it once (the advisory lock serializes them), and a previous
//! image starts on a schema a newer one already extended (a rollback needs no schema step).

use sqlx::Connection as _;

fn store_config(database_url: &str) -> trickle_user_store::StoreConfig {
    trickle_user_store::StoreConfig {
        listen: "127.0.0.1:0".into(),
        metrics_listen: String::new(),
        database_url: database_url.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_a_rollback_starts_on_a_newer_schema() {
    let database = trickle_tests::TestDatabase::postgres().await;
    let config = store_config(&database.url);
    let (a, b, c) = tokio::join!(
        trickle_user_store::build(&config),
        trickle_user_store::build(&config),
        trickle_user_store::build(&config),
    );
    for (replica, result) in [("a", a), ("b", b), ("c", c)] {
        result.unwrap_or_else(|e| panic!("replica {replica} failed to start: {e}"));
    }
    let mut conn = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let (rows, versions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM _trickle_store_migrations")
            .fetch_one(&mut conn)
            .await
            .expect("migrations table");
    assert_eq!(rows, versions, "a migration was recorded twice");
    assert_eq!(
        usize::try_from(rows).expect("count"),
        trickle_user_store::startup::migrator_postgres()
            .iter()
            .count(),
        "every migration applied once"
    );

    // A newer release applied a migration this binary does not know.
    sqlx::query(
        "INSERT INTO _trickle_store_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'added by a newer release', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("record a newer migration");
    trickle_user_store::build(&config)
        .await
        .expect("the previous image starts on the newer schema");
}

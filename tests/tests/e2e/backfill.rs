//! Backfill: everyone who never logs in is imported with their legacy hash — exactly once,
//! resumably, alongside logins — on both backends.

use crate::support::{logged_in_user, login, login_refused};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_proto::auth::v1::{
    DeleteUserRequest, GetUserRequest, Source, get_user_request::Lookup,
};
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_proto::migration::v1::{
    Backfill, BackfillState, CancelBackfillRequest, GetBackfillRequest, GetStatusRequest, Mode,
    SetModeRequest, StartBackfillRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(
    backfill_imports_everyone_once_with_their_legacy_hashes,
    a_killed_backfill_resumes_without_duplicates_or_gaps,
    backfill_racing_first_logins_leaves_one_row_per_user,
    a_cancelled_backfill_resumes_when_started_again,
    backfill_moves_every_character_of_a_profile,
    a_deleted_user_in_a_page_of_new_users_stays_deleted,
);

async fn a_cancelled_backfill_resumes_when_started_again(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    seed(&trickle, 300).await;
    let mut admin = MigrationAdminClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("admin");
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 5 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    let cancelled = admin
        .cancel_backfill(CancelBackfillRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner()
        .backfill
        .expect("job");
    assert_eq!(
        cancelled.state,
        i32::from(BackfillState::Cancelled),
        "{cancelled:?}"
    );
    // A page in flight may still land; either way the job stopped before the end, and the
    // resumed job below must finish it without a duplicate.
    let partial = legacy_ids_in_store(&trickle).await.0;
    assert!(partial < 300, "cancelled before the end ({partial})");

    let resumed = admin
        .start_backfill(StartBackfillRequest { batch_size: 5 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    assert_eq!(
        resumed.job_id, job.job_id,
        "start resumes the cancelled backfill"
    );
    let done = wait_for_end(&mut admin, &job.job_id).await;
    assert_eq!(done.state, i32::from(BackfillState::Completed), "{done:?}");
    // Pages in flight when the cancel landed were inserted but not checkpointed: the resumed
    // job finds them already in the store. Nobody is lost or doubled either way.
    assert_eq!(done.imported + done.skipped_existing, 300, "{done:?}");
    assert_eq!(legacy_ids_in_store(&trickle).await.0, 300);
    assert_eq!(
        trickle
            .store
            .count("SELECT COUNT(*) FROM migration_events WHERE source = 'backfill'")
            .await,
        300
    );
    let unknown = admin
        .get_backfill(GetBackfillRequest {
            job_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("no such backfill");
    assert_eq!(unknown.code(), Code::NotFound);
}

/// A bulk write whose caller goes away mid-`COPY` (a backfill page dropped when its job is
/// cancelled, an RPC its client cancelled) must not hand the pool a connection one answer
/// behind: the next statement on it would read another's reply. Here the `COPY` waits on a
/// row another transaction holds, its caller is dropped while it waits, and the one
/// connection of the pool must then answer the next queries right. (Found as a cancelled
/// backfill whose resumption failed with "expected ParseComplete, got ReadyForQuery".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_caller_goes_away_leaves_its_connection_in_step() {
    use sqlx::Connection as _;
    let database = trickle_tests::TestDatabase::postgres().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .expect("pool");
    sqlx::query("CREATE TABLE pages (id BIGINT PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("table");
    // Another writer holds row 1000 uncommitted: the COPY's unique check waits for it.
    let mut holder = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("holder");
    sqlx::raw_sql("BEGIN; INSERT INTO pages VALUES (1000)")
        .execute(&mut holder)
        .await
        .expect("hold row 1000");
    let mut rows = trickle_service_kit::db::CopyRows::default();
    for id in 1..=1000_i64 {
        rows.text(Some(&id.to_string()));
        rows.end_row();
    }
    let copy = async {
        let conn = pool.acquire().await.expect("connection");
        trickle_service_kit::db::copy_in(conn, "COPY pages (id) FROM STDIN", rows).await
    };
    // Watched from outside any transaction: inside one, PostgreSQL answers every read of
    // pg_stat_activity from the transaction's first snapshot.
    let mut watcher = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("watcher");
    let waiting = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let blocked: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'COPY pages%' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut watcher)
            .await
            .expect("pg_stat_activity");
            if blocked == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the COPY never waited on the row"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        done = copy => panic!("the COPY cannot end while row 1000 is held: {:?}", done.map(|_| ())),
        () = waiting => {}
    }
    // The caller is gone. The other writer gives its row up; the COPY may now end.
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("rollback");
    let copied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pages")
        .fetch_one(&pool)
        .await
        .expect("the connection answers the next query");
    assert_eq!(copied, 1000, "the COPY ran to its end");
    let answer: i32 = sqlx::query_scalar("SELECT 42")
        .fetch_one(&pool)
        .await
        .expect("and the one after");
    assert_eq!(answer, 42);
}

/// Profiles arrive byte for byte, whatever they hold: PostgreSQL's bulk path writes
/// `COPY` text, where tab, newline, carriage return and backslash are syntax and `\N` is
/// NULL; a JSON value of the metadata carries its own backslashes. Absent fields stay NULL.
async fn backfill_moves_every_character_of_a_profile(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        for query in [&mut config.legacy.find_user, &mut config.legacy.list_users] {
            *query = query.replacen(" FROM users", ", nickname AS note FROM users", 1);
        }
        config
            .legacy
            .metadata
            .insert("note".into(), "app_metadata.note".into());
    })
    .await;
    let odd = |id: i64| format!("Ann\t{id}\nsecond line\r\\N C:\\dir \"q\" 'q' Zürich 😀");
    for id in 1..=30_i64 {
        let mut record = trickle_tests::LegacyRecord::new(
            id,
            &format!("User{id}@Example.com"),
            trickle_password::legacy_formats::bcrypt("pw", 4).expect("bcrypt"),
        );
        record.name = Some(odd(id));
        record.nickname = Some(format!("{}\\", odd(id)));
        record.picture = (id % 2 == 0).then(|| "https://example.com/a b.png".to_owned());
        trickle.legacy.insert(&record).await;
    }
    let done = run_to_end(&trickle).await;
    assert_eq!((done.imported, done.unsupported), (30, 0), "{done:?}");
    let mut client = trickle.client().await;
    for id in [1_i64, 10, 11, 30] {
        let user = client
            .get_user(GetUserRequest {
                lookup: Some(Lookup::Email(format!("user{id}@example.com"))),
            })
            .await
            .expect("backfilled")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(user.display_email, format!("User{id}@Example.com"));
        let profile = user.profile.expect("profile");
        assert_eq!(profile.name, odd(id));
        assert_eq!(profile.nickname, format!("{}\\", odd(id)));
        let app = trickle_proto::json::from_struct(profile.app_metadata.unwrap_or_default());
        assert_eq!(
            app.get("note"),
            Some(&serde_json::json!(format!("{}\\", odd(id))))
        );
    }
    for (sql, expected) in [
        (
            "SELECT COUNT(*) FROM users WHERE given_name IS NULL AND family_name IS NULL",
            30,
        ),
        ("SELECT COUNT(*) FROM users WHERE picture IS NULL", 15),
        (
            "SELECT COUNT(*) FROM users WHERE picture = 'https://example.com/a b.png'",
            15,
        ),
        (
            "SELECT COUNT(*) FROM migration_events WHERE source = 'backfill'",
            30,
        ),
    ] {
        assert_eq!(trickle.store.count(sql).await, expected, "{sql}");
    }
}

/// A page where nobody is in the store yet but one user was deleted: on PostgreSQL the page
/// goes in by `COPY`, and the deleted user must not come back with it.
async fn a_deleted_user_in_a_page_of_new_users_stays_deleted(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    seed(&trickle, 30).await;
    let mut client = trickle.client().await;
    let deleted = logged_in_user(&mut client, "user15@example.com", "pw-15").await;
    client
        .delete_user(DeleteUserRequest {
            user_id: deleted.user_id,
        })
        .await
        .expect("user 15 is deleted");
    let done = run_to_end(&trickle).await;
    assert_eq!(
        (
            done.imported,
            done.skipped_tombstoned,
            done.skipped_existing
        ),
        (29, 1, 0),
        "{done:?}"
    );
    let (count, ids) = legacy_ids_in_store(&trickle).await;
    assert_eq!(count, 29);
    assert!(!ids.contains("15"));
    login_refused(
        &mut client,
        "user15@example.com",
        "pw-15",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
}

/// Legacy users `1..=n`, password `pw-{id}`, in two legacy formats (cheap parameters: the
/// backfill moves hashes, it does not compute them).
async fn seed(trickle: &TestTrickle, n: i64) {
    let bcrypt = trickle_password::legacy_formats::bcrypt("pw-1", 4).expect("bcrypt");
    let users: Vec<(i64, String, String)> = (1..=n)
        .map(|id| {
            let hash = if id == 1 {
                bcrypt.clone()
            } else if id % 2 == 0 {
                trickle_password::legacy_formats::bcrypt(&format!("pw-{id}"), 4).expect("bcrypt")
            } else {
                trickle_password::legacy_formats::django_pbkdf2_sha256(&format!("pw-{id}"), 1000)
                    .expect("pbkdf2")
            };
            (id, format!("user{id}@example.com"), hash)
        })
        .collect();
    trickle.legacy.insert_many(&users).await;
}

/// Run a backfill (pages of 10) and wait until it ended.
pub(crate) async fn run_to_end(trickle: &TestTrickle) -> Backfill {
    let mut admin = trickle.admin().await;
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 10 })
        .await
        .expect("start backfill")
        .into_inner()
        .backfill
        .expect("job");
    wait_for_end(&mut admin, &job.job_id).await
}

pub(crate) async fn wait_for_end(
    admin: &mut MigrationAdminClient<tonic::transport::Channel>,
    job_id: &str,
) -> Backfill {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = admin
            .get_backfill(GetBackfillRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .expect("status")
            .into_inner()
            .backfill
            .expect("backfill");
        if b.state != i32::from(BackfillState::Running) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill did not finish: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn legacy_ids_in_store(trickle: &TestTrickle) -> (i64, BTreeSet<String>) {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT legacy_id FROM users WHERE legacy_id IS NOT NULL")
            .fetch_all(&trickle.store.pool)
            .await
            .expect("legacy ids");
    let n = i64::try_from(rows.len()).expect("count");
    (n, rows.into_iter().collect())
}

async fn backfill_imports_everyone_once_with_their_legacy_hashes(backend: Backend) {
    let mut trickle = TestTrickle::start(backend).await;
    seed(&trickle, 120).await;
    // One hash no format can read: counted and listed, never imported, never lost.
    trickle
        .legacy
        .insert_many(&[(
            121,
            "odd@example.com".into(),
            "5f4dcc3b5aa765d61d8327deb882cf99".into(),
        )])
        .await;
    let mut client = trickle.client().await;
    client
        .login(login("user5@example.com", "pw-5"))
        .await
        .expect("user 5 migrates on login");
    let six = logged_in_user(&mut client, "user6@example.com", "pw-6").await;
    client
        .delete_user(DeleteUserRequest {
            user_id: six.user_id,
        })
        .await
        .expect("user 6 is deleted");

    let mut admin = MigrationAdminClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("admin");
    let started = admin
        .start_backfill(StartBackfillRequest { batch_size: 25 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    assert_eq!(started.legacy_users_total, Some(121));
    let done = wait_for_end(&mut admin, &started.job_id).await;
    assert_eq!(done.state, i32::from(BackfillState::Completed), "{done:?}");
    assert_eq!(done.processed, 121);
    assert_eq!(
        done.imported, 118,
        "120 users, less 5 (migrated on login) and 6 (deleted)"
    );
    assert_eq!(done.skipped_existing, 1);
    assert_eq!(done.skipped_tombstoned, 1);
    assert_eq!(done.unsupported, 1);
    assert_eq!(
        done.unsupported_users
            .iter()
            .map(|u| u.legacy_id.as_str())
            .collect::<Vec<_>>(),
        ["121"]
    );
    assert!(
        !done.unsupported_users[0]
            .reason
            .contains("5f4dcc3b5aa765d6"),
        "never the hash itself"
    );

    let (count, ids) = legacy_ids_in_store(&trickle).await;
    assert_eq!(count, 119);
    let expected: BTreeSet<String> = (1..=120)
        .filter(|id| *id != 6)
        .map(|id| id.to_string())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        trickle
            .store
            .count("SELECT COUNT(*) FROM migration_events WHERE source = 'backfill'")
            .await,
        118
    );

    // A second start after completion begins anew and finds nothing to do.
    let again = admin
        .start_backfill(StartBackfillRequest { batch_size: 50 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    let again = wait_for_end(&mut admin, &again.job_id).await;
    assert_eq!((again.imported, again.skipped_existing), (0, 119));

    // Backfilled users log in with their legacy password, verified by the store alone, and
    // are re-hashed with argon2id by that login.
    trickle
        .cluster
        .stop_legacy_connector()
        .await
        .expect("stop the connector");
    for id in [7_i64, 8] {
        let email = format!("user{id}@example.com");
        let before = trickle.store.password_hash(&email).await;
        assert!(
            !before.starts_with("$argon2id$"),
            "a legacy hash after the backfill"
        );
        let response = client
            .login(login(&email, &format!("pw-{id}")))
            .await
            .expect("login")
            .into_inner();
        assert!(!response.migrated, "already in the store");
        assert_eq!(
            response.user.expect("user").source,
            i32::from(Source::Backfill)
        );
        let after = trickle.store.password_hash(&email).await;
        assert!(
            after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "upgraded on login"
        );
        login_refused(
            &mut client,
            &email,
            "pw-0",
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
    }
    let status = admin
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.migrated_by_backfill, 118);

    // Each backfilled user is one USER_MIGRATED event, written with the page (legacy hash
    // kept); the first login of a backfilled user is the one that re-hashes.
    use trickle_proto::events::v1::{EventKind, UserSource};
    let migrated = crate::events::watch(&trickle, 0, &[EventKind::UserMigrated], 120).await;
    let backfilled: Vec<_> = migrated
        .iter()
        .filter(|e| e.source() == UserSource::Backfill)
        .collect();
    assert_eq!(backfilled.len(), 118);
    assert!(
        backfilled.iter().all(|e| !e.password_rehashed
            && !e.legacy_id.is_empty()
            && e.email.ends_with("@example.com")),
        "{backfilled:?}"
    );
    // A page is one outbox row for its 25 users: read through with pages that cut it.
    let mut store = trickle_proto::userstore::v1::user_store_client::UserStoreClient::connect(
        trickle.cluster.store.url(),
    )
    .await
    .expect("store");
    let mut after = 0;
    let mut positions = Vec::new();
    loop {
        let page = store
            .list_events(trickle_proto::userstore::v1::ListEventsRequest {
                after_position: after,
                limit: 7,
            })
            .await
            .expect("list events")
            .into_inner()
            .events;
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 7);
        after = last.position;
        positions.extend(page.iter().map(|e| e.position));
    }
    let total = i64::try_from(positions.len()).expect("count");
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<i64>>(),
        "contiguous, each once"
    );
    let logins = crate::events::watch(&trickle, 0, &[EventKind::LoginSucceeded], 4).await;
    assert_eq!(
        logins
            .iter()
            .map(|e| e.password_rehashed)
            .collect::<Vec<_>>(),
        [false, false, true, true],
        "users 5 and 6 migrated with argon2id; 7 and 8 were re-hashed by their login"
    );
}

async fn a_killed_backfill_resumes_without_duplicates_or_gaps(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    seed(&trickle, 1000).await;
    let mut admin = MigrationAdminClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("admin");
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 10 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = admin
            .get_backfill(GetBackfillRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("status")
            .into_inner();
        if b.backfill.expect("job").processed >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the backfill never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill the coordinator half-way: stopping it aborts its backfill mid-page, as a crash
    // would, and its heartbeats stop.
    trickle.cluster.coordinator.request_stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin
        .get_backfill(GetBackfillRequest {
            job_id: job.job_id.clone(),
        })
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the coordinator did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let partial = legacy_ids_in_store(&trickle).await.0;
    assert!(partial < 1000, "killed before the end ({partial} imported)");

    // Another replica takes the job over once the heartbeat is stale, from its checkpoint.
    let replica = trickle.second_cluster(|_| {}).await;
    let mut admin = MigrationAdminClient::connect(replica.coordinator.admin_url())
        .await
        .expect("admin");
    let done = wait_for_end(&mut admin, &job.job_id).await;
    assert_eq!(done.state, i32::from(BackfillState::Completed), "{done:?}");
    let (count, ids) = legacy_ids_in_store(&trickle).await;
    assert_eq!(count, 1000, "no duplicates");
    assert_eq!(
        ids,
        (1..=1000).map(|id| id.to_string()).collect::<BTreeSet<_>>(),
        "no gaps"
    );
    assert_eq!(
        trickle
            .store
            .count("SELECT COUNT(*) FROM migration_events WHERE source = 'backfill'")
            .await,
        1000
    );
    replica.stop().await.expect("stop");
}

async fn backfill_racing_first_logins_leaves_one_row_per_user(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, trickle_tests::generous_deadlines).await;
    seed(&trickle, 300).await;
    let client = trickle.client().await;
    let mut admin = MigrationAdminClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("admin");
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 10 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    let logins: Vec<_> = (1..=50_i64)
        .map(|id| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .login(login(&format!("user{id}@example.com"), &format!("pw-{id}")))
                    .await
            })
        })
        .collect();
    for login in logins {
        login
            .await
            .expect("task")
            .expect("every first login succeeds, backfilled or not");
    }
    let done = wait_for_end(&mut admin, &job.job_id).await;
    assert_eq!(done.state, i32::from(BackfillState::Completed));
    let (count, ids) = legacy_ids_in_store(&trickle).await;
    assert_eq!(count, 300, "one row per legacy user");
    assert_eq!(ids.len(), 300);
    let user = trickle
        .client()
        .await
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("user42@example.com".into())),
        })
        .await
        .expect("user")
        .into_inner();
    assert!(user.migrated);

    // Everyone is in the store: the cutover needs no force.
    let switched = admin
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: false,
        })
        .await;
    assert!(switched.is_ok(), "{switched:?}");
}

//! `[legacy.hash_limits]`: a stored legacy hash whose verification would cost more than the
//! caps (memory, rounds, bcrypt cost) is never verified — a hostile or corrupted row must not
//! take a hashing thread for minutes or the pod past its memory limit. Hashes within the caps
//! migrate as always.

use trickle_proto::auth::v1::LoginRequest;
use trickle_tests::{Backend, LegacyRecord, TestTrickle, captured_logs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_hashes_above_the_cost_caps_are_not_verified() {
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.legacy.hash_limits.max_bcrypt_cost = 5;
    })
    .await;
    let bcrypt =
        |cost| trickle_password::legacy_formats::bcrypt("legacy-password", cost).expect("bcrypt");
    trickle
        .legacy
        .insert(&LegacyRecord::new(1, "cheap@example.com", bcrypt(5)))
        .await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(7602, "costly@example.com", bcrypt(6)))
        .await;
    let mut client = trickle.client().await;
    let login = |email: &str| LoginRequest {
        email: email.into(),
        password: "legacy-password".into(),
        attempt_source: String::new(),
    };
    let migrated = client
        .login(login("cheap@example.com"))
        .await
        .expect("a hash within the caps migrates")
        .into_inner();
    assert!(migrated.migrated);

    // The right password, but the hash is never verified: a wrong password's answer.
    let refused = client
        .login(login("costly@example.com"))
        .await
        .expect_err("a hash above max_bcrypt_cost is not verified");
    crate::support::assert_status(
        &refused,
        tonic::Code::Unauthenticated,
        trickle_service_kit::rpc::reason::INVALID_CREDENTIALS,
    );
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing imported for it"
    );
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("max_bcrypt_cost = 5") && line.contains("\"7602\"")),
        "the connector says which legacy user and which cap"
    );
}

/// Legacy rows whose password column holds nothing usable — empty, NULL, `!`/`*` locks, a
/// `!`-prefixed hash, garbage, unknown formats, a cost above the caps — are wrong passwords:
/// the same answer, counted apart (`unusable_legacy_hash`), each logged once, and never an
/// availability failure. Two dozen logins to them (far past the breaker's five) leave first
/// logins working: a normal legacy user migrates at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_rows_without_a_usable_password_are_answered_as_wrong_passwords() {
    use crate::support::assert_status;
    use trickle_proto::migration::v1::GetStatusRequest;
    use trickle_service_kit::rpc::reason;
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let legacy = trickle_tests::LegacyDb::with_schema(
        Backend::PostgresMariaDb,
        &dir,
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL, password_hash VARCHAR(255) NULL)",
    )
    .await;
    let bcrypt =
        |cost| trickle_password::legacy_formats::bcrypt("legacy-password", cost).expect("bcrypt");
    let unusable: Vec<(i64, Option<String>)> = vec![
        (7701, Some(String::new())),
        (7702, Some("!".into())),
        (7703, Some("*".into())),
        (7704, Some(format!("!{}", bcrypt(4)))),
        (7705, None),
        (7706, Some("garbage".into())),
        (7707, Some(format!("$2b$99${}", "a".repeat(53)))),
        (7708, Some(bcrypt(6))),
        (7709, Some("$unknown$abc$def".into())),
        (7710, Some("{SSHA}%%%".into())),
        (7711, Some("pbkdf2_sha256$lots$salt$hash".into())),
        (7712, Some("*LOCKED*".into())),
    ];
    for (id, hash) in &unusable {
        let value = hash
            .as_ref()
            .map_or_else(|| "NULL".to_owned(), |h| format!("'{h}'"));
        legacy
            .execute(format!(
                "INSERT INTO users (id, email, password_hash) VALUES ({id}, 'row{id}@example.com', {value})"
            ))
            .await;
    }
    legacy
        .execute(format!(
            "INSERT INTO users (id, email, password_hash) VALUES (7799, 'normal@example.com', '{}')",
            bcrypt(4)
        ))
        .await;
    let trickle = TestTrickle::start_with_legacy(Backend::PostgresMariaDb, dir, legacy, |config| {
        config.legacy.find_user =
            "SELECT id, email, password_hash FROM users WHERE email = ?".into();
        config.legacy.count_users = String::new();
        config.legacy.list_users = String::new();
        config.legacy.hash_limits.max_bcrypt_cost = 5;
    })
    .await;
    let mut client = trickle.client().await;
    for round in 0..2 {
        for (id, _) in &unusable {
            let refused = client
                .login(LoginRequest {
                    email: format!("row{id}@example.com"),
                    password: "legacy-password".into(),
                    attempt_source: String::new(),
                })
                .await
                .expect_err("no password matches an unusable row");
            assert_status(
                &refused,
                tonic::Code::Unauthenticated,
                reason::INVALID_CREDENTIALS,
            );
            let _ = round;
        }
    }
    let normal = trickle
        .login_ok("normal@example.com", "legacy-password")
        .await;
    assert!(
        normal.migrated,
        "first logins still work: the breaker stayed closed"
    );
    assert_eq!(trickle.store.user_count().await, 1);

    let status = trickle
        .admin()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let unusable_count = status
        .failures_last_hour
        .iter()
        .find(|f| f.reason == "unusable_legacy_hash")
        .map_or(0, |f| f.count);
    assert_eq!(unusable_count, 24, "{:?}", status.failures_last_hour);

    let logs = captured_logs();
    for (id, _) in &unusable {
        let lines = logs
            .lines()
            .filter(|l| l.contains("no usable password hash") && l.contains(&format!("\"{id}\"")))
            .count();
        assert_eq!(lines, 1, "legacy user {id} logged once, not at every login");
    }
}

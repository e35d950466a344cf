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
        .insert(&LegacyRecord::new(2, "costly@example.com", bcrypt(6)))
        .await;
    let mut client = trickle.client().await;
    let login = |email: &str| LoginRequest {
        email: email.into(),
        password: "legacy-password".into(),
    };
    let migrated = client
        .login(login("cheap@example.com"))
        .await
        .expect("a hash within the caps migrates")
        .into_inner();
    assert!(migrated.migrated);

    let refused = client
        .login(login("costly@example.com"))
        .await
        .expect_err("a hash above max_bcrypt_cost is not verified");
    assert_ne!(refused.code(), tonic::Code::Ok);
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing imported for it"
    );
    let logs = captured_logs();
    assert!(
        logs.contains("max_bcrypt_cost = 5") && logs.contains("legacy user 2"),
        "the connector says which legacy user and which cap"
    );
}

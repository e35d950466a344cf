//! Account state carried and kept: a user blocked in the legacy store arrives blocked (by a
//! first login or by the backfill), a block is only ever revealed after the right password,
//! and BlockUser / UnblockUser stop and restart logins and tokens.

use crate::support::{logged_in_user, login_refused};
use std::time::Duration;
use tonic::Code;
use trickle_proto::auth::v1::{
    BlockUserRequest, GetUserRequest, UnblockUserRequest, ValidateTokenRequest,
    get_user_request::Lookup,
};
use trickle_proto::migration::v1::StartBackfillRequest;
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyRecord, TestTrickle, bcrypt};

on_both_backends!(
    a_user_blocked_in_the_legacy_store_arrives_blocked,
    blocking_refuses_logins_and_tokens_until_unblocked,
);

async fn blocked_legacy_user(trickle: &TestTrickle, id: i64, email: &str, password: &str) {
    let mut record = LegacyRecord::new(id, email, bcrypt(password));
    record.blocked = true;
    trickle.legacy.insert(&record).await;
}

async fn a_user_blocked_in_the_legacy_store_arrives_blocked(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    blocked_legacy_user(&trickle, 7001, "mallory@example.com", "right-password").await;
    let mut client = trickle.client().await;

    // A wrong password gets the answer anyone gets: the block is not revealed, nothing moves.
    login_refused(
        &mut client,
        "mallory@example.com",
        "a guess",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    assert_eq!(trickle.store.user_count().await, 0);

    // The right password: refused as blocked, and the account is now in the store, blocked.
    login_refused(
        &mut client,
        "mallory@example.com",
        "right-password",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;
    assert_eq!(trickle.store.user_count().await, 1);
    let user = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("mallory@example.com".into())),
        })
        .await
        .expect("get user")
        .into_inner()
        .user
        .expect("user");
    assert!(user.blocked, "{user:?}");

    // From now on the store decides alone, the same way.
    login_refused(
        &mut client,
        "mallory@example.com",
        "a guess",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    login_refused(
        &mut client,
        "mallory@example.com",
        "right-password",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;

    // Lifted: the same password logs in, with the account the first login imported.
    client
        .unblock_user(UnblockUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("unblock");
    let unblocked = logged_in_user(&mut client, "mallory@example.com", "right-password").await;
    assert_eq!(unblocked.user_id, user.user_id);
    assert!(!unblocked.blocked);

    // The backfill carries the flag too.
    blocked_legacy_user(&trickle, 7002, "eve@example.com", "eves-password").await;
    let mut admin = trickle.admin().await;
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 10 })
        .await
        .expect("start backfill")
        .into_inner()
        .backfill
        .expect("job");
    crate::backfill::wait_for_end(&mut admin, &job.job_id).await;
    login_refused(
        &mut client,
        "eve@example.com",
        "eves-password",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;
    login_refused(
        &mut client,
        "eve@example.com",
        "a guess",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
}

async fn blocking_refuses_logins_and_tokens_until_unblocked(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    trickle
        .legacy_user(7101, "alice@example.com", "alices-password")
        .await;
    let first = trickle
        .login_ok("alice@example.com", "alices-password")
        .await;
    let user = first.user.expect("user");
    assert!(!user.blocked);
    let mut client = trickle.client().await;
    let validate = |token: &str| ValidateTokenRequest {
        access_token: token.to_owned(),
    };
    client
        .validate_token(validate(&first.access_token))
        .await
        .expect("valid before the block");

    let blocked = client
        .block_user(BlockUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("block")
        .into_inner()
        .user
        .expect("user");
    assert!(blocked.blocked);
    login_refused(
        &mut client,
        "alice@example.com",
        "alices-password",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;
    // Replicas remember a token's user for token_subject_cache_ms: past it, refused.
    trickle.clock.advance(Duration::from_millis(
        trickle.config.frontend.token_subject_cache_ms + 1,
    ));
    let refused = client
        .validate_token(validate(&first.access_token))
        .await
        .expect_err("a blocked user's token");
    crate::support::assert_status(&refused, Code::Unauthenticated, reason::INVALID_TOKEN);

    client
        .unblock_user(UnblockUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("unblock");
    trickle.clock.advance(Duration::from_millis(
        trickle.config.frontend.token_subject_cache_ms + 1,
    ));
    let again = trickle
        .login_ok("alice@example.com", "alices-password")
        .await;
    client
        .validate_token(validate(&again.access_token))
        .await
        .expect("valid again");

    // Bad input and unknown users get clear answers.
    let status = client
        .block_user(BlockUserRequest {
            user_id: String::new(),
        })
        .await
        .expect_err("empty id");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .block_user(BlockUserRequest {
            user_id: "00000000-0000-0000-0000-000000000000".into(),
        })
        .await
        .expect_err("unknown user");
    crate::support::assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
}

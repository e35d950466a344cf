//! Throttling that holds: guesses at the old password of ChangePassword count like failed
//! logins and honour the same lock; a completed password reset lifts the lock for the owner.

use super::{assert_status, login};
use tonic::Code;
use trickle_proto::auth::v1::{
    ChangePasswordRequest, CreatePasswordResetTicketRequest, ResetPasswordRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

async fn locked_trickle(failures: u32) -> TestTrickle {
    TestTrickle::start_with(Backend::Sqlite, |config| {
        config.store.login_throttle_failures = failures;
        config.store.login_throttle_window_seconds = 600;
        config.store.login_throttle_lockout_seconds = 600;
    })
    .await
}

/// 25 wrong guesses at ChangePassword's old password used to be answered one by one, and
/// the right one then succeeded: now the account locks after the configured failures, for
/// password changes and logins alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_password_guesses_count_and_lock_the_account() {
    let trickle = locked_trickle(5).await;
    trickle
        .legacy_user(8801, "carol@example.com", "carols-password")
        .await;
    let user = trickle
        .login_ok("carol@example.com", "carols-password")
        .await
        .user
        .expect("user");
    let mut client = trickle.client().await;
    let change = |old: &str| ChangePasswordRequest {
        user_id: user.user_id.clone(),
        old_password: old.into(),
        new_password: "a brand new passphrase".into(),
    };
    for guess in 0..5 {
        let status = client
            .change_password(change(&format!("guess-{guess}")))
            .await
            .expect_err("wrong old password");
        assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
    let status = client
        .change_password(change("carols-password"))
        .await
        .expect_err("locked: not even the right password is checked");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);
    let status = client
        .login(login("carol@example.com", "carols-password"))
        .await
        .expect_err("the same lock holds for logins");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);
}

/// A guesser locked the owner out; the owner resets the password through a ticket and logs
/// in at once with the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_reset_lifts_the_lock() {
    let trickle = locked_trickle(3).await;
    trickle
        .legacy_user(8803, "erin@example.com", "erins-password")
        .await;
    trickle.login_ok("erin@example.com", "erins-password").await;
    let mut client = trickle.client().await;
    for guess in 0..4 {
        let _ = client
            .login(login("erin@example.com", &format!("guess-{guess}")))
            .await;
    }
    let status = client
        .login(login("erin@example.com", "erins-password"))
        .await
        .expect_err("locked");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);

    let ticket = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "erin@example.com".into(),
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket;
    client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "a fresh start for erin".into(),
        })
        .await
        .expect("reset");
    client
        .login(login("erin@example.com", "a fresh start for erin"))
        .await
        .expect("the reset lifted the lock");
}

//! Throttling that holds: a burst of parallel guesses is counted before any is checked, so
//! no more are checked than the limit allows; a burst of right passwords all get in; guesses at the old password of ChangePassword count like failed logins and honour the
//! same lock; a guesser naming another source cannot lock the owner out (until the per-email
//! ceiling); a completed password reset lifts every lock for the owner.

use crate::support::{alice, assert_status, login, login_refused};
use std::time::Duration;
use tonic::Code;
use trickle_proto::auth::v1::{
    ChangePasswordRequest, CreatePasswordResetTicketRequest, LoginRequest, ResetPasswordRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle, generous_deadlines};

async fn locked_trickle(failures: u32) -> TestTrickle {
    locked_trickle_on(Backend::Sqlite, failures).await
}

async fn locked_trickle_on(backend: Backend, failures: u32) -> TestTrickle {
    TestTrickle::start_with(backend, |config| {
        generous_deadlines(config);
        config.store.login_throttle_failures = failures;
        config.store.login_throttle_email_ceiling = 2 * failures;
        config.store.login_throttle_window_seconds = 600;
        config.store.login_throttle_lockout_seconds = 600;
    })
    .await
}

/// `count` logins of `email` with `password`, all sent at once; the answers' codes.
async fn burst(trickle: &TestTrickle, email: &str, password: &str, count: usize) -> Vec<Code> {
    let attempts = (0..count).map(|_| {
        let email = email.to_owned();
        let password = password.to_owned();
        async move {
            let mut client = trickle.client().await;
            match client.login(login(&email, &password)).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    });
    futures::future::join_all(attempts).await
}

/// The owner's way back in: a reset ticket, then a new password.
async fn reset_password(
    client: &mut trickle_proto::auth::v1::auth_service_client::AuthServiceClient<
        tonic::transport::Channel,
    >,
    email: &str,
    new_password: &str,
) {
    let ticket = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: email.into(),
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket;
    client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: new_password.into(),
        })
        .await
        .expect("reset");
}

fn count(codes: &[Code], code: Code) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

/// Parallel guesses used to all pass the lock check before the first failure was counted
/// (the check came before the hash, the count after): 16 guesses at once were 16 checked
/// passwords with a limit of 3. Now each attempt is counted as it is admitted, in the same
/// statement that checks the limit: at most 3 are checked, on either store backend and on
/// both paths (the store's, and the legacy store's for a user not yet migrated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_cannot_race_past_the_lock() {
    for backend in [Backend::Sqlite, Backend::PostgresMariaDb] {
        let trickle = locked_trickle_on(backend, 3).await;
        trickle
            .legacy_user(8811, "migrated@example.com", "the-real-password")
            .await;
        trickle
            .login_ok("migrated@example.com", "the-real-password")
            .await;
        trickle
            .legacy_user(8812, "waiting@example.com", "the-real-password")
            .await;
        for email in ["migrated@example.com", "waiting@example.com"] {
            let codes = burst(&trickle, email, "a-guess", 16).await;
            assert!(
                count(&codes, Code::Unauthenticated) <= 3,
                "{backend:?} {email}: no more guesses checked than the limit: {codes:?}"
            );
            assert_eq!(
                count(&codes, Code::Unauthenticated) + count(&codes, Code::ResourceExhausted),
                16,
                "{backend:?} {email}: every other guess refused as throttled: {codes:?}"
            );
            // However many were checked, the right password is refused now: locked once
            // the (at most 3) failures settle — the legacy path's in the background — and
            // until then throttled as busy.
            let mut client = trickle.client().await;
            let mut locked = false;
            for _ in 0..50 {
                let status = login_refused(
                    &mut client,
                    email,
                    "the-real-password",
                    Code::ResourceExhausted,
                    reason::RATE_LIMITED,
                )
                .await;
                let retry = tonic_types::StatusExt::get_error_details(&status)
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("retry delay");
                if retry > std::time::Duration::from_secs(60) {
                    locked = true;
                    break;
                }
                if count(&codes, Code::Unauthenticated) < 3 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            if count(&codes, Code::Unauthenticated) == 3 {
                assert!(locked, "{backend:?} {email}: three failures lock the email");
            }
        }
    }
}

/// The other side of counting attempts before checking them: a burst of *right* passwords
/// (one user's many devices at once), four times the limit, all succeed — the attempts past
/// the limit wait for those in flight to settle — and nothing is locked afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_right_passwords_is_never_locked_out() {
    let trickle = locked_trickle_on(Backend::PostgresMariaDb, 3).await;
    trickle
        .legacy_user(8813, "busy@example.com", "the-real-password")
        .await;
    trickle
        .login_ok("busy@example.com", "the-real-password")
        .await;
    let codes = burst(&trickle, "busy@example.com", "the-real-password", 12).await;
    assert_eq!(count(&codes, Code::Ok), 12, "{codes:?}");
    for _ in 0..3 {
        trickle
            .login_ok("busy@example.com", "the-real-password")
            .await;
    }
}

/// With the calling service naming each attempt's source (the end user's address), a
/// guesser locks only their own source out: the owner, elsewhere, still logs in. Guessing
/// spread over many sources still stops at the per-email ceiling, for everyone; the owner's
/// completed reset lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guesser_elsewhere_cannot_lock_the_owner_out() {
    let trickle = locked_trickle_on(Backend::PostgresMariaDb, 3).await;
    trickle
        .legacy_user(8814, "owner@example.com", "the-owners-password")
        .await;
    let mut client = trickle.client().await;
    let from = |source: &str, password: &str| LoginRequest {
        email: "owner@example.com".into(),
        password: password.into(),
        attempt_source: source.into(),
    };
    // The first login migrates the owner (through the legacy path, source named).
    client
        .login(from("198.51.100.7", "the-owners-password"))
        .await
        .expect("the owner's first login");
    for guess in 0..3 {
        let status = client
            .login(from("203.0.113.9", &format!("guess-{guess}")))
            .await
            .expect_err("wrong");
        assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
    let status = client
        .login(from("203.0.113.9", "the-owners-password"))
        .await
        .expect_err("the guesser's source is locked");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);
    client
        .login(from("198.51.100.7", "the-owners-password"))
        .await
        .expect("the owner, elsewhere, is not locked out");

    // Spread over sources: 3 each from two more, 6 in all, reach the ceiling (2 × 3).
    for source in ["203.0.113.10", "203.0.113.11"] {
        for guess in 0..3 {
            let _ = client
                .login(from(source, &format!("guess-{guess}")))
                .await
                .expect_err("wrong");
        }
    }
    let status = client
        .login(from("198.51.100.7", "the-owners-password"))
        .await
        .expect_err("past the ceiling the email is locked for every source");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);

    reset_password(&mut client, "owner@example.com", "the owner starts over").await;
    client
        .login(from("198.51.100.7", "the owner starts over"))
        .await
        .expect("the reset lifted the ceiling");
    client
        .login(from("203.0.113.9", "the owner starts over"))
        .await
        .expect("and every source's lock");

    let status = client
        .login(from("bad\nsource", "the owner starts over"))
        .await
        .expect_err("a source with a control character");
    assert_status(&status, Code::InvalidArgument, reason::INVALID_REQUEST);
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
    login_refused(
        &mut client,
        "carol@example.com",
        "carols-password",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;
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
    login_refused(
        &mut client,
        "erin@example.com",
        "erins-password",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;

    reset_password(&mut client, "erin@example.com", "a fresh start for erin").await;
    client
        .login(login("erin@example.com", "a fresh start for erin"))
        .await
        .expect("the reset lifted the lock");
}

on_both_backends!(failed_logins_lock_the_email_on_every_replica);

async fn failed_logins_lock_the_email_on_every_replica(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        config.store.login_throttle_failures = 3;
        config.store.login_throttle_window_seconds = 60;
        config.store.login_throttle_lockout_seconds = 300;
    })
    .await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;
    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("migrates");

    for _ in 0..3 {
        login_refused(
            &mut client,
            "alice@example.com",
            "guess",
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
    }
    // Locked: even the right password is not checked, on this replica or another.
    let locked = login_refused(
        &mut client,
        "ALICE@example.com",
        "through-the-looking-glass",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;
    let retry = tonic_types::StatusExt::get_error_details(&locked)
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("retry delay");
    assert!(
        retry > Duration::from_secs(290) && retry <= Duration::from_secs(300),
        "{retry:?}"
    );
    let replica = trickle.second_cluster(|_| {}).await;
    let mut other = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect");
    login_refused(
        &mut other,
        "alice@example.com",
        "through-the-looking-glass",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;

    // The lock ends; a success clears the count.
    trickle.clock.advance(Duration::from_secs(300));
    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("unlocked");
    for _ in 0..2 {
        client
            .login(login("alice@example.com", "guess"))
            .await
            .expect_err("wrong");
    }
    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("two failures do not lock");

    // Failures the legacy store decides count too, for emails no one has.
    for _ in 0..3 {
        login_refused(
            &mut client,
            "nobody@example.com",
            "guess",
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
    }
    login_refused(
        &mut client,
        "nobody@example.com",
        "guess",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;
    replica.stop().await.expect("stop");
}

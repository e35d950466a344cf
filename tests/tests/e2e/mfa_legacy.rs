//! Legacy second factors: a user who had a TOTP factor in the legacy app never gets in on a
//! password alone. Their first login with the right password imports nothing and asks for a
//! code; a code from the legacy factor imports them with it, in the same step; a wrong one
//! imports nothing. The backfill and a password-reset migration carry the factor too.

use crate::mfa::{Client, amr_of, authenticator, challenge_of, now, verify, wrong_code};
use crate::support::{assert_status, login_refused};
use std::time::Duration;
use tonic::Code;
use trickle_password::totp::{Totp, TotpSecret};
use trickle_proto::auth::v1::{
    CreatePasswordResetTicketRequest, GetUserRequest, ResetPasswordRequest, Source,
    get_user_request::Lookup,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyRecord, TestTrickle, bcrypt};

on_both_backends!(
    a_legacy_user_with_a_second_factor_never_migrates_on_the_password_alone,
    the_backfill_and_a_reset_carry_the_legacy_factor,
);

/// A legacy user with a TOTP factor, as the legacy app stored it (base32): its authenticator.
async fn legacy_user_with_factor(
    trickle: &TestTrickle,
    id: i64,
    email: &str,
    password: &str,
) -> Totp {
    let secret = TotpSecret::generate().expect("rng");
    let mut record = LegacyRecord::new(id, email, bcrypt(password));
    record.totp_secret = Some(secret.to_base32().to_string());
    trickle.legacy.insert(&record).await;
    authenticator(&secret.to_base32())
}

async fn a_legacy_user_with_a_second_factor_never_migrates_on_the_password_alone(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let factor = legacy_user_with_factor(&trickle, 501, "Grace@Example.com", "cobol-1959").await;
    let mut client: Client = trickle.client().await;

    // A wrong password: refused like any other, nothing about the factor, nothing moves.
    login_refused(
        &mut client,
        "grace@example.com",
        "fortran-1957",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    // The read-only legacy view does not say the user has a factor, nor carry it.
    let legacy_view = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("grace@example.com".into())),
        })
        .await
        .expect("legacy lookup")
        .into_inner();
    assert!(!legacy_view.migrated);

    // The right password: a challenge, and still nobody in the store.
    let challenge = challenge_of(&mut client, "grace@example.com", "cobol-1959").await;
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "no password-only import"
    );
    let wrong = verify(&mut client, &challenge, &wrong_code(&factor, now(&trickle)))
        .await
        .expect_err("a wrong code");
    assert_status(&wrong, Code::Unauthenticated, reason::INVALID_MFA_CODE);
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "a wrong code imports nothing"
    );

    // A code from the legacy factor: the user moves now, with the factor.
    let code = factor.code_at(now(&trickle));
    let migrated = verify(&mut client, &challenge, &code)
        .await
        .expect("the legacy factor's code");
    assert!(migrated.migrated, "this code moved the user");
    let user = migrated.user.clone().expect("user");
    assert_eq!(user.legacy_id, "501");
    assert_eq!(user.display_email, "Grace@Example.com");
    assert_eq!(user.source, i32::from(Source::LoginMigration));
    assert!(user.mfa_enrolled);
    assert_eq!(
        amr_of(&mut client, migrated.access_token).await,
        ["pwd", "otp", "mfa"]
    );
    assert_eq!(trickle.store.user_count().await, 1);
    // The ledger records the migration (written in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while trickle.store.migration_event_count().await < 1 {
        assert!(std::time::Instant::now() < deadline, "no ledger entry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // From now on the store checks the factor: the code that migrated them is spent.
    let challenge = challenge_of(&mut client, "grace@example.com", "cobol-1959").await;
    let replayed = verify(&mut client, &challenge, &code)
        .await
        .expect_err("the migrating code serves once");
    assert_status(&replayed, Code::Unauthenticated, reason::INVALID_MFA_CODE);
    trickle.clock.advance(Duration::from_secs(30));
    let again = verify(&mut client, &challenge, &factor.code_at(now(&trickle)))
        .await
        .expect("the next code");
    assert!(!again.migrated);
    assert_eq!(again.user.expect("user").user_id, user.user_id);
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn the_backfill_and_a_reset_carry_the_legacy_factor(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let hopper = legacy_user_with_factor(&trickle, 601, "hopper@example.com", "a-compiler").await;
    let lovelace =
        legacy_user_with_factor(&trickle, 602, "lovelace@example.com", "analytical-1843").await;
    trickle
        .legacy_user(603, "babbage@example.com", "difference")
        .await;
    let mut client: Client = trickle.client().await;

    // A password reset migrates Lovelace with her factor: the reset proves the mailbox, not
    // the factor, so her logins still ask for a code.
    let ticket = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "lovelace@example.com".into(),
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket;
    let reset = client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "a new long passphrase".into(),
        })
        .await
        .expect("reset")
        .into_inner();
    assert!(reset.migrated && reset.user.expect("user").mfa_enrolled);
    let challenge =
        challenge_of(&mut client, "lovelace@example.com", "a new long passphrase").await;
    verify(&mut client, &challenge, &lovelace.code_at(now(&trickle)))
        .await
        .expect("her legacy factor still counts");

    // The backfill carries Hopper's factor; Babbage had none.
    let job = crate::backfill::run_to_end(&trickle).await;
    assert_eq!(job.imported, 2, "{job:?}");
    let enrolled: Vec<String> = sqlx::query_scalar(
        "SELECT email FROM users WHERE source = 'backfill' AND mfa_enrolled ORDER BY email",
    )
    .fetch_all(&trickle.store.pool)
    .await
    .expect("backfilled users");
    assert_eq!(enrolled, ["hopper@example.com"]);
    let challenge = challenge_of(&mut client, "hopper@example.com", "a-compiler").await;
    let logged_in = verify(&mut client, &challenge, &hopper.code_at(now(&trickle)))
        .await
        .expect("the backfilled factor");
    assert_eq!(
        amr_of(&mut client, logged_in.access_token).await,
        ["pwd", "otp", "mfa"]
    );
    crate::mfa::logged_in(&mut client, "babbage@example.com", "difference").await;
}

//! Second factors (TOTP) through the public API: enrollment and confirmation, a login that
//! needs a code after the right password (and a wrong password that reveals nothing about
//! factors), codes and challenges that serve once, recovery codes, secrets sealed at rest,
//! and wrong codes that count toward the account's throttle like wrong passwords.

use crate::support::{alice, assert_status, logged_in_user, login, login_refused};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use trickle_password::totp::{Totp, TotpParams, TotpSecret};
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{
    ConfirmTotpRequest, EnrollTotpRequest, LoginResponse, RemoveFactorRequest, SignUpRequest, User,
    ValidateTokenRequest, VerifyMfaRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle, captured_logs};

on_both_backends!(
    a_user_with_a_second_factor_needs_a_code_after_the_password,
    wrong_codes_spend_the_challenge_and_count_toward_the_throttle,
    second_factor_requests_are_validated,
);

pub(crate) type Client = AuthServiceClient<Channel>;

/// The factor an authenticator app would hold after scanning the enrollment.
pub(crate) fn authenticator(secret_base32: &str) -> Totp {
    Totp::new(
        TotpSecret::from_base32(secret_base32).expect("the enrollment's secret is base32"),
        TotpParams::default(),
    )
    .expect("default parameters")
}

pub(crate) fn now(trickle: &TestTrickle) -> u64 {
    u64::try_from(trickle.clock.unix_seconds()).expect("after 1970")
}

/// A code that is not the factor's at any accepted step.
pub(crate) fn wrong_code(factor: &Totp, at: u64) -> String {
    let accepted: Vec<String> = [at - 30, at, at + 30]
        .iter()
        .map(|t| factor.code_at(*t))
        .collect();
    (0..1000u32)
        .map(|n| format!("{:06}", 123_457 + n * 7919))
        .find(|code| !accepted.contains(code))
        .expect("a wrong code")
}

/// Enroll and confirm a factor for `user_id`: the authenticator, the recovery codes and the
/// code that confirmed it (spent; a test must not assume which step "now" falls in).
pub(crate) async fn enroll(
    trickle: &TestTrickle,
    client: &mut Client,
    user_id: &str,
) -> (Totp, Vec<String>, String) {
    let enrollment = client
        .enroll_totp(EnrollTotpRequest {
            user_id: user_id.into(),
        })
        .await
        .expect("enroll")
        .into_inner();
    assert!(
        enrollment
            .otpauth_uri
            .starts_with("otpauth://totp/Trickle:")
            && enrollment
                .otpauth_uri
                .contains(&format!("secret={}", enrollment.secret)),
        "{}",
        enrollment.otpauth_uri
    );
    assert_eq!(
        (
            enrollment.algorithm.as_str(),
            enrollment.digits,
            enrollment.period_seconds
        ),
        ("SHA1", 6, 30)
    );
    let factor = authenticator(&enrollment.secret);
    let code = factor.code_at(now(trickle));
    let confirmed = client
        .confirm_totp(ConfirmTotpRequest {
            user_id: user_id.into(),
            code: code.clone(),
        })
        .await
        .expect("confirm")
        .into_inner();
    assert!(confirmed.user.expect("user").mfa_enrolled);
    (factor, confirmed.recovery_codes, code)
}

/// A login that must stop at the second factor: its challenge.
pub(crate) async fn challenge_of(client: &mut Client, email: &str, password: &str) -> String {
    let answer: LoginResponse = client
        .login(login(email, password))
        .await
        .expect("right password")
        .into_inner();
    assert!(answer.mfa_required, "{answer:?}");
    assert!(
        answer.access_token.is_empty() && answer.user.is_none(),
        "no token and no user before the code"
    );
    assert_eq!(answer.mfa_challenge.len(), 43);
    answer.mfa_challenge
}

pub(crate) async fn verify(
    client: &mut Client,
    challenge: &str,
    code: &str,
) -> Result<LoginResponse, tonic::Status> {
    client
        .verify_mfa(VerifyMfaRequest {
            mfa_challenge: challenge.into(),
            code: code.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub(crate) async fn amr_of(client: &mut Client, token: String) -> Vec<String> {
    client
        .validate_token(ValidateTokenRequest {
            access_token: token,
        })
        .await
        .expect("the token validates")
        .into_inner()
        .claims
        .expect("claims")
        .amr
}

async fn a_user_with_a_second_factor_needs_a_code_after_the_password(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "correct horse").await;
    let mut client = trickle.client().await;
    // Migrated by their first login, then they turn a second factor on.
    let user = logged_in_user(&mut client, "alice@example.com", "correct horse").await;
    assert!(!user.mfa_enrolled);
    let user_id = user.user_id;

    // An enrolled but unconfirmed secret changes nothing, and a wrong code confirms nothing.
    let enrollment = client
        .enroll_totp(EnrollTotpRequest {
            user_id: user_id.clone(),
        })
        .await
        .expect("enroll")
        .into_inner();
    let pending = authenticator(&enrollment.secret);
    let token = logged_in(&mut client, "alice@example.com", "correct horse").await;
    assert_eq!(amr_of(&mut client, token).await, ["pwd"]);
    let status = client
        .confirm_totp(ConfirmTotpRequest {
            user_id: user_id.clone(),
            code: wrong_code(&pending, now(&trickle)),
        })
        .await
        .expect_err("a wrong code confirms nothing");
    assert_status(&status, Code::Unauthenticated, reason::INVALID_MFA_CODE);

    // Enrolling again replaces the unconfirmed secret; confirming it hands out ten codes.
    let (factor, recovery_codes, confirming_code) = enroll(&trickle, &mut client, &user_id).await;
    assert_ne!(factor.secret.expose_bytes(), pending.secret.expose_bytes());
    assert_eq!(recovery_codes.len(), 10);
    let mut unique = recovery_codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "recovery codes are distinct");
    let again = client
        .enroll_totp(EnrollTotpRequest {
            user_id: user_id.clone(),
        })
        .await
        .expect_err("one active factor at a time");
    assert_status(&again, Code::AlreadyExists, reason::FACTOR_EXISTS);

    // A wrong password is refused exactly as for a user without a factor.
    let refused = login_refused(
        &mut client,
        "alice@example.com",
        "wrong horse",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let unknown = login_refused(
        &mut client,
        "nobody@example.com",
        "wrong horse",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    assert_eq!(refused.message(), unknown.message());

    // The right password: a challenge, no token. The code used to confirm is spent.
    let challenge = challenge_of(&mut client, "alice@example.com", "correct horse").await;
    let spent = verify(&mut client, &challenge, &confirming_code)
        .await
        .expect_err("the confirmation's code serves once");
    assert_status(&spent, Code::Unauthenticated, reason::INVALID_MFA_CODE);
    trickle.clock.advance(Duration::from_secs(30));
    let code = factor.code_at(now(&trickle));
    let finished = verify(&mut client, &challenge, &code)
        .await
        .expect("the next code finishes the login");
    let user = finished.user.clone().expect("user");
    assert_eq!(user.user_id, user_id);
    assert!(user.mfa_enrolled && !finished.mfa_required);
    assert_eq!(
        amr_of(&mut client, finished.access_token).await,
        ["pwd", "otp", "mfa"]
    );

    // The challenge serves once; the code serves once, even with a new challenge.
    let used = verify(&mut client, &challenge, &code)
        .await
        .expect_err("a used challenge");
    assert_status(&used, Code::Unauthenticated, reason::MFA_CHALLENGE_INVALID);
    let challenge = challenge_of(&mut client, "alice@example.com", "correct horse").await;
    let replayed = verify(&mut client, &challenge, &code)
        .await
        .expect_err("a replayed code");
    assert_status(&replayed, Code::Unauthenticated, reason::INVALID_MFA_CODE);

    // A recovery code (typed loosely) finishes it instead, once.
    let typed = recovery_codes[3].to_uppercase().replace('-', " ");
    let recovered = verify(&mut client, &challenge, &typed)
        .await
        .expect("a recovery code");
    assert_eq!(
        amr_of(&mut client, recovered.access_token).await,
        ["pwd", "mfa"]
    );
    let challenge = challenge_of(&mut client, "alice@example.com", "correct horse").await;
    let reused = verify(&mut client, &challenge, &recovery_codes[3])
        .await
        .expect_err("a used recovery code");
    assert_status(&reused, Code::Unauthenticated, reason::INVALID_MFA_CODE);

    // A challenge expires (five minutes).
    trickle.clock.advance(Duration::from_secs(301));
    let expired = verify(&mut client, &challenge, &factor.code_at(now(&trickle)))
        .await
        .expect_err("an expired challenge");
    assert_status(
        &expired,
        Code::Unauthenticated,
        reason::MFA_CHALLENGE_INVALID,
    );

    // Sealed at rest: neither the secret nor a recovery code is in the database or a log.
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT secret_ciphertext FROM user_factors WHERE user_id = $1")
            .bind(user_id.clone())
            .fetch_one(&trickle.store.pool)
            .await
            .expect("the factor row");
    let secret = factor.secret.expose_bytes();
    assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    let stored_codes: Vec<String> =
        sqlx::query_scalar("SELECT code_hash FROM recovery_codes WHERE user_id = $1")
            .bind(user_id.clone())
            .fetch_all(&trickle.store.pool)
            .await
            .expect("recovery code rows");
    assert_eq!(stored_codes.len(), 10);
    let logs = captured_logs();
    for code in &recovery_codes {
        assert!(
            !stored_codes
                .iter()
                .any(|stored| stored.contains(&code.replace('-', "")))
        );
        assert!(!logs.contains(code.as_str()), "a recovery code was logged");
    }
    assert!(
        !logs.contains(factor.secret.to_base32().as_str()),
        "the secret was logged"
    );
    assert!(!logs.contains(&challenge), "a challenge was logged");

    // Removing the factor: the password alone logs in again.
    let removed = client
        .remove_factor(RemoveFactorRequest {
            user_id: user_id.clone(),
        })
        .await
        .expect("remove")
        .into_inner()
        .user
        .expect("user");
    assert!(!removed.mfa_enrolled);
    let token = logged_in(&mut client, "alice@example.com", "correct horse").await;
    assert_eq!(amr_of(&mut client, token).await, ["pwd"]);
    let none = client
        .remove_factor(RemoveFactorRequest { user_id })
        .await
        .expect_err("nothing left to remove");
    assert_status(&none, Code::FailedPrecondition, reason::FACTOR_NOT_FOUND);
}

/// A user who signed up with `email` and `password`.
async fn signed_up(client: &mut Client, email: &str, password: &str) -> User {
    client
        .sign_up(SignUpRequest {
            email: email.into(),
            password: password.into(),
            profile: None,
        })
        .await
        .expect("sign up")
        .into_inner()
        .user
        .expect("user")
}

/// Log in expecting a token at once: the token.
pub(crate) async fn logged_in(client: &mut Client, email: &str, password: &str) -> String {
    let answer = client
        .login(login(email, password))
        .await
        .expect("login")
        .into_inner();
    assert!(!answer.mfa_required, "{answer:?}");
    answer.access_token
}

async fn wrong_codes_spend_the_challenge_and_count_toward_the_throttle(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        config.store.login_throttle_failures = 6;
        config.store.login_throttle_window_seconds = 600;
        config.store.login_throttle_lockout_seconds = 600;
    })
    .await;
    let mut client = trickle.client().await;
    let user = signed_up(&mut client, "bob@example.com", "bobs long password").await;
    let (factor, _, _) = enroll(&trickle, &mut client, &user.user_id).await;
    trickle.clock.advance(Duration::from_secs(30));

    // Five wrong codes spend a challenge: even the right code is refused on it then.
    let challenge = challenge_of(&mut client, "bob@example.com", "bobs long password").await;
    for _ in 0..5 {
        let wrong = verify(&mut client, &challenge, &wrong_code(&factor, now(&trickle)))
            .await
            .expect_err("a wrong code");
        assert_status(&wrong, Code::Unauthenticated, reason::INVALID_MFA_CODE);
    }
    let spent = verify(&mut client, &challenge, &factor.code_at(now(&trickle)))
        .await
        .expect_err("a spent challenge");
    assert_status(&spent, Code::Unauthenticated, reason::MFA_CHALLENGE_INVALID);

    // The five wrong codes were failures of the account: one more locks it, for codes and
    // for passwords alike. A right password in between forgave none of them.
    let challenge = challenge_of(&mut client, "bob@example.com", "bobs long password").await;
    let wrong = verify(&mut client, &challenge, &wrong_code(&factor, now(&trickle)))
        .await
        .expect_err("the sixth wrong code");
    assert_status(&wrong, Code::Unauthenticated, reason::INVALID_MFA_CODE);
    let locked = verify(&mut client, &challenge, &factor.code_at(now(&trickle)))
        .await
        .expect_err("locked");
    assert_status(&locked, Code::ResourceExhausted, reason::RATE_LIMITED);
    login_refused(
        &mut client,
        "bob@example.com",
        "bobs long password",
        Code::ResourceExhausted,
        reason::RATE_LIMITED,
    )
    .await;
}

async fn second_factor_requests_are_validated(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let mut client = trickle.client().await;
    let empty = verify(&mut client, "", "123456")
        .await
        .expect_err("no challenge");
    assert_status(&empty, Code::InvalidArgument, reason::INVALID_REQUEST);
    let bad_code = verify(&mut client, &"a".repeat(43), "12;456")
        .await
        .expect_err("not a code");
    assert_status(&bad_code, Code::InvalidArgument, reason::INVALID_REQUEST);
    let unknown = verify(&mut client, &"a".repeat(43), "123456")
        .await
        .expect_err("not a challenge Trickle issued");
    assert_status(
        &unknown,
        Code::Unauthenticated,
        reason::MFA_CHALLENGE_INVALID,
    );
    let nobody = client
        .enroll_totp(EnrollTotpRequest {
            user_id: "0190f1e2-0000-7000-8000-000000000000".into(),
        })
        .await
        .expect_err("no such user");
    assert_status(&nobody, Code::NotFound, reason::USER_NOT_FOUND);
    let confirm_nothing = {
        let user = signed_up(&mut client, "carol@example.com", "carols long password").await;
        client
            .confirm_totp(ConfirmTotpRequest {
                user_id: user.user_id,
                code: "123456".into(),
            })
            .await
            .expect_err("nothing enrolled")
    };
    assert_status(
        &confirm_nothing,
        Code::FailedPrecondition,
        reason::FACTOR_NOT_FOUND,
    );

    // Without a key to seal secrets, nothing can be enrolled (and the store says why).
    let keyless = TestTrickle::start_with(backend, |config| {
        config.store.factor_key = Default::default();
    })
    .await;
    let mut client = keyless.client().await;
    let user = signed_up(&mut client, "dave@example.com", "daves long password").await;
    let status = client
        .enroll_totp(EnrollTotpRequest {
            user_id: user.user_id,
        })
        .await
        .expect_err("no factor key");
    assert_status(
        &status,
        Code::FailedPrecondition,
        reason::FACTORS_NOT_CONFIGURED,
    );
}

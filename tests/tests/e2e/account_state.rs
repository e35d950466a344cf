//! Account state carried and kept: a user blocked in the legacy store arrives blocked (by a
//! first login or by the backfill), a block is only ever revealed after the right password,
//! and BlockUser / UnblockUser stop and restart logins and tokens. A user who migrates with a
//! password too short or found in a breached-password corpus must change it, without ever
//! being locked out.

use crate::support::{logged_in_user, login_refused};
use std::time::Duration;
use tonic::Code;
use trickle_proto::auth::v1::{
    BlockUserRequest, ChangePasswordRequest, CreatePasswordResetTicketRequest, GetUserRequest,
    RequirePasswordChangeRequest, ResetPasswordRequest, UnblockUserRequest, ValidateTokenRequest,
    get_user_request::Lookup,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyRecord, TestTrickle, bcrypt};

on_both_backends!(
    a_user_blocked_in_the_legacy_store_arrives_blocked,
    blocking_refuses_logins_and_tokens_until_unblocked,
    a_weak_migrated_password_must_be_changed_but_still_logs_in,
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
    crate::backfill::run_to_end(&trickle).await;
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

/// A breached-password corpus with these passwords: a sorted file (SHA-1 per line, with
/// counts, CRLF, as the "ordered by hash" download) or the prefix-range directory layout.
fn breached_corpus(dir: &std::path::Path, passwords: &[&str], sorted_file: bool) -> String {
    use sha1::Digest as _;
    let hexes: Vec<String> = passwords
        .iter()
        .map(|p| {
            sha1::Sha1::digest(p.as_bytes())
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect()
        })
        .collect();
    if sorted_file {
        let mut lines = hexes;
        lines.push("0000000000000000000000000000000000000000".into());
        lines.push("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".into());
        lines.sort();
        let path = dir.join("pwned-passwords-sha1-ordered-by-hash.txt");
        let body: String = lines.iter().map(|h| format!("{h}:7\r\n")).collect();
        std::fs::write(&path, body).expect("write corpus");
        path.display().to_string()
    } else {
        let range = dir.join("range");
        std::fs::create_dir(&range).expect("mkdir");
        for hex in hexes {
            let (prefix, suffix) = hex.split_at(5);
            std::fs::write(range.join(prefix), format!("{suffix}:7\r\n")).expect("write corpus");
        }
        range.display().to_string()
    }
}

async fn a_weak_migrated_password_must_be_changed_but_still_logs_in(backend: Backend) {
    let corpus_dir = tempfile::tempdir().expect("tempdir");
    let corpus = breached_corpus(
        corpus_dir.path(),
        &["password123", "iloveyou2"],
        backend == Backend::Sqlite,
    );
    let trickle = TestTrickle::start_with(backend, |config| {
        config.store.breached_passwords = corpus.clone();
    })
    .await;
    let users = [
        (7201, "short@example.com", "abc123", true),
        (7202, "breached@example.com", "password123", true),
        (
            7203,
            "fine@example.com",
            "a perfectly good passphrase",
            false,
        ),
    ];
    for (id, email, password, _) in users {
        trickle.legacy_user(id, email, password).await;
    }
    let mut client = trickle.client().await;
    for (_, email, password, must_change) in users {
        // The login succeeds either way (never a lockout); user and token say what to do.
        let answer = trickle.login_ok(email, password).await;
        let user = answer.user.expect("user");
        assert_eq!(user.password_change_required, must_change, "{email}");
        let claims = client
            .validate_token(ValidateTokenRequest {
                access_token: answer.access_token,
            })
            .await
            .expect("valid")
            .into_inner()
            .claims
            .expect("claims");
        assert_eq!(claims.password_change_required, must_change, "{email}");
        // Still there on the next login, now decided by the store alone.
        assert_eq!(
            logged_in_user(&mut client, email, password)
                .await
                .password_change_required,
            must_change,
            "{email}"
        );
    }

    // Changing the password clears it.
    let short = logged_in_user(&mut client, "short@example.com", "abc123").await;
    client
        .change_password(ChangePasswordRequest {
            user_id: short.user_id.clone(),
            old_password: "abc123".into(),
            new_password: "a longer password now".into(),
        })
        .await
        .expect("change");
    assert!(
        !logged_in_user(&mut client, "short@example.com", "a longer password now")
            .await
            .password_change_required
    );

    // An operator asks; a reset clears it.
    let fine = logged_in_user(
        &mut client,
        "fine@example.com",
        "a perfectly good passphrase",
    )
    .await;
    let asked = client
        .require_password_change(RequirePasswordChangeRequest {
            user_id: fine.user_id.clone(),
        })
        .await
        .expect("require")
        .into_inner()
        .user
        .expect("user");
    assert!(asked.password_change_required);
    assert!(
        logged_in_user(
            &mut client,
            "fine@example.com",
            "a perfectly good passphrase"
        )
        .await
        .password_change_required
    );
    let ticket = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "fine@example.com".into(),
        })
        .await
        .expect("ticket")
        .into_inner()
        .ticket;
    client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "another good passphrase".into(),
        })
        .await
        .expect("reset");
    assert!(
        !logged_in_user(&mut client, "fine@example.com", "another good passphrase")
            .await
            .password_change_required
    );

    // A backfilled user's kept legacy hash: the policy applies at their first login, when the
    // password is known.
    trickle
        .legacy_user(7204, "backfilled@example.com", "iloveyou2")
        .await;
    crate::backfill::run_to_end(&trickle).await;
    assert!(
        logged_in_user(&mut client, "backfilled@example.com", "iloveyou2")
            .await
            .password_change_required
    );
}

/// A replica that validates a user's tokens steadily refreshes what the store said of them
/// ahead of `token_subject_cache_ms`, in the background: a block the store knows reaches
/// ValidateToken shortly after three quarters of the interval (the call there is still
/// answered from memory and not made to wait for the store), and never later than the
/// interval itself (the other test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steadily_validated_users_block_is_fetched_ahead_of_the_cache_interval() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    trickle
        .legacy_user(7301, "carol@example.com", "carols-password")
        .await;
    let login = trickle
        .login_ok("carol@example.com", "carols-password")
        .await;
    let user = login.user.expect("user");
    let mut client = trickle.client().await;
    let validate = || ValidateTokenRequest {
        access_token: login.access_token.clone(),
    };
    client
        .validate_token(validate())
        .await
        .expect("valid before the block");
    client
        .block_user(BlockUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("block");
    let interval = trickle.config.frontend.token_subject_cache_ms;
    // Past three quarters of the interval: still answered from memory (the block is within
    // its bound), and the store is asked again meanwhile.
    trickle
        .clock
        .advance(Duration::from_millis(interval / 4 * 3 + 1));
    client
        .validate_token(validate())
        .await
        .expect("answered from memory, within the interval");
    // The clock stands still from here: only the background refresh can bring the block.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match client.validate_token(validate()).await {
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the block was not fetched ahead of the interval"
            ),
            Err(refused) => {
                crate::support::assert_status(
                    &refused,
                    Code::Unauthenticated,
                    reason::INVALID_TOKEN,
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The whole user lifecycle during a migration — reset, verification, change of email and
//! password, delete — and the cutover that ends it (docs/ARCHITECTURE.md, "Flows"), on both backends.

use crate::support::{alice, assert_status, logged_in_user, login, login_refused, violated_fields};
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_proto::auth::v1::{
    ChangeEmailRequest, ChangePasswordRequest, CreateEmailVerificationTicketRequest,
    CreatePasswordResetTicketRequest, DeleteUserRequest, GetUserRequest, ResetPasswordRequest,
    SignUpRequest, Source, VerifyEmailRequest, get_user_request::Lookup,
};
use trickle_proto::migration::v1::{
    GetStatusRequest, ListMigrationEventsRequest, LookupUserRequest, Mode, SetModeRequest,
};
use trickle_service_kit::rpc::{self, reason};
use trickle_tests::{Backend, LegacyRecord, TestTrickle, bcrypt, captured_logs};

on_both_backends!(
    reset_migrates_an_unmigrated_user_with_the_legacy_profile,
    a_reset_migration_verifies_the_email_only_when_configured,
    reset_ticket_issued_before_migration_resets_the_same_user,
    tickets_work_once_expire_and_never_appear_in_logs,
    changed_email_keeps_the_old_email_out,
    deleted_users_stay_deleted_but_the_email_is_free,
    change_email_to_another_legacy_users_email_is_refused,
    status_counts_match_the_databases,
    cutover_refuses_with_users_left_then_forced_ends_the_legacy_path,
    a_mode_change_reaches_another_coordinator,
    bad_input_on_lifecycle_rpcs_is_invalid_argument,
);

/// The field violations of a request that must be refused as INVALID_ARGUMENT.
fn invalid_fields<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Vec<String> {
    let status = result.expect_err("invalid input is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    violated_fields(&status)
}

async fn reset_ticket(trickle: &TestTrickle, email: &str) -> String {
    trickle
        .client()
        .await
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: email.into(),
        })
        .await
        .expect("reset ticket")
        .into_inner()
        .ticket
}

async fn reset_migrates_an_unmigrated_user_with_the_legacy_profile(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "legacy-password").await;
    let mut client = trickle.client().await;

    // Not in the store yet: GetUser falls back to the legacy store, read-only.
    let seen = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("alice@example.com".into())),
        })
        .await
        .expect("found in the legacy store")
        .into_inner();
    assert!(!seen.migrated);
    let legacy_view = seen.user.expect("user");
    assert!(legacy_view.user_id.is_empty());
    assert_eq!(legacy_view.legacy_id, "4242");
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "looking is not migrating"
    );

    let ticket = reset_ticket(&trickle, "ALICE@example.com").await;
    assert!(ticket.len() >= 22, "at least 128 bits");
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "a ticket creates no user"
    );
    let reset = client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "a brand new password".into(),
        })
        .await
        .expect("reset")
        .into_inner();
    assert!(reset.migrated, "this reset moved the user");
    let user = reset.user.expect("user");
    assert_eq!(user.source, i32::from(Source::ResetMigration));
    assert_eq!(user.legacy_id, "4242");
    assert_eq!(user.display_email, "Alice@Example.com");
    assert!(user.email_verified);
    assert_eq!(
        user.profile.expect("profile").name,
        "Alice Liddell",
        "profile from Get User"
    );

    login_refused(
        &mut client,
        "alice@example.com",
        "legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let logged_in = client
        .login(login("alice@example.com", "a brand new password"))
        .await
        .expect("new password")
        .into_inner();
    assert!(!logged_in.migrated);
    assert_eq!(logged_in.user.expect("user").user_id, user.user_id);
    assert_eq!(trickle.store.user_count().await, 1);
    assert_eq!(
        trickle
            .store
            .count("SELECT COUNT(*) FROM migration_events WHERE source = 'reset_migration'")
            .await,
        1
    );
}

async fn reset_ticket_issued_before_migration_resets_the_same_user(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "legacy-password").await;
    let mut client = trickle.client().await;
    let ticket = reset_ticket(&trickle, "alice@example.com").await;

    // She remembers her password after all and logs in: migrated on login.
    let migrated = client
        .login(login("alice@example.com", "legacy-password"))
        .await
        .expect("login")
        .into_inner();
    assert!(migrated.migrated);
    let user_id = migrated.user.expect("user").user_id;

    let reset = client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "a brand new password".into(),
        })
        .await
        .expect("reset the migrated user")
        .into_inner();
    assert!(!reset.migrated);
    assert_eq!(
        reset.user.expect("user").user_id,
        user_id,
        "never a second account"
    );
    client
        .login(login("alice@example.com", "a brand new password"))
        .await
        .expect("new password works");
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn tickets_work_once_expire_and_never_appear_in_logs(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        config.store.reset_ticket_ttl_seconds = 600
    })
    .await;
    alice(&trickle, "legacy-password").await;
    let mut client = trickle.client().await;
    let user = logged_in_user(&mut client, "alice@example.com", "legacy-password").await;

    let ticket = reset_ticket(&trickle, "alice@example.com").await;
    client
        .reset_password(ResetPasswordRequest {
            ticket: ticket.clone(),
            new_password: "first new password".into(),
        })
        .await
        .expect("first use");
    let again = client
        .reset_password(ResetPasswordRequest {
            ticket: ticket.clone(),
            new_password: "second new password".into(),
        })
        .await
        .expect_err("second use");
    assert_status(&again, Code::FailedPrecondition, reason::TICKET_USED);
    client
        .login(login("alice@example.com", "first new password"))
        .await
        .expect("the first reset stands");

    let expiring = reset_ticket(&trickle, "alice@example.com").await;
    trickle.clock.advance(Duration::from_secs(600));
    let expired = client
        .reset_password(ResetPasswordRequest {
            ticket: expiring.clone(),
            new_password: "third new password".into(),
        })
        .await
        .expect_err("expired");
    assert_status(&expired, Code::FailedPrecondition, reason::TICKET_EXPIRED);
    let unknown = client
        .reset_password(ResetPasswordRequest {
            ticket: "A".repeat(43),
            new_password: "third new password".into(),
        })
        .await
        .expect_err("unknown");
    assert_status(&unknown, Code::InvalidArgument, reason::TICKET_INVALID);
    client
        .login(login("alice@example.com", "first new password"))
        .await
        .expect("nothing changed");

    // Email verification: one ticket, one use, for the current email only.
    let verification = client
        .create_email_verification_ticket(CreateEmailVerificationTicketRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("verification ticket")
        .into_inner()
        .ticket;
    client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id.clone(),
            new_email: "alice@new.example".into(),
        })
        .await
        .expect("change");
    let stale = client
        .verify_email(VerifyEmailRequest {
            ticket: verification.clone(),
        })
        .await
        .expect_err("email changed since");
    assert_status(&stale, Code::InvalidArgument, reason::TICKET_INVALID);
    let fresh = client
        .create_email_verification_ticket(CreateEmailVerificationTicketRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("verification ticket")
        .into_inner()
        .ticket;
    let verified = client
        .verify_email(VerifyEmailRequest {
            ticket: fresh.clone(),
        })
        .await
        .expect("verify")
        .into_inner()
        .user
        .expect("user");
    assert!(verified.email_verified);
    assert_eq!(verified.email, "alice@new.example");
    let twice = client
        .verify_email(VerifyEmailRequest {
            ticket: fresh.clone(),
        })
        .await
        .expect_err("used");
    assert_status(&twice, Code::FailedPrecondition, reason::TICKET_USED);

    let logs = captured_logs();
    for ticket in [&ticket, &expiring, &verification, &fresh] {
        assert!(
            !logs.contains(ticket.as_str()),
            "a ticket appears in the logs"
        );
    }
    assert!(!logs.contains("first new password"));
}

async fn changed_email_keeps_the_old_email_out(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "legacy-password").await;
    let mut client = trickle.client().await;
    let user = logged_in_user(&mut client, "alice@example.com", "legacy-password").await;

    let changed = client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id.clone(),
            new_email: "Alice@Wonderland.example".into(),
        })
        .await
        .expect("change email")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(changed.email, "alice@wonderland.example");
    assert!(!changed.email_verified, "a new email is unverified");

    // The legacy store still has the old email and password: they must not make a second
    // account (legacy_id is unique) nor open this one.
    login_refused(
        &mut client,
        "alice@example.com",
        "legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    assert_eq!(trickle.store.user_count().await, 1);
    client
        .login(login("alice@wonderland.example", "legacy-password"))
        .await
        .expect("new email, store password");

    // Invariant 2: after a password change in the store, the legacy password stops working.
    client
        .change_password(ChangePasswordRequest {
            user_id: user.user_id.clone(),
            old_password: "legacy-password".into(),
            new_password: "a brand new password".into(),
        })
        .await
        .expect("change password");
    login_refused(
        &mut client,
        "alice@wonderland.example",
        "legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let wrong = client
        .change_password(ChangePasswordRequest {
            user_id: user.user_id,
            old_password: "legacy-password".into(),
            new_password: "yet another password".into(),
        })
        .await
        .expect_err("wrong old password");
    assert_status(&wrong, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
}

async fn deleted_users_stay_deleted_but_the_email_is_free(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "legacy-password").await;
    let mut client = trickle.client().await;
    let user = logged_in_user(&mut client, "alice@example.com", "legacy-password").await;

    client
        .delete_user(DeleteUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("delete");
    assert_eq!(trickle.store.user_count().await, 0);
    let again = client
        .delete_user(DeleteUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect_err("gone");
    assert_status(&again, Code::NotFound, reason::USER_NOT_FOUND);

    // The legacy store still has her: neither login nor reset nor lookup brings her back.
    login_refused(
        &mut client,
        "alice@example.com",
        "legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let status = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "alice@example.com".into(),
        })
        .await
        .expect_err("no reset for a deleted user");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    let status = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("alice@example.com".into())),
        })
        .await
        .expect_err("not found");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    assert_eq!(trickle.store.user_count().await, 0);

    // A new person may sign up with the email: a fresh account, not the legacy one.
    let fresh = client
        .sign_up(SignUpRequest {
            email: "alice@example.com".into(),
            password: "a brand new password".into(),
            profile: None,
        })
        .await
        .expect("sign-up allowed")
        .into_inner()
        .user
        .expect("user");
    assert!(fresh.legacy_id.is_empty());
    assert_ne!(fresh.user_id, user.user_id);
    client
        .login(login("alice@example.com", "a brand new password"))
        .await
        .expect("the new account logs in");
    login_refused(
        &mut client,
        "alice@example.com",
        "legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn change_email_to_another_legacy_users_email_is_refused(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "legacy-password").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "Bob@Example.com",
            bcrypt("bob-password"),
        ))
        .await;
    let mut client = trickle.client().await;
    let user = logged_in_user(&mut client, "alice@example.com", "legacy-password").await;

    let status = client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id.clone(),
            new_email: "bob@example.com".into(),
        })
        .await
        .expect_err("bob's legacy email");
    assert_status(&status, Code::AlreadyExists, reason::EMAIL_EXISTS);
    // Her own legacy email, in another case, is hers.
    let same = client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id.clone(),
            new_email: "ALICE@example.com".into(),
        })
        .await
        .expect("her own email")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(same.display_email, "ALICE@example.com");
    // An email another store user has.
    client
        .sign_up(SignUpRequest {
            email: "carol@example.com".into(),
            password: "carol's password".into(),
            profile: None,
        })
        .await
        .expect("sign up");
    let status = client
        .change_email(ChangeEmailRequest {
            user_id: user.user_id,
            new_email: "Carol@example.com".into(),
        })
        .await
        .expect_err("carol's email");
    assert_status(&status, Code::AlreadyExists, reason::EMAIL_EXISTS);
}

async fn status_counts_match_the_databases(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "alice-password").await;
    for (id, name) in [(11, "bob"), (12, "carol"), (13, "dave"), (14, "erin")] {
        trickle
            .legacy
            .insert(&LegacyRecord::new(
                id,
                &format!("{name}@example.com"),
                bcrypt(&format!("{name}-password")),
            ))
            .await;
    }
    let mut client = trickle.client().await;
    client
        .login(login("alice@example.com", "alice-password"))
        .await
        .expect("alice migrates");
    let bob = logged_in_user(&mut client, "bob@example.com", "bob-password").await;
    let _ = client
        .login(login("carol@example.com", "not carol's password"))
        .await
        .expect_err("wrong password");
    let ticket = reset_ticket(&trickle, "dave@example.com").await;
    client
        .reset_password(ResetPasswordRequest {
            ticket,
            new_password: "dave's new password".into(),
        })
        .await
        .expect("dave resets");
    client
        .delete_user(DeleteUserRequest {
            user_id: bob.user_id,
        })
        .await
        .expect("delete bob");
    client
        .sign_up(SignUpRequest {
            email: "frank@example.com".into(),
            password: "frank's password".into(),
            profile: None,
        })
        .await
        .expect("frank signs up");

    let status = trickle
        .admin()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.mode, i32::from(Mode::Import));
    let in_store = |source: &'static str| {
        let sql: &'static str = match source {
            "login_migration" => "SELECT COUNT(*) FROM users WHERE source = 'login_migration'",
            "reset_migration" => "SELECT COUNT(*) FROM users WHERE source = 'reset_migration'",
            _ => "SELECT COUNT(*) FROM users WHERE source = 'signup'",
        };
        trickle.store.count(sql)
    };
    assert_eq!(status.migrated_on_login, in_store("login_migration").await);
    assert_eq!(status.migrated_on_login, 1, "alice; bob was deleted");
    assert_eq!(status.migrated_on_reset, in_store("reset_migration").await);
    assert_eq!(status.migrated_on_reset, 1);
    assert_eq!(status.signed_up, in_store("signup").await);
    assert_eq!(status.tombstoned_legacy_users, 1);
    assert_eq!(status.legacy_users_total, Some(5));
    assert_eq!(status.legacy_users_remaining, Some(2), "carol and erin");
    let failures: Vec<(String, i64)> = status
        .failures_last_hour
        .iter()
        .map(|f| (f.reason.clone(), f.count))
        .collect();
    assert_eq!(failures, [("legacy_rejected".to_owned(), 1)]);
    assert!(status.last_migration_at.is_some());

    // The ledger keeps every migration, newest first, paged.
    let mut admin = trickle.admin().await;
    let first = admin
        .list_migration_events(ListMigrationEventsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("events")
        .into_inner();
    assert_eq!(first.events.len(), 2);
    assert_eq!(
        first.events[0].source,
        i32::from(Source::ResetMigration),
        "dave's reset was last"
    );
    assert!(
        !first.next_page_token.is_empty(),
        "alice, bob and dave migrated: a second page"
    );
    let second = admin
        .list_migration_events(ListMigrationEventsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect("events")
        .into_inner();
    assert_eq!(second.events.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert_eq!(trickle.store.migration_event_count().await, 3);
}

async fn cutover_refuses_with_users_left_then_forced_ends_the_legacy_path(backend: Backend) {
    let mut trickle = TestTrickle::start(backend).await;
    alice(&trickle, "alice-password").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "bob@example.com",
            bcrypt("bob-password"),
        ))
        .await;
    let mut client = trickle.client().await;
    client
        .login(login("alice@example.com", "alice-password"))
        .await
        .expect("alice migrates");
    let mut admin = trickle.admin().await;

    let refused = admin
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: false,
        })
        .await
        .expect_err("bob has not migrated");
    assert_status(&refused, Code::FailedPrecondition, reason::USERS_REMAINING);
    assert_eq!(
        rpc::metadata_of(&refused)
            .get("legacy_users_remaining")
            .map(String::as_str),
        Some("1")
    );
    assert!(refused.message().contains('1'), "{}", refused.message());

    // A ticket bob asked for before the cutover.
    let bobs_ticket = reset_ticket(&trickle, "bob@example.com").await;
    let forced = admin
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: true,
        })
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(forced.legacy_users_remaining, Some(1));

    // The legacy connector can go: nothing dials it any more.
    trickle
        .cluster
        .stop_legacy_connector()
        .await
        .expect("stop the connector");
    crate::support::wait_for_cutover(&trickle, "bob@example.com").await;
    for _ in 0..3 {
        client
            .login(login("alice@example.com", "alice-password"))
            .await
            .expect("migrated users log in");
    }
    login_refused(
        &mut client,
        "bob@example.com",
        "bob-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let status = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "bob@example.com".into(),
        })
        .await
        .expect_err("no reset");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    let status = client
        .reset_password(ResetPasswordRequest {
            ticket: bobs_ticket,
            new_password: "bob's new password".into(),
        })
        .await
        .expect_err("old ticket");
    assert_status(&status, Code::FailedPrecondition, reason::LEGACY_DISABLED);
    let status = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("bob@example.com".into())),
        })
        .await
        .expect_err("not found");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    let signed_up = client
        .sign_up(SignUpRequest {
            email: "new@example.com".into(),
            password: "a fine new password".into(),
            profile: None,
        })
        .await;
    assert!(
        signed_up.is_ok(),
        "sign-up needs no legacy check any more: {signed_up:?}"
    );
    let status = trickle
        .admin()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.mode, i32::from(Mode::Authoritative));
    assert_eq!(
        status.legacy_users_total, None,
        "the connector is not asked after cutover"
    );
    let lookup = admin
        .lookup_user(LookupUserRequest {
            email: "bob@example.com".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    assert!(
        lookup.store_user.is_none()
            && lookup.legacy_user.is_none()
            && lookup.legacy_error.is_empty()
    );
    assert_eq!(trickle.store.user_count().await, 2);
}

async fn a_mode_change_reaches_another_coordinator(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let second = trickle.second_cluster(|_| {}).await;
    let mut other =
        trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient::connect(
            second.coordinator.admin_url(),
        )
        .await
        .expect("connect");
    let before = other
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(before.mode, i32::from(Mode::Import));

    // No legacy users yet: nothing would be left behind.
    trickle
        .admin()
        .await
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: false,
        })
        .await
        .expect("switch");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mode = other
            .get_status(GetStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .mode;
        if mode == i32::from(Mode::Authoritative) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second coordinator never saw the switch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await.expect("stop");
}

async fn bad_input_on_lifecycle_rpcs_is_invalid_argument(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let mut client = trickle.client().await;
    let mut admin = trickle.admin().await;

    assert_eq!(
        invalid_fields(
            client
                .change_password(ChangePasswordRequest::default())
                .await
        ),
        ["user_id", "old_password", "new_password"]
    );
    let weak = client
        .change_password(ChangePasswordRequest {
            user_id: "u".into(),
            old_password: "x".into(),
            new_password: "short".into(),
        })
        .await
        .expect_err("weak");
    assert_status(&weak, Code::InvalidArgument, reason::WEAK_PASSWORD);
    assert_eq!(
        invalid_fields(client.change_email(ChangeEmailRequest::default()).await),
        ["user_id", "new_email"]
    );
    assert_eq!(
        invalid_fields(
            client
                .change_email(ChangeEmailRequest {
                    user_id: "u".into(),
                    new_email: "no-at-sign".into()
                })
                .await
        ),
        ["new_email"]
    );
    assert_eq!(
        invalid_fields(
            client
                .create_password_reset_ticket(CreatePasswordResetTicketRequest::default())
                .await
        ),
        ["email"]
    );
    assert_eq!(
        invalid_fields(client.reset_password(ResetPasswordRequest::default()).await),
        ["ticket", "new_password"]
    );
    assert_eq!(
        invalid_fields(
            client
                .reset_password(ResetPasswordRequest {
                    ticket: "t".repeat(300),
                    new_password: "p".repeat(5000)
                })
                .await
        ),
        ["ticket", "new_password"]
    );
    assert_eq!(
        invalid_fields(
            client
                .create_email_verification_ticket(CreateEmailVerificationTicketRequest::default())
                .await
        ),
        ["user_id"]
    );
    assert_eq!(
        invalid_fields(client.verify_email(VerifyEmailRequest::default()).await),
        ["ticket"]
    );
    assert_eq!(
        invalid_fields(
            client
                .delete_user(DeleteUserRequest {
                    user_id: "x".repeat(100)
                })
                .await
        ),
        ["user_id"]
    );
    assert_eq!(
        invalid_fields(admin.set_mode(SetModeRequest::default()).await),
        ["mode"]
    );
    assert_eq!(
        invalid_fields(
            admin
                .list_migration_events(ListMigrationEventsRequest {
                    page_size: 5000,
                    page_token: "nope".into()
                })
                .await
        ),
        ["page_size", "page_token"]
    );
    assert_eq!(
        invalid_fields(admin.lookup_user(LookupUserRequest::default()).await),
        ["email"]
    );

    // Well-formed but unknown: not found, never a panic.
    let status = client
        .change_password(ChangePasswordRequest {
            user_id: "no-such-user".into(),
            old_password: "x".into(),
            new_password: "long enough".into(),
        })
        .await
        .expect_err("unknown user");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    let status = client
        .delete_user(DeleteUserRequest {
            user_id: "no-such-user".into(),
        })
        .await
        .expect_err("unknown");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
    let status = client
        .create_password_reset_ticket(CreatePasswordResetTicketRequest {
            email: "nobody@example.com".into(),
        })
        .await
        .expect_err("unknown everywhere");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);
}

/// `trickle admin` renders the status and the ledger for people and for scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_admin_prints_tables_and_json() {
    use trickle::admin::{AdminCommand, run};
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    alice(&trickle, "alice-password").await;
    let user = logged_in_user(
        &mut trickle.client().await,
        "alice@example.com",
        "alice-password",
    )
    .await;
    let address = trickle.cluster.coordinator.admin_url();

    let table = run(&address, AdminCommand::Status, false)
        .await
        .expect("status");
    assert!(table.contains("migrated on login           1"), "{table}");
    assert!(table.contains("legacy users remaining      0"), "{table}");
    let json: serde_json::Value = serde_json::from_str(
        &run(&address, AdminCommand::Status, true)
            .await
            .expect("status"),
    )
    .expect("json");
    assert_eq!(json["migrated"]["login"], 1);
    assert_eq!(json["mode"], "import");

    let events = run(
        &address,
        AdminCommand::Events {
            limit: 10,
            page_token: String::new(),
        },
        false,
    )
    .await
    .expect("events");
    assert!(
        events.contains(&user.user_id) && events.contains("login"),
        "{events}"
    );
    let found = run(
        &address,
        AdminCommand::User {
            email: "Alice@example.com".into(),
        },
        false,
    )
    .await
    .expect("user");
    assert!(
        found.contains("in the store        yes") && found.contains("legacy_id 4242"),
        "{found}"
    );

    let error = run(
        &address,
        AdminCommand::SetMode {
            mode: "import".into(),
            force: false,
        },
        false,
    )
    .await;
    assert!(
        error.is_ok(),
        "switching to the current mode is harmless: {error:?}"
    );
    // Backfill, followed to the end (plain progress lines: stderr is not a terminal here).
    use trickle::admin::BackfillAction;
    let backfill = run(
        &address,
        AdminCommand::Backfill {
            action: BackfillAction::Start {
                batch_size: 10,
                detach: false,
            },
        },
        false,
    )
    .await
    .expect("backfill");
    assert!(
        backfill.contains("state                 completed"),
        "{backfill}"
    );
    let status = run(
        &address,
        AdminCommand::Backfill {
            action: BackfillAction::Status {
                job_id: String::new(),
            },
        },
        true,
    )
    .await
    .expect("status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["state"], "completed");
    assert_eq!(status["skipped_existing"], 1, "alice was already migrated");

    let unreachable = run("http://127.0.0.1:1", AdminCommand::Status, false)
        .await
        .expect_err("nothing there");
    assert!(format!("{unreachable:#}").contains("cannot reach the migration coordinator"));
}

/// `[migration] reset_verifies_email`: a reset ticket that reached the address proves it, when
/// the operator says their service delivers tickets there; otherwise the legacy flag stands.
async fn a_reset_migration_verifies_the_email_only_when_configured(backend: Backend) {
    for verifies in [false, true] {
        let trickle = TestTrickle::start_with(backend, |config| {
            config.migration.reset_verifies_email = verifies;
        })
        .await;
        // Unverified in the legacy store.
        trickle
            .legacy_user(4343, "hatter@example.com", "legacy-password")
            .await;
        let ticket = reset_ticket(&trickle, "hatter@example.com").await;
        let reset = trickle
            .client()
            .await
            .reset_password(ResetPasswordRequest {
                ticket,
                new_password: "a brand new password".into(),
            })
            .await
            .expect("reset")
            .into_inner();
        assert!(reset.migrated);
        assert_eq!(
            reset.user.expect("user").email_verified,
            verifies,
            "reset_verifies_email = {verifies}"
        );
    }
}

//! Migration on login, the heart of Trickle: the first login moves a user from the legacy
//! store into the store, which answers alone from then on; wrong passwords write nothing;
//! concurrent first logins make one user; sign-up never shadows a legacy user; the mode is
//! shared by every replica through the database; no secret reaches a log line.

use crate::support::{alice, assert_status, login, login_refused, violated_fields};
use tonic::Code;
use trickle_proto::auth::v1::{
    GetUserRequest, LoginResponse, SignUpRequest, Source, get_user_request::Lookup,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyRecord, TestTrickle, bcrypt, captured_logs};

on_both_backends!(
    first_login_migrates_then_store_serves_without_legacy,
    bad_credentials_are_indistinguishable_and_write_nothing,
    store_is_authoritative_after_migration,
    concurrent_first_logins_create_one_user,
    sign_up_refuses_legacy_emails_and_creates_new_users,
    logs_of_a_migration_contain_no_secret,
    mode_is_shared_through_the_database,
);

/// The three hash formats of this release, as their reference implementations wrote them
/// (Python bcrypt, argon2-cffi, Django 5's make_password), in a PostgreSQL legacy database:
/// each user migrates with their legacy password and is re-hashed with argon2id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_legacy_hash_format_migrates_from_a_postgres_legacy_database() {
    let trickle = TestTrickle::start(Backend::Postgres).await;
    let users = [
        (
            1,
            "Bcrypt@Example.com",
            "$2b$04$qNfuqQRa6pvV465bs0i8MuQgpfGq/QdX9J.UDjEMrSx5motZzhXQK",
            "password",
        ),
        (
            2,
            "argon2@example.com",
            "$argon2id$v=19$m=1024,t=1,p=1$xqYH3E9892/9d5YtledHrg$afUNDguUbm4dSht18KO5FRbrygHaU0lVx3c/rLlNMCc",
            "pässwörd",
        ),
        (
            3,
            "django@example.com",
            "pbkdf2_sha256$1000000$hjZviU2rfKZb8h3ni18KjQ$cFjf41KwwN9deZy48DGkP87G2+no8aimGEp4snJXhzk=",
            "correct horse",
        ),
    ];
    for (id, email, hash, _) in users {
        let mut record = LegacyRecord::new(id, email, hash.into());
        record.email_verified = id == 1;
        trickle.legacy.insert(&record).await;
    }
    let mut client = trickle.client().await;
    for (id, email, _, password) in users {
        let wrong = client
            .login(login(email, &format!("{password}!")))
            .await
            .expect_err("wrong password");
        assert_status(&wrong, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
        let response = client
            .login(login(&email.to_lowercase(), password))
            .await
            .expect("legacy password works")
            .into_inner();
        assert!(response.migrated, "{email}");
        let user = response.user.expect("user");
        assert_eq!(user.legacy_id, id.to_string());
        assert_eq!(user.email_verified, id == 1);
        let stored = trickle.store.password_hash(&email.to_lowercase()).await;
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{email} is re-hashed"
        );
        let again = client
            .login(login(email, password))
            .await
            .expect("store login")
            .into_inner();
        assert!(!again.migrated);
    }
    assert_eq!(trickle.store.user_count().await, 3);
}

async fn first_login_migrates_then_store_serves_without_legacy(backend: Backend) {
    let mut trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;

    // Legacy spells it Alice@Example.com; the user types it in lower case.
    let first: LoginResponse = client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("first login")
        .into_inner();
    assert!(first.migrated, "the first login moves the user");
    let user = first.user.expect("user");
    assert_eq!(user.email, "alice@example.com");
    assert_eq!(
        user.display_email, "Alice@Example.com",
        "the legacy spelling is kept"
    );
    assert_eq!(user.legacy_id, "4242");
    assert!(user.email_verified);
    assert_eq!(user.source, i32::from(Source::LoginMigration));
    let profile = user.profile.expect("profile");
    assert_eq!(
        (
            profile.name.as_str(),
            profile.given_name.as_str(),
            profile.family_name.as_str(),
            profile.nickname.as_str()
        ),
        ("Alice Liddell", "Alice", "Liddell", "alice")
    );
    assert_eq!(profile.picture, "https://example.com/alice.png");
    assert!(!first.access_token.is_empty() && first.expires_in > 0);
    assert_eq!(trickle.store.user_count().await, 1);
    assert_eq!(
        trickle.store.migration_event_count().await,
        1,
        "one ledger row per migration"
    );
    let stored_hash = trickle.store.password_hash("alice@example.com").await;
    assert!(
        stored_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "re-hashed with argon2id"
    );

    // With the legacy connector gone, the store alone serves her — in any case spelling.
    trickle
        .cluster
        .stop_legacy_connector()
        .await
        .expect("stop legacy connector");
    for spelling in ["alice@example.com", "ALICE@example.COM"] {
        let again = client
            .login(login(spelling, "through-the-looking-glass"))
            .await
            .expect("login from the store")
            .into_inner();
        assert!(!again.migrated);
        assert_eq!(again.user.expect("user").user_id, user.user_id);
    }
    let fetched = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("Alice@example.com".into())),
        })
        .await
        .expect("get user")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(fetched.user_id, user.user_id);
    assert!(fetched.last_login_at.is_some());
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn bad_credentials_are_indistinguishable_and_write_nothing(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;

    let wrong_unmigrated = client
        .login(login("alice@example.com", "wrong password"))
        .await
        .expect_err("wrong password");
    let unknown = client
        .login(login("nobody@example.com", "through-the-looking-glass"))
        .await
        .expect_err("unknown");
    for status in [&wrong_unmigrated, &unknown] {
        assert_status(status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
    assert_eq!(
        wrong_unmigrated.message(),
        unknown.message(),
        "same message for both"
    );
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "a failed legacy login writes nothing"
    );
    assert_eq!(trickle.store.migration_event_count().await, 0);

    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("migrates");
    let wrong_migrated = client
        .login(login("alice@example.com", "wrong password"))
        .await
        .expect_err("wrong password");
    assert_status(
        &wrong_migrated,
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    );
    assert_eq!(wrong_migrated.message(), unknown.message());
    assert_eq!(trickle.store.user_count().await, 1);
    assert_eq!(trickle.store.migration_event_count().await, 1);
}

async fn store_is_authoritative_after_migration(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let record = alice(&trickle, "old-legacy-password").await;
    let mut client = trickle.client().await;
    client
        .login(login("alice@example.com", "old-legacy-password"))
        .await
        .expect("migrates");

    // The legacy app changes her password afterwards: the store does not care.
    trickle
        .legacy
        .set_password_hash(record.id, &bcrypt("new-legacy-password"))
        .await;
    login_refused(
        &mut client,
        "alice@example.com",
        "new-legacy-password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let still = client
        .login(login("alice@example.com", "old-legacy-password"))
        .await
        .expect("store password works")
        .into_inner();
    assert!(!still.migrated);
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn concurrent_first_logins_create_one_user(backend: Backend) {
    // 50 bcrypt checks queue on the connector's hashing threads: this test is about one row
    // per user, not about deadlines, so give the legacy path room on a busy machine.
    let trickle = TestTrickle::start_with(backend, trickle_tests::generous_deadlines).await;
    alice(&trickle, "through-the-looking-glass").await;
    let client = trickle.client().await;

    let logins = (0..50).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .login(login("alice@example.com", "through-the-looking-glass"))
                .await
        })
    });
    let results = futures::future::join_all(logins).await;
    let mut migrated = 0;
    let mut user_ids = std::collections::HashSet::new();
    for result in results {
        let response = result
            .expect("task")
            .expect("every concurrent first login succeeds")
            .into_inner();
        migrated += usize::from(response.migrated);
        user_ids.insert(response.user.expect("user").user_id);
    }
    assert_eq!(migrated, 1, "exactly one login reports the migration");
    assert_eq!(user_ids.len(), 1, "all logins see the same user");
    assert_eq!(trickle.store.user_count().await, 1);
    assert_eq!(trickle.store.migration_event_count().await, 1);
}

async fn sign_up_refuses_legacy_emails_and_creates_new_users(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;

    let status = client
        .sign_up(SignUpRequest {
            email: "ALICE@example.com".into(),
            password: "a brand new password".into(),
            profile: None,
        })
        .await
        .expect_err("alice is a legacy user");
    assert_status(&status, Code::AlreadyExists, reason::EMAIL_EXISTS);
    assert_eq!(trickle.store.user_count().await, 0);

    let weak = client
        .sign_up(SignUpRequest {
            email: "dora@example.com".into(),
            password: "short".into(),
            profile: None,
        })
        .await
        .expect_err("too short");
    assert_status(&weak, Code::InvalidArgument, reason::WEAK_PASSWORD);
    assert_eq!(violated_fields(&weak), ["password"]);

    let profile = trickle_proto::auth::v1::Profile {
        name: "Dora Explorer".into(),
        ..Default::default()
    };
    let created = client
        .sign_up(SignUpRequest {
            email: "Dora@Example.com".into(),
            password: "a brand new password".into(),
            profile: Some(profile),
        })
        .await
        .expect("new email")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(created.email, "dora@example.com");
    assert_eq!(created.source, i32::from(Source::Signup));
    assert!(created.legacy_id.is_empty());
    assert_eq!(created.profile.expect("profile").name, "Dora Explorer");

    let logged_in = client
        .login(login("dora@example.com", "a brand new password"))
        .await
        .expect("login")
        .into_inner();
    assert!(!logged_in.migrated);
    assert_eq!(logged_in.user.expect("user").user_id, created.user_id);

    let again = client
        .sign_up(SignUpRequest {
            email: "dora@example.com".into(),
            password: "another password".into(),
            profile: None,
        })
        .await
        .expect_err("exists in the store");
    assert_status(&again, Code::AlreadyExists, reason::EMAIL_EXISTS);
    assert_eq!(trickle.store.user_count().await, 1);
}

async fn logs_of_a_migration_contain_no_secret(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    // A password no other test uses, so any trace of it in the shared log is this test's.
    let password = format!("secret-{}", uuid::Uuid::now_v7().simple());
    let record = alice(&trickle, &password).await;
    let mut client = trickle.client().await;
    let response = client
        .login(login("alice@example.com", &password))
        .await
        .expect("migrates")
        .into_inner();
    assert!(response.migrated);
    client
        .login(login("alice@example.com", &password))
        .await
        .expect("store login");
    let _ = client
        .login(login("alice@example.com", &format!("{password}-wrong")))
        .await;
    let _ = client
        .sign_up(SignUpRequest {
            email: "eve@example.com".into(),
            password: format!("{password}-eve"),
            profile: None,
        })
        .await;
    let store_hash = trickle.store.password_hash("alice@example.com").await;
    let user_id = response.user.expect("user").user_id;

    let logs = captured_logs();
    assert!(
        logs.contains("user migrated on login") && logs.contains(&user_id),
        "the capture saw this migration"
    );
    for (what, secret) in [
        ("password", password.as_str()),
        ("legacy hash", record.password_hash.as_str()),
        ("store hash", store_hash.as_str()),
        ("access token", response.access_token.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
    // Not even the salt+hash part of a hash, which a redaction could leave behind.
    assert!(!logs.contains(&store_hash[store_hash.len() - 43..]));
    assert!(!logs.contains(&record.password_hash[29..]));
}

async fn mode_is_shared_through_the_database(backend: Backend) {
    // Both coordinators read the mode from the same database; the second one's config says
    // "authoritative" but the mode stored by the first start wins.
    let trickle = TestTrickle::start(backend).await;
    let second = trickle
        .second_cluster(|config| {
            config.migration.mode = trickle_migration_coordinator::config::Mode::Authoritative
        })
        .await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        second.frontend.url(),
    )
    .await
    .expect("connect");
    let response = client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("still importing");
    assert!(response.into_inner().migrated);
    second.stop().await.expect("stop");
}

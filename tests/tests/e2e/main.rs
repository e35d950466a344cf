//! End-to-end tests of migration on login: the four services over real gRPC on loopback,
//! on PostgreSQL + MariaDB and on SQLite + SQLite. Each scenario runs on both.
//!
//! One test binary for the whole workspace on purpose (link time is real on two cores).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_proto::auth::v1::{
    GetJwksRequest, GetUserRequest, LoginRequest, LoginResponse, SignUpRequest, Source,
    ValidateTokenRequest, get_user_request::Lookup,
};
use trickle_service_kit::rpc::{self, reason};
use trickle_tests::{Backend, LegacyRecord, SwitchableProxy, TestTrickle, bcrypt, captured_logs};

/// Generate one test per backend for each scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod postgres_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(trickle_tests::Backend::PostgresMariaDb).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(trickle_tests::Backend::Sqlite).await;
                }
            )*
        }
    };
}

mod backfill;
mod bench;
mod db_tls;
mod hash_limits;
mod http_backend;
mod lifecycle;
mod presets;
mod retention;
mod schema;
mod signing_keys;
mod telemetry;
mod throttle;
mod tickets;
mod timing;
mod tls;

on_both_backends!(
    failed_logins_lock_the_email_on_every_replica,
    first_login_migrates_then_store_serves_without_legacy,
    bad_credentials_are_indistinguishable_and_write_nothing,
    store_is_authoritative_after_migration,
    concurrent_first_logins_create_one_user,
    legacy_unreachable_is_unavailable_but_migrated_users_log_in,
    sign_up_refuses_legacy_emails_and_creates_new_users,
    tokens_validate_and_reject_tampering,
    bad_input_is_invalid_argument_with_field_violations,
    logs_of_a_migration_contain_no_secret,
    mode_is_shared_through_the_database,
);

/// Every service answers the standard health check and lists its service through reflection
/// v1alpha (what grpcurl speaks) and v1 — the public API only when `[frontend] reflection`
/// turns it on; the coordinator's admin API only on its own listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    // By default the public listener serves no reflection: a map of the API for anyone.
    let closed = TestTrickle::start(Backend::Sqlite).await;
    let channel = tonic::transport::Endpoint::from_shared(closed.cluster.frontend.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let status = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .map(|_| ())
        .expect_err("no reflection on the public API by default");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // The operators' API is not on the address the frontend calls.
    let status =
        trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient::connect(
            closed.cluster.coordinator.url(),
        )
        .await
        .expect("connect")
        .get_status(trickle_proto::migration::v1::GetStatusRequest {})
        .await
        .expect_err("admin API on the coordinator's service address");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    drop(closed);

    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.frontend.reflection = true;
    })
    .await;
    let legacy = trickle.cluster.legacy.as_ref().expect("running");
    let services = [
        (
            trickle.cluster.frontend.url(),
            "trickle.auth.v1.AuthService",
        ),
        (
            trickle.cluster.store.url(),
            "trickle.userstore.v1.UserStore",
        ),
        (
            trickle.cluster.coordinator.url(),
            "trickle.migration.v1.MigrationCoordinator",
        ),
        (
            trickle.cluster.coordinator.admin_url(),
            "trickle.migration.v1.MigrationAdmin",
        ),
        (legacy.url(), "trickle.legacy.v1.LegacyConnector"),
    ];
    for (url, service) in services {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        for name in ["", service] {
            let answer = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: name.into(),
                })
                .await
                .expect("health")
                .into_inner();
            assert_eq!(
                answer.status,
                ServingStatus::Serving as i32,
                "{url} {name:?}"
            );
        }

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let mut stream =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect("reflection v1alpha")
                .into_inner();
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream
                .message()
                .await
                .expect("answer")
                .expect("one message")
                .message_response
        else {
            panic!("v1alpha reflection did not list services");
        };
        assert!(
            list.service.iter().any(|s| s.name == service),
            "{service} in {:?}",
            list.service
        );

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream
                .message()
                .await
                .expect("answer")
                .expect("one message")
                .message_response
        else {
            panic!("v1 reflection did not list services");
        };
        assert!(list.service.iter().any(|s| s.name == service));
    }
}

/// Hostile sizes get a clean error and leave the service serving: a 4 MiB password (past the
/// decoding limit), a 10,000-entry metadata map in a profile, 10,000 request headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sizes_get_clean_errors() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;

    let huge = "p".repeat(4 * 1024 * 1024);
    let status = client
        .login(login("alice@example.com", &huge))
        .await
        .expect_err("too large");
    assert!(
        matches!(
            status.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{status:?}"
    );

    let mut fields = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        fields.insert(
            format!("key{i}"),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("v".into())),
            },
        );
    }
    let profile = trickle_proto::auth::v1::Profile {
        user_metadata: Some(prost_types::Struct { fields }),
        ..Default::default()
    };
    let status = client
        .sign_up(SignUpRequest {
            email: "big@example.com".into(),
            password: "a long password".into(),
            profile: Some(profile),
        })
        .await
        .expect_err("metadata too large");
    assert_status(&status, Code::InvalidArgument, reason::INVALID_REQUEST);
    assert_eq!(violated_fields(&status), ["profile.user_metadata"]);

    let mut request = tonic::Request::new(login("alice@example.com", "through-the-looking-glass"));
    for i in 0..10_000 {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(format!("x-junk-{i}").as_bytes())
                .expect("key"),
            "v".parse().expect("value"),
        );
    }
    let refused = client.login(request).await;
    assert!(refused.is_err(), "10,000 headers are refused");

    // Nothing above hurt the services.
    let mut client = trickle.client().await;
    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("still serving");
    assert_eq!(trickle.store.user_count().await, 1);
}

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
        let status = client
            .login(login("alice@example.com", "guess"))
            .await
            .expect_err("wrong");
        assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
    // Locked: even the right password is not checked, on this replica or another.
    let locked = client
        .login(login("ALICE@example.com", "through-the-looking-glass"))
        .await
        .expect_err("locked");
    assert_status(&locked, Code::ResourceExhausted, reason::RATE_LIMITED);
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
    let status = other
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect_err("locked there too");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);

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
        let status = client
            .login(login("nobody@example.com", "guess"))
            .await
            .expect_err("unknown");
        assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
    let status = client
        .login(login("nobody@example.com", "guess"))
        .await
        .expect_err("locked");
    assert_status(&status, Code::ResourceExhausted, reason::RATE_LIMITED);
    replica.stop().await.expect("stop");
}

/// Wait until the frontend answers as the store alone would after a cutover: a legacy user
/// who never migrated is no longer found through it (the frontend polls the mode, the
/// coordinator caches it briefly). Polls, never a fixed wait.
pub(crate) async fn wait_for_cutover(trickle: &TestTrickle, legacy_only_email: &str) {
    let mut client = trickle.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lookup = client
            .get_user(trickle_proto::auth::v1::GetUserRequest {
                lookup: Some(trickle_proto::auth::v1::get_user_request::Lookup::Email(
                    legacy_only_email.into(),
                )),
            })
            .await;
        match lookup {
            Err(status) if status.code() == Code::NotFound => return,
            _ => assert!(
                Instant::now() < deadline,
                "the frontend never saw the cutover"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
        attempt_source: String::new(),
    }
}

pub(crate) fn assert_status(status: &tonic::Status, code: Code, expected_reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        rpc::reason_of(status).as_deref(),
        Some(expected_reason),
        "{status:?}"
    );
}

pub(crate) fn violated_fields(status: &tonic::Status) -> Vec<String> {
    rpc::field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

pub(crate) async fn alice(trickle: &TestTrickle, password: &str) -> LegacyRecord {
    let mut record = LegacyRecord::new(4242, "Alice@Example.com", bcrypt(password));
    record.email_verified = true;
    record.name = Some("Alice Liddell".into());
    record.given_name = Some("Alice".into());
    record.family_name = Some("Liddell".into());
    record.nickname = Some("alice".into());
    record.picture = Some("https://example.com/alice.png".into());
    trickle.legacy.insert(&record).await;
    record
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
    let status = client
        .login(login("alice@example.com", "new-legacy-password"))
        .await
        .expect_err("legacy no longer decides");
    assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
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

/// A replica of `trickle` whose legacy connector reaches MariaDB through a
/// [`SwitchableProxy`] that starts out hanging (it accepts connections and never answers,
/// like a database far slower than any deadline); `adjust` sets the deadlines.
async fn replica_with_hanging_legacy(
    trickle: &TestTrickle,
    adjust: impl FnOnce(&mut trickle::config::Config),
) -> (trickle::services::Cluster, SwitchableProxy) {
    let mariadb = trickle_tests::mysql_admin_url();
    let server = mariadb
        .trim_start_matches("mysql://")
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split(['/', '?']).next())
        .expect("host:port")
        .to_owned();
    let proxy = SwitchableProxy::start(server.clone(), false).await;
    let replica = trickle
        .second_cluster(|config| {
            config.legacy.database_url = trickle
                .legacy
                .database
                .url
                .replace(&server, &proxy.addr.to_string())
                .into();
            adjust(config);
        })
        .await;
    (replica, proxy)
}

/// The legacy database answers slower than the deadline (it accepts connections and never
/// replies) while eight callers mix logins of migrated users with first logins: every
/// migrated login succeeds, every first login is UNAVAILABLE / LEGACY_UNAVAILABLE within the
/// coordinator's deadline (plus scheduling slack), and nothing is written for them. The
/// circuit breaker is off so that every first login really waits on the slow database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_legacy_database_under_mixed_load_fails_only_first_logins_within_the_deadline() {
    let trickle = TestTrickle::start(Backend::PostgresMariaDb).await;
    let hash = trickle_password::legacy_formats::bcrypt("legacy-password", 4).expect("bcrypt");
    let users: Vec<(i64, String, String)> = (1..=8)
        .map(|id| (id, format!("user{id}@example.com"), hash.clone()))
        .collect();
    trickle.legacy.insert_many(&users).await;
    let mut client = trickle.client().await;
    for id in 1..=4 {
        client
            .login(login(&format!("user{id}@example.com"), "legacy-password"))
            .await
            .expect("migrates before the database slows down");
    }

    let deadline = Duration::from_millis(1000);
    let (replica, slow) = replica_with_hanging_legacy(&trickle, |config| {
        config.legacy.query_timeout_ms = 5_000;
        config.migration.legacy_timeout_ms = deadline.as_millis() as u64;
        config.migration.legacy_breaker_failures = 0;
    })
    .await;
    let client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect");

    let until = Instant::now() + Duration::from_secs(3);
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut calls = Vec::new();
                while Instant::now() < until {
                    // Workers 0-3 log in migrated users, 4-7 users still in the legacy store.
                    let id = worker + 1;
                    let started = Instant::now();
                    let result = client
                        .login(login(&format!("user{id}@example.com"), "legacy-password"))
                        .await;
                    calls.push((id, started.elapsed(), result.map(|_| ())));
                }
                calls
            })
        })
        .collect();
    let (mut migrated_ok, mut first_refused) = (0, 0);
    let mut slowest_refusal = Duration::ZERO;
    for worker in workers {
        for (id, took, result) in worker.await.expect("worker") {
            if id <= 4 {
                result.unwrap_or_else(|s| panic!("migrated user{id} failed: {s:?}"));
                migrated_ok += 1;
            } else {
                let status = result.expect_err("the legacy database is too slow");
                assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
                slowest_refusal = slowest_refusal.max(took);
                first_refused += 1;
            }
        }
    }
    eprintln!(
        "slow legacy: {migrated_ok} migrated logins ok, {first_refused} first logins refused, \
         slowest refusal {slowest_refusal:?} (deadline {deadline:?})"
    );
    assert!(migrated_ok > 0 && first_refused > 0);
    assert!(
        slowest_refusal < deadline + Duration::from_millis(1500),
        "a first login waited {slowest_refusal:?}, past the {deadline:?} deadline"
    );
    assert_eq!(
        trickle.store.user_count().await,
        4,
        "nothing written for the others"
    );
    slow.task.abort();
}

/// The legacy database hangs: after a run of failures the coordinator stops sending first
/// logins to it (no new connection attempts), migrated users are untouched, and when the
/// database answers again one probe closes the circuit and migration resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_spares_a_dead_legacy_store_and_recovers() {
    let trickle = TestTrickle::start(Backend::PostgresMariaDb).await;
    alice(&trickle, "through-the-looking-glass").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "bob@example.com",
            bcrypt("bob-password"),
        ))
        .await;
    trickle
        .client()
        .await
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("alice migrates");

    let open_for = Duration::from_secs(60);
    let (replica, proxy) = replica_with_hanging_legacy(&trickle, |config| {
        config.legacy.query_timeout_ms = 400;
        config.migration.legacy_timeout_ms = 1500;
        config.migration.legacy_breaker_failures = 2;
        config.migration.legacy_breaker_open_ms = open_for.as_millis() as u64;
    })
    .await;
    let mut client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        replica.frontend.url(),
    )
    .await
    .expect("connect");

    for _ in 0..2 {
        let status = client
            .login(login("bob@example.com", "bob-password"))
            .await
            .expect_err("legacy hangs");
        assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
    }
    let tried = proxy.accepted.load(Ordering::SeqCst);
    assert!(tried >= 1, "the legacy connector tried to connect");
    // Open: the same answer, without a single new connection to the dead database.
    for _ in 0..5 {
        let status = client
            .login(login("bob@example.com", "bob-password"))
            .await
            .expect_err("circuit open");
        assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
        client
            .login(login("alice@example.com", "through-the-looking-glass"))
            .await
            .expect("migrated users are unaffected");
    }
    assert_eq!(
        proxy.accepted.load(Ordering::SeqCst),
        tried,
        "no connection attempts while the circuit is open"
    );
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing written for bob"
    );

    // The database is back; after the pause one probe goes through and closes the circuit.
    proxy.alive.store(true, Ordering::SeqCst);
    trickle.clock.advance(open_for);
    let answer = client
        .login(login("bob@example.com", "bob-password"))
        .await
        .expect("bob migrates once the legacy store is back")
        .into_inner();
    assert!(answer.migrated);
    client
        .sign_up(SignUpRequest {
            email: "new@example.com".into(),
            password: "a fine new password".into(),
            profile: None,
        })
        .await
        .expect("the legacy check works again");
    replica.stop().await.expect("stop");
    proxy.task.abort();
}

/// PostgreSQL drops every connection of the store's database every 40 ms while first logins
/// run: a login that answered success has its user (exactly one row), a login that failed says
/// UNAVAILABLE (retry) rather than anything else, and the services recover without a restart:
/// afterwards everyone logs in and there is still one row per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_connections_dropped_mid_load_lose_nothing_and_recover() {
    let trickle =
        TestTrickle::start_with(Backend::PostgresMariaDb, trickle_tests::generous_deadlines).await;
    const USERS: usize = 48;
    let hash = bcrypt("pass-word");
    let users: Vec<_> = (0..USERS)
        .map(|i| (i as i64 + 1, format!("user{i}@example.com"), hash.clone()))
        .collect();
    trickle.legacy.insert_many(&users).await;
    let database = trickle
        .store
        .database
        .url
        .rsplit('/')
        .next()
        .and_then(|name| name.split('?').next())
        .expect("database name")
        .to_owned();

    let client = trickle.client().await;
    let logins = tokio::spawn(async move {
        let mut answers = Vec::new();
        // Eight at a time: enough to have logins in every stage when the connections drop.
        for chunk in (0..USERS).collect::<Vec<_>>().chunks(8) {
            let batch = chunk.iter().map(|i| {
                let mut client = client.clone();
                async move {
                    let email = format!("user{i}@example.com");
                    let answer = client.login(login(&email, "pass-word")).await;
                    (email, answer)
                }
            });
            answers.extend(futures::future::join_all(batch).await);
        }
        answers
    });
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&trickle_tests::postgres_admin_url())
            .await
            .expect("admin connection");
    let mut terminated = 0;
    while !logins.is_finished() {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&mut admin)
        .await
        .expect("terminate backends");
        terminated += killed.len();
    }
    let answers = logins.await.expect("logins");
    assert!(terminated > 0, "connections were dropped");

    let mut succeeded = 0;
    for (email, answer) in &answers {
        match answer {
            Ok(_) => {
                succeeded += 1;
                let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1")
                    .bind(email.clone())
                    .fetch_one(&trickle.store.pool)
                    .await
                    .expect("count");
                assert_eq!(rows, 1, "{email} logged in: one user row");
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{email}: {status:?}"),
        }
    }
    println!(
        "{terminated} connections terminated; {succeeded} of {USERS} logins succeeded during the faults"
    );

    // Recovered, without a restart: everyone logs in, and nobody was created twice.
    let mut client = trickle.client().await;
    for (email, _) in &answers {
        client
            .login(login(email, "pass-word"))
            .await
            .unwrap_or_else(|status| panic!("{email} after recovery: {status:?}"));
    }
    assert_eq!(trickle.store.user_count().await, USERS as i64);
}

async fn legacy_unreachable_is_unavailable_but_migrated_users_log_in(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    trickle
        .legacy
        .insert(&LegacyRecord::new(
            7,
            "bob@example.com",
            bcrypt("bob-password"),
        ))
        .await;
    trickle
        .client()
        .await
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("alice migrates");

    // A second set of services on the same store, whose legacy database cannot be used.
    // Accepts connections and never answers: a legacy database that hangs.
    let hole = SwitchableProxy::start(String::new(), false).await;
    let query_timeout_ms = 500;
    let broken = trickle
        .second_cluster(|config| {
            config.legacy.database_url = match backend {
                // Accepts the connection and never speaks: the deadline must cut it off.
                Backend::PostgresMariaDb => format!("mysql://root@{}/legacy", hole.addr).into(),
                Backend::Postgres => format!("postgres://postgres@{}/legacy", hole.addr).into(),
                // A file that cannot exist.
                Backend::Sqlite => "sqlite:///nonexistent-directory/legacy.db?mode=ro".into(),
            };
            config.legacy.query_timeout_ms = query_timeout_ms;
            config.migration.legacy_timeout_ms = 2000;
        })
        .await;
    let mut client = trickle_proto::auth::v1::auth_service_client::AuthServiceClient::connect(
        broken.frontend.url(),
    )
    .await
    .expect("connect");

    let started = Instant::now();
    let status = client
        .login(login("bob@example.com", "bob-password"))
        .await
        .expect_err("legacy is down");
    let waited = started.elapsed();
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
    // The legacy deadline is 2 s (coordinator) / 0.5 s (query); a hang would take far longer.
    assert!(
        waited < Duration::from_millis(2000 + 1500),
        "answered after {waited:?}"
    );
    assert_eq!(
        trickle.store.user_count().await,
        1,
        "nothing written for bob"
    );

    for _ in 0..3 {
        let ok = client
            .login(login("alice@example.com", "through-the-looking-glass"))
            .await
            .expect("migrated users are unaffected");
        assert!(!ok.into_inner().migrated);
    }
    // Signing up cannot rule out a legacy account either: refuse rather than risk a duplicate.
    let status = client
        .sign_up(SignUpRequest {
            email: "new@example.com".into(),
            password: "a fine new password".into(),
            profile: None,
        })
        .await
        .expect_err("sign-up needs the legacy check");
    assert_status(&status, Code::Unavailable, reason::LEGACY_UNAVAILABLE);
    broken.stop().await.expect("stop");
    hole.task.abort();
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

async fn tokens_validate_and_reject_tampering(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;
    let response = client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("login")
        .into_inner();
    let user = response.user.expect("user");
    let token = response.access_token;

    let claims = client
        .validate_token(ValidateTokenRequest {
            access_token: token.clone(),
        })
        .await
        .expect("valid token")
        .into_inner()
        .claims
        .expect("claims");
    assert_eq!(claims.sub, user.user_id);
    assert_eq!(
        (claims.email.as_str(), claims.legacy_id.as_str()),
        ("alice@example.com", "4242")
    );
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        ("trickle", "internal")
    );
    assert_eq!(claims.exp - claims.iat, 900);

    let jwks = client
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(
        (
            jwks.keys[0].kty.as_str(),
            jwks.keys[0].crv.as_str(),
            jwks.keys[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );

    // Tampered: one character of the payload changed.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut payload: Vec<char> = parts[1].chars().collect();
    payload[5] = if payload[5] == 'A' { 'B' } else { 'A' };
    parts[1] = payload.into_iter().collect();
    let tampered = parts.join(".");
    // Expired: same key, issued two lifetimes ago.
    let same_key = trickle_auth_frontend::tokens::TokenIssuer::from_pem(
        &trickle.signing_key_pem,
        "trickle",
        "internal",
        Duration::from_secs(900),
    )
    .expect("issuer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let expired = same_key.issue(&user.user_id, &user.email, &user.legacy_id, now - 1800);
    // Wrongly signed: another key, same issuer and audience.
    let other_pem = trickle_auth_frontend::tokens::generate_signing_key_pem().expect("key");
    let other_key = trickle_auth_frontend::tokens::TokenIssuer::from_pem(
        &other_pem,
        "trickle",
        "internal",
        Duration::from_secs(900),
    )
    .expect("issuer");
    let foreign = other_key.issue(&user.user_id, &user.email, &user.legacy_id, now);

    for (token, expected) in [
        (tampered, reason::INVALID_TOKEN),
        (expired, reason::TOKEN_EXPIRED),
        (foreign, reason::INVALID_TOKEN),
        ("garbage".to_owned(), reason::INVALID_TOKEN),
    ] {
        let status = client
            .validate_token(ValidateTokenRequest {
                access_token: token,
            })
            .await
            .expect_err("rejected");
        assert_status(&status, Code::Unauthenticated, expected);
    }
}

async fn bad_input_is_invalid_argument_with_field_violations(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    alice(&trickle, "through-the-looking-glass").await;
    let mut client = trickle.client().await;
    let huge = "p".repeat(1024 * 1024);

    let cases: Vec<(LoginRequest, Vec<&str>)> = vec![
        (login("", "password"), vec!["email"]),
        (login("not-an-email", "password"), vec!["email"]),
        (login("a b@example.com", "password"), vec!["email"]),
        (login("alice@example.com", ""), vec!["password"]),
        (login("alice@example.com", &huge), vec!["password"]),
        // Login takes what sign-up accepts, and no more (1024 bytes).
        (
            login("alice@example.com", &"p".repeat(1025)),
            vec!["password"],
        ),
        (LoginRequest::default(), vec!["email", "password"]),
    ];
    for (request, fields) in cases {
        let status = client.login(request).await.expect_err("invalid");
        assert_status(&status, Code::InvalidArgument, reason::INVALID_REQUEST);
        assert_eq!(violated_fields(&status), fields);
    }
    let status = client
        .sign_up(SignUpRequest::default())
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, reason::INVALID_REQUEST);
    assert_eq!(violated_fields(&status), ["email", "password"]);
    let status = client
        .sign_up(SignUpRequest {
            email: "x@example.com".into(),
            password: "p".repeat(2000),
            profile: None,
        })
        .await
        .expect_err("too long");
    assert_eq!(violated_fields(&status), ["password"]);
    let status = client
        .get_user(GetUserRequest { lookup: None })
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["lookup"]);
    let status = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("@".into())),
        })
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["email"]);
    let status = client
        .validate_token(ValidateTokenRequest::default())
        .await
        .expect_err("invalid");
    assert_eq!(violated_fields(&status), ["access_token"]);
    let status = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::UserId("no-such-user".into())),
        })
        .await
        .expect_err("unknown");
    assert_status(&status, Code::NotFound, reason::USER_NOT_FOUND);

    // Nothing above hurt the service or wrote anything.
    assert_eq!(trickle.store.user_count().await, 0);
    client
        .login(login("alice@example.com", "through-the-looking-glass"))
        .await
        .expect("still serving");
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

//! Each preset against a database created with that app's real schema
//! (tests/fixtures/legacy-apps) and filled with hashes from the reference implementations
//! (tests/vectors): a login migrates, the backfill imports the rest, and the store then
//! verifies them on its own.

use crate::support::{assert_status, login};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle_legacy_connector::presets::Preset;
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};
use trickle_proto::migration::v1::migration_admin_client::MigrationAdminClient;
use trickle_proto::migration::v1::{BackfillState, GetBackfillRequest, StartBackfillRequest};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyDb, TestTrickle};

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize, Clone)]
struct Vector {
    format: String,
    hash: String,
    password: String,
    valid: bool,
    #[serde(default)]
    corrupted: bool,
    salt: Option<String>,
}

/// Right-password vectors of these formats, five at most.
fn vectors(formats: &[&str]) -> Vec<Vector> {
    let all: Vectors =
        serde_json::from_str(include_str!("../../vectors/password-hashes.json")).expect("vectors");
    all.vectors
        .into_iter()
        .filter(|v| v.valid && !v.corrupted && formats.contains(&v.format.as_str()))
        .take(5)
        .collect()
}

struct App {
    preset: Preset,
    backend: Backend,
    ddl: &'static str,
    /// (email as the app stores it, password) of each user inserted.
    users: Vec<(String, String)>,
    /// (email, password) of users the app has disabled: they arrive blocked.
    disabled: Vec<(String, String)>,
    /// The roles the first user arrives with (`app_metadata.roles`).
    first_user_roles: Vec<&'static str>,
    /// (email, password, their authenticator) of users with a second factor in the app,
    /// written where the app keeps it. The first migrates on login, the others by backfill.
    factor_users: Vec<(String, String, Totp)>,
    /// For Laravel: the app's APP_KEY (Fortify's secrets are encrypted with it).
    laravel_app_key: Option<String>,
    inserts: Vec<String>,
}

#[derive(Deserialize)]
struct FactorVectors {
    at: u64,
    django: Vec<DjangoDevice>,
    aspnet_identity: Vec<IdentityKey>,
    wordpress: Vec<WordpressKey>,
    laravel: LaravelFactors,
}

/// A TOTPDevice row as django-otp wrote it.
#[derive(Deserialize)]
struct DjangoDevice {
    key: String,
    step: u32,
    digits: u32,
    t0: i64,
    code_at: String,
}

#[derive(Deserialize)]
struct IdentityKey {
    authenticator_key: String,
    code_at: String,
}

#[derive(Deserialize)]
struct WordpressKey {
    totp_key: String,
    code_at: String,
}

#[derive(Deserialize)]
struct LaravelFactors {
    app_key: String,
    users: Vec<LaravelUser>,
}

/// A Fortify user: the secret, and `two_factor_secret` as Laravel's encrypter wrote it.
#[derive(Deserialize)]
struct LaravelUser {
    secret: String,
    two_factor_secret: String,
}

fn factor_vectors() -> FactorVectors {
    serde_json::from_str(include_str!("../../vectors/totp-factors.json")).expect("factor vectors")
}

fn totp(secret: TotpSecret, digits: u32, period_seconds: u32) -> Totp {
    Totp::new(
        secret,
        TotpParams {
            algorithm: TotpAlgorithm::Sha1,
            digits,
            period_seconds,
        },
    )
    .expect("params")
}

/// The codes django-otp and pyotp computed for the vectors' moment are the codes Trickle
/// computes from the secrets as the apps stored them.
#[test]
fn trickle_computes_the_codes_the_apps_libraries_compute() {
    let v = factor_vectors();
    for device in &v.django {
        assert_eq!(device.t0, 0);
        let factor = totp(
            TotpSecret::from_hex(&device.key).expect("hex key"),
            device.digits,
            device.step,
        );
        assert_eq!(factor.code_at(v.at), device.code_at, "django-otp");
        assert!(factor.verify(&device.code_at, v.at).is_some());
    }
    for key in &v.aspnet_identity {
        let factor = totp(
            TotpSecret::from_base32(&key.authenticator_key).expect("base32"),
            6,
            30,
        );
        assert_eq!(factor.code_at(v.at), key.code_at, "identity");
    }
    for key in &v.wordpress {
        let factor = totp(
            TotpSecret::from_base32(&key.totp_key).expect("base32"),
            6,
            30,
        );
        assert_eq!(factor.code_at(v.at), key.code_at, "wordpress");
    }
}

async fn check(app: App) {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let legacy = LegacyDb::with_schema(app.backend, &dir, app.ddl).await;
    for insert in &app.inserts {
        legacy.execute(insert.clone()).await;
    }
    let preset = app.preset;
    let app_key = app.laravel_app_key.clone().unwrap_or_default();
    let mut trickle = TestTrickle::start_with_legacy(app.backend, dir, legacy, |config| {
        config.legacy.laravel_app_key.0 = app_key;
        config.legacy.preset = Some(preset);
        // Django apps have django-otp's table only when they use it: opted in here. The
        // other presets read factors by default (Laravel: when the APP_KEY is given).
        if preset == Preset::Django {
            config.legacy.preset_factors = Some(true);
        }
        config.legacy.find_user = String::new();
        config.legacy.count_users = String::new();
        config.legacy.list_users = String::new();
    })
    .await;
    let mut client = trickle.client().await;

    // The first user migrates on login, typed in lower case.
    let (email, password) = &app.users[0];
    let wrong = client
        .login(login(&email.to_lowercase(), &format!("{password}?")))
        .await
        .expect_err("wrong password");
    assert_status(&wrong, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    let first = client
        .login(login(&email.to_lowercase(), password))
        .await
        .unwrap_or_else(|e| panic!("{preset:?} login: {e:?}"))
        .into_inner();
    assert!(first.migrated, "{preset:?}");
    assert_eq!(
        crate::support::roles_of(&first.user.expect("user")),
        app.first_user_roles,
        "{preset:?}: roles"
    );

    // A user with a second factor in the app: the right password moves nothing; a code from
    // the factor the app stored moves them with it.
    let migrated_with_factor = match app.factor_users.first() {
        Some((email, password, factor)) => {
            let before = trickle.store.user_count().await;
            let challenge = crate::mfa::challenge_of(&mut client, email, password).await;
            assert_eq!(trickle.store.user_count().await, before, "{preset:?}");
            let code = factor.code_at(crate::mfa::now(&trickle));
            let answer = crate::mfa::verify(&mut client, &challenge, &code)
                .await
                .unwrap_or_else(|e| panic!("{preset:?}: the app's factor: {e:?}"));
            assert!(answer.migrated && answer.user.expect("user").mfa_enrolled);
            1
        }
        None => 0,
    };

    // The backfill takes the others, with their legacy hashes.
    let mut admin = MigrationAdminClient::connect(trickle.cluster.coordinator.admin_url())
        .await
        .expect("admin");
    let job = admin
        .start_backfill(StartBackfillRequest { batch_size: 2 })
        .await
        .expect("start")
        .into_inner()
        .backfill
        .expect("job");
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let b = admin
            .get_backfill(GetBackfillRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("status")
            .into_inner()
            .backfill
            .expect("job");
        if b.state != i32::from(BackfillState::Running) {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "{preset:?}: backfill did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done.state,
        i32::from(BackfillState::Completed),
        "{preset:?}: {done:?}"
    );
    let migrated = 1 + migrated_with_factor;
    let others =
        i64::try_from(app.users.len() + app.disabled.len() + app.factor_users.len() - migrated)
            .expect("count");
    let migrated = i64::try_from(migrated).expect("count");
    assert_eq!(
        (done.imported, done.skipped_existing, done.unsupported),
        (others, migrated, 0),
        "{preset:?}: {done:?}"
    );
    assert_eq!(
        done.legacy_users_total,
        Some(others + migrated),
        "{preset:?}: count_users"
    );

    // Without the legacy store, every backfilled user logs in with the legacy password.
    trickle.cluster.stop_legacy_connector().await.expect("stop");
    for (email, password) in &app.users[1..] {
        let answer = client
            .login(login(email, password))
            .await
            .unwrap_or_else(|e| panic!("{preset:?} {email}: {e:?}"))
            .into_inner();
        assert!(
            !answer.mfa_required && answer.user.is_some(),
            "{preset:?} {email}: logged in on the password (no second factor in the app)"
        );
    }
    // Backfilled users with a factor brought it: the password alone is not a login.
    for (email, password, factor) in app.factor_users.iter().skip(1) {
        let challenge = crate::mfa::challenge_of(&mut client, email, password).await;
        crate::mfa::verify(
            &mut client,
            &challenge,
            &factor.code_at(crate::mfa::now(&trickle)),
        )
        .await
        .unwrap_or_else(|e| panic!("{preset:?} {email}: {e:?}"));
    }
    // Accounts the app disabled came along, blocked: the right password says so, a wrong one
    // does not.
    for (email, password) in &app.disabled {
        let status = client
            .login(login(email, password))
            .await
            .expect_err("a disabled account");
        assert_status(&status, Code::PermissionDenied, reason::USER_BLOCKED);
        let status = client
            .login(login(email, &format!("{password}?")))
            .await
            .expect_err("a wrong password");
        assert_status(&status, Code::Unauthenticated, reason::INVALID_CREDENTIALS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_on_mariadb() {
    let v = vectors(&["phpass", "wordpress_bcrypt", "bcrypt"]);
    let mut users = Vec::new();
    let mut inserts = Vec::new();
    for (i, v) in v.iter().enumerate() {
        let email = format!("WPUser{i}@Example.com");
        inserts.push(format!(
            "INSERT INTO wp_users (user_login, user_pass, user_nicename, user_email, display_name) \
             VALUES ('wpuser{i}', '{}', 'wpuser{i}', '{email}', 'WP User {i}')",
            v.hash
        ));
        users.push((email, v.password.clone()));
    }
    // Roles as WordPress keeps them: a PHP-serialized array of flags in wp_capabilities.
    inserts.push(
        "INSERT INTO wp_usermeta (user_id, meta_key, meta_value) SELECT ID, 'wp_capabilities', \
         'a:2:{s:13:\"administrator\";b:1;s:6:\"editor\";b:0;}' FROM wp_users WHERE user_login = 'wpuser0'"
            .into(),
    );
    // The Two Factor plugin's user meta: a TOTP key, used while TOTP is an enabled provider
    // (a PHP-serialized array, as the plugin writes it).
    let mut factor_users = Vec::new();
    let enabled = |login: &str, provider: &str| {
        format!(
            "INSERT INTO wp_usermeta (user_id, meta_key, meta_value) SELECT ID, '_two_factor_enabled_providers', \
             'a:1:{{i:0;s:{}:\"{provider}\";}}' FROM wp_users WHERE user_login = '{login}'",
            provider.len()
        )
    };
    let key = |login: &str, key: &str| {
        format!(
            "INSERT INTO wp_usermeta (user_id, meta_key, meta_value) SELECT ID, '_two_factor_totp_key', '{key}' \
             FROM wp_users WHERE user_login = '{login}'"
        )
    };
    for (i, wp) in factor_vectors().wordpress.iter().enumerate() {
        let (login, email) = (format!("wptotp{i}"), format!("WPTotp{i}@Example.com"));
        inserts.push(format!(
            "INSERT INTO wp_users (user_login, user_pass, user_nicename, user_email, display_name) \
             VALUES ('{login}', '{}', '{login}', '{email}', 'WP TOTP {i}')",
            v[0].hash
        ));
        inserts.push(key(&login, &wp.totp_key));
        inserts.push(enabled(&login, "Two_Factor_Totp"));
        let factor = totp(TotpSecret::from_base32(&wp.totp_key).expect("key"), 6, 30);
        factor_users.push((email, v[0].password.clone(), factor));
    }
    // A key left behind while only email codes are enabled is not a factor.
    inserts.push(format!(
        "INSERT INTO wp_users (user_login, user_pass, user_nicename, user_email, display_name) \
         VALUES ('wpemail', '{}', 'wpemail', 'WPEmail@Example.com', 'WP Email')",
        v[0].hash
    ));
    inserts.push(key("wpemail", &factor_vectors().wordpress[0].totp_key));
    inserts.push(enabled("wpemail", "Two_Factor_Email"));
    users.push(("WPEmail@Example.com".to_owned(), v[0].password.clone()));
    check(App {
        preset: Preset::Wordpress,
        backend: Backend::PostgresMariaDb,
        ddl: include_str!("../../fixtures/legacy-apps/wordpress.mysql.sql"),
        users,
        disabled: Vec::new(),
        first_user_roles: vec!["administrator"],
        factor_users,
        laravel_app_key: None,
        inserts,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_on_postgresql() {
    let v = vectors(&[
        "django_pbkdf2_sha256",
        "django_pbkdf2_sha1",
        "django_bcrypt_sha256",
        "django_argon2",
    ]);
    let mut users = Vec::new();
    let mut inserts = Vec::new();
    for (i, v) in v.iter().enumerate() {
        let email = format!("django{i}@Example.com");
        inserts.push(format!(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) \
             VALUES ('{}', false, 'django{i}', 'Django', 'User {i}', '{email}', false, true, now())",
            v.hash
        ));
        users.push((email, v.password.clone()));
    }
    // An account the site deactivated (is_active = false).
    inserts.push(format!(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) \
         VALUES ('{}', false, 'gone', 'Gone', 'User', 'Gone@Example.com', false, false, now())",
        v[0].hash
    ));
    // The first user is in a group and is staff: both become roles.
    inserts.push("INSERT INTO auth_group (name) VALUES ('editors')".into());
    inserts.push(
        "INSERT INTO auth_user_groups (user_id, group_id) \
         SELECT u.id, g.id FROM auth_user u, auth_group g WHERE u.username = 'django0' AND g.name = 'editors'"
            .into(),
    );
    inserts.push("UPDATE auth_user SET is_staff = true WHERE username = 'django0'".into());
    let disabled = vec![("Gone@Example.com".to_owned(), v[0].password.clone())];
    // django-otp devices, as django-otp wrote them: confirmed ones are factors.
    let mut factor_users = Vec::new();
    let device = |username: &str, d: &DjangoDevice, confirmed: bool| {
        format!(
            "INSERT INTO otp_totp_totpdevice (name, confirmed, key, step, t0, digits, tolerance, drift, last_t, \
             user_id, throttling_failure_count) SELECT 'default', {confirmed}, '{}', {}, {}, {}, 1, 0, -1, id, 0 \
             FROM auth_user WHERE username = '{username}'",
            d.key, d.step, d.t0, d.digits
        )
    };
    let devices = factor_vectors().django;
    for (i, d) in devices.iter().enumerate() {
        let (username, email) = (format!("otp{i}"), format!("Otp{i}@Example.com"));
        inserts.push(format!(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) \
             VALUES ('{}', false, '{username}', 'OTP', 'User {i}', '{email}', false, true, now())",
            v[0].hash
        ));
        inserts.push(device(&username, d, true));
        let factor = totp(TotpSecret::from_hex(&d.key).expect("hex"), d.digits, d.step);
        factor_users.push((email, v[0].password.clone(), factor));
    }
    // A device never confirmed is not a factor.
    inserts.push(format!(
        "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, is_active, date_joined) \
         VALUES ('{}', false, 'pending', 'Pending', 'Device', 'Pending@Example.com', false, true, now())",
        v[0].hash
    ));
    inserts.push(device("pending", &devices[0], false));
    users.push(("Pending@Example.com".to_owned(), v[0].password.clone()));
    check(App {
        preset: Preset::Django,
        backend: Backend::Postgres,
        ddl: include_str!("../../fixtures/legacy-apps/django.postgres.sql"),
        users,
        disabled,
        first_user_roles: vec!["editors", "staff"],
        factor_users,
        laravel_app_key: None,
        inserts,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laravel_on_mariadb() {
    let v = vectors(&["bcrypt"]);
    let mut users = Vec::new();
    let mut inserts = Vec::new();
    for (i, v) in v.iter().enumerate() {
        let email = format!("laravel{i}@example.com");
        let verified = if i % 2 == 0 { "NOW()" } else { "NULL" };
        inserts.push(format!(
            "INSERT INTO users (name, email, email_verified_at, password) VALUES ('Laravel {i}', '{email}', {verified}, '{}')",
            v.hash
        ));
        users.push((email, v.password.clone()));
    }
    check(App {
        preset: Preset::Laravel,
        backend: Backend::PostgresMariaDb,
        ddl: include_str!("../../fixtures/legacy-apps/laravel.mysql.sql"),
        users: users.clone(),
        disabled: Vec::new(),
        first_user_roles: Vec::new(),
        factor_users: Vec::new(),
        laravel_app_key: None,
        inserts: inserts.clone(),
    })
    .await;
    // With the app's APP_KEY, Fortify's second factors come along (encrypted as Laravel
    // encrypts them).
    let fortify = factor_vectors().laravel;
    let mut factor_users = Vec::new();
    for (i, user) in fortify.users.iter().enumerate() {
        let email = format!("fortify{i}@example.com");
        inserts.push(format!(
            "INSERT INTO users (name, email, password, two_factor_secret, two_factor_confirmed_at) \
             VALUES ('Fortify {i}', '{email}', '{}', '{}', NOW())",
            v[0].hash, user.two_factor_secret
        ));
        let factor = totp(
            TotpSecret::from_base32(&user.secret).expect("base32"),
            6,
            30,
        );
        factor_users.push((email, v[0].password.clone(), factor));
    }
    check(App {
        preset: Preset::Laravel,
        backend: Backend::PostgresMariaDb,
        ddl: include_str!("../../fixtures/legacy-apps/laravel.mysql.sql"),
        users,
        disabled: Vec::new(),
        first_user_roles: Vec::new(),
        factor_users,
        laravel_app_key: Some(fortify.app_key),
        inserts,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aspnet_identity_on_postgresql() {
    let v = vectors(&["aspnet_identity"]);
    let mut users = Vec::new();
    let mut inserts = Vec::new();
    for (i, v) in v.iter().enumerate() {
        let email = format!("Identity{i}@Example.com");
        inserts.push(format!(
            "INSERT INTO \"AspNetUsers\" (\"Id\", \"UserName\", \"NormalizedUserName\", \"Email\", \"NormalizedEmail\", \
             \"EmailConfirmed\", \"PasswordHash\", \"PhoneNumberConfirmed\", \"TwoFactorEnabled\", \"LockoutEnabled\", \"AccessFailedCount\") \
             VALUES ('{}', 'identity{i}', 'IDENTITY{i}', '{email}', '{}', {}, '{}', false, false, true, 0)",
            uuid::Uuid::now_v7(),
            email.to_uppercase(),
            i % 2 == 0,
            v.hash
        ));
        users.push((email, v.password.clone()));
    }
    inserts.push(
        "INSERT INTO \"AspNetRoles\" (\"Id\", \"Name\", \"NormalizedName\") VALUES ('r1', 'Admin', 'ADMIN')".into(),
    );
    inserts.push(
        "INSERT INTO \"AspNetUserRoles\" (\"UserId\", \"RoleId\") \
         SELECT \"Id\", 'r1' FROM \"AspNetUsers\" WHERE \"UserName\" = 'identity0'"
            .into(),
    );
    // Authenticator keys where Identity keeps them, for users with TwoFactorEnabled.
    let mut factor_users = Vec::new();
    let user = |name: &str, email: &str, two_factor: bool| {
        format!(
            "INSERT INTO \"AspNetUsers\" (\"Id\", \"UserName\", \"NormalizedUserName\", \"Email\", \"NormalizedEmail\", \
             \"EmailConfirmed\", \"PasswordHash\", \"PhoneNumberConfirmed\", \"TwoFactorEnabled\", \"LockoutEnabled\", \"AccessFailedCount\") \
             VALUES ('{name}', '{name}', '{}', '{email}', '{}', true, '{}', false, {two_factor}, true, 0)",
            name.to_uppercase(),
            email.to_uppercase(),
            v[0].hash
        )
    };
    let token = |name: &str, key: &str| {
        format!(
            "INSERT INTO \"AspNetUserTokens\" (\"UserId\", \"LoginProvider\", \"Name\", \"Value\") \
             VALUES ('{name}', '[AspNetUserStore]', 'AuthenticatorKey', '{key}')"
        )
    };
    let keys = factor_vectors().aspnet_identity;
    for (i, k) in keys.iter().enumerate() {
        let (name, email) = (format!("totp{i}"), format!("Totp{i}@Example.com"));
        inserts.push(user(&name, &email, true));
        inserts.push(token(&name, &k.authenticator_key));
        let factor = totp(
            TotpSecret::from_base32(&k.authenticator_key).expect("key"),
            6,
            30,
        );
        factor_users.push((email, v[0].password.clone(), factor));
    }
    // A key set up once, with two-factor sign-in turned off since, is not a factor.
    inserts.push(user("off", "Off@Example.com", false));
    inserts.push(token("off", &keys[0].authenticator_key));
    users.push(("Off@Example.com".to_owned(), v[0].password.clone()));
    check(App {
        preset: Preset::AspnetIdentity,
        backend: Backend::Postgres,
        ddl: include_str!("../../fixtures/legacy-apps/aspnet-identity.postgres.sql"),
        users,
        disabled: Vec::new(),
        first_user_roles: vec!["Admin"],
        factor_users,
        laravel_app_key: None,
        inserts,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aspnet_membership_on_mariadb() {
    let v = vectors(&["aspnet_membership_sha1"]);
    let mut users = Vec::new();
    let mut inserts = Vec::new();
    let app = uuid::Uuid::now_v7();
    for (i, v) in v.iter().enumerate() {
        let id = uuid::Uuid::now_v7();
        let email = format!("Member{i}@Example.com");
        inserts.push(format!(
            "INSERT INTO aspnet_Users (ApplicationId, UserId, UserName, LoweredUserName, LastActivityDate) \
             VALUES ('{app}', '{id}', 'member{i}', 'member{i}', NOW())"
        ));
        inserts.push(format!(
            "INSERT INTO aspnet_Membership (ApplicationId, UserId, Password, PasswordFormat, PasswordSalt, Email, LoweredEmail, \
             IsApproved, IsLockedOut, CreateDate, LastLoginDate, LastPasswordChangedDate, LastLockoutDate, \
             FailedPasswordAttemptCount, FailedPasswordAttemptWindowStart, FailedPasswordAnswerAttemptCount, \
             FailedPasswordAnswerAttemptWindowStart) \
             VALUES ('{app}', '{id}', '{}', 1, '{}', '{email}', '{}', 1, 0, NOW(), NOW(), NOW(), NOW(), 0, NOW(), 0, NOW())",
            v.hash,
            v.salt.as_deref().expect("membership vectors carry a salt"),
            email.to_lowercase()
        ));
        users.push((email, v.password.clone()));
    }
    check(App {
        preset: Preset::AspnetMembership,
        backend: Backend::PostgresMariaDb,
        ddl: include_str!("../../fixtures/legacy-apps/aspnet-membership.mysql.sql"),
        users,
        disabled: Vec::new(),
        first_user_roles: Vec::new(),
        factor_users: Vec::new(),
        laravel_app_key: None,
        inserts,
    })
    .await;
}

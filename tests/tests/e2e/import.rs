//! Imports from export files (`trickle admin import`), on both backends: file → import →
//! login with the original password → re-hashed to argon2id → a second import skips
//! everyone; and an import broken off half-way resumes without a duplicate or a gap.
//!
//! The files are `tests/vectors/auth0-users.ndjson` and `trickle-users.jsonl`, made by
//! `tests/vectors/generate_imports.py` with Python's hashlib/hmac, `bcrypt` and argon2-cffi.

use crate::support::{assert_status, login_refused, roles_of, strings};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::Code;
use trickle::admin::{AdminCommand, FirebaseArgs, run};
use trickle::import::ImportFormat;
use trickle_proto::legacy::v1::{HashStatus, LegacyUser, LegacyUserRecord};
use trickle_proto::migration::v1::{GetImportRequest, ImportUsersRequest};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(
    an_auth0_export_imports_every_supported_hash_and_a_second_import_skips_everyone,
    a_trickle_jsonl_file_imports_with_factors_roles_and_an_unreadable_line_listed,
    an_import_broken_off_resumes_where_it_stopped,
    a_firebase_export_imports_with_the_projects_scrypt_parameters,
    firebase_files_of_every_other_hash_algo_import_with_their_flags,
    a_keycloak_realm_export_imports_passwords_roles_and_totp_factors,
);

async fn a_keycloak_realm_export_imports_passwords_roles_and_totp_factors(backend: Backend) {
    use crate::mfa::{challenge_of, now, verify};
    use trickle_password::totp::{Totp, TotpParams, TotpSecret};
    let trickle = TestTrickle::start(backend).await;
    let passwords: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(vector("keycloak-realm.passwords.json")).expect("passwords"),
    )
    .expect("JSON");
    let summary = import(&trickle, ImportFormat::Keycloak, "keycloak-realm.json").await;
    assert_eq!(summary["records"], 7, "{summary}");
    assert_eq!(summary["imported"], 5, "{summary}");
    assert_eq!(summary["unsupported"], 2, "{summary}");
    let listed = summary["unsupported_users"].to_string();
    assert!(
        listed.contains("HOTP") && listed.contains("kc-07"),
        "{listed}"
    );

    let mut client = trickle.client().await;
    for n in [2, 3, 4] {
        let email = format!("keycloak-{n}@example.com");
        login_refused(
            &mut client,
            &email,
            "not it",
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
        let user = trickle
            .login_ok(&email, &passwords[&email])
            .await
            .user
            .expect("user");
        assert_eq!(
            user.profile.expect("profile").family_name,
            format!("Cloak {n}")
        );
        assert!(
            trickle
                .store
                .password_hash(&email)
                .await
                .starts_with("$argon2id$"),
            "{email}: re-hashed"
        );
    }
    login_refused(
        &mut client,
        "keycloak-5@example.com",
        &passwords["keycloak-5@example.com"],
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;
    // The OTP credential moved as a TOTP factor: its key is the secret's UTF-8 bytes.
    let challenge = challenge_of(
        &mut client,
        "keycloak-1@example.com",
        &passwords["keycloak-1@example.com"],
    )
    .await;
    let factor = Totp::new(
        TotpSecret::from_bytes(b"abcdefghijABCDEFGHIJ".to_vec()).expect("secret"),
        TotpParams::default(),
    )
    .expect("factor");
    let answer = verify(&mut client, &challenge, &factor.code_at(now(&trickle)))
        .await
        .expect("the Keycloak code is accepted");
    let user = answer.user.expect("user");
    assert_eq!(roles_of(&user), ["default-roles-demo", "admin"]);
}

/// The parameters Firebase publishes with its scrypt, which the vector file was made under.
fn firebase_parameters() -> FirebaseArgs {
    FirebaseArgs {
        hash_key: Some(
            "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA=="
                .into(),
        ),
        salt_separator: Some("Bw==".into()),
        rounds: Some(8),
        mem_cost: Some(14),
        ..FirebaseArgs::default()
    }
}

async fn a_firebase_export_imports_with_the_projects_scrypt_parameters(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    // Without the parameters nothing can be verified: a dry run says so, and writes nothing.
    let dry = run(
        &trickle.cluster.coordinator.admin_url(),
        AdminCommand::Import {
            format: ImportFormat::Firebase,
            file: vector("firebase-users.json"),
            dry_run: true,
            batch_size: 1000,
            import_id: None,
            firebase: FirebaseArgs::default(),
        },
        true,
    )
    .await
    .expect("dry run");
    let dry: serde_json::Value = serde_json::from_str(&dry).expect("JSON");
    assert_eq!(dry["would_import_at_most"], 0, "{dry}");
    assert_eq!(trickle.store.user_count().await, 0);

    let summary = import_with(
        &trickle,
        ImportFormat::Firebase,
        "firebase-users.json",
        firebase_parameters(),
    )
    .await;
    assert_eq!(summary["imported"], 3, "{summary}");
    assert_eq!(summary["unsupported"], 1, "{summary}");
    assert_eq!(
        summary["unsupported_users"][0]["legacy_id"], "fb-uid-4",
        "{summary}"
    );

    // Firebase's own published vector, then users hashed by the generator.
    let mut client = trickle.client().await;
    login_refused(
        &mut client,
        "user1@example.com",
        "user2password",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
    let one = trickle
        .login_ok("user1@example.com", "user1password")
        .await
        .user
        .expect("user");
    assert_eq!(one.legacy_id, "published-vector");
    assert!(
        trickle
            .store
            .password_hash("user1@example.com")
            .await
            .starts_with("$argon2id$"),
        "re-hashed at login"
    );
    let two = trickle
        .login_ok("firebase-2@example.com", "firebase password 2")
        .await
        .user
        .expect("user");
    assert_eq!(
        roles_of(&two),
        ["ops"],
        "customAttributes land in app_metadata"
    );
    login_refused(
        &mut client,
        "firebase-3@example.com",
        "firebase password 3",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;

    // Some of the parameters but not all is a mistake, said before anything is read.
    let partial = run(
        &trickle.cluster.coordinator.admin_url(),
        AdminCommand::Import {
            format: ImportFormat::Firebase,
            file: vector("firebase-users.json"),
            dry_run: false,
            batch_size: 1000,
            import_id: None,
            firebase: FirebaseArgs {
                rounds: None,
                ..firebase_parameters()
            },
        },
        true,
    )
    .await
    .expect_err("incomplete parameters");
    assert!(partial.to_string().contains("all four"), "{partial}");
}

/// Files written for `firebase auth:import` with each other `--hash-algo`, imported with the
/// same flags (tests/vectors/firebase-algorithms/flags.json), then each user logs in with
/// their password and is re-hashed to argon2id.
async fn firebase_files_of_every_other_hash_algo_import_with_their_flags(backend: Backend) {
    use clap::ValueEnum as _;
    use trickle::import::{FirebaseAlgorithm, HashInputOrder};
    let trickle = TestTrickle::start(backend).await;
    let cases: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(vector("firebase-algorithms/flags.json")).expect("flags"),
    )
    .expect("JSON");
    assert_eq!(cases.len(), 12, "every algorithm but SCRYPT");
    let mut client = trickle.client().await;
    for (algorithm, case) in &cases {
        let flags = &case["flags"];
        let text = |key: &str| flags[key].as_str().map(str::to_owned);
        let number = |key: &str| flags[key].as_u64().map(|n| u32::try_from(n).expect("u32"));
        let args = FirebaseArgs {
            hash_algo: Some(FirebaseAlgorithm::from_str(algorithm, false).expect("algorithm")),
            hash_key: text("hash_key"),
            salt_separator: text("salt_separator"),
            rounds: number("rounds"),
            mem_cost: number("mem_cost"),
            block_size: number("block_size"),
            parallelization: number("parallelization"),
            dk_len: number("dk_len"),
            hash_input_order: text("hash_input_order")
                .map(|order| HashInputOrder::from_str(&order, false).expect("order")),
        };
        let summary = import_with(
            &trickle,
            ImportFormat::Firebase,
            &format!("firebase-algorithms/{algorithm}.json"),
            args,
        )
        .await;
        assert_eq!(summary["imported"], 2, "{algorithm}: {summary}");
        for (n, (email, password)) in case["passwords"]
            .as_object()
            .expect("passwords")
            .iter()
            .enumerate()
        {
            if n == 0 {
                login_refused(
                    &mut client,
                    email,
                    "not the password",
                    Code::Unauthenticated,
                    reason::INVALID_CREDENTIALS,
                )
                .await;
            }
            trickle
                .login_ok(email, password.as_str().expect("password"))
                .await;
            assert!(
                trickle
                    .store
                    .password_hash(email)
                    .await
                    .starts_with("$argon2id$"),
                "{algorithm}: re-hashed at login"
            );
        }
    }

    // Flags that do not fit the algorithm stop the import before anything is read.
    for (args, expected) in [
        (
            FirebaseArgs {
                hash_algo: Some(FirebaseAlgorithm::Md5),
                rounds: Some(2),
                hash_input_order: Some(HashInputOrder::SaltFirst),
                ..FirebaseArgs::default()
            },
            "only single digests",
        ),
        (
            FirebaseArgs {
                hash_algo: Some(FirebaseAlgorithm::HmacSha256),
                hash_key: Some("a2V5".into()),
                ..FirebaseArgs::default()
            },
            "does not guess",
        ),
        (
            FirebaseArgs {
                hash_algo: Some(FirebaseAlgorithm::Bcrypt),
                mem_cost: Some(14),
                ..FirebaseArgs::default()
            },
            "--mem-cost is not used by --hash-algo BCRYPT",
        ),
    ] {
        let refused = run(
            &trickle.cluster.coordinator.admin_url(),
            AdminCommand::Import {
                format: ImportFormat::Firebase,
                file: vector("firebase-algorithms/MD5.json"),
                dry_run: false,
                batch_size: 100,
                import_id: None,
                firebase: args,
            },
            true,
        )
        .await
        .expect_err("refused");
        assert!(refused.to_string().contains(expected), "{refused}");
    }
}

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name)
}

async fn import(trickle: &TestTrickle, format: ImportFormat, file: &str) -> serde_json::Value {
    import_with(trickle, format, file, FirebaseArgs::default()).await
}

async fn import_with(
    trickle: &TestTrickle,
    format: ImportFormat,
    file: &str,
    firebase: FirebaseArgs,
) -> serde_json::Value {
    let printed = run(
        &trickle.cluster.coordinator.admin_url(),
        AdminCommand::Import {
            format,
            file: vector(file),
            dry_run: false,
            batch_size: 4,
            import_id: None,
            firebase,
        },
        true,
    )
    .await
    .expect("import");
    serde_json::from_str(&printed).expect("JSON summary")
}

async fn an_auth0_export_imports_every_supported_hash_and_a_second_import_skips_everyone(
    backend: Backend,
) {
    let trickle = TestTrickle::start(backend).await;
    let users: Vec<serde_json::Value> = std::fs::read_to_string(vector("auth0-users.ndjson"))
        .expect("vector file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();

    let first = import(&trickle, ImportFormat::Auth0, "auth0-users.ndjson").await;
    assert_eq!(first["state"], "completed", "{first}");
    assert_eq!(first["records"], 23, "{first}");
    assert_eq!(first["imported"], 21, "{first}");
    assert_eq!(first["unsupported"], 2, "{first}");
    let not_imported: Vec<String> = first["unsupported_users"]
        .as_array()
        .expect("listed")
        .iter()
        .map(|u| format!("{} {}", u["legacy_id"], u["reason"]))
        .collect();
    assert!(
        not_imported[0].contains("auth0|0015") && not_imported[0].contains("crc32"),
        "{not_imported:?}"
    );
    assert!(not_imported[1].contains("auth0|0016"), "{not_imported:?}");
    assert_eq!(trickle.store.user_count().await, 21);
    assert_eq!(
        trickle.store.migration_event_count().await,
        21,
        "one ledger entry per imported user"
    );

    let mut client = trickle.client().await;
    // 1-12: each documented algorithm; 17-23: md4, the HMACs over md4, sha224, sha384,
    // ripemd160 and whirlpool, and a Latin-1 password.
    for user in users[..12].iter().chain(&users[16..]) {
        let email = user["email"].as_str().expect("email");
        let password = user["x_test_password"].as_str().expect("password");
        let before = trickle.store.password_hash(email).await;
        login_refused(
            &mut client,
            email,
            "not the password",
            Code::Unauthenticated,
            reason::INVALID_CREDENTIALS,
        )
        .await;
        let answer = trickle.login_ok(email, password).await;
        let logged_in = answer.user.expect("user");
        assert_eq!(logged_in.legacy_id, user["user_id"].as_str().expect("id"));
        let after = trickle.store.password_hash(email).await;
        let algorithm = user["custom_password_hash"]["algorithm"].as_str();
        assert!(
            after.starts_with("$argon2id$") && (before != after || algorithm == Some("argon2")),
            "{email} ({algorithm:?}): re-hashed at login, got {}",
            &after[..after.len().min(12)]
        );
        // And the argon2id hash works on the next login.
        trickle.login_ok(email, password).await;
    }
    let first_user = trickle
        .login_ok("auth0-1@example.com", "correct horse 1")
        .await
        .user
        .expect("user");
    assert_eq!(roles_of(&first_user), ["editor"]);
    let profile = first_user.profile.expect("profile");
    assert_eq!(profile.given_name, "Imported");
    assert_eq!(
        strings(
            profile
                .user_metadata
                .as_ref()
                .and_then(|m| m.fields.get("theme"))
        ),
        ["dark"]
    );
    // The factor came with the user: a code is asked for; the block came too.
    let factor = trickle
        .login_ok("auth0-13@example.com", "correct horse 13")
        .await;
    assert!(factor.mfa_required && factor.user.is_none(), "{factor:?}");
    login_refused(
        &mut client,
        "auth0-14@example.com",
        "correct horse 14",
        Code::PermissionDenied,
        reason::USER_BLOCKED,
    )
    .await;

    let again = import(&trickle, ImportFormat::Auth0, "auth0-users.ndjson").await;
    assert_eq!(again["state"], "completed", "{again}");
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["skipped_existing"], 21, "{again}");
    assert_eq!(trickle.store.user_count().await, 21);
}

async fn a_trickle_jsonl_file_imports_with_factors_roles_and_an_unreadable_line_listed(
    backend: Backend,
) {
    let trickle = TestTrickle::start(backend).await;
    let passwords: std::collections::BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(vector("trickle-users.passwords.json")).expect("passwords"),
    )
    .expect("JSON");
    // A deleted user is not brought back by an import.
    trickle
        .legacy_user(4, "line-4@example.com", "line password 4")
        .await;
    let deleted = trickle
        .login_ok("line-4@example.com", "line password 4")
        .await;
    trickle
        .client()
        .await
        .delete_user(trickle_proto::auth::v1::DeleteUserRequest {
            user_id: deleted.user.expect("user").user_id,
        })
        .await
        .expect("delete");

    let summary = import(&trickle, ImportFormat::Jsonl, "trickle-users.jsonl").await;
    assert_eq!(summary["records"], 5, "{summary}");
    assert_eq!(summary["imported"], 3, "{summary}");
    assert_eq!(summary["skipped_tombstoned"], 1, "{summary}");
    assert_eq!(summary["unsupported"], 1, "{summary}");
    assert_eq!(
        summary["unsupported_users"][0]["legacy_id"], "line 3",
        "{summary}"
    );

    let one = trickle
        .login_ok("line-1@example.com", &passwords["1"])
        .await
        .user
        .expect("user");
    assert_eq!(roles_of(&one), ["admin"]);
    assert!(one.email_verified);
    trickle
        .login_ok("line-2@example.com", &passwords["2"])
        .await
        .user
        .expect("django pbkdf2");
    assert!(
        trickle
            .store
            .password_hash("line-2@example.com")
            .await
            .starts_with("$argon2id$")
    );
    let three = trickle
        .login_ok("line-3@example.com", &passwords["3"])
        .await;
    assert!(
        three.mfa_required,
        "the factor moved with the user: {three:?}"
    );
    login_refused(
        &mut trickle.client().await,
        "line-4@example.com",
        "line password 4",
        Code::Unauthenticated,
        reason::INVALID_CREDENTIALS,
    )
    .await;
}

fn imported_user(n: usize, hash: &str) -> LegacyUserRecord {
    LegacyUserRecord {
        user: Some(LegacyUser {
            legacy_id: format!("r{n:03}"),
            email: format!("resume-{n}@example.com"),
            ..Default::default()
        }),
        password_hash: hash.to_owned(),
        hash_scheme: "bcrypt".into(),
        unsupported_reason: String::new(),
        hash_status: HashStatus::Portable.into(),
    }
}

fn page(first: usize, hash: &str) -> ImportUsersRequest {
    ImportUsersRequest {
        import_id: "test:resume".into(),
        format: "jsonl".into(),
        first_position: i64::try_from(first).expect("small"),
        users: (first..first + 10)
            .map(|n| imported_user(n, hash))
            .collect(),
        unsupported: Vec::new(),
        last_page: false,
    }
}

async fn an_import_broken_off_resumes_where_it_stopped(backend: Backend) {
    let trickle = TestTrickle::start(backend).await;
    let hash = trickle_password::legacy_formats::bcrypt("resume password", 4).expect("bcrypt");
    // A run that sends two pages of ten and then breaks off (the client goes away).
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(page(0, &hash)).await.expect("queued");
    sender.send(page(10, &hash)).await.expect("queued");
    let mut admin = trickle.admin().await;
    let call = tokio::spawn(async move {
        admin
            .import_users(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = trickle
            .admin()
            .await
            .get_import(GetImportRequest {
                import_id: "test:resume".into(),
            })
            .await
            .ok()
            .and_then(|a| a.into_inner().import);
        if seen.as_ref().is_some_and(|i| i.next_position == 20) {
            break;
        }
        assert!(Instant::now() < deadline, "two pages recorded: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client stops: the stream ends without its last page.
    drop(sender);
    let broken = call
        .await
        .expect("task")
        .expect_err("a stream without its last page");
    assert_status(&broken, Code::Aborted, reason::IMPORT_INCOMPLETE);
    assert_eq!(trickle.store.user_count().await, 20);

    // The next run sends the whole file again: the first two pages are acknowledged
    // without being written, the rest is imported.
    let mut pages: Vec<ImportUsersRequest> = (0..5).map(|p| page(p * 10, &hash)).collect();
    if let Some(last) = pages.last_mut() {
        last.last_page = true;
    }
    let resumed = trickle
        .admin()
        .await
        .import_users(tokio_stream::iter(pages))
        .await
        .expect("resumed run")
        .into_inner()
        .import
        .expect("import");
    assert_eq!(resumed.skipped_already_done, 20, "{resumed:?}");
    assert_eq!(resumed.imported, 50, "both runs' imports: {resumed:?}");
    assert_eq!(resumed.skipped_existing, 0, "{resumed:?}");
    assert_eq!(resumed.next_position, 50);
    assert_eq!(trickle.store.user_count().await, 50, "no duplicate, no gap");
    trickle
        .login_ok("resume-49@example.com", "resume password")
        .await;

    // Pages out of order, and ids that do not match, are refused.
    let refused = trickle
        .admin()
        .await
        .import_users(tokio_stream::iter(vec![page(10, &hash)]))
        .await
        .expect_err("a first page must start at 0");
    assert_status(&refused, Code::InvalidArgument, reason::INVALID_REQUEST);
    let mut other = page(0, &hash);
    other.import_id = String::new();
    let refused = trickle
        .admin()
        .await
        .import_users(tokio_stream::iter(vec![other]))
        .await
        .expect_err("an import needs an id");
    assert_status(&refused, Code::InvalidArgument, reason::INVALID_REQUEST);
}

//! The preflight census (`trickle admin preflight`): a legacy database seeded with every
//! problem class, read through the connector's ListUsers, on both backends. The census
//! counts each class with sample legacy ids, leaks no hash and no email unless asked,
//! writes no user, is shown by `status` afterwards, and is refused when it cannot run.

use crate::support::assert_status;
use std::collections::BTreeMap;
use tonic::Code;
use trickle::admin::{AdminCommand, run};
use trickle_proto::legacy::v1::HashStatus;
use trickle_proto::migration::v1::{
    GetStatusRequest, Mode, PreflightReport, RunPreflightRequest, SetModeRequest,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, LegacyDb, TestTrickle};

on_both_backends!(preflight_counts_every_problem_class_and_writes_no_user);

/// A legacy table without a primary key (ids can repeat, hashes can be NULL), like tables
/// merged from two apps.
const DDL: &str = "CREATE TABLE users (id BIGINT NOT NULL, email VARCHAR(255) NOT NULL, \
                   password_hash VARCHAR(255) NULL, blocked INTEGER NOT NULL DEFAULT 0, \
                   totp_secret VARCHAR(64) NULL)";

/// id, email, password_hash, blocked, totp_secret.
type Row = (i64, &'static str, Option<String>, i32, Option<&'static str>);

async fn seed(legacy: &LegacyDb) {
    let bcrypt = |cost| trickle_password::legacy_formats::bcrypt("pw", cost).expect("bcrypt");
    let django =
        trickle_password::legacy_formats::django_pbkdf2_sha256("pw", 1000).expect("django hash");
    let rows: Vec<Row> = vec![
        (1, "ann@example.com", Some(bcrypt(4)), 0, None),
        // The same email as 1 once lower-cased.
        (2, "ANN@Example.COM", Some(bcrypt(4)), 0, None),
        (3, "not-an-email", Some(bcrypt(4)), 0, None),
        (4, "empty@example.com", Some(String::new()), 0, None),
        (5, "null@example.com", None, 0, None),
        (
            6,
            "locked@example.com",
            Some(format!("!{}", bcrypt(4))),
            0,
            None,
        ),
        (
            7,
            "unknown@example.com",
            Some("zzz-not-a-hash".into()),
            0,
            None,
        ),
        // Over [legacy.hash_limits] max_bcrypt_cost (5 in this test).
        (8, "costly@example.com", Some(bcrypt(6)), 0, None),
        (
            9,
            "otp@example.com",
            Some(bcrypt(4)),
            0,
            Some("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
        ),
        (
            10,
            "badotp@example.com",
            Some(bcrypt(4)),
            0,
            Some("not base32 !!"),
        ),
        (11, "blocked@example.com", Some(bcrypt(4)), 1, None),
        // Legacy id 11 again.
        (11, "again@example.com", Some(bcrypt(4)), 0, None),
        (12, "django@example.com", Some(django), 0, None),
    ];
    for (id, email, hash, blocked, totp) in rows {
        let quoted = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), |v| format!("'{v}'"));
        legacy
            .execute(format!(
                "INSERT INTO users (id, email, password_hash, blocked, totp_secret) VALUES \
                 ({id}, '{email}', {}, {blocked}, {})",
                quoted(hash.as_deref()),
                quoted(totp)
            ))
            .await;
    }
}

fn ids(report: &PreflightReport) -> BTreeMap<String, (i64, Vec<String>)> {
    report
        .findings
        .iter()
        .map(|f| (f.kind.clone(), (f.users, f.sample_legacy_ids.clone())))
        .collect()
}

async fn census(
    trickle: &TestTrickle,
    request: RunPreflightRequest,
) -> Result<(Vec<i64>, PreflightReport), tonic::Status> {
    let mut stream = trickle
        .admin()
        .await
        .run_preflight(request)
        .await?
        .into_inner();
    let mut progress = Vec::new();
    while let Some(message) = stream.message().await? {
        if let Some(report) = message.report {
            return Ok((progress, report));
        }
        assert_eq!(
            message.legacy_users_total,
            Some(13),
            "the count rides along"
        );
        progress.push(message.users_read);
    }
    panic!("the stream ended without a report");
}

async fn preflight_counts_every_problem_class_and_writes_no_user(backend: Backend) {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tempdir"));
    let legacy = LegacyDb::with_schema(backend, &dir, DDL).await;
    seed(&legacy).await;
    let trickle = TestTrickle::start_with_legacy(backend, dir, legacy, |config| {
        config.legacy.find_user = "SELECT id, email, password_hash, blocked, totp_secret \
                                   FROM users WHERE email = ?"
            .into();
        config.legacy.list_users = "SELECT id, email, password_hash, blocked, totp_secret \
                                    FROM users WHERE id > ? ORDER BY id LIMIT ?"
            .into();
        config.legacy.hash_limits.max_bcrypt_cost = 5;
    })
    .await;

    // Pages of 5: progress comes page by page (a slow reader may miss some), then the report.
    let (progress, report) = census(
        &trickle,
        RunPreflightRequest {
            batch_size: 5,
            sample_size: 0,
            show_emails: false,
        },
    )
    .await
    .expect("census");
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]) && progress.iter().all(|n| *n <= 13),
        "{progress:?}"
    );
    assert_eq!(report.users, 13, "{report:?}");
    assert_eq!(report.store_verifiable, 7, "{report:?}");
    assert_eq!(report.connector_only, 0);
    assert_eq!(report.unusable, 6, "{report:?}");
    assert_eq!(report.with_second_factor, 1);
    assert_eq!(report.blocked, 1);
    let expected: BTreeMap<String, (i64, Vec<String>)> = [
        ("email_collision", 1, vec!["2"]),
        ("invalid_email", 1, vec!["3"]),
        ("repeated_legacy_id", 1, vec!["11"]),
        ("empty_hash", 2, vec!["4", "5"]),
        ("locked_hash", 1, vec!["6"]),
        ("unknown_hash_format", 1, vec!["7"]),
        ("over_cost_limits", 1, vec!["8"]),
        ("unreadable_second_factor", 1, vec!["10"]),
    ]
    .into_iter()
    .map(|(k, n, ids)| {
        (
            k.to_owned(),
            (n, ids.into_iter().map(str::to_owned).collect()),
        )
    })
    .collect();
    assert_eq!(ids(&report), expected);
    let hashes: BTreeMap<(String, i32), i64> = report
        .hashes
        .iter()
        .map(|h| ((h.scheme.clone(), h.status), h.users))
        .collect();
    assert_eq!(
        hashes.get(&("bcrypt".into(), HashStatus::Portable.into())),
        Some(&6),
        "{hashes:?}"
    );
    assert_eq!(
        hashes.get(&("bcrypt".into(), HashStatus::OverCostLimits.into())),
        Some(&1),
        "{hashes:?}"
    );
    assert_eq!(
        hashes.values().sum::<i64>(),
        13,
        "every user has one hash class"
    );
    let debug = format!("{report:?}");
    assert!(
        !debug.contains("$2b$")
            && !debug.contains("pbkdf2_sha256$")
            && !debug.contains("example.com"),
        "no hash and no email unless asked: {debug}"
    );
    assert_eq!(
        trickle.store.user_count().await,
        0,
        "a census writes no user"
    );

    // Status shows the last census.
    let status = trickle
        .admin()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.last_preflight.as_ref(), Some(&report));

    // The CLI: a table, JSON, and emails only with --show-emails.
    let address = trickle.cluster.coordinator.admin_url();
    let preflight = |show_emails| AdminCommand::Preflight {
        batch_size: 1000,
        samples: 10,
        show_emails,
        file: None,
        format: None,
        firebase: Default::default(),
    };
    let table = run(&address, preflight(false), false)
        .await
        .expect("preflight table");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("legacy users") && l.ends_with(" 13")),
        "{table}"
    );
    assert!(table.contains("email_collision"), "{table}");
    assert!(!table.contains("example.com"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&address, preflight(true), true).await.expect("json"))
            .expect("valid JSON");
    let collision = json["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["kind"] == "email_collision"))
        .expect("collision finding");
    assert_eq!(collision["sample_emails"][0], "ANN@Example.COM", "{json}");
    let status_table = run(&address, AdminCommand::Status, false)
        .await
        .expect("status");
    assert!(
        status_table.contains("13 users, 6 no password can match"),
        "{status_table}"
    );

    // Bad requests, and no census once the legacy path is off.
    let bad = census(
        &trickle,
        RunPreflightRequest {
            batch_size: -1,
            sample_size: 5000,
            show_emails: false,
        },
    )
    .await
    .expect_err("out of range");
    assert_status(&bad, Code::InvalidArgument, reason::INVALID_REQUEST);
    // The cutover guard says how many of the users left no backfill can carry.
    let guarded = trickle
        .admin()
        .await
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: false,
        })
        .await
        .expect_err("13 legacy users remain");
    assert_status(&guarded, Code::FailedPrecondition, reason::USERS_REMAINING);
    let metadata = trickle_service_kit::rpc::metadata_of(&guarded);
    assert_eq!(
        metadata.get("preflight_unusable").map(String::as_str),
        Some("6"),
        "{guarded:?}"
    );
    assert!(
        guarded.message().contains("preflight census found 6"),
        "{guarded:?}"
    );
    trickle
        .admin()
        .await
        .set_mode(SetModeRequest {
            mode: Mode::Authoritative.into(),
            force: true,
        })
        .await
        .expect("cut over");
    let refused = census(&trickle, RunPreflightRequest::default())
        .await
        .expect_err("legacy path off");
    assert_status(&refused, Code::FailedPrecondition, reason::LEGACY_DISABLED);
}

/// A connector that cannot list its users says so, with a reason an operator can act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_without_list_users_is_a_clear_refusal() {
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.legacy.list_users = String::new();
    })
    .await;
    let refused = census(&trickle, RunPreflightRequest::default())
        .await
        .expect_err("cannot list");
    assert_status(&refused, Code::FailedPrecondition, reason::LIST_UNSUPPORTED);
    assert!(refused.message().contains("list_users"), "{refused:?}");
}

/// A census nobody waits for stops: the CLI interrupted, the stream dropped, the coordinator
/// reads no further page and keeps no report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_whose_caller_goes_away_stops_and_keeps_no_report() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    let hash = trickle_password::legacy_formats::bcrypt("pw", 4).expect("bcrypt");
    let users: Vec<(i64, String, String)> = (1..=5000)
        .map(|i| (i, format!("gone-{i}@example.com"), hash.clone()))
        .collect();
    trickle.legacy.insert_many(&users).await;
    let mut stream = trickle
        .admin()
        .await
        .run_preflight(RunPreflightRequest {
            batch_size: 1,
            sample_size: 0,
            show_emails: false,
        })
        .await
        .expect("census")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("progress")
        .expect("a message");
    assert!(
        first.report.is_none() && first.users_read < 5000,
        "{first:?}"
    );
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !trickle_tests::captured_logs().contains("preflight abandoned by its caller") {
        assert!(
            std::time::Instant::now() < deadline,
            "the census noticed its caller left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = trickle
        .admin()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        status.last_preflight, None,
        "an abandoned census keeps no report"
    );
}

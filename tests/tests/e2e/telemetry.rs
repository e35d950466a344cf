//! What SREs see: one trace per login across the four services, exported over OTLP/gRPC to a
//! real receiver, with RPC and migration attributes and no secret anywhere.

use crate::support::{alice, login};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use trickle_tests::{Backend, TestTrickle, captured_logs, exported_spans};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::BoolValue(b) => b.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (uuid::Uuid::now_v7().as_u128() >> (i % 16 * 8)) as u8 ^ (i as u8).wrapping_mul(37);
    }
    raw[0] |= 1; // never all zeros (an invalid id)
    hex(&raw)
}

const SERVER_SPANS: [&str; 5] = [
    "trickle.auth.v1.AuthService/Login",
    "trickle.userstore.v1.UserStore/Authenticate",
    "trickle.migration.v1.MigrationCoordinator/MigrateOnLogin",
    "trickle.legacy.v1.LegacyConnector/Login",
    "trickle.userstore.v1.UserStore/ImportUser",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_first_login_is_one_trace_across_the_four_services() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    let password = format!("otel-secret-{}", uuid::Uuid::now_v7().simple());
    let record = alice(&trickle, &password).await;

    // The calling service's own trace: Trickle must continue it.
    let trace_id = random_hex(16);
    let caller_span_id = random_hex(8);
    let mut request = tonic::Request::new(login("alice@example.com", &password));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span_id}-01")
            .parse()
            .expect("header"),
    );
    let response = trickle
        .client()
        .await
        .login(request)
        .await
        .expect("login")
        .into_inner();
    assert!(response.migrated);
    let user = response.user.expect("user");

    // Spans leave in batches: wait until the whole login has arrived.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans: Vec<Span> = loop {
        let spans: Vec<Span> = exported_spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect();
        // The server span of each call, not only its client span: the two leave in the
        // batches of different processes, and the checks below read the server's.
        let complete = SERVER_SPANS.iter().all(|name| {
            spans
                .iter()
                .any(|s| s.name == *name && s.kind == SpanKind::Server as i32)
        }) && spans.iter().any(|s| s.name == "migration.migrate_on_login");
        if complete {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the login's spans never all arrived; got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    // RPC names are shared by the client and the server span of a call: prefer the server's.
    let named = |name: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.name == name && (s.kind == SpanKind::Server as i32 || !name.contains('/')))
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let ancestors = |span: &Span| -> Vec<String> {
        let mut chain = Vec::new();
        let mut parent = hex(&span.parent_span_id);
        while let Some(p) = by_id.get(&parent) {
            chain.push(p.name.clone());
            parent = hex(&p.parent_span_id);
        }
        chain
    };

    // The frontend continues the caller's trace.
    let frontend = named("trickle.auth.v1.AuthService/Login");
    assert_eq!(hex(&frontend.parent_span_id), caller_span_id);
    // frontend → coordinator → legacy-connector, and coordinator → user-store import.
    let coordinator = ancestors(named(
        "trickle.migration.v1.MigrationCoordinator/MigrateOnLogin",
    ));
    assert!(coordinator.contains(&frontend.name), "{coordinator:?}");
    let legacy = ancestors(named("trickle.legacy.v1.LegacyConnector/Login"));
    assert!(
        legacy.contains(&"trickle.migration.v1.MigrationCoordinator/MigrateOnLogin".to_owned()),
        "{legacy:?}"
    );
    assert!(legacy.contains(&frontend.name), "{legacy:?}");
    let import = ancestors(named("trickle.userstore.v1.UserStore/ImportUser"));
    assert!(
        import.contains(&"trickle.migration.v1.MigrationCoordinator/MigrateOnLogin".to_owned()),
        "{import:?}"
    );
    let authenticate = ancestors(named("trickle.userstore.v1.UserStore/Authenticate"));
    assert!(authenticate.contains(&frontend.name), "{authenticate:?}");

    // RPC semantic conventions on both sides of every hop.
    for name in SERVER_SPANS {
        let span = named(name);
        assert_eq!(span.kind, SpanKind::Server as i32, "{name}");
        let (service, method) = name.split_once('/').expect("service/method");
        assert_eq!(
            attribute(span, "rpc.system").as_deref(),
            Some("grpc"),
            "{name}"
        );
        assert_eq!(
            attribute(span, "rpc.service").as_deref(),
            Some(service),
            "{name}"
        );
        assert_eq!(
            attribute(span, "rpc.method").as_deref(),
            Some(method),
            "{name}"
        );
        assert_eq!(
            attribute(span, "rpc.grpc.status_code").as_deref(),
            Some("0"),
            "{name}"
        );
        let client = spans
            .iter()
            .find(|s| s.kind == SpanKind::Client as i32 && s.name == name);
        if name != "trickle.auth.v1.AuthService/Login" {
            let client = client.unwrap_or_else(|| panic!("no client span for {name}"));
            assert_eq!(
                hex(&span.parent_span_id),
                hex(&client.span_id),
                "{name} is the child of its client call"
            );
        }
    }

    // The migration, as an SRE filters for it.
    let migration = named("migration.migrate_on_login");
    assert_eq!(
        attribute(migration, "trickle.migration.outcome").as_deref(),
        Some("migrated")
    );
    assert_eq!(
        attribute(migration, "trickle.migration.source").as_deref(),
        Some("login")
    );
    assert_eq!(
        attribute(migration, "trickle.user.id").as_deref(),
        Some(user.user_id.as_str())
    );
    assert_eq!(
        attribute(migration, "trickle.legacy.id").as_deref(),
        Some("4242")
    );
    assert_eq!(
        attribute(named("legacy.login"), "trickle.hash.scheme").as_deref(),
        Some("bcrypt")
    );

    // No secret in any exported attribute, nor in any log line; and the log line of the
    // migration carries the trace id.
    let store_hash = trickle.store.password_hash("alice@example.com").await;
    let secrets = [
        password.as_str(),
        record.password_hash.as_str(),
        store_hash.as_str(),
        response.access_token.as_str(),
    ];
    for span in &spans {
        for kv in &span.attributes {
            let value = format!("{:?}", kv.value);
            for secret in secrets {
                assert!(
                    !value.contains(secret),
                    "span {} attribute {} leaks a secret",
                    span.name,
                    kv.key
                );
            }
            assert!(
                !value.contains("alice@example.com"),
                "span {} attribute {} holds an email",
                span.name,
                kv.key
            );
        }
    }
    let logs = captured_logs();
    for secret in secrets {
        assert!(!logs.contains(secret), "a log line leaks a secret");
    }
    let migrated_line = logs
        .lines()
        .find(|line| line.contains("user migrated on login") && line.contains(&user.user_id))
        .expect("the migration's log line");
    assert!(
        migrated_line.contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "{migrated_line}"
    );
    assert!(migrated_line.contains("\"span_id\":\""), "{migrated_line}");
}

/// A wrong password is the caller's answer, not a server failure: its server spans carry
/// `rpc.grpc.status_code` 16 and no ERROR status (the OpenTelemetry gRPC conventions mark
/// only UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_not_a_server_error_in_traces() {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    alice(&trickle, "the-right-password").await;
    let trace_id = random_hex(16);
    let mut request = tonic::Request::new(login("alice@example.com", "a-wrong-password"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{}-01", random_hex(8))
            .parse()
            .expect("header"),
    );
    let status = trickle
        .client()
        .await
        .login(request)
        .await
        .expect_err("wrong password");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let deadline = Instant::now() + Duration::from_secs(15);
    let span = loop {
        let found = exported_spans().into_iter().find(|s| {
            hex(&s.trace_id) == trace_id
                && s.kind == SpanKind::Server as i32
                && s.name == "trickle.auth.v1.AuthService/Login"
        });
        if let Some(span) = found {
            break span;
        }
        assert!(
            Instant::now() < deadline,
            "the login's server span never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        attribute(&span, "rpc.grpc.status_code").as_deref(),
        Some("16")
    );
    let code = span.status.as_ref().map_or(0, |s| s.code);
    assert_ne!(code, StatusCode::Error as i32, "{:?}", span.status);
}

#[test]
fn only_server_failures_are_span_errors() {
    use trickle_telemetry::propagation::is_server_error;
    for code in [2, 4, 12, 13, 14, 15] {
        assert!(is_server_error(code), "{code}");
    }
    for code in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 16] {
        assert!(!is_server_error(code), "{code}");
    }
}

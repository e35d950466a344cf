//! Bad input: every RPC answers INVALID_ARGUMENT with the fields it refused, and hostile sizes
//! get a clean error while the service keeps serving.

use crate::support::{alice, assert_status, login, violated_fields};
use tonic::Code;
use trickle_proto::auth::v1::{
    GetUserRequest, LoginRequest, SignUpRequest, ValidateTokenRequest, get_user_request::Lookup,
};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(bad_input_is_invalid_argument_with_field_violations,);

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

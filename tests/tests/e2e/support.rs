//! Helpers every scenario shares: requests, status checks, the demo user, the cutover wait.

use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;
use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{LoginRequest, User};
use trickle_service_kit::rpc;
use trickle_tests::{LegacyRecord, TestTrickle, bcrypt};

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

/// Log in through `client` expecting success: the user it answers with.
pub(crate) async fn logged_in_user(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
) -> User {
    client
        .login(login(email, password))
        .await
        .unwrap_or_else(|status| panic!("login of {email}: {status:?}"))
        .into_inner()
        .user
        .unwrap_or_else(|| panic!("login of {email} answered no user"))
}

/// Log in through `client` expecting a refusal with `code` and `expected_reason`: the
/// status, for a closer look.
pub(crate) async fn login_refused(
    client: &mut AuthServiceClient<Channel>,
    email: &str,
    password: &str,
    code: Code,
    expected_reason: &str,
) -> tonic::Status {
    match client.login(login(email, password)).await {
        Ok(answer) => panic!("login of {email} succeeded: {:?}", answer.into_inner().user),
        Err(status) => {
            assert_status(&status, code, expected_reason);
            status
        }
    }
}

/// The strings of a `Struct` field holding a list (or one string).
pub(crate) fn strings(value: Option<&prost_types::Value>) -> Vec<String> {
    use prost_types::value::Kind;
    match value.and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .filter_map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        Some(Kind::StringValue(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

pub(crate) fn roles_of(user: &trickle_proto::auth::v1::User) -> Vec<String> {
    strings(
        user.profile
            .as_ref()
            .and_then(|p| p.app_metadata.as_ref())
            .and_then(|m| m.fields.get("roles")),
    )
}

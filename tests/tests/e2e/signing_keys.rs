//! Rotating the token signing key without logging anyone out, through the public API: a key
//! set in a directory (a mounted Secret), the current key signs, previous keys still verify
//! and stay in the JWKS, a key removed from the set no longer verifies.

use trickle_proto::auth::v1::auth_service_client::AuthServiceClient;
use trickle_proto::auth::v1::{GetJwksRequest, LoginRequest, ValidateTokenRequest};
use trickle_tests::{Backend, TestTrickle};

/// A frontend on the running cluster's store and coordinator with the key set in `dir`.
async fn frontend_with_keys(
    trickle: &TestTrickle,
    dir: &std::path::Path,
    current: &str,
) -> (
    trickle_service_kit::server::RunningServer,
    AuthServiceClient<tonic::transport::Channel>,
) {
    let mut frontend = trickle.config.frontend.clone();
    frontend.store_url = trickle.cluster.store.url();
    frontend.coordinator_url = trickle.cluster.coordinator.url();
    let mut tokens = trickle.config.tokens.clone();
    tokens.signing_key = String::new();
    tokens.keys_dir = dir.display().to_string();
    tokens.current_key = current.into();
    let server = trickle_auth_frontend::build(&frontend, &tokens)
        .await
        .expect("a frontend with the key set")
        .spawn()
        .expect("spawn");
    let client = AuthServiceClient::connect(server.url())
        .await
        .expect("connect");
    (server, client)
}

async fn kids(client: &mut AuthServiceClient<tonic::transport::Channel>) -> Vec<String> {
    client
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_old_tokens_valid_until_their_key_leaves_the_set() {
    let trickle = TestTrickle::start(Backend::Sqlite).await;
    trickle
        .legacy_user(1, "alice@example.com", "alice-password")
        .await;
    let keys = tempfile::tempdir().expect("tempdir");
    let write_key = |name: &str| {
        std::fs::write(
            keys.path().join(name),
            trickle_auth_frontend::tokens::generate_signing_key_pem().expect("key"),
        )
        .expect("write key");
    };
    write_key("2026-11.pem");
    let login = || LoginRequest {
        email: "alice@example.com".into(),
        password: "alice-password".into(),
        attempt_source: String::new(),
    };
    let validate = |token: &str| ValidateTokenRequest {
        access_token: token.to_owned(),
    };

    // Before: one key signs.
    let (before, mut client) = frontend_with_keys(&trickle, keys.path(), "2026-11.pem").await;
    let old_token = client
        .login(login())
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let old_kids = kids(&mut client).await;
    assert_eq!(old_kids.len(), 1);
    before.stop().await.expect("stop");

    // Rotated: the new key signs, the old one still verifies and is published.
    write_key("2026-12.pem");
    let (after, mut client) = frontend_with_keys(&trickle, keys.path(), "2026-12.pem").await;
    client
        .validate_token(validate(&old_token))
        .await
        .expect("a token signed before the rotation validates after it");
    let both = kids(&mut client).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&old_kids[0]), "{both:?}");
    let new_token = client
        .login(login())
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let new_kid = both
        .iter()
        .find(|k| **k != old_kids[0])
        .expect("new kid")
        .clone();
    assert_eq!(both[0], new_kid, "the signing key comes first");
    client
        .validate_token(validate(&new_token))
        .await
        .expect("the new key's token");
    after.stop().await.expect("stop");

    // The old key removed: its tokens are INVALID_TOKEN, the new ones still validate.
    std::fs::remove_file(keys.path().join("2026-11.pem")).expect("remove");
    let (_removed, mut client) = frontend_with_keys(&trickle, keys.path(), "2026-12.pem").await;
    let status = client
        .validate_token(validate(&old_token))
        .await
        .expect_err("a token of a removed key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(
        trickle_service_kit::rpc::reason_of(&status).as_deref(),
        Some(trickle_service_kit::rpc::reason::INVALID_TOKEN)
    );
    assert_eq!(kids(&mut client).await, [new_kid]);
    client
        .validate_token(validate(&new_token))
        .await
        .expect("the current key's token");
}

/// ValidateToken speaks for the user as they are now: a token issued before the password
/// changed, or of a user since deleted, is INVALID_TOKEN (within the subject cache, here 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_changed_password_or_a_deleted_user_are_refused() {
    use trickle_proto::auth::v1::{ChangePasswordRequest, DeleteUserRequest};
    let trickle = TestTrickle::start_with(Backend::Sqlite, |config| {
        config.frontend.token_subject_cache_ms = 0;
    })
    .await;
    trickle
        .legacy_user(8951, "hana@example.com", "hanas-password")
        .await;
    let first = trickle.login_ok("hana@example.com", "hanas-password").await;
    let user = first.user.expect("user");
    let mut client = trickle.client().await;
    let validate = |token: &str| ValidateTokenRequest {
        access_token: token.to_owned(),
    };
    client
        .validate_token(validate(&first.access_token))
        .await
        .expect("valid before the change");

    // `iat` has one-second grain: a change in the token's own second would not revoke it.
    trickle.clock.advance(std::time::Duration::from_secs(1));
    client
        .change_password(ChangePasswordRequest {
            user_id: user.user_id.clone(),
            old_password: "hanas-password".into(),
            new_password: "hana changed it".into(),
        })
        .await
        .expect("changed");
    let status = client
        .validate_token(validate(&first.access_token))
        .await
        .expect_err("issued before the password change");
    assert_eq!(
        trickle_service_kit::rpc::reason_of(&status).as_deref(),
        Some(trickle_service_kit::rpc::reason::INVALID_TOKEN),
        "{status:?}"
    );
    let second = trickle
        .login_ok("hana@example.com", "hana changed it")
        .await;
    client
        .validate_token(validate(&second.access_token))
        .await
        .expect("a token issued after the change");

    client
        .delete_user(DeleteUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .expect("deleted");
    let status = client
        .validate_token(validate(&second.access_token))
        .await
        .expect_err("the user is gone");
    assert_eq!(
        trickle_service_kit::rpc::reason_of(&status).as_deref(),
        Some(trickle_service_kit::rpc::reason::INVALID_TOKEN),
        "{status:?}"
    );
}

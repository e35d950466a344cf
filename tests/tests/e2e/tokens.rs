//! Access tokens: issued on login, validated by `ValidateToken`, refused when tampered with,
//! and verifiable by anyone through the published JWKS.

use crate::support::{alice, assert_status, login};
use std::time::Duration;
use tonic::Code;
use trickle_proto::auth::v1::{GetJwksRequest, ValidateTokenRequest};
use trickle_service_kit::rpc::reason;
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(tokens_validate_and_reject_tampering,);

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

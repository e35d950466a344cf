//! The whole profile moves: roles from the legacy store's own tables (`find_roles`) land in
//! `app_metadata.roles`, by first login, read-only lookup and backfill alike, and the
//! configured token claims carry them.

use crate::support::{logged_in_user, roles_of, strings};
use trickle_proto::auth::v1::{GetUserRequest, ValidateTokenRequest, get_user_request::Lookup};
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(legacy_roles_arrive_in_app_metadata_and_in_tokens);

async fn legacy_roles_arrive_in_app_metadata_and_in_tokens(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        config.legacy.find_roles = "SELECT role FROM user_roles WHERE user_id = ?".into();
        config
            .tokens
            .claims
            .insert("roles".into(), "app_metadata.roles".into());
    })
    .await;
    trickle
        .legacy
        .execute(
            "CREATE TABLE user_roles (user_id INTEGER NOT NULL, role VARCHAR(64) NOT NULL)".into(),
        )
        .await;
    for (user_id, role) in [
        (8001, "editor"),
        (8001, "admin"),
        (8001, "editor"),
        (8002, "viewer"),
    ] {
        trickle
            .legacy
            .execute(format!(
                "INSERT INTO user_roles (user_id, role) VALUES ({user_id}, '{role}')"
            ))
            .await;
    }
    trickle
        .legacy_user(8001, "ada@example.com", "adas-password")
        .await;
    trickle
        .legacy_user(8002, "grace@example.com", "graces-password")
        .await;
    trickle
        .legacy_user(8003, "linus@example.com", "linuss-password")
        .await;
    let mut client = trickle.client().await;

    // Before migrating, the read-only view shows them already.
    let seen = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("ada@example.com".into())),
        })
        .await
        .expect("legacy view")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(
        roles_of(&seen),
        ["admin", "editor"],
        "sorted, without repeats"
    );

    // A first login brings them into the store, and the token carries them.
    let login = trickle.login_ok("ada@example.com", "adas-password").await;
    assert!(login.migrated);
    assert_eq!(roles_of(&login.user.expect("user")), ["admin", "editor"]);
    let claims = client
        .validate_token(ValidateTokenRequest {
            access_token: login.access_token,
        })
        .await
        .expect("valid")
        .into_inner()
        .claims
        .expect("claims");
    assert_eq!(
        strings(claims.profile.as_ref().and_then(|p| p.fields.get("roles"))),
        ["admin", "editor"]
    );
    // The store keeps them: the next login is the store's alone.
    assert_eq!(
        roles_of(&logged_in_user(&mut client, "ada@example.com", "adas-password").await),
        ["admin", "editor"]
    );

    // The backfill carries them too; a user without roles gets none.
    crate::backfill::run_to_end(&trickle).await;
    let grace = logged_in_user(&mut client, "grace@example.com", "graces-password").await;
    assert_eq!(roles_of(&grace), ["viewer"]);
    let linus = logged_in_user(&mut client, "linus@example.com", "linuss-password").await;
    assert!(roles_of(&linus).is_empty(), "{linus:?}");
}

//! The whole profile moves: roles from the legacy store's own tables (`find_roles`) land in
//! `app_metadata.roles`, by first login, read-only lookup and backfill alike, and the
//! configured token claims carry them.

use crate::support::{logged_in_user, roles_of, strings};
use trickle_proto::auth::v1::{GetUserRequest, ValidateTokenRequest, get_user_request::Lookup};
use trickle_tests::{Backend, TestTrickle};

on_both_backends!(
    legacy_roles_arrive_in_app_metadata_and_in_tokens,
    users_update_their_profile_and_applications_their_app_metadata,
    mapped_legacy_columns_arrive_in_metadata,
);

/// `[legacy.metadata]`: a text and an integer column into app_metadata keys, a JSON column
/// merged into user_metadata; by first login and by backfill alike. A JSON column that holds
/// no object is left out, and the user migrates anyway.
async fn mapped_legacy_columns_arrive_in_metadata(backend: Backend) {
    let trickle = TestTrickle::start_with(backend, |config| {
        // `?` placeholders: the legacy database is MariaDB or SQLite in these scenarios.
        let columns = "SELECT u.id, u.email, u.password_hash, p.plan, p.score, p.prefs \
                       FROM users u LEFT JOIN profiles p ON p.user_id = u.id";
        config.legacy.find_user = format!("{columns} WHERE lower(u.email) = ?");
        config.legacy.list_users = format!("{columns} WHERE u.id > ? ORDER BY u.id LIMIT ?");
        for (column, target) in [
            ("plan", "app_metadata.plan"),
            ("score", "app_metadata.score"),
            ("prefs", "user_metadata"),
        ] {
            config.legacy.metadata.insert(column.into(), target.into());
        }
    })
    .await;
    trickle
        .legacy
        .execute(
            "CREATE TABLE profiles (user_id INTEGER NOT NULL, plan VARCHAR(32), score INTEGER, prefs TEXT)"
                .into(),
        )
        .await;
    for (id, email, prefs) in [
        (
            8201,
            "ann@example.com",
            r#"{"theme": "dark", "lang": "fr"}"#,
        ),
        (8202, "ben@example.com", "not json"),
        (8203, "cat@example.com", r#"{"theme": "light"}"#),
    ] {
        trickle.legacy_user(id, email, "a-long-password").await;
        trickle
            .legacy
            .execute(format!(
                "INSERT INTO profiles (user_id, plan, score, prefs) VALUES ({id}, 'gold', {}, '{prefs}')",
                id - 8200
            ))
            .await;
    }
    let mut client = trickle.client().await;
    let metadata = |user: &trickle_proto::auth::v1::User| {
        let profile = user.profile.clone().expect("profile");
        (
            trickle_proto::json::from_struct(profile.app_metadata.unwrap_or_default()),
            trickle_proto::json::from_struct(profile.user_metadata.unwrap_or_default()),
        )
    };
    let ann = logged_in_user(&mut client, "ann@example.com", "a-long-password").await;
    assert_eq!(
        metadata(&ann),
        (
            serde_json::json!({"plan": "gold", "score": 1.0})
                .as_object()
                .cloned()
                .expect("object"),
            serde_json::json!({"theme": "dark", "lang": "fr"})
                .as_object()
                .cloned()
                .expect("object"),
        )
    );
    let ben = logged_in_user(&mut client, "ben@example.com", "a-long-password").await;
    assert_eq!(
        metadata(&ben).1,
        serde_json::Map::new(),
        "no JSON object: left out, the user still migrates"
    );
    crate::backfill::run_to_end(&trickle).await;
    let cat = client
        .get_user(GetUserRequest {
            lookup: Some(Lookup::Email("cat@example.com".into())),
        })
        .await
        .expect("backfilled")
        .into_inner();
    assert!(cat.migrated);
    assert_eq!(
        metadata(&cat.user.expect("user")),
        (
            serde_json::json!({"plan": "gold", "score": 3.0})
                .as_object()
                .cloned()
                .expect("object"),
            serde_json::json!({"theme": "light"})
                .as_object()
                .cloned()
                .expect("object"),
        )
    );
}

fn object(json: serde_json::Value) -> prost_types::Struct {
    fn value(json: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        prost_types::Value {
            kind: Some(match json {
                serde_json::Value::Null => Kind::NullValue(0),
                serde_json::Value::Bool(b) => Kind::BoolValue(b),
                serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
                serde_json::Value::String(s) => Kind::StringValue(s),
                serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                    values: a.into_iter().map(value).collect(),
                }),
                serde_json::Value::Object(o) => Kind::StructValue(object(o.into())),
            }),
        }
    }
    let serde_json::Value::Object(map) = json else {
        panic!("an object");
    };
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, value(v))).collect(),
    }
}

async fn users_update_their_profile_and_applications_their_app_metadata(backend: Backend) {
    use crate::support::assert_status;
    use tonic::Code;
    use trickle_proto::auth::v1::{Profile, UpdateAppMetadataRequest, UpdateProfileRequest};
    use trickle_service_kit::rpc::reason;
    let trickle = TestTrickle::start_with(backend, |config| {
        config
            .tokens
            .claims
            .insert("plan".into(), "app_metadata.plan".into());
    })
    .await;
    trickle
        .legacy_user(8101, "ida@example.com", "idas-password")
        .await;
    let mut client = trickle.client().await;
    let user = logged_in_user(&mut client, "ida@example.com", "idas-password").await;
    let mask = |paths: &[&str]| {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })
    };

    // Only the fields in the mask change; user_metadata is replaced whole.
    let updated = client
        .update_profile(UpdateProfileRequest {
            user_id: user.user_id.clone(),
            profile: Some(Profile {
                name: "Ida Lovelace".into(),
                nickname: "ignored: not in the mask".into(),
                user_metadata: Some(object(
                    serde_json::json!({"theme": "dark", "langs": ["en", "fr"]}),
                )),
                ..Profile::default()
            }),
            update_mask: mask(&["name", "user_metadata"]),
        })
        .await
        .expect("update")
        .into_inner()
        .user
        .expect("user");
    let profile = updated.profile.clone().expect("profile");
    assert_eq!(profile.name, "Ida Lovelace");
    assert_eq!(
        profile.nickname,
        user.profile.clone().expect("profile").nickname
    );
    assert_eq!(
        strings(
            profile
                .user_metadata
                .as_ref()
                .and_then(|m| m.fields.get("langs"))
        ),
        ["en", "fr"]
    );
    let seconds = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(seconds(updated.updated_at) > seconds(user.updated_at));

    // app_metadata is not a user's to change: its own RPC, privileged where callers have
    // identities (tls.rs).
    for (paths, why) in [
        (vec!["app_metadata"], "app_metadata"),
        (vec!["email"], "not a profile field"),
        (vec![], "an empty mask"),
    ] {
        let status = client
            .update_profile(UpdateProfileRequest {
                user_id: user.user_id.clone(),
                profile: None,
                update_mask: mask(&paths),
            })
            .await
            .expect_err(why);
        assert_status(&status, Code::InvalidArgument, reason::INVALID_REQUEST);
    }
    let too_big = client
        .update_profile(UpdateProfileRequest {
            user_id: user.user_id.clone(),
            profile: Some(Profile {
                user_metadata: Some(object(serde_json::json!({"blob": "x".repeat(20_000)}))),
                ..Profile::default()
            }),
            update_mask: mask(&["user_metadata"]),
        })
        .await
        .expect_err("over 16 KiB");
    assert_status(&too_big, Code::InvalidArgument, reason::INVALID_REQUEST);
    let nobody = client
        .update_profile(UpdateProfileRequest {
            user_id: "0190f1e2-0000-7000-8000-000000000000".into(),
            profile: None,
            update_mask: mask(&["name"]),
        })
        .await
        .expect_err("no such user");
    assert_status(&nobody, Code::NotFound, reason::USER_NOT_FOUND);

    let with_plan = client
        .update_app_metadata(UpdateAppMetadataRequest {
            user_id: user.user_id.clone(),
            app_metadata: Some(object(serde_json::json!({"plan": "gold"}))),
        })
        .await
        .expect("app metadata")
        .into_inner()
        .user
        .expect("user");
    let profile = with_plan.profile.expect("profile");
    assert_eq!(profile.name, "Ida Lovelace", "the rest stays");
    assert_eq!(
        strings(
            profile
                .app_metadata
                .as_ref()
                .and_then(|m| m.fields.get("plan"))
        ),
        ["gold"]
    );
    // The next token carries it as a configured claim.
    let token = client
        .login(crate::support::login("ida@example.com", "idas-password"))
        .await
        .expect("login")
        .into_inner()
        .access_token;
    let claims = client
        .validate_token(ValidateTokenRequest {
            access_token: token,
        })
        .await
        .expect("validate")
        .into_inner()
        .claims
        .expect("claims");
    assert_eq!(
        strings(claims.profile.as_ref().and_then(|p| p.fields.get("plan"))),
        ["gold"]
    );
}

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

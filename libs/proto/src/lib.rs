//! The generated gRPC code for Trickle's contracts, and the descriptor set the servers
//! expose through reflection. The `.proto` files live in the repository's `proto/` folder.

#![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]

/// The encoded `FileDescriptorSet` of every Trickle proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trickle_descriptor");

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("trickle.auth.v1");
        // Debug for the messages that carry a secret (build.rs): the secret prints as
        // `<redacted>`.
        include!(concat!(
            env!("OUT_DIR"),
            "/redacted_debug_trickle_auth_v1.rs"
        ));
    }
}

pub mod userstore {
    pub mod v1 {
        tonic::include_proto!("trickle.userstore.v1");
        // Debug for the messages that carry a secret (build.rs): the secret prints as
        // `<redacted>`.
        include!(concat!(
            env!("OUT_DIR"),
            "/redacted_debug_trickle_userstore_v1.rs"
        ));
    }
}

pub mod legacy {
    pub mod v1 {
        tonic::include_proto!("trickle.legacy.v1");
        // Debug for the messages that carry a secret (build.rs): the secret prints as
        // `<redacted>`.
        include!(concat!(
            env!("OUT_DIR"),
            "/redacted_debug_trickle_legacy_v1.rs"
        ));
    }
}

pub mod migration {
    pub mod v1 {
        tonic::include_proto!("trickle.migration.v1");
        // Debug for the messages that carry a secret (build.rs): the secret prints as
        // `<redacted>`.
        include!(concat!(
            env!("OUT_DIR"),
            "/redacted_debug_trickle_migration_v1.rs"
        ));
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("trickle.events.v1");
        // Empty today (no event carries a secret), kept so that a secret field added later
        // is redacted like everywhere else.
        include!(concat!(
            env!("OUT_DIR"),
            "/redacted_debug_trickle_events_v1.rs"
        ));
    }
}

impl events::v1::EventKind {
    /// The event's name where it is not a proto enum: the webhook's `type`, the user
    /// store's `events.kind` column, `trickle admin watch`. One table, so that the store and
    /// the coordinator cannot disagree; never rename an entry (receivers match on them).
    pub fn type_name(self) -> &'static str {
        use events::v1::EventKind as K;
        match self {
            K::Unspecified => "unknown",
            K::UserSignedUp => "user.signed_up",
            K::UserMigrated => "user.migrated",
            K::LoginSucceeded => "user.logged_in",
            K::PasswordChanged => "user.password_changed",
            K::PasswordReset => "user.password_reset",
            K::EmailChanged => "user.email_changed",
            K::EmailVerified => "user.email_verified",
            K::UserBlocked => "user.blocked",
            K::UserUnblocked => "user.unblocked",
            K::ProfileUpdated => "user.profile_updated",
            K::UserDeleted => "user.deleted",
            K::FactorEnrolled => "user.factor_enrolled",
            K::FactorRemoved => "user.factor_removed",
        }
    }

    /// The kind named `name` (`user.migrated`, or just `migrated`); never `Unspecified`.
    pub fn from_type_name(name: &str) -> Option<Self> {
        let name = name.trim();
        (1..=i32::MAX)
            .map_while(|n| Self::try_from(n).ok())
            .find(|kind| {
                let full = kind.type_name();
                full == name || full.strip_prefix("user.") == Some(name)
            })
    }
}

/// Every RPC of every Trickle contract as its HTTP/2 path (`/trickle.auth.v1.AuthService/Login`),
/// for metric labels that cannot be made up by a caller.
pub fn method_paths() -> std::collections::HashSet<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return std::collections::HashSet::new();
    };
    let mut paths = std::collections::HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths
}

/// `google.protobuf.Struct` ⇄ JSON objects, for the metadata every service carries.
pub mod json {
    use prost_types::{ListValue, Struct, Value, value::Kind};

    pub type Object = serde_json::Map<String, serde_json::Value>;

    pub fn to_struct(object: Object) -> Struct {
        Struct {
            fields: object.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        }
    }

    pub fn to_value(value: serde_json::Value) -> Value {
        let kind = match value {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(items) => Kind::ListValue(ListValue {
                values: items.into_iter().map(to_value).collect(),
            }),
            serde_json::Value::Object(object) => Kind::StructValue(to_struct(object)),
        };
        Value { kind: Some(kind) }
    }

    pub fn from_struct(s: Struct) -> Object {
        s.fields
            .into_iter()
            .map(|(k, v)| (k, from_value(v)))
            .collect()
    }

    /// Numbers JSON cannot hold (NaN, infinities) become null.
    pub fn from_value(value: Value) -> serde_json::Value {
        match value.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Some(Kind::StringValue(s)) => serde_json::Value::String(s),
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
            Some(Kind::StructValue(s)) => serde_json::Value::Object(from_struct(s)),
            Some(Kind::ListValue(l)) => {
                serde_json::Value::Array(l.values.into_iter().map(from_value).collect())
            }
        }
    }
}

impl legacy::v1::LegacyUser {
    /// The profile a legacy user brings into the store: their mapped metadata, and their
    /// roles as `app_metadata.roles` (over a mapped `roles` key). One conversion for the three places that need it (migration on
    /// login and on reset, backfill, and the read-only view of a user not migrated yet).
    pub fn profile(&self) -> auth::v1::Profile {
        use prost_types::{ListValue, Struct, Value, value::Kind};
        let mut app_metadata = self.app_metadata.clone().unwrap_or_default();
        if !self.roles.is_empty() {
            app_metadata.fields.insert(
                "roles".to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: self
                            .roles
                            .iter()
                            .map(|role| Value {
                                kind: Some(Kind::StringValue(role.clone())),
                            })
                            .collect(),
                    })),
                },
            );
        }
        let present = |s: Struct| (!s.fields.is_empty()).then_some(s);
        auth::v1::Profile {
            name: self.name.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            nickname: self.nickname.clone(),
            picture: self.picture.clone(),
            user_metadata: self.user_metadata.clone().and_then(present),
            app_metadata: present(app_metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    /// No password, token, ticket or hash in a Debug string of any message that carries one.
    #[test]
    fn debug_redacts_secrets() {
        let login = crate::auth::v1::LoginRequest {
            email: "alice@example.com".into(),
            password: "hunter2-secret".into(),
            attempt_source: "203.0.113.9".into(),
        };
        let printed = format!("{login:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("203.0.113.9"), "{printed}");
        assert!(printed.contains("alice@example.com"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let reset = crate::userstore::v1::RedeemPasswordResetRequest {
            ticket: "ticket-secret".into(),
            new_password: "new-secret".into(),
        };
        let printed = format!("{reset:#?}");
        assert!(!printed.contains("secret"), "{printed}");
        let token = crate::auth::v1::ValidateTokenRequest {
            access_token: "eyJ-secret".into(),
        };
        assert!(!format!("{token:?}").contains("secret"));
        let import = crate::userstore::v1::ImportUserRequest {
            password: "import-secret".into(),
            reset_ticket: "reset-secret".into(),
            ..Default::default()
        };
        assert!(!format!("{import:?}").contains("secret"));
        // Second factors: the challenge, the code, secrets (raw and in the URI), recovery
        // codes, and a legacy factor inside an import.
        let verify = crate::auth::v1::VerifyMfaRequest {
            mfa_challenge: "challenge-secret".into(),
            code: "123456".into(),
        };
        let printed = format!("{verify:?}");
        assert!(
            !printed.contains("secret") && !printed.contains("123456"),
            "{printed}"
        );
        let enrolled = crate::auth::v1::EnrollTotpResponse {
            secret: "JBSWY3DPSECRET".into(),
            otpauth_uri: "otpauth://totp/x?secret=JBSWY3DPSECRET".into(),
            ..Default::default()
        };
        assert!(!format!("{enrolled:?}").contains("SECRET"));
        let confirmed = crate::auth::v1::ConfirmTotpResponse {
            recovery_codes: vec!["abcd-efgh-secret".into()],
            ..Default::default()
        };
        assert!(!format!("{confirmed:?}").contains("secret"));
        let import = crate::userstore::v1::ImportUserRequest {
            totp: Some(crate::legacy::v1::LegacyTotp {
                secret: b"legacy-secret".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let printed = format!("{import:?}");
        assert!(!printed.contains("108, 101, 103"), "{printed}");
    }
}

//! The user-store's domain types, shared by the rules (`users/`) and the storage
//! (`repository/`), so that neither has to import the other for them.

use chrono::{DateTime, Utc};

/// How a user came to be in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Signup,
    LoginMigration,
    ResetMigration,
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Signup => "signup",
            Source::LoginMigration => "login_migration",
            Source::ResetMigration => "reset_migration",
            Source::Backfill => "backfill",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "signup" => Source::Signup,
            "login_migration" => Source::LoginMigration,
            "reset_migration" => Source::ResetMigration,
            "backfill" => Source::Backfill,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
}

/// Which profile fields an update sets (the rest stay as they are).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileFields {
    pub name: bool,
    pub given_name: bool,
    pub family_name: bool,
    pub nickname: bool,
    pub picture: bool,
    pub user_metadata: bool,
    pub app_metadata: bool,
}

impl ProfileFields {
    /// The names an update may use, as in the API.
    pub const NAMES: [&'static str; 7] = [
        "name",
        "given_name",
        "family_name",
        "nickname",
        "picture",
        "user_metadata",
        "app_metadata",
    ];

    /// Mark `name` as set; `false` for a name that is not a profile field.
    pub fn set(&mut self, name: &str) -> bool {
        let field = match name {
            "name" => &mut self.name,
            "given_name" => &mut self.given_name,
            "family_name" => &mut self.family_name,
            "nickname" => &mut self.nickname,
            "picture" => &mut self.picture,
            "user_metadata" => &mut self.user_metadata,
            "app_metadata" => &mut self.app_metadata,
            _ => return false,
        };
        *field = true;
        true
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The names of the fields set, in [`ProfileFields::NAMES`] order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + use<> {
        let set = [
            self.name,
            self.given_name,
            self.family_name,
            self.nickname,
            self.picture,
            self.user_metadata,
            self.app_metadata,
        ];
        Self::NAMES
            .into_iter()
            .zip(set)
            .filter_map(|(name, set)| set.then_some(name))
    }
}

/// A user as the store returns it: never with the password hash.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_id: String,
    pub email: String,
    pub display_email: String,
    pub email_verified: bool,
    pub legacy_id: Option<String>,
    pub profile: Profile,
    pub source: Source,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// When the password last changed (change or reset): older access tokens are refused.
    pub credentials_changed_at: Option<DateTime<Utc>>,
    /// Logins are refused (after the password is checked) and tokens do not validate.
    pub blocked: bool,
    /// The user should choose a new password; logins still succeed and say so.
    pub password_change_required: bool,
    /// An active second factor: logins need a code after the password.
    pub mfa_enrolled: bool,
}

/// What one `login_throttle` row counts. The row's key column is called `email` for
/// history; it holds one of these forms:
/// - an email: every attempt on it without a source;
/// - an email and a source digest: the attempts from that source;
/// - an email with `source:*`: all sourced attempts on it (the ceiling that locks the email
///   for everyone);
/// - `client ID`: the failures of one calling service, whatever the email.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThrottleKey(String);

impl ThrottleKey {
    pub fn email(normalized_email: &str) -> Self {
        Self(normalized_email.to_owned())
    }

    pub fn email_from_source(normalized_email: &str, source_digest: &str) -> Self {
        Self(format!("{normalized_email} source:{source_digest}"))
    }

    pub fn email_ceiling(normalized_email: &str) -> Self {
        Self(format!("{normalized_email} source:*"))
    }

    pub fn client(client_id: &str) -> Self {
        Self(format!("client {client_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

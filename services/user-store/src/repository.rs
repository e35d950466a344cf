//! The `users` table, on PostgreSQL or SQLite. Every query is written once (`$n`
//! placeholders work on both) and uniqueness is left to the database's constraints.

use crate::users::{Profile, Source, User};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use trickle_service_kit::Email;
use trickle_service_kit::db::Db;
use trickle_service_kit::with_db;

#[derive(Debug, Clone)]
pub struct Repository {
    db: Db,
}

pub(crate) struct NewUser<'a> {
    pub email: &'a Email,
    pub email_verified: bool,
    pub legacy_id: Option<&'a str>,
    pub password_hash: &'a str,
    pub profile: &'a Profile,
    pub source: Source,
}

pub(crate) enum InsertOutcome {
    Inserted(User),
    /// A unique constraint (email or legacy_id) already holds a row.
    Conflict,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: String,
    email: String,
    display_email: String,
    email_verified: bool,
    legacy_id: Option<String>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    nickname: Option<String>,
    picture: Option<String>,
    user_metadata: Json<serde_json::Map<String, serde_json::Value>>,
    app_metadata: Json<serde_json::Map<String, serde_json::Value>>,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_login_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

// Queries are static strings (sqlx refuses unaudited dynamic SQL); the column list is
// spelled once, here.
macro_rules! user_columns {
    () => {
        "user_id, email, display_email, email_verified, legacy_id, name, given_name, family_name, \
         nickname, picture, user_metadata, app_metadata, source, created_at, updated_at, last_login_at"
    };
}

const SELECT_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE user_id = $1");
const SELECT_BY_EMAIL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
const SELECT_CREDENTIALS_BY_EMAIL: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE email = $1"
);
const SELECT_CREDENTIALS_BY_LEGACY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE legacy_id = $1"
);
const INSERT_USER: &str = concat!(
    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
     name, given_name, family_name, nickname, picture, user_metadata, app_metadata, source, \
     created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
     ON CONFLICT DO NOTHING RETURNING ",
    user_columns!()
);
const RECORD_LOGIN: &str = concat!(
    "UPDATE users SET last_login_at = $1, \
       password_hash = CASE WHEN password_hash = $3 AND $4 IS NOT NULL THEN $4 ELSE password_hash END, \
       updated_at = CASE WHEN password_hash = $3 AND $4 IS NOT NULL THEN $1 ELSE updated_at END \
     WHERE user_id = $2 RETURNING ",
    user_columns!()
);

impl UserRow {
    fn into_user(self) -> Result<User, sqlx::Error> {
        let source = Source::parse(&self.source).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown user source {:?}", self.source).into())
        })?;
        Ok(User {
            user_id: self.user_id,
            email: self.email,
            display_email: self.display_email,
            email_verified: self.email_verified,
            legacy_id: self.legacy_id,
            profile: Profile {
                name: self.name,
                given_name: self.given_name,
                family_name: self.family_name,
                nickname: self.nickname,
                picture: self.picture,
                user_metadata: self.user_metadata.0,
                app_metadata: self.app_metadata.0,
            },
            source,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_login_at: self.last_login_at,
        })
    }
}

impl Repository {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn find_one(&self, sql: &'static str, value: &str) -> Result<Option<User>, sqlx::Error> {
        let row: Option<UserRow> =
            with_db!(&self.db, pool => sqlx::query_as(sql).bind(value).fetch_optional(pool).await)?;
        row.map(UserRow::into_user).transpose()
    }

    async fn find_one_with_hash(
        &self,
        sql: &'static str,
        value: &str,
    ) -> Result<Option<(User, String)>, sqlx::Error> {
        let row: Option<CredentialsRow> =
            with_db!(&self.db, pool => sqlx::query_as(sql).bind(value).fetch_optional(pool).await)?;
        row.map(|r| Ok((r.user.into_user()?, r.password_hash)))
            .transpose()
    }

    pub async fn find_by_id(&self, user_id: &str) -> Result<Option<User>, sqlx::Error> {
        self.find_one(SELECT_BY_ID, user_id).await
    }

    pub async fn find_by_email(&self, normalized_email: &str) -> Result<Option<User>, sqlx::Error> {
        self.find_one(SELECT_BY_EMAIL, normalized_email).await
    }

    /// The user and their stored hash, for a password check. The hash never leaves the
    /// user-store crate.
    pub(crate) async fn find_credentials(
        &self,
        normalized_email: &str,
    ) -> Result<Option<(User, String)>, sqlx::Error> {
        self.find_one_with_hash(SELECT_CREDENTIALS_BY_EMAIL, normalized_email)
            .await
    }

    pub(crate) async fn find_credentials_by_legacy_id(
        &self,
        legacy_id: &str,
    ) -> Result<Option<(User, String)>, sqlx::Error> {
        self.find_one_with_hash(SELECT_CREDENTIALS_BY_LEGACY_ID, legacy_id)
            .await
    }

    /// Insert a user unless the email or legacy id is taken; one statement, so concurrent
    /// inserts of one user in any number of processes leave exactly one row.
    pub(crate) async fn insert(&self, new: &NewUser<'_>) -> Result<InsertOutcome, sqlx::Error> {
        let now = Utc::now();
        let user_id = uuid::Uuid::now_v7().to_string();
        let p = new.profile;
        let row: Option<UserRow> = with_db!(&self.db, pool => {
            sqlx::query_as(INSERT_USER)
                .bind(&user_id)
                .bind(new.email.normalized())
                .bind(new.email.display())
                .bind(new.email_verified)
                .bind(new.legacy_id)
                .bind(new.password_hash)
                .bind(p.name.as_deref())
                .bind(p.given_name.as_deref())
                .bind(p.family_name.as_deref())
                .bind(p.nickname.as_deref())
                .bind(p.picture.as_deref())
                .bind(Json(&p.user_metadata))
                .bind(Json(&p.app_metadata))
                .bind(new.source.as_str())
                .bind(now)
                .fetch_optional(pool)
                .await
        })?;
        Ok(match row {
            Some(row) => InsertOutcome::Inserted(row.into_user()?),
            None => InsertOutcome::Conflict,
        })
    }

    /// Record a successful login and, when the password was re-hashed, store the new hash —
    /// only if the hash is still the one just verified, so a concurrent password change wins.
    pub(crate) async fn record_login(
        &self,
        user_id: &str,
        verified_hash: &str,
        upgraded_hash: Option<&str>,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = Utc::now();
        let row: Option<UserRow> = with_db!(&self.db, pool => {
            sqlx::query_as(RECORD_LOGIN)
                .bind(now)
                .bind(user_id)
                .bind(verified_hash)
                .bind(upgraded_hash)
                .fetch_optional(pool)
                .await
        })?;
        row.map(UserRow::into_user).transpose()
    }
}

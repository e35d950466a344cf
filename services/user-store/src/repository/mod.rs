//! The `users` table, on PostgreSQL or SQLite. Every query is written once (`$n`
//! placeholders work on both) and uniqueness is left to the database's constraints.

use crate::model::{Profile, ProfileFields, Source, ThrottleKey, User};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use trickle_service_kit::db::Db;
use trickle_service_kit::with_db;
use trickle_service_kit::{Clock, Email};

#[derive(Debug, Clone)]
pub struct Repository {
    db: Db,
    /// Every timestamp this store writes or compares comes from here (tests move it).
    clock: Clock,
}

pub(crate) struct NewUser<'a> {
    pub email: &'a Email,
    pub email_verified: bool,
    pub legacy_id: Option<&'a str>,
    pub password_hash: &'a str,
    pub profile: &'a Profile,
    pub source: Source,
    pub blocked: bool,
    pub password_change_required: bool,
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
    credentials_changed_at: Option<DateTime<Utc>>,
    blocked: bool,
    password_change_required: bool,
    mfa_enrolled: bool,
}

/// Counts for the migration status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationCounts {
    pub signup: i64,
    pub login_migration: i64,
    pub reset_migration: i64,
    pub backfill: i64,
    pub tombstoned_legacy: i64,
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
         nickname, picture, user_metadata, app_metadata, source, created_at, updated_at, last_login_at, \
         credentials_changed_at, blocked, password_change_required, mfa_enrolled"
    };
}

const SELECT_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE user_id = $1");
const SELECT_BY_EMAIL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1");
const SELECT_BY_LEGACY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM users WHERE legacy_id = $1"
);
const SELECT_CREDENTIALS_BY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE user_id = $1"
);
const SET_PASSWORD: &str = concat!(
    "UPDATE users SET password_hash = $2, updated_at = $3, credentials_changed_at = $3, password_change_required = FALSE WHERE user_id = $1 RETURNING ",
    user_columns!()
);
const SET_PASSWORD_IF_UNCHANGED: &str = concat!(
    "UPDATE users SET password_hash = $2, updated_at = $3, credentials_changed_at = $3, password_change_required = FALSE \
     WHERE user_id = $1 AND password_hash = $4 RETURNING ",
    user_columns!()
);
const SET_PASSWORD_BY_LEGACY_ID: &str = concat!(
    "UPDATE users SET password_hash = $3, updated_at = $4, credentials_changed_at = $4, password_change_required = FALSE \
     WHERE legacy_id = $1 AND email = $2 RETURNING ",
    user_columns!()
);
const SET_EMAIL: &str = concat!(
    "UPDATE users SET email = $2, display_email = $3, email_verified = FALSE, updated_at = $4 \
     WHERE user_id = $1 RETURNING ",
    user_columns!()
);
const SET_EMAIL_VERIFIED: &str = concat!(
    "UPDATE users SET email_verified = TRUE, updated_at = $3 WHERE user_id = $1 AND email = $2 RETURNING ",
    user_columns!()
);
const SET_ACCOUNT_STATE: &str = concat!(
    "UPDATE users SET blocked = COALESCE($2, blocked), \
       password_change_required = COALESCE($3, password_change_required), updated_at = $4 \
     WHERE user_id = $1 RETURNING ",
    user_columns!()
);
const UPDATE_PROFILE: &str = concat!(
    "UPDATE users SET \
       name = CASE WHEN $2 THEN $3 ELSE name END, \
       given_name = CASE WHEN $4 THEN $5 ELSE given_name END, \
       family_name = CASE WHEN $6 THEN $7 ELSE family_name END, \
       nickname = CASE WHEN $8 THEN $9 ELSE nickname END, \
       picture = CASE WHEN $10 THEN $11 ELSE picture END, \
       user_metadata = CASE WHEN $12 THEN $13 ELSE user_metadata END, \
       app_metadata = CASE WHEN $14 THEN $15 ELSE app_metadata END, \
       updated_at = $16 \
     WHERE user_id = $1 RETURNING ",
    user_columns!()
);
const CONSUME_TICKET: &str = "UPDATE tickets SET used_at = $2 \
     WHERE ticket_hash = $1 AND used_at IS NULL AND expires_at > $2";
const SELECT_CREDENTIALS_BY_EMAIL: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE email = $1"
);
/// A login's one read: whether the email is tombstoned, and the user with their hash when
/// there is one. Always exactly one row (the probe), so that an unknown email costs the same
/// query as a known one.
const SELECT_CREDENTIALS_FOR_LOGIN: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM tombstones WHERE tombstones.email = $1) AS tombstoned, ",
    user_columns!(),
    ", password_hash FROM (SELECT 1 AS probe) AS probe LEFT JOIN users ON users.email = $1"
);
const SELECT_CREDENTIALS_BY_LEGACY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    ", password_hash FROM users WHERE legacy_id = $1"
);
/// The binds of [`INSERT_USER`] for a [`NewUser`], in the statement's order: one list for
/// every insert of a user, on both databases.
macro_rules! bind_new_user {
    ($query:expr, $new:expr, $user_id:expr, $now:expr) => {{
        let new: &NewUser<'_> = $new;
        let p = new.profile;
        $query
            .bind($user_id)
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
            .bind($now)
            // The login that migrates a user is their first login in the store.
            .bind((new.source == Source::LoginMigration).then_some($now))
            .bind(new.blocked)
            .bind(new.password_change_required)
    }};
}

const INSERT_USER: &str = concat!(
    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
     name, given_name, family_name, nickname, picture, user_metadata, app_metadata, source, \
     created_at, updated_at, last_login_at, blocked, password_change_required) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18) \
     ON CONFLICT DO NOTHING RETURNING ",
    user_columns!()
);
/// The update of a successful login (see [`Repository::record_login`]).
macro_rules! record_login_update {
    () => {
        "UPDATE users SET last_login_at = $1, \
           password_hash = CASE WHEN password_hash = $3 AND $4 IS NOT NULL THEN $4 ELSE password_hash END, \
           updated_at = CASE WHEN password_hash = $3 AND $4 IS NOT NULL THEN $1 ELSE updated_at END, \
           password_change_required = CASE WHEN password_hash = $3 AND $4 IS NOT NULL AND $5 \
             THEN TRUE ELSE password_change_required END \
         WHERE user_id = $2 RETURNING "
    };
}
const RECORD_LOGIN: &str = concat!(record_login_update!(), user_columns!(), ", password_hash");
/// PostgreSQL: the login's update and its event in one statement (a data-modifying CTE), so
/// a login's write is one round trip and one commit instead of four round trips. The event
/// is written only for a user without a second factor (theirs is written when the code is
/// accepted), and says whether the upgrade was written (a concurrent change wins over it).
const RECORD_LOGIN_WITH_EVENT: &str = concat!(
    "WITH updated AS (",
    record_login_update!(),
    user_columns!(),
    ", password_hash), logged AS (\
       INSERT INTO events (event_id, kind, user_id, legacy_id, email, detail, occurred_at, event_count) \
       SELECT $6, $7, user_id, legacy_id, CASE WHEN $8 THEN display_email END, \
         CASE WHEN password_hash = $4 AND $4 <> $3 THEN $9 ELSE $10 END, $1, 1 \
       FROM updated WHERE NOT mfa_enrolled) \
     SELECT ",
    user_columns!(),
    ", password_hash FROM updated"
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
            credentials_changed_at: self.credentials_changed_at,
            blocked: self.blocked,
            password_change_required: self.password_change_required,
            mfa_enrolled: self.mfa_enrolled,
        })
    }
}

impl Repository {
    pub fn new(db: Db, clock: Clock) -> Self {
        Self { db, clock }
    }

    /// The time this store's decisions use.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
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

    pub async fn find_by_legacy_id(&self, legacy_id: &str) -> Result<Option<User>, sqlx::Error> {
        self.find_one(SELECT_BY_LEGACY_ID, legacy_id).await
    }

    pub(crate) async fn find_credentials_by_id(
        &self,
        user_id: &str,
    ) -> Result<Option<(User, String)>, sqlx::Error> {
        self.find_one_with_hash(SELECT_CREDENTIALS_BY_ID, user_id)
            .await
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

    /// What a login reads, in one query: the user and their stored hash (if any) and whether
    /// the email is tombstoned (a deleted user's email must not reach the legacy store).
    pub(crate) async fn find_login_credentials(
        &self,
        normalized_email: &str,
    ) -> Result<(Option<(User, String)>, bool), sqlx::Error> {
        use sqlx::{FromRow as _, Row as _};
        let (row, tombstoned): (Option<CredentialsRow>, bool) = with_db!(&self.db, pool => async {
            let row = sqlx::query(SELECT_CREDENTIALS_FOR_LOGIN)
                .bind(normalized_email)
                .fetch_one(pool)
                .await?;
            let tombstoned: bool = row.try_get("tombstoned")?;
            let found = match row.try_get::<Option<String>, _>("user_id")? {
                Some(_) => Some(CredentialsRow::from_row(&row)?),
                None => None,
            };
            Ok::<_, sqlx::Error>((found, tombstoned))
        }.await)?;
        let found = row
            .map(|r| Ok::<_, sqlx::Error>((r.user.into_user()?, r.password_hash)))
            .transpose()?;
        Ok((found, tombstoned))
    }

    /// Up to `limit` stored hashes kept in a legacy format (backfilled users who have not
    /// logged in since): what a legacy check costs, for pricing refusals.
    pub(crate) async fn legacy_format_hashes(
        &self,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT password_hash FROM users WHERE password_hash NOT LIKE '$argon2id$%' LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await
        })
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
        let now = self.clock.now();
        let user_id = uuid::Uuid::now_v7().to_string();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<UserRow> = bind_new_user!(sqlx::query_as(INSERT_USER), new, &user_id, now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = &row {
                emit!(tx, &NewEvent::arrival(row), now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
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
        // With an upgrade: the password just verified should be changed (the policy of
        // migrated passwords, applied when a kept legacy hash is first verified).
        requires_change: bool,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let pool = match &self.db {
            // One statement (see RECORD_LOGIN_WITH_EVENT): the same update and event as
            // SQLite's transaction below, where round trips cost nothing.
            Db::Postgres(pool) => pool,
            Db::Sqlite(pool) => {
                return self
                    .record_login_sqlite(
                        pool,
                        now,
                        user_id,
                        verified_hash,
                        upgraded_hash,
                        requires_change,
                    )
                    .await;
            }
        };
        {
            let event = NewEvent::for_user(EventKind::LoggedIn, user_id, None, "");
            let detail = |password_rehashed| {
                serde_json::to_string(&EventDetail {
                    password_rehashed,
                    ..EventDetail::default()
                })
                .unwrap_or_else(|_| "{}".to_owned())
            };
            let row: Option<CredentialsRow> = sqlx::query_as(RECORD_LOGIN_WITH_EVENT)
                .bind(now)
                .bind(user_id)
                .bind(verified_hash)
                .bind(upgraded_hash)
                .bind(requires_change)
                .bind(&event.event_id)
                .bind(event.kind.as_str())
                .bind(EventKind::LoggedIn.carries_email())
                .bind(detail(true))
                .bind(detail(false))
                .fetch_optional(pool)
                .await?;
            row.map(|r| r.user.into_user()).transpose()
        }
    }

    async fn record_login_sqlite(
        &self,
        pool: &sqlx::SqlitePool,
        now: DateTime<Utc>,
        user_id: &str,
        verified_hash: &str,
        upgraded_hash: Option<&str>,
        requires_change: bool,
    ) -> Result<Option<User>, sqlx::Error> {
        let row: Option<UserRow> = async {
            let mut tx = pool.begin().await?;
            let row: Option<CredentialsRow> = sqlx::query_as(RECORD_LOGIN)
                .bind(now)
                .bind(user_id)
                .bind(verified_hash)
                .bind(upgraded_hash)
                .bind(requires_change)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(CredentialsRow {
                user: row,
                password_hash,
            }) = row
            else {
                return Ok(None);
            };
            // Re-hashed only if the upgrade was written (a concurrent change wins over it).
            let rehashed = upgraded_hash == Some(password_hash.as_str())
                && upgraded_hash != Some(verified_hash);
            // A user with a second factor has logged in only once the code is right: the
            // event is written when the challenge is completed.
            if !row.mfa_enrolled {
                let event = NewEvent::about(EventKind::LoggedIn, &row).with_detail(EventDetail {
                    password_rehashed: rehashed,
                    ..EventDetail::default()
                });
                emit!(tx, [&event], now);
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Some(row))
        }
        .await?;
        row.map(UserRow::into_user).transpose()
    }

    /// Set a new hash only if the stored one is still `expected` (compare-and-swap): a reset
    /// that landed since the old password was checked wins. `None` when it did.
    pub(crate) async fn set_password_if_unchanged(
        &self,
        user_id: &str,
        expected: &str,
        password_hash: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<UserRow> = sqlx::query_as(SET_PASSWORD_IF_UNCHANGED)
                .bind(user_id)
                .bind(password_hash)
                .bind(now)
                .bind(expected)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = &row {
                emit!(tx, [&NewEvent::about(EventKind::PasswordChanged, row)], now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Change the email (unverified again). `Err` with a unique violation when it is taken.
    pub(crate) async fn set_email(
        &self,
        user_id: &str,
        email: &Email,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<UserRow> = sqlx::query_as(SET_EMAIL)
                .bind(user_id)
                .bind(email.normalized())
                .bind(email.display())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = &row {
                emit!(tx, [&NewEvent::about(EventKind::EmailChanged, row)], now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Delete a user and leave their tombstone, in one transaction.
    /// Change a user's account state (`None`: leave as is); `None` when there is no such
    /// user.
    pub(crate) async fn set_account_state(
        &self,
        user_id: &str,
        blocked: Option<bool>,
        password_change_required: Option<bool>,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let kind = blocked.map(|blocked| {
            if blocked {
                EventKind::Blocked
            } else {
                EventKind::Unblocked
            }
        });
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<UserRow> = sqlx::query_as(SET_ACCOUNT_STATE)
                .bind(user_id)
                .bind(blocked)
                .bind(password_change_required)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = &row {
                // Requiring a password change is not an event of its own: the user's next
                // password change is.
                if let Some(kind) = kind {
                    emit!(tx, [&NewEvent::about(kind, row)], now);
                }
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Set the `fields` of `profile` on a user, in one statement (a concurrent update of
    /// other fields is not lost). `None`: no such user.
    pub(crate) async fn update_profile(
        &self,
        user_id: &str,
        fields: ProfileFields,
        profile: &Profile,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let detail = EventDetail {
            profile_fields: fields.names().map(str::to_owned).collect(),
            ..EventDetail::default()
        };
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<UserRow> = sqlx::query_as(UPDATE_PROFILE)
                .bind(user_id)
                .bind(fields.name)
                .bind(profile.name.as_deref())
                .bind(fields.given_name)
                .bind(profile.given_name.as_deref())
                .bind(fields.family_name)
                .bind(profile.family_name.as_deref())
                .bind(fields.nickname)
                .bind(profile.nickname.as_deref())
                .bind(fields.picture)
                .bind(profile.picture.as_deref())
                .bind(fields.user_metadata)
                .bind(Json(&profile.user_metadata))
                .bind(fields.app_metadata)
                .bind(Json(&profile.app_metadata))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = &row {
                let event = NewEvent::about(EventKind::ProfileUpdated, row).with_detail(detail.clone());
                emit!(tx, [&event], now);
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    pub(crate) async fn delete_with_tombstone(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        let tombstone_id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let deleted: Option<(Option<String>,)> = sqlx::query_as(
                "INSERT INTO tombstones (tombstone_id, user_id, legacy_id, email, deleted_at) \
                 SELECT $1, user_id, legacy_id, email, $2 FROM users WHERE user_id = $3 RETURNING legacy_id",
            )
            .bind(&tombstone_id)
            .bind(now)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM users WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            if let Some((legacy_id,)) = &deleted {
                let event = NewEvent::for_user(EventKind::Deleted, user_id, legacy_id.as_deref(), "");
                emit!(tx, [&event], now);
            }
            tx.commit().await?;
            Ok(deleted.is_some())
        }.await)
    }

    pub(crate) async fn is_legacy_id_tombstoned(
        &self,
        legacy_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i32> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT 1 FROM tombstones WHERE legacy_id = $1").bind(legacy_id).fetch_optional(pool).await
        })?;
        Ok(found.is_some())
    }

    pub async fn migration_counts(&self) -> Result<MigrationCounts, sqlx::Error> {
        let by_source: Vec<(String, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as("SELECT source, COUNT(*) FROM users GROUP BY source").fetch_all(pool).await
        })?;
        let tombstoned_legacy: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM tombstones WHERE legacy_id IS NOT NULL").fetch_one(pool).await
        })?;
        let mut counts = MigrationCounts {
            tombstoned_legacy,
            ..MigrationCounts::default()
        };
        for (source, n) in by_source {
            match Source::parse(&source) {
                Some(Source::Signup) => counts.signup = n,
                Some(Source::LoginMigration) => counts.login_migration = n,
                Some(Source::ResetMigration) => counts.reset_migration = n,
                Some(Source::Backfill) => counts.backfill = n,
                None => {}
            }
        }
        Ok(counts)
    }
}

impl Repository {}

// After the macros above: the submodules use them (`macro_rules!` is textually scoped).
mod backfill;
mod events;
mod factors;
mod logins;
mod throttle;
mod tickets;

pub(crate) use factors::{
    FactorRow, HeldImport, MAX_WRONG_CODES, NewFactor, PendingImportRow, VerifiedBy,
};

pub(crate) use backfill::BackfillRow;
use events::{EventDetail, NewEvent, emit};
pub use events::{EventKind, StoredEvent};
pub(crate) use tickets::TicketRow;

/// A migrated SQLite store in `dir`, for unit tests.
#[cfg(test)]
pub(crate) async fn test_repository(dir: &std::path::Path, clock: Clock) -> Repository {
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let db = Db::connect("user-store", &url, 2).await.expect("sqlite");
    db.migrate(
        &crate::startup::migrator_postgres(),
        &crate::startup::migrator_sqlite(),
    )
    .await
    .expect("migrate");
    Repository::new(db, clock)
}

/// A user who signed up with `email`, their hash `password_hash`, for unit tests.
#[cfg(test)]
pub(crate) async fn test_user(repository: &Repository, email: &str, password_hash: &str) -> User {
    let email = Email::parse(email).expect("email");
    let InsertOutcome::Inserted(user) = repository
        .insert(&NewUser {
            email: &email,
            email_verified: false,
            legacy_id: None,
            password_hash,
            profile: &Profile::default(),
            source: Source::Signup,
            blocked: false,
            password_change_required: false,
        })
        .await
        .expect("insert")
    else {
        panic!("a fresh database has no conflict");
    };
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ChangePassword's compare-and-swap with the interleaving that matters, step by step
    /// (no timing involved): the change verified the old password against hash A; a reset
    /// then wrote B; the change's write, which expects A, must find nothing to update — the
    /// reset wins and the change is told to retry.
    #[tokio::test]
    async fn a_password_change_never_overwrites_a_concurrent_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repository = test_repository(dir.path(), Clock::system()).await;
        let user = test_user(&repository, "cas@example.com", "hash-A").await;
        // The reset lands between the change's check and its write.
        assert!(
            repository
                .set_password_if_unchanged(&user.user_id, "hash-A", "hash-B")
                .await
                .expect("reset")
                .is_some()
        );
        let change = repository
            .set_password_if_unchanged(&user.user_id, "hash-A", "hash-C")
            .await
            .expect("change");
        assert!(change.is_none(), "the change must not overwrite the reset");
        let (_, stored) = repository
            .find_credentials_by_id(&user.user_id)
            .await
            .expect("read")
            .expect("user");
        assert_eq!(stored, "hash-B");
    }
}

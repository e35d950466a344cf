//! The `users` table, on PostgreSQL or SQLite. Every query is written once (`$n`
//! placeholders work on both) and uniqueness is left to the database's constraints.

use crate::model::{Profile, Source, ThrottleKey, User};
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
}

/// One throttle counter as it stands (a row of `login_throttle`, by key: an email, an
/// (email, source), or a calling client).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ThrottleRow {
    pub failures: i64,
    pub window_started_at: DateTime<Utc>,
    pub locked_until: Option<DateTime<Utc>>,
    /// Attempts admitted and not settled yet, and when the latest was admitted.
    pub in_flight: i64,
    pub in_flight_since: Option<DateTime<Utc>>,
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
}

/// A ticket as stored (its hash is the key; the ticket itself is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TicketRow {
    pub kind: String,
    pub user_id: Option<String>,
    pub legacy_id: Option<String>,
    pub email: String,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
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
         credentials_changed_at"
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
    "UPDATE users SET password_hash = $2, updated_at = $3, credentials_changed_at = $3 WHERE user_id = $1 RETURNING ",
    user_columns!()
);
const SET_PASSWORD_IF_UNCHANGED: &str = concat!(
    "UPDATE users SET password_hash = $2, updated_at = $3, credentials_changed_at = $3 \
     WHERE user_id = $1 AND password_hash = $4 RETURNING ",
    user_columns!()
);
const SET_PASSWORD_BY_LEGACY_ID: &str = concat!(
    "UPDATE users SET password_hash = $3, updated_at = $4, credentials_changed_at = $4 \
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
const CONSUME_TICKET: &str = "UPDATE tickets SET used_at = $2 \
     WHERE ticket_hash = $1 AND used_at IS NULL AND expires_at > $2";
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
    }};
}

const INSERT_USER: &str = concat!(
    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
     name, given_name, family_name, nickname, picture, user_metadata, app_metadata, source, \
     created_at, updated_at, last_login_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16) \
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
            credentials_changed_at: self.credentials_changed_at,
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
        let row: Option<UserRow> = with_db!(&self.db, pool => {
            bind_new_user!(sqlx::query_as(INSERT_USER), new, &user_id, now)
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
        let now = self.clock.now();
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

    /// Set a new hash only if the stored one is still `expected` (compare-and-swap): a reset
    /// that landed since the old password was checked wins. `None` when it did.
    pub(crate) async fn set_password_if_unchanged(
        &self,
        user_id: &str,
        expected: &str,
        password_hash: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        let row: Option<UserRow> = with_db!(&self.db, pool => {
            sqlx::query_as(SET_PASSWORD_IF_UNCHANGED)
                .bind(user_id)
                .bind(password_hash)
                .bind(self.clock.now())
                .bind(expected)
                .fetch_optional(pool)
                .await
        })?;
        row.map(UserRow::into_user).transpose()
    }

    /// Use up every outstanding reset ticket of a user (or, for a legacy-only identity, of
    /// the email): after a reset or a password change, an older ticket must not reset again.
    pub(crate) async fn revoke_reset_tickets(
        &self,
        user_id: &str,
        email: &str,
    ) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE tickets SET used_at = $3 WHERE kind = 'password_reset' AND used_at IS NULL \
                 AND (user_id = $1 OR (user_id IS NULL AND email = $2))",
            )
            .bind(user_id)
            .bind(email)
            .bind(self.clock.now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }

    /// Change the email (unverified again). `Err` with a unique violation when it is taken.
    pub(crate) async fn set_email(
        &self,
        user_id: &str,
        email: &Email,
    ) -> Result<Option<User>, sqlx::Error> {
        let row: Option<UserRow> = with_db!(&self.db, pool => {
            sqlx::query_as(SET_EMAIL)
                .bind(user_id)
                .bind(email.normalized())
                .bind(email.display())
                .bind(self.clock.now())
                .fetch_optional(pool)
                .await
        })?;
        row.map(UserRow::into_user).transpose()
    }

    /// Delete a user and leave their tombstone, in one transaction.
    pub(crate) async fn delete_with_tombstone(&self, user_id: &str) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        let tombstone_id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO tombstones (tombstone_id, user_id, legacy_id, email, deleted_at) \
                 SELECT $1, user_id, legacy_id, email, $2 FROM users WHERE user_id = $3",
            )
            .bind(&tombstone_id)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM users WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(inserted == 1)
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

    pub(crate) async fn is_email_tombstoned(
        &self,
        normalized_email: &str,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<i32> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT 1 FROM tombstones WHERE email = $1 LIMIT 1")
                .bind(normalized_email)
                .fetch_optional(pool)
                .await
        })?;
        Ok(found.is_some())
    }

    pub(crate) async fn insert_ticket(
        &self,
        ticket_hash: &str,
        kind: &str,
        user_id: Option<&str>,
        legacy_id: Option<&str>,
        email: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO tickets (ticket_hash, kind, user_id, legacy_id, email, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(ticket_hash)
            .bind(kind)
            .bind(user_id)
            .bind(legacy_id)
            .bind(email)
            .bind(self.clock.now())
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    pub(crate) async fn find_ticket(
        &self,
        ticket_hash: &str,
    ) -> Result<Option<TicketRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as("SELECT kind, user_id, legacy_id, email, expires_at, used_at FROM tickets WHERE ticket_hash = $1")
                .bind(ticket_hash)
                .fetch_optional(pool)
                .await
        })
    }

    /// Consume a reset ticket and set the password of the store user it names, in one
    /// transaction. `None`: the ticket was consumed concurrently or expired (nothing changed),
    /// or the user is gone.
    pub(crate) async fn reset_password_with_ticket(
        &self,
        ticket_hash: &str,
        user_id: &str,
        password_hash: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        self.consume_ticket_and_update(ticket_hash, SET_PASSWORD, user_id, password_hash)
            .await
    }

    /// Consume a verification ticket and mark the email verified, if it is still the user's.
    pub(crate) async fn verify_email_with_ticket(
        &self,
        ticket_hash: &str,
        user_id: &str,
        email: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        self.consume_ticket_and_update(ticket_hash, SET_EMAIL_VERIFIED, user_id, email)
            .await
    }

    /// Consume a ticket and run `update` (parameters: user id, `value`, now) in one
    /// transaction, committed only if both happened: a ticket is never used up for nothing.
    async fn consume_ticket_and_update(
        &self,
        ticket_hash: &str,
        update: &'static str,
        user_id: &str,
        value: &str,
    ) -> Result<Option<User>, sqlx::Error> {
        let now = self.clock.now();
        let row: Option<UserRow> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(CONSUME_TICKET).bind(ticket_hash).bind(now).execute(&mut *tx).await?.rows_affected();
            if consumed != 1 {
                return Ok(None);
            }
            let row: Option<UserRow> =
                sqlx::query_as(update).bind(user_id).bind(value).bind(now).fetch_optional(&mut *tx).await?;
            if row.is_some() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }.await)?;
        row.map(UserRow::into_user).transpose()
    }

    /// Import a legacy user with the password set by a reset ticket, consuming the ticket in
    /// the same transaction. If the legacy user was imported meanwhile (same legacy id and
    /// email), their password is replaced instead.
    pub(crate) async fn import_with_ticket(
        &self,
        ticket_hash: &str,
        new: &NewUser<'_>,
    ) -> Result<Option<(User, bool)>, sqlx::Error> {
        let now = self.clock.now();
        let user_id = uuid::Uuid::now_v7().to_string();
        let legacy_id = new.legacy_id.unwrap_or_default();
        let result: Option<(UserRow, bool)> = with_db!(&self.db, pool => async {
            let mut tx = pool.begin().await?;
            let consumed = sqlx::query(CONSUME_TICKET).bind(ticket_hash).bind(now).execute(&mut *tx).await?.rows_affected();
            if consumed != 1 {
                return Ok(None);
            }
            let created: Option<UserRow> = bind_new_user!(sqlx::query_as(INSERT_USER), new, &user_id, now)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match created {
                Some(row) => Some((row, true)),
                None => sqlx::query_as::<_, UserRow>(SET_PASSWORD_BY_LEGACY_ID)
                    .bind(legacy_id)
                    .bind(new.email.normalized())
                    .bind(new.password_hash)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| (row, false)),
            };
            if outcome.is_some() {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(outcome)
        }.await)?;
        result
            .map(|(row, created)| Ok((row.into_user()?, created)))
            .transpose()
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

    /// Insert legacy users with their legacy hashes in one statement, skipping those already
    /// in the store (by legacy id or email: the unique constraints decide, so a concurrent
    /// login or a replayed batch never makes a second row) and deleted ones.
    pub(crate) async fn backfill(
        &self,
        users: &[BackfillRow<'_>],
    ) -> Result<BackfillResult, sqlx::Error> {
        if users.is_empty() {
            return Ok(BackfillResult::default());
        }
        let now = self.clock.now();
        let legacy_ids: Vec<&str> = users.iter().map(|u| u.legacy_id).collect();
        let ids: Vec<String> = users
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let inserted: Vec<(String, String)> = match &self.db {
            Db::Postgres(pool) => {
                let col = |f: fn(&BackfillRow<'_>) -> Option<String>| -> Vec<Option<String>> {
                    users.iter().map(f).collect()
                };
                sqlx::query_as(
                    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
                       name, given_name, family_name, nickname, picture, source, created_at, updated_at) \
                     SELECT v.user_id, v.email, v.display_email, v.email_verified, v.legacy_id, v.password_hash, \
                       v.name, v.given_name, v.family_name, v.nickname, v.picture, 'backfill', $12, $12 \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], \
                                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) \
                       AS v(user_id, email, display_email, email_verified, legacy_id, password_hash, \
                            name, given_name, family_name, nickname, picture) \
                     WHERE NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.legacy_id = v.legacy_id) \
                     ON CONFLICT DO NOTHING RETURNING user_id, legacy_id",
                )
                .bind(&ids)
                .bind(users.iter().map(|u| u.email.normalized()).collect::<Vec<_>>())
                .bind(users.iter().map(|u| u.email.display()).collect::<Vec<_>>())
                .bind(users.iter().map(|u| u.email_verified).collect::<Vec<_>>())
                .bind(&legacy_ids)
                .bind(users.iter().map(|u| u.password_hash).collect::<Vec<_>>())
                .bind(col(|u| u.profile.name.clone()))
                .bind(col(|u| u.profile.given_name.clone()))
                .bind(col(|u| u.profile.family_name.clone()))
                .bind(col(|u| u.profile.nickname.clone()))
                .bind(col(|u| u.profile.picture.clone()))
                .bind(now)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
                       name, given_name, family_name, nickname, picture, source, created_at, updated_at) \
                     SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
                       column10, column11, 'backfill', column12, column12 FROM (",
                );
                insert.push_values(users.iter().zip(&ids), |mut row, (u, id)| {
                    row.push_bind(id.as_str())
                        .push_bind(u.email.normalized())
                        .push_bind(u.email.display())
                        .push_bind(u.email_verified)
                        .push_bind(u.legacy_id)
                        .push_bind(u.password_hash)
                        .push_bind(u.profile.name.as_deref())
                        .push_bind(u.profile.given_name.as_deref())
                        .push_bind(u.profile.family_name.as_deref())
                        .push_bind(u.profile.nickname.as_deref())
                        .push_bind(u.profile.picture.as_deref())
                        .push_bind(now);
                });
                // The WHERE also keeps SQLite from reading ON CONFLICT as part of the SELECT.
                insert.push(
                    ") WHERE column5 NOT IN (SELECT legacy_id FROM tombstones WHERE legacy_id IS NOT NULL) \
                     ON CONFLICT DO NOTHING RETURNING user_id, legacy_id",
                );
                insert.build_query_as().fetch_all(pool).await?
            }
        };
        // The usual page inserts everyone; only a page with skipped users (already migrated,
        // deleted, or replayed after a crash) needs to know which and why.
        let (tombstoned, backfilled) = if inserted.len() == users.len() {
            (0, inserted.clone())
        } else {
            self.backfill_skips(&legacy_ids).await?
        };
        Ok(BackfillResult {
            inserted,
            tombstoned,
            backfilled,
        })
    }
}

impl Repository {
    /// Count one failure (a new window when the last one is over, or when the last lock has
    /// expired); lock the email when the count reaches `max`. One statement, so concurrent
    /// failures on any replica all count.
    pub(crate) async fn record_failure(
        &self,
        key: &ThrottleKey,
        max: i64,
        window: chrono::Duration,
        lockout: chrono::Duration,
        ends_attempt: bool,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let now = self.clock.now();
        let window_start = now - window;
        let locked_until = now + lockout;
        with_db!(&self.db, pool => {
            sqlx::query_scalar(
                // A count starts over when its window is over or its lock has expired; a
                // lock in force is kept as it is (attempts during it do not extend it).
                "INSERT INTO login_throttle (email, failures, window_started_at, locked_until) \
                 VALUES ($1, 1, $2, CASE WHEN 1 >= $5 THEN $4 ELSE NULL END) \
                 ON CONFLICT (email) DO UPDATE SET \
                   failures = CASE WHEN login_throttle.window_started_at < $3 \
                       OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                     THEN 1 ELSE login_throttle.failures + 1 END, \
                   window_started_at = CASE WHEN login_throttle.window_started_at < $3 \
                       OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                     THEN $2 ELSE login_throttle.window_started_at END, \
                   locked_until = CASE \
                     WHEN login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until > $2 THEN login_throttle.locked_until \
                     WHEN (CASE WHEN login_throttle.window_started_at < $3 \
                         OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2) \
                       THEN 1 ELSE login_throttle.failures + 1 END) >= $5 THEN $4 \
                     ELSE NULL END, \
                   in_flight = CASE WHEN login_throttle.in_flight > $6 THEN login_throttle.in_flight - $6 ELSE 0 END \
                 RETURNING locked_until",
            )
            .bind(key.as_str())
            .bind(now)
            .bind(window_start)
            .bind(locked_until)
            .bind(max)
            .bind(i32::from(ends_attempt))
            .fetch_one(pool)
            .await
        })
    }

    /// Admit one login attempt for `key`, counting it as in flight, if the key is not locked
    /// and its failures in the current window plus the attempts in flight stay under `max`.
    /// One statement, so that parallel attempts on any replica are each counted before any
    /// of them is checked. Attempts admitted before `stale_before` are forgotten (whoever
    /// admitted them died before settling). `true` when admitted.
    pub(crate) async fn admit_attempt(
        &self,
        key: &ThrottleKey,
        max: i64,
        window: chrono::Duration,
        stale_before: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        let window_start = now - window;
        // A count starts over when its window is over or its lock has expired.
        const RESET: &str = "(login_throttle.window_started_at < $3 \
            OR (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until <= $2))";
        const STALE: &str =
            "(login_throttle.in_flight_since IS NULL OR login_throttle.in_flight_since < $4)";
        let sql = format!(
            "INSERT INTO login_throttle \
               (email, failures, window_started_at, locked_until, in_flight, in_flight_since) \
             VALUES ($1, 0, $2, NULL, 1, $2) \
             ON CONFLICT (email) DO UPDATE SET \
               failures = CASE WHEN {RESET} THEN 0 ELSE login_throttle.failures END, \
               window_started_at = CASE WHEN {RESET} THEN $2 ELSE login_throttle.window_started_at END, \
               locked_until = CASE WHEN {RESET} THEN NULL ELSE login_throttle.locked_until END, \
               in_flight = CASE WHEN {STALE} THEN 1 ELSE login_throttle.in_flight + 1 END, \
               in_flight_since = $2 \
             WHERE NOT (login_throttle.locked_until IS NOT NULL AND login_throttle.locked_until > $2) \
               AND (CASE WHEN {RESET} THEN 0 ELSE login_throttle.failures END) \
                 + (CASE WHEN {STALE} THEN 0 ELSE login_throttle.in_flight END) < $5 \
             RETURNING in_flight"
        );
        with_db!(&self.db, pool => {
            sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql))
                .bind(key.as_str())
                .bind(now)
                .bind(window_start)
                .bind(stale_before)
                .bind(max)
                .fetch_optional(pool)
                .await
                .map(|admitted| admitted.is_some())
        })
    }

    /// A key's counters as they stand: failures, when the window started, until when it is
    /// locked, attempts in flight and when the latest was admitted. A read, so that attempts
    /// waiting their turn look without taking the row's write lock.
    pub(crate) async fn attempt_state(
        &self,
        key: &ThrottleKey,
    ) -> Result<Option<ThrottleRow>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT CAST(failures AS BIGINT) AS failures, window_started_at, locked_until, \
                   CAST(in_flight AS BIGINT) AS in_flight, in_flight_since \
                 FROM login_throttle WHERE email = $1",
            )
            .bind(key.as_str())
            .fetch_optional(pool)
            .await
        })
    }

    /// An admitted attempt is over without a failure: `succeeded` forgets the key's failures
    /// (a right password), otherwise it only stops counting as in flight.
    pub(crate) async fn end_attempt(
        &self,
        key: &ThrottleKey,
        succeeded: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = if succeeded {
            "UPDATE login_throttle SET failures = 0, locked_until = NULL, \
               in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END WHERE email = $1"
        } else {
            "UPDATE login_throttle SET \
               in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END WHERE email = $1"
        };
        with_db!(&self.db, pool => {
            sqlx::query(sql).bind(key.as_str()).execute(pool).await.map(drop)
        })
    }

    /// Delete tickets that expired before `before`; how many.
    pub(crate) async fn prune_tickets(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM tickets WHERE expires_at < $1")
                .bind(before)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
    }

    /// Delete throttle rows whose window started before `before` and that lock nothing any
    /// more: they no longer count toward anything.
    pub(crate) async fn prune_throttle(&self, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM login_throttle WHERE window_started_at < $1 \
                 AND (locked_until IS NULL OR locked_until < $2)",
            )
            .bind(before)
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })
    }

    /// Forget an email's failures, from every source (keys `"{email} source:…"`; a range,
    /// not LIKE: emails may hold `_` and `%`).
    pub(crate) async fn clear_failures(&self, email: &str) -> Result<(), sqlx::Error> {
        let first = format!("{email} source:");
        let after = format!("{email} source;");
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM login_throttle WHERE email = $1 OR (email >= $2 AND email < $3)")
                .bind(email)
                .bind(first)
                .bind(after)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Of a page's legacy ids: how many are tombstoned, and which are in the store with
    /// source backfill (inserted now or by an earlier attempt).
    async fn backfill_skips(
        &self,
        legacy_ids: &[&str],
    ) -> Result<(i64, Vec<(String, String)>), sqlx::Error> {
        match &self.db {
            Db::Postgres(pool) => {
                let tombstoned: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM tombstones WHERE legacy_id = ANY($1)")
                        .bind(legacy_ids)
                        .fetch_one(pool)
                        .await?;
                let backfilled =
                    sqlx::query_as("SELECT user_id, legacy_id FROM users WHERE legacy_id = ANY($1) AND source = 'backfill'")
                        .bind(legacy_ids)
                        .fetch_all(pool)
                        .await?;
                Ok((tombstoned, backfilled))
            }
            Db::Sqlite(pool) => {
                let mut count = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "SELECT COUNT(*) FROM tombstones WHERE legacy_id IN (",
                );
                let mut separated = count.separated(", ");
                for id in legacy_ids {
                    separated.push_bind(*id);
                }
                count.push(")");
                let tombstoned: i64 = count.build_query_scalar().fetch_one(pool).await?;
                let mut select = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "SELECT user_id, legacy_id FROM users WHERE source = 'backfill' AND legacy_id IN (",
                );
                let mut separated = select.separated(", ");
                for id in legacy_ids {
                    separated.push_bind(*id);
                }
                select.push(")");
                let backfilled = select.build_query_as().fetch_all(pool).await?;
                Ok((tombstoned, backfilled))
            }
        }
    }
}

/// One user for a backfill insert.
pub(crate) struct BackfillRow<'a> {
    pub legacy_id: &'a str,
    pub email: &'a Email,
    pub email_verified: bool,
    pub profile: &'a Profile,
    pub password_hash: &'a str,
}

#[derive(Debug, Default)]
pub(crate) struct BackfillResult {
    /// (user_id, legacy_id) of the rows inserted.
    pub inserted: Vec<(String, String)>,
    pub tombstoned: i64,
    /// (user_id, legacy_id) of every user of the batch held with source backfill.
    pub backfilled: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Profile, Source};

    /// ChangePassword's compare-and-swap with the interleaving that matters, step by step
    /// (no timing involved): the change verified the old password against hash A; a reset
    /// then wrote B; the change's write, which expects A, must find nothing to update — the
    /// reset wins and the change is told to retry.
    #[tokio::test]
    async fn a_password_change_never_overwrites_a_concurrent_reset() {
        let path = std::env::temp_dir().join(format!("trickle-cas-{}.db", uuid::Uuid::now_v7()));
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect("user-store", &url, 2).await.expect("sqlite");
        db.migrate(
            &crate::startup::migrator_postgres(),
            &crate::startup::migrator_sqlite(),
        )
        .await
        .expect("migrate");
        let repository = Repository::new(db, Clock::system());
        let email = Email::parse("cas@example.com").expect("email");
        let InsertOutcome::Inserted(user) = repository
            .insert(&NewUser {
                email: &email,
                email_verified: false,
                legacy_id: None,
                password_hash: "hash-A",
                profile: &Profile::default(),
                source: Source::Signup,
            })
            .await
            .expect("insert")
        else {
            panic!("a fresh database has no conflict");
        };
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
        let _ = std::fs::remove_file(&path);
    }
}

//! Backfill pages: many legacy users inserted in one statement, existing and deleted ones
//! skipped by the database's constraints.

use super::events::{BatchedEvent, EventDetail};
use super::*;
use trickle_service_kit::db::{CopyRows, copy_in, is_unique_violation};

/// One user for a backfill insert.
pub(crate) struct BackfillRow<'a> {
    pub legacy_id: &'a str,
    pub email: &'a Email,
    pub email_verified: bool,
    pub profile: &'a Profile,
    pub password_hash: &'a str,
    pub blocked: bool,
}

#[derive(Debug, Default)]
pub(crate) struct BackfillResult {
    /// (user_id, legacy_id) of the rows inserted.
    pub inserted: Vec<(String, String)>,
    pub tombstoned: i64,
    /// (user_id, legacy_id) of every user of the batch held with source backfill.
    pub backfilled: Vec<(String, String)>,
}

impl Repository {
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
        // The page's USER_MIGRATED events, one per inserted user, written in the page's
        // transaction as one outbox row (the sequencer gives it a position per user).
        let migrated = |inserted: &[(String, String)]| -> Vec<NewEvent> {
            let by_legacy_id: std::collections::HashMap<&str, &BackfillRow<'_>> =
                users.iter().map(|u| (u.legacy_id, u)).collect();
            let events = inserted
                .iter()
                .map(|(user_id, legacy_id)| BatchedEvent {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    user_id: user_id.clone(),
                    legacy_id: Some(legacy_id.clone()),
                    email: by_legacy_id
                        .get(legacy_id.as_str())
                        .map(|u| u.email.display().to_owned()),
                })
                .collect();
            let detail = EventDetail {
                source: Some(Source::Backfill.as_str().to_owned()),
                ..EventDetail::default()
            };
            NewEvent::batch(EventKind::Migrated, detail, events)
                .into_iter()
                .collect()
        };
        let inserted: Vec<(String, String)> = match &self.db {
            Db::Postgres(pool) => match self
                .backfill_by_copy(pool, users, &ids, now, &migrated)
                .await?
            {
                Some(inserted) => inserted,
                None => {
                    let mut tx = pool.begin().await?;
                    let col = |f: fn(&BackfillRow<'_>) -> Option<String>| -> Vec<Option<String>> {
                        users.iter().map(f).collect()
                    };
                    let inserted: Vec<(String, String)> = sqlx::query_as(
                    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
                       name, given_name, family_name, nickname, picture, source, created_at, updated_at, blocked, \
                       user_metadata, app_metadata) \
                     SELECT v.user_id, v.email, v.display_email, v.email_verified, v.legacy_id, v.password_hash, \
                       v.name, v.given_name, v.family_name, v.nickname, v.picture, 'backfill', $12, $12, v.blocked, \
                       v.user_metadata::jsonb, v.app_metadata::jsonb \
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::text[], \
                                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $13::bool[], \
                                 $14::text[], $15::text[]) \
                       AS v(user_id, email, display_email, email_verified, legacy_id, password_hash, \
                            name, given_name, family_name, nickname, picture, blocked, user_metadata, app_metadata) \
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
                .bind(users.iter().map(|u| u.blocked).collect::<Vec<_>>())
                .bind(users.iter().map(|u| json_text(&u.profile.user_metadata)).collect::<Vec<_>>())
                .bind(users.iter().map(|u| json_text(&u.profile.app_metadata)).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await?;
                    emit!(tx, migrated(&inserted).as_slice(), now);
                    tx.commit().await?;
                    inserted
                }
            },
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
                       name, given_name, family_name, nickname, picture, source, created_at, updated_at, blocked, \
                       user_metadata, app_metadata) \
                     SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, \
                       column10, column11, 'backfill', column12, column12, column13, column14, column15 FROM (",
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
                        .push_bind(now)
                        .push_bind(u.blocked)
                        .push_bind(json_text(&u.profile.user_metadata))
                        .push_bind(json_text(&u.profile.app_metadata));
                });
                // The WHERE also keeps SQLite from reading ON CONFLICT as part of the SELECT.
                insert.push(
                    ") WHERE column5 NOT IN (SELECT legacy_id FROM tombstones WHERE legacy_id IS NOT NULL) \
                     ON CONFLICT DO NOTHING RETURNING user_id, legacy_id",
                );
                let inserted = insert.build_query_as().fetch_all(&mut *tx).await?;
                emit!(tx, migrated(&inserted).as_slice(), now);
                tx.commit().await?;
                inserted
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

    /// The usual PostgreSQL page, where nobody is in the store yet nor deleted: one plain
    /// `COPY` into `users`, with no conflict checks to pay beyond the unique indexes' own.
    /// Answers `None`, having written nothing, when the page needs the careful statement:
    /// someone of it is tombstoned, or already in the store (a login migrated them, an
    /// earlier attempt of the page inserted them; the unique indexes refuse the `COPY`).
    async fn backfill_by_copy(
        &self,
        pool: &sqlx::PgPool,
        users: &[BackfillRow<'_>],
        ids: &[String],
        now: DateTime<Utc>,
        migrated: impl Fn(&[(String, String)]) -> Vec<NewEvent> + Sync,
    ) -> Result<Option<Vec<(String, String)>>, sqlx::Error> {
        let tx = pool.begin().await?;
        let legacy_ids: Vec<&str> = users.iter().map(|u| u.legacy_id).collect();
        let mut rows = CopyRows::with_capacity(users.len() * 256);
        for (u, id) in users.iter().zip(ids) {
            let p = u.profile;
            rows.text(Some(id))
                .text(Some(u.email.normalized()))
                .text(Some(u.email.display()))
                .boolean(u.email_verified)
                .text(Some(u.legacy_id))
                .text(Some(u.password_hash))
                .text(p.name.as_deref())
                .text(p.given_name.as_deref())
                .text(p.family_name.as_deref())
                .text(p.nickname.as_deref())
                .text(p.picture.as_deref())
                .text(Some(Source::Backfill.as_str()))
                .timestamp(now)
                .timestamp(now)
                .boolean(u.blocked)
                .text(Some(&json_text(&p.user_metadata)))
                .text(Some(&json_text(&p.app_metadata)));
            rows.end_row();
        }
        let copied = copy_in(
            tx,
            "COPY users (user_id, email, display_email, email_verified, legacy_id, password_hash, \
               name, given_name, family_name, nickname, picture, source, created_at, updated_at, blocked, \
               user_metadata, app_metadata) FROM STDIN",
            rows,
        )
        .await;
        let mut tx = match copied {
            Ok(tx) => tx,
            // The transaction was rolled back as it dropped: nothing of the page was written.
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Deleted users never come back. Checked after the COPY, from the page's new rows
        // (their user ids, UUIDv7 made above, span one key range): the probe costs what the
        // tombstones hold, and sends no list of ids. Rolled back (as the transaction drops)
        // when one matches; the careful statement then skips them.
        let (first, last) = (ids.iter().min(), ids.iter().max());
        let tombstoned: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users u JOIN tombstones t ON t.legacy_id = u.legacy_id \
             WHERE u.user_id BETWEEN $1 AND $2)",
        )
        .bind(first)
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
        if tombstoned {
            return Ok(None);
        }
        let inserted: Vec<(String, String)> = ids
            .iter()
            .zip(&legacy_ids)
            .map(|(id, legacy_id)| (id.clone(), (*legacy_id).to_owned()))
            .collect();
        emit!(tx, migrated(&inserted).as_slice(), now);
        tx.commit().await?;
        Ok(Some(inserted))
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

/// Metadata as the JSON text both databases take (PostgreSQL casts it to jsonb).
fn json_text(metadata: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(metadata.clone()).to_string()
}

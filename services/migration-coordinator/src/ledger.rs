//! The coordinator's tables: the migration mode and the ledger of migration events.

use crate::config::Mode;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trickle_service_kit::Clock;
use trickle_service_kit::db::{CopyRows, Db, is_unique_violation};
use trickle_service_kit::with_db;

#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
    mode_cache: Arc<Mutex<Option<(Mode, Instant)>>>,
    mode_cache_ttl: Duration,
    /// The coordinator's time: ledger and backfill timestamps, lease expiry (tests move it).
    clock: Clock,
}

impl Ledger {
    /// Record `initial_mode` unless a mode is already stored: the database, not the config
    /// file, is the truth after the first start.
    pub async fn open(
        db: Db,
        initial_mode: Mode,
        mode_cache_ttl: Duration,
        clock: Clock,
    ) -> Result<Self, sqlx::Error> {
        let now = clock.now();
        with_db!(&db, pool => {
            sqlx::query("INSERT INTO migration_state (id, mode, updated_at) VALUES (1, $1, $2) ON CONFLICT DO NOTHING")
                .bind(initial_mode.as_str())
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(Self {
            db,
            mode_cache: Arc::new(Mutex::new(None)),
            mode_cache_ttl,
            clock,
        })
    }

    /// The time the coordinator's decisions use.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The current mode, read from the database at most once per cache period. If the
    /// database cannot be read, the last mode read stands.
    pub async fn mode(&self) -> Result<Mode, sqlx::Error> {
        if let Ok(cache) = self.mode_cache.lock()
            && let Some((mode, read_at)) = *cache
            && read_at.elapsed() < self.mode_cache_ttl
        {
            return Ok(mode);
        }
        match self.read_mode().await {
            Ok(mode) => {
                if let Ok(mut cache) = self.mode_cache.lock() {
                    *cache = Some((mode, Instant::now()));
                }
                Ok(mode)
            }
            Err(e) => {
                let last = self
                    .mode_cache
                    .lock()
                    .ok()
                    .and_then(|c| c.map(|(mode, _)| mode));
                match last {
                    Some(mode) => {
                        tracing::warn!(error = %e, "cannot read the migration mode; keeping the last one read");
                        Ok(mode)
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn read_mode(&self) -> Result<Mode, sqlx::Error> {
        let stored: String = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT mode FROM migration_state WHERE id = 1").fetch_one(pool).await
        })?;
        Mode::parse(&stored)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown migration mode {stored:?}").into()))
    }

    /// Append a migration event.
    pub async fn record_migration(
        &self,
        user_id: &str,
        legacy_id: &str,
        source: LedgerSource,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO migration_events (user_id, legacy_id, source, occurred_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(user_id)
            .bind(legacy_id)
            .bind(source.as_str())
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Append one event per migrated user of a batch, in one statement.
    pub async fn record_migrations(
        &self,
        users: &[(String, String)],
        source: LedgerSource,
    ) -> Result<(), sqlx::Error> {
        if users.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO migration_events (user_id, legacy_id, source, occurred_at) \
                     SELECT u, l, $3, $4 FROM UNNEST($1::text[], $2::text[]) AS v(u, l) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
                .bind(users.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>())
                .bind(source.as_str())
                .bind(now)
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO migration_events (user_id, legacy_id, source, occurred_at) ",
                );
                insert.push_values(users, |mut row, (user_id, legacy_id)| {
                    row.push_bind(user_id.as_str())
                        .push_bind(legacy_id.as_str())
                        .push_bind(source.as_str())
                        .push_bind(now);
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Append the ledger rows of users the store has just created (a backfill page it
    /// inserted whole): their user ids are new, so no row can exist yet and PostgreSQL takes
    /// them by plain `COPY`. Anything else goes through `record_migrations`.
    pub async fn record_new_migrations(
        &self,
        users: &[(String, String)],
        source: LedgerSource,
    ) -> Result<(), sqlx::Error> {
        let Db::Postgres(pool) = &self.db else {
            return self.record_migrations(users, source).await;
        };
        if users.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let mut rows = CopyRows::with_capacity(users.len() * 96);
        for (user_id, legacy_id) in users {
            rows.text(Some(user_id))
                .text(Some(legacy_id))
                .text(Some(source.as_str()))
                .timestamp(now);
            rows.end_row();
        }
        let copied = trickle_service_kit::db::copy_in(
            pool.acquire().await?,
            "COPY migration_events (user_id, legacy_id, source, occurred_at) FROM STDIN",
            rows,
        )
        .await;
        match copied {
            Ok(_) => Ok(()),
            // Not new after all (a replay raced this page): the careful statement skips them.
            Err(e) if is_unique_violation(&e) => self.record_migrations(users, source).await,
            Err(e) => Err(e),
        }
    }

    /// Number of migration events, for tests and status.
    pub async fn count_migrations(&self) -> Result<i64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM migration_events").fetch_one(pool).await)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Store a new mode; this replica sees it at once, the others within their cache period.
    pub async fn set_mode(&self, mode: Mode) -> Result<(), sqlx::Error> {
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE migration_state SET mode = $1, updated_at = $2 WHERE id = 1")
                .bind(mode.as_str())
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        if let Ok(mut cache) = self.mode_cache.lock() {
            *cache = Some((mode, Instant::now()));
        }
        Ok(())
    }

    /// Count a failed migration attempt under `reason` (a bounded set of words).
    pub async fn record_failure(&self, reason: &str) -> Result<(), sqlx::Error> {
        let failure_id = uuid::Uuid::now_v7().to_string();
        let now = self.clock.now();
        with_db!(&self.db, pool => {
            sqlx::query("INSERT INTO migration_failures (failure_id, reason, occurred_at) VALUES ($1, $2, $3)")
                .bind(&failure_id)
                .bind(reason)
                .bind(now)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Failures by reason since `since`.
    pub async fn failures_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT reason, COUNT(*) FROM migration_failures WHERE occurred_at >= $1 GROUP BY reason ORDER BY reason",
            )
            .bind(since)
            .fetch_all(pool)
            .await
        })
    }

    /// Forget failures older than `before`.
    pub async fn prune_failures(&self, before: DateTime<Utc>) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM migration_failures WHERE occurred_at < $1").bind(before).execute(pool).await.map(|_| ())
        })
    }

    pub async fn last_migration_at(&self) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        with_db!(&self.db, pool => {
            // User ids are UUIDv7: the greatest is the latest migration (no time index needed).
            sqlx::query_scalar("SELECT occurred_at FROM migration_events ORDER BY user_id DESC LIMIT 1")
                .fetch_optional(pool)
                .await
        })
    }

    /// Events newest first, `limit` of them, older than the event `before` when given.
    /// Event ids are UUIDv7, so their order is their time order.
    pub async fn list_events(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MigrationEvent>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT user_id AS event_id, user_id, legacy_id, source, occurred_at FROM migration_events \
                 WHERE ($1 IS NULL OR user_id < $1) ORDER BY user_id DESC LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await
        })
    }
}

/// How a ledger event's user moved into the store (the `source` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerSource {
    LoginMigration,
    ResetMigration,
    Backfill,
}

impl LedgerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerSource::LoginMigration => "login_migration",
            LedgerSource::ResetMigration => "reset_migration",
            LedgerSource::Backfill => "backfill",
        }
    }
}

impl TryFrom<String> for LedgerSource {
    type Error = UnknownValue;
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "login_migration" => Ok(LedgerSource::LoginMigration),
            "reset_migration" => Ok(LedgerSource::ResetMigration),
            "backfill" => Ok(LedgerSource::Backfill),
            _ => Err(UnknownValue(stored)),
        }
    }
}

/// A stored word this release does not know (a newer release wrote it).
#[derive(Debug, thiserror::Error)]
#[error("unknown stored value {0:?}")]
pub struct UnknownValue(pub String);

/// One row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MigrationEvent {
    pub event_id: String,
    pub user_id: String,
    pub legacy_id: String,
    #[sqlx(try_from = "String")]
    pub source: LedgerSource,
    pub occurred_at: DateTime<Utc>,
}

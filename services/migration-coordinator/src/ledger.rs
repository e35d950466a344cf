//! The coordinator's tables: the migration mode and the ledger of migration events.

use crate::config::Mode;
use chrono::Utc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trickle_service_kit::db::Db;
use trickle_service_kit::with_db;

#[derive(Debug, Clone)]
pub struct Ledger {
    db: Db,
    mode_cache: Arc<Mutex<Option<(Mode, Instant)>>>,
    mode_cache_ttl: Duration,
}

impl Ledger {
    /// Record `initial_mode` unless a mode is already stored: the database, not the config
    /// file, is the truth after the first start.
    pub async fn open(
        db: Db,
        initial_mode: Mode,
        mode_cache_ttl: Duration,
    ) -> Result<Self, sqlx::Error> {
        let now = Utc::now();
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
        })
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
        source: &str,
    ) -> Result<(), sqlx::Error> {
        let event_id = uuid::Uuid::now_v7().to_string();
        let now = Utc::now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO migration_events (event_id, user_id, legacy_id, source, occurred_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&event_id)
            .bind(user_id)
            .bind(legacy_id)
            .bind(source)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        Ok(())
    }

    /// Number of migration events, for tests and status.
    pub async fn count_migrations(&self) -> Result<i64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM migration_events").fetch_one(pool).await)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

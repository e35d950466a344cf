//! Backfill: every legacy user who never logs in is imported with their legacy hash, which the
//! store verifies natively at their first login and upgrades to argon2id then.
//!
//! A job streams the legacy users in pages ordered by legacy id and bulk-inserts each page
//! into the store (one statement per page). After each page it writes its cursor and
//! counters, so a killed job resumes where it stopped: a page replayed after a crash is
//! skipped by the store's unique constraints, never duplicated. It runs alongside migration
//! on login for the same reason. One replica owns a running job at a time (an owner id and a
//! heartbeat); another takes over when the heartbeat stops.

use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::ledger::{Ledger, LedgerSource};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trickle_proto::legacy::v1 as legacy;
use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::client::Channel;
use trickle_service_kit::db::Db;
use trickle_service_kit::with_db;

pub const DEFAULT_BATCH_SIZE: i32 = 1000;
pub const MAX_BATCH_SIZE: i32 = 2500;
/// Unsupported users listed in a job's status (all are counted).
const MAX_LISTED_UNSUPPORTED: i64 = 1000;
/// Pages in flight between the legacy stream and the checkpoint.
const PIPELINE_DEPTH: usize = 3;

/// Where a backfill job stands (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }
}

impl TryFrom<String> for JobState {
    type Error = crate::ledger::UnknownValue;
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "running" => Ok(JobState::Running),
            "completed" => Ok(JobState::Completed),
            "cancelled" => Ok(JobState::Cancelled),
            "failed" => Ok(JobState::Failed),
            _ => Err(crate::ledger::UnknownValue(stored)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    pub job_id: String,
    #[sqlx(try_from = "String")]
    pub state: JobState,
    pub batch_size: i32,
    pub cursor: Option<String>,
    pub processed: i64,
    pub imported: i64,
    pub skipped_existing: i64,
    pub skipped_tombstoned: i64,
    pub unsupported: i64,
    pub legacy_users_total: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

const JOB_COLUMNS: &str = "job_id, state, batch_size, cursor, processed, imported, skipped_existing, skipped_tombstoned, \
     unsupported, legacy_users_total, started_at, updated_at, finished_at, error";

/// What one page changed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PageCounts {
    pub processed: i64,
    pub imported: i64,
    pub skipped_existing: i64,
    pub skipped_tombstoned: i64,
    pub unsupported: i64,
}

#[derive(Debug)]
pub struct Backfiller {
    db: Db,
    ledger: Ledger,
    legacy: LegacyConnectorClient<Channel>,
    store: UserStoreClient<Channel>,
    /// This process's identity as a job owner.
    owner: String,
    lease: Duration,
    /// Jobs this process is running now.
    running: Mutex<std::collections::HashSet<String>>,
    /// Jobs to run, handed to the supervisor task (which owns the running jobs, so stopping
    /// the server stops them too, like a killed process).
    requests: tokio::sync::mpsc::UnboundedSender<String>,
    inbox: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Backfiller {
    pub fn new(
        db: Db,
        ledger: Ledger,
        legacy: LegacyConnectorClient<Channel>,
        store: UserStoreClient<Channel>,
        lease: Duration,
    ) -> Arc<Self> {
        let (requests, inbox) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Self {
            requests,
            inbox: Mutex::new(Some(inbox)),
            db,
            ledger,
            legacy,
            store,
            owner: uuid::Uuid::now_v7().to_string(),
            lease,
            running: Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    async fn fetch(
        &self,
        sql: &'static str,
        job_id: Option<&str>,
    ) -> Result<Option<Job>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.replace("{COLUMNS}", JOB_COLUMNS));
        with_db!(&self.db, pool => {
            let query = sqlx::query_as(sql);
            let query = match job_id { Some(id) => query.bind(id.to_owned()), None => query };
            query.fetch_optional(pool).await
        })
    }

    /// A job by id, or the most recent one.
    pub async fn job(&self, job_id: Option<&str>) -> Result<Option<Job>, CoordinatorError> {
        Ok(match job_id {
            Some(id) => {
                self.fetch(
                    "SELECT {COLUMNS} FROM backfill_jobs WHERE job_id = $1",
                    Some(id),
                )
                .await?
            }
            None => {
                self.fetch(
                    "SELECT {COLUMNS} FROM backfill_jobs ORDER BY job_id DESC LIMIT 1",
                    None,
                )
                .await?
            }
        })
    }

    /// The first unsupported users of a job.
    pub async fn unsupported(
        &self,
        job_id: &str,
    ) -> Result<Vec<(String, String)>, CoordinatorError> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as("SELECT legacy_id, reason FROM backfill_unsupported WHERE job_id = $1 ORDER BY legacy_id LIMIT $2")
                .bind(job_id)
                .bind(MAX_LISTED_UNSUPPORTED)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Start a backfill: resume the latest one unless it completed, else begin a new one.
    #[tracing::instrument(name = "backfill.start", skip(self))]
    pub async fn start(
        self: &Arc<Self>,
        batch_size: i32,
        mode: Mode,
    ) -> Result<Job, CoordinatorError> {
        if mode == Mode::Authoritative {
            return Err(CoordinatorError::LegacyDisabled);
        }
        let now = self.ledger.now();
        if let Some(latest) = self.job(None).await? {
            match latest.state {
                JobState::Running => return Ok(latest),
                JobState::Failed | JobState::Cancelled => {
                    with_db!(&self.db, pool => {
                        sqlx::query(
                            "UPDATE backfill_jobs SET state = 'running', owner = $2, heartbeat_at = $3, updated_at = $3, \
                             error = NULL, finished_at = NULL WHERE job_id = $1 AND state IN ('failed', 'cancelled')",
                        )
                        .bind(&latest.job_id)
                        .bind(&self.owner)
                        .bind(now)
                        .execute(pool)
                        .await
                        .map(|_| ())
                    })?;
                    tracing::info!(job_id = %latest.job_id, "resuming the backfill from its checkpoint");
                    self.spawn(latest.job_id.clone());
                    return self
                        .job(Some(&latest.job_id))
                        .await?
                        .ok_or_else(|| CoordinatorError::Internal("backfill vanished".into()));
                }
                JobState::Completed => {}
            }
        }
        let total = self
            .legacy
            .clone()
            .count_users(legacy::CountUsersRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().count);
        let job_id = uuid::Uuid::now_v7().to_string();
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO backfill_jobs (job_id, state, batch_size, legacy_users_total, owner, heartbeat_at, started_at, updated_at) \
                 VALUES ($1, 'running', $2, $3, $4, $5, $5, $5)",
            )
            .bind(&job_id)
            .bind(batch_size)
            .bind(total)
            .bind(&self.owner)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        tracing::info!(%job_id, batch_size, legacy_users_total = ?total, "backfill started");
        self.spawn(job_id.clone());
        self.job(Some(&job_id))
            .await?
            .ok_or_else(|| CoordinatorError::Internal("backfill vanished".into()))
    }

    /// Stop a running job after its current page.
    pub async fn cancel(&self, job_id: Option<&str>) -> Result<Option<Job>, CoordinatorError> {
        let Some(job) = self.job(job_id).await? else {
            return Ok(None);
        };
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE backfill_jobs SET state = 'cancelled', updated_at = $2, finished_at = $2 WHERE job_id = $1 AND state = 'running'")
                .bind(&job.job_id)
                .bind(self.ledger.now())
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        self.job(Some(&job.job_id)).await
    }

    /// Ask the supervisor to run a job.
    fn spawn(&self, job_id: String) {
        let _ = self.requests.send(job_id);
    }

    /// The supervisor: runs the jobs asked for, and every half lease takes over running jobs
    /// whose owner stopped sending heartbeats (a killed replica). Aborting it (the server
    /// stopping) aborts the jobs it runs.
    pub fn spawn_supervisor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let inbox = this
            .inbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        tokio::spawn(async move {
            let Some(mut inbox) = inbox else { return };
            let mut jobs = tokio::task::JoinSet::new();
            let mut ticker =
                tokio::time::interval((this.lease / 2).max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    Some(job_id) = inbox.recv() => {
                        let fresh = this.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(job_id.clone());
                        if fresh {
                            let runner = Arc::clone(&this);
                            jobs.spawn(async move {
                                if let Err(e) = runner.run(&job_id).await {
                                    tracing::error!(%job_id, error = %e, "backfill failed");
                                    let _ = runner.finish(&job_id, JobState::Failed, Some(&e.to_string())).await;
                                }
                                runner.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&job_id);
                            });
                        }
                    }
                    _ = ticker.tick() => {
                        if let Err(e) = this.take_over_orphans().await {
                            tracing::debug!(error = %e, "cannot look for orphaned backfills");
                        }
                    }
                    Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                }
            }
        })
    }

    async fn take_over_orphans(&self) -> Result<(), sqlx::Error> {
        let now = self.ledger.now();
        let expired =
            now - chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        let orphans: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT job_id FROM backfill_jobs WHERE state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $1)")
                .bind(expired)
                .fetch_all(pool)
                .await
        })?;
        for job_id in orphans {
            // Claim it only if nobody else did meanwhile.
            let claimed = with_db!(&self.db, pool => {
                sqlx::query(
                    "UPDATE backfill_jobs SET owner = $2, heartbeat_at = $3 \
                     WHERE job_id = $1 AND state = 'running' AND (heartbeat_at IS NULL OR heartbeat_at < $4)",
                )
                .bind(&job_id)
                .bind(&self.owner)
                .bind(now)
                .bind(expired)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
            })?;
            if claimed {
                tracing::warn!(%job_id, "taking over a backfill whose coordinator stopped; resuming from its checkpoint");
                self.spawn(job_id);
            }
        }
        Ok(())
    }

    async fn finish(
        &self,
        job_id: &str,
        state: JobState,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        let now = self.ledger.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE backfill_jobs SET state = $2, error = $3, updated_at = $4, finished_at = $4 \
                 WHERE job_id = $1 AND state = 'running' AND owner = $5",
            )
            .bind(job_id)
            .bind(state.as_str())
            .bind(error)
            .bind(now)
            .bind(&self.owner)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Record a page's progress, if this process still owns the running job (false: the job
    /// was cancelled or taken over, so stop).
    async fn checkpoint(
        &self,
        job_id: &str,
        cursor: &str,
        c: PageCounts,
    ) -> Result<bool, sqlx::Error> {
        let now = self.ledger.now();
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE backfill_jobs SET cursor = $3, processed = processed + $4, imported = imported + $5, \
                   skipped_existing = skipped_existing + $6, skipped_tombstoned = skipped_tombstoned + $7, \
                   unsupported = unsupported + $8, heartbeat_at = $9, updated_at = $9 \
                 WHERE job_id = $1 AND owner = $2 AND state = 'running'",
            )
            .bind(job_id)
            .bind(&self.owner)
            .bind(cursor)
            .bind(c.processed)
            .bind(c.imported)
            .bind(c.skipped_existing)
            .bind(c.skipped_tombstoned)
            .bind(c.unsupported)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })
    }

    pub(crate) async fn record_unsupported(
        &self,
        job_id: &str,
        users: &[(String, String)],
    ) -> Result<(), sqlx::Error> {
        for (legacy_id, reason) in users {
            with_db!(&self.db, pool => {
                sqlx::query("INSERT INTO backfill_unsupported (job_id, legacy_id, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                    .bind(job_id)
                    .bind(legacy_id)
                    .bind(reason)
                    .execute(pool)
                    .await
                    .map(|_| ())
            })?;
        }
        Ok(())
    }

    /// Insert one page into the store and record it in the ledger; the caller checkpoints.
    async fn process_page(
        &self,
        job_id: &str,
        page: legacy::ListUsersResponse,
    ) -> Result<Option<(String, PageCounts)>, CoordinatorError> {
        let Some(last) = page
            .users
            .last()
            .and_then(|u| u.user.as_ref())
            .map(|u| u.legacy_id.clone())
        else {
            return Ok(None);
        };
        let (counts, unsupported) = self.store_page(page.users).await?;
        self.record_unsupported(job_id, &unsupported).await?;
        Ok(Some((last, counts)))
    }

    /// Insert users with their hashes into the store in one call and record the ledger
    /// entries; answers the counts and the users not imported (legacy id, reason). Shared
    /// by the backfill and by file imports.
    pub(crate) async fn store_page(
        &self,
        users: Vec<legacy::LegacyUserRecord>,
    ) -> Result<(PageCounts, Vec<(String, String)>), CoordinatorError> {
        let metrics = trickle_telemetry::metrics::metrics();
        let mut batch = Vec::with_capacity(users.len());
        let mut unsupported = Vec::new();
        for record in users {
            let legacy::LegacyUserRecord {
                user,
                password_hash,
                hash_scheme: _,
                hash_status: _,
                unsupported_reason,
            } = record;
            let Some(user) = user else { continue };
            if password_hash.is_empty() {
                unsupported.push((user.legacy_id, unsupported_reason));
                continue;
            }
            let profile = user.profile();
            let legacy::LegacyUser {
                legacy_id,
                email,
                email_verified,
                blocked,
                totp,
                ..
            } = user;
            batch.push(store::BackfillUser {
                legacy_id,
                email,
                email_verified,
                profile: Some(profile),
                password_hash,
                blocked,
                // The second factor moves with the user: their first login asks for a code.
                totp,
            });
        }
        let processed = count(batch.len() + unsupported.len());
        let answer = self
            .store
            .clone()
            .backfill_users(store::BackfillUsersRequest { users: batch })
            .await
            .map_err(|status| CoordinatorError::from_store(&status))?
            .into_inner();
        // Users the store refused (malformed email, …) are not lost either: listed.
        unsupported.extend(
            answer
                .invalid_legacy_ids
                .into_iter()
                .map(|id| (id, "refused by the user store".to_owned())),
        );
        let inserted = answer.inserted.len();
        // Every backfilled user of the page, so that a page replayed after a crash
        // (inserted then, skipped now) still gets its ledger rows; the ledger keeps one
        // row per user.
        let backfilled: Vec<(String, String)> = answer
            .backfilled
            .into_iter()
            .map(|u| (u.user_id, u.legacy_id))
            .collect();
        // The usual page: everyone in it was inserted just now (new user ids).
        let recorded = if backfilled.len() == inserted {
            self.ledger
                .record_new_migrations(&backfilled, LedgerSource::Backfill)
                .await
        } else {
            self.ledger
                .record_migrations(&backfilled, LedgerSource::Backfill)
                .await
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, "could not record backfilled users in the ledger");
        }
        metrics
            .migrations
            .with_label_values(&["migrated", "backfill"])
            .inc_by(inserted as u64);
        let counts = PageCounts {
            processed,
            imported: count(inserted),
            skipped_existing: answer.skipped_existing,
            skipped_tombstoned: answer.skipped_tombstoned,
            unsupported: count(unsupported.len()),
        };
        Ok((counts, unsupported))
    }

    #[tracing::instrument(name = "backfill.run", skip(self))]
    async fn run(&self, job_id: &str) -> Result<(), CoordinatorError> {
        let job = self
            .job(Some(job_id))
            .await?
            .ok_or_else(|| CoordinatorError::Internal("backfill vanished".into()))?;
        let request = legacy::ListUsersRequest {
            after_legacy_id: job.cursor.clone().unwrap_or_default(),
            batch_size: job.batch_size,
        };
        let pages = self
            .legacy
            .clone()
            .list_users(request)
            .await
            .map_err(|status| CoordinatorError::from_legacy(&status))?
            .into_inner();
        // Pages are inserted a few at a time (the store and the connector work while the
        // previous page is recorded), but checkpointed strictly in order: the cursor never
        // passes a page that is not in the store.
        let mut pages = futures::StreamExt::buffered(
            futures::StreamExt::map(pages, |page| async move {
                let page = page.map_err(|status| CoordinatorError::from_legacy(&status))?;
                self.process_page(job_id, page).await
            }),
            PIPELINE_DEPTH,
        );
        while let Some(done) = futures::StreamExt::next(&mut pages).await {
            let Some((last, counts)) = done? else {
                continue;
            };
            if !self.checkpoint(job_id, &last, counts).await? {
                tracing::info!(%job_id, "backfill cancelled or taken over; stopping");
                return Ok(());
            }
        }
        self.finish(job_id, JobState::Completed, None).await?;
        tracing::info!(%job_id, "backfill completed");
        Ok(())
    }
}

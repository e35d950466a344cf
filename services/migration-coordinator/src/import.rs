//! File imports (`MigrationAdmin.ImportUsers`): users from another identity provider's
//! export, converted by `trickle admin import` and streamed here a page at a time, go into
//! the store by the backfill's path ([`Backfiller::store_page`]): one store call per page,
//! users already in the store (by legacy id or email) and deleted ones skipped and counted,
//! a ledger entry per imported user.
//!
//! An import is named by the client (`import_id`: the CLI uses the format and the file's
//! SHA-256). Its position and counters are written after each page, so a run broken off —
//! the CLI killed, the coordinator restarted — resumes at the next run of the same import:
//! pages before the recorded position are acknowledged without being written. A run of an
//! import that completed starts over, and the store skips everyone. Up to three pages are
//! written at a time (the store works while the next page arrives), checkpointed strictly in
//! order, so the position never passes a page that is not in the store. The run writing an
//! import owns it; a second run of the same import takes over, and the first one stops at
//! its next page (ABORTED).

use crate::backfill::{Backfiller, PageCounts};
use crate::error::CoordinatorError;
use chrono::{DateTime, Utc};
use trickle_proto::legacy::v1 as legacy;
use trickle_service_kit::with_db;

/// Where an import stands (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportState {
    Running,
    Completed,
    Failed,
}

impl ImportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportState::Running => "running",
            ImportState::Completed => "completed",
            ImportState::Failed => "failed",
        }
    }
}

impl TryFrom<String> for ImportState {
    type Error = crate::ledger::UnknownValue;
    fn try_from(stored: String) -> Result<Self, Self::Error> {
        match stored.as_str() {
            "running" => Ok(ImportState::Running),
            "completed" => Ok(ImportState::Completed),
            "failed" => Ok(ImportState::Failed),
            _ => Err(crate::ledger::UnknownValue(stored)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ImportJob {
    pub import_id: String,
    pub format: String,
    #[sqlx(try_from = "String")]
    pub state: ImportState,
    pub next_position: i64,
    pub imported: i64,
    pub skipped_existing: i64,
    pub skipped_tombstoned: i64,
    pub unsupported: i64,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// What a page's task needs to checkpoint: the import and the run that owns it.
#[derive(Debug, Clone)]
pub struct CheckpointHandle {
    pub import_id: String,
    owner: String,
}

/// One run of an import, as the stream handling it sees it.
#[derive(Debug)]
pub struct ImportRun {
    pub import_id: String,
    /// Identifies this run as the import's owner.
    owner: String,
    /// The position recorded when this run began: records before it are done.
    resume_from: i64,
    /// The position the next page must start at (pages arrive in file order).
    expected_position: i64,
    /// Records this run acknowledged without writing (done by an earlier run).
    pub skipped_already_done: i64,
    pub started: std::time::Instant,
}

/// What to do with a page: write it (records up to `end`), or only count it (done by an
/// earlier run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePlan {
    Write { end: i64 },
    AlreadyDone,
}

impl ImportRun {
    pub fn checkpoint_handle(&self) -> CheckpointHandle {
        CheckpointHandle {
            import_id: self.import_id.clone(),
            owner: self.owner.clone(),
        }
    }

    /// The plan for the page of `records` starting at `first_position`. Pages must follow
    /// each other in file order. A page across the resume point is written whole: the store
    /// skips its users the earlier run imported (they count as already in the store).
    pub fn plan(
        &mut self,
        first_position: i64,
        records: i64,
    ) -> Result<PagePlan, CoordinatorError> {
        if first_position != self.expected_position {
            return Err(CoordinatorError::InvalidRequest(vec![
                trickle_service_kit::rpc::FieldViolation {
                    field: "first_position".into(),
                    description: format!(
                        "pages must follow each other: expected {}, got {first_position}",
                        self.expected_position
                    ),
                },
            ]));
        }
        let end = first_position.saturating_add(records);
        self.expected_position = end;
        if end <= self.resume_from {
            self.skipped_already_done += records;
            return Ok(PagePlan::AlreadyDone);
        }
        Ok(PagePlan::Write { end })
    }
}

/// The most a legacy id or a reason may be, as recorded.
const MAX_LEGACY_ID: usize = 255;
const MAX_REASON: usize = 300;

impl Backfiller {
    pub async fn import_job(&self, import_id: &str) -> Result<Option<ImportJob>, CoordinatorError> {
        Ok(with_db!(self.db(), pool => {
            sqlx::query_as(
                "SELECT import_id, format, state, next_position, imported, skipped_existing, skipped_tombstoned, \
                   unsupported, started_at, updated_at, finished_at, error FROM import_jobs WHERE import_id = $1",
            )
            .bind(import_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Begin a run of `import_id`: a new import, a resumed one (running or failed: from its
    /// recorded position), or a completed one started over.
    #[tracing::instrument(name = "import.begin", skip(self))]
    pub async fn begin_import(
        &self,
        import_id: &str,
        format: &str,
    ) -> Result<ImportRun, CoordinatorError> {
        let now = self.ledger().now();
        let owner = uuid::Uuid::now_v7().to_string();
        let resume_from = match self.import_job(import_id).await? {
            None => {
                with_db!(self.db(), pool => {
                    sqlx::query(
                        "INSERT INTO import_jobs (import_id, format, state, owner, started_at, updated_at) \
                         VALUES ($1, $2, 'running', $3, $4, $4)",
                    )
                    .bind(import_id)
                    .bind(format)
                    .bind(&owner)
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|_| ())
                })?;
                tracing::info!(import_id, format, "import started");
                0
            }
            Some(job) if job.state == ImportState::Completed => {
                with_db!(self.db(), pool => {
                    sqlx::query(
                        "UPDATE import_jobs SET state = 'running', format = $2, owner = $3, next_position = 0, imported = 0, \
                           skipped_existing = 0, skipped_tombstoned = 0, unsupported = 0, started_at = $4, updated_at = $4, \
                           finished_at = NULL, error = NULL WHERE import_id = $1",
                    )
                    .bind(import_id)
                    .bind(format)
                    .bind(&owner)
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|_| ())
                })?;
                with_db!(self.db(), pool => {
                    sqlx::query("DELETE FROM backfill_unsupported WHERE job_id = $1")
                        .bind(import_id)
                        .execute(pool)
                        .await
                        .map(|_| ())
                })?;
                tracing::info!(import_id, format, "completed import started over");
                0
            }
            Some(job) => {
                with_db!(self.db(), pool => {
                    sqlx::query(
                        "UPDATE import_jobs SET state = 'running', owner = $2, updated_at = $3, finished_at = NULL, error = NULL \
                         WHERE import_id = $1",
                    )
                    .bind(import_id)
                    .bind(&owner)
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|_| ())
                })?;
                tracing::info!(
                    import_id,
                    format,
                    resume_from = job.next_position,
                    "import resumed"
                );
                job.next_position
            }
        };
        Ok(ImportRun {
            import_id: import_id.to_owned(),
            owner,
            resume_from,
            expected_position: 0,
            skipped_already_done: 0,
            started: std::time::Instant::now(),
        })
    }

    /// Write one page's users to the store and list those not imported; the caller
    /// checkpoints pages in order with [`Backfiller::checkpoint_import`] (a page written
    /// but not checkpointed is written again by the next run: the store skips its users).
    #[tracing::instrument(name = "import.page", skip_all)]
    pub(crate) async fn write_import_page(
        &self,
        import_id: &str,
        users: Vec<legacy::LegacyUserRecord>,
        unconverted: Vec<(String, String)>,
    ) -> Result<PageCounts, CoordinatorError> {
        let (store_counts, refused) = self.store_page(users).await?;
        let mut not_imported: Vec<(String, String)> = unconverted
            .into_iter()
            .map(|(id, why)| {
                (
                    id.chars().take(MAX_LEGACY_ID).collect(),
                    why.chars().take(MAX_REASON).collect(),
                )
            })
            .collect();
        not_imported.extend(refused);
        self.record_unsupported(import_id, &not_imported).await?;
        Ok(PageCounts {
            unsupported: i64::try_from(not_imported.len()).unwrap_or(i64::MAX),
            ..store_counts
        })
    }

    /// Record that the records before `end` are done, with a written page's counts.
    /// ABORTED when another run took the import over.
    pub(crate) async fn checkpoint_import(
        &self,
        run: &CheckpointHandle,
        end: i64,
        counts: PageCounts,
    ) -> Result<(), CoordinatorError> {
        let now = self.ledger().now();
        let owned = with_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE import_jobs SET next_position = $3, imported = imported + $4, skipped_existing = skipped_existing + $5, \
                   skipped_tombstoned = skipped_tombstoned + $6, unsupported = unsupported + $7, updated_at = $8 \
                 WHERE import_id = $1 AND owner = $2 AND state = 'running'",
            )
            .bind(&run.import_id)
            .bind(&run.owner)
            .bind(end)
            .bind(counts.imported)
            .bind(counts.skipped_existing)
            .bind(counts.skipped_tombstoned)
            .bind(counts.unsupported)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1)
        })?;
        if !owned {
            return Err(CoordinatorError::ImportTakenOver(run.import_id.clone()));
        }
        Ok(())
    }

    /// End a run: completed when its stream ended cleanly, failed (resumable) otherwise.
    pub async fn finish_import(
        &self,
        run: &ImportRun,
        state: ImportState,
        error: Option<&str>,
    ) -> Result<(), CoordinatorError> {
        let now = self.ledger().now();
        with_db!(self.db(), pool => {
            sqlx::query(
                "UPDATE import_jobs SET state = $3, updated_at = $4, finished_at = $4, error = $5 \
                 WHERE import_id = $1 AND owner = $2",
            )
            .bind(&run.import_id)
            .bind(&run.owner)
            .bind(state.as_str())
            .bind(now)
            .bind(error)
            .execute(pool)
            .await
            .map(|_| ())
        })?;
        tracing::info!(import_id = %run.import_id, state = state.as_str(), skipped_already_done = run.skipped_already_done, "import run ended");
        Ok(())
    }
}

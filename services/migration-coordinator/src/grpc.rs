//! The tonic layer: proto ⇄ domain conversions only.

use crate::admin::{Lookup, Status as MigrationStatus};
use crate::backfill::{Backfiller, DEFAULT_BATCH_SIZE, Job, JobState, MAX_BATCH_SIZE};
use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::import::{ImportJob, ImportRun, ImportState, PagePlan};
use crate::ledger::LedgerSource;
use crate::migrate_on_login::{Coordinator, LoginMigration};
use crate::preflight::CensusOptions;
use crate::upstream::LegacyUser;
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::migration::v1::{
    self as pb, CancelBackfillRequest, CancelBackfillResponse, EqualizeRefusedLoginRequest,
    EqualizeRefusedLoginResponse, FailureCount, FindLegacyUserRequest, FindLegacyUserResponse,
    GetBackfillRequest, GetBackfillResponse, GetImportRequest, GetImportResponse, GetModeRequest,
    GetModeResponse, GetStatusRequest, GetStatusResponse, ImportUsersRequest, ImportUsersResponse,
    ListMigrationEventsRequest, ListMigrationEventsResponse, LookupUserRequest, LookupUserResponse,
    MigrateOnLoginRequest, MigrateOnLoginResponse, MigrateOnResetRequest, MigrateOnResetResponse,
    RecordMfaMigrationRequest, RecordMfaMigrationResponse, RunPreflightRequest,
    RunPreflightResponse, SetModeRequest, SetModeResponse, StartBackfillRequest,
    StartBackfillResponse, migrate_on_login_response::Outcome,
    migration_admin_server::MigrationAdmin, migration_coordinator_server::MigrationCoordinator,
};
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct CoordinatorService {
    pub coordinator: Coordinator,
}

fn mode_to_proto(mode: Mode) -> pb::Mode {
    match mode {
        Mode::Import => pb::Mode::Import,
        Mode::Authoritative => pb::Mode::Authoritative,
    }
}

#[tonic::async_trait]
impl MigrationCoordinator for CoordinatorService {
    async fn migrate_on_login(
        &self,
        request: Request<MigrateOnLoginRequest>,
    ) -> Result<Response<MigrateOnLoginResponse>, Status> {
        let MigrateOnLoginRequest { email, password } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let mut mfa_challenge = String::new();
        let (outcome, user) = match self.coordinator.migrate_on_login(&email, password).await? {
            LoginMigration::Migrated(user) => (Outcome::Migrated, Some(user.into_wire())),
            LoginMigration::AlreadyMigrated(user) => {
                (Outcome::AlreadyMigrated, Some(user.into_wire()))
            }
            // Answered exactly like a wrong password: the caller must not learn that the
            // record exists.
            LoginMigration::LegacyRejected | LoginMigration::UnusableLegacyHash => {
                (Outcome::LegacyRejected, None)
            }
            LoginMigration::Conflict => (Outcome::Conflict, None),
            LoginMigration::NotImporting => (Outcome::NotImporting, None),
            LoginMigration::Tombstoned => (Outcome::Tombstoned, None),
            LoginMigration::MfaRequired(challenge) => {
                mfa_challenge = challenge;
                (Outcome::MfaRequired, None)
            }
        };
        Ok(Response::new(MigrateOnLoginResponse {
            outcome: outcome.into(),
            user,
            mfa_challenge,
        }))
    }

    async fn record_mfa_migration(
        &self,
        request: Request<RecordMfaMigrationRequest>,
    ) -> Result<Response<RecordMfaMigrationResponse>, Status> {
        let RecordMfaMigrationRequest { user_id, legacy_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.check_id("legacy_id", &legacy_id, 255);
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        self.coordinator
            .record_mfa_migration(&user_id, &legacy_id)
            .await?;
        Ok(Response::new(RecordMfaMigrationResponse {}))
    }

    async fn equalize_refused_login(
        &self,
        request: Request<EqualizeRefusedLoginRequest>,
    ) -> Result<Response<EqualizeRefusedLoginResponse>, Status> {
        let EqualizeRefusedLoginRequest { email, lookup_only } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        self.coordinator
            .equalize_refused_login(&email, lookup_only)
            .await?;
        Ok(Response::new(EqualizeRefusedLoginResponse {}))
    }

    async fn find_legacy_user(
        &self,
        request: Request<FindLegacyUserRequest>,
    ) -> Result<Response<FindLegacyUserResponse>, Status> {
        let FindLegacyUserRequest { email } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let lookup = self.coordinator.find_legacy_user(&email).await?;
        Ok(Response::new(FindLegacyUserResponse {
            found: lookup.user.is_some(),
            mode: mode_to_proto(lookup.mode).into(),
            user: lookup.user.map(LegacyUser::into_wire),
            tombstoned: lookup.tombstoned,
        }))
    }

    async fn get_mode(
        &self,
        request: Request<GetModeRequest>,
    ) -> Result<Response<GetModeResponse>, Status> {
        let GetModeRequest {} = request.into_inner();
        let mode = self.coordinator.mode().await?;
        Ok(Response::new(GetModeResponse {
            mode: mode_to_proto(mode).into(),
        }))
    }

    async fn migrate_on_reset(
        &self,
        request: Request<MigrateOnResetRequest>,
    ) -> Result<Response<MigrateOnResetResponse>, Status> {
        let MigrateOnResetRequest {
            ticket,
            new_password,
            legacy_id,
            email,
        } = request.into_inner();
        let mut violations = Violations::default();
        if ticket.is_empty() || ticket.len() > 256 {
            violations.add("ticket", "ticket is required");
        }
        let password = Password::new(new_password);
        violations.check("new_password", password.check_new());
        if legacy_id.is_empty() || legacy_id.len() > 255 {
            violations.add("legacy_id", "legacy_id is required");
        }
        let email = violations.check("email", Email::parse(&email));
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let (user, migrated) = self
            .coordinator
            .migrate_on_reset(&ticket, password, &legacy_id, &email)
            .await?;
        Ok(Response::new(MigrateOnResetResponse {
            user: Some(user.into_wire()),
            migrated,
        }))
    }
}

/// `MigrationAdmin`, for operators.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    pub coordinator: Coordinator,
    pub backfiller: std::sync::Arc<Backfiller>,
}

fn backfill_to_proto(job: Job, unsupported: Vec<(String, String)>) -> pb::Backfill {
    let Job {
        job_id,
        state,
        batch_size,
        cursor: _,
        processed,
        imported,
        skipped_existing,
        skipped_tombstoned,
        unsupported: unsupported_count,
        legacy_users_total,
        started_at,
        updated_at,
        finished_at,
        error,
    } = job;
    let state = match state {
        JobState::Running => pb::BackfillState::Running,
        JobState::Completed => pb::BackfillState::Completed,
        JobState::Cancelled => pb::BackfillState::Cancelled,
        JobState::Failed => pb::BackfillState::Failed,
    };
    let elapsed = (finished_at.unwrap_or(updated_at) - started_at)
        .num_milliseconds()
        .max(1) as f64
        / 1000.0;
    pb::Backfill {
        job_id,
        state: state.into(),
        batch_size,
        processed,
        imported,
        skipped_existing,
        skipped_tombstoned,
        unsupported: unsupported_count,
        unsupported_users: unsupported
            .into_iter()
            .map(|(legacy_id, reason)| pb::UnsupportedUser { legacy_id, reason })
            .collect(),
        legacy_users_total,
        started_at: Some(timestamp(started_at)),
        updated_at: Some(timestamp(updated_at)),
        finished_at: finished_at.map(timestamp),
        error: error.unwrap_or_default(),
        users_per_second: imported as f64 / elapsed,
    }
}

fn import_to_proto(
    job: ImportJob,
    unsupported: Vec<(String, String)>,
    run: Option<&ImportRun>,
) -> pb::Import {
    let ImportJob {
        import_id,
        format,
        state,
        next_position,
        imported,
        skipped_existing,
        skipped_tombstoned,
        unsupported: unsupported_count,
        started_at,
        updated_at,
        finished_at,
        error,
    } = job;
    let state = match state {
        ImportState::Running => pb::BackfillState::Running,
        ImportState::Completed => pb::BackfillState::Completed,
        ImportState::Failed => pb::BackfillState::Failed,
    };
    let elapsed = run.map_or_else(
        || {
            (finished_at.unwrap_or(updated_at) - started_at)
                .num_milliseconds()
                .max(1) as f64
                / 1000.0
        },
        |run| run.started.elapsed().as_secs_f64().max(0.001),
    );
    let skipped_already_done = run.map_or(0, |run| run.skipped_already_done);
    pb::Import {
        import_id,
        format,
        state: state.into(),
        next_position,
        imported,
        skipped_existing,
        skipped_tombstoned,
        unsupported: unsupported_count,
        unsupported_users: unsupported
            .into_iter()
            .map(|(legacy_id, reason)| pb::UnsupportedUser { legacy_id, reason })
            .collect(),
        skipped_already_done,
        started_at: Some(timestamp(started_at)),
        updated_at: Some(timestamp(updated_at)),
        finished_at: finished_at.map(timestamp),
        users_per_second: (next_position - skipped_already_done).max(0) as f64 / elapsed,
        error: error.unwrap_or_default(),
    }
}

/// A checked ImportUsers message: its first position, users, and unconvertible records.
type ImportPage = (
    i64,
    Vec<trickle_proto::legacy::v1::LegacyUserRecord>,
    Vec<(String, String)>,
);

/// Pages of an import written at the same time.
const IMPORT_PIPELINE_DEPTH: usize = 3;

/// A page of an import being written: its task, and a signal set when it is done (the
/// next page's task waits for it before checkpointing).
struct PageTask {
    task: tokio::task::JoinHandle<Result<(), CoordinatorError>>,
    /// `Some(true)` once written and checkpointed, `Some(false)` if it failed.
    done: tokio::sync::watch::Receiver<Option<bool>>,
}

/// Users per ImportUsers message, and the longest import id and format name.
const MAX_IMPORT_PAGE: usize = 2500;
const MAX_IMPORT_ID: usize = 200;
const MAX_FORMAT: usize = 32;

impl AdminService {
    async fn import_view(
        &self,
        import_id: &str,
        run: Option<&ImportRun>,
    ) -> Result<pb::Import, CoordinatorError> {
        let job = self
            .backfiller
            .import_job(import_id)
            .await?
            .ok_or(CoordinatorError::ImportNotFound)?;
        let unsupported = self.backfiller.unsupported(import_id).await?;
        Ok(import_to_proto(job, unsupported, run))
    }

    /// One ImportUsers message, checked: its users and the records the client could not
    /// convert.
    fn import_page(
        message: ImportUsersRequest,
        import_id: &str,
    ) -> Result<ImportPage, CoordinatorError> {
        let ImportUsersRequest {
            import_id: this_id,
            format: _,
            first_position,
            users,
            unsupported,
            last_page: _,
        } = message;
        let mut violations = Violations::default();
        if this_id != import_id {
            violations.add(
                "import_id",
                "every message of a stream names the same import",
            );
        }
        if first_position < 0 {
            violations.add("first_position", "must not be negative");
        }
        if users.len() + unsupported.len() > MAX_IMPORT_PAGE {
            violations.add(
                "users",
                format!("at most {MAX_IMPORT_PAGE} records per message"),
            );
        }
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()));
        }
        let unsupported = unsupported
            .into_iter()
            .map(|u| (u.legacy_id, u.reason))
            .collect();
        Ok((first_position, users, unsupported))
    }

    /// Wait for the oldest page in flight to be written and checkpointed.
    async fn wait_oldest(
        in_flight: &mut std::collections::VecDeque<PageTask>,
    ) -> Result<(), CoordinatorError> {
        let Some(oldest) = in_flight.pop_front() else {
            return Ok(());
        };
        match oldest.task.await {
            Ok(result) => result,
            Err(e) => Err(CoordinatorError::Internal(format!(
                "an import page task: {e}"
            ))),
        }
    }

    /// End a run that failed (unless another run took it over) and say why.
    async fn fail_import(&self, run: &ImportRun, error: CoordinatorError) -> Status {
        if !matches!(error, CoordinatorError::ImportTakenOver(_)) {
            let why = error.to_string();
            if let Err(e) = self
                .backfiller
                .finish_import(run, ImportState::Failed, Some(&why))
                .await
            {
                return e.into();
            }
        }
        error.into()
    }

    async fn backfill_view(&self, job: Job) -> Result<pb::Backfill, CoordinatorError> {
        let unsupported = self.backfiller.unsupported(&job.job_id).await?;
        Ok(backfill_to_proto(job, unsupported))
    }
}

const DEFAULT_PREFLIGHT_SAMPLES: i32 = 10;
const MAX_PREFLIGHT_SAMPLES: i32 = 1000;

fn check_job_id(job_id: &str) -> Result<Option<&str>, CoordinatorError> {
    if job_id.is_empty() {
        return Ok(None);
    }
    if uuid::Uuid::parse_str(job_id).is_err() {
        let mut violations = Violations::default();
        violations.add("job_id", "job_id must be a backfill id from StartBackfill");
        return Err(CoordinatorError::InvalidRequest(violations.into_vec()));
    }
    Ok(Some(job_id))
}

const MAX_PAGE_SIZE: i32 = 1000;
const DEFAULT_PAGE_SIZE: i32 = 50;

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn failure_counts(rows: Vec<(String, i64)>) -> Vec<FailureCount> {
    rows.into_iter()
        .map(|(reason, count)| FailureCount { reason, count })
        .collect()
}

fn source_to_proto(source: LedgerSource) -> trickle_proto::auth::v1::Source {
    use trickle_proto::auth::v1::Source;
    match source {
        LedgerSource::LoginMigration => Source::LoginMigration,
        LedgerSource::ResetMigration => Source::ResetMigration,
        LedgerSource::Backfill => Source::Backfill,
    }
}

#[tonic::async_trait]
impl MigrationAdmin for AdminService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let GetStatusRequest {} = request.into_inner();
        let MigrationStatus {
            mode,
            counts,
            legacy_total,
            legacy_remaining,
            legacy_count_error,
            failures_last_hour,
            failures_last_day,
            last_migration_at,
        } = self.coordinator.status().await?;
        Ok(Response::new(GetStatusResponse {
            mode: mode_to_proto(mode).into(),
            migrated_on_login: counts.login_migration_users,
            migrated_on_reset: counts.reset_migration_users,
            migrated_by_backfill: counts.backfill_users,
            signed_up: counts.signup_users,
            tombstoned_legacy_users: counts.tombstoned_legacy_users,
            legacy_users_total: legacy_total,
            legacy_users_remaining: legacy_remaining,
            legacy_count_error: legacy_count_error.unwrap_or_default(),
            failures_last_hour: failure_counts(failures_last_hour),
            failures_last_day: failure_counts(failures_last_day),
            last_migration_at: last_migration_at.map(timestamp),
            last_preflight: self.coordinator.last_preflight().await?,
        }))
    }

    async fn set_mode(
        &self,
        request: Request<SetModeRequest>,
    ) -> Result<Response<SetModeResponse>, Status> {
        let SetModeRequest { mode, force } = request.into_inner();
        let mode = match pb::Mode::try_from(mode) {
            Ok(pb::Mode::Import) => Mode::Import,
            Ok(pb::Mode::Authoritative) => Mode::Authoritative,
            _ => {
                let mut violations = Violations::default();
                violations.add("mode", "mode must be MODE_IMPORT or MODE_AUTHORITATIVE");
                return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
            }
        };
        let remaining = self.coordinator.set_mode(mode, force).await?;
        Ok(Response::new(SetModeResponse {
            mode: mode_to_proto(mode).into(),
            legacy_users_remaining: remaining,
        }))
    }

    async fn list_migration_events(
        &self,
        request: Request<ListMigrationEventsRequest>,
    ) -> Result<Response<ListMigrationEventsResponse>, Status> {
        let ListMigrationEventsRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let mut violations = Violations::default();
        if !(0..=MAX_PAGE_SIZE).contains(&page_size) {
            violations.add(
                "page_size",
                format!("page_size must be between 0 and {MAX_PAGE_SIZE}"),
            );
        }
        if !page_token.is_empty() && uuid::Uuid::parse_str(&page_token).is_err() {
            violations.add("page_token", "page_token must come from a previous page");
        }
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        let size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        let before = (!page_token.is_empty()).then_some(page_token.as_str());
        // One more than asked: whether a next page exists without a second query.
        let mut events = self.coordinator.events(before, i64::from(size) + 1).await?;
        let more = events.len() > usize::try_from(size).unwrap_or(usize::MAX);
        events.truncate(usize::try_from(size).unwrap_or(0));
        let next_page_token = if more {
            events
                .last()
                .map(|e| e.event_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let events = events
            .into_iter()
            .map(|e| pb::MigrationEvent {
                source: source_to_proto(e.source).into(),
                event_id: e.event_id,
                user_id: e.user_id,
                legacy_id: e.legacy_id,
                occurred_at: Some(timestamp(e.occurred_at)),
            })
            .collect();
        Ok(Response::new(ListMigrationEventsResponse {
            events,
            next_page_token,
        }))
    }

    async fn lookup_user(
        &self,
        request: Request<LookupUserRequest>,
    ) -> Result<Response<LookupUserResponse>, Status> {
        let LookupUserRequest { email } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let Lookup {
            store_user,
            legacy_user,
            tombstoned,
            mode,
            legacy_error,
        } = self.coordinator.lookup(&email).await?;
        Ok(Response::new(LookupUserResponse {
            store_user,
            legacy_user,
            tombstoned,
            mode: mode_to_proto(mode).into(),
            legacy_error: legacy_error.unwrap_or_default(),
        }))
    }

    async fn start_backfill(
        &self,
        request: Request<StartBackfillRequest>,
    ) -> Result<Response<StartBackfillResponse>, Status> {
        let StartBackfillRequest { batch_size } = request.into_inner();
        let batch_size = match batch_size {
            0 => DEFAULT_BATCH_SIZE,
            n if (1..=MAX_BATCH_SIZE).contains(&n) => n,
            _ => {
                let mut violations = Violations::default();
                violations.add(
                    "batch_size",
                    format!("batch_size must be between 1 and {MAX_BATCH_SIZE}"),
                );
                return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
            }
        };
        let mode = self.coordinator.mode().await?;
        let job = self.backfiller.start(batch_size, mode).await?;
        Ok(Response::new(StartBackfillResponse {
            backfill: Some(self.backfill_view(job).await?),
        }))
    }

    async fn get_backfill(
        &self,
        request: Request<GetBackfillRequest>,
    ) -> Result<Response<GetBackfillResponse>, Status> {
        let GetBackfillRequest { job_id } = request.into_inner();
        let job = self
            .backfiller
            .job(check_job_id(&job_id)?)
            .await?
            .ok_or(CoordinatorError::BackfillNotFound)?;
        Ok(Response::new(GetBackfillResponse {
            backfill: Some(self.backfill_view(job).await?),
        }))
    }

    async fn cancel_backfill(
        &self,
        request: Request<CancelBackfillRequest>,
    ) -> Result<Response<CancelBackfillResponse>, Status> {
        let CancelBackfillRequest { job_id } = request.into_inner();
        let job = self
            .backfiller
            .cancel(check_job_id(&job_id)?)
            .await?
            .ok_or(CoordinatorError::BackfillNotFound)?;
        Ok(Response::new(CancelBackfillResponse {
            backfill: Some(self.backfill_view(job).await?),
        }))
    }

    async fn import_users(
        &self,
        request: Request<tonic::Streaming<ImportUsersRequest>>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            let mut violations = Violations::default();
            violations.add("import_id", "the stream sent no message");
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        };
        let mut violations = Violations::default();
        if first.import_id.is_empty() || first.import_id.chars().count() > MAX_IMPORT_ID {
            violations.add(
                "import_id",
                format!("1 to {MAX_IMPORT_ID} characters naming the import"),
            );
        }
        if first.format.is_empty() || first.format.chars().count() > MAX_FORMAT {
            violations.add("format", format!("1 to {MAX_FORMAT} characters"));
        }
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        let import_id = first.import_id.clone();
        let mut run = self
            .backfiller
            .begin_import(&import_id, &first.format)
            .await?;
        // Pages are written a few at a time; each page's task checkpoints after the one
        // before it did, so the position never passes a page not in the store, and a page
        // is recorded as soon as it and those before it are written (see import.rs).
        let mut in_flight: std::collections::VecDeque<PageTask> = std::collections::VecDeque::new();
        let mut next = Some(first);
        let mut read_to_the_end = false;
        let mut failure: Option<CoordinatorError> = None;
        while let Some(message) = next {
            read_to_the_end = message.last_page;
            let planned = Self::import_page(message, &import_id).and_then(
                |(position, users, unsupported)| {
                    let records = i64::try_from(users.len() + unsupported.len()).unwrap_or(0);
                    run.plan(position, records)
                        .map(|plan| (plan, users, unsupported))
                },
            );
            match planned {
                Ok((PagePlan::Write { end }, users, unsupported)) => {
                    let backfiller = self.backfiller.clone();
                    let checkpoint = run.checkpoint_handle();
                    let previous = in_flight.back().map(|t| t.done.clone());
                    let (done, finished) = tokio::sync::watch::channel(None);
                    let task = tokio::spawn(async move {
                        let written = backfiller
                            .write_import_page(&checkpoint.import_id, users, unsupported)
                            .await;
                        let result = match (written, previous) {
                            (Err(e), _) => Err(e),
                            (Ok(counts), previous) => {
                                let before_ok = match previous {
                                    Some(mut previous) => previous
                                        .wait_for(Option::is_some)
                                        .await
                                        .is_ok_and(|ok| *ok == Some(true)),
                                    None => true,
                                };
                                if before_ok {
                                    backfiller.checkpoint_import(&checkpoint, end, counts).await
                                } else {
                                    // The earlier page's own error is the one reported.
                                    Err(CoordinatorError::Internal(
                                        "an earlier page of the import failed".into(),
                                    ))
                                }
                            }
                        };
                        let _ = done.send(Some(result.is_ok()));
                        result
                    });
                    in_flight.push_back(PageTask {
                        task,
                        done: finished,
                    });
                }
                Ok((PagePlan::AlreadyDone, ..)) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            if in_flight.len() >= IMPORT_PIPELINE_DEPTH
                && let Err(e) = Self::wait_oldest(&mut in_flight).await
            {
                failure = Some(e);
                break;
            }
            next = match stream.message().await {
                Ok(message) => message,
                Err(status) => {
                    // What was received is still recorded, so the next run skips it.
                    while !in_flight.is_empty() {
                        if Self::wait_oldest(&mut in_flight).await.is_err() {
                            break;
                        }
                    }
                    let why = format!("the client's stream broke off: {}", status.message());
                    self.backfiller
                        .finish_import(&run, ImportState::Failed, Some(&why))
                        .await?;
                    return Err(status);
                }
            };
        }
        while failure.is_none() && !in_flight.is_empty() {
            if let Err(e) = Self::wait_oldest(&mut in_flight).await {
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            return Err(self.fail_import(&run, e).await);
        }
        if !read_to_the_end {
            let why = "the stream ended before its last page (the client stopped)";
            self.backfiller
                .finish_import(&run, ImportState::Failed, Some(why))
                .await?;
            return Err(CoordinatorError::ImportIncomplete.into());
        }
        self.backfiller
            .finish_import(&run, ImportState::Completed, None)
            .await?;
        Ok(Response::new(ImportUsersResponse {
            import: Some(self.import_view(&import_id, Some(&run)).await?),
        }))
    }

    async fn get_import(
        &self,
        request: Request<GetImportRequest>,
    ) -> Result<Response<GetImportResponse>, Status> {
        let GetImportRequest { import_id } = request.into_inner();
        if import_id.is_empty() || import_id.chars().count() > MAX_IMPORT_ID {
            let mut violations = Violations::default();
            violations.add(
                "import_id",
                format!("1 to {MAX_IMPORT_ID} characters naming the import"),
            );
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        Ok(Response::new(GetImportResponse {
            import: Some(self.import_view(&import_id, None).await?),
        }))
    }

    type RunPreflightStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<RunPreflightResponse, Status>> + Send + 'static>,
    >;

    async fn run_preflight(
        &self,
        request: Request<RunPreflightRequest>,
    ) -> Result<Response<Self::RunPreflightStream>, Status> {
        let RunPreflightRequest {
            batch_size,
            sample_size,
            show_emails,
        } = request.into_inner();
        let mut violations = Violations::default();
        let batch_size = match batch_size {
            0 => DEFAULT_BATCH_SIZE,
            n if (1..=MAX_BATCH_SIZE).contains(&n) => n,
            _ => {
                violations.add(
                    "batch_size",
                    format!("batch_size must be between 1 and {MAX_BATCH_SIZE}"),
                );
                0
            }
        };
        let sample_size = match sample_size {
            0 => DEFAULT_PREFLIGHT_SAMPLES,
            n if (1..=MAX_PREFLIGHT_SAMPLES).contains(&n) => n,
            _ => {
                violations.add(
                    "sample_size",
                    format!("sample_size must be between 1 and {MAX_PREFLIGHT_SAMPLES}"),
                );
                0
            }
        };
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        let options = CensusOptions {
            sample_size: usize::try_from(sample_size).unwrap_or_default(),
            show_emails,
        };
        let run = self.coordinator.open_census(options, batch_size).await?;
        let total = run.legacy_users_total;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let progress = sender.clone();
            let result = run
                .run(|users_read| {
                    // Progress is a hint: a slow reader misses some, never the report.
                    let _ = progress.try_send(Ok(RunPreflightResponse {
                        users_read,
                        legacy_users_total: total,
                        report: None,
                    }));
                    !progress.is_closed()
                })
                .await;
            let last = match result {
                Ok(Some(report)) => Ok(RunPreflightResponse {
                    users_read: report.users,
                    legacy_users_total: total,
                    report: Some(report),
                }),
                Ok(None) => return,
                Err(e) => Err(Status::from(e)),
            };
            let _ = sender.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// `trickle.events.v1.EventFeed`, on the operator listener.
#[derive(Debug, Clone)]
pub(crate) struct EventFeedService {
    pub events: crate::events::EventReader,
}

#[tonic::async_trait]
impl trickle_proto::events::v1::event_feed_server::EventFeed for EventFeedService {
    type WatchEventsStream = std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<trickle_proto::events::v1::WatchEventsResponse, Status>,
                > + Send
                + 'static,
        >,
    >;

    async fn watch_events(
        &self,
        request: Request<trickle_proto::events::v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        use futures::StreamExt as _;
        use trickle_proto::events::v1::{EventKind, WatchEventsRequest, WatchEventsResponse};
        let WatchEventsRequest {
            after_position,
            kinds,
        } = request.into_inner();
        let mut violations = Violations::default();
        if after_position < 0 {
            violations.add(
                "after_position",
                "must be 0 (from the oldest event kept) or a position already seen",
            );
        }
        let mut wanted = Vec::with_capacity(kinds.len());
        for kind in kinds {
            match EventKind::try_from(kind) {
                Ok(EventKind::Unspecified) | Err(_) => {
                    violations.add("kinds", format!("{kind} is not an event kind"))
                }
                Ok(kind) => wanted.push(kind),
            }
        }
        if !violations.is_empty() {
            return Err(CoordinatorError::InvalidRequest(violations.into_vec()).into());
        }
        let events = self.events.watch(after_position, wanted);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(events).map(|event| {
                event
                    .map(|event| WatchEventsResponse { event: Some(event) })
                    .map_err(Status::from)
            }),
        )))
    }
}

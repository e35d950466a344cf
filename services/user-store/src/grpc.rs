//! The tonic layer: proto ⇄ domain conversions and nothing else. Every request field is
//! destructured so that a new field cannot be forgotten silently.
//!
//! Longer than our usual file on purpose: it is one short handler per RPC of
//! `trickle.userstore.v1` plus the conversions they share, and splitting handlers of one
//! service across files would only scatter the conversions.

use crate::error::StoreError;
use crate::users::{
    self, AttemptOutcome, AttemptSource, AuthenticateOutcome, ChangePasswordOutcome, ClientId,
    Import, ImportOutcome, Profile, RedeemResetOutcome, RefusalRemainder, Source, User, Users,
};
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::json::{from_struct as struct_to_json, to_struct as json_to_struct};
use trickle_proto::userstore::v1 as pb;
use trickle_proto::userstore::v1::{
    AuthenticateRequest, AuthenticateResponse, BackfillUser, BackfillUsersRequest,
    BackfillUsersResponse, BackfilledUser, ChangeEmailRequest, ChangeEmailResponse,
    ChangePasswordRequest, ChangePasswordResponse, CheckTombstoneRequest, CheckTombstoneResponse,
    CreateEmailVerificationTicketRequest, CreateEmailVerificationTicketResponse,
    CreatePasswordResetTicketRequest, CreatePasswordResetTicketResponse, CreateUserRequest,
    CreateUserResponse, DeleteUserRequest, DeleteUserResponse, GetMigrationCountsRequest,
    GetMigrationCountsResponse, GetUserRequest, GetUserResponse, ImportUserRequest,
    ImportUserResponse, RecordLoginFailureRequest, RecordLoginFailureResponse,
    RedeemEmailVerificationRequest, RedeemEmailVerificationResponse, RedeemPasswordResetRequest,
    RedeemPasswordResetResponse, SetAccountStateRequest, SetAccountStateResponse,
    SettleLoginAttemptRequest, SettleLoginAttemptResponse, authenticate_response,
    change_password_response, get_user_request::Lookup, import_user_response,
    redeem_password_reset_response, user_store_server::UserStore,
};
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

/// Users per BackfillUsers call: one statement each, so keep it within SQLite's parameter
/// limit (12 per user) and PostgreSQL's comfortable array sizes.
const MAX_BACKFILL_BATCH: usize = 2500;

/// Encoded JSON size cap for each metadata object.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Each profile string (name, picture URL, …).
const MAX_PROFILE_FIELD_BYTES: usize = 2048;

#[derive(Debug, Clone)]
pub(crate) struct UserStoreService {
    pub users: Users,
}

#[tonic::async_trait]
impl UserStore for UserStoreService {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let AuthenticateRequest {
            email,
            password,
            equalize_unknown,
            client_id,
            attempt_source,
            defer_unknown_share,
        } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        let client = violations.check("client_id", ClientId::parse(&client_id));
        let source = violations.check("attempt_source", AttemptSource::parse(&attempt_source));
        let (Some(email), Some(client), Some(source), true) =
            (email, client, source, violations.is_empty())
        else {
            return Err(StoreError::InvalidRequest(violations.into_vec()).into());
        };
        let answer = self
            .users
            .authenticate(
                &email,
                password,
                equalize_unknown,
                defer_unknown_share,
                client.as_ref(),
                source.as_ref(),
            )
            .await?;
        use authenticate_response::Outcome;
        let mut response = AuthenticateResponse {
            outcome: Outcome::Unspecified.into(),
            user: None,
            retry_after_seconds: 0,
            mfa_challenge: String::new(),
            refusal_remainder: match answer.remainder {
                None => pb::RefusalRemainder::Unspecified,
                Some(RefusalRemainder::Nothing) => pb::RefusalRemainder::None,
                Some(RefusalRemainder::LegacyCheck) => pb::RefusalRemainder::LegacyCheck,
                Some(RefusalRemainder::LegacyLookup) => pb::RefusalRemainder::LegacyLookup,
            }
            .into(),
        };
        let outcome = match answer.outcome {
            AuthenticateOutcome::Authenticated(user) => {
                response.user = Some(user_to_proto(user));
                Outcome::Authenticated
            }
            AuthenticateOutcome::Blocked(user) => {
                response.user = Some(user_to_proto(user));
                Outcome::Blocked
            }
            AuthenticateOutcome::MfaRequired { challenge } => {
                response.mfa_challenge = challenge.into_string();
                Outcome::MfaRequired
            }
            AuthenticateOutcome::WrongPassword => Outcome::WrongPassword,
            AuthenticateOutcome::NotFound => Outcome::NotFound,
            AuthenticateOutcome::Tombstoned => Outcome::Tombstoned,
            AuthenticateOutcome::Throttled { retry_after } => {
                response.retry_after_seconds =
                    i64::try_from(retry_after.as_secs().max(1)).unwrap_or(i64::MAX);
                Outcome::Throttled
            }
        };
        response.outcome = outcome.into();
        Ok(Response::new(response))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let CreateUserRequest {
            email,
            password,
            profile,
        } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check_new_password("password", &password);
        let profile = profile_from_proto(profile, &mut violations);
        let email = violations.verdict_with(email)?;
        let user = self.users.create_user(email, password, profile).await?;
        Ok(Response::new(CreateUserResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn import_user(
        &self,
        request: Request<ImportUserRequest>,
    ) -> Result<Response<ImportUserResponse>, Status> {
        let ImportUserRequest {
            legacy_id,
            email,
            email_verified,
            profile,
            password,
            source,
            reset_ticket,
            blocked,
            totp,
        } = request.into_inner();
        let mut violations = Violations::default();
        let totp = crate::grpc_factors::totp_from_proto(totp, &mut violations);
        if legacy_id.is_empty() {
            violations.add("legacy_id", "legacy_id is required");
        } else if legacy_id.len() > 255 {
            violations.add("legacy_id", "legacy_id must be at most 255 bytes");
        }
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        let profile = profile_from_proto(profile, &mut violations);
        let source = match auth::Source::try_from(source) {
            Ok(auth::Source::LoginMigration) => Some(Source::LoginMigration),
            Ok(auth::Source::ResetMigration) => Some(Source::ResetMigration),
            Ok(auth::Source::Backfill) => Some(Source::Backfill),
            _ => {
                violations.add(
                    "source",
                    "source must be LOGIN_MIGRATION, RESET_MIGRATION or BACKFILL",
                );
                None
            }
        };
        let (Some(email), Some(source), true) = (email, source, violations.is_empty()) else {
            return Err(StoreError::InvalidRequest(violations.into_vec()).into());
        };
        let import = Import {
            legacy_id,
            email,
            email_verified,
            profile,
            password,
            source,
            blocked,
            totp,
        };
        let outcome = if reset_ticket.is_empty() {
            self.users.import_user(import).await?
        } else {
            self.users.import_on_reset(import, &reset_ticket).await?
        };
        use import_user_response::Outcome;
        let (outcome, user) = match outcome {
            ImportOutcome::Created(user) => (Outcome::Created, Some(user_to_proto(user))),
            ImportOutcome::AlreadyImported(user) => {
                (Outcome::AlreadyImported, Some(user_to_proto(user)))
            }
            ImportOutcome::Conflict => (Outcome::Conflict, None),
            ImportOutcome::Tombstoned => (Outcome::Tombstoned, None),
            ImportOutcome::MfaRequired(challenge) => {
                return Ok(Response::new(ImportUserResponse {
                    outcome: Outcome::MfaRequired.into(),
                    user: None,
                    mfa_challenge: challenge.into_string(),
                }));
            }
        };
        Ok(Response::new(ImportUserResponse {
            outcome: outcome.into(),
            user,
            mfa_challenge: String::new(),
        }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let GetUserRequest { lookup } = request.into_inner();
        let user = match lookup {
            Some(Lookup::UserId(user_id)) if !user_id.is_empty() => {
                self.users.get_by_id(&user_id).await?
            }
            Some(Lookup::Email(email)) => {
                let mut violations = Violations::default();
                let Some(email) = violations.check("email", Email::parse(&email)) else {
                    return Err(StoreError::InvalidRequest(violations.into_vec()).into());
                };
                self.users.get_by_email(&email).await?
            }
            _ => {
                let mut violations = Violations::default();
                violations.add("lookup", "set user_id or email");
                return Err(StoreError::InvalidRequest(violations.into_vec()).into());
            }
        };
        Ok(Response::new(GetUserResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let ChangePasswordRequest {
            user_id,
            old_password,
            new_password,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let old_password = Password::new(old_password);
        violations.check("old_password", old_password.check_presented());
        let new_password = Password::new(new_password);
        violations.check_new_password("new_password", &new_password);
        violations.verdict()?;
        use change_password_response::Outcome;
        let (outcome, user, retry_after) = match self
            .users
            .change_password(&user_id, old_password, new_password)
            .await?
        {
            ChangePasswordOutcome::Changed(user) => {
                (Outcome::Changed, Some(user_to_proto(user)), None)
            }
            ChangePasswordOutcome::WrongPassword => (Outcome::WrongPassword, None, None),
            ChangePasswordOutcome::Throttled { retry_after } => {
                (Outcome::Throttled, None, Some(retry_after))
            }
        };
        Ok(Response::new(ChangePasswordResponse {
            outcome: outcome.into(),
            user,
            retry_after_seconds: retry_after
                .map_or(0, |d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX)),
        }))
    }

    async fn change_email(
        &self,
        request: Request<ChangeEmailRequest>,
    ) -> Result<Response<ChangeEmailResponse>, Status> {
        let ChangeEmailRequest { user_id, new_email } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let email = violations.check("new_email", Email::parse(&new_email));
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(StoreError::InvalidRequest(violations.into_vec()).into());
        };
        let user = self.users.change_email(&user_id, &email).await?;
        Ok(Response::new(ChangeEmailResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let DeleteUserRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        self.users.delete_user(&user_id).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn set_account_state(
        &self,
        request: Request<SetAccountStateRequest>,
    ) -> Result<Response<SetAccountStateResponse>, Status> {
        let SetAccountStateRequest {
            user_id,
            blocked,
            password_change_required,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let user = self
            .users
            .set_account_state(&user_id, blocked, password_change_required)
            .await?;
        Ok(Response::new(SetAccountStateResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let pb::UpdateProfileRequest {
            user_id,
            profile,
            fields,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let mut set = users::ProfileFields::default();
        for field in &fields {
            if !set.set(field) {
                violations.add(
                    "fields",
                    format!(
                        "{:?} is not a profile field ({})",
                        field.chars().take(64).collect::<String>(),
                        users::ProfileFields::NAMES.join(", ")
                    ),
                );
            }
        }
        if set.is_empty() && violations.is_empty() {
            violations.add("fields", "name at least one field to set");
        }
        let profile = profile_from_proto(profile, &mut violations);
        violations.verdict()?;
        let user = self.users.update_profile(&user_id, set, &profile).await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let pb::ListEventsRequest {
            after_position,
            limit,
        } = request.into_inner();
        let mut violations = Violations::default();
        if after_position < 0 {
            violations.add("after_position", "must be 0 or a position already seen");
        }
        if !(0..=MAX_EVENTS_PAGE).contains(&limit) {
            violations.add(
                "limit",
                format!("must be between 1 and {MAX_EVENTS_PAGE} (0: {DEFAULT_EVENTS_PAGE})"),
            );
        }
        violations.verdict()?;
        let limit = if limit == 0 {
            DEFAULT_EVENTS_PAGE
        } else {
            limit
        };
        let events = self
            .users
            .list_events(after_position, i64::from(limit))
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event_to_proto).collect(),
        }))
    }

    async fn check_tombstone(
        &self,
        request: Request<CheckTombstoneRequest>,
    ) -> Result<Response<CheckTombstoneResponse>, Status> {
        let CheckTombstoneRequest { legacy_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("legacy_id", &legacy_id, 255);
        violations.verdict()?;
        let tombstoned = self.users.is_legacy_id_tombstoned(&legacy_id).await?;
        Ok(Response::new(CheckTombstoneResponse { tombstoned }))
    }

    async fn create_password_reset_ticket(
        &self,
        request: Request<CreatePasswordResetTicketRequest>,
    ) -> Result<Response<CreatePasswordResetTicketResponse>, Status> {
        let CreatePasswordResetTicketRequest { email, legacy_id } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        if !legacy_id.is_empty() {
            violations.check_id("legacy_id", &legacy_id, 255);
        }
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(StoreError::InvalidRequest(violations.into_vec()).into());
        };
        let legacy_id = (!legacy_id.is_empty()).then_some(legacy_id.as_str());
        let (ticket, expires_at) = self
            .users
            .create_password_reset_ticket(&email, legacy_id)
            .await?;
        Ok(Response::new(CreatePasswordResetTicketResponse {
            ticket: ticket.into_string(),
            expires_at: Some(timestamp(expires_at)),
        }))
    }

    async fn redeem_password_reset(
        &self,
        request: Request<RedeemPasswordResetRequest>,
    ) -> Result<Response<RedeemPasswordResetResponse>, Status> {
        let RedeemPasswordResetRequest {
            ticket,
            new_password,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("ticket", &ticket, 256);
        let password = Password::new(new_password);
        violations.check_new_password("new_password", &password);
        violations.verdict()?;
        use redeem_password_reset_response::Outcome;
        let response = match self.users.redeem_password_reset(&ticket, password).await? {
            RedeemResetOutcome::Reset(user) => RedeemPasswordResetResponse {
                outcome: Outcome::Reset.into(),
                user: Some(user_to_proto(user)),
                ..Default::default()
            },
            RedeemResetOutcome::NeedsImport { legacy_id, email } => RedeemPasswordResetResponse {
                outcome: Outcome::NeedsImport.into(),
                user: None,
                legacy_id,
                email,
            },
        };
        Ok(Response::new(response))
    }

    async fn create_email_verification_ticket(
        &self,
        request: Request<CreateEmailVerificationTicketRequest>,
    ) -> Result<Response<CreateEmailVerificationTicketResponse>, Status> {
        let CreateEmailVerificationTicketRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let (ticket, expires_at) = self
            .users
            .create_email_verification_ticket(&user_id)
            .await?;
        Ok(Response::new(CreateEmailVerificationTicketResponse {
            ticket: ticket.into_string(),
            expires_at: Some(timestamp(expires_at)),
        }))
    }

    async fn redeem_email_verification(
        &self,
        request: Request<RedeemEmailVerificationRequest>,
    ) -> Result<Response<RedeemEmailVerificationResponse>, Status> {
        let RedeemEmailVerificationRequest { ticket } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("ticket", &ticket, 256);
        violations.verdict()?;
        let user = self.users.redeem_email_verification(&ticket).await?;
        Ok(Response::new(RedeemEmailVerificationResponse {
            user: Some(user_to_proto(user)),
        }))
    }

    async fn get_migration_counts(
        &self,
        request: Request<GetMigrationCountsRequest>,
    ) -> Result<Response<GetMigrationCountsResponse>, Status> {
        let GetMigrationCountsRequest {} = request.into_inner();
        let counts = self.users.migration_counts().await?;
        Ok(Response::new(GetMigrationCountsResponse {
            signup_users: counts.signup,
            login_migration_users: counts.login_migration,
            reset_migration_users: counts.reset_migration,
            backfill_users: counts.backfill,
            tombstoned_legacy_users: counts.tombstoned_legacy,
        }))
    }

    async fn backfill_users(
        &self,
        request: Request<BackfillUsersRequest>,
    ) -> Result<Response<BackfillUsersResponse>, Status> {
        let BackfillUsersRequest { users } = request.into_inner();
        if users.len() > MAX_BACKFILL_BATCH {
            let mut violations = Violations::default();
            violations.add(
                "users",
                format!("at most {MAX_BACKFILL_BATCH} users per call"),
            );
            violations.verdict()?;
        }
        // A bad record is reported by legacy id and left out; it never fails the batch.
        let mut valid = Vec::with_capacity(users.len());
        let mut invalid_legacy_ids = Vec::new();
        for user in users {
            let BackfillUser {
                legacy_id,
                email,
                email_verified,
                profile,
                password_hash,
                blocked,
                totp,
            } = user;
            let mut violations = Violations::default();
            let totp = crate::grpc_factors::totp_from_proto(totp, &mut violations);
            let email = violations.check("email", Email::parse(&email));
            let profile = profile_from_proto(profile, &mut violations);
            let readable = trickle_password::StoredHash::parse(
                &password_hash,
                trickle_password::HashFormat::Auto,
            )
            .is_ok();
            match (
                email,
                readable,
                violations.is_empty(),
                !legacy_id.is_empty() && legacy_id.len() <= 255,
            ) {
                (Some(email), true, true, true) => valid.push(users::BackfillUser {
                    legacy_id,
                    email,
                    email_verified,
                    profile,
                    password_hash,
                    blocked,
                    totp,
                }),
                _ => invalid_legacy_ids.push(legacy_id.chars().take(255).collect()),
            }
        }
        let outcome = self.users.backfill(&valid).await?;
        Ok(Response::new(BackfillUsersResponse {
            inserted: outcome
                .inserted
                .into_iter()
                .map(|(user_id, legacy_id)| BackfilledUser { user_id, legacy_id })
                .collect(),
            skipped_existing: outcome.skipped_existing,
            skipped_tombstoned: outcome.skipped_tombstoned,
            invalid_legacy_ids,
            backfilled: outcome
                .backfilled
                .into_iter()
                .map(|(user_id, legacy_id)| BackfilledUser { user_id, legacy_id })
                .collect(),
        }))
    }

    async fn record_login_failure(
        &self,
        request: Request<RecordLoginFailureRequest>,
    ) -> Result<Response<RecordLoginFailureResponse>, Status> {
        let RecordLoginFailureRequest {
            email,
            client_id,
            attempt_source,
        } = request.into_inner();
        let locked = self
            .settle(email, client_id, attempt_source, AttemptOutcome::Failed)
            .await?;
        Ok(Response::new(RecordLoginFailureResponse {
            retry_after_seconds: retry_after_seconds(locked),
        }))
    }

    async fn settle_login_attempt(
        &self,
        request: Request<SettleLoginAttemptRequest>,
    ) -> Result<Response<SettleLoginAttemptResponse>, Status> {
        let SettleLoginAttemptRequest {
            email,
            client_id,
            attempt_source,
            outcome,
            spend_refusal_share,
        } = request.into_inner();
        let outcome = match pb::LoginAttemptOutcome::try_from(outcome) {
            Ok(pb::LoginAttemptOutcome::Failed) => AttemptOutcome::Failed,
            Ok(pb::LoginAttemptOutcome::Succeeded) => AttemptOutcome::Succeeded,
            Ok(pb::LoginAttemptOutcome::Undecided) => AttemptOutcome::Undecided,
            Ok(pb::LoginAttemptOutcome::Unspecified) | Err(_) => {
                let mut violations = Violations::default();
                violations.add("outcome", "must be FAILED, SUCCEEDED or UNDECIDED");
                return Err(StoreError::InvalidRequest(violations.into_vec()).into());
            }
        };
        let locked = self
            .settle(email, client_id, attempt_source, outcome)
            .await?;
        // After the failure is counted, so that a full hashing pool (OVERLOADED) cannot
        // make it uncounted.
        if spend_refusal_share && outcome == AttemptOutcome::Failed {
            self.users.spend_deferred_refusal_share().await?;
        }
        Ok(Response::new(SettleLoginAttemptResponse {
            retry_after_seconds: retry_after_seconds(locked),
        }))
    }
}

impl UserStoreService {
    async fn settle(
        &self,
        email: String,
        client_id: String,
        attempt_source: String,
        outcome: AttemptOutcome,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let client = violations.check("client_id", ClientId::parse(&client_id));
        let source = violations.check("attempt_source", AttemptSource::parse(&attempt_source));
        let (Some(email), Some(client), Some(source), true) =
            (email, client, source, violations.is_empty())
        else {
            return Err(StoreError::InvalidRequest(violations.into_vec()));
        };
        self.users
            .settle_login_attempt(&email, source.as_ref(), client.as_ref(), outcome)
            .await
    }
}

/// A lock's wait in whole seconds for the wire (at least 1); 0 for no lock.
fn retry_after_seconds(locked: Option<std::time::Duration>) -> i64 {
    locked.map_or(0, |d| i64::try_from(d.as_secs().max(1)).unwrap_or(i64::MAX))
}

fn non_empty(field: &str, value: String, violations: &mut Violations) -> Option<String> {
    if value.len() > MAX_PROFILE_FIELD_BYTES {
        violations.add(
            format!("profile.{field}"),
            format!("must be at most {MAX_PROFILE_FIELD_BYTES} bytes"),
        );
        return None;
    }
    (!value.is_empty()).then_some(value)
}

pub fn profile_from_proto(profile: Option<auth::Profile>, violations: &mut Violations) -> Profile {
    let auth::Profile {
        name,
        given_name,
        family_name,
        nickname,
        picture,
        user_metadata,
        app_metadata,
    } = profile.unwrap_or_default();
    let mut metadata = |field: &str, value: Option<prost_types::Struct>| {
        let map = value.map(struct_to_json).unwrap_or_default();
        if serde_json::to_vec(&map).map_or(true, |v| v.len() > MAX_METADATA_BYTES) {
            violations.add(
                format!("profile.{field}"),
                format!("must encode to at most {MAX_METADATA_BYTES} bytes of JSON"),
            );
        }
        map
    };
    let user_metadata = metadata("user_metadata", user_metadata);
    let app_metadata = metadata("app_metadata", app_metadata);
    Profile {
        name: non_empty("name", name, violations),
        given_name: non_empty("given_name", given_name, violations),
        family_name: non_empty("family_name", family_name, violations),
        nickname: non_empty("nickname", nickname, violations),
        picture: non_empty("picture", picture, violations),
        user_metadata,
        app_metadata,
    }
}

pub(crate) fn user_to_proto(user: User) -> auth::User {
    let User {
        user_id,
        email,
        display_email,
        email_verified,
        legacy_id,
        profile,
        source,
        created_at,
        updated_at,
        last_login_at,
        credentials_changed_at,
        blocked,
        password_change_required,
        mfa_enrolled,
    } = user;
    let Profile {
        name,
        given_name,
        family_name,
        nickname,
        picture,
        user_metadata,
        app_metadata,
    } = profile;
    let source = match source {
        Source::Signup => auth::Source::Signup,
        Source::LoginMigration => auth::Source::LoginMigration,
        Source::ResetMigration => auth::Source::ResetMigration,
        Source::Backfill => auth::Source::Backfill,
    };
    auth::User {
        user_id,
        email,
        email_verified,
        legacy_id: legacy_id.unwrap_or_default(),
        profile: Some(auth::Profile {
            name: name.unwrap_or_default(),
            given_name: given_name.unwrap_or_default(),
            family_name: family_name.unwrap_or_default(),
            nickname: nickname.unwrap_or_default(),
            picture: picture.unwrap_or_default(),
            user_metadata: Some(json_to_struct(user_metadata)),
            app_metadata: Some(json_to_struct(app_metadata)),
        }),
        source: source.into(),
        created_at: Some(timestamp(created_at)),
        updated_at: Some(timestamp(updated_at)),
        last_login_at: last_login_at.map(timestamp),
        display_email,
        credentials_changed_at: credentials_changed_at.map(timestamp),
        blocked,
        password_change_required,
        mfa_enrolled,
    }
}

const MAX_EVENTS_PAGE: i32 = 1000;
const DEFAULT_EVENTS_PAGE: i32 = 100;

fn event_to_proto(event: crate::events::StoredEvent) -> trickle_proto::events::v1::Event {
    use crate::events::EventKind;
    use trickle_proto::events::v1::{EventKind as Kind, UserSource};
    let detail = event.detail;
    // A kind written by a newer replica during a rollout is passed on as unspecified, not
    // dropped, so that positions stay contiguous for the consumer.
    let kind = event.kind.map_or(Kind::Unspecified, EventKind::contract);
    let source = match detail.source.as_deref().and_then(Source::parse) {
        Some(Source::Signup) => UserSource::Signup,
        Some(Source::LoginMigration) => UserSource::LoginMigration,
        Some(Source::ResetMigration) => UserSource::ResetMigration,
        Some(Source::Backfill) => UserSource::Backfill,
        None => UserSource::Unspecified,
    };
    trickle_proto::events::v1::Event {
        position: event.position,
        event_id: event.event_id,
        kind: kind as i32,
        occurred_at: Some(timestamp(event.occurred_at)),
        user_id: event.user_id,
        legacy_id: event.legacy_id.unwrap_or_default(),
        email: event.email.unwrap_or_default(),
        source: source as i32,
        password_rehashed: detail.password_rehashed,
        factor_kind: detail.factor_kind.unwrap_or_default(),
        profile_fields: detail.profile_fields,
        second_factor: detail.second_factor,
    }
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

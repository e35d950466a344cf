//! The frontend's upstreams — the user-store and the migration coordinator — behind one type.
//! It owns the generated clients, classifies their errors ([`FrontendError::from_upstream`])
//! and decodes their answers into this service's own types, so that the flows in `auth.rs`
//! read as the flows, with no other service's wire types in them. The public API's own types
//! (`auth::User`, `auth::Profile`) pass through: they are this service's contract.

use crate::error::FrontendError;
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::migration::v1 as migration;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_factors_client::UserFactorsClient;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;
use trickle_service_kit::client::Channel;

/// Where a login attempt comes from: the calling client (its certificate's fingerprint,
/// when the public API requires one) and the source the caller named for it (the end user's
/// address; personal data, so `Debug` leaves it out). Either may be empty (unknown).
#[derive(Clone, Default)]
pub struct AttemptOrigin {
    pub client_id: String,
    pub source: String,
}

impl std::fmt::Debug for AttemptOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptOrigin")
            .field("client_id", &self.client_id)
            .field("source", &trickle_password::redacted(&self.source))
            .finish()
    }
}

/// The store's answer to a login.
#[derive(Debug)]
pub enum StoreAnswer {
    Authenticated(auth::User),
    /// The password is right, but the user is blocked.
    Blocked,
    /// A wrong password, or a deleted user (refused alike; the legacy store is never asked
    /// about a deleted user).
    WrongPassword,
    NotFound,
    /// Too many failures for the email: seconds to wait.
    Throttled(u64),
    /// The password is right; the user's second factor is next (with this challenge).
    MfaRequired(String),
}

/// The store's answer to a second-factor code.
#[derive(Debug)]
pub enum MfaAnswer {
    /// With the `amr` values of how the user proved it, and whether this code moved them
    /// from the legacy store.
    Verified {
        user: auth::User,
        amr: &'static [&'static str],
        migrated: bool,
    },
    WrongCode,
    ChallengeInvalid,
    Throttled(u64),
    Blocked,
}

/// What is left to spend on a refusal the store decided, so that it costs what every
/// refusal costs (see user-store/src/refusal.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalShare {
    Nothing,
    /// The legacy store's lookup and check.
    LegacyCheck,
    /// The legacy store's lookup only.
    LegacyLookup,
}

/// How a login attempt the store left open ended (the legacy store decided it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Failed,
    Succeeded,
    Undecided,
}

/// The coordinator's answer to a first login.
#[derive(Debug)]
pub enum FirstLogin {
    /// This login moved the user into the store.
    Migrated(auth::User),
    /// A concurrent login moved them first; the password matches.
    AlreadyMigrated(auth::User),
    /// Unknown to the legacy store, a wrong password, a conflict or a deleted user: refused.
    Refused,
    /// The coordinator is in AUTHORITATIVE mode: the store alone decides.
    NotImporting,
    /// The password is right and the legacy user has a second factor: nothing is imported
    /// until a code from it (VerifyMfa with this challenge).
    MfaRequired(String),
}

/// The store's answer to a password reset.
#[derive(Debug)]
pub enum ResetAnswer {
    Reset(auth::User),
    /// The ticket belongs to a user only the legacy store has: the coordinator imports them.
    NeedsImport {
        legacy_id: String,
        email: String,
    },
}

/// A user looked up by id or (normalized) email.
#[derive(Debug, Clone)]
pub enum UserLookup {
    UserId(String),
    Email(Email),
}

#[derive(Debug, Clone)]
pub struct Upstreams {
    store: UserStoreClient<Channel>,
    factors: UserFactorsClient<Channel>,
    coordinator: MigrationCoordinatorClient<Channel>,
}

fn store_error(status: tonic::Status) -> FrontendError {
    FrontendError::from_upstream(&status, FrontendError::StoreUnavailable)
}

fn coordinator_error(status: tonic::Status) -> FrontendError {
    FrontendError::from_upstream(&status, FrontendError::LegacyUnavailable)
}

fn missing(what: &str) -> FrontendError {
    FrontendError::Internal(format!("{what} answered without the field it must carry"))
}

fn retry_after(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(1).max(1)
}

impl Upstreams {
    pub fn new(
        store: UserStoreClient<Channel>,
        factors: UserFactorsClient<Channel>,
        coordinator: MigrationCoordinatorClient<Channel>,
    ) -> Self {
        Self {
            store,
            factors,
            coordinator,
        }
    }

    pub async fn authenticate(
        &self,
        email: &Email,
        password: &Password,
        store_decides: bool,
        origin: &AttemptOrigin,
    ) -> Result<(StoreAnswer, RefusalShare), FrontendError> {
        let request = store::AuthenticateRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
            equalize_unknown: store_decides,
            client_id: origin.client_id.clone(),
            attempt_source: origin.source.clone(),
            // The legacy store is asked next: the store's share of a refusal is paid only
            // if that refuses too (`settle_refused_attempt`).
            defer_unknown_share: !store_decides,
        };
        let answer = self
            .store
            .clone()
            .authenticate(request)
            .await
            .map_err(store_error)?
            .into_inner();
        let share = match store::RefusalRemainder::try_from(answer.refusal_remainder) {
            Ok(store::RefusalRemainder::LegacyCheck) => RefusalShare::LegacyCheck,
            Ok(store::RefusalRemainder::LegacyLookup) => RefusalShare::LegacyLookup,
            _ => RefusalShare::Nothing,
        };
        use store::authenticate_response::Outcome;
        let decoded = match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Authenticated), Some(user)) => StoreAnswer::Authenticated(user),
            (Ok(Outcome::Blocked), _) => StoreAnswer::Blocked,
            (Ok(Outcome::WrongPassword | Outcome::Tombstoned), _) => StoreAnswer::WrongPassword,
            (Ok(Outcome::NotFound), _) => StoreAnswer::NotFound,
            (Ok(Outcome::Throttled), _) => {
                StoreAnswer::Throttled(retry_after(answer.retry_after_seconds))
            }
            (Ok(Outcome::MfaRequired), _) if !answer.mfa_challenge.is_empty() => {
                StoreAnswer::MfaRequired(answer.mfa_challenge)
            }
            _ => return Err(missing("the user store's Authenticate")),
        };
        Ok((decoded, share))
    }

    /// Have the legacy connector spend what its refusal costs. Best effort: the answer is a
    /// refusal either way, and a coordinator or connector that cannot (down, an older or
    /// third-party connector without the call) only makes this refusal faster.
    pub async fn equalize_refused_login(&self, email: &Email, lookup_only: bool) {
        let request = migration::EqualizeRefusedLoginRequest {
            email: email.display().to_owned(),
            lookup_only,
        };
        if let Err(status) = self
            .coordinator
            .clone()
            .equalize_refused_login(request)
            .await
        {
            tracing::debug!(code = ?status.code(), "could not equalize a refused login");
        }
    }

    /// Settle the attempt the store left open (NOT_FOUND while importing) once the legacy
    /// store decided it. In the background: the store counted the attempt before checking
    /// it, so it holds its place in the throttle until settled (and is forgotten after two
    /// minutes if this never lands), and the answer does not wait for the write — a refusal
    /// decided here costs no more than one the store decided.
    pub fn settle_login_attempt(&self, email: &Email, origin: &AttemptOrigin, settled: Settled) {
        let outcome = match settled {
            Settled::Failed => store::LoginAttemptOutcome::Failed,
            Settled::Succeeded => store::LoginAttemptOutcome::Succeeded,
            Settled::Undecided => store::LoginAttemptOutcome::Undecided,
        };
        let request = settle_request(email, origin, outcome, false);
        let mut store = self.store.clone();
        tokio::spawn(async move {
            if let Err(status) = store.settle_login_attempt(request).await {
                tracing::warn!(code = ?status.code(), "could not settle a login attempt");
            }
        });
    }

    /// Settle an attempt the legacy store refused, and have the store spend its share of
    /// the refusal (deferred by `authenticate`), before the refusal is answered: a refusal
    /// costs the same whichever store decided it. Best effort, as `equalize_refused_login`:
    /// a store that cannot only makes this refusal faster, and the attempt then stops
    /// counting after two minutes.
    pub async fn settle_refused_attempt(&self, email: &Email, origin: &AttemptOrigin) {
        let request = settle_request(email, origin, store::LoginAttemptOutcome::Failed, true);
        if let Err(status) = self.store.clone().settle_login_attempt(request).await {
            tracing::warn!(code = ?status.code(), "could not settle a refused login attempt");
        }
    }

    pub async fn migrate_on_login(
        &self,
        email: &Email,
        password: &Password,
    ) -> Result<FirstLogin, FrontendError> {
        let request = migration::MigrateOnLoginRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let answer = self
            .coordinator
            .clone()
            .migrate_on_login(request)
            .await
            .map_err(coordinator_error)?
            .into_inner();
        use migration::migrate_on_login_response::Outcome;
        Ok(match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Migrated), Some(user)) => FirstLogin::Migrated(user),
            (Ok(Outcome::AlreadyMigrated), Some(user)) => FirstLogin::AlreadyMigrated(user),
            (Ok(Outcome::LegacyRejected | Outcome::Conflict | Outcome::Tombstoned), _) => {
                FirstLogin::Refused
            }
            (Ok(Outcome::NotImporting), _) => FirstLogin::NotImporting,
            (Ok(Outcome::MfaRequired), _) if !answer.mfa_challenge.is_empty() => {
                FirstLogin::MfaRequired(answer.mfa_challenge)
            }
            _ => return Err(missing("the coordinator's MigrateOnLogin")),
        })
    }

    pub async fn create_user(
        &self,
        email: &Email,
        password: &Password,
        profile: Option<auth::Profile>,
    ) -> Result<auth::User, FrontendError> {
        let request = store::CreateUserRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
            profile,
        };
        let created = self
            .store
            .clone()
            .create_user(request)
            .await
            .map_err(store_error)?
            .into_inner();
        created
            .user
            .ok_or_else(|| missing("the user store's CreateUser"))
    }

    /// A store user; `UserNotFound` when the store has none.
    pub async fn user(&self, lookup: &UserLookup) -> Result<auth::User, FrontendError> {
        let lookup = match lookup {
            UserLookup::UserId(user_id) => store::get_user_request::Lookup::UserId(user_id.clone()),
            UserLookup::Email(email) => {
                store::get_user_request::Lookup::Email(email.normalized().to_owned())
            }
        };
        let answer = self
            .store
            .clone()
            .get_user(store::GetUserRequest {
                lookup: Some(lookup),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        answer.user.ok_or(FrontendError::UserNotFound)
    }

    /// What the legacy store knows about an email (nothing in AUTHORITATIVE mode, nothing for
    /// deleted users), as the public API shows a user not migrated yet: no user id.
    pub async fn legacy_user(&self, email: &Email) -> Result<Option<auth::User>, FrontendError> {
        let answer = self
            .coordinator
            .clone()
            .find_legacy_user(migration::FindLegacyUserRequest {
                email: email.display().to_owned(),
            })
            .await
            .map_err(coordinator_error)?
            .into_inner();
        Ok(answer.user.filter(|_| answer.found).map(legacy_user_view))
    }

    pub async fn change_password(
        &self,
        user_id: &str,
        old: &Password,
        new: &Password,
    ) -> Result<auth::User, FrontendError> {
        let answer = self
            .store
            .clone()
            .change_password(store::ChangePasswordRequest {
                user_id: user_id.to_owned(),
                old_password: old.expose_secret().to_owned(),
                new_password: new.expose_secret().to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        use store::change_password_response::Outcome;
        match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Changed), Some(user)) => Ok(user),
            (Ok(Outcome::WrongPassword), _) => Err(FrontendError::InvalidCredentials),
            (Ok(Outcome::Throttled), _) => Err(FrontendError::RateLimited(retry_after(
                answer.retry_after_seconds,
            ))),
            _ => Err(missing("the user store's ChangePassword")),
        }
    }

    pub async fn change_email(
        &self,
        user_id: &str,
        new_email: &Email,
    ) -> Result<auth::User, FrontendError> {
        let answer = self
            .store
            .clone()
            .change_email(store::ChangeEmailRequest {
                user_id: user_id.to_owned(),
                new_email: new_email.display().to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        answer
            .user
            .ok_or_else(|| missing("the user store's ChangeEmail"))
    }

    /// A reset ticket for the store user with this email or, with `legacy_id`, for a user
    /// only the legacy store has.
    pub async fn create_password_reset_ticket(
        &self,
        email: &Email,
        legacy_id: Option<&str>,
    ) -> Result<(String, Option<prost_types::Timestamp>), FrontendError> {
        let answer = self
            .store
            .clone()
            .create_password_reset_ticket(store::CreatePasswordResetTicketRequest {
                email: email.display().to_owned(),
                // The wire's empty string: a store user.
                legacy_id: legacy_id.unwrap_or_default().to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        Ok((answer.ticket, answer.expires_at))
    }

    pub async fn redeem_password_reset(
        &self,
        ticket: &str,
        new_password: &Password,
    ) -> Result<ResetAnswer, FrontendError> {
        let answer = self
            .store
            .clone()
            .redeem_password_reset(store::RedeemPasswordResetRequest {
                ticket: ticket.to_owned(),
                new_password: new_password.expose_secret().to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        use store::redeem_password_reset_response::Outcome;
        match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Reset), Some(user)) => Ok(ResetAnswer::Reset(user)),
            (Ok(Outcome::NeedsImport), _) => Ok(ResetAnswer::NeedsImport {
                legacy_id: answer.legacy_id,
                email: answer.email,
            }),
            _ => Err(missing("the user store's RedeemPasswordReset")),
        }
    }

    /// Import a user only the legacy store has with the password a reset ticket sets; whether
    /// this call moved them.
    pub async fn migrate_on_reset(
        &self,
        ticket: &str,
        new_password: &Password,
        legacy_id: String,
        email: String,
    ) -> Result<(auth::User, bool), FrontendError> {
        let migrated = self
            .coordinator
            .clone()
            .migrate_on_reset(migration::MigrateOnResetRequest {
                ticket: ticket.to_owned(),
                new_password: new_password.expose_secret().to_owned(),
                legacy_id,
                email,
            })
            .await
            .map_err(coordinator_error)?
            .into_inner();
        let user = migrated
            .user
            .ok_or_else(|| missing("the coordinator's MigrateOnReset"))?;
        Ok((user, migrated.migrated))
    }

    pub async fn create_email_verification_ticket(
        &self,
        user_id: &str,
    ) -> Result<(String, Option<prost_types::Timestamp>), FrontendError> {
        let answer = self
            .store
            .clone()
            .create_email_verification_ticket(store::CreateEmailVerificationTicketRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        Ok((answer.ticket, answer.expires_at))
    }

    pub async fn verify_email(&self, ticket: &str) -> Result<auth::User, FrontendError> {
        let answer = self
            .store
            .clone()
            .redeem_email_verification(store::RedeemEmailVerificationRequest {
                ticket: ticket.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        answer
            .user
            .ok_or_else(|| missing("the user store's RedeemEmailVerification"))
    }

    /// Change a user's account state; `None` leaves a field as it is.
    pub async fn set_account_state(
        &self,
        user_id: &str,
        blocked: Option<bool>,
        password_change_required: Option<bool>,
    ) -> Result<auth::User, FrontendError> {
        self.store
            .clone()
            .set_account_state(store::SetAccountStateRequest {
                user_id: user_id.to_owned(),
                blocked,
                password_change_required,
            })
            .await
            .map_err(store_error)?
            .into_inner()
            .user
            .ok_or_else(|| {
                FrontendError::Internal("the store answered SetAccountState without a user".into())
            })
    }

    /// The second step of a login.
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        code: &str,
        origin: &AttemptOrigin,
    ) -> Result<MfaAnswer, FrontendError> {
        let answer = self
            .factors
            .clone()
            .verify_mfa(store::VerifyMfaRequest {
                mfa_challenge: challenge.to_owned(),
                code: code.to_owned(),
                client_id: origin.client_id.clone(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        use store::verify_mfa_response::{Method, Outcome};
        Ok(
            match (
                Outcome::try_from(answer.outcome),
                Method::try_from(answer.method),
                answer.user,
            ) {
                (Ok(Outcome::Verified), Ok(Method::Totp), Some(user)) => MfaAnswer::Verified {
                    user,
                    amr: &["pwd", "otp", "mfa"],
                    migrated: answer.migrated,
                },
                (Ok(Outcome::Verified), Ok(Method::RecoveryCode), Some(user)) => {
                    MfaAnswer::Verified {
                        user,
                        amr: &["pwd", "mfa"],
                        migrated: answer.migrated,
                    }
                }
                (Ok(Outcome::WrongCode), _, _) => MfaAnswer::WrongCode,
                (Ok(Outcome::ChallengeInvalid), _, _) => MfaAnswer::ChallengeInvalid,
                (Ok(Outcome::Throttled), _, _) => {
                    MfaAnswer::Throttled(retry_after(answer.retry_after_seconds))
                }
                (Ok(Outcome::Blocked), _, _) => MfaAnswer::Blocked,
                _ => return Err(missing("the user store's VerifyMfa")),
            },
        )
    }

    /// Have the coordinator record a migration the store completed with a second-factor
    /// code. In the background: the user is in the store either way, and the ledger entry
    /// is its audit trail (a failure is logged, as the coordinator does for its own).
    pub fn record_mfa_migration(&self, user_id: &str, legacy_id: &str) {
        let request = migration::RecordMfaMigrationRequest {
            user_id: user_id.to_owned(),
            legacy_id: legacy_id.to_owned(),
        };
        let mut coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            if let Err(status) = coordinator.record_mfa_migration(request).await {
                tracing::error!(code = ?status.code(), message = status.message(), "could not record a migration completed by a second-factor code in the ledger");
            }
        });
    }

    pub async fn enroll_totp(
        &self,
        user_id: &str,
    ) -> Result<auth::EnrollTotpResponse, FrontendError> {
        self.factors
            .clone()
            .enroll_totp(store::EnrollTotpRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner()
            .enrollment
            .ok_or_else(|| missing("the user store's EnrollTotp"))
    }

    pub async fn confirm_totp(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<(auth::User, Vec<String>), FrontendError> {
        let answer = self
            .factors
            .clone()
            .confirm_totp(store::ConfirmTotpRequest {
                user_id: user_id.to_owned(),
                code: code.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner();
        let user = answer
            .user
            .ok_or_else(|| missing("the user store's ConfirmTotp"))?;
        Ok((user, answer.recovery_codes))
    }

    pub async fn remove_factor(&self, user_id: &str) -> Result<auth::User, FrontendError> {
        self.factors
            .clone()
            .remove_factor(store::RemoveFactorRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner()
            .user
            .ok_or_else(|| missing("the user store's RemoveFactor"))
    }

    /// Set the named profile fields of a store user.
    pub async fn update_profile(
        &self,
        user_id: &str,
        profile: auth::Profile,
        fields: Vec<String>,
    ) -> Result<auth::User, FrontendError> {
        self.store
            .clone()
            .update_profile(store::UpdateProfileRequest {
                user_id: user_id.to_owned(),
                profile: Some(profile),
                fields,
            })
            .await
            .map_err(store_error)?
            .into_inner()
            .user
            .ok_or_else(|| missing("the user store's UpdateProfile"))
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<(), FrontendError> {
        self.store
            .clone()
            .delete_user(store::DeleteUserRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// A legacy user shown through the public API: no user id (they are not in the store yet).
fn legacy_user_view(legacy: trickle_proto::legacy::v1::LegacyUser) -> auth::User {
    let profile = legacy.profile();
    let trickle_proto::legacy::v1::LegacyUser {
        legacy_id,
        email,
        email_verified,
        blocked,
        ..
    } = legacy;
    auth::User {
        user_id: String::new(),
        email: Email::parse(&email)
            .map(|e| e.normalized().to_owned())
            .unwrap_or_else(|_| email.to_lowercase()),
        display_email: email,
        email_verified,
        legacy_id,
        profile: Some(profile),
        source: auth::Source::Unspecified.into(),
        created_at: None,
        updated_at: None,
        last_login_at: None,
        credentials_changed_at: None,
        blocked,
        // Decided when they migrate, by the password they arrive with.
        password_change_required: false,
        // Legacy second factors are not read yet: a legacy user migrates without one.
        mfa_enrolled: false,
    }
}

/// The store's `SettleLoginAttempt` for one attempt, with or without the deferred refusal
/// share.
fn settle_request(
    email: &Email,
    origin: &AttemptOrigin,
    outcome: store::LoginAttemptOutcome,
    spend_refusal_share: bool,
) -> store::SettleLoginAttemptRequest {
    store::SettleLoginAttemptRequest {
        email: email.display().to_owned(),
        client_id: origin.client_id.clone(),
        attempt_source: origin.source.clone(),
        outcome: outcome.into(),
        spend_refusal_share,
    }
}

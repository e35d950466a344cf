//! The coordinator's upstreams for its flows — the legacy connector (always through the
//! circuit breaker) and the user-store — behind one type. It owns the generated clients,
//! classifies their errors and decodes their answers into this service's types, so that
//! migration on login and on reset and the operator's view read as the flows. The backfill
//! streams pages between the two and keeps its own clients (`backfill.rs`).

use crate::breaker::LegacyBreaker;
use crate::error::CoordinatorError;
use crate::ledger::LedgerSource;
use tonic::Code;
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::legacy::v1 as legacy;
use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;
use trickle_service_kit::client::Channel;

/// A user as the store answered with them. The coordinator reads who they are; the record
/// itself goes back to its caller as the store sent it.
#[derive(Debug, Clone)]
pub struct StoreUser(auth::User);

impl StoreUser {
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    pub fn legacy_id(&self) -> &str {
        &self.0.legacy_id
    }

    pub fn into_wire(self) -> auth::User {
        self.0
    }
}

/// A user as the legacy store knows them (never with a hash).
#[derive(Debug, Clone)]
pub struct LegacyUser(legacy::LegacyUser);

impl LegacyUser {
    pub fn legacy_id(&self) -> &str {
        &self.0.legacy_id
    }

    /// The legacy store's own spelling.
    pub fn email(&self) -> &str {
        &self.0.email
    }

    /// The user as the frontend and operators see them: without the second factor's
    /// secret, which goes to the user store only.
    pub fn into_wire(self) -> legacy::LegacyUser {
        legacy::LegacyUser {
            totp: None,
            ..self.0
        }
    }

    /// The same user, their email taken as verified.
    pub fn with_email_verified(mut self) -> Self {
        self.0.email_verified = true;
        self
    }
}

/// The legacy store's answer to a login.
#[derive(Debug)]
pub enum LegacyLogin {
    Authenticated(LegacyUser),
    /// Unknown email or wrong password (one answer on purpose).
    Rejected,
    /// The record holds no usable password: a rejection, counted apart.
    UnusablePassword,
}

/// What the store did with an import.
#[derive(Debug)]
pub enum StoreImport {
    Created(StoreUser),
    /// Already there (a concurrent import, or a migration between reset ticket and reset).
    Existing(StoreUser),
    Conflict,
    Tombstoned,
    /// A login migration of a user with a second factor, held by the store until a code
    /// from it (with this challenge).
    MfaRequired(String),
}

/// Users in the store by where they came from, and deleted legacy users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub signup_users: i64,
    pub login_migration_users: i64,
    pub reset_migration_users: i64,
    pub backfill_users: i64,
    pub tombstoned_legacy_users: i64,
}

impl StoreCounts {
    /// Legacy users accounted for: in the store with a legacy id, or deleted.
    pub fn accounted(&self) -> i64 {
        self.login_migration_users
            + self.reset_migration_users
            + self.backfill_users
            + self.tombstoned_legacy_users
    }
}

#[derive(Debug, Clone)]
pub struct Upstreams {
    legacy: LegacyConnectorClient<Channel>,
    breaker: LegacyBreaker,
    store: UserStoreClient<Channel>,
}

fn store_error(status: tonic::Status) -> CoordinatorError {
    CoordinatorError::from_store(&status)
}

impl Upstreams {
    pub fn new(
        legacy: LegacyConnectorClient<Channel>,
        breaker: LegacyBreaker,
        store: UserStoreClient<Channel>,
    ) -> Self {
        Self {
            legacy,
            breaker,
            store,
        }
    }

    pub async fn legacy_login(
        &self,
        email: &Email,
        password: &Password,
    ) -> Result<LegacyLogin, CoordinatorError> {
        let request = legacy::LoginRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let answer = self
            .breaker
            .call(self.legacy.clone().login(request))
            .await?;
        Ok(match (answer.authenticated, answer.user) {
            (true, Some(user)) => LegacyLogin::Authenticated(LegacyUser(user)),
            _ if answer.unusable_password => LegacyLogin::UnusablePassword,
            _ => LegacyLogin::Rejected,
        })
    }

    /// The legacy record of an email, if the legacy store has one.
    pub async fn legacy_user(&self, email: &Email) -> Result<Option<LegacyUser>, CoordinatorError> {
        let answer = self
            .breaker
            .call(self.legacy.clone().get_user(legacy::GetUserRequest {
                email: email.display().to_owned(),
            }))
            .await?;
        Ok(answer.user.filter(|_| answer.found).map(LegacyUser))
    }

    pub async fn equalize_refused_login(
        &self,
        email: &Email,
        lookup_only: bool,
    ) -> Result<(), CoordinatorError> {
        let request = legacy::EqualizeRefusedLoginRequest {
            email: email.display().to_owned(),
            lookup_only,
        };
        self.breaker
            .call(self.legacy.clone().equalize_refused_login(request))
            .await?;
        Ok(())
    }

    /// Every legacy user, in pages of `batch_size`, from the start (the preflight census).
    pub async fn list_users(
        &self,
        batch_size: i32,
    ) -> Result<tonic::Streaming<legacy::ListUsersResponse>, CoordinatorError> {
        self.legacy
            .clone()
            .list_users(legacy::ListUsersRequest {
                after_legacy_id: String::new(),
                batch_size,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| match status.code() {
                Code::Unimplemented => CoordinatorError::ListUnsupported,
                _ => CoordinatorError::from_legacy(&status),
            })
    }

    /// The legacy store's user count, or why it cannot be had.
    pub async fn legacy_count(&self) -> Result<i64, String> {
        match self
            .legacy
            .clone()
            .count_users(legacy::CountUsersRequest {})
            .await
        {
            Ok(answer) => Ok(answer.into_inner().count),
            Err(status) if status.code() == Code::Unimplemented => {
                Err("the legacy connector cannot count users (set [legacy] count_users)".into())
            }
            Err(status) => Err(format!(
                "the legacy connector answered {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }

    /// Import a legacy user into the store: profile from the legacy store, `password`
    /// re-hashed there, and `reset_ticket` consumed in the same transaction when given.
    pub async fn import_user(
        &self,
        legacy_user: LegacyUser,
        password: &Password,
        source: LedgerSource,
        reset_ticket: Option<&str>,
    ) -> Result<StoreImport, CoordinatorError> {
        let legacy_user = legacy_user.0;
        let profile = legacy_user.profile();
        let source = match source {
            LedgerSource::LoginMigration => auth::Source::LoginMigration,
            LedgerSource::ResetMigration => auth::Source::ResetMigration,
            LedgerSource::Backfill => auth::Source::Backfill,
        };
        let legacy::LegacyUser {
            legacy_id,
            email,
            email_verified,
            blocked,
            totp,
            ..
        } = legacy_user;
        let import = store::ImportUserRequest {
            legacy_id,
            // The legacy store's own spelling is kept for display (invariant 7).
            email,
            email_verified,
            profile: Some(profile),
            password: password.expose_secret().to_owned(),
            source: source.into(),
            // The wire's empty string: no ticket to consume.
            reset_ticket: reset_ticket.unwrap_or_default().to_owned(),
            blocked,
            totp,
        };
        let imported = self
            .store
            .clone()
            .import_user(import)
            .await
            .map_err(store_error)?
            .into_inner();
        use store::import_user_response::Outcome;
        match (Outcome::try_from(imported.outcome), imported.user) {
            (Ok(Outcome::Created), Some(user)) => Ok(StoreImport::Created(StoreUser(user))),
            (Ok(Outcome::AlreadyImported), Some(user)) => {
                Ok(StoreImport::Existing(StoreUser(user)))
            }
            (Ok(Outcome::Conflict), _) => Ok(StoreImport::Conflict),
            (Ok(Outcome::Tombstoned), _) => Ok(StoreImport::Tombstoned),
            (Ok(Outcome::MfaRequired), _) if !imported.mfa_challenge.is_empty() => {
                Ok(StoreImport::MfaRequired(imported.mfa_challenge))
            }
            _ => Err(CoordinatorError::Internal(
                "user store answered ImportUser without an outcome".into(),
            )),
        }
    }

    /// Whether a legacy id belongs to a user deleted from the store.
    pub async fn is_tombstoned(&self, legacy_id: &str) -> Result<bool, CoordinatorError> {
        Ok(self
            .store
            .clone()
            .check_tombstone(store::CheckTombstoneRequest {
                legacy_id: legacy_id.to_owned(),
            })
            .await
            .map_err(store_error)?
            .into_inner()
            .tombstoned)
    }

    pub async fn store_counts(&self) -> Result<StoreCounts, CoordinatorError> {
        let store::GetMigrationCountsResponse {
            signup_users,
            login_migration_users,
            reset_migration_users,
            backfill_users,
            tombstoned_legacy_users,
        } = self
            .store
            .clone()
            .get_migration_counts(store::GetMigrationCountsRequest {})
            .await
            .map_err(store_error)?
            .into_inner();
        Ok(StoreCounts {
            signup_users,
            login_migration_users,
            reset_migration_users,
            backfill_users,
            tombstoned_legacy_users,
        })
    }

    /// The store user with this email, if any.
    pub async fn store_user(&self, email: &Email) -> Result<Option<auth::User>, CoordinatorError> {
        match self
            .store
            .clone()
            .get_user(store::GetUserRequest {
                lookup: Some(store::get_user_request::Lookup::Email(
                    email.normalized().to_owned(),
                )),
            })
            .await
        {
            Ok(answer) => Ok(answer.into_inner().user),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(store_error(status)),
        }
    }
}

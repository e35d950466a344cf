//! Migration on login (docs/ARCHITECTURE.md, Login step 2): legacy login, then import, committed before the
//! answer. Nothing is written unless the legacy store accepted the password.

use crate::breaker::LegacyBreaker;
use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::ledger::{Ledger, LedgerSource};
use crate::upstream::{LegacyLogin, LegacyUser, StoreImport, StoreUser, Upstreams};
use trickle_password::Password;
use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;
use trickle_service_kit::client::Channel;

/// How one login's migration ended (the coordinator's step; the store's own step is its
/// `ImportOutcome`, seen from here as [`crate::upstream::StoreImport`]).
#[derive(Debug)]
pub enum LoginMigration {
    /// This login moved the user into the store.
    Migrated(StoreUser),
    /// A concurrent login moved the user first; the password matches.
    AlreadyMigrated(StoreUser),
    /// Unknown to the legacy store, or wrong password.
    LegacyRejected,
    /// The legacy record holds no usable password (empty, disabled, unverifiable, over
    /// the connector's cost caps): a rejection, counted apart.
    UnusableLegacyHash,
    /// The legacy record belongs to a store user this login may not use.
    Conflict,
    /// AUTHORITATIVE mode: the legacy store was not asked.
    NotImporting,
    /// The legacy user was deleted from the store and must not come back.
    Tombstoned,
    /// The password is right and the legacy user has a second factor: nothing is imported
    /// until a code from it (the store holds the import under this challenge).
    MfaRequired(String),
}

impl LoginMigration {
    /// For logs and traces (a bounded set).
    pub fn as_str(&self) -> &'static str {
        match self {
            LoginMigration::Migrated(_) => "migrated",
            LoginMigration::AlreadyMigrated(_) => "already_migrated",
            LoginMigration::LegacyRejected => "legacy_rejected",
            LoginMigration::UnusableLegacyHash => "unusable_legacy_hash",
            LoginMigration::Conflict => "conflict",
            LoginMigration::NotImporting => "not_importing",
            LoginMigration::Tombstoned => "tombstoned",
            LoginMigration::MfaRequired(_) => "mfa_required",
        }
    }

    /// Outcomes operators count as failed migrations.
    fn failure_reason(&self) -> Option<&'static str> {
        match self {
            LoginMigration::LegacyRejected
            | LoginMigration::UnusableLegacyHash
            | LoginMigration::Conflict
            | LoginMigration::Tombstoned => Some(self.as_str()),
            LoginMigration::Migrated(_)
            | LoginMigration::AlreadyMigrated(_)
            | LoginMigration::NotImporting
            | LoginMigration::MfaRequired(_) => None,
        }
    }
}

/// What the legacy store knows about an email.
#[derive(Debug, Clone, Default)]
pub struct LegacyLookup {
    /// Set when the legacy store has the email and its user was not deleted from the store.
    pub user: Option<LegacyUser>,
    /// The legacy store has the email, but its user was deleted from the store.
    pub tombstoned: bool,
    pub mode: Mode,
}

#[derive(Debug, Clone)]
pub struct Coordinator {
    pub(crate) ledger: Ledger,
    pub(crate) upstream: Upstreams,
    /// `[migration] reset_verifies_email`.
    reset_verifies_email: bool,
}

impl Coordinator {
    pub fn new(
        ledger: Ledger,
        legacy: LegacyConnectorClient<Channel>,
        breaker: LegacyBreaker,
        store: UserStoreClient<Channel>,
        reset_verifies_email: bool,
    ) -> Self {
        Self {
            ledger,
            upstream: Upstreams::new(legacy, breaker, store),
            reset_verifies_email,
        }
    }

    pub async fn mode(&self) -> Result<Mode, CoordinatorError> {
        Ok(self.ledger.mode().await?)
    }

    #[tracing::instrument(
        name = "migration.migrate_on_login",
        skip_all,
        fields(trickle.migration.outcome, trickle.migration.source = "login", trickle.user.id, trickle.legacy.id)
    )]
    pub async fn migrate_on_login(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<LoginMigration, CoordinatorError> {
        let outcome = self.migrate(email, password).await;
        let label = match &outcome {
            Ok(outcome) => outcome.as_str(),
            Err(CoordinatorError::LegacyUnavailable(_)) => "legacy_unavailable",
            Err(_) => "error",
        };
        let span = tracing::Span::current();
        span.record("trickle.migration.outcome", label);
        if let Ok(LoginMigration::Migrated(user) | LoginMigration::AlreadyMigrated(user)) = &outcome
        {
            span.record("trickle.user.id", user.user_id());
            span.record("trickle.legacy.id", user.legacy_id());
        }
        trickle_telemetry::metrics::metrics()
            .migrations
            .with_label_values(&[label, "login"])
            .inc();
        let failure = match &outcome {
            Ok(outcome) => outcome.failure_reason(),
            Err(CoordinatorError::LegacyUnavailable(_)) => Some("legacy_unavailable"),
            Err(_) => None,
        };
        if let Some(reason) = failure {
            // Counted after answering: the write would otherwise make a refusal of a user only
            // the legacy store has slower than any other refusal (and tell them apart).
            let ledger = self.ledger.clone();
            tokio::spawn(async move {
                if let Err(e) = ledger.record_failure(reason).await {
                    tracing::warn!(error = %e, "could not count a failed migration");
                }
            });
        }
        match &outcome {
            Ok(LoginMigration::Migrated(user)) => {
                tracing::info!(trickle.user.id = %user.user_id(), trickle.legacy.id = %user.legacy_id(), outcome = label, "user migrated on login");
            }
            _ => tracing::debug!(outcome = label, "migration on login finished"),
        }
        outcome
    }

    async fn migrate(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<LoginMigration, CoordinatorError> {
        if self.mode().await? == Mode::Authoritative {
            return Ok(LoginMigration::NotImporting);
        }
        let legacy_user = match self.upstream.legacy_login(email, &password).await? {
            LegacyLogin::Authenticated(user) => user,
            LegacyLogin::Rejected => return Ok(LoginMigration::LegacyRejected),
            LegacyLogin::UnusablePassword => return Ok(LoginMigration::UnusableLegacyHash),
        };
        // The connector only returns rows whose email matches, but the import must never
        // depend on a connector someone else wrote getting that right.
        if Email::parse(legacy_user.email())
            .ok()
            .as_ref()
            .map(Email::normalized)
            != Some(email.normalized())
        {
            tracing::warn!(
                "legacy connector returned a user with a different email; refusing the login"
            );
            return Ok(LoginMigration::Conflict);
        }
        Ok(
            match self
                .import(legacy_user, &password, LedgerSource::LoginMigration, None)
                .await?
            {
                StoreImport::Created(user) => LoginMigration::Migrated(user),
                StoreImport::Existing(user) => LoginMigration::AlreadyMigrated(user),
                StoreImport::Conflict => LoginMigration::Conflict,
                StoreImport::Tombstoned => LoginMigration::Tombstoned,
                StoreImport::MfaRequired(challenge) => LoginMigration::MfaRequired(challenge),
            },
        )
    }

    /// A login migration the store completed with a second-factor code: the ledger entry and
    /// the metric a migration on the password alone gets in [`Coordinator::migrate_on_login`].
    #[tracing::instrument(name = "migration.record_mfa_migration", skip_all, fields(trickle.user.id = %user_id, trickle.legacy.id = %legacy_id))]
    pub async fn record_mfa_migration(
        &self,
        user_id: &str,
        legacy_id: &str,
    ) -> Result<(), CoordinatorError> {
        self.ledger
            .record_migration(user_id, legacy_id, LedgerSource::LoginMigration)
            .await?;
        trickle_telemetry::metrics::metrics()
            .migrations
            .with_label_values(&["migrated", "login"])
            .inc();
        tracing::info!("user migrated on login with their second factor");
        Ok(())
    }

    /// For a login the store refused while importing: have the legacy connector spend what
    /// its own refusal costs, so that refusing a migrated or deleted user takes as long as
    /// refusing a user only the legacy store has. Nothing in AUTHORITATIVE mode (the store
    /// spends it then).
    #[tracing::instrument(name = "migration.equalize_refused_login", skip_all)]
    pub async fn equalize_refused_login(
        &self,
        email: &Email,
        lookup_only: bool,
    ) -> Result<(), CoordinatorError> {
        if self.mode().await? == Mode::Authoritative {
            return Ok(());
        }
        self.upstream
            .equalize_refused_login(email, lookup_only)
            .await
    }

    /// Import a legacy user into the store (profile from the legacy store, `password`
    /// re-hashed there) and, when this call created them, record the migration.
    async fn import(
        &self,
        legacy_user: LegacyUser,
        password: &Password,
        source: LedgerSource,
        reset_ticket: Option<&str>,
    ) -> Result<StoreImport, CoordinatorError> {
        let imported = self
            .upstream
            .import_user(legacy_user, password, source, reset_ticket)
            .await?;
        if let StoreImport::Created(user) = &imported {
            // The user is committed in the store; the ledger is the audit trail of it.
            // Failing the call now would not undo the import, so a ledger failure is
            // logged loudly instead.
            if let Err(e) = self
                .ledger
                .record_migration(user.user_id(), user.legacy_id(), source)
                .await
            {
                tracing::error!(error = %e, trickle.user.id = %user.user_id(), "could not record the migration in the ledger");
            }
        }
        Ok(imported)
    }

    /// Finish a password reset for a user only the legacy store has: read the profile from
    /// the legacy store (Auth0's Get User) and import the user with the new password,
    /// consuming the ticket in the same transaction.
    #[tracing::instrument(name = "migration.migrate_on_reset", skip_all, fields(trickle.migration.source = "reset", trickle.legacy.id = %legacy_id))]
    pub async fn migrate_on_reset(
        &self,
        ticket: &str,
        new_password: Password,
        legacy_id: &str,
        email: &Email,
    ) -> Result<(StoreUser, bool), CoordinatorError> {
        if self.mode().await? == Mode::Authoritative {
            return Err(CoordinatorError::LegacyDisabled);
        }
        let lookup = self.find_legacy_user(email).await?;
        // The legacy record must still be the one the ticket was issued for.
        let Some(legacy_user) = lookup.user.filter(|u| u.legacy_id() == legacy_id) else {
            return Err(CoordinatorError::TicketInvalid);
        };
        // The ticket was delivered to this address, which proves it when the caller's
        // delivery does (configured, not assumed).
        let legacy_user = if self.reset_verifies_email {
            legacy_user.with_email_verified()
        } else {
            legacy_user
        };
        let metrics = trickle_telemetry::metrics::metrics();
        match self
            .import(
                legacy_user,
                &new_password,
                LedgerSource::ResetMigration,
                Some(ticket),
            )
            .await?
        {
            StoreImport::Created(user) => {
                tracing::info!(trickle.user.id = %user.user_id(), trickle.legacy.id = %user.legacy_id(), "user migrated on password reset");
                metrics
                    .migrations
                    .with_label_values(&["migrated", "reset"])
                    .inc();
                Ok((user, true))
            }
            StoreImport::Existing(user) => {
                metrics
                    .migrations
                    .with_label_values(&["already_migrated", "reset"])
                    .inc();
                Ok((user, false))
            }
            StoreImport::Conflict | StoreImport::Tombstoned => Err(CoordinatorError::TicketInvalid),
            // Only login migrations are held for a code.
            StoreImport::MfaRequired(_) => Err(CoordinatorError::Internal(
                "the store held a reset migration for a second factor".into(),
            )),
        }
    }

    /// What the legacy store knows about `email`. Nothing, without asking, in AUTHORITATIVE
    /// mode; a user deleted from the store is reported as tombstoned, not found.
    pub async fn find_legacy_user(&self, email: &Email) -> Result<LegacyLookup, CoordinatorError> {
        let mode = self.mode().await?;
        if mode == Mode::Authoritative {
            return Ok(LegacyLookup {
                user: None,
                tombstoned: false,
                mode,
            });
        }
        let Some(user) = self.upstream.legacy_user(email).await? else {
            return Ok(LegacyLookup {
                user: None,
                tombstoned: false,
                mode,
            });
        };
        let tombstoned = self.upstream.is_tombstoned(user.legacy_id()).await?;
        Ok(if tombstoned {
            LegacyLookup {
                user: None,
                tombstoned: true,
                mode,
            }
        } else {
            LegacyLookup {
                user: Some(user),
                tombstoned: false,
                mode,
            }
        })
    }
}

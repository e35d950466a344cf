//! Migration on login (DESIGN §2, step 2): legacy login, then import, committed before the
//! answer. Nothing is written unless the legacy store accepted the password.

use crate::breaker::LegacyBreaker;
use crate::config::Mode;
use crate::error::CoordinatorError;
use crate::ledger::Ledger;
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::legacy::v1 as legacy;
use trickle_proto::legacy::v1::legacy_connector_client::LegacyConnectorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;
use trickle_service_kit::server::Channel;

#[derive(Debug)]
pub enum MigrationOutcome {
    /// This login moved the user into the store.
    Migrated(auth::User),
    /// A concurrent login moved the user first; the password matches.
    AlreadyMigrated(auth::User),
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
}

impl MigrationOutcome {
    /// For logs and traces (a bounded set).
    pub fn as_str(&self) -> &'static str {
        match self {
            MigrationOutcome::Migrated(_) => "migrated",
            MigrationOutcome::AlreadyMigrated(_) => "already_migrated",
            MigrationOutcome::LegacyRejected => "legacy_rejected",
            MigrationOutcome::UnusableLegacyHash => "unusable_legacy_hash",
            MigrationOutcome::Conflict => "conflict",
            MigrationOutcome::NotImporting => "not_importing",
            MigrationOutcome::Tombstoned => "tombstoned",
        }
    }

    /// Outcomes operators count as failed migrations.
    fn failure_reason(&self) -> Option<&'static str> {
        match self {
            MigrationOutcome::LegacyRejected
            | MigrationOutcome::UnusableLegacyHash
            | MigrationOutcome::Conflict
            | MigrationOutcome::Tombstoned => Some(self.as_str()),
            MigrationOutcome::Migrated(_)
            | MigrationOutcome::AlreadyMigrated(_)
            | MigrationOutcome::NotImporting => None,
        }
    }
}

/// What the store did with an import.
enum Imported {
    Created(auth::User),
    /// Already there (a concurrent import, or a migration between reset ticket and reset).
    Existing(auth::User),
    Conflict,
    Tombstoned,
}

/// What the legacy store knows about an email.
#[derive(Debug, Clone, Default)]
pub struct LegacyLookup {
    /// Set when the legacy store has the email and its user was not deleted from the store.
    pub user: Option<legacy::LegacyUser>,
    /// The legacy store has the email, but its user was deleted from the store.
    pub tombstoned: bool,
    pub mode: Mode,
}

#[derive(Debug, Clone)]
pub struct Coordinator {
    pub(crate) ledger: Ledger,
    legacy: LegacyConnectorClient<Channel>,
    breaker: LegacyBreaker,
    store: UserStoreClient<Channel>,
}

impl Coordinator {
    pub fn new(
        ledger: Ledger,
        legacy: LegacyConnectorClient<Channel>,
        breaker: LegacyBreaker,
        store: UserStoreClient<Channel>,
    ) -> Self {
        Self {
            ledger,
            legacy,
            breaker,
            store,
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
    ) -> Result<MigrationOutcome, CoordinatorError> {
        let outcome = self.migrate(email, password).await;
        let label = match &outcome {
            Ok(outcome) => outcome.as_str(),
            Err(CoordinatorError::LegacyUnavailable(_)) => "legacy_unavailable",
            Err(_) => "error",
        };
        let span = tracing::Span::current();
        span.record("trickle.migration.outcome", label);
        if let Ok(MigrationOutcome::Migrated(user) | MigrationOutcome::AlreadyMigrated(user)) =
            &outcome
        {
            span.record("trickle.user.id", user.user_id.as_str());
            span.record("trickle.legacy.id", user.legacy_id.as_str());
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
            Ok(MigrationOutcome::Migrated(user)) => {
                tracing::info!(trickle.user.id = %user.user_id, trickle.legacy.id = %user.legacy_id, outcome = label, "user migrated on login");
            }
            _ => tracing::debug!(outcome = label, "migration on login finished"),
        }
        outcome
    }

    async fn migrate(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<MigrationOutcome, CoordinatorError> {
        if self.mode().await? == Mode::Authoritative {
            return Ok(MigrationOutcome::NotImporting);
        }
        let request = legacy::LoginRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let answer = self
            .breaker
            .call(self.legacy.clone().login(request))
            .await?;
        let (true, Some(legacy_user)) = (answer.authenticated, answer.user) else {
            return Ok(if answer.unusable_password {
                MigrationOutcome::UnusableLegacyHash
            } else {
                MigrationOutcome::LegacyRejected
            });
        };
        // The connector only returns rows whose email matches, but the import must never
        // depend on a connector someone else wrote getting that right.
        if Email::parse(&legacy_user.email)
            .ok()
            .as_ref()
            .map(Email::normalized)
            != Some(email.normalized())
        {
            tracing::warn!(
                "legacy connector returned a user with a different email; refusing the login"
            );
            return Ok(MigrationOutcome::Conflict);
        }
        Ok(
            match self
                .import(
                    legacy_user,
                    &password,
                    auth::Source::LoginMigration,
                    String::new(),
                )
                .await?
            {
                Imported::Created(user) => MigrationOutcome::Migrated(user),
                Imported::Existing(user) => MigrationOutcome::AlreadyMigrated(user),
                Imported::Conflict => MigrationOutcome::Conflict,
                Imported::Tombstoned => MigrationOutcome::Tombstoned,
            },
        )
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
        let request = legacy::EqualizeRefusedLoginRequest {
            email: email.display().to_owned(),
            lookup_only,
        };
        self.breaker
            .call(self.legacy.clone().equalize_refused_login(request))
            .await?;
        Ok(())
    }

    /// Import a legacy user into the store (profile from the legacy store, `password`
    /// re-hashed there) and, when this call created them, record the migration.
    async fn import(
        &self,
        legacy_user: legacy::LegacyUser,
        password: &Password,
        source: auth::Source,
        reset_ticket: String,
    ) -> Result<Imported, CoordinatorError> {
        let legacy::LegacyUser {
            legacy_id,
            email,
            email_verified,
            name,
            given_name,
            family_name,
            nickname,
            picture,
        } = legacy_user;
        let import = store::ImportUserRequest {
            legacy_id,
            // The legacy store's own spelling is kept for display (invariant 7).
            email,
            email_verified,
            profile: Some(auth::Profile {
                name,
                given_name,
                family_name,
                nickname,
                picture,
                user_metadata: None,
                app_metadata: None,
            }),
            password: password.expose_secret().to_owned(),
            source: source.into(),
            reset_ticket,
        };
        let imported = self
            .store
            .clone()
            .import_user(import)
            .await
            .map_err(|status| CoordinatorError::from_store(&status))?
            .into_inner();
        use store::import_user_response::Outcome;
        match (Outcome::try_from(imported.outcome), imported.user) {
            (Ok(Outcome::Created), Some(user)) => {
                // The user is committed in the store; the ledger is the audit trail of it.
                // Failing the call now would not undo the import, so a ledger failure is
                // logged loudly instead.
                let label = if source == auth::Source::ResetMigration {
                    "reset_migration"
                } else {
                    "login_migration"
                };
                if let Err(e) = self
                    .ledger
                    .record_migration(&user.user_id, &user.legacy_id, label)
                    .await
                {
                    tracing::error!(error = %e, trickle.user.id = %user.user_id, "could not record the migration in the ledger");
                }
                Ok(Imported::Created(user))
            }
            (Ok(Outcome::AlreadyImported), Some(user)) => Ok(Imported::Existing(user)),
            (Ok(Outcome::Conflict), _) => Ok(Imported::Conflict),
            (Ok(Outcome::Tombstoned), _) => Ok(Imported::Tombstoned),
            _ => Err(CoordinatorError::Internal(
                "user store answered ImportUser without an outcome".into(),
            )),
        }
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
    ) -> Result<(auth::User, bool), CoordinatorError> {
        if self.mode().await? == Mode::Authoritative {
            return Err(CoordinatorError::LegacyDisabled);
        }
        let lookup = self.find_legacy_user(email).await?;
        // The legacy record must still be the one the ticket was issued for.
        let Some(legacy_user) = lookup.user.filter(|u| u.legacy_id == legacy_id) else {
            return Err(CoordinatorError::TicketInvalid);
        };
        let metrics = trickle_telemetry::metrics::metrics();
        match self
            .import(
                legacy_user,
                &new_password,
                auth::Source::ResetMigration,
                ticket.to_owned(),
            )
            .await?
        {
            Imported::Created(user) => {
                tracing::info!(trickle.user.id = %user.user_id, trickle.legacy.id = %user.legacy_id, "user migrated on password reset");
                metrics
                    .migrations
                    .with_label_values(&["migrated", "reset"])
                    .inc();
                Ok((user, true))
            }
            Imported::Existing(user) => {
                metrics
                    .migrations
                    .with_label_values(&["already_migrated", "reset"])
                    .inc();
                Ok((user, false))
            }
            Imported::Conflict | Imported::Tombstoned => Err(CoordinatorError::TicketInvalid),
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
        let mut connector = self.legacy.clone();
        let answer = self
            .breaker
            .call(connector.get_user(legacy::GetUserRequest {
                email: email.display().to_owned(),
            }))
            .await?;
        let Some(user) = answer.user.filter(|_| answer.found) else {
            return Ok(LegacyLookup {
                user: None,
                tombstoned: false,
                mode,
            });
        };
        let tombstoned = self
            .store
            .clone()
            .check_tombstone(store::CheckTombstoneRequest {
                legacy_id: user.legacy_id.clone(),
            })
            .await
            .map_err(|status| CoordinatorError::from_store(&status))?
            .into_inner()
            .tombstoned;
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

    pub(crate) fn legacy_client(&self) -> LegacyConnectorClient<Channel> {
        self.legacy.clone()
    }

    pub(crate) fn store_client(&self) -> UserStoreClient<Channel> {
        self.store.clone()
    }
}

//! The user-store's domain: users, where they came from, and the rules for authenticating,
//! creating and importing them.

use crate::error::StoreError;
use crate::last_logins::LastLogins;
use crate::refusal::RefusalCost;
use crate::repository::{
    BackfillRow, InsertOutcome, MigrationCounts, NewUser, Repository, TicketRow,
};
use crate::throttle::{Admission, LoginThrottle};
use crate::tickets::{self, Ticket};
use chrono::{DateTime, SubsecRound, Utc};
use std::time::Duration;
use trickle_password::{BreachedPasswords, HashFormat, HashPool, Password, StoredHash};
use trickle_service_kit::Email;

pub use crate::model::{Profile, ProfileFields, Source, User};

#[derive(Debug)]
pub enum AuthenticateOutcome {
    Authenticated(User),
    /// The password is right, but the user is blocked: no login.
    Blocked(User),
    WrongPassword,
    NotFound,
    /// No user, and the email belongs to a deleted one.
    Tombstoned,
    /// Too many failed logins for the email: try again after `retry_after`.
    Throttled {
        retry_after: Duration,
    },
    /// The password is right and the user has a second factor: the login goes on with this
    /// challenge and a code ([`Users::verify_mfa`]).
    MfaRequired {
        challenge: Ticket,
    },
}

/// An answer to a login and, for a refusal, what the caller must still spend on it so that
/// it costs what every refusal costs (see [`crate::refusal`]).
#[derive(Debug)]
pub struct Authentication {
    pub outcome: AuthenticateOutcome,
    /// `None` when the store did not refuse (authenticated, or not found while importing:
    /// the legacy store decides next).
    pub remainder: Option<RefusalRemainder>,
}

/// The share of a refusal's cost left to the legacy store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalRemainder {
    /// Everything was spent here (or, for a throttled client, nothing on purpose).
    Nothing,
    /// The legacy store's lookup and check.
    LegacyCheck,
    /// The legacy store's lookup: the store verified a legacy hash itself.
    LegacyLookup,
}

pub use crate::throttle::{AttemptOutcome, AttemptSource, ClientId, Throttle};

#[derive(Debug)]
pub enum ImportOutcome {
    Created(User),
    AlreadyImported(User),
    Conflict,
    /// The legacy id belongs to a deleted user.
    Tombstoned,
    /// A login migration of a user with a second factor, held until a code from it.
    MfaRequired(Ticket),
}

#[derive(Debug)]
pub enum ChangePasswordOutcome {
    Changed(User),
    WrongPassword,
    /// The account is locked by failed guesses; the old password was not checked.
    Throttled {
        retry_after: Duration,
    },
}

/// A legacy user for the backfill, validated.
#[derive(Debug)]
pub struct BackfillUser {
    pub legacy_id: String,
    pub email: Email,
    pub email_verified: bool,
    pub profile: Profile,
    /// A legacy hash the store can verify (checked by parsing it).
    pub password_hash: String,
    pub blocked: bool,
    /// The legacy second factor, imported with the user.
    pub totp: Option<trickle_password::totp::Totp>,
}

#[derive(Debug, Default)]
pub struct BackfillOutcome {
    /// (user_id, legacy_id) of the users inserted.
    pub inserted: Vec<(String, String)>,
    pub skipped_existing: i64,
    pub skipped_tombstoned: i64,
    /// Every user of the batch held with source backfill (inserted now or earlier).
    pub backfilled: Vec<(String, String)>,
}

/// A request to import a legacy user, already validated.
#[derive(Debug)]
pub struct Import {
    pub legacy_id: String,
    pub email: Email,
    pub email_verified: bool,
    pub profile: Profile,
    pub password: Password,
    pub source: Source,
    /// Blocked in the legacy store.
    pub blocked: bool,
    /// The legacy second factor: imported with the user; a login migration waits for a
    /// code from it.
    pub totp: Option<trickle_password::totp::Totp>,
}

impl Import {
    /// The row this import becomes, with the password hashed for the store.
    fn new_user<'a>(
        &'a self,
        password_hash: &'a str,
        password_change_required: bool,
    ) -> NewUser<'a> {
        NewUser {
            email: &self.email,
            email_verified: self.email_verified,
            legacy_id: Some(&self.legacy_id),
            password_hash,
            profile: &self.profile,
            source: self.source,
            blocked: self.blocked,
            password_change_required,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Users {
    repository: Repository,
    hasher: HashPool,
    lifetimes: TicketLifetimes,
    throttle: LoginThrottle,
    refusal: RefusalCost,
    /// `[store] breached_passwords`: migrated passwords found there must be changed.
    breached: Option<BreachedPasswords>,
    factors: FactorSettings,
    /// `[store] last_login_flush_ms` > 0: `last_login_at` written in batches after the
    /// login answers; `None`: with the login, before it answers.
    last_logins: Option<LastLogins>,
}

fn unreadable_hash(user_id: &str, e: &trickle_password::ParseHashError) -> StoreError {
    // Only the first characters of the hash: see ParseHashError.
    StoreError::Internal(format!("stored hash of user {user_id} is unreadable: {e}"))
}

impl Users {
    pub fn new(
        repository: Repository,
        hasher: HashPool,
        lifetimes: TicketLifetimes,
        throttle: LoginThrottle,
    ) -> Self {
        Self {
            repository,
            refusal: RefusalCost::new(hasher.clone()),
            hasher,
            lifetimes,
            throttle,
            breached: None,
            factors: FactorSettings::default(),
            last_logins: None,
        }
    }

    /// Write `last_login_at` through this buffer, after the login answers (see
    /// [`crate::last_logins`]).
    pub fn with_last_logins(mut self, last_logins: Option<LastLogins>) -> Self {
        self.last_logins = last_logins;
        self
    }

    /// Second factors: the keys that seal their secrets, the issuer apps show.
    pub fn with_factors(mut self, factors: FactorSettings) -> Self {
        self.factors = factors;
        self
    }

    /// Check migrated passwords against this breached-password corpus too.
    pub fn with_breached_passwords(mut self, corpus: Option<BreachedPasswords>) -> Self {
        self.breached = corpus;
        self
    }

    /// Whether a password a user arrives with from the legacy store should be changed:
    /// shorter than a new password may be, or in the breached-password corpus (looked up
    /// offline). Never fails the login: an unreadable corpus is logged and skipped.
    async fn migrated_password_needs_change(&self, password: &Password) -> bool {
        if matches!(password.check_new(), Err(e) if e.is_weak()) {
            return true;
        }
        let Some(corpus) = self.breached.clone() else {
            return false;
        };
        let password = password.clone();
        match tokio::task::spawn_blocking(move || corpus.contains(&password)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot check a migrated password against the breached-password corpus");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "the breached-password lookup failed");
                false
            }
        }
    }

    /// Before serving: price refusals from the hashes the store holds now.
    pub async fn prepare(&self) {
        if self.refusal.refresh_due() {
            self.refusal.refresh(&self.repository).await;
        }
    }

    /// Check a password against the store. Every refusal costs one verification at the
    /// store's parameters (the user's hash, or a dummy); when `store_decides` (AUTHORITATIVE),
    /// also the legacy share and, for an unknown email, the throttle's count — so that the
    /// time and the answer say nothing about which accounts exist (see [`crate::refusal`]).
    #[tracing::instrument(
        name = "user_store.authenticate",
        skip_all,
        fields(trickle.user.id, trickle.hash.scheme, trickle.hash.upgraded)
    )]
    pub async fn authenticate(
        &self,
        email: &Email,
        password: Password,
        store_decides: bool,
        defer_unknown_share: bool,
        client: Option<&ClientId>,
        source: Option<&AttemptSource>,
    ) -> Result<Authentication, StoreError> {
        // Every login ends in a hash: when the pool cannot take one more, refuse before the
        // queries (under a flood, rejected logins would otherwise eat the CPU the hashing
        // threads need and nothing would complete).
        if self.hasher.is_full() {
            return Err(StoreError::Overloaded {
                retry_after: self.hasher.retry_after(),
            });
        }
        // A client locked out for too many failures is refused before anything else, and
        // without a hash, on purpose: the lock is about the client, whatever account it names,
        // and hashing for it would hand it our CPU.
        if let Some(retry_after) = self.throttle.client_lock(client).await? {
            return Ok(Authentication {
                outcome: AuthenticateOutcome::Throttled { retry_after },
                remainder: Some(RefusalRemainder::Nothing),
            });
        }
        // Kept ready while importing too, for the moment the store decides alone.
        self.refusal.refresh_when_due(&self.repository);
        // The attempt is counted before anything is checked (see crate::throttle), for every
        // replica, whether or not the account exists; a locked email is not checked at all
        // (a refusal's cost keeps the timing).
        let admission = self.throttle.admit(email, source).await?;
        // Looked up once admitted (an attempt may have waited while another migrated the
        // user). The tombstone is read for every login, in the user's query, so that an
        // unknown email costs the same query as a known one.
        let (found, tombstoned) = self
            .repository
            .find_login_credentials(email.normalized())
            .await?;
        if let Admission::Refused(retry_after) = admission {
            self.refusal.spend(password, false, store_decides).await?;
            return Ok(Authentication {
                outcome: AuthenticateOutcome::Throttled { retry_after },
                remainder: Some(if store_decides {
                    RefusalRemainder::Nothing
                } else {
                    RefusalRemainder::LegacyCheck
                }),
            });
        }
        let checked = match self
            .check_admitted(
                password,
                store_decides,
                defer_unknown_share,
                found,
                tombstoned,
            )
            .await
        {
            // The password was the first step only: a challenge, and no login yet.
            Ok(Authentication {
                outcome: AuthenticateOutcome::Authenticated(user),
                remainder,
            }) if user.mfa_enrolled => {
                self.begin_challenge(&user, source)
                    .await
                    .map(|challenge| Authentication {
                        outcome: AuthenticateOutcome::MfaRequired { challenge },
                        remainder,
                    })
            }
            other => other,
        };
        let outcome = match &checked {
            Ok(answer) => match answer.outcome {
                // Not a success yet: a success would forgive the account's failures, and
                // the code is still to be guessed. Settled by the second step.
                AuthenticateOutcome::MfaRequired { .. } => Some(AttemptOutcome::Undecided),
                // A blocked user's right password is not a guess: it does not count.
                AuthenticateOutcome::Authenticated(_) | AuthenticateOutcome::Blocked(_) => {
                    Some(AttemptOutcome::Succeeded)
                }
                // Left open: the legacy store decides, and the caller settles it.
                AuthenticateOutcome::NotFound if !store_decides => None,
                _ => Some(AttemptOutcome::Failed),
            },
            Err(_) => Some(AttemptOutcome::Undecided),
        };
        if let Some(outcome) = outcome {
            self.throttle.settle(email, source, client, outcome).await?;
        }
        checked
    }

    /// The store's share of a refusal that `authenticate` deferred for an email it does not
    /// have, spent once the legacy store refused too: one verification at the store's
    /// parameters, as every refusal costs.
    pub async fn spend_deferred_refusal_share(&self) -> Result<(), StoreError> {
        Ok(self
            .refusal
            .spend(Password::new("deferred refusal share"), false, false)
            .await?)
    }

    /// The check itself, once the attempt is admitted.
    async fn check_admitted(
        &self,
        password: Password,
        store_decides: bool,
        defer_unknown_share: bool,
        found: Option<(User, String)>,
        tombstoned: bool,
    ) -> Result<Authentication, StoreError> {
        let refused = |outcome| Authentication {
            outcome,
            remainder: Some(if store_decides {
                RefusalRemainder::Nothing
            } else {
                RefusalRemainder::LegacyCheck
            }),
        };
        let Some((user, stored)) = found else {
            // A deleted user's email ends here: the legacy store must not be asked about it.
            // An unknown email pays the store's share now, and the legacy store's where it is
            // asked next — or, when the caller defers it, only if the legacy store refuses
            // too (`spend_deferred_refusal_share`): a successful first login then pays no
            // refusal.
            if tombstoned || store_decides || !defer_unknown_share {
                self.refusal.spend(password, false, store_decides).await?;
            }
            return Ok(if tombstoned {
                refused(AuthenticateOutcome::Tombstoned)
            } else {
                Authentication {
                    outcome: AuthenticateOutcome::NotFound,
                    remainder: store_decides.then_some(RefusalRemainder::Nothing),
                }
            });
        };
        let parsed = StoredHash::parse(&stored, HashFormat::Auto)
            .map_err(|e| unreadable_hash(&user.user_id, &e))?;
        let scheme = parsed.scheme();
        // A hash the store would re-hash on success (one kept from the legacy store by the
        // backfill) costs what a legacy check costs, not what the store's own does.
        let legacy_format = parsed.needs_upgrade(self.hasher.config());
        let (verification, upgraded) = self
            .hasher
            .verify_and_upgrade(password.clone(), parsed)
            .await?;
        if !verification.matches {
            if legacy_format {
                self.refusal.spend(password, false, false).await?;
            } else {
                self.refusal.spend(password, true, store_decides).await?;
            }
            return Ok(Authentication {
                outcome: AuthenticateOutcome::WrongPassword,
                remainder: Some(match (store_decides, legacy_format) {
                    (true, _) => RefusalRemainder::Nothing,
                    (false, true) => RefusalRemainder::LegacyLookup,
                    (false, false) => RefusalRemainder::LegacyCheck,
                }),
            });
        }
        let span = tracing::Span::current();
        span.record("trickle.user.id", user.user_id.as_str());
        span.record("trickle.hash.scheme", scheme.as_str());
        span.record("trickle.hash.upgraded", upgraded.is_some());
        // Decided only now that the password is known to be right: a guesser learns nothing
        // about the account from a block. Not a login, so nothing is recorded.
        if user.blocked {
            return Ok(Authentication {
                outcome: AuthenticateOutcome::Blocked(user),
                remainder: None,
            });
        }
        // A kept legacy hash verified for the first time (a backfilled user): the policy of
        // migrated passwords applies now that the password is known.
        let requires_change = match &upgraded {
            Some(_) if legacy_format => self.migrated_password_needs_change(&password).await,
            _ => false,
        };
        let user = match (&upgraded, &self.last_logins) {
            // Nothing to store but the time: the event now, the time with the next batch.
            (None, Some(last_logins)) => {
                // Microseconds, as PostgreSQL keeps them: the time answered now is the one
                // read back later.
                let at = self.repository.now().trunc_subsecs(6);
                self.repository.record_login_event(&user, at).await?;
                last_logins.note(&user.user_id, at);
                User {
                    last_login_at: Some(at),
                    ..user
                }
            }
            _ => self
                .repository
                .record_login(&user.user_id, &stored, upgraded.as_deref(), requires_change)
                .await?
                .unwrap_or(user),
        };
        Ok(Authentication {
            outcome: AuthenticateOutcome::Authenticated(user),
            remainder: None,
        })
    }

    /// End a login attempt that [`Users::authenticate`] left open (NOT_FOUND while
    /// importing) once the legacy store decided it; `Some(wait)` when a failure locked the
    /// email.
    pub async fn settle_login_attempt(
        &self,
        email: &Email,
        source: Option<&AttemptSource>,
        client: Option<&ClientId>,
        outcome: AttemptOutcome,
    ) -> Result<Option<Duration>, StoreError> {
        self.throttle.settle(email, source, client, outcome).await
    }

    /// Create a user who signed up.
    #[tracing::instrument(name = "user_store.create_user", skip_all)]
    pub async fn create_user(
        &self,
        email: Email,
        password: Password,
        profile: Profile,
    ) -> Result<User, StoreError> {
        if self
            .repository
            .find_by_email(email.normalized())
            .await?
            .is_some()
        {
            return Err(StoreError::EmailExists);
        }
        let password_hash = self.hasher.hash(password).await?;
        let new_user = NewUser {
            email: &email,
            email_verified: false,
            legacy_id: None,
            password_hash: &password_hash,
            profile: &profile,
            source: Source::Signup,
            blocked: false,
            password_change_required: false,
        };
        match self.repository.insert(&new_user).await? {
            InsertOutcome::Inserted(user) => Ok(user),
            // Lost a race with another sign-up of the same email.
            InsertOutcome::Conflict => Err(StoreError::EmailExists),
        }
    }

    /// Import a legacy user, idempotently: the unique constraints on `legacy_id` and `email`
    /// decide which of several concurrent imports creates the user, in any number of
    /// processes. The others are told the user exists, and succeed only if it is the same
    /// legacy user under the same email and the password still matches the stored hash.
    #[tracing::instrument(name = "user_store.import_user", skip_all, fields(trickle.legacy.id = %import.legacy_id))]
    pub async fn import_user(&self, import: Import) -> Result<ImportOutcome, StoreError> {
        if self
            .repository
            .is_legacy_id_tombstoned(&import.legacy_id)
            .await?
        {
            return Ok(ImportOutcome::Tombstoned);
        }
        // Checking first saves an argon2 hash for the common "already there" case.
        if let Some(outcome) = self.existing_import(&import).await? {
            return Ok(outcome);
        }
        // Never a password-only window for a user who had a second factor: their first login
        // imports nothing until a code from it.
        if let Some(factor) = &import.totp
            && import.source == Source::LoginMigration
        {
            return Ok(ImportOutcome::MfaRequired(
                self.hold_import_for_mfa(&import, factor).await?,
            ));
        }
        let password_hash = self.hasher.hash(import.password.clone()).await?;
        let requires_change = self.migrated_password_needs_change(&import.password).await;
        let new_user = import.new_user(&password_hash, requires_change);
        let inserted = match &import.totp {
            Some(factor) => self.insert_with_factor(&new_user, factor).await?,
            None => match self.repository.insert(&new_user).await? {
                InsertOutcome::Inserted(user) => Some(user),
                InsertOutcome::Conflict => None,
            },
        };
        match inserted {
            Some(user) => Ok(ImportOutcome::Created(user)),
            None => Ok(self
                .existing_import(&import)
                .await?
                .unwrap_or(ImportOutcome::Conflict)),
        }
    }

    async fn existing_import(&self, import: &Import) -> Result<Option<ImportOutcome>, StoreError> {
        let by_legacy_id = self
            .repository
            .find_credentials_by_legacy_id(&import.legacy_id)
            .await?;
        let existing = match by_legacy_id {
            Some(found) => Some(found),
            // A concurrent import may commit between the two reads: an email row carrying
            // this legacy id is the same user, not a conflict.
            None => match self
                .repository
                .find_credentials(import.email.normalized())
                .await?
            {
                Some((user, stored))
                    if user.legacy_id.as_deref() == Some(import.legacy_id.as_str()) =>
                {
                    Some((user, stored))
                }
                // Someone else owns this email in the store (a sign-up, or another legacy id).
                Some(_) => return Ok(Some(ImportOutcome::Conflict)),
                None => None,
            },
        };
        if let Some((user, stored)) = existing {
            if user.email != import.email.normalized() {
                // The user migrated and then changed their email: the old email must not
                // lead back into the account (invariant 3).
                return Ok(Some(ImportOutcome::Conflict));
            }
            let parsed = StoredHash::parse(&stored, HashFormat::Auto)
                .map_err(|e| unreadable_hash(&user.user_id, &e))?;
            let verification = self.hasher.verify(import.password.clone(), parsed).await?;
            return Ok(Some(if verification.matches {
                ImportOutcome::AlreadyImported(user)
            } else {
                // The store's password changed since: the store is authoritative.
                ImportOutcome::Conflict
            }));
        }
        Ok(None)
    }

    #[tracing::instrument(name = "user_store.change_password", skip_all)]
    pub async fn change_password(
        &self,
        user_id: &str,
        old_password: Password,
        new_password: Password,
    ) -> Result<ChangePasswordOutcome, StoreError> {
        let (user, stored) = self
            .repository
            .find_credentials_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        // Guesses at the old password are guesses at the account: they count toward its
        // email's throttle like failed logins, and a locked account is not checked.
        let email = Email::parse(&user.email).map_err(|_| {
            StoreError::Internal(format!("user {} has an invalid stored email", user.user_id))
        })?;
        if let Admission::Refused(retry_after) = self.throttle.admit(&email, None).await? {
            return Ok(ChangePasswordOutcome::Throttled { retry_after });
        }
        let checked = match StoredHash::parse(&stored, HashFormat::Auto) {
            Ok(parsed) => self
                .hasher
                .verify(old_password, parsed)
                .await
                .map_err(StoreError::from),
            Err(e) => Err(unreadable_hash(&user.user_id, &e)),
        };
        let outcome = match &checked {
            Ok(verification) if verification.matches => AttemptOutcome::Succeeded,
            Ok(_) => AttemptOutcome::Failed,
            Err(_) => AttemptOutcome::Undecided,
        };
        self.throttle.settle(&email, None, None, outcome).await?;
        if !checked?.matches {
            return Ok(ChangePasswordOutcome::WrongPassword);
        }
        let password_hash = self.hasher.hash(new_password).await?;
        let Some(user) = self
            .repository
            .set_password_if_unchanged(&user.user_id, &stored, &password_hash)
            .await?
        else {
            // Deleted, or its hash changed since it was checked (a reset won the race).
            return Err(
                match self.repository.find_credentials_by_id(user_id).await? {
                    Some(_) => StoreError::ConcurrentChange,
                    None => StoreError::NotFound,
                },
            );
        };
        self.repository
            .revoke_reset_tickets(&user.user_id, &user.email)
            .await?;
        Ok(ChangePasswordOutcome::Changed(user))
    }

    pub async fn change_email(&self, user_id: &str, email: &Email) -> Result<User, StoreError> {
        match self.repository.set_email(user_id, email).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(StoreError::NotFound),
            Err(e) if trickle_service_kit::db::is_unique_violation(&e) => {
                Err(StoreError::EmailExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(name = "user_store.delete_user", skip_all, fields(trickle.user.id = %user_id))]
    /// Change a user's account state (`None`: leave as is). A block stops their logins and
    /// tokens; a required password change is cleared by the next change or reset.
    pub async fn set_account_state(
        &self,
        user_id: &str,
        blocked: Option<bool>,
        password_change_required: Option<bool>,
    ) -> Result<User, StoreError> {
        let user = self
            .repository
            .set_account_state(user_id, blocked, password_change_required)
            .await?
            .ok_or(StoreError::NotFound)?;
        tracing::info!(
            trickle.user.id = %user.user_id,
            blocked = ?blocked,
            password_change_required = ?password_change_required,
            "account state changed"
        );
        Ok(user)
    }

    /// Set the named profile fields of a user (validated by the caller like a sign-up's).
    #[tracing::instrument(name = "user_store.update_profile", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn update_profile(
        &self,
        user_id: &str,
        fields: ProfileFields,
        profile: &Profile,
    ) -> Result<User, StoreError> {
        self.repository
            .update_profile(user_id, fields, profile)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn delete_user(&self, user_id: &str) -> Result<(), StoreError> {
        if self.repository.delete_with_tombstone(user_id).await? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    pub async fn is_legacy_id_tombstoned(&self, legacy_id: &str) -> Result<bool, StoreError> {
        Ok(self.repository.is_legacy_id_tombstoned(legacy_id).await?)
    }

    pub async fn migration_counts(&self) -> Result<MigrationCounts, StoreError> {
        Ok(self.repository.migration_counts().await?)
    }

    /// Up to `limit` events after position `after`. Positions are contiguous, so a first
    /// event past `after + 1` means the ones between were pruned: the caller is told rather
    /// than handed a silent gap.
    pub async fn list_events(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<crate::repository::StoredEvent>, StoreError> {
        let events = self.repository.list_events(after, limit).await?;
        match events.first() {
            Some(first) if after > 0 && first.position > after + 1 => {
                Err(StoreError::EventsPruned {
                    oldest_position: first.position,
                })
            }
            _ => Ok(events),
        }
    }

    /// Insert a batch of legacy users with their legacy hashes (source backfill), in one
    /// statement. The hashes were parsed by the caller's validation; the store verifies them
    /// natively at the users' next login and upgrades them to argon2id then.
    #[tracing::instrument(name = "user_store.backfill", skip_all, fields(batch = users.len()))]
    pub async fn backfill(&self, users: &[BackfillUser]) -> Result<BackfillOutcome, StoreError> {
        // Users with a second factor are inserted one by one, each with its factor in one
        // transaction (never a user without the factor they had); the rest in one statement.
        let (with_factor, plain): (Vec<&BackfillUser>, Vec<&BackfillUser>) =
            users.iter().partition(|u| u.totp.is_some());
        let rows: Vec<BackfillRow<'_>> = plain
            .iter()
            .map(|u| BackfillRow {
                legacy_id: &u.legacy_id,
                email: &u.email,
                email_verified: u.email_verified,
                profile: &u.profile,
                password_hash: &u.password_hash,
                blocked: u.blocked,
            })
            .collect();
        let mut result = self.repository.backfill(&rows).await?;
        for user in with_factor {
            let Some(factor) = &user.totp else { continue };
            if self
                .repository
                .is_legacy_id_tombstoned(&user.legacy_id)
                .await?
            {
                result.tombstoned += 1;
                continue;
            }
            let new = NewUser {
                email: &user.email,
                email_verified: user.email_verified,
                legacy_id: Some(&user.legacy_id),
                password_hash: &user.password_hash,
                profile: &user.profile,
                source: Source::Backfill,
                blocked: user.blocked,
                password_change_required: false,
            };
            match self.insert_with_factor(&new, factor).await? {
                Some(inserted) => {
                    let ids = (inserted.user_id, user.legacy_id.clone());
                    result.inserted.push(ids.clone());
                    result.backfilled.push(ids);
                }
                // Already in the store: by this backfill before (a replayed page), or by a
                // login or another import.
                None => {
                    if let Some(existing) = self
                        .repository
                        .find_by_legacy_id(&user.legacy_id)
                        .await?
                        .filter(|u| u.source == Source::Backfill)
                    {
                        result
                            .backfilled
                            .push((existing.user_id, user.legacy_id.clone()));
                    }
                }
            }
        }
        if !result.inserted.is_empty() {
            // New legacy hashes in the store: price refusals from them on the next one.
            self.refusal.mark_stale();
        }
        let inserted = i64::try_from(result.inserted.len()).unwrap_or(i64::MAX);
        let total = i64::try_from(users.len()).unwrap_or(i64::MAX);
        Ok(BackfillOutcome {
            skipped_existing: (total - inserted - result.tombstoned).max(0),
            skipped_tombstoned: result.tombstoned,
            inserted: result.inserted,
            backfilled: result.backfilled,
        })
    }

    pub async fn get_by_id(&self, user_id: &str) -> Result<User, StoreError> {
        self.repository
            .find_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    pub async fn get_by_email(&self, email: &Email) -> Result<User, StoreError> {
        self.repository
            .find_by_email(email.normalized())
            .await?
            .ok_or(StoreError::NotFound)
    }
}

mod factors;
mod ticket_flows;

pub use factors::{Enrollment, FactorSettings, MfaMethod, MfaOutcome};

pub use ticket_flows::{RedeemResetOutcome, TicketLifetimes};

//! The user-store's domain: users, where they came from, and the rules for authenticating,
//! creating and importing them.

use crate::error::StoreError;
use crate::repository::{InsertOutcome, NewUser, Repository};
use chrono::{DateTime, Utc};
use trickle_password::{HashFormat, HashPool, Password, StoredHash};
use trickle_service_kit::Email;

/// How a user came to be in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Signup,
    LoginMigration,
    ResetMigration,
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Signup => "signup",
            Source::LoginMigration => "login_migration",
            Source::ResetMigration => "reset_migration",
            Source::Backfill => "backfill",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "signup" => Source::Signup,
            "login_migration" => Source::LoginMigration,
            "reset_migration" => Source::ResetMigration,
            "backfill" => Source::Backfill,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub nickname: Option<String>,
    pub picture: Option<String>,
    pub user_metadata: serde_json::Map<String, serde_json::Value>,
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
}

/// A user as the store returns it: never with the password hash.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub user_id: String,
    pub email: String,
    pub display_email: String,
    pub email_verified: bool,
    pub legacy_id: Option<String>,
    pub profile: Profile,
    pub source: Source,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub enum AuthenticateOutcome {
    Authenticated(User),
    WrongPassword,
    NotFound,
}

#[derive(Debug)]
pub enum ImportOutcome {
    Created(User),
    AlreadyImported(User),
    Conflict,
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
}

#[derive(Debug, Clone)]
pub struct Users {
    repository: Repository,
    hasher: HashPool,
}

impl Users {
    pub fn new(repository: Repository, hasher: HashPool) -> Self {
        Self { repository, hasher }
    }

    /// Check a password against the store. An unknown user costs a dummy verification when
    /// `equalize_unknown` is set, so the caller cannot tell "no such user" by the time taken.
    #[tracing::instrument(name = "user_store.authenticate", skip_all)]
    pub async fn authenticate(
        &self,
        email: &Email,
        password: Password,
        equalize_unknown: bool,
    ) -> Result<AuthenticateOutcome, StoreError> {
        let Some((user, stored)) = self.repository.find_credentials(email.normalized()).await?
        else {
            if equalize_unknown {
                self.hasher.verify_dummy(password).await?;
            }
            return Ok(AuthenticateOutcome::NotFound);
        };
        let parsed = StoredHash::parse(&stored, HashFormat::Auto).map_err(|e| {
            // Only the first characters of the hash: see ParseHashError.
            StoreError::Internal(format!(
                "stored hash of user {} is unreadable: {e}",
                user.user_id
            ))
        })?;
        let scheme = parsed.scheme();
        let (verification, upgraded) = self.hasher.verify_and_upgrade(password, parsed).await?;
        if !verification.matches {
            return Ok(AuthenticateOutcome::WrongPassword);
        }
        tracing::debug!(user_id = %user.user_id, scheme = scheme.as_str(), upgraded = upgraded.is_some(), "password verified");
        let user = self
            .repository
            .record_login(&user.user_id, &stored, upgraded.as_deref())
            .await?
            .unwrap_or(user);
        Ok(AuthenticateOutcome::Authenticated(user))
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
        // Checking first saves an argon2 hash for the common "already there" case.
        if let Some(outcome) = self.existing_import(&import).await? {
            return Ok(outcome);
        }
        let password_hash = self.hasher.hash(import.password.clone()).await?;
        let new_user = NewUser {
            email: &import.email,
            email_verified: import.email_verified,
            legacy_id: Some(&import.legacy_id),
            password_hash: &password_hash,
            profile: &import.profile,
            source: import.source,
        };
        match self.repository.insert(&new_user).await? {
            InsertOutcome::Inserted(user) => Ok(ImportOutcome::Created(user)),
            InsertOutcome::Conflict => Ok(self
                .existing_import(&import)
                .await?
                .unwrap_or(ImportOutcome::Conflict)),
        }
    }

    async fn existing_import(&self, import: &Import) -> Result<Option<ImportOutcome>, StoreError> {
        if let Some((user, stored)) = self
            .repository
            .find_credentials_by_legacy_id(&import.legacy_id)
            .await?
        {
            if user.email != import.email.normalized() {
                // The user migrated and then changed their email: the old email must not
                // lead back into the account (invariant 3).
                return Ok(Some(ImportOutcome::Conflict));
            }
            let parsed = StoredHash::parse(&stored, HashFormat::Auto).map_err(|e| {
                StoreError::Internal(format!(
                    "stored hash of user {} is unreadable: {e}",
                    user.user_id
                ))
            })?;
            let verification = self.hasher.verify(import.password.clone(), parsed).await?;
            return Ok(Some(if verification.matches {
                ImportOutcome::AlreadyImported(user)
            } else {
                // The store's password changed since: the store is authoritative.
                ImportOutcome::Conflict
            }));
        }
        if self
            .repository
            .find_by_email(import.email.normalized())
            .await?
            .is_some()
        {
            // Someone else owns this email in the store (a sign-up, or another legacy id).
            return Ok(Some(ImportOutcome::Conflict));
        }
        Ok(None)
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

//! The public flows (DESIGN §2): login with migration on first login, sign-up, user lookup
//! and tokens. The store is asked first and is authoritative for every user it has.

use crate::error::FrontendError;
use crate::mode::ModeWatch;
use crate::tokens::{Claims, PublicJwk, TokenError, TokenIssuer};
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::migration::v1 as migration;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;
use trickle_service_kit::server::Channel;

/// A successful login.
#[derive(Debug)]
pub struct LoginSuccess {
    pub user: auth::User,
    pub access_token: String,
    pub expires_in: i64,
    /// True for the one login that moved the user from the legacy store.
    pub migrated: bool,
}

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

#[derive(Debug, Clone)]
pub struct AuthFlows {
    store: UserStoreClient<Channel>,
    coordinator: MigrationCoordinatorClient<Channel>,
    tokens: TokenIssuer,
    mode: ModeWatch,
    /// Operators may opt in to a keyed hash of the email on login spans.
    email_hash_key: Option<Vec<u8>>,
    /// Recent answers to "does this token's user still exist, unchanged?".
    subjects: crate::revocation::SubjectCache,
}

/// HMAC-SHA256 of the normalized email, first 16 bytes in hex: lets an operator find one
/// user's logins without the email itself ever reaching telemetry.
fn email_hash(key: &[u8], email: &Email) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(email.normalized().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl AuthFlows {
    pub fn new(
        store: UserStoreClient<Channel>,
        coordinator: MigrationCoordinatorClient<Channel>,
        tokens: TokenIssuer,
        mode: ModeWatch,
        email_hash_key: Option<Vec<u8>>,
        subjects: crate::revocation::SubjectCache,
    ) -> Self {
        Self {
            store,
            coordinator,
            tokens,
            mode,
            email_hash_key,
            subjects,
        }
    }

    #[tracing::instrument(name = "auth.login", skip_all, fields(trickle.user.id, migrated, trickle.user.email_hash))]
    pub async fn login(
        &self,
        email: Email,
        password: Password,
        origin: AttemptOrigin,
    ) -> Result<LoginSuccess, FrontendError> {
        if let Some(key) = &self.email_hash_key {
            tracing::Span::current()
                .record("trickle.user.email_hash", email_hash(key, &email).as_str());
        }
        let result = self.login_flow(email, password, &origin).await;
        let label = match &result {
            Ok(success) if success.migrated => "migrated",
            Ok(_) => "success",
            Err(FrontendError::InvalidCredentials) => "invalid_credentials",
            Err(FrontendError::LegacyUnavailable) => "legacy_unavailable",
            Err(FrontendError::StoreUnavailable) => "store_unavailable",
            Err(FrontendError::Overloaded) => "overloaded",
            Err(FrontendError::RateLimited(_)) => "rate_limited",
            Err(FrontendError::InvalidRequest(_)) => "invalid_request",
            Err(_) => "error",
        };
        trickle_telemetry::metrics::metrics()
            .logins
            .with_label_values(&[label])
            .inc();
        result
    }

    async fn login_flow(
        &self,
        email: Email,
        password: Password,
        origin: &AttemptOrigin,
    ) -> Result<LoginSuccess, FrontendError> {
        let authoritative = self.mode.is_authoritative();
        // In IMPORT mode an unknown user goes on to the legacy store, whose check costs what
        // a wrong password costs; in AUTHORITATIVE mode the store pays a dummy hash instead.
        let (user, migrated) = match self
            .authenticate(&email, &password, authoritative, origin)
            .await?
        {
            StoreAnswer::Authenticated(user) => (user, false),
            // The store counted this failure toward the email's throttle itself.
            StoreAnswer::WrongPassword => return Err(FrontendError::InvalidCredentials),
            StoreAnswer::Throttled(seconds) => return Err(FrontendError::RateLimited(seconds)),
            // The store paid the dummy hash and counted the failure, as for a wrong password.
            StoreAnswer::NotFound if authoritative => {
                return Err(FrontendError::InvalidCredentials);
            }
            StoreAnswer::NotFound => self.migrate_on_login(&email, password, origin).await?,
        };
        let span = tracing::Span::current();
        span.record("trickle.user.id", user.user_id.as_str());
        span.record("migrated", migrated);
        let access_token = self
            .tokens
            .issue(&user.user_id, &user.email, &user.legacy_id, now());
        let expires_in = i64::try_from(self.tokens.ttl().as_secs()).unwrap_or(i64::MAX);
        Ok(LoginSuccess {
            user,
            access_token,
            expires_in,
            migrated,
        })
    }

    async fn authenticate(
        &self,
        email: &Email,
        password: &Password,
        equalize_unknown: bool,
        origin: &AttemptOrigin,
    ) -> Result<StoreAnswer, FrontendError> {
        let request = store::AuthenticateRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
            equalize_unknown,
            client_id: origin.client_id.clone(),
            attempt_source: origin.source.clone(),
        };
        let answer = self
            .store
            .clone()
            .authenticate(request)
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        use store::authenticate_response::Outcome;
        // The store spent its share of a refusal; while importing, the legacy store's share is
        // spent there, as for a user only the legacy store has.
        match store::RefusalRemainder::try_from(answer.refusal_remainder) {
            Ok(store::RefusalRemainder::LegacyCheck) => {
                self.equalize_refused_login(email, false).await;
            }
            Ok(store::RefusalRemainder::LegacyLookup) => {
                self.equalize_refused_login(email, true).await;
            }
            _ => {}
        }
        Ok(match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Authenticated), Some(user)) => StoreAnswer::Authenticated(user),
            (Ok(Outcome::WrongPassword), _) => StoreAnswer::WrongPassword,
            (Ok(Outcome::NotFound), _) => StoreAnswer::NotFound,
            // A deleted user: refused like a wrong password, and never looked up in the
            // legacy store (the store already paid the dummy hash).
            (Ok(Outcome::Tombstoned), _) => StoreAnswer::WrongPassword,
            (Ok(Outcome::Throttled), _) => {
                StoreAnswer::Throttled(u64::try_from(answer.retry_after_seconds).unwrap_or(1))
            }
            _ => {
                return Err(FrontendError::Internal(
                    "user store answered Authenticate without an outcome".into(),
                ));
            }
        })
    }

    /// Have the legacy connector spend what its refusal costs. Best effort: the answer is a
    /// refusal either way, and a coordinator or connector that cannot (down, an older or
    /// third-party connector without the call) only makes this refusal faster.
    async fn equalize_refused_login(&self, email: &Email, lookup_only: bool) {
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
    fn settle_login_attempt(
        &self,
        email: &Email,
        origin: &AttemptOrigin,
        outcome: store::LoginAttemptOutcome,
    ) {
        let request = store::SettleLoginAttemptRequest {
            email: email.display().to_owned(),
            client_id: origin.client_id.clone(),
            attempt_source: origin.source.clone(),
            outcome: outcome.into(),
        };
        let mut store = self.store.clone();
        tokio::spawn(async move {
            if let Err(status) = store.settle_login_attempt(request).await {
                tracing::warn!(code = ?status.code(), "could not settle a login attempt");
            }
        });
    }

    async fn migrate_on_login(
        &self,
        email: &Email,
        password: Password,
        origin: &AttemptOrigin,
    ) -> Result<(auth::User, bool), FrontendError> {
        use store::LoginAttemptOutcome as Settled;
        let request = migration::MigrateOnLoginRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let answer = match self.coordinator.clone().migrate_on_login(request).await {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                self.settle_login_attempt(email, origin, Settled::Undecided);
                return Err(FrontendError::from_upstream(
                    &status,
                    FrontendError::LegacyUnavailable,
                ));
            }
        };
        use migration::migrate_on_login_response::Outcome;
        match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Migrated), Some(user)) => {
                self.settle_login_attempt(email, origin, Settled::Succeeded);
                Ok((user, true))
            }
            (Ok(Outcome::AlreadyMigrated), Some(user)) => {
                self.settle_login_attempt(email, origin, Settled::Succeeded);
                Ok((user, false))
            }
            (Ok(Outcome::LegacyRejected | Outcome::Conflict | Outcome::Tombstoned), _) => {
                // Failures the legacy store decided count toward the same throttle.
                self.settle_login_attempt(email, origin, Settled::Failed);
                Err(FrontendError::InvalidCredentials)
            }
            // The mode changed to AUTHORITATIVE since we last looked: the store alone decides,
            // at the cost of a wrong password (a new attempt, counted by the store).
            (Ok(Outcome::NotImporting), _) => {
                self.settle_login_attempt(email, origin, Settled::Undecided);
                match self.authenticate(email, &password, true, origin).await? {
                    StoreAnswer::Authenticated(user) => Ok((user, false)),
                    StoreAnswer::Throttled(seconds) => Err(FrontendError::RateLimited(seconds)),
                    // Counted by the store, like any failure it decides.
                    StoreAnswer::WrongPassword | StoreAnswer::NotFound => {
                        Err(FrontendError::InvalidCredentials)
                    }
                }
            }
            _ => {
                self.settle_login_attempt(email, origin, Settled::Undecided);
                Err(FrontendError::Internal(
                    "coordinator answered MigrateOnLogin without an outcome".into(),
                ))
            }
        }
    }

    /// Sign a new user up. While importing, an email the legacy store knows belongs to a user
    /// who will migrate: refuse it rather than create a second account.
    #[tracing::instrument(name = "auth.sign_up", skip_all)]
    pub async fn sign_up(
        &self,
        email: Email,
        password: Password,
        profile: Option<auth::Profile>,
    ) -> Result<auth::User, FrontendError> {
        // A deleted legacy user's email is free again (the coordinator reports it not found).
        if self.find_legacy_user(&email).await?.is_some() {
            return Err(FrontendError::EmailExists);
        }
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
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        created.user.ok_or_else(|| {
            FrontendError::Internal("user store answered CreateUser without a user".into())
        })
    }

    async fn store_user(
        &self,
        lookup: store::get_user_request::Lookup,
    ) -> Result<auth::User, FrontendError> {
        let answer = self
            .store
            .clone()
            .get_user(store::GetUserRequest {
                lookup: Some(lookup),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        answer.user.ok_or(FrontendError::UserNotFound)
    }

    /// What the legacy store knows about an email (nothing in AUTHORITATIVE mode, nothing for
    /// deleted users), through the coordinator.
    async fn find_legacy_user(
        &self,
        email: &Email,
    ) -> Result<Option<trickle_proto::legacy::v1::LegacyUser>, FrontendError> {
        let answer = self
            .coordinator
            .clone()
            .find_legacy_user(migration::FindLegacyUserRequest {
                email: email.display().to_owned(),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::LegacyUnavailable))?
            .into_inner();
        Ok(answer.user.filter(|_| answer.found))
    }

    /// A store user by id, or by email — falling back, while importing, to the legacy store
    /// (read-only: nothing is written, and the answer says not migrated).
    pub async fn get_user(
        &self,
        lookup: store::get_user_request::Lookup,
    ) -> Result<(auth::User, bool), FrontendError> {
        let email = match &lookup {
            store::get_user_request::Lookup::Email(email) => Email::parse(email).ok(),
            store::get_user_request::Lookup::UserId(_) => None,
        };
        match self.store_user(lookup).await {
            Ok(user) => Ok((user, true)),
            Err(FrontendError::UserNotFound) => {
                let Some(email) = email.filter(|_| !self.mode.is_authoritative()) else {
                    return Err(FrontendError::UserNotFound);
                };
                let legacy = self
                    .find_legacy_user(&email)
                    .await?
                    .ok_or(FrontendError::UserNotFound)?;
                Ok((legacy_user_view(legacy), false))
            }
            Err(e) => Err(e),
        }
    }

    #[tracing::instrument(name = "auth.change_password", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn change_password(
        &self,
        user_id: &str,
        old: Password,
        new: Password,
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
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        use store::change_password_response::Outcome;
        match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Changed), Some(user)) => Ok(user),
            (Ok(Outcome::WrongPassword), _) => Err(FrontendError::InvalidCredentials),
            (Ok(Outcome::Throttled), _) => Err(FrontendError::RateLimited(
                u64::try_from(answer.retry_after_seconds).unwrap_or(1),
            )),
            _ => Err(FrontendError::Internal(
                "user store answered ChangePassword without an outcome".into(),
            )),
        }
    }

    /// Change a user's email. While importing, an email the legacy store holds for another
    /// legacy user is taken: that person will migrate with it.
    #[tracing::instrument(name = "auth.change_email", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn change_email(
        &self,
        user_id: &str,
        new_email: Email,
    ) -> Result<auth::User, FrontendError> {
        let user = self
            .store_user(store::get_user_request::Lookup::UserId(user_id.to_owned()))
            .await?;
        if user.email != new_email.normalized()
            && let Some(legacy) = self.find_legacy_user(&new_email).await?
            && legacy.legacy_id != user.legacy_id
        {
            return Err(FrontendError::EmailExists);
        }
        let answer = self
            .store
            .clone()
            .change_email(store::ChangeEmailRequest {
                user_id: user_id.to_owned(),
                new_email: new_email.display().to_owned(),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        answer.user.ok_or_else(|| {
            FrontendError::Internal("user store answered ChangeEmail without a user".into())
        })
    }

    /// A reset ticket for a store user, or while importing for a user only the legacy store has.
    #[tracing::instrument(name = "auth.create_password_reset_ticket", skip_all)]
    pub async fn create_password_reset_ticket(
        &self,
        email: Email,
    ) -> Result<(String, Option<prost_types::Timestamp>), FrontendError> {
        let request = |legacy_id: String| store::CreatePasswordResetTicketRequest {
            email: email.display().to_owned(),
            legacy_id,
        };
        match self
            .store
            .clone()
            .create_password_reset_ticket(request(String::new()))
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                return Ok((answer.ticket, answer.expires_at));
            }
            Err(status) => {
                match FrontendError::from_upstream(&status, FrontendError::StoreUnavailable) {
                    FrontendError::UserNotFound => {}
                    other => return Err(other),
                }
            }
        }
        if self.mode.is_authoritative() {
            return Err(FrontendError::UserNotFound);
        }
        let legacy = self
            .find_legacy_user(&email)
            .await?
            .ok_or(FrontendError::UserNotFound)?;
        let answer = self
            .store
            .clone()
            .create_password_reset_ticket(request(legacy.legacy_id))
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        Ok((answer.ticket, answer.expires_at))
    }

    /// Set a new password with a reset ticket; a legacy-only user is migrated by it.
    #[tracing::instrument(name = "auth.reset_password", skip_all, fields(migrated))]
    pub async fn reset_password(
        &self,
        ticket: &str,
        new_password: Password,
    ) -> Result<(auth::User, bool), FrontendError> {
        let answer = self
            .store
            .clone()
            .redeem_password_reset(store::RedeemPasswordResetRequest {
                ticket: ticket.to_owned(),
                new_password: new_password.expose_secret().to_owned(),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        use store::redeem_password_reset_response::Outcome;
        let (user, migrated) = match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Reset), Some(user)) => (user, false),
            (Ok(Outcome::NeedsImport), _) => {
                let migrated = self
                    .coordinator
                    .clone()
                    .migrate_on_reset(migration::MigrateOnResetRequest {
                        ticket: ticket.to_owned(),
                        new_password: new_password.expose_secret().to_owned(),
                        legacy_id: answer.legacy_id,
                        email: answer.email,
                    })
                    .await
                    .map_err(|s| {
                        FrontendError::from_upstream(&s, FrontendError::LegacyUnavailable)
                    })?
                    .into_inner();
                let user = migrated.user.ok_or_else(|| {
                    FrontendError::Internal(
                        "coordinator answered MigrateOnReset without a user".into(),
                    )
                })?;
                (user, migrated.migrated)
            }
            _ => {
                return Err(FrontendError::Internal(
                    "user store answered RedeemPasswordReset without an outcome".into(),
                ));
            }
        };
        tracing::Span::current().record("migrated", migrated);
        Ok((user, migrated))
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
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
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
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        answer.user.ok_or_else(|| {
            FrontendError::Internal("user store answered VerifyEmail without a user".into())
        })
    }

    #[tracing::instrument(name = "auth.delete_user", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn delete_user(&self, user_id: &str) -> Result<(), FrontendError> {
        self.store
            .clone()
            .delete_user(store::DeleteUserRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?;
        Ok(())
    }

    /// A token is valid when its signature, issuer, audience and lifetime are, and its user
    /// still exists and has not changed their password since it was issued (asked of the
    /// store, remembered for `[frontend] token_subject_cache_ms`).
    pub async fn validate_token(&self, token: &str) -> Result<Claims, FrontendError> {
        let claims = self.tokens.validate(token, now()).map_err(|e| match e {
            TokenError::Expired => FrontendError::TokenExpired,
            TokenError::Invalid => FrontendError::InvalidToken,
        })?;
        let subject = match self.subjects.get(&claims.sub) {
            Some(subject) => subject,
            None => {
                use crate::revocation::TokenSubject;
                let subject = match self
                    .store_user(store::get_user_request::Lookup::UserId(claims.sub.clone()))
                    .await
                {
                    Ok(user) => TokenSubject::Present {
                        credentials_changed_at: user.credentials_changed_at.map(|t| t.seconds),
                    },
                    Err(FrontendError::UserNotFound) => TokenSubject::Gone,
                    Err(other) => return Err(other),
                };
                self.subjects.put(&claims.sub, subject);
                subject
            }
        };
        if subject.accepts(claims.iat) {
            Ok(claims)
        } else {
            Err(FrontendError::InvalidToken)
        }
    }

    pub fn jwks(&self) -> Vec<PublicJwk> {
        self.tokens.jwks()
    }
}

enum StoreAnswer {
    Authenticated(auth::User),
    WrongPassword,
    NotFound,
    /// Too many failures for the email: seconds to wait.
    Throttled(u64),
}

/// A legacy user shown through the public API: no user id (they are not in the store yet).
fn legacy_user_view(legacy: trickle_proto::legacy::v1::LegacyUser) -> auth::User {
    let trickle_proto::legacy::v1::LegacyUser {
        legacy_id,
        email,
        email_verified,
        name,
        given_name,
        family_name,
        nickname,
        picture,
    } = legacy;
    auth::User {
        user_id: String::new(),
        email: Email::parse(&email)
            .map(|e| e.normalized().to_owned())
            .unwrap_or_else(|_| email.to_lowercase()),
        display_email: email,
        email_verified,
        legacy_id,
        profile: Some(auth::Profile {
            name,
            given_name,
            family_name,
            nickname,
            picture,
            user_metadata: None,
            app_metadata: None,
        }),
        source: auth::Source::Unspecified.into(),
        created_at: None,
        updated_at: None,
        last_login_at: None,
        credentials_changed_at: None,
    }
}

//! The public flows (docs/ARCHITECTURE.md, "Flows"): login with migration on first login, sign-up, user lookup
//! and tokens. The store is asked first and is authoritative for every user it has.

use crate::error::FrontendError;
use crate::mode::ModeWatch;
use crate::tokens::{Claims, PublicJwk, TokenError, TokenIssuer};
use crate::upstream::{
    FirstLogin, MfaAnswer, RefusalShare, ResetAnswer, Settled, StoreAnswer, Upstreams, UserLookup,
};
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_service_kit::{Clock, Email};

pub use crate::upstream::AttemptOrigin;

/// A successful login.
#[derive(Debug)]
pub struct LoginSuccess {
    pub user: auth::User,
    pub access_token: String,
    pub expires_in: i64,
    /// True for the one login that moved the user from the legacy store.
    pub migrated: bool,
}

/// What a right password leads to.
#[derive(Debug)]
pub enum LoginAnswer {
    LoggedIn(LoginSuccess),
    /// The user has a second factor: [`AuthFlows::verify_mfa`] with this challenge and a
    /// code finishes the login.
    MfaRequired {
        challenge: String,
    },
}

/// A right password, before the token.
enum PasswordChecked {
    User { user: auth::User, migrated: bool },
    MfaRequired(String),
}

/// `amr` of a login with the password alone.
const PASSWORD_ONLY: &[&str] = &["pwd"];

#[derive(Debug, Clone)]
pub struct AuthFlows {
    upstream: Upstreams,
    tokens: TokenIssuer,
    mode: ModeWatch,
    /// Operators may opt in to a keyed hash of the email on login spans.
    email_hash_key: Option<Vec<u8>>,
    /// Recent answers to "does this token's user still exist, unchanged?".
    subjects: crate::revocation::SubjectCache,
    /// Token `iat`/`exp` and their checks read this (tests move it).
    clock: Clock,
}

/// Ask the store whether `user_id` still exists, unblocked, and since when their password
/// holds; remember the answer.
async fn ask_subject(
    upstream: &Upstreams,
    subjects: &crate::revocation::SubjectCache,
    user_id: &str,
) -> Result<crate::revocation::TokenSubject, FrontendError> {
    use crate::revocation::TokenSubject;
    let asked = subjects.now();
    let subject = match upstream.user(&UserLookup::UserId(user_id.to_owned())).await {
        // A blocked user's tokens speak for nobody, like a deleted user's.
        Ok(user) if user.blocked => TokenSubject::Gone,
        Ok(user) => TokenSubject::Present {
            credentials_changed_at: user.credentials_changed_at.map(|t| t.seconds),
        },
        Err(FrontendError::UserNotFound) => TokenSubject::Gone,
        Err(other) => return Err(other),
    };
    subjects.put(user_id, subject, asked);
    Ok(subject)
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

impl AuthFlows {
    pub fn new(
        upstream: Upstreams,
        tokens: TokenIssuer,
        mode: ModeWatch,
        email_hash_key: Option<Vec<u8>>,
        subjects: crate::revocation::SubjectCache,
        clock: Clock,
    ) -> Self {
        Self {
            upstream,
            tokens,
            mode,
            email_hash_key,
            subjects,
            clock,
        }
    }

    #[tracing::instrument(name = "auth.login", skip_all, fields(trickle.user.id, migrated, trickle.user.email_hash))]
    pub async fn login(
        &self,
        email: Email,
        password: Password,
        origin: AttemptOrigin,
    ) -> Result<LoginAnswer, FrontendError> {
        if let Some(key) = &self.email_hash_key {
            tracing::Span::current()
                .record("trickle.user.email_hash", email_hash(key, &email).as_str());
        }
        let result = self.login_flow(email, password, &origin).await;
        let label = match &result {
            Ok(LoginAnswer::LoggedIn(success)) if success.migrated => "migrated",
            Ok(LoginAnswer::LoggedIn(_)) => "success",
            Ok(LoginAnswer::MfaRequired { .. }) => "mfa_required",
            Err(FrontendError::InvalidCredentials) => "invalid_credentials",
            Err(FrontendError::UserBlocked) => "blocked",
            Err(FrontendError::LegacyUnavailable) => "legacy_unavailable",
            Err(FrontendError::StoreUnavailable) => "store_unavailable",
            Err(FrontendError::Overloaded { .. }) => "overloaded",
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
    ) -> Result<LoginAnswer, FrontendError> {
        let authoritative = self.mode.is_authoritative();
        // In IMPORT mode an unknown user goes on to the legacy store, whose check costs what
        // a wrong password costs; in AUTHORITATIVE mode the store pays a dummy hash instead.
        let (user, migrated) = match self
            .authenticate(&email, &password, authoritative, origin)
            .await?
        {
            StoreAnswer::Authenticated(user) => (user, false),
            StoreAnswer::MfaRequired(challenge) => {
                return Ok(LoginAnswer::MfaRequired { challenge });
            }
            // The store counted this failure toward the email's throttle itself.
            StoreAnswer::WrongPassword => return Err(FrontendError::InvalidCredentials),
            StoreAnswer::Blocked => return Err(FrontendError::UserBlocked),
            StoreAnswer::Throttled(seconds) => return Err(FrontendError::RateLimited(seconds)),
            // The store paid the dummy hash and counted the failure, as for a wrong password.
            StoreAnswer::NotFound if authoritative => {
                return Err(FrontendError::InvalidCredentials);
            }
            StoreAnswer::NotFound => match self.migrate_on_login(&email, password, origin).await? {
                PasswordChecked::User { user, migrated } => (user, migrated),
                PasswordChecked::MfaRequired(challenge) => {
                    return Ok(LoginAnswer::MfaRequired { challenge });
                }
            },
        };
        // A user blocked in the legacy store was imported blocked by this very login: the
        // password was right, the account stays in the store, and there is no login.
        if user.blocked {
            return Err(FrontendError::UserBlocked);
        }
        let span = tracing::Span::current();
        span.record("trickle.user.id", user.user_id.as_str());
        span.record("migrated", migrated);
        Ok(LoginAnswer::LoggedIn(self.logged_in(
            user,
            migrated,
            PASSWORD_ONLY,
        )))
    }

    /// A login's answer: the user and their token.
    fn logged_in(&self, user: auth::User, migrated: bool, amr: &[&str]) -> LoginSuccess {
        let access_token = self.tokens.issue_for(&user, amr, self.clock.unix_seconds());
        let expires_in = i64::try_from(self.tokens.ttl().as_secs()).unwrap_or(i64::MAX);
        LoginSuccess {
            user,
            access_token,
            expires_in,
            migrated,
        }
    }

    /// The second step of a login: the challenge of the first and a code from the user's
    /// authenticator (or a recovery code).
    #[tracing::instrument(name = "auth.verify_mfa", skip_all, fields(trickle.user.id))]
    pub async fn verify_mfa(
        &self,
        challenge: &str,
        code: &str,
        origin: AttemptOrigin,
    ) -> Result<LoginSuccess, FrontendError> {
        let answer = self.upstream.verify_mfa(challenge, code, &origin).await;
        let label = match &answer {
            Ok(MfaAnswer::Verified { migrated: true, .. }) => "migrated",
            Ok(MfaAnswer::Verified { .. }) => "mfa_verified",
            Ok(MfaAnswer::WrongCode) => "invalid_mfa_code",
            Ok(MfaAnswer::ChallengeInvalid) => "mfa_challenge_invalid",
            Ok(MfaAnswer::Throttled(_)) => "rate_limited",
            Ok(MfaAnswer::Blocked) => "blocked",
            Err(FrontendError::StoreUnavailable) => "store_unavailable",
            Err(_) => "error",
        };
        trickle_telemetry::metrics::metrics()
            .logins
            .with_label_values(&[label])
            .inc();
        match answer? {
            MfaAnswer::Verified {
                user,
                amr,
                migrated,
            } => {
                tracing::Span::current().record("trickle.user.id", user.user_id.as_str());
                if migrated {
                    self.upstream
                        .record_mfa_migration(&user.user_id, &user.legacy_id);
                }
                Ok(self.logged_in(user, migrated, amr))
            }
            MfaAnswer::WrongCode => Err(FrontendError::InvalidMfaCode),
            MfaAnswer::ChallengeInvalid => Err(FrontendError::MfaChallengeInvalid),
            MfaAnswer::Throttled(seconds) => Err(FrontendError::RateLimited(seconds)),
            MfaAnswer::Blocked => Err(FrontendError::UserBlocked),
        }
    }

    /// A new TOTP secret for a store user, to confirm with a code.
    pub async fn enroll_totp(
        &self,
        user_id: &str,
    ) -> Result<auth::EnrollTotpResponse, FrontendError> {
        self.upstream.enroll_totp(user_id).await
    }

    /// Activate the enrolled secret; the user's recovery codes, shown once.
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        code: &str,
    ) -> Result<(auth::User, Vec<String>), FrontendError> {
        self.upstream.confirm_totp(user_id, code).await
    }

    pub async fn remove_factor(&self, user_id: &str) -> Result<auth::User, FrontendError> {
        self.upstream.remove_factor(user_id).await
    }

    /// The store's answer; for a refusal, the legacy store's share of its cost spent too.
    async fn authenticate(
        &self,
        email: &Email,
        password: &Password,
        store_decides: bool,
        origin: &AttemptOrigin,
    ) -> Result<StoreAnswer, FrontendError> {
        let (answer, share) = self
            .upstream
            .authenticate(email, password, store_decides, origin)
            .await?;
        // The store spent its share of a refusal; while importing, the legacy store's share is
        // spent there, as for a user only the legacy store has.
        match share {
            RefusalShare::LegacyCheck => self.upstream.equalize_refused_login(email, false).await,
            RefusalShare::LegacyLookup => self.upstream.equalize_refused_login(email, true).await,
            RefusalShare::Nothing => {}
        }
        Ok(answer)
    }

    async fn migrate_on_login(
        &self,
        email: &Email,
        password: Password,
        origin: &AttemptOrigin,
    ) -> Result<PasswordChecked, FrontendError> {
        let logged_in = |user, migrated| PasswordChecked::User { user, migrated };
        let first_login = match self.upstream.migrate_on_login(email, &password).await {
            Ok(first_login) => first_login,
            Err(error) => {
                self.upstream
                    .settle_login_attempt(email, origin, Settled::Undecided);
                return Err(error);
            }
        };
        match first_login {
            FirstLogin::Migrated(user) => {
                self.upstream
                    .settle_login_attempt(email, origin, Settled::Succeeded);
                Ok(logged_in(user, true))
            }
            // Migrated by a concurrent login, and given a second factor since: the store
            // decides, with its challenge (below), never the password alone.
            FirstLogin::AlreadyMigrated(user) if !user.mfa_enrolled => {
                self.upstream
                    .settle_login_attempt(email, origin, Settled::Succeeded);
                Ok(logged_in(user, false))
            }
            // The password was right; the code decides. Not a success yet (a success would
            // forgive the account's failures while the code is still to be guessed).
            FirstLogin::MfaRequired(challenge) => {
                self.upstream
                    .settle_login_attempt(email, origin, Settled::Undecided);
                Ok(PasswordChecked::MfaRequired(challenge))
            }
            FirstLogin::Refused => {
                // Failures the legacy store decided count toward the same throttle, and the
                // store's share of the refusal, deferred until now, is paid before answering.
                self.upstream.settle_refused_attempt(email, origin).await;
                Err(FrontendError::InvalidCredentials)
            }
            // The mode changed to AUTHORITATIVE since we last looked: the store alone decides,
            // at the cost of a wrong password (a new attempt, counted by the store).
            FirstLogin::NotImporting | FirstLogin::AlreadyMigrated(_) => {
                self.upstream
                    .settle_login_attempt(email, origin, Settled::Undecided);
                match self.authenticate(email, &password, true, origin).await? {
                    StoreAnswer::Authenticated(user) => Ok(logged_in(user, false)),
                    StoreAnswer::MfaRequired(challenge) => {
                        Ok(PasswordChecked::MfaRequired(challenge))
                    }
                    StoreAnswer::Blocked => Err(FrontendError::UserBlocked),
                    StoreAnswer::Throttled(seconds) => Err(FrontendError::RateLimited(seconds)),
                    // Counted by the store, like any failure it decides.
                    StoreAnswer::WrongPassword | StoreAnswer::NotFound => {
                        Err(FrontendError::InvalidCredentials)
                    }
                }
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
        if self.upstream.legacy_user(&email).await?.is_some() {
            return Err(FrontendError::EmailExists);
        }
        self.upstream.create_user(&email, &password, profile).await
    }

    /// A store user by id, or by email — falling back, while importing, to the legacy store
    /// (read-only: nothing is written, and the answer says not migrated).
    pub async fn get_user(&self, lookup: UserLookup) -> Result<(auth::User, bool), FrontendError> {
        match self.upstream.user(&lookup).await {
            Ok(user) => Ok((user, true)),
            Err(FrontendError::UserNotFound) => {
                let UserLookup::Email(email) = lookup else {
                    return Err(FrontendError::UserNotFound);
                };
                if self.mode.is_authoritative() {
                    return Err(FrontendError::UserNotFound);
                }
                let legacy = self
                    .upstream
                    .legacy_user(&email)
                    .await?
                    .ok_or(FrontendError::UserNotFound)?;
                Ok((legacy, false))
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
        self.upstream.change_password(user_id, &old, &new).await
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
            .upstream
            .user(&UserLookup::UserId(user_id.to_owned()))
            .await?;
        if user.email != new_email.normalized()
            && let Some(legacy) = self.upstream.legacy_user(&new_email).await?
            && legacy.legacy_id != user.legacy_id
        {
            return Err(FrontendError::EmailExists);
        }
        self.upstream.change_email(user_id, &new_email).await
    }

    /// A reset ticket for a store user, or while importing for a user only the legacy store has.
    #[tracing::instrument(name = "auth.create_password_reset_ticket", skip_all)]
    pub async fn create_password_reset_ticket(
        &self,
        email: Email,
    ) -> Result<(String, Option<prost_types::Timestamp>), FrontendError> {
        match self
            .upstream
            .create_password_reset_ticket(&email, None)
            .await
        {
            Err(FrontendError::UserNotFound) => {}
            answer => return answer,
        }
        if self.mode.is_authoritative() {
            return Err(FrontendError::UserNotFound);
        }
        let legacy = self
            .upstream
            .legacy_user(&email)
            .await?
            .ok_or(FrontendError::UserNotFound)?;
        self.upstream
            .create_password_reset_ticket(&email, Some(&legacy.legacy_id))
            .await
    }

    /// Set a new password with a reset ticket; a legacy-only user is migrated by it.
    #[tracing::instrument(name = "auth.reset_password", skip_all, fields(migrated))]
    pub async fn reset_password(
        &self,
        ticket: &str,
        new_password: Password,
    ) -> Result<(auth::User, bool), FrontendError> {
        let (user, migrated) = match self
            .upstream
            .redeem_password_reset(ticket, &new_password)
            .await?
        {
            ResetAnswer::Reset(user) => (user, false),
            ResetAnswer::NeedsImport { legacy_id, email } => {
                self.upstream
                    .migrate_on_reset(ticket, &new_password, legacy_id, email)
                    .await?
            }
        };
        tracing::Span::current().record("migrated", migrated);
        Ok((user, migrated))
    }

    pub async fn create_email_verification_ticket(
        &self,
        user_id: &str,
    ) -> Result<(String, Option<prost_types::Timestamp>), FrontendError> {
        self.upstream
            .create_email_verification_ticket(user_id)
            .await
    }

    pub async fn verify_email(&self, ticket: &str) -> Result<auth::User, FrontendError> {
        self.upstream.verify_email(ticket).await
    }

    /// Block or unblock a store user; their tokens stop (or start again) validating within
    /// `[frontend] token_subject_cache_ms`.
    pub async fn set_blocked(
        &self,
        user_id: &str,
        blocked: bool,
    ) -> Result<auth::User, FrontendError> {
        self.upstream
            .set_account_state(user_id, Some(blocked), None)
            .await
    }

    /// Ask a user to choose a new password (cleared by ChangePassword and ResetPassword).
    pub async fn require_password_change(
        &self,
        user_id: &str,
    ) -> Result<auth::User, FrontendError> {
        self.upstream
            .set_account_state(user_id, None, Some(true))
            .await
    }

    /// Set the named profile fields of a store user (the store validates the values).
    #[tracing::instrument(name = "auth.update_profile", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn update_profile(
        &self,
        user_id: &str,
        profile: auth::Profile,
        fields: Vec<String>,
    ) -> Result<auth::User, FrontendError> {
        self.upstream.update_profile(user_id, profile, fields).await
    }

    #[tracing::instrument(name = "auth.delete_user", skip_all, fields(trickle.user.id = %user_id))]
    pub async fn delete_user(&self, user_id: &str) -> Result<(), FrontendError> {
        self.upstream.delete_user(user_id).await
    }

    /// A token is valid when its signature, issuer, audience and lifetime are, and its user
    /// still exists and has not changed their password since it was issued (asked of the
    /// store, remembered for `[frontend] token_subject_cache_ms`).
    pub async fn validate_token(&self, token: &str) -> Result<Claims, FrontendError> {
        let claims = self
            .tokens
            .validate(token, self.clock.unix_seconds())
            .map_err(|e| match e {
                TokenError::Expired => FrontendError::TokenExpired,
                TokenError::Invalid => FrontendError::InvalidToken,
            })?;
        use crate::revocation::Cached;
        let subject = match self.subjects.get(&claims.sub) {
            Cached::Fresh(subject) => subject,
            Cached::RefreshAhead(subject) => {
                // Answered from memory now; the store's next answer is fetched meanwhile,
                // so that this user's next validation does not wait for it.
                let (upstream, subjects, user_id) = (
                    self.upstream.clone(),
                    self.subjects.clone(),
                    claims.sub.clone(),
                );
                tokio::spawn(async move {
                    if ask_subject(&upstream, &subjects, &user_id).await.is_err() {
                        subjects.refresh_failed(&user_id);
                    }
                });
                subject
            }
            Cached::Missing => ask_subject(&self.upstream, &self.subjects, &claims.sub).await?,
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

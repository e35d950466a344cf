//! The public flows (DESIGN §2): login with migration on first login, sign-up, user lookup
//! and tokens. The store is asked first and is authoritative for every user it has.

use crate::error::FrontendError;
use crate::mode::ModeWatch;
use crate::tokens::{Claims, PublicJwk, TokenError, TokenIssuer};
use tonic::transport::Channel;
use trickle_password::Password;
use trickle_proto::auth::v1 as auth;
use trickle_proto::migration::v1 as migration;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::userstore::v1 as store;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::Email;

/// A successful login.
#[derive(Debug)]
pub struct LoginSuccess {
    pub user: auth::User,
    pub access_token: String,
    pub expires_in: i64,
    /// True for the one login that moved the user from the legacy store.
    pub migrated: bool,
}

#[derive(Debug, Clone)]
pub struct AuthFlows {
    store: UserStoreClient<Channel>,
    coordinator: MigrationCoordinatorClient<Channel>,
    tokens: TokenIssuer,
    mode: ModeWatch,
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
    ) -> Self {
        Self {
            store,
            coordinator,
            tokens,
            mode,
        }
    }

    #[tracing::instrument(name = "auth.login", skip_all, fields(trickle.user.id, migrated))]
    pub async fn login(
        &self,
        email: Email,
        password: Password,
    ) -> Result<LoginSuccess, FrontendError> {
        let authoritative = self.mode.is_authoritative();
        // In IMPORT mode an unknown user goes on to the legacy store, whose check costs what
        // a wrong password costs; in AUTHORITATIVE mode the store pays a dummy hash instead.
        let (user, migrated) = match self.authenticate(&email, &password, authoritative).await? {
            StoreAnswer::Authenticated(user) => (user, false),
            StoreAnswer::WrongPassword => return Err(FrontendError::InvalidCredentials),
            StoreAnswer::NotFound if authoritative => {
                return Err(FrontendError::InvalidCredentials);
            }
            StoreAnswer::NotFound => self.migrate_on_login(&email, password).await?,
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
    ) -> Result<StoreAnswer, FrontendError> {
        let request = store::AuthenticateRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
            equalize_unknown,
        };
        let answer = self
            .store
            .clone()
            .authenticate(request)
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::StoreUnavailable))?
            .into_inner();
        use store::authenticate_response::Outcome;
        Ok(match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Authenticated), Some(user)) => StoreAnswer::Authenticated(user),
            (Ok(Outcome::WrongPassword), _) => StoreAnswer::WrongPassword,
            (Ok(Outcome::NotFound), _) => StoreAnswer::NotFound,
            _ => {
                return Err(FrontendError::Internal(
                    "user store answered Authenticate without an outcome".into(),
                ));
            }
        })
    }

    async fn migrate_on_login(
        &self,
        email: &Email,
        password: Password,
    ) -> Result<(auth::User, bool), FrontendError> {
        let request = migration::MigrateOnLoginRequest {
            email: email.display().to_owned(),
            password: password.expose_secret().to_owned(),
        };
        let answer = self
            .coordinator
            .clone()
            .migrate_on_login(request)
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::LegacyUnavailable))?
            .into_inner();
        use migration::migrate_on_login_response::Outcome;
        match (Outcome::try_from(answer.outcome), answer.user) {
            (Ok(Outcome::Migrated), Some(user)) => Ok((user, true)),
            (Ok(Outcome::AlreadyMigrated), Some(user)) => Ok((user, false)),
            (Ok(Outcome::LegacyRejected | Outcome::Conflict), _) => {
                Err(FrontendError::InvalidCredentials)
            }
            // The mode changed to AUTHORITATIVE since we last looked: the store alone decides,
            // at the cost of a wrong password.
            (Ok(Outcome::NotImporting), _) => {
                match self.authenticate(email, &password, true).await? {
                    StoreAnswer::Authenticated(user) => Ok((user, false)),
                    StoreAnswer::WrongPassword | StoreAnswer::NotFound => {
                        Err(FrontendError::InvalidCredentials)
                    }
                }
            }
            _ => Err(FrontendError::Internal(
                "coordinator answered MigrateOnLogin without an outcome".into(),
            )),
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
        let legacy = self
            .coordinator
            .clone()
            .find_legacy_user(migration::FindLegacyUserRequest {
                email: email.display().to_owned(),
            })
            .await
            .map_err(|s| FrontendError::from_upstream(&s, FrontendError::LegacyUnavailable))?
            .into_inner();
        if legacy.found {
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

    pub async fn get_user(
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

    pub fn validate_token(&self, token: &str) -> Result<Claims, FrontendError> {
        self.tokens.validate(token, now()).map_err(|e| match e {
            TokenError::Expired => FrontendError::TokenExpired,
            TokenError::Invalid => FrontendError::InvalidToken,
        })
    }

    pub fn jwks(&self) -> Vec<PublicJwk> {
        vec![self.tokens.jwk()]
    }
}

enum StoreAnswer {
    Authenticated(auth::User),
    WrongPassword,
    NotFound,
}

//! The tonic layer: proto ⇄ domain conversions only.

use crate::backend::LegacyBackend;
use crate::error::LegacyError;
use crate::sql::{HashProblem, LegacyUser, ListedUser, LoginOutcome, UnusableHash};
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::legacy::v1::{
    self as pb, CountUsersRequest, CountUsersResponse, EqualizeRefusedLoginRequest,
    EqualizeRefusedLoginResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, LoginRequest, LoginResponse, legacy_connector_server::LegacyConnector,
};
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct LegacyConnectorService {
    pub backend: LegacyBackend,
}

#[tonic::async_trait]
impl LegacyConnector for LegacyConnectorService {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest { email, password } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(LegacyError::InvalidRequest(violations.into_vec()).into());
        };
        let response = match self.backend.login(&email, password).await? {
            LoginOutcome::Authenticated(user) => LoginResponse {
                authenticated: true,
                user: Some(user_to_proto(user)),
                unusable_password: false,
            },
            LoginOutcome::Rejected => LoginResponse {
                authenticated: false,
                user: None,
                unusable_password: false,
            },
            LoginOutcome::UnusablePassword => LoginResponse {
                authenticated: false,
                user: None,
                unusable_password: true,
            },
        };
        Ok(Response::new(response))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let GetUserRequest { email } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(LegacyError::InvalidRequest(violations.into_vec()).into());
        };
        let user = self.backend.get_user(&email).await?;
        Ok(Response::new(GetUserResponse {
            found: user.is_some(),
            user: user.map(user_to_proto),
        }))
    }

    async fn equalize_refused_login(
        &self,
        request: Request<EqualizeRefusedLoginRequest>,
    ) -> Result<Response<EqualizeRefusedLoginResponse>, Status> {
        let EqualizeRefusedLoginRequest { email, lookup_only } = request.into_inner();
        let mut violations = Violations::default();
        let Some(email) = violations.check("email", Email::parse(&email)) else {
            return Err(LegacyError::InvalidRequest(violations.into_vec()).into());
        };
        self.backend
            .equalize_refused_login(&email, lookup_only)
            .await?;
        Ok(Response::new(EqualizeRefusedLoginResponse {}))
    }

    async fn count_users(
        &self,
        request: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        let CountUsersRequest {} = request.into_inner();
        let count = self.backend.count_users().await?;
        Ok(Response::new(CountUsersResponse { count }))
    }

    type ListUsersStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ListUsersResponse, Status>> + Send>,
    >;

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        let ListUsersRequest {
            after_legacy_id,
            batch_size,
        } = request.into_inner();
        let mut violations = Violations::default();
        let batch_size = match batch_size {
            0 => DEFAULT_LIST_BATCH,
            n if (1..=MAX_LIST_BATCH).contains(&n) => n,
            _ => {
                violations.add(
                    "batch_size",
                    format!("batch_size must be between 1 and {MAX_LIST_BATCH}"),
                );
                0
            }
        };
        if after_legacy_id.len() > 255 {
            violations.add(
                "after_legacy_id",
                "after_legacy_id must be at most 255 bytes",
            );
        }
        violations.verdict()?;
        let limit = usize::try_from(batch_size).unwrap_or(1000);
        // Fail fast (UNIMPLEMENTED, bad cursor) before the stream starts.
        let backend = self.backend.clone();
        let first = backend
            .list_page(
                (!after_legacy_id.is_empty()).then_some(after_legacy_id.as_str()),
                limit,
            )
            .await?;
        // Two pages in flight at most: the reader stays just ahead of the backfill.
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut page = first;
            loop {
                let last = page.last().map(|u| u.user.legacy_id.clone());
                let full = page.len() == limit;
                let users = page.into_iter().map(record_to_proto).collect();
                if sender.send(Ok(ListUsersResponse { users })).await.is_err() {
                    return; // the caller went away
                }
                let (Some(last), true) = (last, full) else {
                    return;
                };
                page = match backend.list_page(Some(&last), limit).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = sender.send(Err(e.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

const DEFAULT_LIST_BATCH: i32 = 1000;
const MAX_LIST_BATCH: i32 = 10_000;

fn record_to_proto(listed: ListedUser) -> pb::LegacyUserRecord {
    let ListedUser { user, hash } = listed;
    let (password_hash, hash_scheme, unsupported_reason, hash_status) = match hash {
        Ok((hash, scheme)) => (
            hash,
            scheme.to_owned(),
            String::new(),
            pb::HashStatus::Portable,
        ),
        Err(UnusableHash {
            problem,
            scheme,
            reason,
        }) => (
            String::new(),
            scheme.unwrap_or_default().to_owned(),
            reason,
            match problem {
                HashProblem::ConnectorOnly => pb::HashStatus::ConnectorOnly,
                HashProblem::Empty => pb::HashStatus::Empty,
                HashProblem::Locked => pb::HashStatus::Locked,
                HashProblem::UnknownFormat => pb::HashStatus::UnknownFormat,
                HashProblem::OverCostLimits => pb::HashStatus::OverCostLimits,
                HashProblem::UnreadableFactor => pb::HashStatus::UnreadableFactor,
            },
        ),
    };
    pb::LegacyUserRecord {
        user: Some(user_to_proto(user)),
        password_hash,
        hash_scheme,
        unsupported_reason,
        hash_status: hash_status.into(),
    }
}

fn user_to_proto(user: LegacyUser) -> pb::LegacyUser {
    let LegacyUser {
        legacy_id,
        email,
        email_verified,
        name,
        given_name,
        family_name,
        nickname,
        picture,
        blocked,
        roles,
        totp,
        user_metadata,
        app_metadata,
    } = user;
    pb::LegacyUser {
        legacy_id,
        email,
        email_verified,
        name: name.unwrap_or_default(),
        given_name: given_name.unwrap_or_default(),
        family_name: family_name.unwrap_or_default(),
        nickname: nickname.unwrap_or_default(),
        picture: picture.unwrap_or_default(),
        blocked,
        roles,
        totp: totp.map(|totp| pb::LegacyTotp {
            secret: totp.secret.expose_bytes().to_vec(),
            algorithm: totp.params.algorithm.as_str().to_owned(),
            digits: totp.params.digits,
            period_seconds: totp.params.period_seconds,
        }),
        user_metadata: (!user_metadata.is_empty())
            .then(|| trickle_proto::json::to_struct(user_metadata)),
        app_metadata: (!app_metadata.is_empty())
            .then(|| trickle_proto::json::to_struct(app_metadata)),
    }
}

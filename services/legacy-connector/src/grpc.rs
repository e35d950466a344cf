//! The tonic layer: proto ⇄ domain conversions only.

use crate::error::LegacyError;
use crate::sql::{LegacyUser, LoginOutcome, SqlBackend};
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::legacy::v1::{
    self as pb, CountUsersRequest, CountUsersResponse, GetUserRequest, GetUserResponse,
    LoginRequest, LoginResponse, legacy_connector_server::LegacyConnector,
};
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct LegacyConnectorService {
    pub backend: SqlBackend,
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
            },
            LoginOutcome::Rejected => LoginResponse {
                authenticated: false,
                user: None,
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

    async fn count_users(
        &self,
        request: Request<CountUsersRequest>,
    ) -> Result<Response<CountUsersResponse>, Status> {
        let CountUsersRequest {} = request.into_inner();
        let count = self.backend.count_users().await?;
        Ok(Response::new(CountUsersResponse { count }))
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
    }
}

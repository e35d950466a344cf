//! The tonic layer of the public API: validation of the wire format into domain values and
//! conversions back; the flows decide.

use crate::auth::{AuthFlows, LoginSuccess};
use crate::error::FrontendError;
use crate::tokens::Claims;
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::auth::v1::{
    self as pb, GetJwksRequest, GetJwksResponse, GetUserRequest, GetUserResponse, LoginRequest,
    LoginResponse, SignUpRequest, SignUpResponse, ValidateTokenRequest, ValidateTokenResponse,
    auth_service_server::AuthService, get_user_request::Lookup,
};
use trickle_proto::userstore::v1::get_user_request::Lookup as StoreLookup;
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct AuthApi {
    pub flows: AuthFlows,
}

fn invalid(violations: Violations) -> Status {
    FrontendError::InvalidRequest(violations.into_vec()).into()
}

#[tonic::async_trait]
impl AuthService for AuthApi {
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
            return Err(invalid(violations));
        };
        let LoginSuccess {
            user,
            access_token,
            expires_in,
            migrated,
        } = self.flows.login(email, password).await?;
        Ok(Response::new(LoginResponse {
            user: Some(user),
            access_token,
            expires_in,
            migrated,
        }))
    }

    async fn sign_up(
        &self,
        request: Request<SignUpRequest>,
    ) -> Result<Response<SignUpResponse>, Status> {
        let SignUpRequest {
            email,
            password,
            profile,
        } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        let weak = match password.check_new() {
            Err(e) if e.is_weak() => Some(e),
            other => {
                violations.check("password", other);
                None
            }
        };
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(invalid(violations));
        };
        if let Some(weak) = weak {
            let mut violations = Violations::default();
            violations.add("password", weak.to_string());
            return Err(FrontendError::WeakPassword(violations.into_vec()).into());
        }
        // The profile is validated by the store, which owns its limits.
        let user = self.flows.sign_up(email, password, profile).await?;
        Ok(Response::new(SignUpResponse { user: Some(user) }))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let GetUserRequest { lookup } = request.into_inner();
        let mut violations = Violations::default();
        let lookup = match lookup {
            Some(Lookup::UserId(user_id)) if !user_id.is_empty() && user_id.len() <= 64 => {
                StoreLookup::UserId(user_id)
            }
            Some(Lookup::UserId(_)) => {
                violations.add("user_id", "user_id must be a Trickle user id");
                return Err(invalid(violations));
            }
            Some(Lookup::Email(email)) => match violations.check("email", Email::parse(&email)) {
                Some(email) => StoreLookup::Email(email.normalized().to_owned()),
                None => return Err(invalid(violations)),
            },
            None => {
                violations.add("lookup", "set user_id or email");
                return Err(invalid(violations));
            }
        };
        let user = self.flows.get_user(lookup).await?;
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let ValidateTokenRequest { access_token } = request.into_inner();
        if access_token.is_empty() {
            let mut violations = Violations::default();
            violations.add("access_token", "access_token is required");
            return Err(invalid(violations));
        }
        let Claims {
            sub,
            email,
            legacy_id,
            iat,
            exp,
            iss,
            aud,
            jti: _,
        } = self.flows.validate_token(&access_token)?;
        Ok(Response::new(ValidateTokenResponse {
            claims: Some(pb::Claims {
                sub,
                email,
                legacy_id,
                iat,
                exp,
                iss,
                aud,
            }),
        }))
    }

    async fn get_jwks(
        &self,
        request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let GetJwksRequest {} = request.into_inner();
        let keys = self
            .flows
            .jwks()
            .into_iter()
            .map(|key| pb::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: key.x,
                kid: key.kid,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(GetJwksResponse { keys }))
    }
}

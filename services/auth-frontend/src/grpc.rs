//! The tonic layer of the public API: validation of the wire format into domain values and
//! conversions back; the flows decide.

use crate::auth::{AttemptOrigin, AuthFlows, LoginAnswer, LoginSuccess};
use crate::error::FrontendError;
use crate::tokens::Claims;
use crate::upstream::UserLookup;
use tonic::{Request, Response, Status};
use trickle_password::Password;
use trickle_proto::auth::v1::{
    self as pb, BlockUserRequest, BlockUserResponse, ChangeEmailRequest, ChangeEmailResponse,
    ChangePasswordRequest, ChangePasswordResponse, ConfirmTotpRequest, ConfirmTotpResponse,
    CreateEmailVerificationTicketRequest, CreateEmailVerificationTicketResponse,
    CreatePasswordResetTicketRequest, CreatePasswordResetTicketResponse, DeleteUserRequest,
    DeleteUserResponse, EnrollTotpRequest, EnrollTotpResponse, GetJwksRequest, GetJwksResponse,
    GetUserRequest, GetUserResponse, LoginRequest, LoginResponse, RemoveFactorRequest,
    RemoveFactorResponse, RequirePasswordChangeRequest, RequirePasswordChangeResponse,
    ResetPasswordRequest, ResetPasswordResponse, SignUpRequest, SignUpResponse, UnblockUserRequest,
    UnblockUserResponse, UpdateAppMetadataRequest, UpdateAppMetadataResponse, UpdateProfileRequest,
    UpdateProfileResponse, ValidateTokenRequest, ValidateTokenResponse, VerifyEmailRequest,
    VerifyEmailResponse, VerifyMfaRequest, auth_service_server::AuthService,
    get_user_request::Lookup,
};
use trickle_proto::json::to_struct as struct_of;
use trickle_service_kit::Email;
use trickle_service_kit::rpc::Violations;

#[derive(Debug, Clone)]
pub(crate) struct AuthApi {
    pub flows: AuthFlows,
}

fn invalid(violations: Violations) -> Status {
    FrontendError::InvalidRequest(violations.into_vec()).into()
}

fn login_response(success: LoginSuccess) -> LoginResponse {
    let LoginSuccess {
        user,
        access_token,
        expires_in,
        migrated,
    } = success;
    LoginResponse {
        user: Some(user),
        access_token,
        expires_in,
        migrated,
        mfa_required: false,
        mfa_challenge: String::new(),
    }
}

/// A second-factor code: 6 to 8 digits, or a recovery code (16 characters, dashes and
/// spaces allowed). The store decides which; here only the size and characters.
fn check_code(violations: &mut Violations, code: &str) {
    let code = code.trim();
    if code.is_empty() {
        violations.add("code", "is required");
    } else if code.len() > 64
        || !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ')
    {
        violations.add(
            "code",
            "must be the authenticator's 6 to 8 digit code or a recovery code",
        );
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client_id = client_id(&request);
        let LoginRequest {
            email,
            password,
            attempt_source,
        } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let password = Password::new(password);
        violations.check("password", password.check_presented());
        if attempt_source.len() > 256 || attempt_source.chars().any(char::is_control) {
            violations.add(
                "attempt_source",
                "must be at most 256 bytes without control characters",
            );
        }
        let Some(email) = email.filter(|_| violations.is_empty()) else {
            return Err(invalid(violations));
        };
        let origin = AttemptOrigin {
            client_id,
            source: attempt_source,
        };
        Ok(Response::new(
            match self.flows.login(email, password, origin).await? {
                LoginAnswer::LoggedIn(success) => login_response(success),
                LoginAnswer::MfaRequired { challenge } => LoginResponse {
                    mfa_required: true,
                    mfa_challenge: challenge,
                    ..LoginResponse::default()
                },
            },
        ))
    }

    async fn verify_mfa(
        &self,
        request: Request<VerifyMfaRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client_id = client_id(&request);
        let VerifyMfaRequest {
            mfa_challenge,
            code,
        } = request.into_inner();
        let mut violations = Violations::default();
        if mfa_challenge.is_empty() {
            violations.add("mfa_challenge", "is required (LoginResponse.mfa_challenge)");
        } else if mfa_challenge.len() > 256 {
            violations.add("mfa_challenge", "is not a challenge Trickle issued");
        }
        check_code(&mut violations, &code);
        violations.verdict()?;
        let origin = AttemptOrigin {
            client_id,
            source: String::new(),
        };
        let success = self
            .flows
            .verify_mfa(&mfa_challenge, code.trim(), origin)
            .await?;
        Ok(Response::new(login_response(success)))
    }

    async fn enroll_totp(
        &self,
        request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        let EnrollTotpRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        Ok(Response::new(self.flows.enroll_totp(&user_id).await?))
    }

    async fn confirm_totp(
        &self,
        request: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        let ConfirmTotpRequest { user_id, code } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        check_code(&mut violations, &code);
        violations.verdict()?;
        let (user, recovery_codes) = self.flows.confirm_totp(&user_id, code.trim()).await?;
        Ok(Response::new(ConfirmTotpResponse {
            user: Some(user),
            recovery_codes,
        }))
    }

    async fn update_profile(
        &self,
        request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        let UpdateProfileRequest {
            user_id,
            profile,
            update_mask,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() {
            violations.add("update_mask", "name the fields to change");
        }
        for path in &paths {
            match path.as_str() {
                "name" | "given_name" | "family_name" | "nickname" | "picture"
                | "user_metadata" => {}
                "app_metadata" => violations.add(
                    "update_mask",
                    "app_metadata is for applications: UpdateAppMetadata",
                ),
                other => violations.add(
                    "update_mask",
                    format!(
                        "{:?} is not a field a user may change (name, given_name, family_name, nickname, picture, user_metadata)",
                        other.chars().take(64).collect::<String>()
                    ),
                ),
            }
        }
        violations.verdict()?;
        let user = self
            .flows
            .update_profile(&user_id, profile.unwrap_or_default(), paths)
            .await?;
        Ok(Response::new(UpdateProfileResponse { user: Some(user) }))
    }

    async fn update_app_metadata(
        &self,
        request: Request<UpdateAppMetadataRequest>,
    ) -> Result<Response<UpdateAppMetadataResponse>, Status> {
        let UpdateAppMetadataRequest {
            user_id,
            app_metadata,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let profile = pb::Profile {
            app_metadata: Some(app_metadata.unwrap_or_default()),
            ..pb::Profile::default()
        };
        let user = self
            .flows
            .update_profile(&user_id, profile, vec!["app_metadata".into()])
            .await?;
        Ok(Response::new(UpdateAppMetadataResponse {
            user: Some(user),
        }))
    }

    async fn remove_factor(
        &self,
        request: Request<RemoveFactorRequest>,
    ) -> Result<Response<RemoveFactorResponse>, Status> {
        let RemoveFactorRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let user = self.flows.remove_factor(&user_id).await?;
        Ok(Response::new(RemoveFactorResponse { user: Some(user) }))
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
        violations.check_new_password("password", &password);
        let email = violations.verdict_with(email)?;
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
                UserLookup::UserId(user_id)
            }
            Some(Lookup::UserId(_)) => {
                violations.add("user_id", "user_id must be a Trickle user id");
                return Err(invalid(violations));
            }
            Some(Lookup::Email(email)) => match violations.check("email", Email::parse(&email)) {
                Some(email) => UserLookup::Email(email),
                None => return Err(invalid(violations)),
            },
            None => {
                violations.add("lookup", "set user_id or email");
                return Err(invalid(violations));
            }
        };
        let (user, migrated) = self.flows.get_user(lookup).await?;
        Ok(Response::new(GetUserResponse {
            user: Some(user),
            migrated,
        }))
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
            password_change_required,
            amr,
            profile,
        } = self.flows.validate_token(&access_token).await?;
        Ok(Response::new(ValidateTokenResponse {
            claims: Some(pb::Claims {
                sub,
                email,
                legacy_id,
                iat,
                exp,
                iss,
                aud,
                password_change_required,
                profile: (!profile.is_empty()).then(|| struct_of(profile)),
                amr,
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

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let ChangePasswordRequest {
            user_id,
            old_password,
            new_password,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let old_password = Password::new(old_password);
        violations.check("old_password", old_password.check_presented());
        let new_password = Password::new(new_password);
        violations.check_new_password("new_password", &new_password);
        violations.verdict()?;
        let user = self
            .flows
            .change_password(&user_id, old_password, new_password)
            .await?;
        Ok(Response::new(ChangePasswordResponse { user: Some(user) }))
    }

    async fn change_email(
        &self,
        request: Request<ChangeEmailRequest>,
    ) -> Result<Response<ChangeEmailResponse>, Status> {
        let ChangeEmailRequest { user_id, new_email } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        let email = violations.check("new_email", Email::parse(&new_email));
        let email = violations.verdict_with(email)?;
        let user = self.flows.change_email(&user_id, email).await?;
        Ok(Response::new(ChangeEmailResponse { user: Some(user) }))
    }

    async fn create_password_reset_ticket(
        &self,
        request: Request<CreatePasswordResetTicketRequest>,
    ) -> Result<Response<CreatePasswordResetTicketResponse>, Status> {
        let CreatePasswordResetTicketRequest { email } = request.into_inner();
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(&email));
        let email = violations.verdict_with(email)?;
        let (ticket, expires_at) = self.flows.create_password_reset_ticket(email).await?;
        Ok(Response::new(CreatePasswordResetTicketResponse {
            ticket,
            expires_at,
        }))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let ResetPasswordRequest {
            ticket,
            new_password,
        } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("ticket", &ticket, 256);
        let password = Password::new(new_password);
        violations.check_new_password("new_password", &password);
        violations.verdict()?;
        let (user, migrated) = self.flows.reset_password(&ticket, password).await?;
        Ok(Response::new(ResetPasswordResponse {
            user: Some(user),
            migrated,
        }))
    }

    async fn create_email_verification_ticket(
        &self,
        request: Request<CreateEmailVerificationTicketRequest>,
    ) -> Result<Response<CreateEmailVerificationTicketResponse>, Status> {
        let CreateEmailVerificationTicketRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let (ticket, expires_at) = self
            .flows
            .create_email_verification_ticket(&user_id)
            .await?;
        Ok(Response::new(CreateEmailVerificationTicketResponse {
            ticket,
            expires_at,
        }))
    }

    async fn verify_email(
        &self,
        request: Request<VerifyEmailRequest>,
    ) -> Result<Response<VerifyEmailResponse>, Status> {
        let VerifyEmailRequest { ticket } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("ticket", &ticket, 256);
        violations.verdict()?;
        let user = self.flows.verify_email(&ticket).await?;
        Ok(Response::new(VerifyEmailResponse { user: Some(user) }))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let DeleteUserRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        self.flows.delete_user(&user_id).await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn block_user(
        &self,
        request: Request<BlockUserRequest>,
    ) -> Result<Response<BlockUserResponse>, Status> {
        let BlockUserRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let user = self.flows.set_blocked(&user_id, true).await?;
        Ok(Response::new(BlockUserResponse { user: Some(user) }))
    }

    async fn unblock_user(
        &self,
        request: Request<UnblockUserRequest>,
    ) -> Result<Response<UnblockUserResponse>, Status> {
        let UnblockUserRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let user = self.flows.set_blocked(&user_id, false).await?;
        Ok(Response::new(UnblockUserResponse { user: Some(user) }))
    }

    async fn require_password_change(
        &self,
        request: Request<RequirePasswordChangeRequest>,
    ) -> Result<Response<RequirePasswordChangeResponse>, Status> {
        let RequirePasswordChangeRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let user = self.flows.require_password_change(&user_id).await?;
        Ok(Response::new(RequirePasswordChangeResponse {
            user: Some(user),
        }))
    }
}

/// The caller's identity when the public API requires client certificates: the SHA-256
/// fingerprint of the certificate it presented (empty without TLS).
fn client_id<T>(request: &Request<T>) -> String {
    use sha2::Digest as _;
    request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .map(|leaf| {
            let digest = sha2::Sha256::digest(leaf.as_ref());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        })
        .unwrap_or_default()
}

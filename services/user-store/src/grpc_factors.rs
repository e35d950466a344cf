//! The tonic layer of `trickle.userstore.v1.UserFactors`: proto ⇄ domain, nothing else.

use crate::error::StoreError;
use crate::grpc::user_to_proto;
use crate::users::{ClientId, MfaMethod, MfaOutcome, Users};
use tonic::{Request, Response, Status};
use trickle_password::totp::{Totp, TotpAlgorithm, TotpParams, TotpSecret};
use trickle_proto::auth::v1 as auth;
use trickle_proto::userstore::v1::{
    ConfirmTotpRequest, ConfirmTotpResponse, EnrollTotpRequest, EnrollTotpResponse,
    RemoveFactorRequest, RemoveFactorResponse, VerifyMfaRequest, VerifyMfaResponse,
    user_factors_server::UserFactors, verify_mfa_response,
};
use trickle_service_kit::rpc::Violations;

/// Longest code accepted: a recovery code typed with separators (19) and some slack.
const MAX_CODE_BYTES: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct UserFactorsService {
    pub users: Users,
}

/// A legacy factor as imports carry it; a bad one is a field violation (the import is
/// refused rather than made without its factor).
pub(crate) fn totp_from_proto(
    totp: Option<trickle_proto::legacy::v1::LegacyTotp>,
    violations: &mut Violations,
) -> Option<Totp> {
    let trickle_proto::legacy::v1::LegacyTotp {
        secret,
        algorithm,
        digits,
        period_seconds,
    } = totp?;
    let algorithm = if algorithm.is_empty() {
        Some(TotpAlgorithm::Sha1)
    } else {
        TotpAlgorithm::parse(&algorithm)
    };
    let Some(algorithm) = algorithm else {
        violations.add("totp.algorithm", "must be SHA1, SHA256 or SHA512");
        return None;
    };
    let params = TotpParams {
        algorithm,
        digits: if digits == 0 { 6 } else { digits },
        period_seconds: if period_seconds == 0 {
            30
        } else {
            period_seconds
        },
    };
    match TotpSecret::from_bytes(secret).and_then(|secret| Totp::new(secret, params)) {
        Ok(totp) => Some(totp),
        Err(e) => {
            violations.add("totp", e.to_string());
            None
        }
    }
}

fn check_code(violations: &mut Violations, code: &str) {
    if code.trim().is_empty() {
        violations.add("code", "is required");
    } else if code.len() > MAX_CODE_BYTES || code.chars().any(char::is_control) {
        violations.add("code", "must be a 6 to 8 digit code or a recovery code");
    }
}

#[tonic::async_trait]
impl UserFactors for UserFactorsService {
    async fn verify_mfa(
        &self,
        request: Request<VerifyMfaRequest>,
    ) -> Result<Response<VerifyMfaResponse>, Status> {
        let VerifyMfaRequest {
            mfa_challenge,
            code,
            client_id,
        } = request.into_inner();
        let mut violations = Violations::default();
        if mfa_challenge.is_empty() {
            violations.add("mfa_challenge", "is required");
        } else if mfa_challenge.len() > 256 {
            violations.add("mfa_challenge", "is not a challenge");
        }
        check_code(&mut violations, &code);
        let client = violations.check("client_id", ClientId::parse(&client_id));
        let (Some(client), true) = (client, violations.is_empty()) else {
            return Err(StoreError::InvalidRequest(violations.into_vec()).into());
        };
        use verify_mfa_response::{Method, Outcome};
        let mut response = VerifyMfaResponse::default();
        let outcome = match self
            .users
            .verify_mfa(&mfa_challenge, &code, client.as_ref())
            .await?
        {
            MfaOutcome::Verified {
                user,
                method,
                migrated,
            } => {
                response.user = Some(user_to_proto(user));
                response.migrated = migrated;
                response.method = match method {
                    MfaMethod::Totp => Method::Totp,
                    MfaMethod::RecoveryCode => Method::RecoveryCode,
                }
                .into();
                Outcome::Verified
            }
            MfaOutcome::WrongCode => Outcome::WrongCode,
            MfaOutcome::ChallengeInvalid => Outcome::ChallengeInvalid,
            MfaOutcome::Throttled { retry_after } => {
                response.retry_after_seconds =
                    i64::try_from(retry_after.as_secs().max(1)).unwrap_or(i64::MAX);
                Outcome::Throttled
            }
            MfaOutcome::Blocked => Outcome::Blocked,
        };
        response.outcome = outcome.into();
        Ok(Response::new(response))
    }

    async fn enroll_totp(
        &self,
        request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        let EnrollTotpRequest { user_id } = request.into_inner();
        let mut violations = Violations::default();
        violations.check_id("user_id", &user_id, 64);
        violations.verdict()?;
        let enrollment = self.users.enroll_totp(&user_id).await?;
        Ok(Response::new(EnrollTotpResponse {
            enrollment: Some(auth::EnrollTotpResponse {
                secret: enrollment.secret.to_base32().to_string(),
                otpauth_uri: enrollment.otpauth_uri,
                algorithm: enrollment.params.algorithm.as_str().to_owned(),
                digits: enrollment.params.digits,
                period_seconds: enrollment.params.period_seconds,
            }),
        }))
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
        let (user, recovery_codes) = self.users.confirm_totp(&user_id, code.trim()).await?;
        Ok(Response::new(ConfirmTotpResponse {
            user: Some(user_to_proto(user)),
            recovery_codes,
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
        let user = self.users.remove_factor(&user_id).await?;
        Ok(Response::new(RemoveFactorResponse {
            user: Some(user_to_proto(user)),
        }))
    }
}

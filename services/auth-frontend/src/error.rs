//! What the public API can answer besides success, and its one mapping to gRPC.

use tonic::{Code, Status};
use trickle_service_kit::rpc::{self, FieldViolation, reason};

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("invalid request")]
    InvalidRequest(Vec<FieldViolation>),
    #[error("password does not meet the policy")]
    WeakPassword(Vec<FieldViolation>),
    /// Unknown email and wrong password alike (invariant 4).
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("a user with this email already exists")]
    EmailExists,
    #[error("user not found")]
    UserNotFound,
    /// The password was right; the account is blocked.
    #[error("this account is blocked")]
    UserBlocked,
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("the legacy store is unavailable")]
    LegacyUnavailable,
    #[error("the user store is unavailable")]
    StoreUnavailable,
    /// `retry_after`: the upstream's RetryInfo delay, passed on to the caller.
    #[error("too many requests in progress")]
    Overloaded {
        retry_after: Option<std::time::Duration>,
    },
    /// The account changed while the request was handled (a reset during a password
    /// change): retry.
    #[error("the account changed meanwhile")]
    ConcurrentChange,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the ticket is not valid")]
    TicketInvalid,
    #[error("too many failed logins; retry later")]
    RateLimited(u64),
    #[error("the ticket has already been used")]
    TicketUsed,
    #[error("the ticket has expired")]
    TicketExpired,
    /// AUTHORITATIVE mode and the operation needs the legacy store.
    #[error("the migration is complete")]
    LegacyDisabled,
    /// A wrong or already used second-factor code.
    #[error("the code is wrong")]
    InvalidMfaCode,
    /// The login's challenge is unknown, used, expired or spent: log in again.
    #[error("the second-factor challenge is not valid")]
    MfaChallengeInvalid,
    #[error("the user already has an active second factor")]
    FactorExists,
    #[error("the user has no second factor")]
    FactorNotFound,
    #[error("second factors are not configured")]
    FactorsNotConfigured,
}

impl FrontendError {
    /// Which upstream an "unavailable" error stands for, for the log.
    fn upstream(&self) -> &'static str {
        match self {
            FrontendError::StoreUnavailable => "user-store",
            FrontendError::LegacyUnavailable => "migration-coordinator",
            _ => "upstream",
        }
    }

    /// Classify an error from the user-store or the coordinator. They speak the same
    /// vocabulary (reasons from `trickle_service_kit::rpc::reason`), so their reason decides.
    pub fn from_upstream(status: &Status, unavailable: FrontendError) -> Self {
        let reason = rpc::reason_of(status);
        match (status.code(), reason.as_deref()) {
            (Code::AlreadyExists, Some(reason::FACTOR_EXISTS)) => FrontendError::FactorExists,
            (Code::AlreadyExists, _) => FrontendError::EmailExists,
            (Code::Unauthenticated, Some(reason::INVALID_MFA_CODE)) => {
                FrontendError::InvalidMfaCode
            }
            (Code::FailedPrecondition, Some(reason::FACTOR_NOT_FOUND)) => {
                FrontendError::FactorNotFound
            }
            (Code::FailedPrecondition, Some(reason::FACTORS_NOT_CONFIGURED)) => {
                FrontendError::FactorsNotConfigured
            }
            (Code::Aborted, Some(reason::CONCURRENT_CHANGE)) => FrontendError::ConcurrentChange,
            (Code::NotFound, _) => FrontendError::UserNotFound,
            (Code::ResourceExhausted, _) => FrontendError::Overloaded {
                retry_after: rpc::retry_delay_of(status),
            },
            (Code::Unavailable, Some(reason::LEGACY_UNAVAILABLE | reason::LEGACY_CONFIG)) => {
                FrontendError::LegacyUnavailable
            }
            (Code::Unavailable, Some(reason::STORE_UNAVAILABLE)) => FrontendError::StoreUnavailable,
            (Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled, _) => {
                // The upstream did not answer for itself (no connection, a deadline, a
                // reset): the caller only hears "unavailable", so the cause goes to the log.
                // Transport and deadline texts carry no credentials.
                tracing::warn!(
                    upstream = unavailable.upstream(),
                    code = ?status.code(),
                    message = status.message(),
                    "upstream call failed"
                );
                unavailable
            }
            (Code::InvalidArgument, Some(reason::TICKET_INVALID)) => FrontendError::TicketInvalid,
            (Code::FailedPrecondition, Some(reason::TICKET_USED)) => FrontendError::TicketUsed,
            (Code::FailedPrecondition, Some(reason::TICKET_EXPIRED)) => {
                FrontendError::TicketExpired
            }
            (Code::FailedPrecondition, Some(reason::LEGACY_DISABLED)) => {
                FrontendError::LegacyDisabled
            }
            (Code::InvalidArgument, _) => {
                let violations = rpc::field_violations(status);
                if reason.as_deref() == Some(reason::WEAK_PASSWORD) {
                    FrontendError::WeakPassword(violations)
                } else {
                    FrontendError::InvalidRequest(violations)
                }
            }
            (code, _) => {
                FrontendError::Internal(format!("upstream answered {code:?}: {}", status.message()))
            }
        }
    }
}

impl From<FrontendError> for Status {
    fn from(error: FrontendError) -> Self {
        match error {
            FrontendError::InvalidRequest(violations) => {
                rpc::invalid_argument(reason::INVALID_REQUEST, &violations)
            }
            FrontendError::WeakPassword(violations) => {
                rpc::invalid_argument(reason::WEAK_PASSWORD, &violations)
            }
            FrontendError::InvalidCredentials => rpc::status(
                Code::Unauthenticated,
                reason::INVALID_CREDENTIALS,
                "invalid email or password",
            ),
            FrontendError::EmailExists => rpc::status(
                Code::AlreadyExists,
                reason::EMAIL_EXISTS,
                "a user with this email already exists",
            ),
            FrontendError::UserNotFound => {
                rpc::status(Code::NotFound, reason::USER_NOT_FOUND, "no such user")
            }
            FrontendError::UserBlocked => rpc::status(
                Code::PermissionDenied,
                reason::USER_BLOCKED,
                "this account is blocked",
            ),
            FrontendError::InvalidToken => rpc::status(
                Code::Unauthenticated,
                reason::INVALID_TOKEN,
                "the token is not valid",
            ),
            FrontendError::TokenExpired => rpc::status(
                Code::Unauthenticated,
                reason::TOKEN_EXPIRED,
                "the token has expired",
            ),
            FrontendError::LegacyUnavailable => rpc::status(
                Code::Unavailable,
                reason::LEGACY_UNAVAILABLE,
                "the legacy user store cannot be reached to check this user; retry later",
            ),
            FrontendError::StoreUnavailable => rpc::status(
                Code::Unavailable,
                reason::STORE_UNAVAILABLE,
                "the user store is unavailable; retry later",
            ),
            FrontendError::Overloaded { retry_after } => rpc::overloaded(
                retry_after,
                "too many logins in progress; retry shortly (after the RetryInfo delay, when given)",
            ),
            FrontendError::ConcurrentChange => rpc::status(
                Code::Aborted,
                reason::CONCURRENT_CHANGE,
                "the account changed meanwhile (a password reset?); read it again and retry",
            ),
            FrontendError::RateLimited(seconds) => rpc::rate_limited(
                std::time::Duration::from_secs(seconds),
                "too many failed logins for this email; retry after the delay in RetryInfo",
            ),
            FrontendError::TicketInvalid => rpc::status(
                Code::InvalidArgument,
                reason::TICKET_INVALID,
                "the ticket is not valid",
            ),
            FrontendError::TicketUsed => rpc::status(
                Code::FailedPrecondition,
                reason::TICKET_USED,
                "the ticket has already been used",
            ),
            FrontendError::TicketExpired => rpc::status(
                Code::FailedPrecondition,
                reason::TICKET_EXPIRED,
                "the ticket has expired",
            ),
            FrontendError::LegacyDisabled => rpc::status(
                Code::FailedPrecondition,
                reason::LEGACY_DISABLED,
                "the migration is complete: this ticket was for a user who never moved from the legacy store",
            ),
            FrontendError::InvalidMfaCode => rpc::status(
                Code::Unauthenticated,
                reason::INVALID_MFA_CODE,
                "the code is wrong or was already used",
            ),
            FrontendError::MfaChallengeInvalid => rpc::status(
                Code::Unauthenticated,
                reason::MFA_CHALLENGE_INVALID,
                "the second-factor challenge is not valid (used, expired or too many wrong codes); log in again",
            ),
            FrontendError::FactorExists => rpc::status(
                Code::AlreadyExists,
                reason::FACTOR_EXISTS,
                "the user already has an active second factor; remove it first",
            ),
            FrontendError::FactorNotFound => rpc::status(
                Code::FailedPrecondition,
                reason::FACTOR_NOT_FOUND,
                "the user has no second factor (EnrollTotp first)",
            ),
            FrontendError::FactorsNotConfigured => rpc::status(
                Code::FailedPrecondition,
                reason::FACTORS_NOT_CONFIGURED,
                "second factors are not configured on this deployment ([store] factor_key)",
            ),
            FrontendError::Internal(message) => {
                tracing::error!(%message, "auth-frontend internal error");
                rpc::status(Code::Internal, reason::INTERNAL, "internal error")
            }
        }
    }
}

//! Everything that can go wrong in the user-store, and its one mapping to gRPC.

use tonic::{Code, Status};
use trickle_service_kit::rpc::{self, BadRequest, FieldViolation, reason};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid request")]
    InvalidRequest(Vec<FieldViolation>),
    #[error("password does not meet the policy")]
    WeakPassword(Vec<FieldViolation>),
    #[error("a user with this email already exists")]
    EmailExists,
    #[error("user not found")]
    NotFound,
    #[error("the ticket is not valid")]
    TicketInvalid,
    #[error("the ticket has already been used")]
    TicketUsed,
    #[error("the ticket has expired")]
    TicketExpired,
    /// `retry_after`: when the hashing pool expects room again, sent as RetryInfo.
    #[error("the password hashing queue is full")]
    Overloaded { retry_after: std::time::Duration },
    #[error("the store database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("store database error")]
    Database(#[source] sqlx::Error),
    #[error("the account changed while this request was being handled")]
    ConcurrentChange,
    #[error("the second-factor code is wrong")]
    InvalidMfaCode,
    #[error("the user already has an active second factor")]
    FactorExists,
    #[error("the user has no second factor")]
    FactorNotFound,
    #[error("no key to seal second-factor secrets is configured")]
    FactorsNotConfigured,
    #[error("the events after this position were pruned")]
    EventsPruned { oldest_position: i64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<BadRequest> for StoreError {
    fn from(bad: BadRequest) -> Self {
        match bad {
            BadRequest::Invalid(violations) => StoreError::InvalidRequest(violations),
            BadRequest::WeakPassword(violations) => StoreError::WeakPassword(violations),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if trickle_service_kit::db::is_unavailable(&error) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Database(error)
        }
    }
}

impl From<trickle_password::PoolError> for StoreError {
    fn from(error: trickle_password::PoolError) -> Self {
        match error {
            trickle_password::PoolError::Saturated { retry_after } => {
                StoreError::Overloaded { retry_after }
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidRequest(violations) => {
                rpc::invalid_argument(reason::INVALID_REQUEST, &violations)
            }
            StoreError::WeakPassword(violations) => {
                rpc::invalid_argument(reason::WEAK_PASSWORD, &violations)
            }
            StoreError::EmailExists => rpc::status(
                Code::AlreadyExists,
                reason::EMAIL_EXISTS,
                "a user with this email already exists",
            ),
            StoreError::NotFound => {
                rpc::status(Code::NotFound, reason::USER_NOT_FOUND, "no such user")
            }
            StoreError::TicketInvalid => rpc::status(
                Code::InvalidArgument,
                reason::TICKET_INVALID,
                "the ticket is not valid",
            ),
            StoreError::TicketUsed => rpc::status(
                Code::FailedPrecondition,
                reason::TICKET_USED,
                "the ticket has already been used",
            ),
            StoreError::TicketExpired => rpc::status(
                Code::FailedPrecondition,
                reason::TICKET_EXPIRED,
                "the ticket has expired",
            ),
            StoreError::Overloaded { retry_after } => rpc::overloaded(
                Some(retry_after),
                "too many password checks in progress; retry after the RetryInfo delay",
            ),
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "store database unavailable");
                rpc::status(
                    Code::Unavailable,
                    reason::STORE_UNAVAILABLE,
                    "the user store database is unavailable",
                )
            }
            StoreError::Database(e) => {
                tracing::error!(error = %e, "store database error");
                rpc::status(
                    Code::Internal,
                    reason::INTERNAL,
                    "user store database error",
                )
            }
            StoreError::ConcurrentChange => rpc::status(
                Code::Aborted,
                reason::CONCURRENT_CHANGE,
                "the account changed meanwhile (a password reset?); retry",
            ),
            StoreError::InvalidMfaCode => rpc::status(
                Code::Unauthenticated,
                reason::INVALID_MFA_CODE,
                "the code is wrong",
            ),
            StoreError::FactorExists => rpc::status(
                Code::AlreadyExists,
                reason::FACTOR_EXISTS,
                "the user already has an active second factor; remove it first",
            ),
            StoreError::FactorNotFound => rpc::status(
                Code::FailedPrecondition,
                reason::FACTOR_NOT_FOUND,
                "the user has no second factor (EnrollTotp first)",
            ),
            StoreError::FactorsNotConfigured => rpc::status(
                Code::FailedPrecondition,
                reason::FACTORS_NOT_CONFIGURED,
                "second factors are not configured: set [store] factor_key or factor_keys_dir",
            ),
            StoreError::EventsPruned { oldest_position } => rpc::status_with_metadata(
                Code::FailedPrecondition,
                reason::EVENTS_PRUNED,
                [("oldest_position".to_owned(), oldest_position.to_string())].into(),
                format!(
                    "events before position {oldest_position} are past the store's retention \
                     ([store] events_retention_hours); resume from {} to skip them",
                    oldest_position - 1
                ),
            ),
            StoreError::Internal(message) => {
                tracing::error!(%message, "user store internal error");
                rpc::status(
                    Code::Internal,
                    reason::INTERNAL,
                    "user store internal error",
                )
            }
        }
    }
}

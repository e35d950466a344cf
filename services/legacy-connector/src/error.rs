//! What can go wrong reading the legacy store, and its one mapping to gRPC. Nothing here
//! may ever become "wrong password": a store we could not ask is UNAVAILABLE.

use tonic::{Code, Status};
use trickle_service_kit::rpc::{self, FieldViolation, reason};

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("invalid request")]
    InvalidRequest(Vec<FieldViolation>),
    #[error("the legacy database did not answer within {0} ms")]
    Timeout(u64),
    #[error("the legacy database is unavailable: {0}")]
    Database(#[source] sqlx::Error),
    /// The configured query or hash format does not fit the legacy data.
    #[error("legacy connector configuration error: {0}")]
    Config(String),
    #[error("count_users is not configured")]
    CountUnsupported,
    #[error("list_users is not configured")]
    ListUnsupported,
    /// `retry_after`: when the hashing pool expects room again, sent as RetryInfo.
    #[error("the password verification queue is full")]
    Overloaded { retry_after: std::time::Duration },
    /// The legacy web service failed or answered something other than yes or no.
    #[error("legacy web service: {0}")]
    Http(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<trickle_password::PoolError> for LegacyError {
    fn from(error: trickle_password::PoolError) -> Self {
        match error {
            trickle_password::PoolError::Saturated { retry_after } => {
                LegacyError::Overloaded { retry_after }
            }
            other => LegacyError::Internal(other.to_string()),
        }
    }
}

impl From<LegacyError> for Status {
    fn from(error: LegacyError) -> Self {
        match error {
            LegacyError::InvalidRequest(violations) => {
                rpc::invalid_argument(reason::INVALID_REQUEST, &violations)
            }
            LegacyError::Timeout(0) => rpc::status(
                Code::Unavailable,
                reason::LEGACY_UNAVAILABLE,
                "the legacy web service did not answer in time",
            ),
            LegacyError::Timeout(ms) => {
                tracing::warn!(timeout_ms = ms, "legacy database query timed out");
                rpc::status(
                    Code::Unavailable,
                    reason::LEGACY_UNAVAILABLE,
                    format!("the legacy database did not answer within {ms} ms"),
                )
            }
            LegacyError::Database(e) => {
                tracing::warn!(error = %e, "legacy database error");
                rpc::status(
                    Code::Unavailable,
                    reason::LEGACY_UNAVAILABLE,
                    "the legacy database is unavailable",
                )
            }
            LegacyError::Config(message) => {
                tracing::error!(%message, "legacy connector misconfigured");
                rpc::status(
                    Code::Unavailable,
                    reason::LEGACY_CONFIG,
                    format!("legacy connector configuration error: {message}"),
                )
            }
            LegacyError::CountUnsupported => rpc::status(
                Code::Unimplemented,
                reason::COUNT_UNSUPPORTED,
                "this legacy connector cannot count users: set [legacy] count_users",
            ),
            LegacyError::ListUnsupported => rpc::status(
                Code::Unimplemented,
                reason::LIST_UNSUPPORTED,
                "this legacy connector cannot list users (backfill, preflight): set [legacy] list_users, or [legacy.http] list_users = true",
            ),
            LegacyError::Http(detail) => {
                tracing::warn!(%detail, "legacy web service error");
                rpc::status(
                    Code::Unavailable,
                    reason::LEGACY_UNAVAILABLE,
                    format!("the legacy web service failed: {detail}"),
                )
            }
            LegacyError::Overloaded { retry_after } => rpc::overloaded(
                Some(retry_after),
                "too many legacy password checks in progress; retry after the RetryInfo delay",
            ),
            LegacyError::Internal(message) => {
                tracing::error!(%message, "legacy connector internal error");
                rpc::status(
                    Code::Internal,
                    reason::INTERNAL,
                    "legacy connector internal error",
                )
            }
        }
    }
}

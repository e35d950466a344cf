//! What can go wrong in the coordinator, and its one mapping to gRPC.

use tonic::{Code, Status};
use trickle_service_kit::rpc::{self, FieldViolation, reason};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("invalid request")]
    InvalidRequest(Vec<FieldViolation>),
    /// The legacy connector failed, refused, or passed its deadline.
    #[error("the legacy store is unavailable: {0}")]
    LegacyUnavailable(String),
    #[error("the user store is unavailable: {0}")]
    StoreUnavailable(String),
    /// `retry_after`: the upstream's RetryInfo delay, passed on.
    #[error("too many requests in progress")]
    Overloaded {
        retry_after: Option<std::time::Duration>,
    },
    /// AUTHORITATIVE mode: the legacy store is not asked any more.
    #[error("the migration is over: the legacy store is no longer consulted")]
    LegacyDisabled,
    #[error("{remaining} legacy users have not migrated")]
    UsersRemaining {
        remaining: i64,
        /// Users the last preflight census found no password can match, when one ran.
        unusable_at_census: Option<i64>,
    },
    #[error("cannot tell how many legacy users remain: {0}")]
    RemainingUnknown(String),
    #[error("the ticket is not valid")]
    TicketInvalid,
    #[error("no such backfill")]
    BackfillNotFound,
    #[error("no such import")]
    ImportNotFound,
    /// The import's stream ended without its last page.
    #[error("the import's stream ended before its last page")]
    ImportIncomplete,
    /// Another run of the same import took it over; this one stops.
    #[error("another run of import {0} took it over")]
    ImportTakenOver(String),
    /// The legacy connector has no way to list its users (no `list_users` query, or an
    /// HTTP backend).
    #[error("the legacy connector cannot list its users")]
    ListUnsupported,
    /// A client error from the user-store (ticket used or expired, …), passed on as it is.
    #[error("user store refused: {}", .0.message())]
    Refused(Status),
    #[error("coordinator database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoordinatorError {
    /// Classify a failed call to the legacy connector. Anything but a clean answer means the
    /// legacy store could not be asked: never "wrong password".
    pub fn from_legacy(status: &Status) -> Self {
        match status.code() {
            Code::ResourceExhausted => CoordinatorError::Overloaded {
                retry_after: rpc::retry_delay_of(status),
            },
            _ => CoordinatorError::LegacyUnavailable(format!(
                "{:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }

    pub fn from_store(status: &Status) -> Self {
        match status.code() {
            Code::ResourceExhausted => CoordinatorError::Overloaded {
                retry_after: rpc::retry_delay_of(status),
            },
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists => CoordinatorError::Refused(status.clone()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                CoordinatorError::StoreUnavailable(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
            _ => CoordinatorError::Internal(format!(
                "user store answered {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::InvalidRequest(violations) => {
                rpc::invalid_argument(reason::INVALID_REQUEST, &violations)
            }
            CoordinatorError::LegacyUnavailable(detail) => {
                tracing::warn!(%detail, "legacy store unavailable");
                rpc::status(
                    Code::Unavailable,
                    reason::LEGACY_UNAVAILABLE,
                    "the legacy user store is unavailable; retry later",
                )
            }
            CoordinatorError::StoreUnavailable(detail) => {
                tracing::warn!(%detail, "user store unavailable");
                rpc::status(
                    Code::Unavailable,
                    reason::STORE_UNAVAILABLE,
                    "the user store is unavailable; retry later",
                )
            }
            CoordinatorError::Overloaded { retry_after } => rpc::overloaded(
                retry_after,
                "too many password checks in progress; retry shortly (after the RetryInfo delay, when given)",
            ),
            CoordinatorError::ListUnsupported => rpc::status(
                Code::FailedPrecondition,
                reason::LIST_UNSUPPORTED,
                "the legacy connector cannot list its users: set [legacy] list_users (for an HTTP backend, [legacy.http] list_users = true and the listing endpoint)",
            ),
            CoordinatorError::LegacyDisabled => rpc::status(
                Code::FailedPrecondition,
                reason::LEGACY_DISABLED,
                "the migration is complete: users who were only in the legacy store cannot be migrated any more",
            ),
            CoordinatorError::UsersRemaining {
                remaining,
                unusable_at_census,
            } => {
                let mut metadata: std::collections::HashMap<String, String> =
                    [("legacy_users_remaining".to_owned(), remaining.to_string())].into();
                let mut message = format!(
                    "{remaining} legacy users have not migrated and could no longer log in; \
                     backfill them first, or pass force to leave them behind"
                );
                if let Some(unusable) = unusable_at_census.filter(|n| *n > 0) {
                    metadata.insert("preflight_unusable".into(), unusable.to_string());
                    message.push_str(&format!(
                        " (the last preflight census found {unusable} legacy users no password can match: \
                         no backfill carries them, only a password reset before cutover brings them over)"
                    ));
                }
                rpc::status_with_metadata(
                    Code::FailedPrecondition,
                    reason::USERS_REMAINING,
                    metadata,
                    message,
                )
            }
            CoordinatorError::RemainingUnknown(why) => rpc::status(
                Code::FailedPrecondition,
                reason::REMAINING_UNKNOWN,
                format!(
                    "cannot tell how many legacy users remain ({why}); pass force to switch anyway"
                ),
            ),
            CoordinatorError::TicketInvalid => rpc::status(
                Code::InvalidArgument,
                reason::TICKET_INVALID,
                "the ticket is not valid",
            ),
            CoordinatorError::Refused(status) => status,
            CoordinatorError::BackfillNotFound => rpc::status(
                Code::NotFound,
                reason::BACKFILL_NOT_FOUND,
                "no such backfill",
            ),
            CoordinatorError::ImportIncomplete => rpc::status(
                Code::Aborted,
                reason::IMPORT_INCOMPLETE,
                "the import's stream ended before its last page (the client stopped); send the import again to resume it",
            ),
            CoordinatorError::ImportNotFound => {
                rpc::status(Code::NotFound, reason::IMPORT_NOT_FOUND, "no such import")
            }
            CoordinatorError::ImportTakenOver(import_id) => rpc::status(
                Code::Aborted,
                reason::CONCURRENT_CHANGE,
                format!(
                    "another run of import {import_id} took it over; this one stopped (the other continues from where it got to)"
                ),
            ),
            CoordinatorError::Database(e) => {
                tracing::error!(error = %e, "coordinator database error");
                rpc::status(
                    Code::Unavailable,
                    reason::INTERNAL,
                    "the migration coordinator's database is unavailable",
                )
            }
            CoordinatorError::Internal(message) => {
                tracing::error!(%message, "coordinator internal error");
                rpc::status(
                    Code::Internal,
                    reason::INTERNAL,
                    "migration coordinator internal error",
                )
            }
        }
    }
}

//! The error vocabulary of Trickle's gRPC contracts: a status code, a `google.rpc.ErrorInfo`
//! reason in the `trickle.dev` domain, and `google.rpc.BadRequest` field violations.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Trickle error.
pub const DOMAIN: &str = "trickle.dev";

/// `ErrorInfo.reason` values. They are part of the public contract: callers branch on them.
pub mod reason {
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const INVALID_CREDENTIALS: &str = "INVALID_CREDENTIALS";
    pub const LEGACY_UNAVAILABLE: &str = "LEGACY_UNAVAILABLE";
    pub const STORE_UNAVAILABLE: &str = "STORE_UNAVAILABLE";
    pub const COORDINATOR_UNAVAILABLE: &str = "COORDINATOR_UNAVAILABLE";
    pub const EMAIL_EXISTS: &str = "EMAIL_EXISTS";
    pub const WEAK_PASSWORD: &str = "WEAK_PASSWORD";
    pub const INVALID_TOKEN: &str = "INVALID_TOKEN";
    pub const TOKEN_EXPIRED: &str = "TOKEN_EXPIRED";
    pub const USER_NOT_FOUND: &str = "USER_NOT_FOUND";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const LEGACY_CONFIG: &str = "LEGACY_CONFIG";
    pub const INTERNAL: &str = "INTERNAL";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const TICKET_INVALID: &str = "TICKET_INVALID";
    pub const TICKET_USED: &str = "TICKET_USED";
    pub const TICKET_EXPIRED: &str = "TICKET_EXPIRED";
    pub const LEGACY_DISABLED: &str = "LEGACY_DISABLED";
    pub const USERS_REMAINING: &str = "USERS_REMAINING";
    pub const REMAINING_UNKNOWN: &str = "REMAINING_UNKNOWN";
    pub const COUNT_UNSUPPORTED: &str = "COUNT_UNSUPPORTED";
    pub const LIST_UNSUPPORTED: &str = "LIST_UNSUPPORTED";
    pub const BACKFILL_NOT_FOUND: &str = "BACKFILL_NOT_FOUND";
    /// No import with that id (`NOT_FOUND`).
    pub const IMPORT_NOT_FOUND: &str = "IMPORT_NOT_FOUND";
    /// An import's stream ended before its last page (`ABORTED`): send it again to resume.
    pub const IMPORT_INCOMPLETE: &str = "IMPORT_INCOMPLETE";
    /// Mutual TLS admitted the caller, but its certificate names no identity allowed to
    /// call this method (`PERMISSION_DENIED`).
    pub const CALLER_NOT_ALLOWED: &str = "CALLER_NOT_ALLOWED";
    /// The account changed between reading and writing it (a password reset landed during a
    /// password change): `ABORTED`, safe to retry.
    pub const CONCURRENT_CHANGE: &str = "CONCURRENT_CHANGE";
    /// The password is right but the account is blocked (`PERMISSION_DENIED`). Only ever
    /// answered after the password was checked.
    pub const USER_BLOCKED: &str = "USER_BLOCKED";
    /// A wrong (or already used) second-factor code (`UNAUTHENTICATED`).
    pub const INVALID_MFA_CODE: &str = "INVALID_MFA_CODE";
    /// The login's second-factor challenge is unknown, used, expired or spent by wrong
    /// codes: log in again (`UNAUTHENTICATED`).
    pub const MFA_CHALLENGE_INVALID: &str = "MFA_CHALLENGE_INVALID";
    /// The user already has an active second factor (`ALREADY_EXISTS`).
    pub const FACTOR_EXISTS: &str = "FACTOR_EXISTS";
    /// The user has no second factor (to confirm, or to remove) (`NOT_FOUND` /
    /// `FAILED_PRECONDITION`).
    pub const FACTOR_NOT_FOUND: &str = "FACTOR_NOT_FOUND";
    /// No key to seal second-factor secrets is configured (`FAILED_PRECONDITION`).
    pub const FACTORS_NOT_CONFIGURED: &str = "FACTORS_NOT_CONFIGURED";
    /// Events before the oldest one kept are gone (`FAILED_PRECONDITION`, metadata
    /// `oldest_position`).
    pub const EVENTS_PRUNED: &str = "EVENTS_PRUNED";
}

/// A status carrying an `ErrorInfo` with `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// `RESOURCE_EXHAUSTED`, reason `RATE_LIMITED`, with a `google.rpc.RetryInfo` delay.
pub fn rate_limited(retry_after: std::time::Duration, message: impl Into<String>) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason::RATE_LIMITED,
        DOMAIN,
        std::collections::HashMap::new(),
    );
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// `RESOURCE_EXHAUSTED`, reason `OVERLOADED`: too much work in progress. With a delay, a
/// `google.rpc.RetryInfo` tells the caller when there should be room again (gRPC's
/// pushback); clients that wait for it instead of retrying at once keep a flood of
/// refusals from eating the CPU the admitted work needs.
pub fn overloaded(retry_after: Option<std::time::Duration>, message: impl Into<String>) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason::OVERLOADED, DOMAIN, std::collections::HashMap::new());
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// The `google.rpc.RetryInfo` delay of a status, if it has one.
pub fn retry_delay_of(status: &Status) -> Option<std::time::Duration> {
    status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
}

/// A status carrying an `ErrorInfo` with `reason` and machine-readable `metadata`.
pub fn status_with_metadata(
    code: Code,
    reason: &str,
    metadata: std::collections::HashMap<String, String>,
    message: impl Into<String>,
) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, details)
}

/// The `ErrorInfo.metadata` of a status.
pub fn metadata_of(status: &Status) -> std::collections::HashMap<String, String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata.clone())
        .unwrap_or_default()
}

/// The `ErrorInfo.reason` of a status, if it has one.
pub fn reason_of(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Collects every bad field of a request so the caller learns about all of them at once.
/// A new password that is merely too short is kept apart: it has its own reason,
/// `WEAK_PASSWORD`, and is reported only when nothing else is wrong.
#[derive(Debug, Default)]
pub struct Violations {
    invalid: Vec<FieldViolation>,
    weak_password: Vec<FieldViolation>,
}

/// What is wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRequest {
    /// Malformed input: reason `INVALID_REQUEST`.
    Invalid(Vec<FieldViolation>),
    /// Only a new password under the policy's minimum: reason `WEAK_PASSWORD`.
    WeakPassword(Vec<FieldViolation>),
}

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.invalid.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// A required opaque identifier (user id, legacy id, ticket): present, at most `max` bytes.
    pub fn check_id(&mut self, field: &str, value: &str, max: usize) {
        if value.is_empty() {
            self.add(field, format!("{field} is required"));
        } else if value.len() > max {
            self.add(field, format!("{field} must be at most {max} bytes"));
        }
    }

    /// Check a new password (sign-up, reset, change) against the policy.
    pub fn check_new_password(&mut self, field: &str, password: &trickle_password::Password) {
        match password.check_new() {
            Err(e) if e.is_weak() => self.weak_password.push(FieldViolation {
                field: field.to_owned(),
                description: e.to_string(),
            }),
            other => {
                self.check(field, other);
            }
        }
    }

    /// `Ok(())` when nothing was recorded; malformed input wins over a weak password.
    pub fn verdict(self) -> Result<(), BadRequest> {
        if !self.invalid.is_empty() {
            Err(BadRequest::Invalid(self.invalid))
        } else if !self.weak_password.is_empty() {
            Err(BadRequest::WeakPassword(self.weak_password))
        } else {
            Ok(())
        }
    }

    /// Keep `result`'s value, or record its error against `field`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.invalid.is_empty() && self.weak_password.is_empty()
    }

    /// Every violation recorded (for callers that do not check new passwords).
    pub fn into_vec(self) -> Vec<FieldViolation> {
        let mut all = self.invalid;
        all.extend(self.weak_password);
        all
    }
}

impl From<BadRequest> for Status {
    fn from(bad: BadRequest) -> Self {
        match bad {
            BadRequest::Invalid(v) => invalid_argument(reason::INVALID_REQUEST, &v),
            BadRequest::WeakPassword(v) => invalid_argument(reason::WEAK_PASSWORD, &v),
        }
    }
}

impl Violations {
    /// The verdict, and the value of a field checked with [`Violations::check`] when there
    /// is nothing wrong.
    pub fn verdict_with<T>(self, value: Option<T>) -> Result<T, BadRequest> {
        self.verdict()?;
        // `check` recorded a violation whenever it returned None.
        value.ok_or_else(|| BadRequest::Invalid(Vec::new()))
    }
}

/// `INVALID_ARGUMENT` with reason `reason` and one `BadRequest` violation per field.
pub fn invalid_argument(reason: &str, violations: &[FieldViolation]) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new());
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: check {}", fields.join(", ")),
        details,
    )
}

/// The `BadRequest` violations of a status, for clients and tests.
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| FieldViolation {
                    field: v.field.clone(),
                    description: v.description.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

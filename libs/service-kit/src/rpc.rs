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
}

/// A status carrying an `ErrorInfo` with `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
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
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
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
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// `Ok(())` when nothing was recorded.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
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

//! The auth-frontend service (`trickle.auth.v1.AuthService`): Trickle's public API. It
//! validates requests, asks the user-store first, hands users the store does not have to the
//! migration coordinator, and issues and validates EdDSA access tokens.

pub mod auth;
pub mod config;
pub mod error;
mod grpc;
pub mod mode;
pub mod revocation;
pub mod startup;
pub mod tokens;
pub mod upstream;

pub use config::{FrontendConfig, TokenConfig};
pub use error::FrontendError;
pub use startup::{build, build_with_clock};

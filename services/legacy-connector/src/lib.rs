//! The legacy-connector service (`trickle.legacy.v1.LegacyConnector`): reads the legacy user
//! store — the equivalent of Auth0's Login and Get User scripts. Only the migration
//! coordinator calls it. Password hashes read from the legacy store leave it only through
//! `ListUsers`, for the backfill (the coordinator hands them to the user-store); `Login` and
//! `GetUser` answer without them.

pub mod backend;
pub mod config;
pub mod error;
mod grpc;
pub mod http;
pub mod laravel;
#[doc(hidden)]
pub mod php;
pub mod presets;
pub mod sql;
pub mod startup;

pub use config::LegacyConfig;
pub use error::LegacyError;
pub use startup::build;

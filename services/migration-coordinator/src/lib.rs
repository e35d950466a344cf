//! The migration-coordinator service (`trickle.migration.v1.MigrationCoordinator`): holds the
//! migration mode, checks unknown users against the legacy store and imports them into the
//! user store before their login answers, and keeps the ledger of migrations. It is the only
//! caller of the legacy connector.

pub mod admin;
pub mod backfill;
pub mod breaker;
pub mod config;
pub mod error;
pub mod events;
mod grpc;
pub mod import;
pub mod ledger;
pub mod migrate_on_login;
pub mod preflight;
pub mod startup;
pub mod upstream;
pub mod webhook;

pub use config::MigrationConfig;
pub use error::CoordinatorError;
pub use startup::{build, build_with_clock};

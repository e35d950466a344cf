//! The user-store service (`trickle.userstore.v1.UserStore`): the authoritative home of
//! users and their password hashes. Hashing and verifying happen here; hashes never leave.

pub mod config;
pub mod error;
mod grpc;
pub mod repository;
pub mod startup;
pub mod tickets;
pub mod users;

pub use config::StoreConfig;
pub use error::StoreError;
pub use startup::build;

//! The user-store service (`trickle.userstore.v1.UserStore`): the authoritative home of
//! users and their password hashes. Hashing and verifying happen here; hashes never leave.

pub mod config;
pub mod error;
pub mod events;
pub mod factors;
mod grpc;
mod grpc_factors;
pub mod last_logins;
pub mod model;
pub mod refusal;
pub mod repository;
pub mod retention;
pub mod startup;
pub mod throttle;
pub mod tickets;
pub mod users;

/// The proto → domain conversions of the gRPC layer, for the fuzz targets in tests/fuzz.
#[doc(hidden)]
pub mod conversions {
    pub use crate::grpc::profile_from_proto;
}

pub use config::StoreConfig;
pub use error::StoreError;
pub use startup::{build, build_with_clock};

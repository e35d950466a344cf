//! What every Trickle service shares: the gRPC server bootstrap (health, reflection, graceful
//! stop), the clock every time-dependent decision reads, the error vocabulary of the public contract, email normalization, and the
//! PostgreSQL/SQLite pool used by the services that own tables.

pub mod callers;
pub mod client;
pub mod clock;
pub mod db;
pub mod email;
pub mod rpc;
pub mod server;
pub mod tls;

pub use clock::Clock;
pub use email::{Email, EmailError};

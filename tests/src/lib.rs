//! The test kit for Trickle's end-to-end tests: fresh real databases per test (PostgreSQL,
//! MariaDB, SQLite files), the four services started on `127.0.0.1:0` and talking real gRPC,
//! and a log capture to prove that no secret is ever logged.
//!
//! Database servers are found through `TRICKLE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TRICKLE_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`). A server that cannot be reached fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

mod capture;
mod certificates;
mod cluster;
mod databases;
mod faults;
mod webhooks;

pub use capture::*;
pub use certificates::*;
pub use cluster::*;
pub use databases::*;
pub use faults::*;
pub use webhooks::*;

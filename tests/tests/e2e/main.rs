//! End-to-end tests of migration on login: the four services over real gRPC on loopback,
//! on PostgreSQL + MariaDB and on SQLite + SQLite. Each scenario runs on both.
//!
//! One test binary for the whole workspace on purpose (link time is real on two cores).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Generate one test per backend for each scenario.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod postgres_mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(trickle_tests::Backend::PostgresMariaDb).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(trickle_tests::Backend::Sqlite).await;
                }
            )*
        }
    };
}

mod account_state;
mod backfill;
mod bench;
mod db_tls;
mod events;
mod faults;
mod hash_limits;
mod health;
mod http_backend;
mod import;
mod last_login;
mod lifecycle;
mod mfa;
mod mfa_legacy;
mod migration;
mod preflight;
mod presets;
mod profile;
mod retention;
mod schema;
mod signing_keys;
mod support;
mod telemetry;
mod throttle;
mod tickets;
mod timing;
mod tls;
mod tokens;
mod validation;

//! The `trickle` binary's library: configuration loading, starting services alone or all
//! together, the `trickle dev` laptop setup, the `trickle login` client and `trickle bench`. `main.rs` only
//! parses the command line.

pub mod admin;
pub mod bench;
pub mod config;
pub mod connect;
pub mod dev;
pub mod import;
pub mod login;
pub mod services;

//! How the command-line clients (`trickle login`, `admin`, `bench`) reach a service: plain
//! HTTP/2, or mutual TLS when the service requires client certificates.

use anyhow::Context as _;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use trickle_service_kit::tls::TlsConfig;

/// `--tls-ca-file`, `--tls-cert-file`, `--tls-key-file`: for a Trickle whose services require
/// client certificates (`[frontend.public_tls]`, `[migration.tls]`). All three or none.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// The CA that signed the service's certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "TRICKLE_CLI_TLS_CA_FILE",
        value_name = "FILE"
    )]
    pub tls_ca_file: Option<String>,
    /// The client certificate to present (PEM).
    #[arg(
        long,
        global = true,
        env = "TRICKLE_CLI_TLS_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_cert_file: Option<String>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "TRICKLE_CLI_TLS_KEY_FILE",
        value_name = "FILE"
    )]
    pub tls_key_file: Option<String>,
}

impl ClientTlsArgs {
    pub fn config(&self) -> TlsConfig {
        TlsConfig {
            ca_file: self.tls_ca_file.clone().unwrap_or_default(),
            cert_file: self.tls_cert_file.clone().unwrap_or_default(),
            key_file: self.tls_key_file.clone().unwrap_or_default(),
            allowed_callers: Vec::new(),
        }
    }
}

/// Connect to `address` (`http://…`, or `https://…` with TLS set), naming `what` is there in
/// the error.
pub async fn channel(address: &str, tls: &TlsConfig, what: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(address.to_owned())
        .with_context(|| format!("{address} is not a valid address"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(config) = tls.client(address)? {
        endpoint = endpoint.tls_config(config)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {what} at {address}"))
}

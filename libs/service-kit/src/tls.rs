//! Mutual TLS between Trickle's services (rustls, through tonic).
//!
//! Off by default: inside a cluster a service mesh often does this already. When a
//! service's `tls` section is set, its internal server accepts only callers presenting a
//! certificate signed by `ca_file`, and its clients present `cert_file` and verify the
//! server they call against the same CA. The public API of the frontend is not affected.

use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// `[store.tls]`, `[legacy.tls]`, `[migration.tls]`, `[frontend.tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA that signs every Trickle service's certificate.
    pub ca_file: String,
    /// PEM certificate (chain) of this service: its server certificate, and the client
    /// certificate it presents when it calls another service.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// The identities allowed to call this service's server: DNS names (or IP addresses)
    /// that a caller's certificate must be valid for, checked like a server's name. Others
    /// get `PERMISSION_DENIED`. Empty: any certificate from `ca_file` (a warning at start).
    pub allowed_callers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS needs ca_file, cert_file and key_file together; {0} is missing")]
    Incomplete(&'static str),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("with TLS on, {url} must be an https:// address")]
    PlainUrl { url: String },
}

/// The files, read once at start.
struct Material {
    ca: Certificate,
    identity: Identity,
}

impl TlsConfig {
    /// Whether any TLS key is set (a partial setting is an error, not "off").
    pub fn is_enabled(&self) -> bool {
        !(self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty())
    }

    fn material(&self) -> Result<Option<Material>, TlsError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        for (value, name) in [
            (&self.ca_file, "ca_file"),
            (&self.cert_file, "cert_file"),
            (&self.key_file, "key_file"),
        ] {
            if value.is_empty() {
                return Err(TlsError::Incomplete(name));
            }
        }
        let read = |what: &'static str, path: &str| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        Ok(Some(Material {
            ca: Certificate::from_pem(read("the CA certificate", &self.ca_file)?),
            identity: Identity::from_pem(
                read("the certificate", &self.cert_file)?,
                read("the private key", &self.key_file)?,
            ),
        }))
    }

    /// The server side: this certificate, and client certificates required.
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        Ok(self.material()?.map(|m| {
            ServerTlsConfig::new()
                .identity(m.identity)
                .client_ca_root(m.ca)
                .client_auth_optional(false)
        }))
    }

    /// The client side, for a call to `url` (which must then be `https://`).
    pub fn client(&self, url: &str) -> Result<Option<ClientTlsConfig>, TlsError> {
        let Some(m) = self.material()? else {
            return Ok(None);
        };
        if !url.starts_with("https://") {
            return Err(TlsError::PlainUrl {
                url: url.to_owned(),
            });
        }
        Ok(Some(
            ClientTlsConfig::new()
                .ca_certificate(m.ca)
                .identity(m.identity),
        ))
    }
}

//! Who may call what: with mutual TLS on, a certificate from the shared CA proves only that
//! the caller is *some* Trickle component or client. Each server also checks the caller's
//! identity — a DNS name (or IP address) its certificate is valid for, checked the way a TLS
//! client checks a server's name — against the names its configuration allows, and answers
//! `PERMISSION_DENIED` (reason `CALLER_NOT_ALLOWED`) before the call reaches the service.
//!
//! Health and reflection stay open to any caller the TLS handshake admitted: probes and
//! grpcurl need them, and they reveal nothing about users.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Which callers a server admits.
#[derive(Debug, Clone, Default)]
pub struct CallerPolicy {
    /// Names allowed to call every method not listed in `per_method`. Empty: any caller the
    /// TLS handshake admitted (or any caller at all without TLS).
    pub default: Vec<String>,
    /// Methods (`/package.Service/Method`) with their own list. An empty list here means
    /// nobody: the method is closed to every certificate.
    pub per_method: HashMap<String, Vec<String>>,
}

impl CallerPolicy {
    /// One list for every method.
    pub fn allow(names: &[String]) -> Self {
        Self {
            default: names.to_vec(),
            per_method: HashMap::new(),
        }
    }

    /// Whether the policy restricts anything at all.
    pub fn is_open(&self) -> bool {
        self.default.is_empty() && self.per_method.is_empty()
    }

    fn names_for(&self, path: &str) -> Option<&[String]> {
        match self.per_method.get(path) {
            Some(names) => Some(names),
            None if self.default.is_empty() => None,
            None => Some(&self.default),
        }
    }
}

/// A certificate is valid for `name` (a DNS name or an IP address), by the rules a TLS
/// client applies to a server's certificate: SAN entries only, wildcards as RFC 6125 says.
pub fn certificate_is_for(leaf: &[u8], name: &str) -> bool {
    let der = rustls_pki_types::CertificateDer::from(leaf);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    let Ok(server_name) = rustls_pki_types::ServerName::try_from(name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// The DNS names a certificate carries, for log lines about refused callers.
pub fn certificate_names(leaf: &[u8]) -> Vec<String> {
    let der = rustls_pki_types::CertificateDer::from(leaf);
    webpki::EndEntityCert::try_from(&der)
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn is_plumbing(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// The tower layer enforcing a [`CallerPolicy`] on a tonic server.
#[derive(Debug, Clone)]
pub struct CallerPolicyLayer {
    policy: Arc<CallerPolicy>,
}

impl CallerPolicyLayer {
    pub fn new(policy: CallerPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for CallerPolicyLayer {
    type Service = CallerPolicyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallerPolicyService {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallerPolicyService<S> {
    inner: S,
    policy: Arc<CallerPolicy>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for CallerPolicyService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if is_plumbing(path) {
            return Box::pin(self.inner.call(request));
        }
        let Some(allowed) = self.policy.names_for(path) else {
            return Box::pin(self.inner.call(request));
        };
        let leaf = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        let admitted = leaf
            .as_deref()
            .is_some_and(|leaf| allowed.iter().any(|name| certificate_is_for(leaf, name)));
        if admitted {
            return Box::pin(self.inner.call(request));
        }
        let presented = leaf.as_deref().map(certificate_names).unwrap_or_default();
        tracing::warn!(
            rpc.path = %path,
            caller.names = ?presented,
            "refused a caller whose certificate names no identity allowed for this method"
        );
        let message = if leaf.is_none() {
            "this method needs a client certificate (mutual TLS) naming an allowed caller"
                .to_owned()
        } else {
            format!(
                "the caller's certificate ({}) is not allowed to call {path}",
                if presented.is_empty() {
                    "no DNS names".to_owned()
                } else {
                    presented.join(", ")
                }
            )
        };
        let status = crate::rpc::status(
            tonic::Code::PermissionDenied,
            crate::rpc::reason::CALLER_NOT_ALLOWED,
            message,
        );
        Box::pin(async move { Ok(status.into_http()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_method_overrides_the_default_and_an_empty_list_closes_it() {
        let mut policy = CallerPolicy::allow(&["frontend".to_owned()]);
        policy
            .per_method
            .insert("/a.S/Reset".to_owned(), vec!["support".to_owned()]);
        policy.per_method.insert("/a.S/Closed".to_owned(), vec![]);
        assert_eq!(
            policy.names_for("/a.S/Login"),
            Some(&["frontend".to_owned()][..])
        );
        assert_eq!(
            policy.names_for("/a.S/Reset"),
            Some(&["support".to_owned()][..])
        );
        assert_eq!(policy.names_for("/a.S/Closed"), Some(&[][..]));
        assert!(CallerPolicy::default().names_for("/a.S/Login").is_none());
    }

    #[test]
    fn garbage_is_no_certificate_for_any_name() {
        assert!(!certificate_is_for(b"not a certificate", "localhost"));
        assert!(certificate_names(b"").is_empty());
    }
}

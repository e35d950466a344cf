//! Calling another Trickle service: lazy channels that carry the trace context of each call
//! and, for a service *name*, spread calls over its replicas as they come and go.

use crate::server::ServeError;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::transport::Endpoint;
use trickle_telemetry::propagation::{ClientTrace, ClientTraceLayer};

/// A channel to another Trickle service, carrying the trace context of each call.
pub type Channel = ClientTrace<tonic::transport::Channel>;

/// How often a channel to a service *name* looks the name up again. In Kubernetes, point the
/// URLs at headless Services: their DNS answer is the list of ready pods, and a pod leaves it
/// as soon as it starts terminating — the drain delay must cover this interval plus the DNS
/// cache's TTL.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);

/// A channel to another Trickle service. Lazy, so services may start in any order and a
/// dependency that restarts is reconnected to without restarting the caller.
///
/// A URL with an IP address holds one HTTP/2 connection to it. A URL with a name spreads
/// calls over every address the name resolves to (one connection each, calls to the least
/// loaded of two picked at random), and follows the name as replicas come and go: it is
/// resolved again every [`RESOLVE_INTERVAL`]. One connection to a ClusterIP would pin each
/// caller to one replica for ever, whatever the autoscaler adds.
pub fn channel(
    url: &str,
    timeout: Duration,
    tls: &crate::tls::TlsConfig,
) -> Result<Channel, ServeError> {
    let tls = tls.client(url)?;
    let single = base_endpoint(url.to_owned(), timeout)?;
    let uri = single.uri().clone();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    if host.parse::<std::net::IpAddr>().is_ok() {
        let single = match &tls {
            Some(tls) => single.tls_config(tls.clone())?,
            None => single,
        };
        return Ok(tower::Layer::layer(
            &ClientTraceLayer,
            single.connect_lazy(),
        ));
    }
    let scheme = uri.scheme_str().unwrap_or("http").to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    // Certificates name the service, not a pod's address.
    let tls = match tls {
        Some(tls) => {
            let tls = tls.domain_name(host.clone());
            // A TLS setting that cannot make an endpoint fails here, at start.
            single.tls_config(tls.clone())?;
            Some(tls)
        }
        None => None,
    };
    let make = move |addr: SocketAddr| {
        let endpoint = base_endpoint(format!("{scheme}://{addr}"), timeout).ok()?;
        match &tls {
            Some(tls) => endpoint.tls_config(tls.clone()).ok(),
            None => Some(endpoint),
        }
    };
    let (balanced, changes) = tonic::transport::Channel::balance_channel(1024);
    tokio::spawn(follow_name(host, port, make, changes));
    Ok(tower::Layer::layer(&ClientTraceLayer, balanced))
}

/// An endpoint with Trickle's client settings: connect and call deadlines, no Nagle.
fn base_endpoint(target: String, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(target)?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true))
}

/// Keep a balanced channel's endpoints equal to what `host` resolves to, until the channel
/// is dropped. A failed or empty lookup keeps the last good set: a DNS hiccup must not take
/// every replica away.
async fn follow_name(
    host: String,
    port: u16,
    make: impl Fn(SocketAddr) -> Option<Endpoint> + Send + 'static,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<SocketAddr, Endpoint>>,
) {
    use tonic::transport::channel::Change;
    let mut current = std::collections::BTreeSet::new();
    let mut warned = false;
    loop {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                let found = reachable(found.collect()).await;
                if found.is_empty() {
                    if !warned {
                        tracing::warn!(%host, "the service name resolves to no address; keeping the last known replicas");
                        warned = true;
                    }
                } else {
                    warned = false;
                    for gone in current.difference(&found) {
                        tracing::debug!(%host, replica = %gone, "replica left");
                        if changes.send(Change::Remove(*gone)).await.is_err() {
                            return;
                        }
                    }
                    for added in found.difference(&current) {
                        let Some(endpoint) = make(*added) else {
                            continue;
                        };
                        tracing::debug!(%host, replica = %added, "replica joined");
                        if changes
                            .send(Change::Insert(*added, endpoint))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    current = found;
                }
            }
            Err(error) => {
                if !warned {
                    tracing::warn!(%host, %error, "cannot resolve the service name; keeping the last known replicas");
                    warned = true;
                }
            }
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(RESOLVE_INTERVAL).await;
    }
}

/// Of the addresses a name resolves to, those that accept a connection now (all of them when
/// none does). A replica not listening yet (still starting) or any more (stopped before the
/// name forgot it) must stay out of the balancer: tonic's lazy connections report "ready"
/// after a failed connect, so the balancer would route the next call there and fail it while
/// another replica was healthy.
async fn reachable(
    found: std::collections::BTreeSet<SocketAddr>,
) -> std::collections::BTreeSet<SocketAddr> {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
    let probes = found.iter().map(|addr| async move {
        let accepted = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|connected| connected.is_ok());
        accepted.then_some(*addr)
    });
    let up: std::collections::BTreeSet<SocketAddr> = futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    if up.is_empty() { found } else { up }
}

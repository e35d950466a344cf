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

/// While a replica that answers is awaited — at start (for [`STARTUP_GRACE`], until every
/// address answers), or after every replica stopped answering — the name is looked up and
/// probed this often instead of every [`RESOLVE_INTERVAL`].
const AWAIT_INTERVAL: Duration = Duration::from_millis(100);

/// How long, at most, a channel started beside its replicas waits for one of them to accept
/// connections before it takes every address the name resolves to (so that calls fail fast
/// with UNAVAILABLE rather than wait). Services usually start together in a rollout; the
/// store needs its database and migrations before it listens.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// Keep a balanced channel's endpoints equal to the addresses `host` resolves to that accept
/// connections, until the channel is dropped. A failed or empty lookup keeps the last good
/// set: a DNS hiccup must not take every replica away.
///
/// An address is only handed to the balancer once it accepts a connection. tonic's lazy
/// connections report "ready" after a failed connect and hand the failure to the next call
/// routed there, so an address that refused a connection while it sat in the balancer
/// would fail a call after it came up. A call made before any replica listens waits (up
/// to [`STARTUP_GRACE`]) for the first one; an address kept while nothing answered is
/// replaced by a fresh endpoint as soon as it answers.
async fn follow_name(
    host: String,
    port: u16,
    make: impl Fn(SocketAddr) -> Option<Endpoint> + Send + 'static,
    changes: tokio::sync::mpsc::Sender<tonic::transport::channel::Change<SocketAddr, Endpoint>>,
) {
    use std::collections::BTreeSet;
    use tonic::transport::channel::Change;
    let started = tokio::time::Instant::now();
    let mut current = BTreeSet::new();
    // In the balancer although they refused connections when last probed.
    let mut suspect = BTreeSet::new();
    let mut warned = false;
    loop {
        let mut awaiting = false;
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => {
                let found: BTreeSet<SocketAddr> = found.collect();
                let up = reachable(&found).await;
                let next = if !up.is_empty() {
                    warned = false;
                    // Replicas started together come up one by one: the others are
                    // looked for again soon, not in a full interval.
                    awaiting = up.len() < found.len() && started.elapsed() < STARTUP_GRACE;
                    up.clone()
                } else if found.is_empty() {
                    if !warned {
                        tracing::warn!(%host, "the service name resolves to no address; keeping the last known replicas");
                        warned = true;
                    }
                    current.clone()
                } else if current.is_empty() && started.elapsed() < STARTUP_GRACE {
                    // Started beside its replicas: calls wait for the first to listen.
                    awaiting = true;
                    current.clone()
                } else {
                    if !warned {
                        tracing::warn!(%host, "no replica of the service accepts connections; calls fail until one does");
                        warned = true;
                    }
                    // Calls fail fast (UNAVAILABLE) meanwhile; each address is replaced by
                    // a fresh endpoint once it answers.
                    let kept = if current.is_empty() {
                        found
                    } else {
                        current.clone()
                    };
                    suspect.extend(kept.iter().copied());
                    awaiting = true;
                    kept
                };
                for gone in current.difference(&next) {
                    tracing::debug!(%host, replica = %gone, "replica left");
                    suspect.remove(gone);
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for address in &next {
                    let renewed = current.contains(address)
                        && up.contains(address)
                        && suspect.remove(address);
                    if current.contains(address) && !renewed {
                        continue;
                    }
                    let Some(endpoint) = make(*address) else {
                        continue;
                    };
                    if renewed {
                        // Its connection may hold a failed connect for the next call.
                        tracing::debug!(%host, replica = %address, "replica answers again");
                        if changes.send(Change::Remove(*address)).await.is_err() {
                            return;
                        }
                    } else {
                        tracing::debug!(%host, replica = %address, "replica joined");
                    }
                    if changes
                        .send(Change::Insert(*address, endpoint))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                current = next;
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
        tokio::time::sleep(if awaiting {
            AWAIT_INTERVAL
        } else {
            RESOLVE_INTERVAL
        })
        .await;
    }
}

/// Of `found`, the addresses that accept a connection now. A replica not listening yet
/// (still starting) or any more (stopped before the name forgot it) must stay out of the
/// balancer (see [`follow_name`]).
async fn reachable(
    found: &std::collections::BTreeSet<SocketAddr>,
) -> std::collections::BTreeSet<SocketAddr> {
    const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
    let probes = found.iter().map(|addr| async move {
        let accepted = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|connected| connected.is_ok());
        accepted.then_some(*addr)
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// A replica that has finished starting: gRPC health on `listener`, until stopped.
    struct Replica {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Replica {
        fn serve(listener: tokio::net::TcpListener) -> Self {
            let (_reporter, health) = tonic_health::server::health_reporter();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await;
            });
            Self { stop, task }
        }

        /// Stop listening and close every connection (GOAWAY), as a stopping process does.
        async fn stop(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port")
    }

    /// A health client over a channel to the service *name* `localhost:port`: balanced,
    /// following the name, as Trickle's services call each other.
    fn client_by_name(port: u16) -> HealthClient<Channel> {
        HealthClient::new(
            channel(
                &format!("http://localhost:{port}"),
                Duration::from_secs(5),
                &crate::tls::TlsConfig::default(),
            )
            .expect("channel"),
        )
    }

    /// Listen on `127.0.0.1:port`, as a replica does once it has started.
    async fn bind(port: u16) -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind")
    }

    /// A caller started beside the replicas of a service name: its first call, made before
    /// any replica listens, waits for one and is answered by it — it does not fail on an
    /// address that refused the connection a moment before it listened (the process test
    /// of two store replicas lost a first login that way, one run in ten).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_made_before_any_replica_listens_is_answered_by_the_first_one() {
        let port = free_port();
        let mut client = client_by_name(port);
        let mut call =
            tokio::spawn(async move { client.check(HealthCheckRequest::default()).await });
        // Nothing listens yet: the call waits instead of failing.
        if let Ok(early) = tokio::time::timeout(Duration::from_millis(400), &mut call).await {
            panic!("the call ended before any replica listened: {early:?}");
        }
        let replica = Replica::serve(bind(port).await);
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("answered once a replica listens")
            .expect("call task");
        assert!(answer.is_ok(), "{answer:?}");
        replica.stop().await;
    }

    /// A name where nothing ever listens: a call waits out the start-up grace, then fails
    /// with UNAVAILABLE — it does not wait for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_to_a_name_where_nothing_listens_fails_after_the_grace() {
        let port = free_port();
        let mut client = client_by_name(port);
        let asked = tokio::time::Instant::now();
        let answer = tokio::time::timeout(
            STARTUP_GRACE * 3,
            client.check(HealthCheckRequest::default()),
        )
        .await
        .expect("the call ended");
        let status = answer.expect_err("nothing listens");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            asked.elapsed() >= STARTUP_GRACE - AWAIT_INTERVAL,
            "failed before the grace was over: {:?}",
            asked.elapsed()
        );
    }

    /// The only replica stops and comes back on the same address: while it is away calls
    /// fail at once (they do not wait), and once it answers again it is used again and
    /// keeps answering (the endpoint kept while nothing answered is replaced by a fresh one).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_that_comes_back_is_used_again() {
        let port = free_port();
        let replica = Replica::serve(bind(port).await);
        let mut client = client_by_name(port);
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("served");
        replica.stop().await;
        // Away: calls fail, each trying (and failing) to connect.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut failures = 0;
        while failures < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "calls kept succeeding with the replica away"
            );
            if client.check(HealthCheckRequest::default()).await.is_err() {
                failures += 1;
            }
        }
        // Back on the same address. Once a call succeeds, so does every one after it.
        let replica = Replica::serve(bind(port).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.check(HealthCheckRequest::default()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica was not used again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for n in 0..20 {
            client
                .check(HealthCheckRequest::default())
                .await
                .unwrap_or_else(|status| {
                    panic!("call {n} after the replica came back: {status:?}")
                });
        }
        replica.stop().await;
    }
}

//! Serving a Trickle gRPC service: health (`grpc.health.v1`), reflection (v1 and v1alpha,
//! since grpcurl still speaks only v1alpha), a span per call continuing the caller's trace,
//! `/metrics` on a port of its own, and a graceful stop: NOT_SERVING first, then in-flight
//! calls finish within a grace period.

use crate::callers::{CallerPolicy, CallerPolicyLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use trickle_telemetry::propagation::ServerTraceLayer;

/// The largest request any Trickle server decodes. Passwords are capped far below this by
/// validation; the limit keeps a hostile caller from making us buffer more.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// The longest any call may run on a server (a backfill page, a migration on login).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// The most request metadata (HTTP/2 headers) a server accepts.
pub const MAX_METADATA_BYTES: u32 = 64 * 1024;

/// How long in-flight calls may take to finish after a stop is requested. Kubernetes waits
/// 30 s (terminationGracePeriodSeconds) before SIGKILL; finish well inside that.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// `[server]`: the lifecycle of every service's listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// After SIGTERM, keep serving (and reporting SERVING) this long before reporting
    /// NOT_SERVING and draining: Kubernetes removes a terminating pod from the endpoints
    /// at the same time as it signals it, and kube-proxies, DNS caches and clients take a
    /// few seconds to notice. `terminationGracePeriodSeconds` must cover this plus the
    /// 20 s drain.
    pub drain_delay_ms: u64,
    /// Seconds a client connection may live before the server asks it (HTTP/2 GOAWAY) to
    /// reconnect, so that callers behind a ClusterIP spread over new replicas. 0 (default):
    /// for ever. Only for callers whose gRPC library retries the calls a GOAWAY refuses
    /// (grpc-go, grpc-java do; tonic does not, and fails them with CANCELLED): Trickle's own
    /// clients balance by name instead ([`channel`]).
    pub max_connection_age_seconds: u64,
}

impl ServingConfig {
    /// Resolves `drain_delay_ms` after SIGTERM (or Ctrl-C).
    pub async fn shutdown_signal(&self) {
        shutdown_signal().await;
        if self.drain_delay_ms > 0 {
            tracing::info!(
                drain_delay_ms = self.drain_delay_ms,
                "stop requested: still serving while the endpoints change, then draining"
            );
            tokio::time::sleep(Duration::from_millis(self.drain_delay_ms)).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Bind a listener; `127.0.0.1:0` picks a free port.
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Bind the `/metrics` listener when an address is configured (empty: no metrics port).
pub async fn bind_metrics(addr: &str) -> Result<Option<TcpListener>, ServeError> {
    if addr.trim().is_empty() {
        return Ok(None);
    }
    bind(addr).await.map(Some)
}

/// One gRPC listener of a service: its socket, the routes it serves, TLS and who may call.
#[derive(Debug)]
struct Listener {
    listener: TcpListener,
    routes: Routes,
    service_names: &'static [&'static str],
    tls: Option<ServerTlsConfig>,
    callers: CallerPolicy,
    reflection: bool,
}

/// A service ready to serve: its listeners bound (so port 0 has become a real port) and its
/// routes built. `trickle serve` runs it in the foreground, `trickle dev` and the tests spawn it.
#[derive(Debug)]
pub struct BoundServer {
    main: Listener,
    /// A second listener for operators (the coordinator's `MigrationAdmin`), apart from the
    /// address other services use so that a NetworkPolicy can keep them off it.
    admin: Option<Listener>,
    metrics: Option<TcpListener>,
    background: Vec<JoinHandle<()>>,
    final_steps: Vec<FinalStep>,
    max_connection_age: Option<Duration>,
}

/// Work a service finishes after its last call and before its background tasks end: what it
/// buffered to write later (see [`BoundServer::with_final_step`]).
struct FinalStep(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for FinalStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FinalStep")
    }
}

impl BoundServer {
    pub fn new(
        listener: TcpListener,
        routes: Routes,
        service_names: &'static [&'static str],
    ) -> Self {
        Self {
            main: Listener {
                listener,
                routes,
                service_names,
                tls: None,
                callers: CallerPolicy::default(),
                reflection: true,
            },
            admin: None,
            metrics: None,
            background: Vec::new(),
            final_steps: Vec::new(),
            max_connection_age: None,
        }
    }

    /// Apply `[server]`: how long client connections live.
    #[must_use]
    pub fn with_serving(mut self, serving: &ServingConfig) -> Self {
        self.max_connection_age = (serving.max_connection_age_seconds > 0)
            .then(|| Duration::from_secs(serving.max_connection_age_seconds));
        self
    }

    /// Require callers to present a certificate signed by the configured CA (mutual TLS),
    /// when `tls` is set; with `tls.allowed_callers`, only those identities are served.
    pub fn with_tls(mut self, tls: &crate::tls::TlsConfig) -> Result<Self, ServeError> {
        self.main.tls = tls.server()?;
        self.main.callers = CallerPolicy::allow(&tls.allowed_callers);
        if tls.is_enabled() && tls.allowed_callers.is_empty() {
            tracing::warn!(
                services = ?self.main.service_names,
                "mutual TLS is on but allowed_callers is empty: any certificate from the CA may call every method"
            );
        }
        Ok(self)
    }

    /// Who may call which method (replaces the policy [`BoundServer::with_tls`] set).
    #[must_use]
    pub fn with_callers(mut self, callers: CallerPolicy) -> Self {
        self.main.callers = callers;
        self
    }

    /// Serve gRPC reflection (on by default; the public API turns it off unless configured).
    #[must_use]
    pub fn with_reflection(mut self, reflection: bool) -> Self {
        self.main.reflection = reflection;
        self
    }

    /// Also serve `routes` on a listener of their own, with the same TLS material and the
    /// callers `allowed` there.
    pub fn with_admin_listener(
        mut self,
        listener: TcpListener,
        routes: Routes,
        service_names: &'static [&'static str],
        tls: &crate::tls::TlsConfig,
        allowed: &[String],
    ) -> Result<Self, ServeError> {
        self.admin = Some(Listener {
            listener,
            routes,
            service_names,
            tls: tls.server()?,
            callers: CallerPolicy::allow(allowed),
            reflection: true,
        });
        Ok(self)
    }

    /// Also serve `/metrics` on `listener`.
    #[must_use]
    pub fn with_metrics(mut self, listener: Option<TcpListener>) -> Self {
        self.metrics = listener;
        self
    }

    /// A background task that lives as long as the server.
    #[must_use]
    pub fn with_background(mut self, task: JoinHandle<()>) -> Self {
        self.background.push(task);
        self
    }

    /// Work to finish once the server has stopped serving and its in-flight calls have
    /// ended, before the background tasks are stopped: a write the service deferred. Runs on
    /// a stop, not on a crash.
    #[must_use]
    pub fn with_final_step(mut self, step: impl Future<Output = ()> + Send + 'static) -> Self {
        self.final_steps.push(FinalStep(Box::pin(step)));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.main.listener.local_addr()
    }

    /// Where the operators' listener is, if the service has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|a| a.listener.local_addr().ok())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `shutdown` resolves, then report NOT_SERVING and drain.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let BoundServer {
            main,
            admin,
            metrics,
            background,
            final_steps,
            max_connection_age,
        } = self;
        let result = serve(main, admin, metrics, max_connection_age, shutdown).await;
        for FinalStep(step) in final_steps {
            step.await;
        }
        for task in background {
            task.abort();
        }
        result
    }

    /// Serve on a background task.
    pub fn spawn(self) -> std::io::Result<RunningServer> {
        let local_addr = self.local_addr()?;
        let admin_addr = self.admin_addr();
        let metrics_addr = self.metrics_addr();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(self.run_until_stopped(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        Ok(RunningServer {
            local_addr,
            admin_addr,
            metrics_addr,
            stop,
            task: Some(task),
        })
    }
}

/// Serve the listeners (and `/metrics` on `metrics`) until `shutdown` resolves.
async fn serve(
    main: Listener,
    admin: Option<Listener>,
    metrics: Option<TcpListener>,
    max_connection_age: Option<Duration>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let all_names: Vec<&'static str> = main
        .service_names
        .iter()
        .chain(admin.iter().flat_map(|a| a.service_names.iter()))
        .copied()
        .collect();
    for name in &all_names {
        health_reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    // The empty name is the server as a whole (what Kubernetes' gRPC probe asks by default).
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    // One stop signal for every listener, the health reporter and /metrics.
    let (stopping, stop_signal) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        for name in &all_names {
            health_reporter
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("shutting down: reporting NOT_SERVING and draining in-flight calls");
        let _ = stopping.send(true);
    });
    let wait_for_stop = |mut signal: watch::Receiver<bool>| async move {
        let _ = signal.wait_for(|stop| *stop).await;
    };
    if let Some(metrics) = metrics {
        tokio::spawn(trickle_telemetry::metrics::serve(
            metrics,
            wait_for_stop(stop_signal.clone()),
        ));
    }

    let main_server = serve_listener(
        main,
        health_service.clone(),
        max_connection_age,
        wait_for_stop(stop_signal.clone()),
    );
    let admin_stop = wait_for_stop(stop_signal.clone());
    let admin_server = async move {
        match admin {
            Some(admin) => serve_listener(admin, health_service, None, admin_stop).await,
            None => Ok(()),
        }
    };
    let servers = async { tokio::try_join!(main_server, admin_server).map(drop) };
    let grace = {
        let stopped = wait_for_stop(stop_signal);
        async move {
            stopped.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = servers => result?,
        () = grace => tracing::warn!(grace_seconds = SHUTDOWN_GRACE.as_secs(), "in-flight calls did not finish within the grace period; stopping anyway"),
    }
    Ok(())
}

/// Serve one listener until `stop` resolves.
async fn serve_listener(
    listener: Listener,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    max_connection_age: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Listener {
        listener,
        routes,
        service_names,
        tls,
        callers,
        reflection,
    } = listener;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let mut routes = routes.add_service(health_service);
    if reflection {
        // Reflection lists only this listener's services, and knows the google.rpc error
        // details so that grpcurl can print ErrorInfo and BadRequest.
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(trickle_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for name in service_names {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        routes = routes
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
    }
    if let Some(age) = max_connection_age {
        // No max_connection_age_grace: with one, tonic skips the graceful GOAWAY and cuts the
        // connection after age + grace. Without, an aged connection gets a GOAWAY and its
        // in-flight calls finish (each bounded by REQUEST_DEADLINE).
        builder = builder.max_connection_age(age);
    }
    builder
        // Every call ends: a caller's shorter grpc-timeout wins, this bounds the rest.
        .timeout(REQUEST_DEADLINE)
        // Metadata is for trace context and auth, not payloads.
        .http2_max_header_list_size(Some(MAX_METADATA_BYTES))
        .layer(ServerTraceLayer::new(trickle_proto::method_paths()))
        .layer(CallerPolicyLayer::new(callers))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Accepted sockets do not inherit Server::tcp_nodelay: without TCP_NODELAY a
            // small response can wait for the peer's delayed ACK, ~40 ms on Linux, which was
            // the p99 of every cheap call.
            tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
                if let Ok(stream) = &accepted {
                    let _ = stream.set_nodelay(true);
                }
                accepted
            }),
            stop,
        )
        .await?;
    Ok(())
}

/// A server running on a background task, stopped through its handle.
#[derive(Debug)]
pub struct RunningServer {
    pub local_addr: SocketAddr,
    /// Where the operators' listener is, if the service has one.
    pub admin_addr: Option<SocketAddr>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// `http://ADDR` of the operators' listener (panics when the service has none: a bug in
    /// the caller, which knows what it started).
    pub fn admin_url(&self) -> String {
        match self.admin_addr {
            Some(addr) => format!("http://{addr}"),
            None => panic!("this service has no admin listener"),
        }
    }

    /// Ask the server to stop without waiting: it reports NOT_SERVING and drains.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop accepting calls, let in-flight ones finish, and wait for the server to end.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.request_stop();
        self.wait_inner().await
    }

    /// [`RunningServer::stop`] through a reference, for an owner that starts a successor on
    /// the same addresses afterwards.
    pub async fn stop_in_place(&mut self) -> Result<(), ServeError> {
        self.request_stop();
        self.wait_inner().await
    }

    /// Wait until the server ends (after a stop request, or on its own with an error).
    pub async fn wait(mut self) -> Result<(), ServeError> {
        self.wait_inner().await
    }

    async fn wait_inner(&mut self) -> Result<(), ServeError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "server task ended abnormally");
                Ok(())
            }
        }
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

//! Serving a Trickle gRPC service: health (`grpc.health.v1`), reflection (v1 and v1alpha,
//! since grpcurl still speaks only v1alpha), and a graceful stop that reports NOT_SERVING
//! before draining in-flight calls.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;

/// The largest request any Trickle server decodes. Passwords are capped far below this by
/// validation; the limit keeps a hostile caller from making us buffer more.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

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

/// Serve `routes` on `listener` until `shutdown` resolves, then report NOT_SERVING and drain.
/// `service_names` are the fully qualified gRPC service names reported as SERVING.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_names: &[&'static str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in service_names {
        health_reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    // The empty name is the server as a whole (what Kubernetes' gRPC probe asks by default).
    health_reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    // Reflection lists only this server's services, and knows the google.rpc error details so
    // that grpcurl can print ErrorInfo and BadRequest.
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
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let names: Vec<&'static str> = service_names.to_vec();
    let drain = async move {
        shutdown.await;
        for name in names {
            health_reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        health_reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        tracing::info!("shutting down: reporting NOT_SERVING and draining in-flight calls");
    };

    Server::builder()
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drain)
        .await?;
    Ok(())
}

/// A service ready to serve: its listener bound (so port 0 has become a real port) and its
/// routes built. `trickle serve` runs it in the foreground, `trickle dev` and the tests spawn it.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    routes: Routes,
    service_names: &'static [&'static str],
}

impl BoundServer {
    pub fn new(
        listener: TcpListener,
        routes: Routes,
        service_names: &'static [&'static str],
    ) -> Self {
        Self {
            listener,
            routes,
            service_names,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then drain.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        serve(self.listener, self.routes, self.service_names, shutdown).await
    }

    /// Serve on a background task.
    pub fn spawn(self) -> std::io::Result<RunningServer> {
        RunningServer::spawn(self.listener, self.routes, self.service_names)
    }
}

/// A server running on a background task, stopped through its handle.
#[derive(Debug)]
pub struct RunningServer {
    pub local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Serve `routes` on `listener` in a background task.
    pub fn spawn(
        listener: TcpListener,
        routes: Routes,
        service_names: &'static [&'static str],
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, routes, service_names, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stop accepting calls, let in-flight ones finish, and wait for the server to end.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "server task ended abnormally");
                Ok(())
            }
        }
    }

    /// Wait until the server ends on its own (an error) without stopping it.
    pub async fn wait(mut self) -> Result<(), ServeError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

/// A channel to another Trickle service. Lazy, so services may start in any order and a
/// dependency that restarts is reconnected to without restarting the caller.
pub fn channel(url: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect_lazy())
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

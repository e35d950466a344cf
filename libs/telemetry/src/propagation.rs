//! One login is one trace: W3C trace context (`traceparent`, `tracestate`) extracted by every
//! server and injected by every client, with RPC spans named and attributed after the
//! OpenTelemetry RPC semantic conventions (`rpc.system`, `rpc.service`, `rpc.method`,
//! `rpc.grpc.status_code`, server and client kinds).

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// Health checks and reflection are not worth a span (probes call them every few seconds).
fn is_plumbing(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

/// The gRPC status code of a response whose status is in its headers (errors, answered
/// "trailers-only"); a unary success carries it in the trailers, which means OK.
fn status_code<B>(response: &http::Response<B>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Server side: a span per call, child of the caller's trace when it sent one.
#[derive(Debug, Clone)]
pub struct ServerTraceLayer {
    known_methods: Arc<std::collections::HashSet<String>>,
}

impl ServerTraceLayer {
    /// `known_methods` (`/package.Service/Method`) bound the metric labels: calls to any
    /// other path are traced but counted as `unknown`.
    pub fn new(known_methods: std::collections::HashSet<String>) -> Self {
        Self {
            known_methods: Arc::new(known_methods),
        }
    }
}

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace {
            inner,
            known_methods: Arc::clone(&self.known_methods),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
    known_methods: Arc<std::collections::HashSet<String>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = split_path(&path);
        if is_plumbing(service) {
            return Box::pin(self.inner.call(request));
        }
        let known = self.known_methods.contains(&path);
        let (label_service, label_method) = if known {
            (service.to_owned(), method.to_owned())
        } else {
            ("unknown".into(), "unknown".into())
        };
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %format!("{label_service}/{label_method}"),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %label_service,
            rpc.method = %label_method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let started = Instant::now();
        let in_flight = crate::metrics::InFlight::start(&label_service, &label_method);
        let future = self.inner.call(request);
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                drop(in_flight);
                let code = match &result {
                    Ok(response) => status_code(response),
                    // The transport failed: gRPC's UNKNOWN.
                    Err(_) => 2,
                };
                recorder.record("rpc.grpc.status_code", code);
                if is_server_error(code) {
                    recorder.record("otel.status_code", "ERROR");
                }
                crate::metrics::grpc_request(
                    &label_service,
                    &label_method,
                    code,
                    started.elapsed(),
                );
                result
            }
            .instrument(span),
        )
    }
}

/// Whether a server span with this gRPC status is an error, per the OpenTelemetry gRPC
/// conventions: only codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS). A wrong password (UNAUTHENTICATED) or a
/// bad request is the caller's answer, not a server error, and must not page anyone.
pub fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Client side: a span per outgoing call, its context injected as `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTraceLayer;

impl<S> tower::Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for ClientTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(request.headers_mut()))
        });
        let future = self.inner.call(request);
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => status_code(response),
                    Err(_) => 14, // UNAVAILABLE: the call never got an answer
                };
                recorder.record("rpc.grpc.status_code", code);
                if code != 0 {
                    recorder.record("otel.status_code", "ERROR");
                }
                result
            }
            .instrument(span),
        )
    }
}

/// The OTLP/gRPC exporter, driven on a small runtime of its own.
///
/// OpenTelemetry's batch processor exports from a plain thread, but the tonic exporter needs
/// a Tokio reactor; without one every export fails ("no reactor running"). This adapter owns
/// a one-thread runtime and runs each export on it.
#[derive(Debug)]
pub struct OtlpExporter {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl OtlpExporter {
    /// Configured by `OTEL_EXPORTER_OTLP_*`.
    pub fn from_env() -> Result<Self, String> {
        Self::build(None)
    }

    /// Exporting to `endpoint` (`http://host:port`), whatever the environment says.
    pub fn to(endpoint: &str) -> Result<Self, String> {
        Self::build(Some(endpoint))
    }

    fn build(endpoint: Option<&str>) -> Result<Self, String> {
        use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
        let tls = otlp_tls_from_env(endpoint)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trickle-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the OTLP exporter's runtime: {e}"))?;
        let built = {
            let _entered = runtime.enter();
            let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            let builder = match endpoint {
                Some(endpoint) => builder.with_endpoint(endpoint),
                None => builder,
            };
            let builder = match tls {
                Some(tls) => builder.with_tls_config(tls),
                None => builder,
            };
            builder.build()
        };
        match built {
            Ok(inner) => Ok(Self {
                inner: Arc::new(inner),
                runtime: Arc::new(runtime),
            }),
            Err(e) => {
                // Dropping a runtime inside the caller's async context panics (every
                // `trickle serve` starts telemetry inside one): let it go in the background.
                runtime.shutdown_background();
                Err(format!(
                    "invalid OTLP exporter configuration (OTEL_EXPORTER_OTLP_*): {e}"
                ))
            }
        }
    }
}

/// The first set of `names`, trimmed.
fn first_env(names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| ((*name).to_owned(), v))
    })
}

/// TLS for an `https://` collector, from the standard variables (the `_TRACES_` ones win):
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (the CA to trust instead of the system's roots),
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `OTEL_EXPORTER_OTLP_CLIENT_KEY` (mutual TLS).
/// `None` for a plain-text endpoint. Headers (`OTEL_EXPORTER_OTLP_HEADERS`, API keys) are
/// read by the exporter itself and never logged.
fn otlp_tls_from_env(
    endpoint: Option<&str>,
) -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    let endpoint = match endpoint {
        Some(endpoint) => endpoint.to_owned(),
        None => first_env(&[
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ])
        .map(|(_, v)| v)
        .unwrap_or_default(),
    };
    if !endpoint.starts_with("https://") {
        return Ok(None);
    }
    let read = |name: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read {name} ({path}): {e}"))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    match first_env(&[
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ]) {
        Some((name, path)) => {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(&name, &path)?));
        }
        None => tls = tls.with_native_roots(),
    }
    let cert = first_env(&[
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    ]);
    let key = first_env(&[
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    ]);
    match (cert, key) {
        (Some((cert_name, cert)), Some((key_name, key))) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(&cert_name, &cert)?,
                read(&key_name, &key)?,
            ));
        }
        (None, None) => {}
        (Some((name, _)), None) | (None, Some((name, _))) => {
            return Err(format!(
                "{name} is set but not its pair: a client certificate needs both \
                 OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY"
            ));
        }
    }
    Ok(Some(tls))
}

impl SpanExporter for OtlpExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    e.to_string(),
                )),
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

//! What the services log and export, captured in memory: the log lines (to prove no secret is
//! ever written) and the spans, received by a real OTLP/gRPC server in this process.

use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut inner) = self.0.lock() {
            inner.extend_from_slice(buf);
        }
        if std::env::var_os("TRICKLE_TEST_LOG_STDERR").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the services of every test in this binary logged and exported.
struct Captured {
    logs: Arc<Mutex<Vec<u8>>>,
    spans: Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>,
    guard: trickle_telemetry::TelemetryGuard,
}

static CAPTURED: OnceLock<Captured> = OnceLock::new();

type SpanBuffer = Arc<Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>;

/// An OTLP/gRPC trace receiver, like a collector's, keeping what it receives and the
/// `x-api-key` header each export carried (how vendors take their API key).
struct OtlpReceiver {
    spans: SpanBuffer,
    api_keys: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpReceiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        if let Some(key) = request.metadata().get("x-api-key")
            && let (Ok(key), Ok(mut keys)) = (key.to_str(), self.api_keys.lock())
        {
            keys.push(key.to_owned());
        }
        let resource_spans = request.into_inner().resource_spans;
        if let Ok(mut spans) = self.spans.lock() {
            spans.extend(resource_spans);
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A running OTLP receiver (a collector stand-in that is a real OTLP/gRPC server).
pub struct OtlpSink {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS.
    pub endpoint: String,
    pub spans: SpanBuffer,
    pub api_keys: Arc<Mutex<Vec<String>>>,
}

impl OtlpSink {
    /// The `service.name` of every resource that exported spans.
    pub fn service_names(&self) -> Vec<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let spans = self.spans.lock().expect("spans");
        spans
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .filter(|kv| kv.key == "service.name")
            .filter_map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(name)) => Some(name.clone()),
                    _ => None,
                },
            )
            .collect()
    }
}

/// Start an OTLP receiver on a thread and runtime of its own (it must outlive every test's
/// runtime), serving TLS with `tls`'s certificate when given.
pub fn start_otlp_sink(tls: Option<&trickle_service_kit::tls::TlsConfig>) -> OtlpSink {
    let spans: SpanBuffer = Arc::new(Mutex::new(Vec::new()));
    let api_keys = Arc::new(Mutex::new(Vec::new()));
    let server_tls = tls.map(|tls| {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            std::fs::read(&tls.cert_file).expect("cert"),
            std::fs::read(&tls.key_file).expect("key"),
        ))
    });
    let receiver = OtlpReceiver {
        spans: Arc::clone(&spans),
        api_keys: Arc::clone(&api_keys),
    };
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("otlp-receiver".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP receiver");
                address_tx.send(listener.local_addr().expect("addr")).expect("send address");
                let service =
                    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(receiver);
                let mut builder = tonic::transport::Server::builder();
                if let Some(tls) = server_tls {
                    builder = builder.tls_config(tls).expect("receiver TLS");
                }
                let _ = builder
                    .add_service(service)
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            });
        })
        .expect("start the OTLP receiver");
    let addr = address_rx.recv().expect("receiver address");
    let endpoint = if tls.is_some() {
        format!("https://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    OtlpSink {
        endpoint,
        spans,
        api_keys,
    }
}

/// Set `TRICKLE_TEST_LOG_STDERR=1` to see the logs on stderr too (with `--nocapture`).
///
/// Install, once per test binary, Trickle's own telemetry (the same code the services run
/// with) writing JSON log lines at DEBUG (Trickle's crates at TRACE) to memory and exporting
/// spans over OTLP/gRPC to a receiver in this process.
pub fn capture_logs() {
    CAPTURED.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = start_otlp_sink(None);
        let (endpoint, spans) = (sink.endpoint, sink.spans);
        let writer = SharedBuffer(Arc::clone(&logs));
        let guard = trickle_telemetry::logs::init_with_writer(
            "trickle-tests",
            trickle_telemetry::LogFormat::Json,
            move || writer.clone(),
            Some(&endpoint),
            Some(
                "debug,trickle_user_store=trace,trickle_legacy_connector=trace,trickle_migration_coordinator=trace,\
                 trickle_auth_frontend=trace,trickle_password=trace,trickle_service_kit=trace,trickle_telemetry=trace,\
                 opentelemetry=warn,opentelemetry_sdk=warn",
            ),
        )
        .expect("install telemetry");
        Captured { logs, spans, guard }
    });
}

/// Everything logged so far by every test in this binary.
pub fn captured_logs() -> String {
    let captured = CAPTURED.get().expect("capture_logs was called");
    let bytes = captured.logs.lock().expect("log buffer").clone();
    let mut out = String::from_utf8_lossy(&bytes).into_owned();
    out.push('\n');
    out
}

/// Every span exported so far, after flushing the exporter.
pub fn exported_spans() -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    let captured = CAPTURED.get().expect("capture_logs was called");
    captured.guard.force_flush();
    let resource_spans = captured.spans.lock().expect("spans").clone();
    resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

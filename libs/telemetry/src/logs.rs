//! Installing the global subscriber: `RUST_LOG` filtering, log lines, and the OpenTelemetry
//! layer.
//!
//! The OpenTelemetry layer is always installed, so every request has a trace id to log and to
//! propagate even when nothing is exported. An OTLP exporter is added only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set; `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER[_ARG]` are honoured by the SDK.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (what log pipelines ingest).
    Json,
    /// Compact text, for people at a terminal.
    Text,
    /// Text on a terminal, JSON otherwise.
    Auto,
}

/// Keeps the tracer provider alive; dropping it flushes and shuts the exporter down.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Export every finished span now (blocking).
    pub fn force_flush(&self) {
        let provider = self.provider.clone();
        let _ = std::thread::spawn(move || provider.force_flush()).join();
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Flush what the batch processor still holds. On a thread of its own: shutting down
        // blocks until the last export is done, which must not stall an async runtime.
        let provider = self.provider.clone();
        let flushed = std::thread::spawn(move || provider.shutdown()).join();
        if let Ok(Err(e)) = flushed {
            eprintln!("trickle: flushing traces failed: {e}");
        }
    }
}

/// Modules whose own debug output is noise for an operator.
const DEFAULT_FILTER: &str =
    "info,h2=warn,hyper=warn,hyper_util=warn,tower=warn,tonic=warn,sqlx=warn,opentelemetry=warn";

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
        && std::env::var("OTEL_TRACES_EXPORTER").map_or(true, |v| v != "none")
}

/// The tracer provider: always a real one (for trace ids), exporting only when configured —
/// by the `OTEL_*` variables, or to `otlp_endpoint` when given (tests).
pub fn tracer_provider(
    default_service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, String> {
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(default_service_name.to_owned());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if let Some(endpoint) = otlp_endpoint {
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(
            crate::propagation::OtlpExporter::to(endpoint)?,
        )
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(std::time::Duration::from_millis(100))
                .build(),
        )
        .build();
        builder = builder.with_span_processor(processor);
    } else if otlp_configured() {
        builder = builder.with_batch_exporter(crate::propagation::OtlpExporter::from_env()?);
    }
    Ok(builder.build())
}

/// Install the global subscriber. Call once, at start.
pub fn init(default_service_name: &str, format: LogFormat) -> Result<TelemetryGuard, String> {
    init_with_writer(default_service_name, format, std::io::stderr, None, None)
}

/// Install the global subscriber writing log lines to `writer`, exporting spans to
/// `otlp_endpoint` when given (tests capture both).
pub fn init_with_writer<W>(
    default_service_name: &str,
    format: LogFormat,
    writer: W,
    otlp_endpoint: Option<&str>,
    filter: Option<&str>,
) -> Result<TelemetryGuard, String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let provider = tracer_provider(default_service_name, otlp_endpoint)?;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer("trickle");
    let filter = match filter {
        Some(directives) => EnvFilter::new(directives),
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .event_format(JsonWithTraceIds)
            .with_ansi(false)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(writer)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(fmt_layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// JSON lines carrying the trace and span id of the request they belong to.
struct JsonWithTraceIds;

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), now_rfc3339().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        for (k, v) in fields.0 {
            line.insert(k, v);
        }
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            // The span's fields (user id, outcome, …) as the fmt layer recorded them.
            if let Some(recorded) = span
                .extensions()
                .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                && !recorded.fields.is_empty()
            {
                line.insert("span_fields".into(), recorded.fields.as_str().into());
            }
            let cx = tracing::Span::current().context();
            let span_ref = cx.span();
            let sc = span_ref.span_context();
            if sc.is_valid() {
                line.insert("trace_id".into(), sc.trace_id().to_string().into());
                line.insert("span_id".into(), sc.span_id().to_string().into());
            }
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        writer.write_str(&text)
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

//! Telemetry shared by every Trickle service: logs (JSON lines with trace and span ids, or
//! text on a terminal), OpenTelemetry traces exported over OTLP/gRPC when the standard
//! `OTEL_*` variables ask for it, W3C trace context carried across every gRPC hop, and the
//! Prometheus metrics each service exposes on `/metrics`.

pub mod logs;
pub mod metrics;
pub mod propagation;

pub use logs::{LogFormat, TelemetryGuard, init};

//! The Prometheus metrics of every Trickle service, in one registry per process, and the
//! small HTTP server that exposes them on `/metrics`.
//!
//! Names follow Prometheus conventions (`trickle_` prefix, `_total` counters, `_seconds`
//! histograms); every label has a bounded set of values — never a user id or an email.

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpListener;

/// Every metric Trickle exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    /// Logins by result: `success`, `migrated`, `invalid_credentials`, `legacy_unavailable`,
    /// `store_unavailable`, `overloaded`, `invalid_request`, `error`.
    pub logins: IntCounterVec,
    /// Migration attempts by outcome and source (`login`, `reset`, `backfill`).
    pub migrations: IntCounterVec,
    /// Queries to the legacy store, by operation (`find_user`, `count_users`).
    pub legacy_request_duration: HistogramVec,
    /// Failed legacy queries by reason (`timeout`, `unavailable`, `config`).
    pub legacy_errors: IntCounterVec,
    /// Password hashing by scheme (`argon2id`, `bcrypt`, …) and operation (`hash`, `verify`).
    pub hash_duration: HistogramVec,
    /// Hashing jobs admitted and not finished (running or queued), per pool.
    pub hash_queue_depth: IntGaugeVec,
    /// Hashing jobs a pool admits before refusing (`workers + queue`), per pool.
    pub hash_queue_capacity: IntGaugeVec,
    /// Users in the store by source, as the coordinator last counted them.
    pub users_migrated: IntGaugeVec,
    /// Legacy users not yet migrated or deleted, as the coordinator last counted them
    /// (-1 when the legacy connector cannot count).
    pub legacy_users_remaining: IntGauge,
    /// 1 while the coordinator's circuit breaker keeps logins away from a failing legacy
    /// connector, 0 otherwise.
    pub legacy_circuit_open: IntGauge,
    /// gRPC calls served, by service, method and status code.
    pub grpc_request_duration: HistogramVec,
    /// gRPC calls received and not yet answered, by service and method: what a draining
    /// replica still has to finish.
    pub grpc_in_flight: IntGaugeVec,
    /// Rows the user-store's retention task deleted, by table (`tickets`, `login_throttle`,
    /// `mfa_challenges`, `events`).
    pub pruned_rows: IntCounterVec,
    /// Events handed to the webhook, by outcome: `delivered` (a 2xx answer), `dead_letter`
    /// (given up after `webhook_max_attempts`), `pruned` (gone from the store before they
    /// could be sent).
    pub webhook_events: IntCounterVec,
    /// Webhook POSTs that failed (an error or a non-2xx answer), by `reason`: `status`,
    /// `timeout`, `connect`, `other`. Each is retried with backoff.
    pub webhook_failed_attempts: IntCounterVec,
    /// The position of the last event the webhook has settled (delivered or dead-lettered).
    pub webhook_position: IntGauge,
}

/// Buckets from a fast lookup to a slow legacy store or a saturated hash pool.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let histogram =
        |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
    let gauge_vec =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
    let metrics = Metrics {
        logins: counter(
            "trickle_logins_total",
            "Logins (and second-factor steps) answered by the auth-frontend, by result.",
            &["result"],
        )?,
        migrations: counter(
            "trickle_migrations_total",
            "Attempts to move a user from the legacy store into the store, by outcome and source.",
            &["outcome", "source"],
        )?,
        legacy_request_duration: histogram(
            "trickle_legacy_request_duration_seconds",
            "Time the legacy store took to answer one query.",
            &["operation"],
        )?,
        legacy_errors: counter(
            "trickle_legacy_errors_total",
            "Legacy store queries that failed, by reason.",
            &["reason"],
        )?,
        hash_duration: histogram(
            "trickle_password_hash_duration_seconds",
            "Time to hash or verify one password, by scheme and operation.",
            &["scheme", "operation"],
        )?,
        hash_queue_depth: gauge_vec(
            "trickle_hash_pool_queue_depth",
            "Password hashing jobs admitted and not finished, running or waiting.",
            &["pool"],
        )?,
        hash_queue_capacity: gauge_vec(
            "trickle_hash_pool_capacity",
            "Password hashing jobs a pool admits before refusing new ones.",
            &["pool"],
        )?,
        users_migrated: gauge_vec(
            "trickle_users",
            "Users in the store by how they got there.",
            &["source"],
        )?,
        legacy_users_remaining: {
            let g = IntGauge::new(
                "trickle_legacy_users_remaining",
                "Legacy users neither migrated nor deleted (-1: the legacy connector cannot count).",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        legacy_circuit_open: {
            let g = IntGauge::new(
                "trickle_legacy_circuit_open",
                "1 while the coordinator stops calling a failing legacy connector (circuit open).",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        grpc_request_duration: histogram(
            "trickle_grpc_server_request_duration_seconds",
            "gRPC calls served, by service, method and status code.",
            &["service", "method", "code"],
        )?,
        grpc_in_flight: gauge_vec(
            "trickle_grpc_server_in_flight_requests",
            "gRPC calls received and not yet answered, by service and method.",
            &["service", "method"],
        )?,
        pruned_rows: counter(
            "trickle_store_pruned_rows_total",
            "Rows the user-store's retention task deleted (expired tickets, stale throttle rows), by table.",
            &["table"],
        )?,
        webhook_events: counter(
            "trickle_webhook_events_total",
            "Events handed to the webhook, by outcome (delivered, dead_letter, pruned).",
            &["outcome"],
        )?,
        webhook_failed_attempts: counter(
            "trickle_webhook_failed_attempts_total",
            "Webhook POSTs that failed and will be retried, by reason (status, timeout, connect, other).",
            &["reason"],
        )?,
        webhook_position: {
            let g = IntGauge::new(
                "trickle_webhook_position",
                "Position of the last event the webhook settled (delivered or dead-lettered).",
            )?;
            registry.register(Box::new(g.clone()))?;
            g
        },
        registry,
    };
    // Which build is running where: `count by (version) (trickle_build_info)` during a rollout.
    let build_info = IntGaugeVec::new(
        Opts::new(
            "trickle_build_info",
            "Always 1; the labels say which Trickle build this process runs.",
        ),
        &["version"],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    metrics.registry.register(Box::new(build_info))?;
    metrics
        .registry
        .register(Box::new(ProcessMetrics::new()?))?;
    Ok(metrics)
}

/// The standard `process_*` metrics (CPU seconds, resident memory, open descriptors, start
/// time), read from `/proc/self` at each scrape. Written here rather than through
/// prometheus' `process` feature, whose procfs crate would bring a second rustix.
struct ProcessMetrics {
    cpu: prometheus::Counter,
    resident: prometheus::Gauge,
    virtual_memory: prometheus::Gauge,
    open_fds: prometheus::Gauge,
    start_time: prometheus::Gauge,
    descs: Vec<prometheus::core::Desc>,
}

impl ProcessMetrics {
    fn new() -> Result<Self, prometheus::Error> {
        let cpu = prometheus::Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )?;
        let resident = prometheus::Gauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_memory = prometheus::Gauge::new(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds =
            prometheus::Gauge::new("process_open_fds", "Number of open file descriptors.")?;
        let start_time = prometheus::Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        // When the registry asks, the process has just started: near enough.
        start_time.set(chrono::Utc::now().timestamp() as f64);
        let descs = [
            &cpu as &dyn prometheus::core::Collector,
            &resident,
            &virtual_memory,
            &open_fds,
            &start_time,
        ]
        .iter()
        .flat_map(|c| c.desc().into_iter().cloned())
        .collect();
        Ok(Self {
            cpu,
            resident,
            virtual_memory,
            open_fds,
            start_time,
            descs,
        })
    }

    /// Refresh from /proc/self; a field that cannot be read keeps its last value.
    fn refresh(&self) {
        // Linux reports CPU time in clock ticks; USER_HZ is 100 on every Linux ABI.
        const TICKS_PER_SECOND: f64 = 100.0;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            // Fields after the command name, counted from 3 (state).
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                let total = (utime + stime) / TICKS_PER_SECOND;
                let delta = total - self.cpu.get();
                if delta > 0.0 {
                    self.cpu.inc_by(delta);
                }
            }
        }
        // VmRSS / VmSize in kB: independent of the page size.
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let kib = |rest: &str| {
                    rest.split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<f64>().ok())
                };
                if let Some(rest) = line.strip_prefix("VmRSS:")
                    && let Some(kib) = kib(rest)
                {
                    self.resident.set(kib * 1024.0);
                } else if let Some(rest) = line.strip_prefix("VmSize:")
                    && let Some(kib) = kib(rest)
                {
                    self.virtual_memory.set(kib * 1024.0);
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(entries.count() as f64);
        }
    }
}

impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.refresh();
        [
            self.cpu.collect(),
            self.resident.collect(),
            self.virtual_memory.collect(),
            self.open_fds.collect(),
            self.start_time.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    // The names and labels above are constants: registration cannot fail at run time, and
    // a test (`every_metric_registers`) proves it.
    METRICS
        .get_or_init(|| build().unwrap_or_else(|e| panic!("metric definitions are invalid: {e}")))
}

pub(crate) fn grpc_request(service: &str, method: &str, code: i32, elapsed: Duration) {
    let code = code.to_string();
    metrics()
        .grpc_request_duration
        .with_label_values(&[service, method, code.as_str()])
        .observe(elapsed.as_secs_f64());
}

/// Counts one call in flight until dropped (answered, failed or cancelled alike).
pub(crate) struct InFlight(prometheus::IntGauge);

impl InFlight {
    pub(crate) fn start(service: &str, method: &str) -> Self {
        let gauge = metrics()
            .grpc_in_flight
            .with_label_values(&[service, method]);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&metrics().registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Serve `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    if request.uri().path() == "/metrics" && request.method() == hyper::Method::GET
                    {
                        hyper::Response::builder()
                            .header("content-type", prometheus::TEXT_FORMAT)
                            .body(Full::new(Bytes::from(render())))
                    } else {
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"only /metrics here\n")))
                    }
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        metrics().logins.with_label_values(&["success"]).inc();
        grpc_request(
            "trickle.auth.v1.AuthService",
            "Login",
            0,
            Duration::from_millis(3),
        );
        let text = render();
        assert!(
            text.contains("trickle_logins_total{result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE trickle_grpc_server_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains(
            "trickle_grpc_server_request_duration_seconds_count{code=\"0\",method=\"Login\",service=\"trickle.auth.v1.AuthService\"} 1"
        ), "{text}");
        assert!(
            text.contains(&format!(
                "trickle_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        // The process metrics read this very process: some memory, some descriptors.
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing: {text}"))
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(value("process_start_time_seconds") > 1.7e9, "{text}");
    }
}

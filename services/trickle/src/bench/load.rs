//! Driving load: closed-loop and paced workers over a time window, and what they saw.

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) warmup: Duration,
    pub(super) measure: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) latencies: Vec<Duration>,
}

impl Outcome {
    pub(super) fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
    }

    pub(super) fn latency(&self) -> Latency {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index].as_secs_f64() * 1000.0
        };
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One call of a scenario.
pub(super) type OpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>> + Send>>;
pub(super) type Op = Arc<dyn Fn(usize, u64) -> OpFuture + Send + Sync>;

/// A failed call: its name (a gRPC code or a bench reason) and, for a refusal, the delay
/// the service asked for in its RetryInfo.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) name: String,
    pub(super) retry_after: Option<Duration>,
}

impl Failure {
    pub(super) fn of(status: &tonic::Status) -> Self {
        Self {
            name: format!("{:?}", status.code()),
            retry_after: trickle_service_kit::rpc::retry_delay_of(status),
        }
    }

    pub(super) fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            retry_after: None,
        }
    }
}

/// How callers behave when refused (`RESOURCE_EXHAUSTED` or `UNAVAILABLE`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Backoff {
    /// Wait for the service's RetryInfo delay when it gives one (gRPC's pushback), with
    /// jitter; otherwise back off exponentially.
    Polite,
    /// Ignore RetryInfo: back off exponentially only (a client that does not read error
    /// details), which shows what each refusal costs.
    Exponential,
}

/// Run `op` from `concurrency` callers for the window; record the calls that end within it
/// (after the warm-up, before its end), whenever they started.
///
/// Ends, not starts: the rate is what the service completes per second. Counting only calls
/// that also *started* in the window drops those in flight at either edge, and undercounts
/// by latency ÷ window: nothing under a light load, but a quarter of the logins served when
/// 1,000 callers queue for ~4 s in a 15 s window.
pub(super) async fn drive(concurrency: usize, window: Window, backoff: Backoff, op: Op) -> Outcome {
    drive_until(
        concurrency,
        window,
        None,
        backoff,
        Arc::new(AtomicBool::new(false)),
        op,
    )
    .await
}

/// `rate`: calls per second over all callers, each caller on a fixed schedule (a call that
/// runs late does not shift the later ones: latency is measured from when it started).
pub(super) async fn drive_paced(concurrency: usize, window: Window, rate: f64, op: Op) -> Outcome {
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency.max(1) as f64 / rate));
    drive_until(
        concurrency,
        window,
        interval,
        Backoff::Polite,
        Arc::new(AtomicBool::new(false)),
        op,
    )
    .await
}

pub(super) async fn drive_until(
    concurrency: usize,
    window: Window,
    interval: Option<Duration>,
    backoff: Backoff,
    stop: Arc<AtomicBool>,
    op: Op,
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.measure;
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (op, stop) = (Arc::clone(&op), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut iteration = 0u64;
            let mut refusals = 0u32;
            // Callers start spread over one interval, not all at once.
            let mut next_call =
                interval.map(|i| start + i.mul_f64(worker as f64 / concurrency.max(1) as f64));
            loop {
                if let (Some(at), Some(interval)) = (next_call, interval) {
                    tokio::time::sleep_until(at.into()).await;
                    next_call = Some(at + interval);
                }
                let begun = Instant::now();
                if begun >= end || stop.load(Ordering::Relaxed) {
                    return outcome;
                }
                let result = op(worker, iteration).await;
                iteration += 1;
                let ended = Instant::now();
                let counted = ended >= measure_from && ended <= end;
                if result.is_ok() {
                    refusals = 0;
                }
                match result {
                    Ok(()) if counted => {
                        outcome.ok += 1;
                        outcome.latencies.push(ended - begun);
                    }
                    Ok(()) => {}
                    Err(failure) => {
                        let reason = failure.name;
                        if counted {
                            *outcome.errors.entry(reason.clone()).or_default() += 1;
                        }
                        if reason == "ResourceExhausted" || reason == "Unavailable" {
                            // A polite client backs off when told the service is full: for
                            // the service's RetryInfo delay plus up to half of it again when
                            // it gives one (jitter, so that refused callers do not come back
                            // in step); otherwise 50–100 ms after the first refusal,
                            // doubling up to 0.8–1.6 s.
                            refusals += 1;
                            let spread = worker as u64 * 7919 + iteration * 104_729;
                            let pause = match (backoff, failure.retry_after) {
                                (Backoff::Polite, Some(delay)) => {
                                    delay + delay.mul_f64((spread % 1000) as f64 / 2000.0)
                                }
                                _ => {
                                    let ceiling = 50u64 << refusals.min(5);
                                    let jitter = spread % ceiling;
                                    Duration::from_millis(ceiling / 2 + jitter / 2)
                                }
                            };
                            tokio::time::sleep(pause).await;
                        }
                        if reason == "OutOfLegacyUsers" {
                            return outcome;
                        }
                    }
                }
            }
        }));
    }
    let mut total = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => total.merge(outcome),
            Err(_) => *total.errors.entry("BenchTaskPanicked".into()).or_default() += 1,
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls of 300 ms from 4 callers, measured from 100 ms to 800 ms: each caller's calls
    /// end at ~300 and ~600 ms, inside the window; the first started before it (in the
    /// warm-up) and still counts, as the service completed it in the window. Margins of
    /// 200 ms keep a loaded machine from moving a call across an edge.
    #[tokio::test]
    async fn the_rate_counts_the_calls_that_end_in_the_window() {
        let op: Op = Arc::new(|_, _| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            })
        });
        let window = Window {
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(700),
        };
        let outcome = drive(4, window, Backoff::Polite, op).await;
        assert_eq!(outcome.ok, 8, "{outcome:?}");
        assert!(outcome.errors.is_empty(), "{outcome:?}");
    }
}

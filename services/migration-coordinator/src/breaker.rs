//! A circuit breaker in front of the legacy connector. When the legacy store is down, every
//! first login would otherwise wait out the full deadline and add one more connection attempt
//! to a database that is already struggling; after a run of failures the breaker answers
//! UNAVAILABLE at once for a while, then lets one probe through to see whether it is back.
//! Migrated users never reach it (the store answers them), so they are not affected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::{Code, Status};

use crate::error::CoordinatorError;
use trickle_service_kit::Clock;

#[derive(Debug, Clone)]
pub struct LegacyBreaker {
    state: Arc<Mutex<State>>,
    /// Consecutive failures that open the circuit; 0 disables the breaker.
    failures_to_open: u32,
    open_for: Duration,
    clock: Clock,
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One call is probing; the others are refused until it answers. A probe whose caller
    /// gave up never answers, so after `open_for` another call may probe.
    Probing {
        since: Instant,
    },
}

impl LegacyBreaker {
    pub fn new(failures_to_open: u32, open_for: Duration, clock: Clock) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            failures_to_open,
            open_for,
            clock,
        }
    }

    /// Make one call to the legacy connector through the breaker: refused at once while the
    /// circuit is open, and its outcome recorded.
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CoordinatorError> {
        self.admit()?;
        let answer = call.await;
        self.record(&answer);
        answer
            .map(tonic::Response::into_inner)
            .map_err(|status| CoordinatorError::from_legacy(&status))
    }

    /// May this call go to the legacy connector?
    fn admit(&self) -> Result<(), CoordinatorError> {
        if self.failures_to_open == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        let now = self.clock.instant();
        let may_probe = match *state {
            State::Closed { .. } => return Ok(()),
            State::Open { until } => now >= until,
            State::Probing { since } => now.duration_since(since) >= self.open_for,
        };
        if may_probe {
            *state = State::Probing { since: now };
            return Ok(());
        }
        Err(CoordinatorError::LegacyUnavailable(
            "the legacy store failed repeatedly; not asking it again for a few seconds (circuit open)"
                .into(),
        ))
    }

    /// Tell the breaker how an admitted call ended.
    fn record<T>(&self, result: &Result<T, Status>) {
        if self.failures_to_open == 0 {
            return;
        }
        let failed = result.as_ref().err().is_some_and(|status| {
            // Only transport failures and deadlines: the connector could not reach its
            // database, or did not answer in time. A clean refusal (bad input, overload), a
            // bug (INTERNAL) or a configuration error says nothing about the legacy store's
            // health — and one bad row must never take first logins down for everyone.
            matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
            ) && trickle_service_kit::rpc::reason_of(status).as_deref()
                != Some(trickle_service_kit::rpc::reason::LEGACY_CONFIG)
        });
        let mut state = self.lock();
        let gauge = &trickle_telemetry::metrics::metrics().legacy_circuit_open;
        match *state {
            _ if !failed => {
                if !matches!(*state, State::Closed { .. }) {
                    tracing::info!("the legacy store answers again: circuit closed");
                }
                *state = State::Closed { failures: 0 };
                gauge.set(0);
            }
            State::Closed { failures } if failures + 1 < self.failures_to_open => {
                *state = State::Closed {
                    failures: failures + 1,
                };
            }
            _ => {
                if !matches!(*state, State::Open { .. }) {
                    tracing::warn!(
                        open_for_ms = u64::try_from(self.open_for.as_millis()).unwrap_or(u64::MAX),
                        "the legacy store keeps failing: circuit open, first logins answer UNAVAILABLE without asking it"
                    );
                }
                *state = State::Open {
                    until: self.clock.instant() + self.open_for,
                };
                gauge.set(1);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (every write is
        // a single assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), Status> {
        Err(Status::unavailable("down"))
    }

    #[test]
    fn opens_after_a_run_of_failures_and_probes_once_after_the_pause() {
        let clock = Clock::system();
        let breaker = LegacyBreaker::new(2, Duration::from_secs(5), clock.clone());
        breaker.admit().expect("closed");
        breaker.record(&down());
        breaker.admit().expect("one failure is not a run");
        breaker.record(&Err::<(), _>(Status::invalid_argument("bad email")));
        breaker.admit().expect("a clean refusal resets the run");
        breaker.record(&down());
        breaker.record(&down());
        assert!(breaker.admit().is_err(), "open");
        clock.advance(Duration::from_secs(4));
        assert!(breaker.admit().is_err(), "still open before the pause ends");
        clock.advance(Duration::from_secs(1));
        breaker.admit().expect("one probe");
        assert!(breaker.admit().is_err(), "only one probe at a time");
        breaker.record(&down());
        assert!(breaker.admit().is_err(), "a failed probe opens it again");
        clock.advance(Duration::from_secs(5));
        breaker.admit().expect("probe");
        breaker.record(&Ok(()));
        breaker.admit().expect("closed again");
        breaker.admit().expect("for everyone");
    }

    #[test]
    fn a_probe_that_never_answers_does_not_close_the_door_forever() {
        let clock = Clock::system();
        let breaker = LegacyBreaker::new(1, Duration::from_secs(5), clock.clone());
        breaker.record(&down());
        clock.advance(Duration::from_secs(5));
        breaker.admit().expect("probe, whose caller then gives up");
        assert!(breaker.admit().is_err());
        clock.advance(Duration::from_secs(5));
        breaker.admit().expect("another probe");
    }

    #[test]
    fn zero_disables_it() {
        let breaker = LegacyBreaker::new(0, Duration::from_secs(60), Clock::system());
        for _ in 0..10 {
            breaker.record(&down());
        }
        breaker.admit().expect("never opens");
    }
}

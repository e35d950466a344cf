//! Time as the services read it.
//!
//! Every decision that depends on time — a reset ticket's expiry, the end of a login lock, a
//! token's `iat`, the circuit breaker's pause, a backfill lease — reads it from the [`Clock`]
//! the service was built with, never from the system directly. In production that clock is
//! the system clock. Tests hold the same clock and move it forward, so that "the ticket has
//! expired" is a step of the test rather than a sleep that makes the suite slow and, on a
//! busy machine, flaky.
//!
//! The clock only moves forward, and it keeps running at the system's pace: an advanced clock
//! is the system clock plus an offset. So code that measures durations with
//! [`Clock::instant`] sees time pass normally, and a jump never makes time go backwards.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The system clock, plus however far a test has moved it forward.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    ahead_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock. (A clone shares the offset: every service of a test cluster built
    /// with clones of one clock sees the same time.)
    pub fn system() -> Self {
        Self::default()
    }

    fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// Wall-clock time, for timestamps that are stored or compared with stored ones.
    pub fn now(&self) -> DateTime<Utc> {
        let ahead = chrono::Duration::from_std(self.ahead()).unwrap_or(chrono::Duration::MAX);
        Utc::now() + ahead
    }

    /// Seconds since the Unix epoch (token `iat` and `exp`).
    pub fn unix_seconds(&self) -> i64 {
        self.now().timestamp()
    }

    /// A monotonic instant, for in-memory deadlines and pauses.
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// Move this clock, and every clone of it, forward. For tests: production code never
    /// calls it.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ahead_ms.fetch_add(by, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_move_together_and_only_forward() {
        let clock = Clock::system();
        let replica = clock.clone();
        let (wall, mono) = (replica.now(), replica.instant());
        clock.advance(Duration::from_secs(90));
        assert!(replica.now() - wall >= chrono::Duration::seconds(90));
        assert!(replica.instant() - mono >= Duration::from_secs(90));
        // An unrelated clock is not moved.
        assert!(Clock::system().now() < replica.now());
    }
}

//! Retention: expired tickets, second-factor challenges and throttle rows that count nothing any more are deleted by a
//! periodic task. Every replica runs it; the deletes are idempotent, so replicas racing each
//! other only find less to do.

use crate::repository::Repository;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What the task keeps, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub interval: Duration,
    /// Tickets stay this long after they expired.
    pub tickets_after: Duration,
    /// The longest throttle window (email or client): a row whose window started before it
    /// and locks nothing is spent.
    pub throttle_window: Duration,
    /// Events stay this long after they occurred.
    pub events_after: Duration,
}

impl Retention {
    /// Delete what has expired, once; the rows deleted per table.
    pub async fn prune_once(&self, repository: &Repository) -> Result<(u64, u64), sqlx::Error> {
        let now = repository.now();
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(1));
        // Each table is counted as soon as its delete commits, so a later failure does not
        // hide rows already gone, and a reader who sees the rows gone sees them counted soon.
        let metrics = trickle_telemetry::metrics::metrics();
        let count = |table: &str, rows: u64| {
            metrics.pruned_rows.with_label_values(&[table]).inc_by(rows);
        };
        let tickets = repository
            .prune_tickets(now - age(self.tickets_after))
            .await?;
        count("tickets", tickets);
        let throttle = repository
            .prune_throttle(now - age(self.throttle_window))
            .await?;
        count("login_throttle", throttle);
        // Second-factor challenges live minutes; kept as long as tickets for the same reason.
        let challenges = repository
            .prune_challenges(now - age(self.tickets_after))
            .await?;
        count("mfa_challenges", challenges);
        let events = repository
            .prune_events(now - age(self.events_after))
            .await?;
        count("events", events);
        Ok((tickets, throttle))
    }

    /// Prune every `interval` until the server stops (the task is aborted with it).
    pub fn spawn(self, repository: Repository) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match self.prune_once(&repository).await {
                    Ok((0, 0)) => {}
                    Ok((tickets, throttle)) => {
                        tracing::debug!(tickets, throttle, "pruned expired rows");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "pruning expired rows failed; retrying later")
                    }
                }
            }
        })
    }
}

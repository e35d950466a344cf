//! The outbox's sequencer: every store replica numbers committed events on a short period.
//! Replicas take turns (see [`Repository::sequence_events`]), so running it everywhere costs
//! one cheap query per replica and period and needs no leader.

use crate::repository::Repository;
use std::time::Duration;
use tokio::task::JoinHandle;

pub use crate::repository::{EventKind, StoredEvent};

/// Number events every `interval` until the server stops (the task is aborted with it).
pub fn spawn_sequencer(repository: Repository, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match repository.sequence_events().await {
                Ok(_) => failing = false,
                // Once per outage, not every 100 ms.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "numbering new events failed; retrying");
                }
                Err(_) => {}
            }
        }
    })
}

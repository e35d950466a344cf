//! The frontend's view of the migration mode, refreshed from the coordinator in the
//! background. It only decides whether an unknown user costs a dummy hash here or goes on
//! to the coordinator; the coordinator re-checks the mode itself before asking the legacy
//! store, so a stale view is never a correctness problem.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use trickle_proto::migration::v1::migration_coordinator_client::MigrationCoordinatorClient;
use trickle_proto::migration::v1::{GetModeRequest, Mode};
use trickle_service_kit::client::Channel;

const UNKNOWN: u8 = 0;
const IMPORT: u8 = 1;
const AUTHORITATIVE: u8 = 2;

#[derive(Debug, Clone)]
pub struct ModeWatch {
    mode: Arc<AtomicU8>,
}

impl ModeWatch {
    /// Start refreshing every `every` until the last clone of the watch is dropped.
    pub fn start(client: MigrationCoordinatorClient<Channel>, every: Duration) -> Self {
        let mode = Arc::new(AtomicU8::new(UNKNOWN));
        let weak = Arc::downgrade(&mode);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(mode) = weak.upgrade() else { return };
                match client.clone().get_mode(GetModeRequest {}).await {
                    Ok(answer) => {
                        let value = match Mode::try_from(answer.into_inner().mode) {
                            Ok(Mode::Authoritative) => AUTHORITATIVE,
                            Ok(Mode::Import) => IMPORT,
                            _ => UNKNOWN,
                        };
                        mode.store(value, Ordering::Relaxed);
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "cannot read the migration mode; keeping the last one")
                    }
                }
            }
        });
        Self { mode }
    }

    /// True only when the coordinator said so: an unknown mode sends unknown users on to the
    /// coordinator, which knows.
    pub fn is_authoritative(&self) -> bool {
        self.mode.load(Ordering::Relaxed) == AUTHORITATIVE
    }
}

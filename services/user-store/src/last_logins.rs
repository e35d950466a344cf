//! `last_login_at` written in batches, off the login's path (`[store] last_login_flush_ms`).
//!
//! A login that only needs its time recorded (no re-hash to store) answers once its
//! LOGIN_SUCCEEDED event is written; the time joins a buffer that one task writes every
//! `flush`, all the logins since in one statement, and once more when the server stops. So
//! `last_login_at` lags a login by up to `flush` plus the write, and a crash (not a stop)
//! loses at most that much of it; the event, written before the answer, is not delayed. A
//! failed write keeps the times for the next one. Several logins of one user in a window
//! are one entry, the latest.

use crate::repository::Repository;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// Users waiting beyond which the writer does not wait for its next tick.
const WRITE_EARLY_AT: usize = 10_000;
/// Users kept while writes fail; beyond, further times are dropped (they are only times,
/// and the database is down).
const MAX_PENDING: usize = 1_000_000;

/// The logins whose `last_login_at` is still to be written. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LastLogins {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<HashMap<String, DateTime<Utc>>>,
    write_now: Notify,
}

/// The task that writes [`LastLogins`]; [`LastLoginWriter::stop`] writes what is left and
/// ends it.
#[derive(Debug)]
pub struct LastLoginWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LastLogins {
    /// The buffer and the task that writes it to `repository` every `flush`.
    pub fn spawn(repository: Repository, flush: Duration) -> (Self, LastLoginWriter) {
        let last_logins = Self {
            shared: Arc::default(),
        };
        let (stop, mut stopped) = oneshot::channel::<()>();
        let writer = last_logins.clone();
        let task = tokio::spawn(async move {
            let mut failing = false;
            loop {
                // A dropped handle stops the writer too (after one last write).
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(flush) => false,
                    _ = writer.shared.write_now.notified() => false,
                    _ = &mut stopped => true,
                };
                writer.write(&repository, &mut failing).await;
                if stopping {
                    break;
                }
            }
        });
        (last_logins, LastLoginWriter { stop, task })
    }

    /// A login of `user_id` at `at`, to be written with the next batch.
    pub fn note(&self, user_id: &str, at: DateTime<Utc>) {
        let waiting = {
            let mut pending = self.pending();
            match pending.get_mut(user_id) {
                Some(latest) => *latest = (*latest).max(at),
                None => {
                    pending.insert(user_id.to_owned(), at);
                }
            }
            pending.len()
        };
        if waiting == WRITE_EARLY_AT {
            self.shared.write_now.notify_one();
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write everything noted so far; on failure, keep it for the next write.
    async fn write(&self, repository: &Repository, failing: &mut bool) {
        let batch: Vec<(String, DateTime<Utc>)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if batch.is_empty() {
            return;
        }
        match repository.record_last_logins(&batch).await {
            Ok(_) => *failing = false,
            Err(error) => {
                // Once per outage, not every flush.
                if !*failing {
                    tracing::warn!(%error, users = batch.len(), "writing last_login_at failed; keeping the times for the next write");
                }
                *failing = true;
                let mut pending = self.pending();
                for (user_id, at) in batch {
                    if pending.len() >= MAX_PENDING {
                        break;
                    }
                    let latest = pending.entry(user_id).or_insert(at);
                    *latest = (*latest).max(at);
                }
            }
        }
    }
}

impl LastLoginWriter {
    /// Write what is left and end the task (after the server's last call).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the last_login_at writer ended abnormally");
        }
    }
}

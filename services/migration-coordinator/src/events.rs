//! Events for other services: `EventFeed.WatchEvents` streams and the webhook. Both read the
//! user store's outbox through `ListEvents` after a position, so both resume exactly where
//! they stopped; neither keeps anything in memory that a restart would lose.

use crate::error::CoordinatorError;
use std::time::Duration;
use tokio::sync::mpsc;
use trickle_proto::events::v1::{Event, EventKind};
use trickle_proto::userstore::v1::ListEventsRequest;
use trickle_proto::userstore::v1::user_store_client::UserStoreClient;
use trickle_service_kit::client::Channel;

/// Events per `ListEvents` call of a stream.
const STREAM_PAGE: i32 = 500;

/// Reads the store's outbox.
#[derive(Debug, Clone)]
pub struct EventReader {
    store: UserStoreClient<Channel>,
    /// The wait between looks once caught up.
    pub poll: Duration,
}

impl EventReader {
    pub fn new(store: UserStoreClient<Channel>, poll: Duration) -> Self {
        Self { store, poll }
    }

    /// Up to `limit` events after `after`.
    pub async fn page(&self, after: i64, limit: i32) -> Result<Vec<Event>, CoordinatorError> {
        let mut store = self.store.clone();
        store
            .list_events(ListEventsRequest {
                after_position: after,
                limit,
            })
            .await
            .map(|response| response.into_inner().events)
            .map_err(|status| CoordinatorError::from_store(&status))
    }

    /// Stream events after `after` (only `kinds`, when not empty) into a channel, then new
    /// ones as they come, until the receiver is dropped. An error ends the stream: the
    /// caller resumes after the last position it saw.
    pub fn watch(
        &self,
        mut after: i64,
        kinds: Vec<EventKind>,
    ) -> mpsc::Receiver<Result<Event, CoordinatorError>> {
        let (sender, receiver) = mpsc::channel(64);
        let reader = self.clone();
        tokio::spawn(async move {
            loop {
                let events = match reader.page(after, STREAM_PAGE).await {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                let caught_up = events.len() < STREAM_PAGE as usize;
                for event in events {
                    after = event.position;
                    if !kinds.is_empty() && !kinds.contains(&event.kind()) {
                        continue;
                    }
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if caught_up {
                    // Also notices a caller that left while nothing happened.
                    tokio::select! {
                        () = tokio::time::sleep(reader.poll) => {}
                        () = sender.closed() => return,
                    }
                }
            }
        });
        receiver
    }
}

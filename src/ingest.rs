//! Group commit of accepted events. Each `POST /events` submits its event; one task writes every event
//! waiting at that moment in one transaction (one fsync for all of them), answers each request, and hands
//! the new events to the outbox publisher. Under load, batches grow by themselves; alone, an event is
//! written at once.

use std::time::Duration;

use crate::{
    batch::{BatchError, Batcher},
    outbox::Outbox,
    store::{DynStore, IngestOutcome, NewEvent},
};

/// Events written per transaction at most.
const MAX_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct EventWriter {
    batcher: Batcher<NewEvent, IngestOutcome>,
}

impl EventWriter {
    pub fn start(store: DynStore, outbox: Outbox, idempotency_window: Duration) -> Self {
        let window = chrono::Duration::from_std(idempotency_window).unwrap_or(chrono::Duration::days(1));
        let batcher = Batcher::spawn(MAX_BATCH, move |events: Vec<NewEvent>| {
            let (store, outbox) = (store.clone(), outbox.clone());
            async move {
                let outcomes = store.insert_events(&events, chrono::Utc::now() - window).await?;
                let fresh = events.into_iter().zip(&outcomes).filter(|(_, outcome)| !outcome.duplicate);
                outbox.committed(fresh.map(|(event, _)| event));
                Ok(outcomes)
            }
        });
        Self { batcher }
    }

    /// Writes one event (with others, if they arrive together); returns once it is committed.
    pub async fn write(&self, event: NewEvent) -> Result<IngestOutcome, BatchError> {
        self.batcher.submit(event).await
    }
}

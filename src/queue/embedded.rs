//! The embedded queue: bounded in-memory channels inside one `herald serve` process, backed by the store.
//! An event stays unpublished in the store until fan-out has taken it (its acknowledgement marks it
//! published, in batches), so a crash or a full channel loses nothing: the outbox relay hands unpublished
//! events over again (skipping those still in the channel, so nothing is handed over twice while it
//! waits). Delivery tasks are `queued` rows in the store; at start-up every queued row is made due again,
//! since the channel that held them is gone.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex as SyncMutex},
};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use super::{Acker, Consumer, DeliveryTask, EventMessage, Queue, QueueError, Received};
use crate::{outbox::PublishedMarker, store::DynStore};

/// Messages waiting in each channel before publishers wait (deliveries) or leave the rest to the
/// relay (events).
const CAPACITY: usize = 16_384;

#[derive(Debug)]
pub struct EmbeddedQueue {
    events: mpsc::Sender<Received<EventMessage>>,
    events_out: Mutex<Option<mpsc::Receiver<Received<EventMessage>>>>,
    deliveries: mpsc::Sender<Received<DeliveryTask>>,
    deliveries_out: Mutex<Option<mpsc::Receiver<Received<DeliveryTask>>>>,
    /// Marks events published once fan-out has taken them.
    published: PublishedMarker,
    /// Events in the channel or being fanned out, not yet marked published.
    in_flight: Arc<SyncMutex<HashSet<Uuid>>>,
}

impl EmbeddedQueue {
    pub fn new(store: DynStore) -> Self {
        let (events, events_out) = mpsc::channel(CAPACITY);
        let (deliveries, deliveries_out) = mpsc::channel(CAPACITY);
        let in_flight: Arc<SyncMutex<HashSet<Uuid>>> = Arc::new(SyncMutex::new(HashSet::new()));
        let marked = in_flight.clone();
        let published = PublishedMarker::start(store, move |ids| {
            let mut in_flight = marked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in ids {
                in_flight.remove(id);
            }
        });
        Self {
            in_flight,
            events,
            events_out: Mutex::new(Some(events_out)),
            deliveries,
            deliveries_out: Mutex::new(Some(deliveries_out)),
            published,
        }
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events {
            if !in_flight.insert(event.id) {
                continue;
            }
            let acker = Acker::MarkPublished(event.id, self.published.clone());
            if self.events.try_send(Received::new(event.clone(), acker, false)).is_err() {
                // Full: the event is safe in the store and the relay will hand it over later.
                in_flight.remove(&event.id);
                return Err(QueueError::Unavailable("embedded event queue is full".into()));
            }
        }
        Ok(())
    }

    async fn publish_deliveries(&self, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        for task in tasks {
            self.deliveries
                .send(Received::new(task.clone(), Acker::Nothing, false))
                .await
                .map_err(|_| QueueError::Unavailable("embedded delivery queue is closed".into()))?;
        }
        Ok(())
    }

    async fn consume_events(&self, _prefetch: u16) -> Result<Consumer<EventMessage>, QueueError> {
        let receiver = self.events_out.lock().await.take();
        receiver.map(Consumer::new).ok_or_else(|| {
            QueueError::Unavailable("the embedded event queue has one consumer already".into())
        })
    }

    async fn consume_deliveries(&self, _prefetch: u16) -> Result<Consumer<DeliveryTask>, QueueError> {
        let receiver = self.deliveries_out.lock().await.take();
        receiver.map(Consumer::new).ok_or_else(|| {
            QueueError::Unavailable("the embedded delivery queue has one consumer already".into())
        })
    }

    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }

    fn confirms_publication(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn close(&self) {}
}

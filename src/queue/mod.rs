//! Transport of work between the stages: committed events to fan-out, delivery tasks to the delivery
//! workers. Two implementations behind [`Queue`]: [`rabbitmq`] (production: durable quorum queues,
//! publisher confirms, competing worker processes) and [`embedded`] (one process: in-memory channels, with
//! the store as the durable copy). The store is always the source of truth; the queue only moves work.

pub mod embedded;
pub mod rabbitmq;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{config::Settings, store::DynStore};

/// A shared handle on the queue.
pub type DynQueue = Arc<dyn Queue>;

/// A committed event on its way to fan-out. `payload` is the contract body exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    pub payload: Bytes,
}

/// One attempt to deliver an event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTask {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    pub organization_id: Uuid,
    /// The number of this attempt (1 for the first).
    pub attempt: u32,
    pub event_type: String,
    pub payload: Bytes,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// The broker cannot be reached right now; the work stays in the store and is retried.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (nack, or unroutable with `mandatory`).
    #[error("queue refused the message: {0}")]
    Refused(String),
}

/// Moves work between stages.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes committed events to fan-out; with RabbitMQ, returns once the broker has confirmed them.
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError>;
    /// Publishes delivery tasks; returns once the broker has confirmed them (or the channel took them).
    async fn publish_deliveries(&self, tasks: &[DeliveryTask]) -> Result<(), QueueError>;
    /// Starts receiving events for fan-out, at most `prefetch` unacknowledged at a time.
    async fn consume_events(&self, prefetch: u16) -> Result<Consumer<EventMessage>, QueueError>;
    /// Starts receiving delivery tasks, at most `prefetch` unacknowledged at a time.
    async fn consume_deliveries(&self, prefetch: u16) -> Result<Consumer<DeliveryTask>, QueueError>;
    /// Whether the queue can take work now (readiness).
    async fn check(&self) -> Result<(), QueueError>;
    /// `true` when a successful [`Queue::publish_events`] makes the events durable, so the publisher marks
    /// them published; `false` when the queue marks them itself once fan-out has taken them (embedded).
    fn confirms_publication(&self) -> bool;
    /// A short name for logs and readiness: `rabbitmq` or `embedded`.
    fn kind(&self) -> &'static str;
    /// Stops consuming and closes connections; unacknowledged messages go back to the broker.
    async fn close(&self);
}

/// The queue the settings select: RabbitMQ when `queue.url` is set, else the embedded queue.
pub async fn connect(settings: &Settings, store: &DynStore) -> anyhow::Result<DynQueue> {
    Ok(match &settings.queue.url {
        Some(url) => Arc::new(rabbitmq::RabbitQueue::connect(url.expose(), &settings.queue.prefix).await?),
        None => Arc::new(embedded::EmbeddedQueue::new(store.clone())),
    })
}

/// A stream of received messages.
#[derive(Debug)]
pub struct Consumer<T> {
    receiver: mpsc::Receiver<Received<T>>,
}

impl<T> Consumer<T> {
    pub(crate) fn new(receiver: mpsc::Receiver<Received<T>>) -> Self {
        Self { receiver }
    }

    /// The next message; `None` once the queue is closed.
    pub async fn next(&mut self) -> Option<Received<T>> {
        self.receiver.recv().await
    }

    /// Whatever is waiting right now, up to `limit`, without waiting (for batching).
    pub fn drain_ready(&mut self, into: &mut Vec<Received<T>>, limit: usize) {
        while into.len() < limit {
            match self.receiver.try_recv() {
                Ok(message) => into.push(message),
                Err(_) => break,
            }
        }
    }
}

/// A message and the means to settle it. Dropping it unsettled leaves it to the broker (redelivered
/// after the connection closes) or, embedded, to the store's recovery.
#[derive(Debug)]
pub struct Received<T> {
    pub message: T,
    /// The broker delivered it before without an acknowledgement (a consumer died holding it).
    pub redelivered: bool,
    acker: Acker,
}

#[derive(Debug)]
pub(crate) enum Acker {
    Amqp(lapin::Acker),
    /// Embedded event: acknowledging marks it published (fan-out has it).
    MarkPublished(Uuid, crate::outbox::PublishedMarker),
    /// Embedded delivery task: the store already holds the outcome.
    Nothing,
}

impl<T> Received<T> {
    pub(crate) fn new(message: T, acker: Acker, redelivered: bool) -> Self {
        Self { message, redelivered, acker }
    }

    /// Done with: the outcome is recorded.
    pub async fn ack(self) {
        match self.acker {
            Acker::Amqp(acker) => {
                if let Err(error) = acker.ack(lapin::options::BasicAckOptions::default()).await {
                    tracing::warn!(%error, "ack failed; the broker will redeliver the message");
                }
            }
            Acker::MarkPublished(id, marker) => marker.mark(id),
            Acker::Nothing => {}
        }
    }

    /// Not handled, hand it back for another consumer (shutdown, or a transient failure).
    pub async fn requeue(self) {
        if let Acker::Amqp(acker) = self.acker {
            let options = lapin::options::BasicNackOptions { multiple: false, requeue: true };
            if let Err(error) = acker.nack(options).await {
                tracing::warn!(%error, "nack failed; the broker will redeliver the message");
            }
        }
    }

    /// Cannot ever be handled: send it to the dead-letter queue.
    pub async fn dead_letter(self) {
        if let Acker::Amqp(acker) = self.acker {
            let options = lapin::options::BasicRejectOptions { requeue: false };
            if let Err(error) = acker.reject(options).await {
                tracing::warn!(%error, "reject failed; the broker will redeliver the message");
            }
        }
    }
}

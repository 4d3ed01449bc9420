//! Transport of work between the stages: committed events to fan-out, delivery tasks to the delivery
//! workers. Two implementations behind [`Queue`]: [`rabbitmq`] (production: durable quorum queues,
//! publisher confirms, competing worker processes) and [`embedded`] (one process: in-memory channels, with
//! the store as the durable copy). The store is always the source of truth; the queue only moves work.

pub(crate) mod embedded;
pub mod rabbitmq;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A shared handle on the queue.
pub type DynQueue = Arc<dyn Queue>;

/// A committed event on its way to fan-out. `payload` is the contract body exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    pub payload: Bytes,
    /// Fan-out delivers this event to this webhook only (webhook.test); None: every subscriber.
    pub only_webhook: Option<Uuid>,
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
    /// Messages waiting in each queue, named as in the `herald_queue_depth_messages` metric (`fanout`,
    /// `deliveries`, `dead_letter`; embedded: `embedded_events`, `embedded_deliveries`). Empty when the
    /// broker cannot be asked right now.
    async fn depths(&self) -> Vec<(&'static str, u64)>;
    /// A short name for logs and readiness: `rabbitmq` or `embedded`.
    fn kind(&self) -> &'static str;
    /// Stops consuming and closes connections; unacknowledged messages go back to the broker.
    async fn close(&self);
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
    settle: Box<dyn Settle>,
}

/// Settles a received message with whatever delivered it: the broker's acknowledgement (RabbitMQ), or
/// the embedded queue's own bookkeeping. Failures are logged, never returned: an unsettled message comes
/// back (redelivered by the broker, or recovered from the store).
#[async_trait]
pub(crate) trait Settle: Send + Sync + std::fmt::Debug {
    /// Done with: the outcome is recorded.
    async fn ack(self: Box<Self>);
    /// Hand it back for another consumer.
    async fn requeue(self: Box<Self>);
    /// Never to be handled: to the dead-letter queue.
    async fn dead_letter(self: Box<Self>);
}

/// Settling changes nothing (tests that need a [`Received`] without a queue).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct NothingToSettle;

#[cfg(test)]
#[async_trait]
impl Settle for NothingToSettle {
    async fn ack(self: Box<Self>) {}
    async fn requeue(self: Box<Self>) {}
    async fn dead_letter(self: Box<Self>) {}
}

impl<T> Received<T> {
    pub(crate) fn new(message: T, settle: Box<dyn Settle>, redelivered: bool) -> Self {
        Self { message, redelivered, settle }
    }

    /// Done with: the outcome is recorded.
    pub async fn ack(self) {
        self.settle.ack().await;
    }

    /// Not handled, hand it back for another consumer (shutdown, or a transient failure).
    pub async fn requeue(self) {
        self.settle.requeue().await;
    }

    /// Cannot ever be handled: send it to the dead-letter queue.
    pub async fn dead_letter(self) {
        self.settle.dead_letter().await;
    }
}

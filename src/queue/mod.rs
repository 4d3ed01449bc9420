//! Transport of work between the stages: committed events to fan-out, delivery tasks to the delivery
//! workers. Two implementations behind [`Queue`]: [`rabbitmq`] (production: durable quorum queues,
//! publisher confirms, competing worker processes) and [`embedded`] (one process: in-memory channels, with
//! the store as the durable copy). The store is always the source of truth; the queue only moves work.
//!
//! Delivery tasks travel in two [`Lane`]s: first attempts straight from fan-out, and everything the
//! scheduler hands over (retries, recoveries, replays, sweeps). Workers take the scheduled lane with a
//! small prefetch, so a large recovery never queues in front of live traffic.

pub(crate) mod embedded;
pub mod rabbitmq;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
    /// The delivery is not in the store yet: fan-out handed this first attempt straight to its own
    /// deliverer (the worker's direct lane) and left the delivery to be written with the attempt's
    /// outcome. Never set on a task that travels through a queue: the codec neither writes nor reads it.
    pub unstored: bool,
}

#[cfg(test)]
impl DeliveryTask {
    /// A task of fresh ids for `item.created` with an empty object as payload, stored.
    pub(crate) fn for_test(attempt: u32) -> Self {
        Self {
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            webhook_id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            attempt,
            event_type: "item.created".into(),
            payload: Bytes::from_static(b"{}"),
            unstored: false,
        }
    }
}

/// Which of the two delivery queues a task travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// First attempts, published by fan-out as events arrive.
    Live,
    /// What the scheduler hands over from the store: retries whose time has come, recovered and
    /// replayed deliveries, and deliveries the sweeper took back. Consumed with a small prefetch
    /// (`delivery.scheduled_concurrency`), beside the live lane.
    Scheduled,
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
    /// Publishes delivery tasks into `lane`; returns once the broker has confirmed them (or the channel
    /// took them).
    async fn publish_deliveries(&self, lane: Lane, tasks: &[DeliveryTask]) -> Result<(), QueueError>;
    /// Starts receiving events for fan-out, at most `prefetch` unacknowledged at a time.
    async fn consume_events(&self, prefetch: u16) -> Result<Consumer<EventMessage>, QueueError>;
    /// Starts receiving the delivery tasks of `lane`, at most `prefetch` unacknowledged at a time.
    async fn consume_deliveries(
        &self,
        lane: Lane,
        prefetch: u16,
    ) -> Result<Consumer<DeliveryTask>, QueueError>;
    /// Whether the queue can take work now (readiness).
    async fn check(&self) -> Result<(), QueueError>;
    /// Messages waiting in each queue, named as in the `herald_queue_depth_messages` metric (`fanout`,
    /// `deliveries`, `deliveries_scheduled`, `dead_letter`; embedded: `embedded_events`,
    /// `embedded_deliveries`, `embedded_deliveries_scheduled`). Empty when the broker cannot be asked
    /// right now.
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
    /// Set where the transport has no prefetch of its own (the embedded queue): a message holds one
    /// permit until it is settled or dropped, so at most this many are unsettled at a time.
    unsettled: Option<Arc<Semaphore>>,
}

impl<T> Consumer<T> {
    /// A consumer of whatever `receiver` gets (the transport limits what is unsettled).
    pub(crate) fn new(receiver: mpsc::Receiver<Received<T>>) -> Self {
        Self { receiver, unsettled: None }
    }

    /// A consumer that hands out at most `prefetch` messages not yet settled, as a broker's prefetch
    /// would.
    pub(crate) fn with_prefetch(receiver: mpsc::Receiver<Received<T>>, prefetch: u16) -> Self {
        let permits = usize::from(prefetch.max(1));
        Self { receiver, unsettled: Some(Arc::new(Semaphore::new(permits))) }
    }

    /// The next message; `None` once the queue is closed. Cancel-safe: a message is either returned or
    /// left in the queue.
    pub async fn next(&mut self) -> Option<Received<T>> {
        let permit = match &self.unsettled {
            Some(unsettled) => Some(unsettled.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let mut received = self.receiver.recv().await?;
        received.permit = permit;
        Some(received)
    }

    /// Whatever is waiting right now, up to `limit`, without waiting (for batching).
    pub fn drain_ready(&mut self, into: &mut Vec<Received<T>>, limit: usize) {
        while into.len() < limit {
            let permit = match &self.unsettled {
                Some(unsettled) => match unsettled.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
                None => None,
            };
            match self.receiver.try_recv() {
                Ok(mut message) => {
                    message.permit = permit;
                    into.push(message);
                }
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
    /// Held until the message is settled or dropped ([`Consumer::with_prefetch`]).
    permit: Option<OwnedSemaphorePermit>,
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
        Self { message, redelivered, settle, permit: None }
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

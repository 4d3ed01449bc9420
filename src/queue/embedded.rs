//! The embedded queue: bounded in-memory channels inside one `herald serve` process, backed by the store.
//! An event stays unpublished in the store until fan-out has taken it: its acknowledgement sends its id
//! to whoever owns the `taken` receiver, which marks it published (in batches) and then
//! [`EmbeddedQueue::release`]s it. So a crash or a full channel loses nothing: the outbox relay hands
//! unpublished events over again (skipping those still in flight, so nothing is handed over twice while
//! it waits). Delivery tasks are `queued` rows in the store; at start-up every queued row is made due again,
//! since the channel that held them is gone. A task handed back (requeued) goes to the back of its
//! lane's channel, as RabbitMQ would do with it, instead of waiting in the store for the sweeper. Each
//! [`Lane`] has a channel of its own.

use std::{collections::HashSet, sync::Mutex as SyncMutex};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;

use super::{Consumer, DeliveryTask, EventMessage, Lane, Queue, QueueError, Received, Settle};

/// Messages waiting in each channel before publishers wait (deliveries) or leave the rest to the
/// relay (events).
const CAPACITY: usize = 16_384;

#[derive(Debug)]
pub struct EmbeddedQueue {
    events: mpsc::Sender<Received<EventMessage>>,
    events_out: Mutex<Option<mpsc::Receiver<Received<EventMessage>>>>,
    live: TaskChannel,
    scheduled: TaskChannel,
    /// Receives the id of each event fan-out has taken, to be marked published.
    taken: mpsc::UnboundedSender<Uuid>,
    /// Events in the channel or being fanned out, not yet marked published (then [`Self::release`]d).
    in_flight: SyncMutex<HashSet<Uuid>>,
}

impl EmbeddedQueue {
    /// Acknowledging an event (fan-out has taken it) sends its id into `taken`; the owner of the receiver
    /// marks it published and then calls [`Self::release`].
    pub fn new(taken: mpsc::UnboundedSender<Uuid>) -> Self {
        let (events, events_out) = mpsc::channel(CAPACITY);
        Self {
            events,
            events_out: Mutex::new(Some(events_out)),
            live: TaskChannel::new(),
            scheduled: TaskChannel::new(),
            taken,
            in_flight: SyncMutex::new(HashSet::new()),
        }
    }

    fn lane(&self, lane: Lane) -> &TaskChannel {
        match lane {
            Lane::Live => &self.live,
            Lane::Scheduled => &self.scheduled,
        }
    }

    /// Forgets events whose published mark is written (or given up): until then the relay's hand-overs
    /// of them are skipped, so none is handed over twice while it waits.
    pub fn release(&self, ids: &[Uuid]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in ids {
            in_flight.remove(id);
        }
    }
}

/// The channel of one lane of delivery tasks, and its receiver until the one consumer takes it.
#[derive(Debug)]
struct TaskChannel {
    sender: mpsc::Sender<Received<DeliveryTask>>,
    receiver: Mutex<Option<mpsc::Receiver<Received<DeliveryTask>>>>,
}

impl TaskChannel {
    fn new() -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        Self { sender, receiver: Mutex::new(Some(receiver)) }
    }

    fn waiting(&self) -> u64 {
        u64::try_from(self.sender.max_capacity().saturating_sub(self.sender.capacity())).unwrap_or(u64::MAX)
    }
}

/// An embedded event's settlement: acknowledging it hands its id over to be marked published.
/// Requeueing or dead-lettering it does nothing (fan-out does neither with events): it stays unpublished
/// in the store and in flight, so it is handed over again after a restart.
#[derive(Debug)]
struct Taken {
    id: Uuid,
    taken: mpsc::UnboundedSender<Uuid>,
}

#[async_trait]
impl Settle for Taken {
    async fn ack(self: Box<Self>) {
        metrics::counter!(crate::telemetry::metrics::names::EVENTS_PUBLISHED).increment(1);
        // Only fails once the marking task is gone (shutdown); the relay covers unmarked events.
        let _ = self.taken.send(self.id);
    }
    async fn requeue(self: Box<Self>) {}
    async fn dead_letter(self: Box<Self>) {}
}

/// An embedded delivery task's settlement. Its outcome lives in the store, so acknowledging it (the
/// outcome is recorded) and dead-lettering it change nothing; requeueing it (the webhook could not be
/// loaded, a deferral could not be written) hands it back to the channel for another try.
#[derive(Debug)]
struct TaskSettle {
    task: DeliveryTask,
    /// Weak: a task waiting in the channel must not keep the channel open.
    deliveries: mpsc::WeakSender<Received<DeliveryTask>>,
}

impl TaskSettle {
    fn received(
        task: DeliveryTask,
        deliveries: &mpsc::Sender<Received<DeliveryTask>>,
        again: bool,
    ) -> Received<DeliveryTask> {
        let settle = Box::new(TaskSettle { task: task.clone(), deliveries: deliveries.downgrade() });
        Received::new(task, settle, again)
    }
}

#[async_trait]
impl Settle for TaskSettle {
    async fn ack(self: Box<Self>) {}

    async fn requeue(self: Box<Self>) {
        // Gone, or closed: the process is stopping, and the restart makes every queued delivery due.
        let Some(deliveries) = self.deliveries.upgrade() else { return };
        let _ = deliveries.send(TaskSettle::received(self.task, &deliveries, true)).await;
    }

    async fn dead_letter(self: Box<Self>) {}
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events {
            if !in_flight.insert(event.id) {
                continue;
            }
            let settle = Box::new(Taken { id: event.id, taken: self.taken.clone() });
            if self.events.try_send(Received::new(event.clone(), settle, false)).is_err() {
                // Full: the event is safe in the store and the relay will hand it over later.
                in_flight.remove(&event.id);
                return Err(QueueError::Unavailable("embedded event queue is full".into()));
            }
        }
        Ok(())
    }

    async fn publish_deliveries(&self, lane: Lane, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        let deliveries = &self.lane(lane).sender;
        for task in tasks {
            deliveries
                .send(TaskSettle::received(task.clone(), deliveries, false))
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

    async fn consume_deliveries(
        &self,
        lane: Lane,
        prefetch: u16,
    ) -> Result<Consumer<DeliveryTask>, QueueError> {
        let receiver = self.lane(lane).receiver.lock().await.take().ok_or_else(|| {
            QueueError::Unavailable("the embedded delivery queue has one consumer already".into())
        })?;
        // The live lane is limited by the deliverer's slots; the scheduled one, like RabbitMQ's, by its
        // prefetch.
        Ok(match lane {
            Lane::Live => Consumer::new(receiver),
            Lane::Scheduled => Consumer::with_prefetch(receiver, prefetch),
        })
    }

    async fn check(&self) -> Result<(), QueueError> {
        Ok(())
    }

    async fn depths(&self) -> Vec<(&'static str, u64)> {
        let events = self.events.max_capacity().saturating_sub(self.events.capacity());
        vec![
            ("embedded_events", u64::try_from(events).unwrap_or(u64::MAX)),
            ("embedded_deliveries", self.live.waiting()),
            ("embedded_deliveries_scheduled", self.scheduled.waiting()),
        ]
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Hands `event` over and returns how many messages fan-out can take now.
    async fn hand_over(
        queue: &EmbeddedQueue,
        consumer: &mut Consumer<EventMessage>,
        event: &EventMessage,
    ) -> usize {
        queue.publish_events(std::slice::from_ref(event)).await.expect("the channel has room");
        let mut ready = Vec::new();
        consumer.drain_ready(&mut ready, 10);
        ready.len()
    }

    fn task(attempt: u32) -> DeliveryTask {
        DeliveryTask::for_test(attempt)
    }

    #[tokio::test]
    async fn a_requeued_task_is_handed_out_again() {
        let queue = EmbeddedQueue::new(mpsc::unbounded_channel().0);
        let mut consumer = queue.consume_deliveries(Lane::Live, 1).await.expect("the one consumer");
        let task = task(2);
        queue
            .publish_deliveries(Lane::Live, std::slice::from_ref(&task))
            .await
            .expect("the channel has room");
        let first = consumer.next().await.expect("handed out");
        assert!(!first.redelivered);
        first.requeue().await;
        let mut again = Vec::new();
        consumer.drain_ready(&mut again, 10);
        assert_eq!(again.len(), 1, "requeued: back in the channel, not left to the sweeper");
        assert_eq!(again[0].message, task);
        assert!(again[0].redelivered, "handed out before");
        again.pop().expect("the task").ack().await;
        consumer.drain_ready(&mut again, 10);
        assert!(again.is_empty(), "acknowledged: gone");
    }

    #[tokio::test]
    async fn the_scheduled_lane_hands_out_at_most_its_prefetch_unsettled() {
        let queue = EmbeddedQueue::new(mpsc::unbounded_channel().0);
        let mut live = queue.consume_deliveries(Lane::Live, 2).await.expect("the live consumer");
        let mut scheduled =
            queue.consume_deliveries(Lane::Scheduled, 2).await.expect("the scheduled consumer");
        let retries: Vec<_> = (0..5).map(|_| task(2)).collect();
        queue.publish_deliveries(Lane::Scheduled, &retries).await.expect("the channel has room");
        let mut taken = Vec::new();
        scheduled.drain_ready(&mut taken, 10);
        assert_eq!(taken.len(), 2, "two unsettled at most");
        let mut none = Vec::new();
        live.drain_ready(&mut none, 10);
        assert!(none.is_empty(), "the live lane has none of the scheduled tasks");
        taken.pop().expect("a task").ack().await;
        drop(taken.pop());
        let third = tokio::time::timeout(std::time::Duration::from_secs(1), scheduled.next())
            .await
            .expect("a settled and a dropped task free their permits")
            .expect("the third task");
        assert_eq!(third.message, retries[2]);
        scheduled.drain_ready(&mut taken, 10);
        assert_eq!(taken.len(), 1, "the fourth; the fifth waits for a permit");
        assert_eq!(taken[0].message, retries[3]);
    }

    #[tokio::test]
    async fn an_event_is_handed_over_once_until_released() {
        let (taken, mut taken_ids) = mpsc::unbounded_channel();
        let queue = EmbeddedQueue::new(taken);
        let mut consumer = queue.consume_events(1).await.expect("the one consumer");
        let event = EventMessage {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            event_type: "item.created".into(),
            payload: Bytes::from_static(b"{}"),
            only_webhook: None,
        };
        queue.publish_events(std::slice::from_ref(&event)).await.expect("the channel has room");
        let received = consumer.next().await.expect("handed over");
        assert_eq!(received.message, event);
        assert_eq!(hand_over(&queue, &mut consumer, &event).await, 0, "in flight: not handed over again");
        received.ack().await;
        assert_eq!(taken_ids.recv().await, Some(event.id), "acknowledging reports it taken");
        assert_eq!(hand_over(&queue, &mut consumer, &event).await, 0, "in flight until its mark is written");
        queue.release(&[event.id]);
        assert_eq!(hand_over(&queue, &mut consumer, &event).await, 1, "released: the relay may hand it over");
    }
}

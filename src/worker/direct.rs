//! The direct lane: where one process runs both fan-out and delivery, fan-out hands the first attempts
//! it has room for straight to its own deliverer, in memory, instead of publishing them to the live
//! delivery queue (one publish, confirm, consume and acknowledgement fewer per delivery).
//!
//! A delivery handed over here is not stored yet (`DeliveryTask::unstored`): it is written once, with its
//! first outcome. Nothing is lost on the way: the event that called for it stays unacknowledged until
//! the delivery is settled (its outcome recorded, [`all_settled`]). If the process dies, the queue hands
//! the event out again, and fan-out done again stores the delivery, with the id it had, and publishes it
//! (or, if its outcome was written meanwhile, finds it stored). Room is bounded: at most `capacity`
//! deliveries handed over here are unsettled at a time ([`DirectLane::reserve`]); fan-out stores and
//! publishes the rest as before.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::{
    queue::{Consumer, DeliveryTask, Received, Settle},
    telemetry::metrics::names,
};

/// Fan-out's end of the lane.
#[derive(Debug, Clone)]
pub struct DirectLane {
    tasks: mpsc::Sender<Received<DeliveryTask>>,
    room: Arc<Semaphore>,
}

/// Resolves once the delivery handed over is settled: `true` when its outcome is recorded, `false` when
/// it was handed back or dropped (shutdown) and must be done again.
pub type Settled = oneshot::Receiver<bool>;

/// Room for one delivery in the lane, taken by [`DirectLane::reserve`].
#[derive(Debug)]
pub struct Room {
    _permit: OwnedSemaphorePermit,
}

impl DirectLane {
    /// The lane and the deliverer's consumer of it; at most `capacity` deliveries unsettled at a time.
    pub fn new(capacity: usize) -> (Self, Consumer<DeliveryTask>) {
        let capacity = capacity.max(1);
        // The channel never holds more than the room lets in, so a send never finds it full.
        let (tasks, receiver) = mpsc::channel(capacity);
        (Self { tasks, room: Arc::new(Semaphore::new(capacity)) }, Consumer::new(receiver))
    }

    /// Room for up to `wanted` deliveries, as much as is free right now (none once the deliverer has
    /// stopped): never waits, the rest goes to the queue.
    pub fn reserve(&self, wanted: usize) -> Vec<Room> {
        if self.tasks.is_closed() {
            return Vec::new();
        }
        std::iter::from_fn(|| {
            self.room.clone().try_acquire_owned().ok().map(|permit| Room { _permit: permit })
        })
        .take(wanted)
        .collect()
    }

    /// Hands `task` to the deliverer; gives it back if the deliverer has stopped.
    pub fn hand_over(&self, task: DeliveryTask, room: Room) -> Result<Settled, Box<DeliveryTask>> {
        let (reply, settled) = oneshot::channel();
        let settle = DirectSettle { reply, _room: room };
        match self.tasks.try_send(Received::new(task, Box::new(settle), false)) {
            Ok(()) => {
                metrics::counter!(names::DELIVERIES_DIRECT).increment(1);
                Ok(settled)
            }
            Err(error) => Err(Box::new(error.into_inner().message)),
        }
    }
}

/// Whether every delivery handed over was settled (`false` as soon as one was handed back or dropped).
pub async fn all_settled(settled: Vec<Settled>) -> bool {
    for one in settled {
        if !one.await.unwrap_or(false) {
            return false;
        }
    }
    true
}

/// Settles a delivery handed over directly by telling fan-out; its room is free again once this is
/// settled or dropped (a dropped one tells fan-out `false`).
#[derive(Debug)]
struct DirectSettle {
    reply: oneshot::Sender<bool>,
    _room: Room,
}

#[async_trait]
impl Settle for DirectSettle {
    async fn ack(self: Box<Self>) {
        let _ = self.reply.send(true);
    }

    async fn requeue(self: Box<Self>) {
        let _ = self.reply.send(false);
    }

    async fn dead_letter(self: Box<Self>) {
        let _ = self.reply.send(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> DeliveryTask {
        DeliveryTask::for_test(1)
    }

    #[tokio::test]
    async fn room_is_bounded_and_freed_when_a_delivery_is_settled() {
        let (lane, mut consumer) = DirectLane::new(2);
        let mut room = lane.reserve(5);
        assert_eq!(room.len(), 2, "no more room than the capacity");
        assert!(lane.reserve(1).is_empty(), "none left while both are taken");
        let first = lane.hand_over(task(), room.remove(0)).expect("handed over");
        let second = lane.hand_over(task(), room.remove(0)).expect("handed over");

        let received = consumer.next().await.expect("the first task");
        received.ack().await;
        assert!(first.await.expect("an answer"), "an acknowledged delivery is settled");
        assert_eq!(lane.reserve(5).len(), 1, "its room is free again");

        let received = consumer.next().await.expect("the second task");
        received.requeue().await;
        assert!(!second.await.expect("an answer"), "one handed back must be done again");
    }

    #[tokio::test]
    async fn a_dropped_delivery_counts_as_unsettled_and_a_stopped_deliverer_takes_nothing() {
        let (lane, mut consumer) = DirectLane::new(4);
        let mut room = lane.reserve(2);
        let settled = lane.hand_over(task(), room.remove(0)).expect("handed over");
        drop(consumer.next().await.expect("the task"));
        assert!(!all_settled(vec![settled]).await, "a dropped delivery is not settled");

        let waiting = lane.hand_over(task(), room.remove(0)).expect("handed over");
        drop(consumer);
        assert!(!all_settled(vec![waiting]).await, "one never taken is not settled");
        assert!(lane.reserve(1).is_empty(), "no room once the deliverer has stopped");
        assert!(all_settled(Vec::new()).await, "nothing handed over: nothing to wait for");
    }
}

//! Fan-out on a real SQLite store and the embedded queue: an event fanned out again (redelivered after
//! a crash) leaves its unstarted deliveries to the scheduler instead of publishing a second task.

use bytes::Bytes;

use super::*;
use crate::{
    config::parse_secret_keys,
    crypto::SecretBox,
    queue::{NothingToSettle, Queue, embedded::EmbeddedQueue},
    store::DeliveryStatus,
};

struct Fixture {
    _sqlite: crate::test_store::TestStore,
    store: DynStore,
    queue: Arc<EmbeddedQueue>,
    fanout: Fanout,
    event: EventMessage,
}

async fn fixture() -> Fixture {
    let sqlite = crate::test_store::with_organization(|_| {}).await;
    let (store, organization_id) = (sqlite.store.clone(), sqlite.organization_id);
    let now = crate::domain::now();
    sqlite.webhook_for_everything(now).await;
    let event = sqlite.stored_event(now).await;
    let keys = parse_secret_keys(&SecretBox::generate_key_text()).expect("key");
    let webhooks = Arc::new(WebhookCache::new(
        store.clone(),
        Arc::new(SecretBox::from_keys(&keys)),
        Duration::from_secs(60),
    ));
    let queue = Arc::new(EmbeddedQueue::new(tokio::sync::mpsc::unbounded_channel().0));
    let fanout = Fanout {
        store: store.clone(),
        queue: queue.clone(),
        webhooks,
        lease: Duration::from_secs(600),
        direct: None,
        fresh_for: fresh_for(Duration::from_secs(5)),
    };
    let event = EventMessage {
        id: event.id,
        organization_id,
        event_type: event.event_type,
        payload: Bytes::from(event.payload),
        only_webhook: None,
    };
    Fixture { _sqlite: sqlite, store, queue, fanout, event }
}

impl Fixture {
    fn received(&self, redelivered: bool) -> Received<EventMessage> {
        Received::new(self.event.clone(), Box::new(NothingToSettle), redelivered)
    }
}

#[tokio::test]
async fn a_redelivered_event_leaves_its_unstarted_deliveries_to_the_scheduler() {
    let fixture = fixture().await;
    let mut live = fixture.queue.consume_deliveries(Lane::Live, 8).await.expect("the live consumer");
    fixture.fanout.fan_out(&[fixture.received(false)], false).await.expect("first fan-out");
    let mut tasks = Vec::new();
    live.drain_ready(&mut tasks, 10);
    assert_eq!(tasks.len(), 1, "the first fan-out publishes the delivery's task");
    let delivery_id = tasks[0].message.delivery_id;

    // The worker died after publishing, before acknowledging: the event comes again while its first task
    // may still be in the queue (here: taken, not yet attempted).
    let before = crate::domain::now();
    fixture.fanout.fan_out(&[fixture.received(true)], false).await.expect("fan-out done again");
    live.drain_ready(&mut tasks, 10);
    assert_eq!(tasks.len(), 1, "no second task is published while the first may be in flight");
    let delivery = fixture.store.get_delivery(delivery_id).await.expect("read").expect("the delivery");
    assert_eq!(delivery.status, DeliveryStatus::Pending, "back in the store, for the scheduler");
    let due = delivery.next_attempt_at.expect("due");
    let wait = (due - before).to_std().expect("due later");
    assert!(
        wait >= REDONE_AFTER && wait < REDONE_AFTER + Duration::from_secs(2),
        "due once the deliverer checks a first attempt against the store: in {wait:?}"
    );
    assert!(REDONE_AFTER > super::super::deliver::LATE_FIRST_ATTEMPT);
}

/// Tells the test how its event was settled.
#[derive(Debug)]
struct Reported(tokio::sync::mpsc::UnboundedSender<&'static str>);

#[async_trait::async_trait]
impl crate::queue::Settle for Reported {
    async fn ack(self: Box<Self>) {
        let _ = self.0.send("ack");
    }
    async fn requeue(self: Box<Self>) {
        let _ = self.0.send("requeue");
    }
    async fn dead_letter(self: Box<Self>) {
        let _ = self.0.send("dead_letter");
    }
}

impl Fixture {
    /// The fixture's fan-out with a direct lane of `capacity`, and the deliverer's end of it.
    fn with_direct_lane(mut self, capacity: usize) -> (Self, Consumer<DeliveryTask>) {
        let (lane, consumer) = DirectLane::new(capacity);
        self.fanout.direct = Some(lane);
        (self, consumer)
    }

    /// The event, settled into the returned channel.
    fn reported(&self) -> (Received<EventMessage>, tokio::sync::mpsc::UnboundedReceiver<&'static str>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Received::new(self.event.clone(), Box::new(Reported(sender)), false), receiver)
    }
}

#[tokio::test]
async fn with_room_here_a_first_attempt_skips_the_queue_and_its_event_waits_for_its_outcome() {
    let (fixture, mut direct) = fixture().await.with_direct_lane(4);
    let mut live = fixture.queue.consume_deliveries(Lane::Live, 8).await.expect("the live consumer");
    let (event, mut settled) = fixture.reported();
    let settling = TaskTracker::new();
    let fanout = Arc::new(fixture.fanout);
    fanout.clone().handle(vec![event], settling.clone(), CancellationToken::new()).await;

    let mut published = Vec::new();
    live.drain_ready(&mut published, 10);
    assert!(published.is_empty(), "nothing is published for a delivery handed over directly");
    let task = direct.next().await.expect("the delivery's first attempt, handed over directly");
    assert_eq!(task.message.event_id, fixture.event.id);
    assert_eq!(task.message.attempt, 1);
    assert_eq!(
        task.message.delivery_id,
        crate::domain::delivery_id(fixture.event.id, task.message.webhook_id)
    );
    assert!(task.message.unstored, "written with its outcome");
    let stored = fixture.store.get_delivery(task.message.delivery_id).await.expect("read");
    assert_eq!(stored, None, "not stored before its outcome");
    assert!(settled.try_recv().is_err(), "the event is not acknowledged before its delivery is settled");

    task.ack().await;
    settling.close();
    settling.wait().await;
    assert_eq!(settled.recv().await, Some("ack"), "acknowledged once its delivery's outcome is recorded");
}

#[tokio::test]
async fn an_event_whose_direct_delivery_was_handed_back_or_dropped_is_handed_out_again() {
    for handed_back in [true, false] {
        let (fixture, mut direct) = fixture().await.with_direct_lane(1);
        let (event, mut settled) = fixture.reported();
        let settling = TaskTracker::new();
        let fanout = Arc::new(fixture.fanout);
        fanout.clone().handle(vec![event], settling.clone(), CancellationToken::new()).await;
        let task = direct.next().await.expect("handed over directly");
        if handed_back {
            task.requeue().await;
        } else {
            drop(task); // The deliverer stopped holding it.
        }
        settling.close();
        settling.wait().await;
        assert_eq!(settled.recv().await, Some("requeue"), "handed back: {handed_back}");
    }
}

#[tokio::test]
async fn what_the_direct_lane_has_no_room_for_is_published() {
    let fixture = fixture().await;
    // A second webhook: the event calls for two deliveries, and the lane has room for one.
    fixture._sqlite.webhook_for_everything(crate::domain::now()).await;
    let (fixture, mut direct) = fixture.with_direct_lane(1);
    let mut live = fixture.queue.consume_deliveries(Lane::Live, 8).await.expect("the live consumer");
    let settled = fixture.fanout.fan_out(&[fixture.received(false)], false).await.expect("fan-out");
    assert_eq!(settled.len(), 1, "one list of receipts per event");
    assert_eq!(settled[0].len(), 1, "one delivery handed over directly");
    let mut published = Vec::new();
    live.drain_ready(&mut published, 10);
    assert_eq!(published.len(), 1, "the other one is published");
    let handed = direct.next().await.expect("the direct one");
    assert_ne!(handed.message.delivery_id, published[0].message.delivery_id);
    assert!(!published[0].message.unstored);
    let stored = fixture.store.get_delivery(published[0].message.delivery_id).await.expect("read");
    assert_eq!(stored.map(|d| d.status), Some(DeliveryStatus::Queued), "the published one is stored first");
}

#[tokio::test]
async fn an_event_handed_out_again_is_stored_for_the_scheduler_with_the_delivery_id_it_had() {
    let (fixture, mut direct) = fixture().await.with_direct_lane(4);
    let mut live = fixture.queue.consume_deliveries(Lane::Live, 8).await.expect("the live consumer");
    fixture.fanout.fan_out(&[fixture.received(false)], false).await.expect("first fan-out");
    let first = direct.next().await.expect("handed over directly, unstored");
    let delivery_id = first.message.delivery_id;
    drop(first); // The process died before its outcome was written.

    // The event comes again: it may have been fanned out before, and its first attempt may still be in
    // flight elsewhere, so its delivery is stored for the scheduler, due once the twin check applies.
    let before = crate::domain::now();
    fixture.fanout.fan_out(&[fixture.received(true)], false).await.expect("fan-out done again");
    let mut published = Vec::new();
    live.drain_ready(&mut published, 10);
    assert!(published.is_empty(), "neither published nor handed over: {published:?}");
    let stored = fixture.store.get_delivery(delivery_id).await.expect("read").expect("stored, same id");
    assert_eq!(stored.status, DeliveryStatus::Queued);
    let wait = (stored.next_attempt_at.expect("due") - before).to_std().expect("due later");
    assert!(wait >= REDONE_AFTER && wait < REDONE_AFTER + Duration::from_secs(2), "due in {wait:?}");
    let later = before + chrono::Duration::seconds(10);
    let due = fixture.store.claim_due_deliveries(later, later + chrono::Duration::seconds(60), 10).await;
    let due = due.expect("claim");
    assert_eq!(due.iter().map(|d| d.delivery_id).collect::<Vec<_>>(), vec![delivery_id], "the scheduler's");
    let mut handed = Vec::new();
    direct.drain_ready(&mut handed, 10);
    assert!(handed.is_empty(), "nothing more was handed over directly");
}

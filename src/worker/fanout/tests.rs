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
    let fanout =
        Fanout { store: store.clone(), queue: queue.clone(), webhooks, lease: Duration::from_secs(600) };
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

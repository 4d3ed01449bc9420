//! The scheduler's rounds, driven step by step at chosen times on a SQLite store, with a queue that can
//! be down or never confirm (its worker dies while it waits).

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use tokio::sync::Notify;
use uuid::Uuid;

use super::*;
use crate::{
    queue::{Consumer, EventMessage, Queue, QueueError},
    store::{DeliveryStatus, DynStore, NewDelivery},
};

const CLAIM_LEASE: Duration = Duration::from_secs(30);
const STUCK_AFTER: Duration = Duration::from_secs(600);

/// A queue that is up or down, and confirms publishes or never answers them.
#[derive(Debug, Default)]
struct TestQueue {
    down: AtomicBool,
    /// Publishes are never confirmed (the broker's confirm is awaited forever).
    unanswered: AtomicBool,
    /// Tasks published, by delivery id.
    published: Mutex<Vec<Uuid>>,
    /// Told when a publish begins.
    publishing: Notify,
}

impl TestQueue {
    fn published(&self) -> Vec<Uuid> {
        self.published.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Queue for TestQueue {
    async fn publish_events(&self, _events: &[EventMessage]) -> Result<(), QueueError> {
        Ok(())
    }

    async fn publish_deliveries(&self, lane: Lane, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        assert_eq!(lane, Lane::Scheduled, "what the scheduler hands over never queues before first attempts");
        self.publishing.notify_one();
        if self.unanswered.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.published.lock().expect("lock").extend(tasks.iter().map(|task| task.delivery_id));
        Ok(())
    }

    async fn consume_events(&self, _prefetch: u16) -> Result<Consumer<EventMessage>, QueueError> {
        Err(QueueError::Unavailable("not consumed in these tests".into()))
    }

    async fn consume_deliveries(
        &self,
        _lane: Lane,
        _prefetch: u16,
    ) -> Result<Consumer<DeliveryTask>, QueueError> {
        Err(QueueError::Unavailable("not consumed in these tests".into()))
    }

    async fn check(&self) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) { Err(QueueError::Unavailable("down".into())) } else { Ok(()) }
    }

    async fn depths(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    fn kind(&self) -> &'static str {
        "test"
    }

    async fn close(&self) {}
}

struct Fixture {
    _sqlite: crate::test_store::TestStore,
    store: DynStore,
    /// A delivery due at `due`.
    delivery: Uuid,
    due: DateTime<Utc>,
}

async fn fixture() -> Fixture {
    let sqlite = crate::test_store::with_organization(|_| {}).await;
    let (store, organization_id) = (sqlite.store.clone(), sqlite.organization_id);
    let due = crate::domain::now();
    let webhook = sqlite.webhook_for_everything(due).await;
    let event = sqlite.stored_event(due).await;
    // Queued until `due`: as a fan-out whose worker died before publishing leaves it, or a retry.
    let delivery = NewDelivery {
        id: Uuid::now_v7(),
        event_id: event.id,
        webhook_id: webhook.id,
        organization_id,
        created_at: due,
        lease_until: due,
    };
    store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("delivery");
    Fixture { _sqlite: sqlite, store, delivery: delivery.id, due }
}

fn scheduler(store: &DynStore, queue: &Arc<TestQueue>) -> Scheduler {
    Scheduler {
        store: store.clone(),
        queue: queue.clone(),
        interval: Duration::from_secs(1),
        claim_lease: CLAIM_LEASE,
        stuck_after: STUCK_AFTER,
    }
}

fn after(at: DateTime<Utc>, elapsed: Duration) -> DateTime<Utc> {
    at + chrono::Duration::from_std(elapsed).expect("short")
}

#[tokio::test]
async fn a_claim_whose_worker_died_before_the_confirm_is_handed_over_after_the_claim_lease() {
    let f = fixture().await;
    let dying_queue = Arc::new(TestQueue { unanswered: AtomicBool::new(true), ..TestQueue::default() });
    let dying = scheduler(&f.store, &dying_queue);
    // The claim is committed, the publish begins, and the worker dies (its round is dropped).
    tokio::select! {
        round = dying.round(f.due) => panic!("the publish is never confirmed, yet the round ended: {round:?}"),
        () = dying_queue.publishing.notified() => {}
    }
    drop(dying);

    let survivor_queue = Arc::new(TestQueue::default());
    let survivor = scheduler(&f.store, &survivor_queue);
    let just_before = after(f.due, CLAIM_LEASE) - chrono::Duration::microseconds(1);
    assert_eq!(survivor.round(just_before).await, Round::HandedOver(0), "still claimed");
    assert_eq!(
        survivor.round(after(f.due, CLAIM_LEASE)).await,
        Round::HandedOver(1),
        "claimed again once the claim lease ends, not after stuck_after"
    );
    assert_eq!(survivor_queue.published(), vec![f.delivery]);
}

#[tokio::test]
async fn a_confirmed_claim_lasts_stuck_after() {
    let f = fixture().await;
    let queue = Arc::new(TestQueue::default());
    let scheduler = scheduler(&f.store, &queue);
    assert_eq!(scheduler.round(f.due).await, Round::HandedOver(1));
    let in_flight = f.store.get_delivery(f.delivery).await.expect("read").expect("stored");
    assert_eq!(
        (in_flight.status, in_flight.next_attempt_at),
        (DeliveryStatus::Queued, Some(after(f.due, STUCK_AFTER))),
        "extended once the queue confirmed"
    );
    assert_eq!(
        scheduler.round(after(f.due, CLAIM_LEASE * 2)).await,
        Round::HandedOver(0),
        "a delivery in flight is not claimed twice once the short lease has passed"
    );
    assert_eq!(scheduler.round(after(f.due, STUCK_AFTER)).await, Round::HandedOver(1), "the sweeper");
    assert_eq!(queue.published(), vec![f.delivery, f.delivery]);
}

#[tokio::test]
async fn nothing_is_claimed_while_the_queue_is_down() {
    let f = fixture().await;
    let queue = Arc::new(TestQueue { down: AtomicBool::new(true), ..TestQueue::default() });
    let scheduler = scheduler(&f.store, &queue);
    assert_eq!(scheduler.round(f.due).await, Round::QueueDown);
    let untouched = f.store.get_delivery(f.delivery).await.expect("read").expect("stored");
    assert_eq!((untouched.next_attempt_at, untouched.updated_at), (Some(f.due), f.due), "not claimed");
    assert!(queue.published().is_empty());

    queue.down.store(false, Ordering::SeqCst);
    assert_eq!(scheduler.round(f.due).await, Round::HandedOver(1), "claimed once the queue is back");
}

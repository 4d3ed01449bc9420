//! Claims that cannot strand work (docs/architecture.md, "Claims and the longest wait after a crash"): a
//! delivery claimed by a worker that dies before the broker confirms its task is handed over again
//! within `delivery.claim_lease` + `delivery.scheduler_interval`, not after `delivery.stuck_after`; a
//! confirmed claim is extended, so a delivery in flight is not claimed twice; nothing is claimed while
//! the broker is unreachable; and a fan-out tried again after a failed publish publishes the deliveries
//! it inserted the first time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use herald::{
    config::{HumanDuration, Secret},
    queue::{Consumer, DeliveryTask, DynQueue, EventMessage, Lane, Queue, QueueError},
    services::Services,
    stages::Stages,
    store::{DeliveryStatus, NewDelivery, NewEvent},
    worker::Roles,
};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        proxy::broker_proxy,
        receiver::Receiver,
    },
};

in_both_modes!(
    a_confirmed_claim_is_not_taken_again_while_its_attempt_runs,
    a_retried_fan_out_publishes_what_it_inserted
);

/// The claim lease in these tests.
const CLAIM_LEASE: Duration = Duration::from_secs(1);

/// A queue whose delivery publishes fail, or are never confirmed, as the test says; everything else is
/// the app's queue.
#[derive(Debug)]
struct Faulty {
    inner: DynQueue,
    /// Delivery publishes still to fail before they go through.
    failures: AtomicUsize,
    /// Delivery publishes wait forever for their confirm (the worker dies waiting).
    unconfirmed: AtomicBool,
    /// Told when a delivery publish begins.
    publishing: Notify,
}

impl Faulty {
    fn new(inner: DynQueue, failures: usize, unconfirmed: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            failures: AtomicUsize::new(failures),
            unconfirmed: AtomicBool::new(unconfirmed),
            publishing: Notify::new(),
        })
    }
}

#[async_trait]
impl Queue for Faulty {
    async fn publish_events(&self, events: &[EventMessage]) -> Result<(), QueueError> {
        self.inner.publish_events(events).await
    }

    async fn publish_deliveries(&self, lane: Lane, tasks: &[DeliveryTask]) -> Result<(), QueueError> {
        self.publishing.notify_one();
        if self.unconfirmed.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1)).is_ok()
        {
            return Err(QueueError::Unavailable("the test fails this publish".into()));
        }
        self.inner.publish_deliveries(lane, tasks).await
    }

    async fn consume_events(&self, prefetch: u16) -> Result<Consumer<EventMessage>, QueueError> {
        self.inner.consume_events(prefetch).await
    }

    async fn consume_deliveries(
        &self,
        lane: Lane,
        prefetch: u16,
    ) -> Result<Consumer<DeliveryTask>, QueueError> {
        self.inner.consume_deliveries(lane, prefetch).await
    }

    async fn check(&self) -> Result<(), QueueError> {
        self.inner.check().await
    }

    async fn depths(&self) -> Vec<(&'static str, u64)> {
        self.inner.depths().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

fn short_claims(settings: &mut herald::config::Settings) {
    settings.delivery.claim_lease = HumanDuration(CLAIM_LEASE);
}

/// Stores an event for `webhook` and its delivery, due now (as a retry whose time has come); returns
/// the delivery's id.
async fn due_delivery(app: &TestApp, webhook: Uuid) -> Uuid {
    let now = herald::domain::now();
    let id = Uuid::now_v7();
    let event = NewEvent {
        id,
        organization_id: app.organization_id,
        event_type: "item.created".into(),
        payload: json!({"id": id, "event": "item.created", "data": {}}).to_string(),
        idempotency_key: None,
        request_hash: None,
        created_at: now,
        only_webhook: None,
    };
    app.state.store.insert_events(std::slice::from_ref(&event), now).await.expect("event");
    let delivery = NewDelivery {
        id: Uuid::now_v7(),
        event_id: id,
        webhook_id: webhook,
        organization_id: app.organization_id,
        created_at: now,
        lease_until: now,
    };
    app.state.store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("delivery");
    delivery.id
}

/// Starts the delivery role (delivery and scheduler) of one more worker on the app's database and
/// broker, with its queue wrapped by `wrap`; stopped when the token is cancelled.
async fn start_worker(app: &TestApp, wrap: impl FnOnce(DynQueue) -> DynQueue) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let stages = Stages::new(shutdown.clone(), Duration::from_secs(1));
    let mut services =
        Services::connect((*app.state.settings).clone(), &stages).await.expect("the worker connects");
    services.queue = wrap(services.queue);
    herald::worker::start(services, Roles { fanout: false, deliver: true }, &stages)
        .await
        .expect("the worker starts");
    shutdown
}

/// Production mode, two workers: the first claims a due delivery and dies while it waits for the
/// broker's confirm (its publish never returns); the second hands the delivery over once the claim
/// lease is over. Before the short claim lease, the claim lasted `delivery.stuck_after` (10 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stranded_by_a_dying_worker_is_handed_over_within_the_claim_lease() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(short_claims).await;
    let receiver = Receiver::ok().await;
    let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
    let mut dying = None;
    let dying_worker = start_worker(&app, |queue| {
        let faulty = Faulty::new(queue, 0, true);
        dying = Some(faulty.clone());
        faulty
    })
    .await;
    let dying = dying.expect("the worker's queue is wrapped");
    let delivery = due_delivery(&app, webhook).await;
    tokio::time::timeout(Duration::from_secs(10), dying.publishing.notified())
        .await
        .expect("the first worker claims the delivery and publishes");
    let claimed_at = Instant::now();

    let survivor = start_worker(&app, |queue| queue).await;
    let arrival = receiver.wait_for(1, Duration::from_secs(20)).await.remove(0);
    let waited = arrival.at - claimed_at;
    let bound = CLAIM_LEASE + app.state.settings.delivery.scheduler_interval.get();
    // Slack for the publish, the attempt and a busy machine.
    assert!(waited <= bound + Duration::from_secs(2), "handed over after {waited:?}, bound {bound:?}");
    assert!(waited >= CLAIM_LEASE - Duration::from_millis(200), "not before the claim ended: {waited:?}");
    assert_eq!(arrival.header("webhook-id"), delivery.to_string());
    app.wait_delivery(&delivery.to_string(), Duration::from_secs(10), |d| d["status"] == "succeeded").await;
    survivor.cancel();
    dying_worker.cancel();
}

/// A claim confirmed by the queue is extended to `delivery.stuck_after`: an attempt that takes longer
/// than the claim lease is not handed over a second time meanwhile.
async fn a_confirmed_claim_is_not_taken_again_while_its_attempt_runs(mode: Mode) {
    let app = TestApp::spawn_with(mode, short_claims).await;
    let slow = CLAIM_LEASE * 3;
    let receiver = Receiver::start(move |_| (200, vec![], slow)).await;
    let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
    let delivery = due_delivery(&app, webhook).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    app.wait_delivery(&delivery.to_string(), Duration::from_secs(20), |d| d["status"] == "succeeded").await;
    assert_eq!(receiver.arrivals().len(), 1, "claimed once, though the attempt outlasted the claim lease");
}

/// The scheduler claims nothing while its broker connection is down (the claim would only wait for a
/// publish that cannot succeed, and strand the batch if the worker died meanwhile), and hands the
/// delivery over once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_claimed_while_the_broker_is_unreachable() {
    if !Mode::services_available() {
        return;
    }
    let (proxy, through_proxy) = broker_proxy().await;
    let app = TestApp::spawn_with(Mode::Services, |settings| {
        settings.queue.url = Some(Secret::new(through_proxy.to_string()));
    })
    .await;
    let receiver = Receiver::ok().await;
    let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
    proxy.down();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.queue.check().await.is_ok() {
        assert!(Instant::now() < deadline, "the lost connection is noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivery = due_delivery(&app, webhook).await;
    let before = app.state.store.get_delivery(delivery).await.expect("read").expect("stored");
    // Ten scheduler rounds.
    tokio::time::sleep(app.state.settings.delivery.scheduler_interval.get() * 10).await;
    let after = app.state.store.get_delivery(delivery).await.expect("read").expect("stored");
    assert_eq!(
        (after.status, after.next_attempt_at, after.updated_at),
        (DeliveryStatus::Queued, before.next_attempt_at, before.updated_at),
        "not claimed while the broker is unreachable"
    );

    proxy.up();
    let arrival = receiver.wait_for(1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(arrival.header("webhook-id"), delivery.to_string(), "handed over once the broker is back");
}

/// Fan-out inserts the deliveries, their publish fails, and the batch is tried again: the second try
/// finds the deliveries inserted and must publish them (before, it published nothing and acknowledged
/// the event, leaving the delivery to the sweeper after `delivery.stuck_after`).
async fn a_retried_fan_out_publishes_what_it_inserted(mode: Mode) {
    let app = TestApp::spawn_with_queue(mode, |_| {}, |queue| Faulty::new(queue, 1, false)).await;
    let receiver = Receiver::ok().await;
    app.subscribe(&receiver, json!(["item.created"])).await;
    let event = app.send_event("item.created", json!({"n": 1})).await;
    let arrival = receiver.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(arrival.json()["id"], event.to_string());
}

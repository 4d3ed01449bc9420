//! The publishing side of the transactional outbox. An event is committed to the store first (that is
//! the moment it is accepted); then [`Outbox::committed`] hands it to a background publisher, which sends
//! batches to the queue and, once the broker has confirmed them, marks them published. Whatever is left
//! unpublished (broker down, publisher crashed between commit and confirm, channel full) is found by the
//! relay after `events.relay_after` and published again, so an accepted event is never lost. The same
//! task expires idempotency keys older than `events.idempotency_window`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use chrono::Utc;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::{EventSettings, Mode},
    queue::{DynQueue, EventMessage},
    stages::Stages,
    store::{DynStore, Event, NewEvent, RelayClaim},
    telemetry::metrics::names,
};

/// Events published per batch.
const BATCH: usize = 500;
/// Batches being published (awaiting their confirms) at once.
const PUBLISHING_AT_ONCE: usize = 4;
/// Published marks written per statement.
const MARK_BATCH: usize = 1_000;
/// How long the marker gathers marks before writing them: nobody waits for a mark, so one statement
/// and one commit per gathering serve every event published meanwhile (instead of one per publish).
const MARK_GATHERING: Duration = Duration::from_millis(100);
/// Committed events waiting for the publisher before new ones are left to the relay.
const BACKLOG: usize = 50_000;
/// How often the relay looks for unpublished events.
const RELAY_EVERY: Duration = Duration::from_secs(1);
/// The shortest claim a relay pass takes on the events it publishes (longer if `events.relay_after`
/// is): past the longest a publish can take (2 s waiting for a connection, 10 s for the confirms), so
/// that no claim ends while its publish is still under way.
const RELAY_CLAIM_AT_LEAST: Duration = Duration::from_secs(15);
/// How often old idempotency keys are expired.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

/// Hands committed events to the publisher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    committed: mpsc::Sender<EventMessage>,
}

impl Outbox {
    /// Starts the publisher and relay (the stage `outbox-publisher`); they stop at shutdown after
    /// publishing what is already waiting.
    pub fn start(
        stages: &Stages,
        mode: Mode,
        store: DynStore,
        queue: DynQueue,
        settings: &EventSettings,
    ) -> Self {
        let (committed, incoming) = mpsc::channel(BACKLOG);
        let publisher = Publisher {
            mode,
            // Production: the broker's confirm makes an event durable, so the publisher marks it. Embedded,
            // the queue's own marker does, once fan-out has taken the event (see `Services::connect`).
            marker: PublishedMarker::start(stages, store.clone(), |_| {}),
            store,
            queue,
            relay_after: settings.relay_after.get(),
            relay_id: Uuid::new_v4(),
            idempotency_window: settings.idempotency_window.get(),
            relay_failing: AtomicBool::new(false),
        };
        stages.spawn("outbox-publisher", publisher.run(incoming, stages.shutdown_token()));
        Self { committed }
    }

    /// Events just committed: publish them now. Never waits; if the publisher is behind, the relay
    /// publishes them later.
    pub fn committed(&self, events: impl IntoIterator<Item = NewEvent>) {
        for event in events {
            let message = EventMessage {
                id: event.id,
                organization_id: event.organization_id,
                event_type: event.event_type,
                only_webhook: event.only_webhook,
                payload: Bytes::from(event.payload),
            };
            if self.committed.try_send(message).is_err() {
                break;
            }
        }
    }
}

fn message_of(event: Event) -> EventMessage {
    EventMessage {
        id: event.id,
        organization_id: event.organization_id,
        event_type: event.event_type,
        only_webhook: event.only_webhook,
        payload: Bytes::from(event.payload),
    }
}

/// Writes `published_at` in batches gathered for [`MARK_GATHERING`], off the publishing path (a late
/// or lost mark only means the relay may publish an event again, which fan-out absorbs).
#[derive(Debug, Clone)]
pub struct PublishedMarker {
    ids: mpsc::UnboundedSender<Uuid>,
}

impl PublishedMarker {
    /// Starts the marking task (the support stage `published-marker`); `after_marking` is called with
    /// each batch once it is written (or given up).
    pub fn start(stages: &Stages, store: DynStore, after_marking: impl Fn(&[Uuid]) + Send + 'static) -> Self {
        let (ids, marks) = mpsc::unbounded_channel();
        Self::mark_from(stages, store, marks, after_marking);
        Self { ids }
    }

    /// Marks the ids arriving on `marks` (the embedded queue's events taken by fan-out), as
    /// [`Self::start`] does; stops once every sender is gone, or once the working stages have drained
    /// (after marking what is already waiting).
    pub fn mark_from(
        stages: &Stages,
        store: DynStore,
        mut marks: mpsc::UnboundedReceiver<Uuid>,
        after_marking: impl Fn(&[Uuid]) + Send + 'static,
    ) {
        let drained = stages.drained();
        stages.spawn_support("published-marker", async move {
            let mut batch = Vec::with_capacity(MARK_BATCH);
            loop {
                tokio::select! {
                    received = marks.recv_many(&mut batch, MARK_BATCH) => if received == 0 { break },
                    () = drained.cancelled(), if !marks.is_closed() => {
                        marks.close();
                        continue;
                    }
                }
                if !marks.is_closed() {
                    crate::batch::gather(MARK_GATHERING, &drained, &mut batch, MARK_BATCH, || marks.try_recv().ok())
                        .await;
                }
                if let Err(error) = store.mark_events_published(&batch, crate::domain::now()).await {
                    crate::outage::warn_unless_reported!(&error, %error, count = batch.len(), "could not mark events published");
                }
                after_marking(&batch);
                batch.clear();
            }
        });
    }

    pub fn mark(&self, id: Uuid) {
        // Only fails once the marking task is gone (shutdown); the relay covers unmarked events.
        let _ = self.ids.send(id);
    }
}

struct Publisher {
    mode: Mode,
    store: DynStore,
    queue: DynQueue,
    marker: PublishedMarker,
    relay_after: Duration,
    /// This process's relay, in its claims of the events it publishes again.
    relay_id: Uuid,
    idempotency_window: Duration,
    /// The relay's last publish failed (its warning is logged once per run of failures).
    relay_failing: AtomicBool,
}

impl Publisher {
    async fn run(self, mut incoming: mpsc::Receiver<EventMessage>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        // Events left unpublished by an earlier run are published now. In production only those older
        // than `relay_after`, as on every pass: younger ones may be another process's, committed a moment
        // ago and being published by it, and a second copy of a just-accepted event would look to
        // fan-out like its only one (see `worker::fanout::fresh_for`). Embedded, this process is the only
        // publisher and the in-memory queue is empty at start: all of them, at once.
        let first_pass = if this.mode == Mode::Embedded { Duration::ZERO } else { this.relay_after };
        this.relay(first_pass).await;
        // The next pass a full interval after this one (an interval's first tick is at once) and after
        // the last (never a burst of passes after a slow one): the marks of the events a pass published
        // are written in the background, and a pass before them would publish those events again.
        let mut relay = tokio::time::interval_at(tokio::time::Instant::now() + RELAY_EVERY, RELAY_EVERY);
        relay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut janitor = tokio::time::interval(JANITOR_EVERY);
        let mut publishing = JoinSet::new();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = incoming.recv_many(&mut batch, BATCH), if publishing.len() < PUBLISHING_AT_ONCE => {
                    if received == 0 {
                        break;
                    }
                    let (this, events) = (this.clone(), std::mem::take(&mut batch));
                    publishing.spawn(async move { this.publish_committed(events).await });
                }
                Some(_) = publishing.join_next(), if !publishing.is_empty() => {}
                _ = relay.tick() => this.relay(this.relay_after).await,
                _ = janitor.tick() => this.expire_idempotency_keys().await,
                () = shutdown.cancelled() => break,
            }
        }
        // Publish what is already waiting; the rest stays in the store for the next start.
        incoming.close();
        while incoming.recv_many(&mut batch, BATCH).await > 0 {
            this.publish_committed(std::mem::take(&mut batch)).await;
        }
        while publishing.join_next().await.is_some() {}
    }

    /// Publishes events just committed, those still younger than half `relay_after`: an older one has
    /// waited here long enough (broker down, publisher behind) that the relay may take it too once it is
    /// `relay_after` old (a publish may wait 2 s more for the broker), so it is left to the relay.
    async fn publish_committed(&self, mut events: Vec<EventMessage>) {
        let young = |event: &EventMessage| {
            crate::domain::age_of(event.id).is_none_or(|age| age < self.relay_after / 2)
        };
        let before = events.len();
        events.retain(young);
        if events.len() < before {
            tracing::debug!(
                count = before - events.len(),
                "publishing of events waiting too long left to the relay"
            );
        }
        if !events.is_empty() {
            self.publish(&events).await;
        }
    }

    /// Publishes. In production the broker's confirm makes the events durable, so they are marked
    /// published now; embedded, the queue marks them once fan-out has taken them.
    #[tracing::instrument(name = "publish", skip_all, fields(count = events.len()))]
    async fn publish(&self, events: &[EventMessage]) -> bool {
        if let Err(error) = self.queue.publish_events(events).await {
            tracing::debug!(%error, count = events.len(), "publishing deferred to the relay");
            return false;
        }
        if self.mode == Mode::Production {
            // Embedded, an event counts as published once fan-out takes it (the queue counts it).
            metrics::counter!(names::EVENTS_PUBLISHED).increment(events.len() as u64);
            for event in events {
                self.marker.mark(event.id);
            }
        }
        true
    }

    /// Publishes events older than `age` that are still unpublished, claimed (for `relay_after`, 15 s at
    /// least) so that the relays of other processes leave them alone meanwhile, and this one's next
    /// passes while their marks are written in the background. Claims whose publish failed are released
    /// for the next pass. Nothing is claimed while the queue is unreachable.
    async fn relay(&self, age: Duration) {
        if self.queue.check().await.is_err() {
            return; // The broker is away (its outage is logged): nothing to claim until it is back.
        }
        let now = Utc::now();
        // One claim for the whole pass: a batch claimed by it is not claimed again by its next batch.
        let claim = RelayClaim {
            by: self.relay_id,
            created_before: now - chrono::Duration::from_std(age).unwrap_or_default(),
            now,
            until: now
                + chrono::Duration::from_std(self.relay_after.max(RELAY_CLAIM_AT_LEAST)).unwrap_or_default(),
            limit: BATCH as i64,
        };
        loop {
            let events = match self.store.claim_unpublished_events(&claim).await {
                Ok(events) => events,
                Err(error) => {
                    crate::outage::warn_unless_reported!(&error, %error, "relay could not read unpublished events");
                    return;
                }
            };
            let full = events.len() == BATCH;
            if events.is_empty() {
                return;
            }
            let count = events.len();
            let messages: Vec<EventMessage> = events.into_iter().map(message_of).collect();
            if !self.publish(&messages).await {
                let ids: Vec<Uuid> = messages.iter().map(|message| message.id).collect();
                if let Err(error) = self.store.release_relay_claims(self.relay_id, &ids).await {
                    // They are taken again once the claims end.
                    crate::outage::warn_unless_reported!(&error, %error, "relay could not release its claims");
                }
                // Once per run of failures (the broker's outage has its own line); every second after.
                if self.relay_failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(count, "relay could not publish unpublished events; will retry");
                } else {
                    tracing::warn!(count, "relay could not publish unpublished events; will retry");
                }
                return;
            }
            self.relay_failing.store(false, Ordering::Relaxed);
            tracing::info!(count, "relay published events left unpublished");
            // Embedded, a backlog goes to the in-process queue one batch per pass (its events stay
            // unpublished until fan-out takes them).
            if !full || self.mode == Mode::Embedded {
                return;
            }
        }
    }

    async fn expire_idempotency_keys(&self) {
        let cutoff = Utc::now() - chrono::Duration::from_std(self.idempotency_window).unwrap_or_default();
        match self.store.expire_idempotency_keys(cutoff).await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "could not expire idempotency keys"),
        }
    }
}

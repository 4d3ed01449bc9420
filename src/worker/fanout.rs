//! Fan-out: turns each event into one delivery per subscribed active webhook (`*` matches every type), or,
//! for an event restricted to one webhook (`webhook.test`), one delivery to that webhook, whose id is the
//! event's. Other delivery ids come from the event's and the webhook's ([`crate::domain::delivery_id`]),
//! so fanning an event out again gives its deliveries the ids they had.
//! Events are taken in batches; the batch's deliveries are inserted in one statement (idempotent: unique
//! on event + webhook), their tasks published (confirmed), and only then are the events acknowledged.
//! An event redelivered after a crash, or a batch tried again after a failure (its deliveries may be
//! inserted and their tasks not published), finds its deliveries already inserted and hands those not yet
//! started to the scheduler, due a few seconds later ([`REDONE_AFTER`]), so that a first task still in
//! the queue is not sent twice. A redelivered event's deliveries stored only now go to the scheduler the
//! same way: their first attempts may be in flight unstored (below).
//! Where the process delivers too, the first attempts it has room for, of events fanned out for the
//! first time, skip the queue and the store ([`super::direct`]): each such delivery is written once,
//! with its first outcome, and its event is acknowledged only once those deliveries are settled, and
//! handed out again if one was not.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;
use uuid::Uuid;

use super::direct::{self, DirectLane, Settled};
use crate::webhook_cache::WebhookCache;
use crate::{
    domain::EventFilter,
    queue::{Consumer, DeliveryTask, DynQueue, EventMessage, Lane, Received},
    retrying,
    store::{DynStore, NewDelivery},
    telemetry::metrics::names,
};

/// Events taken per batch.
const BATCH: usize = 256;
/// Batches handled at once at most (each waits on the database and on publisher confirms); fewer where
/// the store writes one transaction at a time.
const BATCHES_AT_ONCE: usize = 4;
/// How long after a fan-out done again its deliveries not yet started are due: past the age at which the
/// deliverer checks a first attempt against the store before sending it.
const REDONE_AFTER: Duration = super::deliver::LATE_FIRST_ATTEMPT.saturating_add(Duration::from_secs(1));
/// First and longest wait before a failed batch is tried again.
const RETRY_DELAYS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

#[derive(Debug)]
pub struct Fanout {
    pub store: DynStore,
    pub queue: DynQueue,
    pub webhooks: Arc<WebhookCache>,
    /// How long a delivery may stay queued before the sweeper hands it over again.
    pub lease: Duration,
    /// This process's own deliverer, where it runs one.
    pub direct: Option<DirectLane>,
    /// An event taken within this time of its acceptance, neither redelivered nor tried before, is
    /// fanned out for the first time ([`fresh_for`]).
    pub fresh_for: Duration,
}

/// How young an event must be for its fan-out to be its first for sure: half of `events.relay_after`.
/// The outbox's relay publishes again only events at least that old (also when a process starts), so a
/// younger copy is the one publish of its event; half leaves room for the clocks of the API and the
/// worker to differ.
pub fn fresh_for(relay_after: Duration) -> Duration {
    relay_after / 2
}

impl Fanout {
    pub async fn run(self, mut consumer: Consumer<EventMessage>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let at_once = this.store.write_parallelism().clamp(1, BATCHES_AT_ONCE);
        let mut in_flight = JoinSet::new();
        // Events waiting for the deliveries they handed over directly.
        let settling = TaskTracker::new();
        loop {
            if in_flight.len() >= at_once {
                in_flight.join_next().await;
                continue;
            }
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
                first = consumer.next() => match first {
                    Some(first) => first,
                    None => break,
                },
            };
            let mut batch = Vec::with_capacity(BATCH);
            batch.push(first);
            consumer.drain_ready(&mut batch, BATCH);
            in_flight.spawn(this.clone().handle(batch, settling.clone(), shutdown.clone()));
        }
        while in_flight.join_next().await.is_some() {}
        settling.close();
        settling.wait().await;
    }

    /// Fans a batch out and acknowledges it: each event at once, or, if it handed deliveries over
    /// directly, once they are settled (on `settling`; handed back to the queue if one is not). A failure
    /// (database down, broker gone) is retried with the batch held: requeueing at once would spin, and
    /// unacknowledged messages go back to the queue anyway if the process stops.
    async fn handle(
        self: Arc<Self>,
        batch: Vec<Received<EventMessage>>,
        settling: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let mut tried = false;
        let fanned_out = retrying::until_done(
            "fan-out",
            RETRY_DELAYS,
            &shutdown,
            |_| true,
            || {
                let again = std::mem::replace(&mut tried, true);
                self.fan_out(&batch, again)
            },
        )
        .await;
        let Ok(settled) = fanned_out else {
            return; // Shutting down: the events go back to the queue unacknowledged.
        };
        for (received, settled) in batch.into_iter().zip(settled) {
            if settled.is_empty() {
                received.ack().await;
                continue;
            }
            settling.spawn(async move {
                if direct::all_settled(settled).await {
                    received.ack().await;
                } else {
                    // Done again as a redelivered event: what is still unstarted goes to the scheduler.
                    received.requeue().await;
                }
            });
        }
    }

    /// Its `fan_out` span (info: one per batch) counts the batch's events, the deliveries it calls for
    /// and those it created; a debug span per event gives the event's id and its delivery count.
    #[tracing::instrument(name = "fan_out", skip_all, fields(
        events = batch.len(), deliveries = tracing::field::Empty, created = tracing::field::Empty,
    ))]
    /// `again`: the batch was tried before, like a redelivered event, and may have left deliveries
    /// inserted whose tasks were never published. Returns, per event of the batch, the receipts of the
    /// deliveries it handed over directly.
    async fn fan_out(
        &self,
        batch: &[Received<EventMessage>],
        again: bool,
    ) -> anyhow::Result<Vec<Vec<Settled>>> {
        let now = crate::domain::now();
        let lease_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(10));
        let redone_due = now + chrono::Duration::from_std(REDONE_AFTER).unwrap_or_default();
        let mut deliveries = Vec::new();
        let mut expected = Vec::with_capacity(batch.len());
        for received in batch {
            let event = &received.message;
            let span = tracing::debug_span!("fan_out_event", event_id = %event.id, event_type = %event.event_type,
                deliveries = tracing::field::Empty);
            let subscribers =
                self.webhooks.subscribers(event.organization_id).instrument(span.clone()).await?;
            let before = deliveries.len();
            deliveries.extend(subscribers.iter().filter(|(id, filter)| receives(event, *id, filter)).map(
                |(webhook_id, _)| NewDelivery {
                    // One delivery at most for a restricted event: it takes the event's id, which the
                    // API returned as the delivery's.
                    id: if event.only_webhook.is_some() {
                        event.id
                    } else {
                        crate::domain::delivery_id(event.id, *webhook_id)
                    },
                    event_id: event.id,
                    webhook_id: *webhook_id,
                    organization_id: event.organization_id,
                    created_at: now,
                    // An event handed out again: see `store_and_publish`.
                    lease_until: if received.redelivered { redone_due } else { lease_until },
                },
            ));
            span.record("deliveries", deliveries.len() - before);
            expected.push((received, deliveries.len() - before));
        }
        let span = tracing::Span::current();
        span.record("deliveries", deliveries.len());
        let mut settled: Vec<Vec<Settled>> = batch.iter().map(|_| Vec::new()).collect();
        if deliveries.is_empty() {
            return Ok(settled);
        }
        // The first attempts this process's deliverer has room for, of events fanned out for the first
        // time, go to it unstored: each delivery is written once, with its first outcome. Not a
        // restricted event's (`webhook.test`): the API returned its delivery's id, which must be found
        // at once. The rest are stored, and their tasks published, first: once a task is handed over it
        // may be attempted at once, so nothing after that may fail and redo the batch.
        let fresh: HashSet<Uuid> = batch
            .iter()
            .filter(|received| {
                received.message.only_webhook.is_none() && first_fan_out(received, again, self.fresh_for)
            })
            .map(|received| received.message.id)
            .collect();
        let room = match &self.direct {
            Some(lane) => lane.reserve(deliveries.iter().filter(|d| fresh.contains(&d.event_id)).count()),
            None => Vec::new(),
        };
        let (mut unstored, mut stored) = (Vec::with_capacity(room.len()), Vec::new());
        for delivery in deliveries {
            if unstored.len() < room.len() && fresh.contains(&delivery.event_id) {
                unstored.push(delivery);
            } else {
                stored.push(delivery);
            }
        }
        let events: HashMap<Uuid, &EventMessage> =
            batch.iter().map(|received| (received.message.id, &received.message)).collect();
        let created = self.store_and_publish(&stored, &expected, again, now, &events).await?;
        let Some(lane) = &self.direct else {
            span.record("created", created);
            return Ok(settled);
        };
        let position: HashMap<Uuid, usize> =
            batch.iter().enumerate().map(|(index, received)| (received.message.id, index)).collect();
        let mut given_back = Vec::new();
        for (delivery, room) in unstored.into_iter().zip(room) {
            let task = DeliveryTask { unstored: true, ..task(events[&delivery.event_id], &delivery) };
            match lane.hand_over(task, room) {
                Ok(receipt) => settled[position[&delivery.event_id]].push(receipt),
                Err(_) => given_back.push(delivery),
            }
        }
        let handed_over: usize = settled.iter().map(Vec::len).sum();
        metrics::counter!(names::DELIVERIES_CREATED).increment(handed_over as u64);
        // The deliverer stopped meanwhile (shutdown): these are stored and go through the queue after all.
        let created = created + self.store_and_publish(&given_back, &[], false, now, &events).await?;
        span.record("created", created + handed_over);
        Ok(settled)
    }

    /// Stores `deliveries` and publishes the tasks of those it created; returns how many it created.
    /// `expected` (the batch's events with their delivery counts) and `again` tell which events may have
    /// been fanned out before: their deliveries found stored already are left to the scheduler.
    async fn store_and_publish(
        &self,
        deliveries: &[NewDelivery],
        expected: &[(&Received<EventMessage>, usize)],
        again: bool,
        now: chrono::DateTime<chrono::Utc>,
        events: &HashMap<Uuid, &EventMessage>,
    ) -> anyhow::Result<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let inserted: HashSet<Uuid> = self.store.create_deliveries(deliveries).await?.into_iter().collect();
        metrics::counter!(names::DELIVERIES_CREATED).increment(inserted.len() as u64);
        // The deliveries of an event handed out again that are stored only now are not published either:
        // the event's first fan-out may have handed them over unstored (the direct lane) to a deliverer
        // that is still at it (the queue handed the event out again because a connection broke, not
        // because that process died). They are stored queued until `REDONE_AFTER` (the scheduler takes
        // them then), by when such an outcome is recorded and the twin check skips them.
        let redelivered: HashSet<Uuid> =
            expected.iter().filter(|(received, _)| received.redelivered).map(|(r, _)| r.message.id).collect();
        let tasks: Vec<DeliveryTask> = deliveries
            .iter()
            .filter(|delivery| inserted.contains(&delivery.id) && !redelivered.contains(&delivery.event_id))
            .map(|delivery| task(events[&delivery.event_id], delivery))
            .collect();
        // A redelivered (or retried) event whose deliveries exist already: the previous fan-out may have
        // died, or failed, before publishing their tasks, or after. Those not started go back to the
        // store, due shortly, rather than being published again now: their first tasks may still be in
        // the queue or in flight, and a second task now would most likely be sent too. The scheduler
        // hands them over when due, late enough for the deliverer to check each against the store
        // first (`deliver::LATE_FIRST_ATTEMPT`), which skips those whose first attempt was recorded.
        let redone: Vec<Uuid> = expected
            .iter()
            .filter(|(received, count)| (received.redelivered || again) && *count > 0)
            .map(|(received, _)| received.message.id)
            .filter(|event_id| {
                deliveries.iter().any(|d| d.event_id == *event_id && !inserted.contains(&d.id))
            })
            .collect();
        if !redone.is_empty() {
            let due = now + chrono::Duration::from_std(REDONE_AFTER).unwrap_or_default();
            let deferrals: Vec<_> = self
                .store
                .unstarted_deliveries(&redone)
                .await?
                .into_iter()
                .map(|delivery| (delivery.id, due))
                .collect();
            self.store.defer_deliveries(&deferrals, now).await?;
        }
        if !tasks.is_empty() {
            self.queue.publish_deliveries(Lane::Live, &tasks).await?;
        }
        Ok(inserted.len())
    }
}

/// Whether the webhook gets a delivery of the event: the one it is restricted to, or every subscriber of
/// its type.
fn receives(event: &EventMessage, webhook_id: Uuid, filter: &EventFilter) -> bool {
    filter.receives(webhook_id, &event.event_type, event.only_webhook)
}

/// Whether this is the event's first fan-out for sure: neither handed out again nor tried before, and
/// accepted within `fresh_for` (the outbox's relay publishes again events left unmarked for
/// `events.relay_after`, so a relayed copy is older).
fn first_fan_out(received: &Received<EventMessage>, again: bool, fresh_for: Duration) -> bool {
    !again && !received.redelivered && crate::domain::age_of(received.message.id) < Some(fresh_for)
}

fn task(event: &EventMessage, delivery: &NewDelivery) -> DeliveryTask {
    DeliveryTask {
        delivery_id: delivery.id,
        event_id: event.id,
        webhook_id: delivery.webhook_id,
        organization_id: event.organization_id,
        attempt: 1,
        event_type: event.event_type.clone(),
        payload: event.payload.clone(),
        unstored: false,
    }
}

#[cfg(test)]
mod tests;

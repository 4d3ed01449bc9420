//! Fan-out: turns each event into one delivery per subscribed active webhook (`*` matches every type), or,
//! for an event restricted to one webhook (`webhook.test`), one delivery to that webhook, whose id is the
//! event's.
//! Events are taken in batches; the batch's deliveries are inserted in one statement (idempotent: unique
//! on event + webhook), their tasks published (confirmed), and only then are the events acknowledged.
//! An event redelivered after a crash, or a batch tried again after a failure (its deliveries may be
//! inserted and their tasks not published), finds its deliveries already inserted and hands those not yet
//! started to the scheduler, due a few seconds later ([`REDONE_AFTER`]), so that a first task still in
//! the queue is not sent twice.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

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
}

impl Fanout {
    pub async fn run(self, mut consumer: Consumer<EventMessage>, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let at_once = this.store.write_parallelism().clamp(1, BATCHES_AT_ONCE);
        let mut in_flight = JoinSet::new();
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
            in_flight.spawn(this.clone().handle(batch, shutdown.clone()));
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Fans a batch out and acknowledges it. A failure (database down, broker gone) is retried with the
    /// batch held: requeueing at once would spin, and unacknowledged messages go back to the queue anyway
    /// if the process stops.
    async fn handle(self: Arc<Self>, batch: Vec<Received<EventMessage>>, shutdown: CancellationToken) {
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
        if fanned_out.is_err() {
            return; // Shutting down: the events go back to the queue unacknowledged.
        }
        for received in batch {
            received.ack().await;
        }
    }

    /// Its `fan_out` span (info: one per batch) counts the batch's events, the deliveries it calls for
    /// and those it created; a debug span per event gives the event's id and its delivery count.
    #[tracing::instrument(name = "fan_out", skip_all, fields(
        events = batch.len(), deliveries = tracing::field::Empty, created = tracing::field::Empty,
    ))]
    /// `again`: the batch was tried before, like a redelivered event, and may have left deliveries
    /// inserted whose tasks were never published.
    async fn fan_out(&self, batch: &[Received<EventMessage>], again: bool) -> anyhow::Result<()> {
        let now = crate::domain::now();
        let lease_until =
            now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(10));
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
                    id: if event.only_webhook.is_some() { event.id } else { Uuid::now_v7() },
                    event_id: event.id,
                    webhook_id: *webhook_id,
                    organization_id: event.organization_id,
                    created_at: now,
                    lease_until,
                },
            ));
            span.record("deliveries", deliveries.len() - before);
            expected.push((received, deliveries.len() - before));
        }
        let span = tracing::Span::current();
        span.record("deliveries", deliveries.len());
        if deliveries.is_empty() {
            return Ok(());
        }
        let inserted: HashSet<Uuid> = self.store.create_deliveries(&deliveries).await?.into_iter().collect();
        span.record("created", inserted.len());
        metrics::counter!(names::DELIVERIES_CREATED).increment(inserted.len() as u64);
        let events: std::collections::HashMap<Uuid, &EventMessage> =
            batch.iter().map(|received| (received.message.id, &received.message)).collect();
        let tasks: Vec<DeliveryTask> = deliveries
            .iter()
            .filter(|delivery| inserted.contains(&delivery.id))
            .map(|delivery| task(events[&delivery.event_id], delivery.id, delivery.webhook_id))
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
        self.queue.publish_deliveries(Lane::Live, &tasks).await?;
        Ok(())
    }
}

/// Whether the webhook gets a delivery of the event: the one it is restricted to, or every subscriber of
/// its type.
fn receives(event: &EventMessage, webhook_id: Uuid, filter: &EventFilter) -> bool {
    filter.receives(webhook_id, &event.event_type, event.only_webhook)
}

fn task(event: &EventMessage, delivery_id: Uuid, webhook_id: Uuid) -> DeliveryTask {
    DeliveryTask {
        delivery_id,
        event_id: event.id,
        webhook_id,
        organization_id: event.organization_id,
        attempt: 1,
        event_type: event.event_type.clone(),
        payload: event.payload.clone(),
    }
}

#[cfg(test)]
mod tests;

//! Recovery ("recover since"): the `recovery` stage advances every open recovery in small steps, and
//! [`deliveries_for`] says which deliveries one event needs (shared with the re-fan-out of one event,
//! `POST /events/{id}/redeliver`).
//!
//! Each round (every `delivery.scheduler_interval`), each open recovery whose webhook is active and has
//! fewer than [`STEPS_IN_FLIGHT`] steps' worth of its deliveries still waiting or in flight takes one
//! step: the next events of the window (by id, after its cursor; [`EVENTS_PER_SECOND`] × the interval
//! of them), of which those the webhook receives become deliveries due now (missing ones created, dead
//! ones or those waiting for a retry made due; succeeded ones and those in flight left alone). The
//! normal scheduler hands them over in the queue's scheduled lane, beside the live traffic (which never
//! waits behind them). What a recovery adds to the store's and the workers' load is kept small: a step
//! is a fraction of a second's pace, and at most [`STEPS_IN_FLIGHT`] + 1 steps are unfinished at once. A disabled webhook's recovery waits
//! until it is enabled.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::EventFilter,
    store::{DynStore, EventHeader, NewDelivery, Recovery, RecoveryStep, StoreResult},
};

/// Events one recovery looks at per second at most.
pub(crate) const EVENTS_PER_SECOND: f64 = 100.0;
/// A recovery waits while this many steps' worth of its deliveries are unfinished.
pub(crate) const STEPS_IN_FLIGHT: u64 = 2;

/// Events looked at per step of one recovery that steps every `interval`.
fn step_events(interval: Duration) -> i64 {
    // At least one event a step; at most 1,000 (an interval of 5 s or more).
    (EVENTS_PER_SECOND * interval.as_secs_f64()).ceil().clamp(1.0, 1000.0) as i64
}

/// The deliveries `event` needs among `webhooks` (id and subscribed types), due `now`: one per webhook
/// that receives it (an event restricted to one webhook gets at most one, with the event's id, as in
/// fan-out).
pub(crate) fn deliveries_for(
    event: &EventHeader,
    organization_id: Uuid,
    webhooks: &[(Uuid, EventFilter)],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<NewDelivery> {
    webhooks
        .iter()
        .filter(|(webhook_id, filter)| filter.receives(*webhook_id, &event.event_type, event.only_webhook))
        .map(|(webhook_id, _)| NewDelivery {
            id: if event.only_webhook.is_some() { event.id } else { Uuid::now_v7() },
            event_id: event.id,
            webhook_id: *webhook_id,
            organization_id,
            created_at: now,
            // Queued with a lease that ends now: the scheduler's next round claims it.
            lease_until: now,
        })
        .collect()
}

/// The `recovery` stage.
pub(crate) struct Recoverer {
    pub store: DynStore,
    pub interval: Duration,
}

impl Recoverer {
    pub async fn run(self, shutdown: CancellationToken) {
        crate::stages::every(self.interval, &shutdown, || async {
            if let Err(error) = self.round().await {
                crate::outage::warn_unless_reported!(&error, %error, "cannot advance recoveries");
            }
        })
        .await;
    }

    /// One step of every open recovery that may take one.
    pub(crate) async fn round(&self) -> StoreResult<()> {
        for recovery in self.store.open_recoveries().await? {
            self.step(&recovery).await?;
        }
        Ok(())
    }

    async fn step(&self, recovery: &Recovery) -> StoreResult<()> {
        let Some(webhook) = self.store.get_webhook(recovery.webhook_id).await? else {
            return Ok(());
        };
        if !webhook.is_active {
            return Ok(());
        }
        let Some(progress) = self.store.get_recovery(recovery.id).await? else {
            return Ok(());
        };
        let step_events = step_events(self.interval);
        if progress.unfinished() >= STEPS_IN_FLIGHT * step_events.unsigned_abs() {
            return Ok(());
        }
        let events = self
            .store
            .events_in_window(
                recovery.organization_id,
                recovery.since,
                recovery.until,
                recovery.cursor_id,
                step_events,
            )
            .await?;
        let now = crate::domain::now();
        let subscriber = [(webhook.id, EventFilter::from_stored(&webhook.events))];
        let deliveries: Vec<NewDelivery> = events
            .iter()
            .flat_map(|event| deliveries_for(event, recovery.organization_id, &subscriber, now))
            .collect();
        let step = RecoveryStep {
            recovery_id: recovery.id,
            from_steps: recovery.steps,
            cursor_id: events.last().map(|event| event.id).or(recovery.cursor_id),
            scanned: (events.len() as i64) < step_events,
        };
        let readied = self.store.ready_deliveries(&deliveries, now, Some(&step)).await?;
        if step.scanned && readied.stepped {
            tracing::info!(recovery_id = %recovery.id, webhook_id = %recovery.webhook_id, "recovery scanned its window");
        }
        Ok(())
    }
}

/// Why a recovery cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoveryRefused {
    #[error("since must be earlier than until")]
    EmptyWindow,
    #[error("the webhook is disabled; enable it with PATCH {{\"is_active\": true}} first")]
    Disabled,
    #[error("a recovery of this webhook is running already: {0}")]
    Running(Uuid),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Starts a recovery of `webhook` over `since..=until` (the API's and the CLI's one way): the window
/// must not be empty, the webhook must be active, and no other recovery of it may be running.
pub(crate) async fn start_recovery(
    store: &DynStore,
    webhook: &crate::store::Webhook,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<crate::store::RecoveryProgress, RecoveryRefused> {
    if since >= until {
        return Err(RecoveryRefused::EmptyWindow);
    }
    if !webhook.is_active {
        return Err(RecoveryRefused::Disabled);
    }
    if let Some(latest) = store.latest_recovery(webhook.id).await?
        && latest.is_running()
    {
        return Err(RecoveryRefused::Running(latest.recovery.id));
    }
    let recovery = Recovery {
        id: Uuid::now_v7(),
        organization_id: webhook.organization_id,
        webhook_id: webhook.id,
        since,
        until,
        cursor_id: None,
        steps: 0,
        scanned: false,
        created_at: crate::domain::now(),
    };
    store.create_recovery(&recovery).await?;
    Ok(crate::store::RecoveryProgress { recovery, total: 0, done: 0, failed: 0 })
}

/// Fans `event` out again to its organization's current active subscribers, skipping those that
/// received it (the API's and the CLI's one way).
pub(crate) async fn redeliver(
    store: &DynStore,
    event: &crate::store::Event,
) -> StoreResult<crate::store::Readied> {
    let webhooks: Vec<(Uuid, EventFilter)> = store
        .active_webhooks(event.organization_id)
        .await?
        .iter()
        .map(|webhook| (webhook.id, EventFilter::from_stored(&webhook.events)))
        .collect();
    let header =
        EventHeader { id: event.id, event_type: event.event_type.clone(), only_webhook: event.only_webhook };
    let now = crate::domain::now();
    let deliveries = deliveries_for(&header, event.organization_id, &webhooks, now);
    store.ready_deliveries(&deliveries, now, None).await
}

//! The scheduler and sweeper: every `delivery.scheduler_interval` it claims deliveries that are due
//! (a retry whose time has come, a redrive) or stuck (queued past their lease: a worker or the broker
//! lost them) and hands them to the queue's scheduled lane, so they never queue in front of first attempts. Claims are `FOR UPDATE SKIP LOCKED` on PostgreSQL, so every
//! worker can run one. Retries wait in the store, never in the broker.
//!
//! A claim must not strand work when its worker dies before the broker has the tasks: it is short
//! (`delivery.claim_lease`) and extended to `delivery.stuck_after` only once the broker confirmed the
//! tasks, and no claim is made while the queue reports it cannot take work (docs/architecture.md,
//! "Claims and the longest wait after a crash").

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use tokio_util::sync::CancellationToken;

use crate::{
    queue::{DeliveryTask, DynQueue, Lane},
    store::{DeliveryStore, DueDelivery},
};

/// Deliveries claimed per round.
const BATCH: usize = 500;

#[derive(Debug)]
pub struct Scheduler {
    pub store: Arc<dyn DeliveryStore>,
    pub queue: DynQueue,
    pub interval: Duration,
    /// How long a claim lasts until the broker confirms the tasks (a worker dying in between leaves
    /// them to be claimed again after this).
    pub claim_lease: Duration,
    /// How long a confirmed delivery may stay queued before it is claimed again (the sweeper).
    pub stuck_after: Duration,
}

/// What one round of the scheduler did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// The queue cannot take work now: nothing was claimed.
    QueueDown,
    /// This many deliveries were claimed and confirmed by the queue (0: none was due).
    HandedOver(usize),
    /// Claiming failed, or the claimed deliveries could not be published (and were released).
    Failed,
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        crate::stages::every(self.interval, &shutdown, || self.hand_over_due()).await;
    }

    /// Claims and publishes due deliveries until none are left.
    pub async fn hand_over_due(&self) {
        while self.round(crate::domain::now()).await == Round::HandedOver(BATCH) {}
    }

    /// Claims up to one batch of the deliveries due at `now` for a short lease, publishes their tasks,
    /// and once the queue has confirmed them extends the claim to `stuck_after`; a failed publish
    /// releases it. The queue is asked first: while it cannot publish, nothing is claimed.
    pub(crate) async fn round(&self, now: DateTime<Utc>) -> Round {
        if let Err(error) = self.queue.check().await {
            tracing::debug!(%error, "the queue cannot take work; no deliveries claimed this round");
            return Round::QueueDown;
        }
        let claimed_until = lease_end(now, self.claim_lease);
        let due = match self.store.claim_due_deliveries(now, claimed_until, BATCH as i64).await {
            Ok(due) => due,
            Err(error) => {
                crate::outage::warn_unless_reported!(&error, %error, "cannot claim due deliveries");
                return Round::Failed;
            }
        };
        if due.is_empty() {
            return Round::HandedOver(0);
        }
        let claimed = due.len();
        let ids: Vec<_> = due.iter().map(|d| d.delivery_id).collect();
        let tasks: Vec<DeliveryTask> = due.into_iter().map(task).collect();
        if let Err(error) = self.queue.publish_deliveries(Lane::Scheduled, &tasks).await {
            crate::outage::warn_unless_reported!(&error, %error, count = claimed, "cannot hand due deliveries to the queue; will retry");
            if let Err(error) = self.store.release_deliveries(&ids, claimed_until, now).await {
                crate::outage::warn_unless_reported!(&error, %error, "cannot release claimed deliveries; they are due again once their claim ends");
            }
            return Round::Failed;
        }
        // A worker dying before this line leaves the deliveries to be claimed again after the short
        // claim lease; their tasks are in the broker now, so the sweeper's lease takes over.
        let confirmed_until = lease_end(now, self.stuck_after);
        if let Err(error) = self.store.extend_claims(&ids, claimed_until, confirmed_until).await {
            crate::outage::warn_unless_reported!(&error, %error, count = claimed, "cannot extend the claim of handed-over deliveries; they may be handed over twice");
        }
        tracing::debug!(count = claimed, "handed due deliveries to the queue");
        metrics::counter!(crate::telemetry::metrics::names::RETRIES_DUE).increment(claimed as u64);
        Round::HandedOver(claimed)
    }
}

/// `now + lease`, in whole microseconds: the claim is found again by this exact value, and both
/// databases keep microseconds.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    (now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(10))).trunc_subsecs(6)
}

fn task(due: DueDelivery) -> DeliveryTask {
    DeliveryTask {
        delivery_id: due.delivery_id,
        event_id: due.event_id,
        webhook_id: due.webhook_id,
        organization_id: due.organization_id,
        attempt: u32::try_from(due.attempts).unwrap_or(u32::MAX - 1) + 1,
        event_type: due.event_type,
        payload: Bytes::from(due.payload),
        unstored: false,
    }
}

#[cfg(test)]
mod tests;

//! The scheduler and sweeper: every `delivery.scheduler_interval` it claims deliveries that are due
//! (a retry whose time has come, a redrive) or stuck (queued longer than `delivery.stuck_after`: a worker
//! or the broker lost them) and hands them to the queue. Claims are `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL, so every worker can run one. Retries wait in the store, never in the broker.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::{
    queue::{DeliveryTask, DynQueue},
    store::DeliveryStore,
};

/// Deliveries claimed per round.
const BATCH: i64 = 500;

#[derive(Debug)]
pub struct Scheduler {
    pub store: Arc<dyn DeliveryStore>,
    pub queue: DynQueue,
    pub interval: Duration,
    /// How long a claimed delivery may stay queued before it is claimed again.
    pub lease: Duration,
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => self.hand_over_due().await,
            }
        }
    }

    /// Claims and publishes due deliveries until none are left.
    pub async fn hand_over_due(&self) {
        loop {
            let now = crate::domain::now();
            let lease_until =
                now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(10));
            let due = match self.store.claim_due_deliveries(now, lease_until, BATCH).await {
                Ok(due) => due,
                Err(error) => {
                    crate::outage::warn_unless_reported!(&error, %error, "cannot claim due deliveries");
                    return;
                }
            };
            if due.is_empty() {
                return;
            }
            let claimed = due.len();
            let ids: Vec<_> = due.iter().map(|d| d.delivery_id).collect();
            let tasks: Vec<DeliveryTask> = due
                .into_iter()
                .map(|d| DeliveryTask {
                    delivery_id: d.delivery_id,
                    event_id: d.event_id,
                    webhook_id: d.webhook_id,
                    organization_id: d.organization_id,
                    attempt: u32::try_from(d.attempts).unwrap_or(u32::MAX - 1) + 1,
                    event_type: d.event_type,
                    payload: Bytes::from(d.payload),
                })
                .collect();
            if let Err(error) = self.queue.publish_deliveries(&tasks).await {
                crate::outage::warn_unless_reported!(&error, %error, count = claimed, "cannot hand due deliveries to the queue; will retry");
                if let Err(error) = self.store.release_deliveries(&ids, now).await {
                    tracing::warn!(%error, "cannot release claimed deliveries; the sweeper will take them later");
                }
                return;
            }
            tracing::debug!(count = claimed, "handed due deliveries to the queue");
            metrics::counter!(crate::telemetry::metrics::names::RETRIES_DUE).increment(claimed as u64);
            if (claimed as i64) < BATCH {
                return;
            }
        }
    }
}

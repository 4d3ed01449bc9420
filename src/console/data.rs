//! The figures the console shows beyond the API's records, one function per figure: deliveries per
//! time bucket by status, success ratios, attempt latency percentiles, the outbox lag, the dead-letter
//! count, and each webhook's health. Each reads a bounded window (the last hour or day, by delivery id)
//! through [`crate::store::ConsoleStore`]; changing where a figure comes from is a change here only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain,
    store::{DeliveryStatus, DynStore, StoreResult},
};

/// Attempt durations read at most for the latency percentiles.
const LATENCY_SAMPLE: i64 = 10_000;

/// A window of the overview: its length and the width of its buckets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) seconds: i64,
    pub(crate) bucket_seconds: i64,
}

pub(crate) const LAST_HOUR: Window = Window { seconds: 3600, bucket_seconds: 60 };
pub(crate) const LAST_DAY: Window = Window { seconds: 86_400, bucket_seconds: 900 };

/// Deliveries created in one bucket, by their status now.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Bucket {
    /// Start of the bucket (Unix seconds).
    pub(crate) start: i64,
    pub(crate) succeeded: u64,
    /// Failed at least once and waiting for a retry, or in flight.
    pub(crate) retrying: u64,
    pub(crate) dead: u64,
}

impl Bucket {
    pub(crate) fn total(&self) -> u64 {
        self.succeeded + self.retrying + self.dead
    }
}

/// Deliveries of the last day (by status now) per minute: read once, then cut into windows by
/// [`Minutes::window`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Minutes {
    /// Unix second of the first minute.
    first: i64,
    minutes: Vec<Bucket>,
}

impl Minutes {
    /// The last day's minutes ending with the minute of `now`.
    pub(crate) async fn read(
        store: &DynStore,
        organization_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Self> {
        let last = now.timestamp().div_euclid(60) * 60;
        let count = LAST_DAY.seconds / 60;
        let first = last - (count - 1) * 60;
        let since = DateTime::<Utc>::from_timestamp(first, 0).unwrap_or(now);
        let mut minutes: Vec<Bucket> =
            (0..count).map(|i| Bucket { start: first + i * 60, ..Bucket::default() }).collect();
        for counted in store.delivery_counts(organization_id, since, 60).await? {
            let Some(minute) =
                usize::try_from((counted.bucket - first) / 60).ok().and_then(|i| minutes.get_mut(i))
            else {
                continue;
            };
            match counted.status {
                DeliveryStatus::Succeeded => minute.succeeded += counted.count,
                DeliveryStatus::Dead => minute.dead += counted.count,
                DeliveryStatus::Pending | DeliveryStatus::Queued => minute.retrying += counted.count,
            }
        }
        Ok(Self { first, minutes })
    }

    /// The buckets of `window` (its last `window.seconds`, in buckets of `window.bucket_seconds`),
    /// oldest first, empty ones included.
    pub(crate) fn window(&self, window: Window) -> Vec<Bucket> {
        let per_bucket = usize::try_from(window.bucket_seconds / 60).unwrap_or(1).max(1);
        let wanted = usize::try_from(window.seconds / 60).unwrap_or(0).min(self.minutes.len());
        let recent = &self.minutes[self.minutes.len() - wanted..];
        recent
            .chunks(per_bucket)
            .map(|chunk| Bucket {
                start: chunk.first().map_or(self.first, |minute| minute.start),
                succeeded: chunk.iter().map(|m| m.succeeded).sum(),
                retrying: chunk.iter().map(|m| m.retrying).sum(),
                dead: chunk.iter().map(|m| m.dead).sum(),
            })
            .collect()
    }
}

/// Of the finished deliveries of the buckets, the share that succeeded; `None` when none finished.
pub(crate) fn success_ratio(buckets: &[Bucket]) -> Option<f64> {
    let succeeded: u64 = buckets.iter().map(|b| b.succeeded).sum();
    let finished = succeeded + buckets.iter().map(|b| b.dead).sum::<u64>();
    (finished > 0).then(|| succeeded as f64 / finished as f64)
}

/// Attempt latency percentiles (ms) over a window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: Option<i64>,
    pub(crate) p90: Option<i64>,
    pub(crate) p99: Option<i64>,
    /// Attempts the percentiles are of.
    pub(crate) attempts: usize,
}

pub(crate) async fn attempt_latency(
    store: &DynStore,
    organization_id: Uuid,
    since: DateTime<Utc>,
) -> StoreResult<Latency> {
    let mut durations = store.attempt_durations(organization_id, since, LATENCY_SAMPLE).await?;
    durations.sort_unstable();
    let at = |share: f64| {
        let last = durations.len().checked_sub(1)?;
        durations.get(((last as f64) * share).round() as usize).copied()
    };
    Ok(Latency { p50: at(0.5), p90: at(0.9), p99: at(0.99), attempts: durations.len() })
}

/// Events not yet handed to the queue, and how long the oldest has waited.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct OutboxLag {
    pub(crate) unpublished: u64,
    pub(crate) oldest_seconds: Option<i64>,
}

pub(crate) async fn outbox_lag(store: &DynStore, now: DateTime<Utc>) -> StoreResult<OutboxLag> {
    let (unpublished, oldest) = store.outbox_backlog().await?;
    Ok(OutboxLag { unpublished, oldest_seconds: oldest.map(|at| (now - at).num_seconds().max(0)) })
}

pub(crate) async fn dead_letters(store: &DynStore, organization_id: Uuid) -> StoreResult<u64> {
    store.dead_delivery_count(organization_id).await
}

/// One webhook's deliveries of the last day, by status now, and its last answer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Health {
    pub(crate) succeeded: u64,
    pub(crate) retrying: u64,
    pub(crate) dead: u64,
    /// Of those finished, the share that succeeded.
    pub(crate) success_ratio: Option<f64>,
    /// The status code of the newest delivery's last attempt.
    pub(crate) last_status: Option<i64>,
}

/// The health over the last day of the organization's webhooks (or of one), by webhook id (absent: no
/// delivery).
pub(crate) async fn webhook_health(
    store: &DynStore,
    organization_id: Uuid,
    webhook_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<HashMap<Uuid, Health>> {
    let since = now - chrono::Duration::seconds(LAST_DAY.seconds);
    let mut health: HashMap<Uuid, Health> = HashMap::new();
    for count in store.webhook_status_counts(organization_id, webhook_id, since).await? {
        let entry = health.entry(count.webhook_id).or_default();
        match count.status {
            DeliveryStatus::Succeeded => entry.succeeded += count.count,
            DeliveryStatus::Dead => entry.dead += count.count,
            DeliveryStatus::Pending | DeliveryStatus::Queued => entry.retrying += count.count,
        }
    }
    for entry in health.values_mut() {
        let finished = entry.succeeded + entry.dead;
        entry.success_ratio = (finished > 0).then(|| entry.succeeded as f64 / finished as f64);
    }
    Ok(health)
}

/// The status code of the newest delivery's last attempt to the webhook.
pub(crate) async fn last_status(
    store: &DynStore,
    organization_id: Uuid,
    webhook_id: Uuid,
) -> StoreResult<Option<i64>> {
    let query = crate::store::DeliveryQuery {
        organization_id,
        webhook_id: Some(webhook_id),
        page: crate::store::Page { cursor: None, limit: 1 },
        ..crate::store::DeliveryQuery::default()
    };
    Ok(store.list_deliveries(&query).await?.first().and_then(|delivery| delivery.last_status_code))
}

/// Now, for the figures (one clock per page).
pub(crate) fn now() -> DateTime<Utc> {
    domain::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_minutes_are_cut_into_windows() {
        let minutes: Vec<Bucket> = (0..1440)
            .map(|i| Bucket { start: i * 60, succeeded: 1, retrying: 0, dead: u64::from(i == 1439) })
            .collect();
        let read = Minutes { first: 0, minutes };
        let hour = read.window(LAST_HOUR);
        assert_eq!((hour.len(), hour[0].start, hour[59].dead), (60, 1380 * 60, 1));
        let day = read.window(LAST_DAY);
        assert_eq!((day.len(), day[0].succeeded, day[95].total()), (96, 15, 16));
    }

    #[test]
    fn ratios_count_finished_deliveries_only() {
        let buckets = [
            Bucket { start: 0, succeeded: 3, retrying: 5, dead: 1 },
            Bucket { start: 60, succeeded: 0, retrying: 0, dead: 0 },
        ];
        assert_eq!(success_ratio(&buckets), Some(0.75));
        assert_eq!(success_ratio(&buckets[1..]), None);
        assert_eq!(buckets[0].total(), 9);
    }
}

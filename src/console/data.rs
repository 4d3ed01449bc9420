//! The overview's figures, one function per figure: deliveries per time bucket by their status now,
//! the attempts' success ratio, attempt latency percentiles, the outbox lag and the dead-letter count.
//! The success ratio comes from the endpoint statistics' rollups ([`crate::store::StatsStore`], as each
//! webhook's health does, through `GET /webhooks/{id}/stats`); the rest reads a bounded window (the last
//! hour or day, by delivery id) through [`crate::store::ConsoleStore`]. Changing where a figure comes
//! from is a change here only.

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

/// How many attempts there were, and the share that succeeded (`None` without attempts).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttemptSuccess {
    pub(crate) ratio: Option<f64>,
    pub(crate) attempts: u64,
}

/// Of the attempts of the organization's webhooks over the last hour and the last day (the endpoint
/// statistics' rollups, read once), the share that succeeded: the same measure as each webhook's
/// `GET /webhooks/{id}/stats`.
pub(crate) async fn attempt_success(
    store: &DynStore,
    organization_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<(AttemptSuccess, AttemptSuccess)> {
    let hour_ago = now - chrono::Duration::seconds(LAST_HOUR.seconds);
    let series =
        store.organization_series(organization_id, now - chrono::Duration::seconds(LAST_DAY.seconds)).await?;
    let sum = |points: &mut dyn Iterator<Item = &crate::store::MinutePoint>| {
        let (attempts, succeeded) =
            points.fold((0u64, 0u64), |(a, s), point| (a + point.attempts, s + point.succeeded));
        AttemptSuccess { ratio: (attempts > 0).then(|| succeeded as f64 / attempts as f64), attempts }
    };
    let hour =
        sum(&mut series.iter().filter(|point| point.minute >= hour_ago - chrono::Duration::seconds(59)));
    Ok((hour, sum(&mut series.iter())))
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
}

//! Endpoint statistics: what [`StatsStore`] answers (a webhook's figures over a window, an
//! organization's per-minute series) and the rollups the outcome recorder keeps for it. Each batch of
//! outcomes becomes one [`Rollup`] per (webhook, minute) and one [`HealthChange`] per webhook, upserted
//! in the transaction that records the outcomes, so a window's figures are sums of a few rows per minute
//! and never a scan of the attempts. Latencies are counted in a fixed histogram
//! ([`LATENCY_BOUNDS_MS`]); percentiles are the upper bound of the bucket that holds them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{AttemptOutcome, NextStep, StoreResult};

/// Upper bounds (inclusive, milliseconds) of the latency histogram's buckets; the last bucket holds
/// everything slower than the one before it (its bound is the delivery timeout's default, 15 s).
pub const LATENCY_BOUNDS_MS: [i64; 12] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 15_000];

/// Success ratio below which a webhook with no current failure run is still `failing`.
pub const FAILING_BELOW_RATIO: f64 = 0.9;

/// What one attempt came to, as statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptClass {
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// No HTTP answer: connection refused or reset, TLS, DNS, a refused (SSRF-guarded) target.
    Network,
    /// No answer within the delivery timeout.
    Timeout,
    /// Herald did not send a request (disabled webhook, unusable secret): not counted in statistics.
    NotAttempted,
}

impl AttemptClass {
    /// The class of an HTTP answer.
    pub fn of_status(status: u16) -> Self {
        match status {
            0..=299 => Self::Status2xx,
            300..=399 => Self::Status3xx,
            400..=499 => Self::Status4xx,
            _ => Self::Status5xx,
        }
    }
}

/// The windows `GET /webhooks/{id}/stats` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsWindow {
    Hour,
    Day,
    Week,
}

impl StatsWindow {
    /// `1h`, `24h` or `7d`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1h" => Some(Self::Hour),
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
        }
    }

    pub fn minutes(self) -> i64 {
        match self {
            Self::Hour => 60,
            Self::Day => 24 * 60,
            Self::Week => 7 * 24 * 60,
        }
    }
}

/// The minute bucket of a time: Unix seconds / 60.
pub fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// Attempts of one webhook in one minute (or summed over a window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct ClassCounts {
    #[serde(rename = "2xx")]
    pub status_2xx: u64,
    #[serde(rename = "3xx")]
    pub status_3xx: u64,
    #[serde(rename = "4xx")]
    pub status_4xx: u64,
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    pub network_error: u64,
    pub timeout: u64,
}

/// A rollup row: one webhook's attempts in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollup {
    pub webhook_id: Uuid,
    pub minute: i64,
    pub attempts: u64,
    pub succeeded: u64,
    pub classes: ClassCounts,
    /// Counts per bucket of [`LATENCY_BOUNDS_MS`].
    pub latency: [u64; LATENCY_BOUNDS_MS.len()],
}

/// What a batch of outcomes changes in one webhook's health row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    pub webhook_id: Uuid,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i64>,
    /// Failures after the batch's last success (or all of them, when it has none: then they lengthen
    /// the run; `last_success_at` is set exactly when the batch holds a success).
    pub trailing_failures: u64,
}

/// The bucket of [`LATENCY_BOUNDS_MS`] a duration falls in.
pub fn latency_bucket(duration_ms: i64) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|bound| duration_ms <= *bound).unwrap_or(LATENCY_BOUNDS_MS.len() - 1)
}

/// The rollups and health changes of a batch of outcomes (those that moved their delivery on), one per
/// key, in key order. Attempts Herald did not make are left out.
pub fn rollups(outcomes: &[&AttemptOutcome]) -> (Vec<Rollup>, Vec<HealthChange>) {
    let mut rollups: BTreeMap<(Uuid, i64), Rollup> = BTreeMap::new();
    let mut health: BTreeMap<Uuid, HealthChange> = BTreeMap::new();
    let mut ordered: Vec<&&AttemptOutcome> =
        outcomes.iter().filter(|o| o.class != AttemptClass::NotAttempted).collect();
    ordered.sort_by_key(|o| o.attempt.ended_at());
    for outcome in ordered {
        let ended = outcome.attempt.ended_at();
        let key = (outcome.webhook_id, minute_of(ended));
        let rollup = rollups.entry(key).or_insert_with(|| Rollup {
            webhook_id: key.0,
            minute: key.1,
            ..Rollup::default()
        });
        let delivered = outcome.next == NextStep::Succeeded;
        rollup.attempts += 1;
        rollup.succeeded += u64::from(delivered);
        let classes = &mut rollup.classes;
        match outcome.class {
            AttemptClass::Status2xx => classes.status_2xx += 1,
            AttemptClass::Status3xx => classes.status_3xx += 1,
            AttemptClass::Status4xx => classes.status_4xx += 1,
            AttemptClass::Status5xx => classes.status_5xx += 1,
            AttemptClass::Network => classes.network_error += 1,
            AttemptClass::Timeout => classes.timeout += 1,
            AttemptClass::NotAttempted => {}
        }
        rollup.latency[latency_bucket(outcome.attempt.duration_ms)] += 1;
        let change = health.entry(outcome.webhook_id).or_insert_with(|| HealthChange {
            webhook_id: outcome.webhook_id,
            last_success_at: None,
            last_failure_at: None,
            last_status_code: None,
            trailing_failures: 0,
        });
        change.last_status_code = outcome.attempt.status_code;
        if delivered {
            change.last_success_at = Some(ended);
            change.trailing_failures = 0;
        } else {
            change.last_failure_at = Some(ended);
            change.trailing_failures += 1;
        }
    }
    (rollups.into_values().collect(), health.into_values().collect())
}

/// A webhook's state, as the stats report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Active, its last attempt succeeded and its window's success ratio is at least 90 %.
    Healthy,
    /// Active, and its last attempts failed or its window's success ratio is below 90 %.
    Failing,
    /// Not active (by an admin, or by Herald: see `disabled_reason`).
    Disabled,
}

/// The latency percentiles of a window: each the upper bound (ms) of the histogram bucket holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LatencyPercentiles {
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub p99_ms: i64,
}

/// A webhook's figures over a window ([`StatsStore::webhook_stats`]).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WebhookStats {
    pub webhook_id: Uuid,
    /// `1h`, `24h` or `7d`.
    pub window: &'static str,
    /// Attempts made in the window (every retry counts).
    pub attempts: u64,
    pub succeeded: u64,
    /// Successful attempts / attempts; `null` without attempts.
    pub success_ratio: Option<f64>,
    pub status_classes: ClassCounts,
    /// `null` without attempts.
    pub latency: Option<LatencyPercentiles>,
    /// When an attempt last succeeded (ever, not only in the window).
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i64>,
    /// Failed attempts since the last successful one.
    pub consecutive_failures: u64,
    pub state: WebhookState,
    /// Why the webhook is disabled, when Herald disabled it.
    pub disabled_reason: Option<String>,
}

/// One minute of an organization's deliveries ([`StatsStore::organization_series`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MinutePoint {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub attempts: u64,
    pub succeeded: u64,
}

/// The window's sums for one webhook, as read from the rollups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowSums {
    pub attempts: u64,
    pub succeeded: u64,
    pub classes: ClassCounts,
    pub latency: [u64; LATENCY_BOUNDS_MS.len()],
}

/// The upper bound of the bucket holding the `quantile` (0..1) of a histogram; `None` when empty.
pub fn percentile(histogram: &[u64; LATENCY_BOUNDS_MS.len()], quantile: f64) -> Option<i64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest count c with c >= quantile * total.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((quantile * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (bucket, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(LATENCY_BOUNDS_MS[bucket]);
        }
    }
    LATENCY_BOUNDS_MS.last().copied()
}

/// The state a webhook's figures say: see [`WebhookState`].
pub fn state_of(active: bool, consecutive_failures: u64, success_ratio: Option<f64>) -> WebhookState {
    if !active {
        WebhookState::Disabled
    } else if consecutive_failures > 0 || success_ratio.is_some_and(|ratio| ratio < FAILING_BELOW_RATIO) {
        WebhookState::Failing
    } else {
        WebhookState::Healthy
    }
}

/// Endpoint statistics, read from the rollups the outcome recorder keeps (see the module's header).
#[async_trait]
pub trait StatsStore: Send + Sync + std::fmt::Debug + 'static {
    /// The organization's webhook's figures over `window` ending at `now`; `None` if the organization
    /// has no such webhook.
    async fn webhook_stats(
        &self,
        organization_id: Uuid,
        webhook_id: Uuid,
        window: StatsWindow,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebhookStats>>;
    /// The organization's attempts per minute since `since` (minutes without attempts left out), oldest
    /// first.
    async fn organization_series(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<MinutePoint>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds() {
        let mut histogram = [0; LATENCY_BOUNDS_MS.len()];
        assert_eq!(percentile(&histogram, 0.5), None);
        histogram[latency_bucket(3)] = 90;
        histogram[latency_bucket(400)] = 9;
        histogram[latency_bucket(20_000)] = 1;
        assert_eq!(percentile(&histogram, 0.5), Some(5));
        assert_eq!(percentile(&histogram, 0.95), Some(500));
        assert_eq!(percentile(&histogram, 0.99), Some(500));
        assert_eq!(percentile(&histogram, 1.0), Some(15_000));
    }

    #[test]
    fn states() {
        assert_eq!(state_of(false, 0, Some(1.0)), WebhookState::Disabled);
        assert_eq!(state_of(true, 1, Some(1.0)), WebhookState::Failing);
        assert_eq!(state_of(true, 0, Some(0.5)), WebhookState::Failing);
        assert_eq!(state_of(true, 0, Some(0.95)), WebhookState::Healthy);
        assert_eq!(state_of(true, 0, None), WebhookState::Healthy);
    }
}

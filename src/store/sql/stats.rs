//! [`StatsStore`] on SQL, and the rollups' upserts that `record_outcomes` runs in its transaction: one
//! statement for the (webhook, minute) rows of a batch, one for its webhooks' health rows. Rows of a
//! webhook deleted meanwhile are skipped (the `EXISTS` guard), so a deletion never fails a batch.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::DB;
use crate::store::{
    AttemptOutcome, LATENCY_BOUNDS_MS, LatencyPercentiles, MinutePoint, StatsStore, StatsWindow, StoreResult,
    WebhookStats, WindowSums, minute_of, percentile, rollups,
    sql::{BATCH_ROWS, ResultExt, SqlStore},
    state_of,
};

/// The counted columns of `webhook_stats`, in the order [`push_counts`] binds them.
const COUNT_COLUMNS: [&str; 20] = [
    "attempts",
    "succeeded",
    "class_2xx",
    "class_3xx",
    "class_4xx",
    "class_5xx",
    "class_network",
    "class_timeout",
    "latency_0",
    "latency_1",
    "latency_2",
    "latency_3",
    "latency_4",
    "latency_5",
    "latency_6",
    "latency_7",
    "latency_8",
    "latency_9",
    "latency_10",
    "latency_11",
];

/// A count as the databases store it (BIGINT).
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// Upserts the rollups and health rows of outcomes that moved their delivery on (each is counted once:
/// a stale duplicate moves nothing), inside the caller's transaction.
pub(super) async fn write_rollups(
    conn: &mut <DB as sqlx::Database>::Connection,
    outcomes: &[&AttemptOutcome],
) -> StoreResult<()> {
    let (minutes, health) = rollups(outcomes);
    let columns = COUNT_COLUMNS.join(", ");
    for chunk in minutes.chunks(BATCH_ROWS / 25) {
        let mut query = QueryBuilder::<DB>::new(format!("WITH rollup (webhook_id, minute, {columns}) AS ("));
        query.push_values(chunk, |mut row, rollup| {
            let classes = &rollup.classes;
            row.push_bind(rollup.webhook_id).push_bind(rollup.minute);
            let counts = [
                rollup.attempts,
                rollup.succeeded,
                classes.status_2xx,
                classes.status_3xx,
                classes.status_4xx,
                classes.status_5xx,
                classes.network_error,
                classes.timeout,
            ];
            for value in counts.into_iter().chain(rollup.latency) {
                row.push_bind(stored(value));
            }
        });
        let sums: Vec<String> =
            COUNT_COLUMNS.iter().map(|c| format!("{c} = webhook_stats.{c} + excluded.{c}")).collect();
        query.push(format!(
            ") INSERT INTO webhook_stats (webhook_id, minute, {columns}) SELECT webhook_id, minute, {columns} \
             FROM rollup WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = rollup.webhook_id) \
             ON CONFLICT (webhook_id, minute) DO UPDATE SET {}",
            sums.join(", ")
        ));
        query.build().execute(&mut *conn).await.store()?;
    }
    for chunk in health.chunks(BATCH_ROWS / 5) {
        let mut query = QueryBuilder::<DB>::new(
            "WITH change (webhook_id, last_success_at, last_failure_at, last_status_code, failures) AS (",
        );
        query.push_values(chunk, |mut row, change| {
            row.push_bind(change.webhook_id)
                .push_bind(change.last_success_at)
                .push_bind(change.last_failure_at)
                .push_bind(change.last_status_code)
                .push_bind(stored(change.trailing_failures));
        });
        // A batch with a success restarts the run of failures; one without lengthens it.
        query.push(
            ") INSERT INTO webhook_health (webhook_id, last_success_at, last_failure_at, last_status_code, \
             consecutive_failures) SELECT webhook_id, last_success_at, last_failure_at, last_status_code, failures \
             FROM change WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.id = change.webhook_id) \
             ON CONFLICT (webhook_id) DO UPDATE SET \
             last_success_at = COALESCE(excluded.last_success_at, webhook_health.last_success_at), \
             last_failure_at = COALESCE(excluded.last_failure_at, webhook_health.last_failure_at), \
             last_status_code = excluded.last_status_code, \
             consecutive_failures = CASE WHEN excluded.last_success_at IS NULL \
               THEN webhook_health.consecutive_failures + excluded.consecutive_failures \
               ELSE excluded.consecutive_failures END",
        );
        query.build().execute(&mut *conn).await.store()?;
    }
    Ok(())
}

#[async_trait]
impl StatsStore for SqlStore<DB> {
    async fn webhook_stats(
        &self,
        organization_id: Uuid,
        webhook_id: Uuid,
        window: StatsWindow,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebhookStats>> {
        let webhook: Option<(bool, Option<String>)> = sqlx::query_as::<DB, (bool, Option<String>)>(
            "SELECT is_active, disabled_reason FROM webhooks WHERE id = $1 AND organization_id = $2",
        )
        .bind(webhook_id)
        .bind(organization_id)
        .fetch_optional(&self.read)
        .await
        .store()?;
        let Some((active, disabled_reason)) = webhook else { return Ok(None) };
        let sums: Vec<String> =
            COUNT_COLUMNS.iter().map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)")).collect();
        // Made of the constant column names only.
        let row = sqlx::query::<DB>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM webhook_stats WHERE webhook_id = $1 AND minute > $2",
            sums.join(", ")
        )))
        .bind(webhook_id)
        .bind(minute_of(now) - window.minutes())
        .fetch_one(&self.read)
        .await
        .store()?;
        let value = |index: usize| row.try_get::<i64, _>(index).map(count);
        let mut window_sums =
            WindowSums { attempts: value(0).store()?, succeeded: value(1).store()?, ..WindowSums::default() };
        let classes = &mut window_sums.classes;
        classes.status_2xx = value(2).store()?;
        classes.status_3xx = value(3).store()?;
        classes.status_4xx = value(4).store()?;
        classes.status_5xx = value(5).store()?;
        classes.network_error = value(6).store()?;
        classes.timeout = value(7).store()?;
        for bucket in 0..LATENCY_BOUNDS_MS.len() {
            window_sums.latency[bucket] = value(8 + bucket).store()?;
        }
        let health: Option<(Option<DateTime<Utc>>, Option<DateTime<Utc>>, Option<i64>, i64)> =
            sqlx::query_as(
                "SELECT last_success_at, last_failure_at, last_status_code, consecutive_failures \
             FROM webhook_health WHERE webhook_id = $1",
            )
            .bind(webhook_id)
            .fetch_optional(&self.read)
            .await
            .store()?;
        let (last_success_at, last_failure_at, last_status_code, consecutive_failures) =
            health.unwrap_or_default();
        let consecutive_failures = count(consecutive_failures);
        #[allow(clippy::cast_precision_loss, reason = "a ratio; counts far below 2^52")]
        let success_ratio =
            (window_sums.attempts > 0).then(|| window_sums.succeeded as f64 / window_sums.attempts as f64);
        let latency = percentile(&window_sums.latency, 0.5).map(|p50_ms| LatencyPercentiles {
            p50_ms,
            p95_ms: percentile(&window_sums.latency, 0.95).unwrap_or(p50_ms),
            p99_ms: percentile(&window_sums.latency, 0.99).unwrap_or(p50_ms),
        });
        Ok(Some(WebhookStats {
            webhook_id,
            window: window.as_str(),
            attempts: window_sums.attempts,
            succeeded: window_sums.succeeded,
            success_ratio,
            status_classes: window_sums.classes,
            latency,
            last_success_at,
            last_failure_at,
            last_status_code,
            consecutive_failures,
            state: state_of(active, consecutive_failures, success_ratio),
            disabled_reason: if active { None } else { disabled_reason },
        }))
    }

    async fn organization_series(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<MinutePoint>> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT s.minute, CAST(SUM(s.attempts) AS BIGINT), CAST(SUM(s.succeeded) AS BIGINT) \
             FROM webhook_stats s JOIN webhooks w ON w.id = s.webhook_id \
             WHERE w.organization_id = $1 AND s.minute >= $2 GROUP BY s.minute ORDER BY s.minute",
        )
        .bind(organization_id)
        .bind(minute_of(since))
        .fetch_all(&self.read)
        .await
        .store()?;
        Ok(rows
            .into_iter()
            .filter_map(|(minute, attempts, succeeded)| {
                let minute = Utc.timestamp_opt(minute.checked_mul(60)?, 0).single()?;
                Some(MinutePoint { minute, attempts: count(attempts), succeeded: count(succeeded) })
            })
            .collect())
    }
}

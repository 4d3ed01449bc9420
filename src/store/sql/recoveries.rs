//! [`RecoveryStore`] on SQL: recoveries, the events of their window, and the one write that creates
//! missing deliveries and makes failed ones due again (recover since, re-fan-out of one event).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    EventHeader, NewDelivery, Readied, Recovery, RecoveryProgress, RecoveryStep, RecoveryStore, StoreResult,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore},
};

macro_rules! recovery_columns {
    () => {
        "id, organization_id, webhook_id, since, until, cursor_id, steps, scanned, created_at"
    };
}

/// Deliveries per readying statement: two binds each, plus the time.
const READY_ROWS: usize = BATCH_ROWS / 2;

#[async_trait]
impl RecoveryStore for SqlStore<DB> {
    async fn create_recovery(&self, recovery: &Recovery) -> StoreResult<()> {
        sqlx::query::<DB>(
            "INSERT INTO recoveries (id, organization_id, webhook_id, since, until, cursor_id, steps, scanned, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(recovery.id)
        .bind(recovery.organization_id)
        .bind(recovery.webhook_id)
        .bind(recovery.since)
        .bind(recovery.until)
        .bind(recovery.cursor_id)
        .bind(recovery.steps)
        .bind(recovery.scanned)
        .bind(recovery.created_at)
        .execute(&self.write)
        .await
        .store()?;
        Ok(())
    }

    async fn get_recovery(&self, id: Uuid) -> StoreResult<Option<RecoveryProgress>> {
        let recovery = sqlx::query_as::<DB, Recovery>(concat!(
            "SELECT ",
            recovery_columns!(),
            " FROM recoveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .store()?;
        self.progress_of(recovery).await
    }

    async fn latest_recovery(&self, webhook_id: Uuid) -> StoreResult<Option<RecoveryProgress>> {
        let recovery = sqlx::query_as::<DB, Recovery>(concat!(
            "SELECT ",
            recovery_columns!(),
            " FROM recoveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(webhook_id)
        .fetch_optional(&self.read)
        .await
        .store()?;
        self.progress_of(recovery).await
    }

    async fn open_recoveries(&self) -> StoreResult<Vec<Recovery>> {
        sqlx::query_as::<DB, Recovery>(concat!(
            "SELECT ",
            recovery_columns!(),
            " FROM recoveries WHERE NOT scanned ORDER BY created_at, id"
        ))
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn events_in_window(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<EventHeader>> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT id, event_type, webhook_id AS only_webhook FROM events WHERE organization_id = ",
        );
        query.push_bind(organization_id);
        query.push(" AND created_at >= ").push_bind(since);
        query.push(" AND created_at <= ").push_bind(until);
        if let Some(after) = after {
            query.push(" AND id > ").push_bind(after);
        }
        query.push(" ORDER BY id LIMIT ").push_bind(limit);
        query.build_query_as::<EventHeader>().fetch_all(&self.read).await.store()
    }

    async fn ready_deliveries(
        &self,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
        step: Option<&RecoveryStep>,
    ) -> StoreResult<Readied> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        if let Some(step) = step {
            let moved = sqlx::query::<DB>(
                "UPDATE recoveries SET steps = steps + 1, cursor_id = $1, scanned = $2 WHERE id = $3 AND steps = $4",
            )
            .bind(step.cursor_id)
            .bind(step.scanned)
            .bind(step.recovery_id)
            .bind(step.from_steps)
            .execute(&mut *tx)
            .await
            .store()?;
            if DB::rows_affected(&moved) == 0 {
                return Ok(Readied::default());
            }
        }
        // Created `queued` with a lease that ends now: the scheduler's next round claims them.
        let created = if deliveries.is_empty() {
            Vec::new()
        } else {
            DB::insert_deliveries(&mut *tx, deliveries).await?
        };
        let existing: Vec<&NewDelivery> = deliveries.iter().filter(|d| !created.contains(&d.id)).collect();
        let mut readied = Vec::new();
        for chunk in existing.chunks(READY_ROWS) {
            let mut query =
                QueryBuilder::<DB>::new("UPDATE deliveries SET status = 'pending', next_attempt_at = ");
            query.push_bind(now).push(", completed_at = NULL, updated_at = ").push_bind(now);
            query.push(" WHERE (status = 'dead' OR (status = 'pending' AND attempts > 0)) AND (");
            let mut pairs = query.separated(" OR ");
            for delivery in chunk {
                pairs.push("(event_id = ");
                pairs.push_bind_unseparated(delivery.event_id);
                pairs.push_unseparated(" AND webhook_id = ");
                pairs.push_bind_unseparated(delivery.webhook_id);
                pairs.push_unseparated(")");
            }
            query.push(") RETURNING id");
            let ids: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *tx).await.store()?;
            readied.extend(ids.into_iter().map(|(id,)| id));
        }
        if let Some(step) = step {
            let taken: Vec<Uuid> = created.iter().chain(&readied).copied().collect();
            for chunk in taken.chunks(READY_ROWS) {
                let mut query =
                    QueryBuilder::<DB>::new("INSERT INTO recovery_deliveries (recovery_id, delivery_id) ");
                query.push_values(chunk, |mut row, id| {
                    row.push_bind(step.recovery_id).push_bind(*id);
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await.store()?;
            }
        }
        tx.commit().await.store()?;
        Ok(Readied { created: created.len() as u64, readied: readied.len() as u64, stepped: true })
    }
}

impl SqlStore<DB> {
    /// The recovery, if there is one, with the counts of its deliveries by status.
    async fn progress_of(&self, recovery: Option<Recovery>) -> StoreResult<Option<RecoveryProgress>> {
        let Some(recovery) = recovery else { return Ok(None) };
        let (total, done, failed): (i64, i64, i64) = sqlx::query_as::<DB, (i64, i64, i64)>(
            "SELECT COUNT(*), COUNT(CASE WHEN d.status = 'succeeded' THEN 1 END), \
             COUNT(CASE WHEN d.status = 'dead' THEN 1 END) \
             FROM recovery_deliveries r JOIN deliveries d ON d.id = r.delivery_id WHERE r.recovery_id = $1",
        )
        .bind(recovery.id)
        .fetch_one(&self.read)
        .await
        .store()?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(Some(RecoveryProgress { recovery, total: count(total), done: count(done), failed: count(failed) }))
    }
}

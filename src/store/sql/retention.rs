//! [`RetentionStore`] on SQL: one bounded batch per call, oldest first along the retention indexes
//! (migrations postgres 0007 / sqlite 0006). On PostgreSQL the rows a batch picks are locked
//! (`FOR UPDATE SKIP LOCKED`, [`Backend::LOCK_PICKED`]), so what they are checked against (a delivery's
//! status, an event having no delivery) cannot change before they go: a redrive of a delivery waits for
//! the batch, a delivery created for an event waits for it too and then finds the event gone (its
//! insert fails, as for any event that does not exist). On SQLite the one writer serializes the same.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    RetentionKind, RetentionLock, RetentionStore, StoreResult,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore, push_id_list},
};

/// Finished deliveries, as a condition on `deliveries` aliased `d`.
const FINISHED: &str = "d.status IN ('succeeded', 'dead')";

#[async_trait]
impl RetentionStore for SqlStore<DB> {
    async fn try_retention_lock(&self) -> StoreResult<Option<RetentionLock>> {
        let Some(sql) = DB::RETENTION_LOCK_SQL else { return Ok(Some(RetentionLock::none())) };
        let mut conn = self.write.acquire().await.store()?;
        let taken: bool = sqlx::query_scalar::<DB, bool>(sql).fetch_one(&mut *conn).await.store()?;
        // Detached: the lock lives as long as this connection, which is closed (not pooled) on drop.
        Ok(taken.then(|| RetentionLock::holding(conn.detach())))
    }

    async fn remove_expired(
        &self,
        kind: RetentionKind,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let limit = i64::from(limit);
        let sql = match kind {
            RetentionKind::ResponseBodies => format!(
                "UPDATE delivery_attempts SET response_body = NULL WHERE id IN (SELECT id FROM delivery_attempts \
                 WHERE response_body IS NOT NULL AND started_at < $1 ORDER BY started_at LIMIT $2{})",
                DB::LOCK_PICKED
            ),
            // Locking the deliveries too: a redrive (which makes one unfinished) waits for the batch.
            RetentionKind::Attempts => format!(
                "DELETE FROM delivery_attempts WHERE id IN (SELECT a.id FROM delivery_attempts a \
                 JOIN deliveries d ON d.id = a.delivery_id WHERE a.started_at < $1 AND {FINISHED} \
                 ORDER BY a.started_at LIMIT $2{})",
                DB::LOCK_PICKED
            ),
            // Their attempts and recovery_deliveries rows go with them (ON DELETE CASCADE).
            RetentionKind::Deliveries => format!(
                "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE {FINISHED} \
                 AND d.completed_at < $1 ORDER BY d.completed_at LIMIT $2{})",
                DB::LOCK_PICKED
            ),
            RetentionKind::Events => return self.remove_expired_events(before, limit).await,
        };
        let result = sqlx::query::<DB>(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .bind(limit)
            .execute(&self.write)
            .await
            .store()?;
        Ok(DB::rows_affected(&result))
    }

    async fn count_expired(&self, kind: RetentionKind, before: DateTime<Utc>) -> StoreResult<u64> {
        let sql = match kind {
            RetentionKind::ResponseBodies => {
                "SELECT COUNT(*) FROM delivery_attempts WHERE response_body IS NOT NULL AND started_at < $1"
            }
            RetentionKind::Attempts => {
                "SELECT COUNT(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
                 WHERE a.started_at < $1 AND d.status IN ('succeeded', 'dead')"
            }
            RetentionKind::Deliveries => {
                "SELECT COUNT(*) FROM deliveries d WHERE d.status IN ('succeeded', 'dead') AND d.completed_at < $1"
            }
            // Those whose deliveries all go in the same pass, too.
            RetentionKind::Events => {
                "SELECT COUNT(*) FROM events e WHERE e.created_at < $1 AND e.published_at IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id \
                   AND NOT (d.status IN ('succeeded', 'dead') AND d.completed_at < $1))"
            }
        };
        let count: i64 =
            sqlx::query_scalar::<DB, i64>(sql).bind(before).fetch_one(&self.read).await.store()?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    async fn reclaim_space(&self, pages: u32) -> StoreResult<u64> {
        let Some(sql) = DB::RECLAIM_PAGES_SQL else { return Ok(0) };
        let sql = sql.replace("{pages}", &pages.to_string());
        sqlx::query::<DB>(sqlx::AssertSqlSafe(sql)).execute(&self.write).await.store()?;
        let free: i64 =
            sqlx::query_scalar::<DB, i64>("PRAGMA freelist_count").fetch_one(&self.write).await.store()?;
        Ok(u64::try_from(free).unwrap_or_default())
    }
}

impl SqlStore<DB> {
    /// Published events created before `before` with no delivery left, up to `limit`, in one
    /// transaction: picked (and on PostgreSQL locked, so no delivery can be created for them meanwhile),
    /// then deleted if they still have no delivery (a delivery committed between the statement's
    /// snapshot and the lock is seen by the second statement's).
    async fn remove_expired_events(&self, before: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let picked: Vec<Uuid> = sqlx::query_scalar::<DB, Uuid>(sqlx::AssertSqlSafe(format!(
            "SELECT e.id FROM events e WHERE e.created_at < $1 AND e.published_at IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) \
             ORDER BY e.created_at LIMIT $2{}",
            DB::LOCK_PICKED
        )))
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .store()?;
        let mut removed = 0;
        for chunk in picked.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM events WHERE id IN ");
            push_id_list(&mut query, chunk);
            query.push(" AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)");
            removed += DB::rows_affected(&query.build().execute(&mut *tx).await.store()?);
        }
        tx.commit().await.store()?;
        Ok(removed)
    }
}

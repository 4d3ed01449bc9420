//! [`RetentionStore`] on SQL: one bounded batch per call, in one transaction. A batch picks up to
//! `limit` rows along a retention index (migrations postgres 0007 / sqlite 0006), oldest first after
//! where the last batch stopped, then removes those that may go by primary key. The pick and the removal
//! are two statements so each uses its index whatever the planner thinks of the tables' sizes (a
//! `DELETE ... WHERE id IN (SELECT ...)` was planned as a scan of the whole table on PostgreSQL).
//!
//! On PostgreSQL the rows a batch picks are locked (`FOR UPDATE SKIP LOCKED`, [`Backend::LOCK_PICKED`]),
//! so what they were checked against (a delivery's status) cannot change before they go: a redrive of a
//! delivery waits for the batch. Events are picked and locked first and deleted only if they still have
//! no delivery, seen by the delete's own snapshot: a delivery created for one meanwhile either committed
//! before (the event stays) or waits on the lock and then fails on its foreign key. On SQLite the one
//! writer serializes the same.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    Resume, RetentionKind, RetentionLock, RetentionStore, StoreResult, Swept,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore, push_id_list},
};

/// How each kind is picked and removed.
struct Plan {
    /// `SELECT {id}, {time} FROM ... WHERE {time} < $before AND ...`, without order or limit.
    pick: &'static str,
    /// The picked rows' time and id columns, for the order and the resume point.
    time: &'static str,
    id: &'static str,
    /// The statement applied to the picked ids, followed by `IN (ids)` and `guard`.
    act: &'static str,
    /// A condition re-checked at removal ("" for none).
    guard: &'static str,
}

fn plan(kind: RetentionKind) -> Plan {
    match kind {
        RetentionKind::ResponseBodies => Plan {
            pick: "SELECT id, started_at FROM delivery_attempts WHERE response_body IS NOT NULL AND started_at < ",
            time: "started_at",
            id: "id",
            act: "UPDATE delivery_attempts SET response_body = NULL WHERE id IN ",
            guard: "",
        },
        // Locking the deliveries too: a redrive (which makes one unfinished) waits for the batch.
        RetentionKind::Attempts => Plan {
            pick: "SELECT a.id, a.started_at FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
                   WHERE d.status IN ('succeeded', 'dead') AND a.started_at < ",
            time: "a.started_at",
            id: "a.id",
            act: "DELETE FROM delivery_attempts WHERE id IN ",
            guard: "",
        },
        // Their attempts and recovery_deliveries rows go with them (ON DELETE CASCADE).
        RetentionKind::Deliveries => Plan {
            pick: "SELECT id, completed_at FROM deliveries WHERE status IN ('succeeded', 'dead') AND completed_at < ",
            time: "completed_at",
            id: "id",
            act: "DELETE FROM deliveries WHERE id IN ",
            guard: "",
        },
        RetentionKind::Events => Plan {
            pick: "SELECT id, created_at FROM events WHERE published_at IS NOT NULL AND created_at < ",
            time: "created_at",
            id: "id",
            act: "DELETE FROM events WHERE id IN ",
            guard: " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        },
    }
}

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
        resume: Option<Resume>,
        limit: u32,
    ) -> StoreResult<Swept> {
        let plan = plan(kind);
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let mut pick = QueryBuilder::<DB>::new(plan.pick);
        pick.push_bind(before);
        if let Some(resume) = resume {
            // `time >= t` for the index, then past the last id of that time.
            pick.push(format_args!(" AND {} >= ", plan.time)).push_bind(resume.at);
            pick.push(format_args!(" AND ({} > ", plan.time)).push_bind(resume.at);
            pick.push(format_args!(" OR {} > ", plan.id)).push_bind(resume.id).push(")");
        }
        pick.push(format_args!(" ORDER BY {}, {} LIMIT ", plan.time, plan.id)).push_bind(i64::from(limit));
        pick.push(DB::LOCK_PICKED);
        let picked: Vec<(Uuid, DateTime<Utc>)> = pick.build_query_as().fetch_all(&mut *tx).await.store()?;
        let mut removed = 0;
        for chunk in picked.chunks(BATCH_ROWS) {
            let ids: Vec<Uuid> = chunk.iter().map(|(id, _)| *id).collect();
            let mut act = QueryBuilder::<DB>::new(plan.act);
            push_id_list(&mut act, &ids);
            act.push(plan.guard);
            removed += DB::rows_affected(&act.build().execute(&mut *tx).await.store()?);
        }
        tx.commit().await.store()?;
        let resume = match picked.last() {
            Some(&(id, at)) if picked.len() >= limit as usize => Some(Resume { at, id }),
            _ => None,
        };
        Ok(Swept { removed, resume })
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
                "SELECT COUNT(*) FROM deliveries WHERE status IN ('succeeded', 'dead') AND completed_at < $1"
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

//! [`ConsoleStore`] on SQL: console sessions and the bounded aggregate reads of the console's overview.
//! Windows are read by id (`id >= first_id_at(since)`), through the index on `(organization_id, id)`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::DB;
use crate::store::{
    ConsoleSession, ConsoleStore, DeliveryStatus, StatusCount, StoreError, StoreResult, first_id_at,
    sql::{Backend, ResultExt, SqlStore},
};

fn status(text: String) -> StoreResult<DeliveryStatus> {
    DeliveryStatus::try_from(text).map_err(|error| StoreError::Other(anyhow::anyhow!("{error}")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

#[async_trait]
impl ConsoleStore for SqlStore<DB> {
    async fn create_console_session(&self, session: &ConsoleSession) -> StoreResult<()> {
        sqlx::query::<DB>("DELETE FROM console_sessions WHERE expires_at < $1")
            .bind(session.created_at)
            .execute(&self.write)
            .await
            .store()?;
        sqlx::query::<DB>(
            "INSERT INTO console_sessions (token_hash, organization_id, user_id, api_key_hash, csrf_token, \
             created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(session.token_hash.as_slice())
        .bind(session.organization_id)
        .bind(session.user_id)
        .bind(session.api_key_hash.as_deref())
        .bind(session.csrf_token.as_str())
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .execute(&self.write)
        .await
        .store()?;
        Ok(())
    }

    async fn find_console_session(&self, token_hash: &[u8]) -> StoreResult<Option<ConsoleSession>> {
        sqlx::query_as::<DB, ConsoleSession>(
            "SELECT token_hash, organization_id, user_id, api_key_hash, csrf_token, created_at, last_seen_at, \
             expires_at FROM console_sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn touch_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query::<DB>("UPDATE console_sessions SET last_seen_at = $2 WHERE token_hash = $1")
            .bind(token_hash)
            .bind(at)
            .execute(&self.write)
            .await
            .store()?;
        Ok(())
    }

    async fn delete_console_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query::<DB>("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.write)
            .await
            .store()?;
        Ok(())
    }

    async fn delivery_counts(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> StoreResult<Vec<StatusCount>> {
        let sql = format!(
            "SELECT ({} / $3) * $3 AS bucket, status, COUNT(*) FROM deliveries \
             WHERE organization_id = $1 AND id >= $2 GROUP BY 1, 2",
            DB::EPOCH_OF_CREATED_AT
        );
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as::<DB, (i64, String, i64)>(sqlx::AssertSqlSafe(sql))
                .bind(organization_id)
                .bind(first_id_at(since))
                .bind(bucket_seconds.max(1))
                .fetch_all(&self.read)
                .await
                .store()?;
        rows.into_iter()
            .map(|(bucket, text, n)| Ok(StatusCount { bucket, status: status(text)?, count: count(n) }))
            .collect()
    }

    async fn attempt_durations(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as::<DB, (i64,)>(
            "SELECT a.duration_ms FROM deliveries d JOIN delivery_attempts a ON a.delivery_id = d.id \
             WHERE d.organization_id = $1 AND d.id >= $2 ORDER BY d.id DESC LIMIT $3",
        )
        .bind(organization_id)
        .bind(first_id_at(since))
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .store()?;
        Ok(rows.into_iter().map(|(ms,)| ms).collect())
    }

    async fn dead_delivery_count(&self, organization_id: Uuid) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as::<DB, (i64,)>(
            "SELECT COUNT(*) FROM deliveries WHERE organization_id = $1 AND status = 'dead'",
        )
        .bind(organization_id)
        .fetch_one(&self.read)
        .await
        .store()?;
        Ok(count(n))
    }
}

//! [`EventStore`] on SQL: events (the outbox) with group commit and idempotency keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::DB;
use crate::store::{
    Event, EventQuery, EventStore, IngestOutcome, NewEvent, RelayClaim, StoreError, StoreResult,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore, push_id_list},
};

macro_rules! event_columns {
    () => {
        "id, organization_id, event_type, payload, idempotency_key, created_at, published_at, \
         webhook_id AS only_webhook"
    };
}

#[async_trait]
impl EventStore for SqlStore<DB> {
    async fn insert_events(
        &self,
        events: &[NewEvent],
        idempotency_since: DateTime<Utc>,
    ) -> StoreResult<Vec<IngestOutcome>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // The common case, every event new, is one statement in autocommit.
        let mut inserted = {
            let mut conn = self.write.acquire().await.store()?;
            DB::insert_events(&mut conn, events).await?
        };
        if inserted.len() == events.len() {
            return Ok(events.iter().map(written).collect());
        }
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        // Events that were not inserted collided on their idempotency key: find the first event.
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            if inserted.contains(&event.id) {
                outcomes.push(written(event));
                continue;
            }
            let Some(key) = event.idempotency_key.as_deref() else {
                return Err(StoreError::Conflict(format!("event id {} exists", event.id)));
            };
            let (id, event_type, created_at, hash) =
                sqlx::query_as::<DB, (Uuid, String, DateTime<Utc>, Option<String>)>(
                    "SELECT id, event_type, created_at, idempotency_hash FROM events \
                     WHERE organization_id = $1 AND idempotency_key = $2",
                )
                .bind(event.organization_id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await
                .store()?;
            if created_at >= idempotency_since {
                // A key first used before its request was hashed (NULL) can only be taken as a repeat.
                let key_reused = hash.is_some() && event.request_hash.is_some() && hash != event.request_hash;
                outcomes.push(IngestOutcome { id, event_type, created_at, duplicate: true, key_reused });
                continue;
            }
            // The first use is older than the window (the janitor has not cleared it yet): forget it.
            sqlx::query::<DB>(
                "UPDATE events SET idempotency_key = NULL, idempotency_hash = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .store()?;
            inserted.extend(DB::insert_events(&mut tx, std::slice::from_ref(event)).await?);
            outcomes.push(written(event));
        }
        tx.commit().await.store()?;
        Ok(outcomes)
    }

    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>> {
        sqlx::query_as::<DB, Event>(concat!("SELECT ", event_columns!(), " FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_events(&self, query: &EventQuery) -> StoreResult<Vec<Event>> {
        sqlx::query_as::<DB, Event>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE organization_id = $1 AND ($2 IS NULL OR event_type = $2) \
              AND ($3 IS NULL OR created_at >= $3) AND ($4 IS NULL OR created_at <= $4) \
              AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6"
        ))
        .bind(query.organization_id)
        .bind(query.event_type.as_deref())
        .bind(query.from)
        .bind(query.to)
        .bind(query.before)
        .bind(query.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn claim_unpublished_events(&self, claim: &RelayClaim) -> StoreResult<Vec<Event>> {
        // The pick is locked (PostgreSQL: skipping rows another relay is claiming) so that two relays
        // claiming at once claim different events.
        let sql = format!(
            "UPDATE events SET relay_claimed_by = $1, relay_claimed_until = $2 WHERE id IN (\
             SELECT id FROM events WHERE published_at IS NULL AND created_at <= $3 \
             AND (relay_claimed_until IS NULL OR relay_claimed_until <= $4) \
             ORDER BY created_at LIMIT $5{}) RETURNING {}",
            DB::LOCK_PICKED,
            event_columns!()
        );
        // Safe: only the backend's constant and the column list are formatted in.
        let mut events = sqlx::query_as::<DB, Event>(sqlx::AssertSqlSafe(sql))
            .bind(claim.by)
            .bind(claim.until)
            .bind(claim.created_before)
            .bind(claim.now)
            .bind(claim.limit)
            .fetch_all(&self.write)
            .await
            .store()?;
        events.sort_by_key(|event| (event.created_at, event.id));
        Ok(events)
    }

    async fn release_relay_claims(&self, by: Uuid, ids: &[Uuid]) -> StoreResult<()> {
        for chunk in ids.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new(
                "UPDATE events SET relay_claimed_until = NULL WHERE relay_claimed_by = ",
            );
            query.push_bind(by).push(" AND id IN ");
            push_id_list(&mut query, chunk);
            query.build().execute(&self.write).await.store()?;
        }
        Ok(())
    }

    async fn mark_events_published(&self, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.write.acquire().await.store()?;
        DB::mark_published(&mut conn, ids, at).await
    }

    async fn outbox_backlog(&self) -> StoreResult<(u64, Option<DateTime<Utc>>)> {
        let (count,) = sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM events WHERE published_at IS NULL")
            .fetch_one(&self.read)
            .await
            .store()?;
        if count == 0 {
            return Ok((0, None));
        }
        let oldest = sqlx::query_scalar::<DB, DateTime<Utc>>(
            "SELECT created_at FROM events WHERE published_at IS NULL ORDER BY created_at LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await
        .store()?;
        Ok((u64::try_from(count).unwrap_or_default(), oldest))
    }

    async fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>(
            "UPDATE events SET idempotency_key = NULL, idempotency_hash = NULL \
             WHERE idempotency_key IS NOT NULL AND created_at < $1",
        )
        .bind(before)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result))
    }
}

/// The outcome of an event that was written.
fn written(event: &NewEvent) -> IngestOutcome {
    IngestOutcome {
        id: event.id,
        event_type: event.event_type.clone(),
        created_at: event.created_at,
        duplicate: false,
        key_reused: false,
    }
}

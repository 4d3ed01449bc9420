//! The [`Store`] implementation, written once for SQLite and PostgreSQL. Both accept `$N` placeholders,
//! `RETURNING`, `ON CONFLICT DO NOTHING` and partial indexes, so the SQL is shared; the few real
//! differences (row locking, how a write transaction begins) come from [`Backend`]. Times are always
//! bound from Rust, never taken from the database clock.
//!
//! SQLite allows one writer at a time, so [`SqlStore`] keeps a separate single-connection pool for
//! writes there (`write`); on PostgreSQL both fields hold the same pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type};
use uuid::Uuid;

use super::*;

/// What differs between the two databases.
pub trait Backend: Database {
    /// Claims due deliveries: `$1` now, `$2` lease end, `$3` limit; returns delivery columns.
    const CLAIM_DUE_SQL: &'static str;
    /// Starts a transaction that will write (SQLite takes the write lock up front to avoid deadlocks).
    const BEGIN_WRITE: &'static str;
    /// Serializes concurrent bootstraps, where the database needs it.
    const BOOTSTRAP_LOCK_SQL: Option<&'static str>;
    /// See [`Store::write_parallelism`].
    const WRITE_PARALLELISM: usize;
    /// Whether [`Backend::apply_outcomes`] is one statement (atomic in autocommit); otherwise callers
    /// run it inside a transaction.
    const OUTCOMES_IN_ONE_STATEMENT: bool;

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    // The batched writes of the hot path, written per database: PostgreSQL binds arrays to one
    // statement whose text never changes (prepared once), SQLite binds rows to VALUES lists. Each runs
    // on the connection it is given: in autocommit, or inside the caller's transaction.

    /// Inserts events, skipping those whose idempotency key (or id) exists; returns the ids inserted.
    fn insert_events<'c>(
        conn: &'c mut Self::Connection,
        events: &'c [NewEvent],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>>;
    /// Inserts `queued` deliveries, skipping existing (event, webhook) pairs; returns the ids inserted.
    fn insert_deliveries<'c>(
        conn: &'c mut Self::Connection,
        deliveries: &'c [NewDelivery],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>>;
    /// Logs attempts (of deliveries that still exist), moves their deliveries on (unless the outcome is
    /// stale), and resets the dead-delivery run of webhooks with a success; returns the deliveries moved.
    /// Opens no transaction of its own (see [`Backend::OUTCOMES_IN_ONE_STATEMENT`]).
    fn apply_outcomes<'c>(
        conn: &'c mut Self::Connection,
        outcomes: &'c [AttemptOutcome],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>>;
    fn mark_published<'c>(
        conn: &'c mut Self::Connection,
        ids: &'c [Uuid],
        at: DateTime<Utc>,
    ) -> BoxFuture<'c, StoreResult<()>>;
}

/// The delivery columns an outcome sets: status, next_attempt_at, completed_at.
pub(super) fn outcome_state(
    outcome: &AttemptOutcome,
) -> (&'static str, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let started = outcome.attempt.started_at;
    match &outcome.next {
        NextStep::Succeeded => ("succeeded", None, Some(started)),
        NextStep::Retry(at) => ("pending", Some(*at), None),
        NextStep::Dead { .. } => ("dead", None, Some(started)),
    }
}

/// The store over one database.
#[derive(Debug, Clone)]
pub struct SqlStore<DB: Database> {
    pub(super) read: Pool<DB>,
    pub(super) write: Pool<DB>,
}

macro_rules! key_columns {
    () => {
        "id, organization_id, user_id, prefix, name, purpose, is_active, expires_at, last_used_at, \
         total_requests, created_at, revoked_at"
    };
}
macro_rules! user_columns {
    () => {
        "id, organization_id, email, name, role, is_active, created_at"
    };
}
macro_rules! webhook_columns {
    () => {
        "id, organization_id, url, events, secret_key_id, secret_ciphertext, previous_secret_key_id, \
         previous_secret_ciphertext, previous_secret_expires_at, is_active, description, disabled_reason, \
         consecutive_dead, created_at, updated_at"
    };
}
macro_rules! event_columns {
    () => {
        "id, organization_id, event_type, payload, idempotency_key, created_at, published_at"
    };
}
macro_rules! delivery_columns {
    () => {
        "id, event_id, webhook_id, organization_id, status, attempts, next_attempt_at, last_status_code, \
         last_error, created_at, updated_at, completed_at"
    };
}
pub(super) use delivery_columns;

/// Rows per statement in batched writes, well under both databases' bind-parameter limits.
pub(super) const BATCH_ROWS: usize = 500;

pub(super) fn db_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.constraint().map_or_else(|| db.message().to_string(), str::to_string))
        }
        other => StoreError::Other(other.into()),
    }
}

pub(super) trait ResultExt<T> {
    fn store(self) -> StoreResult<T>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn store(self) -> StoreResult<T> {
        self.map_err(db_error)
    }
}

/// Appends `(a, b, c)` of bound ids to a query.
pub(super) fn push_id_list<DB>(query: &mut QueryBuilder<DB>, ids: &[Uuid])
where
    DB: Database,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn write_parallelism(&self) -> usize {
        DB::WRITE_PARALLELISM
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query::<DB>("SELECT 1").execute(&self.read).await.store()?;
        Ok(())
    }

    async fn bootstrap(&self, bootstrap: &Bootstrap, only_if_empty: bool) -> StoreResult<bool> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        if let Some(lock) = DB::BOOTSTRAP_LOCK_SQL {
            sqlx::query::<DB>(lock).execute(&mut *tx).await.store()?;
        }
        if only_if_empty {
            let (count,): (i64,) = sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM organizations")
                .fetch_one(&mut *tx)
                .await
                .store()?;
            if count > 0 {
                return Ok(false);
            }
        }
        let org = &bootstrap.organization;
        sqlx::query::<DB>(
            "INSERT INTO organizations (id, name, is_active, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id)
        .bind(org.name.as_str())
        .bind(org.is_active)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .store()?;
        Self::insert_user(&mut tx, &bootstrap.admin).await?;
        Self::insert_api_key(&mut tx, &bootstrap.key).await?;
        tx.commit().await.store()?;
        Ok(true)
    }

    async fn get_organization(&self, id: Uuid) -> StoreResult<Option<Organization>> {
        sqlx::query_as::<DB, Organization>(
            "SELECT id, name, is_active, created_at FROM organizations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn set_organization_active(&self, id: Uuid, active: bool) -> StoreResult<()> {
        let result = sqlx::query::<DB>("UPDATE organizations SET is_active = $2 WHERE id = $1")
            .bind(id)
            .bind(active)
            .execute(&self.write)
            .await
            .store()?;
        if DB::rows_affected(&result) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_user(&self, user: &NewUser, announcement: &NewEvent) -> StoreResult<User> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let created = Self::insert_user(&mut tx, user).await?;
        DB::insert_events(&mut tx, std::slice::from_ref(announcement)).await?;
        tx.commit().await.store()?;
        Ok(created)
    }

    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query_as::<DB, User>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_users(&self, organization_id: Uuid) -> StoreResult<Vec<User>> {
        sqlx::query_as::<DB, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE organization_id = $1 ORDER BY created_at, id"
        ))
        .bind(organization_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKey> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let created = Self::insert_api_key(&mut tx, key).await?;
        tx.commit().await.store()?;
        Ok(created)
    }

    async fn find_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<KeyOwner>> {
        sqlx::query_as::<DB, KeyOwner>(
            "SELECT k.id, k.organization_id, k.user_id, k.prefix, k.name, k.purpose, k.is_active, k.expires_at, \
             k.last_used_at, k.total_requests, k.created_at, k.revoked_at, u.role AS user_role, \
             u.is_active AS user_is_active, o.is_active AS organization_is_active \
             FROM api_keys k JOIN users u ON u.id = k.user_id JOIN organizations o ON o.id = k.organization_id \
             WHERE k.key_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn get_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query_as::<DB, ApiKey>(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_api_keys(&self, query: &ApiKeyQuery) -> StoreResult<Vec<ApiKey>> {
        sqlx::query_as::<DB, ApiKey>(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL \
              AND ($2 IS NULL OR user_id = $2) \
              AND ($3 IS NULL OR last_used_at >= $3) AND ($4 IS NULL OR last_used_at <= $4) \
              ORDER BY created_at DESC, id DESC"
        ))
        .bind(query.organization_id)
        .bind(query.user_id)
        .bind(query.used_from)
        .bind(query.used_to)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        let result = sqlx::query::<DB>(
            "UPDATE api_keys SET revoked_at = $2, is_active = FALSE WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(at)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result) > 0)
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> StoreResult<()> {
        if usage.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        for entry in usage {
            sqlx::query::<DB>(
                "UPDATE api_keys SET total_requests = total_requests + $2, \
                 last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $3 THEN $3 ELSE last_used_at END \
                 WHERE id = $1",
            )
            .bind(entry.key_id)
            .bind(entry.requests)
            .bind(entry.last_used_at)
            .execute(&mut *tx)
            .await
            .store()?;
        }
        tx.commit().await.store()
    }

    async fn create_webhook(&self, webhook: &NewWebhook) -> StoreResult<Webhook> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "INSERT INTO webhooks (id, organization_id, url, events, secret_key_id, secret_ciphertext, \
             description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            webhook_columns!()
        ))
        .bind(webhook.id)
        .bind(webhook.organization_id)
        .bind(webhook.url.as_str())
        .bind(webhook.events.as_str())
        .bind(webhook.secret.key_id.as_str())
        .bind(webhook.secret.ciphertext.as_slice())
        .bind(webhook.description.as_deref())
        .bind(webhook.created_at)
        .fetch_one(&self.write)
        .await
        .store()
    }

    async fn get_webhook(&self, id: Uuid) -> StoreResult<Option<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .store()
    }

    async fn list_webhooks(&self, organization_id: Uuid) -> StoreResult<Vec<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE organization_id = $1 ORDER BY created_at, id"
        ))
        .bind(organization_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn active_webhooks(&self, organization_id: Uuid) -> StoreResult<Vec<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "SELECT ",
            webhook_columns!(),
            " FROM webhooks WHERE organization_id = $1 AND is_active = TRUE ORDER BY created_at, id"
        ))
        .bind(organization_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn update_webhook(&self, id: Uuid, changes: &WebhookChanges) -> StoreResult<Option<Webhook>> {
        let mut query = QueryBuilder::<DB>::new("UPDATE webhooks SET updated_at = ");
        query.push_bind(changes.updated_at);
        if let Some(url) = &changes.url {
            query.push(", url = ").push_bind(url.clone());
        }
        if let Some(events) = &changes.events {
            query.push(", events = ").push_bind(events.clone());
        }
        if let Some(description) = &changes.description {
            query.push(", description = ").push_bind(description.clone());
        }
        match changes.is_active {
            Some(true) => {
                query.push(", is_active = TRUE, disabled_reason = NULL, consecutive_dead = 0");
            }
            Some(false) => {
                query
                    .push(", is_active = FALSE, disabled_reason = ")
                    .push_bind(changes.disabled_reason.clone());
            }
            None => {}
        }
        query.push(" WHERE id = ").push_bind(id).push(concat!(" RETURNING ", webhook_columns!()));
        query.build_query_as::<Webhook>().fetch_optional(&self.write).await.store()
    }

    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        rotation: &SecretRotation,
    ) -> StoreResult<Option<Webhook>> {
        sqlx::query_as::<DB, Webhook>(concat!(
            "UPDATE webhooks SET secret_key_id = $2, secret_ciphertext = $3, previous_secret_key_id = $4, \
             previous_secret_ciphertext = $5, previous_secret_expires_at = $6, updated_at = $7 \
             WHERE id = $1 RETURNING ",
            webhook_columns!()
        ))
        .bind(id)
        .bind(rotation.secret.key_id.as_str())
        .bind(rotation.secret.ciphertext.as_slice())
        .bind(rotation.previous.key_id.as_str())
        .bind(rotation.previous.ciphertext.as_slice())
        .bind(rotation.previous_expires_at)
        .bind(rotation.updated_at)
        .fetch_optional(&self.write)
        .await
        .store()
    }

    async fn delete_webhook(&self, id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query::<DB>("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.write)
            .await
            .store()?;
        Ok(DB::rows_affected(&result) > 0)
    }

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
            return Ok(events
                .iter()
                .map(|event| IngestOutcome {
                    id: event.id,
                    event_type: event.event_type.clone(),
                    created_at: event.created_at,
                    duplicate: false,
                })
                .collect());
        }
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        // Events that were not inserted collided on their idempotency key: find the first event.
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            if inserted.contains(&event.id) {
                outcomes.push(IngestOutcome {
                    id: event.id,
                    event_type: event.event_type.clone(),
                    created_at: event.created_at,
                    duplicate: false,
                });
                continue;
            }
            let Some(key) = event.idempotency_key.as_deref() else {
                return Err(StoreError::Conflict(format!("event id {} exists", event.id)));
            };
            let first = sqlx::query_as::<DB, (Uuid, String, DateTime<Utc>)>(
                "SELECT id, event_type, created_at FROM events WHERE organization_id = $1 AND idempotency_key = $2",
            )
            .bind(event.organization_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .store()?;
            if first.2 >= idempotency_since {
                outcomes.push(IngestOutcome {
                    id: first.0,
                    event_type: first.1,
                    created_at: first.2,
                    duplicate: true,
                });
                continue;
            }
            // The first use is older than the window (the janitor has not cleared it yet): forget it.
            sqlx::query::<DB>("UPDATE events SET idempotency_key = NULL WHERE id = $1")
                .bind(first.0)
                .execute(&mut *tx)
                .await
                .store()?;
            inserted.extend(DB::insert_events(&mut tx, std::slice::from_ref(event)).await?);
            outcomes.push(IngestOutcome {
                id: event.id,
                event_type: event.event_type.clone(),
                created_at: event.created_at,
                duplicate: false,
            });
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

    async fn unpublished_events(&self, created_before: DateTime<Utc>, limit: i64) -> StoreResult<Vec<Event>> {
        sqlx::query_as::<DB, Event>(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE published_at IS NULL AND created_at <= $1 ORDER BY created_at LIMIT $2"
        ))
        .bind(created_before)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn mark_events_published(&self, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.write.acquire().await.store()?;
        DB::mark_published(&mut conn, ids, at).await
    }

    async fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>(
            "UPDATE events SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND created_at < $1",
        )
        .bind(before)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result))
    }

    async fn create_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<Vec<Uuid>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.write.acquire().await.store()?;
        DB::insert_deliveries(&mut conn, deliveries).await
    }

    async fn unstarted_deliveries(&self, event_ids: &[Uuid]) -> StoreResult<Vec<Delivery>> {
        let mut found = Vec::new();
        for chunk in event_ids.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE status = 'queued' AND attempts = 0 AND event_id IN "
            ));
            push_id_list(&mut query, chunk);
            found.extend(query.build_query_as::<Delivery>().fetch_all(&self.read).await.store()?);
        }
        Ok(found)
    }

    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let claimed = sqlx::query_as::<DB, Delivery>(DB::CLAIM_DUE_SQL)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .store()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let event_ids: Vec<Uuid> = claimed.iter().map(|d| d.event_id).collect();
        let mut payloads = std::collections::HashMap::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(BATCH_ROWS) {
            let mut query =
                QueryBuilder::<DB>::new("SELECT id, event_type, payload FROM events WHERE id IN ");
            push_id_list(&mut query, chunk);
            let rows: Vec<(Uuid, String, String)> =
                query.build_query_as().fetch_all(&mut *tx).await.store()?;
            payloads.extend(rows.into_iter().map(|(id, event_type, payload)| (id, (event_type, payload))));
        }
        tx.commit().await.store()?;
        Ok(claimed
            .into_iter()
            .filter_map(|delivery| {
                let (event_type, payload) = payloads.get(&delivery.event_id)?.clone();
                Some(DueDelivery {
                    delivery_id: delivery.id,
                    event_id: delivery.event_id,
                    webhook_id: delivery.webhook_id,
                    organization_id: delivery.organization_id,
                    attempts: delivery.attempts,
                    event_type,
                    payload,
                })
            })
            .collect())
    }

    async fn release_deliveries(&self, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<()> {
        for chunk in ids.chunks(BATCH_ROWS) {
            let mut query =
                QueryBuilder::<DB>::new("UPDATE deliveries SET status = 'pending', next_attempt_at = ");
            query.push_bind(now).push(" WHERE status = 'queued' AND id IN ");
            push_id_list(&mut query, chunk);
            query.build().execute(&self.write).await.store()?;
        }
        Ok(())
    }

    async fn defer_deliveries(
        &self,
        deferrals: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        for chunk in deferrals.chunks(BATCH_ROWS) {
            let mut query = QueryBuilder::<DB>::new("WITH deferral (id, due_at) AS (");
            query.push_values(chunk, |mut row, (id, due_at)| {
                row.push_bind(*id).push_bind(*due_at);
            });
            query.push(
                ") UPDATE deliveries SET status = 'pending', next_attempt_at = deferral.due_at, updated_at = ",
            );
            query
                .push_bind(now)
                .push(" FROM deferral WHERE deliveries.id = deferral.id AND deliveries.status = 'queued'");
            query.build().execute(&self.write).await.store()?;
        }
        Ok(())
    }

    async fn requeue_all_queued(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>("UPDATE deliveries SET next_attempt_at = $1 WHERE status = 'queued'")
            .bind(now)
            .execute(&self.write)
            .await
            .store()?;
        Ok(DB::rows_affected(&result))
    }

    async fn record_outcomes(
        &self,
        outcomes: &[AttemptOutcome],
        disable_after_dead: u32,
    ) -> StoreResult<Vec<DisabledWebhook>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let any_dead = outcomes.iter().any(|o| matches!(o.next, NextStep::Dead { .. }));
        if DB::OUTCOMES_IN_ONE_STATEMENT && !any_dead {
            // The common case: one statement in autocommit.
            let mut conn = self.write.acquire().await.store()?;
            DB::apply_outcomes(&mut conn, outcomes).await?;
            return Ok(Vec::new());
        }
        // Dead deliveries lengthen their webhook's run of dead deliveries, which may disable it: in the same
        // transaction, so that no one sees a dead delivery whose consequences are missing.
        let mut tx = self.write.begin_with(DB::BEGIN_WRITE).await.store()?;
        let updated: std::collections::HashSet<Uuid> =
            DB::apply_outcomes(&mut tx, outcomes).await?.into_iter().collect();
        let dead = outcomes
            .iter()
            .filter(|o| matches!(o.next, NextStep::Dead { .. }) && updated.contains(&o.attempt.delivery_id));
        let mut disabled = Vec::new();
        for outcome in dead {
            let NextStep::Dead { disable_webhook } = &outcome.next else { continue };
            let run: Option<(i64,)> = sqlx::query_as::<DB, (i64,)>(
                "UPDATE webhooks SET consecutive_dead = consecutive_dead + 1 WHERE id = $1 RETURNING consecutive_dead",
            )
            .bind(outcome.webhook_id)
            .fetch_optional(&mut *tx)
            .await
            .store()?;
            let reason = disable_webhook.clone().or_else(|| {
                let (run,) = run?;
                (disable_after_dead > 0 && run >= i64::from(disable_after_dead))
                    .then(|| format!("disabled after {run} consecutive dead deliveries"))
            });
            if let Some(reason) = reason {
                let result = sqlx::query::<DB>(
                    "UPDATE webhooks SET is_active = FALSE, disabled_reason = $2, updated_at = $3 \
                     WHERE id = $1 AND is_active = TRUE",
                )
                .bind(outcome.webhook_id)
                .bind(reason.as_str())
                .bind(outcome.attempt.started_at)
                .execute(&mut *tx)
                .await
                .store()?;
                if DB::rows_affected(&result) > 0 {
                    disabled.push(DisabledWebhook { webhook_id: outcome.webhook_id, reason });
                }
            }
        }
        tx.commit().await.store()?;
        Ok(disabled)
    }

    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .store()
    }

    async fn list_attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>> {
        sqlx::query_as::<DB, Attempt>(
            "SELECT id, delivery_id, attempt_number, started_at, duration_ms, status_code, response_body, error \
             FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number, started_at",
        )
        .bind(delivery_id)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
              ORDER BY id DESC LIMIT $4"
        ))
        .bind(query.webhook_id)
        .bind(query.status.map(DeliveryStatus::as_str))
        .bind(query.before)
        .bind(query.limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn redrive_delivery(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, completed_at = NULL, updated_at = $2 \
             WHERE id = $1 AND status <> 'queued' RETURNING ",
            delivery_columns!()
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.write)
        .await
        .store()
    }

    async fn list_dead_deliveries(
        &self,
        organization_id: Option<Uuid>,
        webhook_id: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        sqlx::query_as::<DB, Delivery>(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM deliveries WHERE status = 'dead' AND ($1 IS NULL OR organization_id = $1) \
              AND ($2 IS NULL OR webhook_id = $2) ORDER BY updated_at DESC, id DESC LIMIT $3"
        ))
        .bind(organization_id)
        .bind(webhook_id)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .store()
    }

    async fn replay_deliveries(&self, filter: &ReplayFilter, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = sqlx::query::<DB>(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, completed_at = NULL, updated_at = $1 \
             WHERE status = $2 AND ($2 <> 'pending' OR attempts > 0) \
               AND ($3 IS NULL OR organization_id = $3) AND ($4 IS NULL OR webhook_id = $4) \
               AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at <= $6)",
        )
        .bind(now)
        .bind(filter.status.as_str())
        .bind(filter.organization_id)
        .bind(filter.webhook_id)
        .bind(filter.since)
        .bind(filter.until)
        .execute(&self.write)
        .await
        .store()?;
        Ok(DB::rows_affected(&result))
    }
}

/// Statements shared by several operations, run inside the caller's transaction.
impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn insert_user(tx: &mut sqlx::Transaction<'static, DB>, user: &NewUser) -> StoreResult<User> {
        sqlx::query_as::<DB, User>(concat!(
            "INSERT INTO users (id, organization_id, email, name, role, is_active, created_at) \
             VALUES ($1, $2, $3, $4, $5, TRUE, $6) RETURNING ",
            user_columns!()
        ))
        .bind(user.id)
        .bind(user.organization_id)
        .bind(user.email.as_str())
        .bind(user.name.as_deref())
        .bind(user.role.as_str())
        .bind(user.created_at)
        .fetch_one(&mut **tx)
        .await
        .store()
    }

    async fn insert_api_key(tx: &mut sqlx::Transaction<'static, DB>, key: &NewApiKey) -> StoreResult<ApiKey> {
        sqlx::query_as::<DB, ApiKey>(concat!(
            "INSERT INTO api_keys (id, organization_id, user_id, key_hash, prefix, name, purpose, is_active, \
             expires_at, total_requests, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, 0, $9) \
             RETURNING ",
            key_columns!()
        ))
        .bind(key.id)
        .bind(key.organization_id)
        .bind(key.user_id)
        .bind(key.key_hash.as_slice())
        .bind(key.prefix.as_str())
        .bind(key.name.as_str())
        .bind(key.purpose.as_str())
        .bind(key.expires_at)
        .bind(key.created_at)
        .fetch_one(&mut **tx)
        .await
        .store()
    }
}

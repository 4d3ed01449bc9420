//! The PostgreSQL backend (production mode). Deliveries are claimed with `FOR UPDATE SKIP LOCKED`, so
//! any number of schedulers can run side by side without taking the same rows. [`listen`] and
//! [`follow`] carry the webhook change notifications between processes (`LISTEN/NOTIFY`).

use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{
    Connection, PgConnection, Postgres,
    postgres::{PgListener, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    AttemptOutcome, NewDelivery, NewEvent, Schema, StoreResult,
    sql::{Backend, ResultExt, SqlStore, delivery_columns, outcome_state},
};
use crate::config::{DatabaseSettings, redact_url};

pub type PostgresStore = SqlStore<Postgres>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Backend for Postgres {
    const CLAIM_DUE_SQL: &'static str = concat!(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, updated_at = $1 WHERE id IN \
         (SELECT id FROM deliveries WHERE status IN ('pending', 'queued') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING ",
        delivery_columns!()
    );
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BOOTSTRAP_LOCK_SQL: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7236417)");
    const WRITE_PARALLELISM: usize = 4;
    const SEPARATE_WRITE_POOL: bool = false;
    const LOCK_PICKED: &'static str = " FOR UPDATE SKIP LOCKED";
    // Session-level: held by a connection of its own for the whole pass (see RetentionLock).
    const RETENTION_LOCK_SQL: Option<&'static str> = Some("SELECT pg_try_advisory_lock(7236418)");
    const RECLAIM_PAGES_SQL: Option<&'static str> = None;
    const EPOCH_OF_CREATED_AT: &'static str = "CAST(EXTRACT(EPOCH FROM created_at) AS BIGINT)";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn insert_events<'c>(
        conn: &'c mut PgConnection,
        events: &'c [NewEvent],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<(Uuid,)> = sqlx::query_as(
                "INSERT INTO events (id, organization_id, event_type, payload, idempotency_key, idempotency_hash, \
                   created_at, webhook_id) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                   $7::timestamptz[], $8::uuid[]) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.organization_id).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.idempotency_key.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.request_hash.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.only_webhook).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await
            .store()?;
            Ok(ids.into_iter().map(|(id,)| id).collect())
        })
    }

    fn insert_deliveries<'c>(
        conn: &'c mut PgConnection,
        deliveries: &'c [NewDelivery],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        Box::pin(async move {
            let ids: Vec<(Uuid,)> = sqlx::query_as(
                "INSERT INTO deliveries (id, event_id, webhook_id, organization_id, status, attempts, next_attempt_at, \
                 created_at, updated_at) \
                 SELECT id, event_id, webhook_id, organization_id, 'queued', 0, lease_until, created_at, created_at \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[], $6::timestamptz[]) \
                 AS d (id, event_id, webhook_id, organization_id, created_at, lease_until) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.webhook_id).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.organization_id).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.created_at).collect::<Vec<_>>())
            .bind(deliveries.iter().map(|d| d.lease_until).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await
            .store()?;
            Ok(ids.into_iter().map(|(id,)| id).collect())
        })
    }

    /// One statement: the deliveries that outcomes create are inserted with their state (unless their
    /// webhook is gone), the attempts logged (for deliveries that exist) and the other deliveries moved
    /// on (unless the outcome is stale). The sub-statements share one snapshot: `moved` cannot see the
    /// rows `created` inserts, so each delivery is written once.
    fn apply_outcomes<'c>(
        conn: &'c mut PgConnection,
        outcomes: &'c [AttemptOutcome],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        Box::pin(async move {
            let states: Vec<_> = outcomes.iter().map(outcome_state).collect();
            let attempt = |o: &'c AttemptOutcome| &o.attempt;
            let ids: Vec<(Uuid,)> = sqlx::query_as(
                "WITH input AS ( \
                   SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[], $5::bigint[], \
                     $6::bigint[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
                     $12::uuid[], $13::timestamptz[], $14::uuid[], $15::uuid[], $16::boolean[]) \
                   AS i (attempt_id, delivery_id, attempt_number, started_at, duration_ms, status_code, \
                     response_body, error, status, next_attempt_at, completed_at, webhook_id, ended_at, \
                     event_id, organization_id, creates) \
                 ), created AS ( \
                   INSERT INTO deliveries (id, event_id, webhook_id, organization_id, status, attempts, \
                     next_attempt_at, last_status_code, last_error, created_at, updated_at, completed_at) \
                   SELECT delivery_id, event_id, webhook_id, organization_id, status, attempt_number, \
                     next_attempt_at, status_code, error, started_at, ended_at, completed_at \
                   FROM input i WHERE i.creates AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = i.webhook_id) \
                   ON CONFLICT DO NOTHING RETURNING id \
                 ), moved AS ( \
                   UPDATE deliveries d SET status = i.status, attempts = i.attempt_number, \
                     next_attempt_at = i.next_attempt_at, last_status_code = i.status_code, last_error = i.error, \
                     updated_at = i.ended_at, completed_at = i.completed_at \
                   FROM input i WHERE d.id = i.delivery_id AND d.attempts < i.attempt_number \
                   RETURNING d.id \
                 ), logged AS ( \
                   INSERT INTO delivery_attempts (id, delivery_id, attempt_number, started_at, duration_ms, \
                     status_code, response_body, error) \
                   SELECT attempt_id, delivery_id, attempt_number, started_at, duration_ms, status_code, \
                     response_body, error \
                   FROM input i WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = i.delivery_id) \
                     OR i.delivery_id IN (SELECT id FROM created) \
                 ) \
                 SELECT id FROM moved UNION ALL SELECT id FROM created",
            )
            .bind(outcomes.iter().map(|o| attempt(o).id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).delivery_id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).attempt_number).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).started_at).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).duration_ms).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).status_code).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).response_body.as_deref()).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).error.as_deref()).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.0).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.1).collect::<Vec<_>>())
            .bind(states.iter().map(|s| s.2).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.webhook_id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| attempt(o).ended_at()).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.event_id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.organization_id).collect::<Vec<_>>())
            .bind(outcomes.iter().map(|o| o.creates_delivery).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await
            .store()?;
            Ok(ids.into_iter().map(|(id,)| id).collect())
        })
    }

    fn mark_published<'c>(
        conn: &'c mut PgConnection,
        ids: &'c [Uuid],
        at: DateTime<Utc>,
    ) -> BoxFuture<'c, StoreResult<()>> {
        Box::pin(async move {
            // Committed without waiting for the disk: a mark lost in a database crash only means the
            // relay publishes the event again, which fan-out absorbs.
            let mut transaction = conn.begin().await.store()?;
            sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *transaction).await.store()?;
            // By primary key only: a `published_at IS NULL` condition lets the planner pick the partial
            // index of unpublished events, whose dead entries grow with every event until vacuum. Marking
            // an event twice (relay) only refreshes its time.
            sqlx::query("UPDATE events SET published_at = $1 WHERE id = ANY($2)")
                .bind(at)
                .bind(ids)
                .execute(&mut *transaction)
                .await
                .store()?;
            transaction.commit().await.store()
        })
    }
}

/// A pooled connection idle for longer than this is pinged before it is handed out (a broken one is
/// replaced by a new one).
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Connects; runs the migrations (concurrent starts are serialized by sqlx's migration lock) or checks
/// that the schema is current, as `schema` says.
pub(crate) async fn connect(
    url: &str,
    settings: &DatabaseSettings,
    schema: Schema,
) -> anyhow::Result<PostgresStore> {
    let unreachable = |error: &dyn std::fmt::Display| {
        anyhow::anyhow!("connecting to PostgreSQL at {}: {error}", redact_url(url))
    };
    // One plain connection first: a pool only reports "timed out", this reports why.
    let timeout = settings.connect_timeout.get();
    match tokio::time::timeout(timeout, PgConnection::connect(url)).await {
        Ok(Ok(connection)) => drop(connection.close().await),
        Ok(Err(error)) => return Err(unreachable(&error)),
        Err(_) => return Err(unreachable(&format!("no answer within {}s", timeout.as_secs_f64()))),
    }
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout.get())
        .idle_timeout(Duration::from_secs(300))
        // A connection in steady use is not pinged each time it is taken (sqlx's default: a round trip
        // before every statement or transaction); one idle for a while is. A connection that broke
        // in between fails its statement, which the caller treats as an outage like any other.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move { Ok(meta.idle_for < PING_IDLE_AFTER || conn.ping().await.is_ok()) })
        })
        .connect(url)
        .await
        .map_err(|error| unreachable(&error))?;
    if schema == Schema::Migrate {
        MIGRATOR.run(&pool).await.map_err(|error| anyhow::anyhow!("migrating PostgreSQL: {error}"))?;
    } else {
        // No migration table (`to_regclass` is NULL): nothing was ever applied. Reading it creates
        // nothing and prints no notice, unlike running the migrator.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .map_err(|error| unreachable(&error))?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&pool)
                .await
                .map_err(|error| unreachable(&error))?
        } else {
            Vec::new()
        };
        super::require_current(&MIGRATOR, &applied)?;
    }
    Ok(SqlStore { read: pool.clone(), write: pool })
}

/// The channel every webhook change is notified on (migration 0003: a trigger, in the changing
/// transaction), with `"{webhook id} {organization id}"` as payload.
pub(crate) const WEBHOOK_CHANGED: &str = "herald_webhook_changed";

/// A connection listening on `channel`; [`follow`] hears it. Connected before the caller goes on, so no
/// change committed after this returns is missed.
pub(crate) async fn listen(url: &str, channel: &str) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect(url)
        .await
        .map_err(|error| anyhow::anyhow!("listening on PostgreSQL at {}: {error}", redact_url(url)))?;
    listener.listen(channel).await.map_err(|error| anyhow::anyhow!("LISTEN {channel}: {error}"))?;
    Ok(listener)
}

/// Hands each notification's payload to `heard` until `shutdown`. When the connection is lost, it
/// reconnects (with growing delays) and, once listening again, calls `heard(None)`: notifications sent
/// meanwhile are lost.
pub(crate) async fn follow<F, Fut>(
    mut listener: PgListener,
    shutdown: CancellationToken,
    mut heard: F,
) -> anyhow::Result<()>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = listener.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => heard(Some(notification.payload().to_string())).await,
            lost => {
                if let Err(error) = lost {
                    tracing::debug!(%error, "the PostgreSQL listener failed");
                }
                tracing::warn!("PostgreSQL notifications interrupted; reconnecting the listener");
                heard(None).await;
                let mut delays = crate::retrying::delays(Duration::from_millis(100), Duration::from_secs(5));
                // A statement through the listener reconnects it and LISTENs again.
                while let Err(error) = sqlx::query("SELECT 1").execute(&mut listener).await {
                    tracing::debug!(%error, "the PostgreSQL listener cannot reconnect yet");
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                tracing::info!("PostgreSQL notifications back");
                heard(None).await;
            }
        }
    }
}

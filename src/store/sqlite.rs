//! The SQLite backend (embedded mode): one file, WAL journal, `synchronous = FULL` so that an event
//! acknowledged with 202 survives a power cut, foreign keys on, incremental auto-vacuum for new files.
//! Writes go through a single connection (SQLite has one writer anyway); reads use a pool.

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{
    Connection, QueryBuilder, Sqlite, SqliteConnection,
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    },
};
use uuid::Uuid;

use super::{
    AttemptOutcome, NewDelivery, NewEvent, Schema, StoreResult,
    sql::{BATCH_ROWS, Backend, ResultExt, SqlStore, delivery_columns, outcome_state, push_id_list},
};
use crate::config::DatabaseSettings;

pub type SqliteStore = SqlStore<Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Backend for Sqlite {
    // The single write connection serializes claims; no row locks are needed.
    const CLAIM_DUE_SQL: &'static str = concat!(
        "UPDATE deliveries SET status = 'queued', next_attempt_at = $2, updated_at = $1 WHERE id IN \
         (SELECT id FROM deliveries WHERE status IN ('pending', 'queued') AND next_attempt_at <= $1 \
         ORDER BY next_attempt_at LIMIT $3) RETURNING ",
        delivery_columns!()
    );
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BOOTSTRAP_LOCK_SQL: Option<&'static str> = None;
    const WRITE_PARALLELISM: usize = 1;
    const SEPARATE_WRITE_POOL: bool = true;
    const LOCK_PICKED: &'static str = "";
    const RETENTION_LOCK_SQL: Option<&'static str> = None;
    const RECLAIM_PAGES_SQL: Option<&'static str> = Some("PRAGMA incremental_vacuum({pages})");
    const EPOCH_OF_CREATED_AT: &'static str = "CAST(strftime('%s', created_at) AS INTEGER)";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn insert_events<'c>(
        conn: &'c mut SqliteConnection,
        events: &'c [NewEvent],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        Box::pin(async move { in_transaction!(conn, events.len(), |conn| insert_events(conn, events)) })
    }

    fn insert_deliveries<'c>(
        conn: &'c mut SqliteConnection,
        deliveries: &'c [NewDelivery],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        Box::pin(async move {
            in_transaction!(conn, deliveries.len(), |conn| insert_deliveries(conn, deliveries))
        })
    }

    fn apply_outcomes<'c>(
        conn: &'c mut SqliteConnection,
        outcomes: &'c [AttemptOutcome],
    ) -> BoxFuture<'c, StoreResult<Vec<Uuid>>> {
        // Several statements: the caller runs this inside its transaction.
        Box::pin(apply_outcomes(conn, outcomes))
    }

    fn mark_published<'c>(
        conn: &'c mut SqliteConnection,
        ids: &'c [Uuid],
        at: DateTime<Utc>,
    ) -> BoxFuture<'c, StoreResult<()>> {
        Box::pin(async move { in_transaction!(conn, ids.len(), |conn| mark_published(conn, ids, at)) })
    }
}

/// Runs the work in a transaction when it takes more than one statement (`rows` above one chunk),
/// else directly: one statement commits by itself.
macro_rules! in_transaction {
    ($conn:expr, $rows:expr, |$c:ident| $work:expr) => {{
        if $rows <= BATCH_ROWS {
            let $c: &mut SqliteConnection = $conn;
            $work.await
        } else {
            let mut tx = $conn.begin_with("BEGIN IMMEDIATE").await.store()?;
            let result = {
                let $c: &mut SqliteConnection = &mut tx;
                $work.await?
            };
            tx.commit().await.store()?;
            Ok(result)
        }
    }};
}
use in_transaction;

async fn insert_events(conn: &mut SqliteConnection, events: &[NewEvent]) -> StoreResult<Vec<Uuid>> {
    let mut inserted = Vec::with_capacity(events.len());
    for chunk in events.chunks(BATCH_ROWS) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, organization_id, event_type, payload, idempotency_key, idempotency_hash, \
             created_at, webhook_id) ",
        );
        query.push_values(chunk, |mut row, event| {
            row.push_bind(event.id)
                .push_bind(event.organization_id)
                .push_bind(event.event_type.as_str())
                .push_bind(event.payload.as_str())
                .push_bind(event.idempotency_key.as_deref())
                .push_bind(event.request_hash.as_deref())
                .push_bind(event.created_at)
                .push_bind(event.only_webhook);
        });
        query.push(" ON CONFLICT DO NOTHING RETURNING id");
        let ids: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *conn).await.store()?;
        inserted.extend(ids.into_iter().map(|(id,)| id));
    }
    Ok(inserted)
}

async fn insert_deliveries(
    conn: &mut SqliteConnection,
    deliveries: &[NewDelivery],
) -> StoreResult<Vec<Uuid>> {
    let mut inserted = Vec::with_capacity(deliveries.len());
    for chunk in deliveries.chunks(BATCH_ROWS) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO deliveries (id, event_id, webhook_id, organization_id, status, attempts, next_attempt_at, \
             created_at, updated_at) ",
        );
        query.push_values(chunk, |mut row, delivery| {
            row.push_bind(delivery.id)
                .push_bind(delivery.event_id)
                .push_bind(delivery.webhook_id)
                .push_bind(delivery.organization_id)
                .push("'queued'")
                .push("0")
                .push_bind(delivery.lease_until)
                .push_bind(delivery.created_at)
                .push_bind(delivery.created_at);
        });
        query.push(" ON CONFLICT DO NOTHING RETURNING id");
        let ids: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *conn).await.store()?;
        inserted.extend(ids.into_iter().map(|(id,)| id));
    }
    Ok(inserted)
}

async fn mark_published(conn: &mut SqliteConnection, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()> {
    for chunk in ids.chunks(BATCH_ROWS) {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE events SET published_at = ");
        query.push_bind(at).push(" WHERE published_at IS NULL AND id IN ");
        push_id_list(&mut query, chunk);
        query.build().execute(&mut *conn).await.store()?;
    }
    Ok(())
}

async fn apply_outcomes(conn: &mut SqliteConnection, outcomes: &[AttemptOutcome]) -> StoreResult<Vec<Uuid>> {
    let mut updated = Vec::with_capacity(outcomes.len());
    for chunk in outcomes.chunks(BATCH_ROWS) {
        updated.extend(insert_created_deliveries(conn, chunk).await?);
        // Attempts of deliveries deleted meanwhile (their webhook was deleted) are dropped.
        let mut query = QueryBuilder::<Sqlite>::new(
            "WITH attempt (id, delivery_id, attempt_number, started_at, duration_ms, status_code, response_body, \
             error) AS (",
        );
        query.push_values(chunk, |mut row, outcome| {
            let attempt = &outcome.attempt;
            row.push_bind(attempt.id)
                .push_bind(attempt.delivery_id)
                .push_bind(attempt.attempt_number)
                .push_bind(attempt.started_at)
                .push_bind(attempt.duration_ms)
                .push_bind(attempt.status_code)
                .push_bind(attempt.response_body.as_deref())
                .push_bind(attempt.error.as_deref());
        });
        query.push(
            ") INSERT INTO delivery_attempts (id, delivery_id, attempt_number, started_at, duration_ms, \
             status_code, response_body, error) SELECT id, delivery_id, attempt_number, started_at, duration_ms, \
             status_code, response_body, error FROM attempt \
             WHERE EXISTS (SELECT 1 FROM deliveries WHERE deliveries.id = attempt.delivery_id)",
        );
        query.build().execute(&mut *conn).await.store()?;

        // A stale duplicate of an attempt already recorded (attempts not below its number) changes nothing.
        let mut query = QueryBuilder::<Sqlite>::new(
            "WITH outcome (id, status, attempts, next_attempt_at, last_status_code, last_error, at, completed_at) AS (",
        );
        query.push_values(chunk, |mut row, outcome| {
            let (status, next_attempt_at, completed_at) = outcome_state(outcome);
            let attempt = &outcome.attempt;
            row.push_bind(attempt.delivery_id)
                .push_bind(status)
                .push_bind(attempt.attempt_number)
                .push_bind(next_attempt_at)
                .push_bind(attempt.status_code)
                .push_bind(attempt.error.as_deref())
                .push_bind(attempt.ended_at())
                .push_bind(completed_at);
        });
        query.push(
            ") UPDATE deliveries SET status = outcome.status, attempts = outcome.attempts, \
             next_attempt_at = outcome.next_attempt_at, last_status_code = outcome.last_status_code, \
             last_error = outcome.last_error, updated_at = outcome.at, completed_at = outcome.completed_at \
             FROM outcome WHERE deliveries.id = outcome.id AND deliveries.attempts < outcome.attempts \
             RETURNING deliveries.id",
        );
        let ids: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *conn).await.store()?;
        updated.extend(ids.into_iter().map(|(id,)| id));
    }
    Ok(updated)
}

/// Inserts the deliveries that outcomes create, with their state, unless their webhook is gone; the
/// update that follows finds them up to date, so each is written once. Returns the ids inserted.
async fn insert_created_deliveries(
    conn: &mut SqliteConnection,
    outcomes: &[AttemptOutcome],
) -> StoreResult<Vec<Uuid>> {
    let creating: Vec<&AttemptOutcome> = outcomes.iter().filter(|outcome| outcome.creates_delivery).collect();
    if creating.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<Sqlite>::new(
        "WITH outcome (id, event_id, webhook_id, organization_id, status, attempts, next_attempt_at, \
         last_status_code, last_error, created_at, updated_at, completed_at) AS (",
    );
    query.push_values(creating, |mut row, outcome| {
        let (status, next_attempt_at, completed_at) = outcome_state(outcome);
        let attempt = &outcome.attempt;
        row.push_bind(attempt.delivery_id)
            .push_bind(outcome.event_id)
            .push_bind(outcome.webhook_id)
            .push_bind(outcome.organization_id)
            .push_bind(status)
            .push_bind(attempt.attempt_number)
            .push_bind(next_attempt_at)
            .push_bind(attempt.status_code)
            .push_bind(attempt.error.as_deref())
            .push_bind(attempt.started_at)
            .push_bind(attempt.ended_at())
            .push_bind(completed_at);
    });
    query.push(
        ") INSERT INTO deliveries (id, event_id, webhook_id, organization_id, status, attempts, next_attempt_at, \
         last_status_code, last_error, created_at, updated_at, completed_at) SELECT * FROM outcome \
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE webhooks.id = outcome.webhook_id) \
         ON CONFLICT DO NOTHING RETURNING id",
    );
    let ids: Vec<(Uuid,)> = query.build_query_as().fetch_all(&mut *conn).await.store()?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// Opens the database file; migrates it (creating it if needed), or checks that it is current, as
/// `schema` says.
pub(crate) async fn connect(
    url: &str,
    settings: &DatabaseSettings,
    schema: Schema,
) -> anyhow::Result<SqliteStore> {
    let migrate = schema == Schema::Migrate;
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| anyhow::anyhow!("configuration: database.url: {error}"))?
        .create_if_missing(migrate)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let path = options.get_filename().to_path_buf();
    if !migrate && !path.exists() {
        anyhow::bail!("no database at {}: run `herald migrate` first (or `herald serve`)", path.display());
    }
    // In-memory databases have no file to protect.
    if !url.contains(":memory:") && !url.contains("mode=memory") {
        crate::private_fs::ensure_file(&path)
            .map_err(|error| anyhow::anyhow!("creating the database file {}: {error}", path.display()))?;
    }
    let open_error =
        |error: sqlx::Error| anyhow::anyhow!("opening SQLite database {}: {error}", path.display());
    // Set before the first table is created, so it holds for new files only (an existing file keeps
    // its mode: `VACUUM` once, with Herald stopped, converts it): the retention job then gives the
    // pages it frees back to the file system in small steps (`PRAGMA incremental_vacuum`).
    let write_options = options.clone().auto_vacuum(SqliteAutoVacuum::Incremental);
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.connect_timeout.get().max(Duration::from_secs(30)))
        .connect_with(write_options)
        .await
        .map_err(open_error)?;
    // data/ is relative to the working directory: say which file this is, in full, so that a start
    // from another folder (a new, empty database) is noticed.
    // Only where it matters (serve, migrate): read-only commands print nothing but their output.
    if migrate {
        let absolute = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        tracing::info!(path = %absolute.display(), "SQLite database");
        MIGRATOR
            .run(&write)
            .await
            .map_err(|error| anyhow::anyhow!("migrating {}: {error}", path.display()))?;
    } else {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success AND EXISTS \
             (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_all(&write)
        .await
        .or_else(|error| match &error {
            // No migration table: nothing was ever applied.
            sqlx::Error::Database(db) if db.message().contains("no such table") => Ok(Vec::new()),
            _ => Err(error),
        })
        .map_err(open_error)?;
        super::require_current(&MIGRATOR, &applied)?;
    }
    let read = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.connect_timeout.get())
        .connect_with(options.read_only(true))
        .await
        .map_err(open_error)?;
    Ok(SqlStore { read, write })
}

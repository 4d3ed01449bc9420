//! The store implementation, written once for SQLite and PostgreSQL. Both accept `$N` placeholders,
//! `RETURNING`, `ON CONFLICT DO NOTHING` and partial indexes, so the SQL is shared; the few real
//! differences (row locking, how a write transaction begins, the batched writes of the hot path) come
//! from [`Backend`]. Times are always bound from Rust, never taken from the database clock.
//!
//! SQLite allows one writer at a time, so [`SqlStore`] keeps a separate single-connection pool for
//! writes there (`write`); on PostgreSQL both fields hold the same pool.
//!
//! # Layout
//! One file per aggregate, each implementing its role trait for `SqlStore<DB>`: `accounts.rs`,
//! `webhooks.rs`, `events.rs`, `deliveries.rs`, and `database.rs` for [`Store`](super::Store) itself.
//! They are compiled once per database: `aggregates.rs` lists them, and the modules `for_sqlite` and
//! `for_postgres` below mount it with `DB` naming a concrete database. A generic
//! `impl<DB> ... for SqlStore<DB>` would have to repeat some twenty bounds (`for<'q> Uuid: Encode<'q, DB>`,
//! the executor bounds, ...) in every file: Rust does not imply a trait's where-clauses about types other
//! than `Self` (rust-lang/rust#20671), so no helper trait can carry them. On a concrete database they
//! hold by themselves, and no file states them.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{Database, Encode, Pool, QueryBuilder, Type};
use uuid::Uuid;

use super::{AttemptOutcome, NewDelivery, NewEvent, NextStep, StoreError, StoreResult};

/// What differs between the two databases.
pub trait Backend: Database {
    /// Claims due deliveries: `$1` now, `$2` lease end, `$3` limit; returns delivery columns.
    const CLAIM_DUE_SQL: &'static str;
    /// Starts a transaction that will write (SQLite takes the write lock up front to avoid deadlocks).
    const BEGIN_WRITE: &'static str;
    /// Serializes concurrent bootstraps, where the database needs it.
    const BOOTSTRAP_LOCK_SQL: Option<&'static str>;
    /// See [`Store::write_parallelism`](super::Store::write_parallelism).
    const WRITE_PARALLELISM: usize;
    /// Whether writes have a pool of their own (SQLite), counted beside the readers' in pool metrics.
    const SEPARATE_WRITE_POOL: bool;
    /// Appended to a retention batch's `SELECT`: locks the rows it picked until the transaction ends,
    /// skipping rows another transaction holds (PostgreSQL); SQLite's one writer needs nothing.
    const LOCK_PICKED: &'static str;
    /// Takes the retention lock for the session, answering whether it was free (PostgreSQL); `None`:
    /// no lock is needed (SQLite: one process per file).
    const RETENTION_LOCK_SQL: Option<&'static str>;
    /// Gives up to `{pages}` free pages back to the file system (SQLite's incremental vacuum; the
    /// number is formatted in, a pragma takes no bind); `None`: the database does it by itself.
    const RECLAIM_PAGES_SQL: Option<&'static str>;
    /// `deliveries.created_at` in whole Unix seconds, as an integer expression (the console's buckets).
    const EPOCH_OF_CREATED_AT: &'static str;

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
    /// Logs attempts (of deliveries that still exist) and moves their deliveries on (unless the outcome
    /// is stale); returns the deliveries moved. Runs inside the caller's transaction (the outcomes'
    /// consequences, statistics and operational events are written in it too).
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

/// The delivery columns an outcome sets: status, next_attempt_at, completed_at (when the attempt
/// ended, as `updated_at`).
pub(super) fn outcome_state(
    outcome: &AttemptOutcome,
) -> (&'static str, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let ended = outcome.attempt.ended_at();
    match &outcome.next {
        NextStep::Succeeded => ("succeeded", None, Some(ended)),
        NextStep::Retry(at) => ("pending", Some(*at), None),
        NextStep::Dead => ("dead", None, Some(ended)),
    }
}

/// The store over one database.
#[derive(Debug, Clone)]
pub struct SqlStore<DB: Database> {
    pub(super) read: Pool<DB>,
    pub(super) write: Pool<DB>,
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

/// A sqlx error as a [`StoreError`]: a lost connection or a database going away is `Unavailable` (retry
/// later), a value the database cannot hold is `Invalid` (the caller's fault), a unique violation is a
/// `Conflict`; the rest is `Other`.
pub(super) fn db_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(error.to_string())
        }
        sqlx::Error::Encode(cause) => StoreError::Invalid(cause.to_string()),
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.constraint().map_or_else(|| db.message().to_string(), str::to_string))
        }
        sqlx::Error::Database(db) => match refusal(&*db) {
            Some(Refusal::Unavailable) => StoreError::Unavailable(db.to_string()),
            Some(Refusal::Invalid) => StoreError::Invalid(db.message().to_string()),
            None => StoreError::Other(sqlx::Error::Database(db).into()),
        },
        other => StoreError::Other(other.into()),
    }
}

/// What a database's error code says beyond "failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The server is going away or not there yet.
    Unavailable,
    /// A value it cannot hold.
    Invalid,
}

/// PostgreSQL (SQLSTATE, <https://www.postgresql.org/docs/current/errcodes-appendix.html>): class 08
/// (connection exception), 57P01 `admin_shutdown` (what every open connection hears when the server
/// stops), 57P02 `crash_shutdown`, 57P03 `cannot_connect_now` (starting up or shutting down) and 53300
/// `too_many_connections` are unavailability; class 22 (data exception: 22021 a NUL or invalid UTF-8
/// in text, 22008 a time out of range, 22P02 invalid text for a type, 22001 too long...) is a refused
/// value. SQLite stores any text and any time Herald binds (times are RFC 3339 text), so its only
/// refused values are 18 `SQLITE_TOOBIG` and 20 `SQLITE_MISMATCH` (primary result codes, the low byte
/// of the extended code sqlx reports).
fn refusal(db: &dyn sqlx::error::DatabaseError) -> Option<Refusal> {
    let code = db.code()?;
    if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        return if code.starts_with("22") {
            Some(Refusal::Invalid)
        } else if code.starts_with("08") || ["57P01", "57P02", "57P03", "53300"].contains(&code.as_ref()) {
            Some(Refusal::Unavailable)
        } else {
            None
        };
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let primary = code.parse::<u32>().ok()? & 0xff;
        return matches!(primary, 18 | 20).then_some(Refusal::Invalid);
    }
    None
}

pub(super) trait ResultExt<T> {
    fn store(self) -> StoreResult<T>;
}

/// Every query's result passes here, so this is where the database outage latch
/// ([`crate::outage::DATABASE`]) learns that the database went away and came back.
impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn store(self) -> StoreResult<T> {
        // A value sqlx could not encode never reached the database: that says nothing of the database.
        let answered = !matches!(self, Err(sqlx::Error::Encode(_)));
        let result = self.map_err(db_error);
        match &result {
            Err(StoreError::Unavailable(reason)) => crate::outage::DATABASE.failed(reason),
            // An answer, even a refusal, means the database is reachable.
            Ok(_) | Err(StoreError::NotFound | StoreError::Conflict(_) | StoreError::Invalid(_))
                if answered =>
            {
                crate::outage::DATABASE.succeeded()
            }
            Err(_) | Ok(_) => {}
        }
        result
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

/// The aggregates on SQLite.
#[path = "."]
#[allow(clippy::duplicate_mod, reason = "mounted once per database on purpose: see the module doc")]
mod for_sqlite {
    type DB = sqlx::Sqlite;
    #[path = "aggregates.rs"]
    mod aggregates;
}

/// The aggregates on PostgreSQL.
#[path = "."]
#[allow(clippy::duplicate_mod, reason = "mounted once per database on purpose: see the module doc")]
mod for_postgres {
    type DB = sqlx::Postgres;
    #[path = "aggregates.rs"]
    mod aggregates;
}

//! Retention: the [`RetentionStore`] role, which removes expired rows in bounded batches for the
//! retention job (`crate::retention`). Every method removes at most `limit` rows in one short
//! transaction and says how many it removed, so the caller paces the work and a pass never holds a lock
//! for long. Only finished deliveries (succeeded, dead) and what belongs to them are ever removed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;

/// What the retention job removes, in the order a pass removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetentionKind {
    /// Response bodies of attempts (cleared; the attempt stays).
    ResponseBodies,
    /// Attempts of finished deliveries.
    Attempts,
    /// Finished deliveries (their attempts go with them).
    Deliveries,
    /// Published events with no delivery left.
    Events,
}

impl RetentionKind {
    pub const ALL: [RetentionKind; 4] = [
        RetentionKind::ResponseBodies,
        RetentionKind::Attempts,
        RetentionKind::Deliveries,
        RetentionKind::Events,
    ];

    /// The metric label and the word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionKind::ResponseBodies => "response_bodies",
            RetentionKind::Attempts => "attempts",
            RetentionKind::Deliveries => "deliveries",
            RetentionKind::Events => "events",
        }
    }
}

/// Held while a pass runs: on PostgreSQL a session advisory lock on a connection of its own, released
/// when this is dropped (the connection is closed, not returned to the pool); on SQLite nothing (one
/// process per file).
pub struct RetentionLock(#[allow(dead_code, reason = "held for its drop")] Option<Box<dyn Send>>);

impl RetentionLock {
    /// A lock that holds nothing (SQLite).
    pub fn none() -> Self {
        Self(None)
    }

    /// A lock released when `held` is dropped.
    pub fn holding(held: impl Send + 'static) -> Self {
        Self(Some(Box::new(held)))
    }
}

impl std::fmt::Debug for RetentionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetentionLock")
    }
}

#[async_trait]
pub trait RetentionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Takes the retention lock, or `None` when another process holds it (a pass runs there).
    async fn try_retention_lock(&self) -> StoreResult<Option<RetentionLock>>;
    /// Removes (or, for bodies, clears) up to `limit` rows of `kind` that expired before `before`, oldest
    /// first, in one transaction; returns how many. Deliveries pending, queued or in flight, their
    /// attempts and their events, and events not yet published, are never touched.
    async fn remove_expired(
        &self,
        kind: RetentionKind,
        before: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// How many rows of `kind` [`RetentionStore::remove_expired`] would remove now (the dry run). For
    /// events, only those with no delivery left now: a pass also removes the events whose deliveries it
    /// removes first.
    async fn count_expired(&self, kind: RetentionKind, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Gives up to `pages` free pages back to the file system (SQLite's incremental vacuum) and returns
    /// how many free pages are left; PostgreSQL's autovacuum does this by itself (0).
    async fn reclaim_space(&self, pages: u32) -> StoreResult<u64>;
}

//! Retention: the [`RetentionStore`] role, which removes expired rows in bounded batches for the
//! retention job (`crate::retention`). Each call looks at most `limit` rows in one short transaction
//! and says how many it removed and where the next call starts, so the caller paces the work and a pass
//! never holds a lock for long. Only finished deliveries (succeeded, dead) and what belongs to them are ever removed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

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

/// Where a kind's walk stopped: the time and id of the last row a batch looked at (the next batch starts
/// after it, so rows that stay, such as an old event with an unfinished delivery, are looked at once a
/// pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Rows removed (or, for bodies, cleared).
    pub removed: u64,
    /// Where the next batch starts; `None` when this one reached the end of what expired.
    pub resume: Option<Resume>,
}

#[async_trait]
pub trait RetentionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Takes the retention lock, or `None` when another process holds it (a pass runs there).
    async fn try_retention_lock(&self) -> StoreResult<Option<RetentionLock>>;
    /// Looks at up to `limit` rows of `kind` that expired before `before`, oldest first after `resume`,
    /// and removes (for bodies, clears) those that may go, in one transaction. Deliveries pending,
    /// queued or in flight, their attempts and their events, and events not yet published, are never
    /// touched.
    async fn remove_expired(
        &self,
        kind: RetentionKind,
        before: DateTime<Utc>,
        resume: Option<Resume>,
        limit: u32,
    ) -> StoreResult<Swept>;
    /// How many rows of `kind` a pass at `before` would remove now (the dry run): for events, those
    /// whose deliveries all go in the same pass too.
    async fn count_expired(&self, kind: RetentionKind, before: DateTime<Utc>) -> StoreResult<u64>;
    /// Gives up to `pages` free pages back to the file system (SQLite's incremental vacuum) and returns
    /// how many free pages are left; PostgreSQL's autovacuum does this by itself (0).
    async fn reclaim_space(&self, pages: u32) -> StoreResult<u64>;
}

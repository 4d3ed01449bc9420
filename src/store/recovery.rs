//! Recoveries ("recover since") and re-fan-out: the [`RecoveryStore`] role and its types. A recovery
//! asks that one webhook receive every event of a window it has not successfully received; a background
//! stage (`worker::recover`) advances it in small steps, each one [`RecoveryStore::ready_deliveries`]
//! call, which also serves the re-fan-out of one event (`POST /events/{id}/redeliver`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{NewDelivery, StoreResult};

/// A recovery as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Recovery {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub webhook_id: Uuid,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The last event id looked at; `None` before the first step.
    pub cursor_id: Option<Uuid>,
    /// Steps taken (the compare-and-set of [`RecoveryStep`]).
    pub steps: i64,
    /// Whether every event of the window was looked at.
    pub scanned: bool,
    pub created_at: DateTime<Utc>,
}

/// A recovery and the state of the deliveries it created or made due again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryProgress {
    pub recovery: Recovery,
    /// Deliveries the recovery took on so far (it grows while the window is scanned).
    pub total: u64,
    /// Of those, succeeded.
    pub done: u64,
    /// Of those, dead (out of attempts).
    pub failed: u64,
}

impl RecoveryProgress {
    /// Deliveries of the recovery still waiting or in flight.
    pub fn unfinished(&self) -> u64 {
        self.total.saturating_sub(self.done + self.failed)
    }

    /// Running until the window is scanned and every delivery it took on is finished.
    pub fn is_running(&self) -> bool {
        !self.recovery.scanned || self.unfinished() > 0
    }
}

/// An event as a recovery scans it: what decides who receives it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventHeader {
    pub id: Uuid,
    pub event_type: String,
    pub only_webhook: Option<Uuid>,
}

/// One step of a recovery, taken only if no one took it meanwhile (`steps` is still `from_steps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryStep {
    pub recovery_id: Uuid,
    pub from_steps: i64,
    /// The last event id this step looked at.
    pub cursor_id: Option<Uuid>,
    /// Whether this step reached the end of the window.
    pub scanned: bool,
}

/// What [`RecoveryStore::ready_deliveries`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readied {
    /// Deliveries that did not exist and were created, due now.
    pub created: u64,
    /// Dead deliveries, or deliveries waiting for a retry, made due now.
    pub readied: u64,
    /// `false` when the step was taken by someone else already (nothing was written).
    pub stepped: bool,
}

#[async_trait]
pub trait RecoveryStore: Send + Sync + std::fmt::Debug + 'static {
    async fn create_recovery(&self, recovery: &Recovery) -> StoreResult<()>;
    async fn get_recovery(&self, id: Uuid) -> StoreResult<Option<RecoveryProgress>>;
    /// The webhook's most recent recovery.
    async fn latest_recovery(&self, webhook_id: Uuid) -> StoreResult<Option<RecoveryProgress>>;
    /// Recoveries whose window is not scanned yet, oldest first.
    async fn open_recoveries(&self) -> StoreResult<Vec<Recovery>>;
    /// The organization's events created in `since..=until` with an id after `after`, by id, at most
    /// `limit`.
    async fn events_in_window(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<EventHeader>>;
    /// In one transaction: creates the deliveries that do not exist (unique on event + webhook) due now,
    /// makes those that exist and are dead or waiting for a retry due now, and leaves the others alone
    /// (succeeded, or queued: in flight). With a `step`, the deliveries created or made due are counted
    /// in that recovery and its cursor advances, unless the step was taken already.
    async fn ready_deliveries(
        &self,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
        step: Option<&RecoveryStep>,
    ) -> StoreResult<Readied>;
}

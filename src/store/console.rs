//! What the web console (`crate::console`) keeps and reads beyond the API's records: its sessions, and
//! a few bounded aggregate reads for the overview (the [`ConsoleStore`] role).
//! Every aggregate covers a window that starts at a given time and reads it through an index on
//! `(organization_id, id)`: delivery ids are UUIDv7, so "created since T" is
//! "id at or above the first UUIDv7 of T" ([`first_id_at`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DeliveryStatus, StoreResult};

/// A signed-in console session as stored (the token itself never is).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsoleSession {
    /// SHA-256 of the cookie's token.
    pub token_hash: Vec<u8>,
    pub organization_id: Uuid,
    /// The user behind a JWT sign-in.
    pub user_id: Option<Uuid>,
    /// The SHA-256 of the API key of a key sign-in (as `api_keys.key_hash`).
    pub api_key_hash: Option<Vec<u8>>,
    /// The token every form of this session carries.
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// The absolute end of the session.
    pub expires_at: DateTime<Utc>,
}

/// How many deliveries created in one time bucket are in one status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCount {
    /// Start of the bucket, in Unix seconds.
    pub bucket: i64,
    pub status: DeliveryStatus,
    pub count: u64,
}

/// The smallest UUIDv7 of the millisecond `at`: every id made at or after `at` is at least this.
pub fn first_id_at(at: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or_default();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

#[async_trait]
pub trait ConsoleStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session, and forgets every session that ended before `session.created_at`.
    async fn create_console_session(&self, session: &ConsoleSession) -> StoreResult<()>;
    async fn find_console_session(&self, token_hash: &[u8]) -> StoreResult<Option<ConsoleSession>>;
    /// Records that the session was used at `at`.
    async fn touch_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<()>;
    async fn delete_console_session(&self, token_hash: &[u8]) -> StoreResult<()>;

    /// The organization's deliveries created since `since`, counted by bucket of `bucket_seconds`
    /// (of their creation time) and current status.
    async fn delivery_counts(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        bucket_seconds: i64,
    ) -> StoreResult<Vec<StatusCount>>;
    /// Durations (ms) of the attempts of the organization's deliveries created since `since`, at most
    /// `limit` of them (the newest deliveries' first).
    async fn attempt_durations(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<i64>>;
    /// The organization's dead deliveries (the dead-letter queue), whenever they died.
    async fn dead_delivery_count(&self, organization_id: Uuid) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_of_a_millisecond_sorts_before_every_id_made_then_or_later() {
        let now = crate::domain::now();
        let id = Uuid::now_v7();
        assert!(first_id_at(now) <= id, "{} > {id}", first_id_at(now));
        assert!(first_id_at(now + chrono::Duration::seconds(1)) > id);
        assert_eq!(first_id_at(now).get_version_num(), 7);
    }
}

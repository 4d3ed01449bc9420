//! Persistence. [`Store`] is everything Herald keeps, with a storage-only error, made of one role trait
//! per aggregate: [`AccountStore`], [`WebhookStore`], [`EventStore`], [`DeliveryStore`], [`RecoveryStore`],
//! [`StatsStore`] (endpoint statistics), [`RetentionStore`] (the retention job's bounded deletes) and
//! [`ConsoleStore`] (the web console's sessions and figures). A
//! [`DynStore`] has all their methods without an import; a holder of one role or of a concrete store
//! brings the traits into scope with `use crate::store::prelude::*`. The one SQL implementation
//! ([`sql::SqlStore`]) runs on SQLite ([`sqlite`]) and PostgreSQL ([`postgres`]), each with its own
//! migrations folder. [`connect`]
//! picks the backend once, from the URL scheme, and migrates (`serve`, `herald-worker`, `migrate`,
//! `bootstrap`); [`connect_with`]`(.., Schema::RequireCurrent)` only checks that the schema is current
//! (the read-only commands).

mod console;
mod model;
pub(crate) mod postgres;
mod recovery;
mod retention;
mod sql;
pub(crate) mod sqlite;
mod stats;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use console::*;
pub use model::*;
pub use recovery::*;
pub use retention::*;
pub use stats::*;

use crate::config::{DatabaseKind, Settings};

/// A shared handle on the store.
pub type DynStore = Arc<dyn Store>;

pub mod prelude {
    //! The store traits, for modules that call store methods on a concrete store or on one role:
    //! `use crate::store::prelude::*`. A [`DynStore`](super::DynStore) needs no import: a trait object
    //! has the methods of its supertraits.
    pub use super::{
        AccountStore, ConsoleStore, DeliveryStore, EventStore, RecoveryStore, RetentionStore, StatsStore,
        Store, WebhookStore,
    };
}

/// What can go wrong in storage, without the details of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write; holds the constraint (index) name.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database cannot be reached right now (connection refused or lost, pool exhausted): retrying
    /// later may succeed, unlike every other error.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a value it cannot hold (PostgreSQL's data exceptions, SQLSTATE class 22:
    /// a NUL in text, a time out of range, ...; a value sqlx cannot encode for the database): the
    /// request is at fault and the same write will always fail. Holds the database's message.
    #[error("value refused by the database: {0}")]
    Invalid(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A store error shared by every caller waiting on one cache load (moka hands each an `Arc`): the sole
/// holder gets it back as it was; otherwise `Other` keeps its message chain.
impl From<Arc<StoreError>> for StoreError {
    fn from(shared: Arc<StoreError>) -> Self {
        Arc::try_unwrap(shared).unwrap_or_else(|shared| match &*shared {
            StoreError::NotFound => StoreError::NotFound,
            StoreError::Conflict(what) => StoreError::Conflict(what.clone()),
            StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
            StoreError::Invalid(message) => StoreError::Invalid(message.clone()),
            StoreError::Other(source) => StoreError::Other(anyhow::anyhow!("{source:#}")),
        })
    }
}

/// Connects to the database the settings name, creating the SQLite file if needed, and runs migrations.
pub async fn connect(settings: &Settings) -> anyhow::Result<DynStore> {
    connect_with(settings, Schema::Migrate).await
}

/// What connecting does about the database schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply the migrations this build embeds (creating the SQLite file if needed).
    Migrate,
    /// Change nothing: fail, saying which version is needed, unless every embedded migration was
    /// applied (a missing SQLite file is an error, not created).
    RequireCurrent,
}

/// Connects to the database the settings name; migrates or checks the schema as `schema` says.
pub async fn connect_with(settings: &Settings, schema: Schema) -> anyhow::Result<DynStore> {
    let url = settings.database.url.expose();
    let store: DynStore = match settings.database_kind()? {
        DatabaseKind::Sqlite => Arc::new(sqlite::connect(url, &settings.database, schema).await?),
        DatabaseKind::Postgres => Arc::new(postgres::connect(url, &settings.database, schema).await?),
    };
    Ok(store)
}

/// Fails unless every migration of `migrator` is among `applied` (the versions `_sqlx_migrations`
/// records as successful), naming the version the database is at and the one this build needs.
fn require_current(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> anyhow::Result<()> {
    let needed = migrator.iter().map(|migration| migration.version).max().unwrap_or_default();
    if migrator.iter().all(|migration| applied.contains(&migration.version)) {
        return Ok(());
    }
    let current = applied.iter().max().copied().unwrap_or_default();
    anyhow::bail!(
        "the database schema is at version {current} but this Herald needs version {needed}: run `herald migrate` \
         (`herald serve` and `herald-worker` migrate at start-up too)"
    )
}

/// Everything Herald stores: the four role traits and what concerns the database as a whole. The app
/// state, the workers and the CLI hold a [`DynStore`]; a component that needs one role may hold that role
/// alone (e.g. `Arc<dyn DeliveryStore>`, by upcasting a [`DynStore`]). All times are passed in by the
/// caller, so the store has no clock.
#[async_trait]
pub trait Store:
    AccountStore
    + WebhookStore
    + EventStore
    + DeliveryStore
    + RecoveryStore
    + RetentionStore
    + StatsStore
    + ConsoleStore
{
    /// Answers when the database is reachable (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// How many write transactions can usefully run at once: 1 for SQLite (one writer), more for
    /// PostgreSQL. Stages that could write in parallel size themselves by it.
    fn write_parallelism(&self) -> usize;

    /// The connection pools' state right now (metrics); no database round trip.
    fn pool_stats(&self) -> PoolStats;
}

/// Connections of the store's pools (both of SQLite's: readers and the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    pub idle: u32,
    pub in_use: u32,
    /// The configured size.
    pub max: u32,
}

impl PoolStats {
    /// These figures with one more pool's added: `size` connections open, `idle` of them idle (as the
    /// pool reports it: read without a lock, so while connections come and go or the pool closes it can
    /// exceed the size or wrap, and is clamped), `max` configured.
    pub fn plus_pool(self, size: u32, idle: usize, max: u32) -> Self {
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        Self {
            idle: self.idle.saturating_add(idle),
            in_use: self.in_use.saturating_add(size - idle),
            max: self.max.saturating_add(max),
        }
    }
}

/// Organizations, users and API keys: used by bootstrap (`herald serve`, the CLI), authentication (key
/// lookup and the batched usage counts) and the user and key endpoints.
#[async_trait]
pub trait AccountStore: Send + Sync + std::fmt::Debug + 'static {
    // --- organizations and users ---

    /// Creates an organization with its first admin and that admin's API key. With `only_if_empty`,
    /// does nothing and returns `false` when any organization exists (first start of `herald serve`).
    /// An organization of the same name is a `Conflict`.
    async fn bootstrap(&self, bootstrap: &Bootstrap, only_if_empty: bool) -> StoreResult<bool>;
    async fn get_organization(&self, id: Uuid) -> StoreResult<Option<Organization>>;
    /// The organizations with this name (one, since bootstrap refuses duplicates; older data may hold more).
    async fn organizations_named(&self, name: &str) -> StoreResult<Vec<Organization>>;
    /// The organization's user with this (lowercase) email.
    async fn find_user_by_email(&self, organization_id: Uuid, email: &str) -> StoreResult<Option<User>>;
    async fn set_organization_active(&self, id: Uuid, active: bool) -> StoreResult<()>;
    /// Creates a user and, in the same transaction, the `user.added` event announcing it (none when the
    /// catalog leaves `user.added` out).
    async fn create_user(&self, user: &NewUser, announcement: Option<&NewEvent>) -> StoreResult<User>;
    async fn get_user(&self, id: Uuid) -> StoreResult<Option<User>>;
    /// A page of the organization's users, oldest first.
    async fn list_users(&self, organization_id: Uuid, page: Page) -> StoreResult<Vec<User>>;
    /// How many users the organization has (cheap: one organization's rows).
    async fn count_users(&self, organization_id: Uuid) -> StoreResult<u64>;
    /// Changes a user; `None` if there is none. A change that would leave its organization without an
    /// active admin changes nothing and is a `Conflict("last_admin")` (the organization's row is locked
    /// meanwhile, so two concurrent demotions cannot both pass).
    async fn update_user(&self, id: Uuid, changes: &UserChanges) -> StoreResult<Option<User>>;

    // --- API keys ---

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKey>;
    /// The key with this SHA-256 hash, with what authentication needs of its user and organization.
    async fn find_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<KeyOwner>>;
    async fn get_api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>>;
    /// Keys not revoked, newest first.
    async fn list_api_keys(&self, query: &ApiKeyQuery) -> StoreResult<Vec<ApiKey>>;
    /// How many keys the query selects on all its pages (its page is ignored).
    async fn count_api_keys(&self, query: &ApiKeyQuery) -> StoreResult<u64>;
    /// Revokes a key; `false` if it was revoked already.
    async fn revoke_api_key(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Adds batched usage counts (the request path never writes).
    async fn record_key_usage(&self, usage: &[KeyUsage]) -> StoreResult<()>;
}

/// Webhook subscriptions: used by the webhook endpoints, the fan-out (active webhooks) and the delivery
/// workers' target cache.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug + 'static {
    async fn create_webhook(&self, webhook: &NewWebhook) -> StoreResult<Webhook>;
    async fn get_webhook(&self, id: Uuid) -> StoreResult<Option<Webhook>>;
    /// A page of the organization's webhooks, oldest first.
    async fn list_webhooks(&self, organization_id: Uuid, page: Page) -> StoreResult<Vec<Webhook>>;
    /// How many webhooks the organization has (cheap: one organization's rows).
    async fn count_webhooks(&self, organization_id: Uuid) -> StoreResult<u64>;
    /// The organization's active webhooks (fan-out).
    async fn active_webhooks(&self, organization_id: Uuid) -> StoreResult<Vec<Webhook>>;
    async fn update_webhook(&self, id: Uuid, changes: &WebhookChanges) -> StoreResult<Option<Webhook>>;
    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        rotation: &SecretRotation,
    ) -> StoreResult<Option<Webhook>>;
    /// Deletes a webhook and its deliveries; `false` if there was none.
    async fn delete_webhook(&self, id: Uuid) -> StoreResult<bool>;
}

/// Events and the outbox: used by ingestion (group commit with idempotency), the event endpoints, the
/// outbox relay and the published-marker, and the janitor (idempotency keys).
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes a batch of events in one transaction (group commit). An event whose idempotency key was
    /// used in its organization since `idempotency_since` is not written: its outcome names the first
    /// event instead. Outcomes are in the order of `events`.
    async fn insert_events(
        &self,
        events: &[NewEvent],
        idempotency_since: DateTime<Utc>,
    ) -> StoreResult<Vec<IngestOutcome>>;
    async fn get_event(&self, id: Uuid) -> StoreResult<Option<Event>>;
    /// An organization's events, newest first.
    async fn list_events(&self, query: &EventQuery) -> StoreResult<Vec<Event>>;
    /// The outbox relay's next events, oldest first: up to `claim.limit` not yet published, created at
    /// or before `claim.created_before`, and unclaimed (no claim, or one that ended by `claim.now`).
    /// Each is claimed by `claim.by` until `claim.until`: relays skip it until then (or until it is
    /// released), so that one process publishes it again, not every process running a relay.
    async fn claim_unpublished_events(&self, claim: &RelayClaim) -> StoreResult<Vec<Event>>;
    /// Ends the claims of relay `by` on `ids` (its publish failed: any relay may take them again).
    async fn release_relay_claims(&self, by: Uuid, ids: &[Uuid]) -> StoreResult<()>;
    async fn mark_events_published(&self, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<()>;
    /// How many events are unpublished, and when the oldest of them was created (metrics; cheap: the
    /// partial index on unpublished events).
    async fn outbox_backlog(&self) -> StoreResult<(u64, Option<DateTime<Utc>>)>;
    /// Forgets idempotency keys of events created before `before`; returns how many.
    async fn expire_idempotency_keys(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

/// Deliveries and their attempts: used by the fan-out (creating deliveries), the scheduler (claiming,
/// releasing and deferring due deliveries), the delivery workers (recording outcomes) and the delivery
/// and dead-letter endpoints (listing, redrive, replay).
#[async_trait]
pub trait DeliveryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts deliveries as `queued`; rows that exist already (same event and webhook) are skipped.
    /// Returns the ids inserted.
    async fn create_deliveries(&self, deliveries: &[NewDelivery]) -> StoreResult<Vec<Uuid>>;
    /// Deliveries of these events still queued for their first attempt (a fan-out redone after a crash).
    async fn unstarted_deliveries(&self, event_ids: &[Uuid]) -> StoreResult<Vec<Delivery>>;
    /// Takes up to `limit` deliveries that are due (`pending` whose time has come, or `queued` past
    /// their lease), marks them `queued` until `lease_until` (the claim), and returns them with their
    /// event's payload.
    async fn claim_due_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>>;
    /// Extends a claim whose tasks the broker confirmed: those of `ids` still in it (`queued` until
    /// exactly `claimed_until`) are leased until `lease_until`. A delivery whose outcome was recorded
    /// meanwhile, or that another scheduler claimed since, is left alone. Returns how many were extended.
    async fn extend_claims(
        &self,
        ids: &[Uuid],
        claimed_until: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Makes claimed deliveries due again at once (their publication failed): those of `ids` still in
    /// the claim (`queued` until exactly `claimed_until`).
    async fn release_deliveries(
        &self,
        ids: &[Uuid],
        claimed_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Takes queued deliveries back from the queue, each due at its time, without counting an attempt
    /// (their endpoint is saturated).
    async fn defer_deliveries(
        &self,
        deferrals: &[(Uuid, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Makes every `queued` delivery due at once (embedded mode, at start-up: the in-memory queue is gone).
    async fn requeue_all_queued(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Records attempts and their consequences in one transaction: each dead delivery lengthens its
    /// webhook's run of dead deliveries, and the webhook is disabled when `rules` say so; a success
    /// ends the run (the webhook recovered); the statistics' rollups and health rows are upserted (one
    /// row per webhook and minute); the operational events `rules` announce are written. Returns the
    /// webhooks disabled and the events announced.
    async fn record_outcomes(
        &self,
        outcomes: &[AttemptOutcome],
        rules: &dyn OutcomeRules,
    ) -> StoreResult<Recorded>;
    async fn get_delivery(&self, id: Uuid) -> StoreResult<Option<Delivery>>;
    async fn list_attempts(&self, delivery_id: Uuid) -> StoreResult<Vec<Attempt>>;
    /// An organization's deliveries (of one webhook, one event, ... as the query says), newest first.
    async fn list_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<Delivery>>;
    /// Makes one delivery due now for another attempt. `None` when it is queued already.
    async fn redrive_delivery(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<Option<Delivery>>;
    /// Dead deliveries, most recently dead first, optionally of one organization or webhook (the DLQ).
    async fn list_dead_deliveries(
        &self,
        organization_id: Option<Uuid>,
        webhook_id: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;
    /// Makes due now every delivery the filter selects; returns how many.
    async fn replay_deliveries(&self, filter: &ReplayFilter, now: DateTime<Utc>) -> StoreResult<u64>;
    /// How many deliveries [`DeliveryStore::replay_deliveries`] would make due with this filter.
    async fn count_replayable(&self, filter: &ReplayFilter) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::PoolStats;

    #[test]
    fn pool_figures_add_up_and_an_idle_count_read_mid_change_is_clamped() {
        let stats = PoolStats::default().plus_pool(4, 1, 8).plus_pool(1, 0, 1);
        assert_eq!(stats, PoolStats { idle: 1, in_use: 4, max: 9 });
        // An idle count read while the pool changes (here wrapped) used to overflow the sum.
        let racy = stats.plus_pool(2, usize::MAX, 2).plus_pool(2, 5, 2);
        assert_eq!(racy, PoolStats { idle: 5, in_use: 4, max: 13 });
    }
}

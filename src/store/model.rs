//! The records the store reads and writes. Rows decode into these directly (`sqlx::FromRow`) on both
//! databases, so column names here are the schema's.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{KeyPurpose, Role};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// Lowercased by the caller.
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A new organization with its first admin and that admin's key.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub organization: Organization,
    pub admin: NewUser,
    pub key: NewApiKey,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub prefix: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub purpose: KeyPurpose,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub total_requests: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    /// SHA-256 of the plaintext key.
    pub key_hash: Vec<u8>,
    pub prefix: String,
    pub name: String,
    pub purpose: KeyPurpose,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A key with what authentication needs to know of its user and organization.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyOwner {
    #[sqlx(flatten)]
    pub key: ApiKey,
    #[sqlx(try_from = "String")]
    pub user_role: Role,
    pub user_is_active: bool,
    pub organization_is_active: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeyQuery {
    pub organization_id: Uuid,
    /// `None`: every user of the organization.
    pub user_id: Option<Uuid>,
    /// Bounds on `last_used_at` (inclusive); a key never used matches no bound.
    pub used_from: Option<DateTime<Utc>>,
    pub used_to: Option<DateTime<Utc>>,
    /// Which page, newest first (default: every key).
    pub page: Page,
}

/// One page of a list: up to `limit` rows after `cursor` (the last id of the previous page) in the
/// list's order. Ids are time-ordered UUIDv7, so comparing ids pages stably while rows are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub cursor: Option<Uuid>,
    pub limit: i64,
}

impl Page {
    /// Every row, from the start.
    pub const ALL: Page = Page { cursor: None, limit: i64::MAX };
}

impl Default for Page {
    fn default() -> Self {
        Self::ALL
    }
}

/// Changes to a user; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub is_active: Option<bool>,
}

/// Requests counted in memory for one key since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: Uuid,
    pub requests: i64,
    pub last_used_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Webhook {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub url: String,
    /// `*` or sorted comma-separated types; see [`crate::domain::EventFilter::from_stored`].
    pub events: String,
    pub secret_key_id: String,
    pub secret_ciphertext: Vec<u8>,
    pub previous_secret_key_id: Option<String>,
    pub previous_secret_ciphertext: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub description: Option<String>,
    pub disabled_reason: Option<String>,
    pub consecutive_dead: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub url: String,
    pub events: String,
    pub secret: crate::crypto::Sealed,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub events: Option<String>,
    /// `Some(true)` also clears `disabled_reason` and the dead-delivery run.
    pub is_active: Option<bool>,
    /// Set by Herald when it disables a webhook itself; with `is_active: Some(false)` from an admin.
    pub disabled_reason: Option<String>,
    pub description: Option<Option<String>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct SecretRotation {
    pub secret: crate::crypto::Sealed,
    pub previous: crate::crypto::Sealed,
    pub previous_expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Event {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    /// The exact JSON body endpoints receive.
    pub payload: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    /// Fan-out delivers this event to this webhook only (webhook.test); None: every subscriber.
    pub only_webhook: Option<Uuid>,
}

/// What one pass of the outbox relay claims ([`super::EventStore::claim_unpublished_events`]).
#[derive(Debug, Clone, Copy)]
pub struct RelayClaim {
    /// The claiming process (a random id per outbox).
    pub by: Uuid,
    pub created_before: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub idempotency_key: Option<String>,
    /// With an idempotency key: what identifies the request (a hash of its event type and data), so a
    /// repeat can be told from a reuse of the key for something else.
    pub request_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Fan-out delivers this event to this webhook only (webhook.test); None: every subscriber.
    pub only_webhook: Option<Uuid>,
}

/// What became of one event of an ingested batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The event written, or the earlier event with the same idempotency key.
    pub id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// `true` when this is an earlier event and nothing was written.
    pub duplicate: bool,
    /// `true` (with `duplicate`) when the earlier event with this idempotency key came from another
    /// request (its `request_hash` differs): the key was reused for something else.
    pub key_reused: bool,
}

#[derive(Debug, Clone)]
pub struct EventQuery {
    pub organization_id: Uuid,
    pub event_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only events older than this one (ids are time-ordered UUIDv7).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// Handed to the queue; a worker will attempt it.
    Queued,
    Succeeded,
    /// Every attempt failed (or the endpoint answered 410); sits in the dead-letter queue.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Dead => "dead",
        }
    }
}

impl TryFrom<String> for DeliveryStatus {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "pending" => Ok(Self::Pending),
            "queued" => Ok(Self::Queued),
            "succeeded" => Ok(Self::Succeeded),
            "dead" => Ok(Self::Dead),
            other => Err(format!("unknown delivery status '{other}'")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    pub organization_id: Uuid,
    #[sqlx(try_from = "String")]
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    pub organization_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// When the sweeper hands it over again if no worker has finished it.
    pub lease_until: DateTime<Utc>,
}

/// A claimed delivery with what a worker needs to attempt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub webhook_id: Uuid,
    pub organization_id: Uuid,
    /// Attempts made so far; the next one is `attempts + 1`.
    pub attempts: i64,
    pub event_type: String,
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempt {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub attempt_number: i64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

impl Attempt {
    /// When the attempt ended (`started_at + duration_ms`): the time of what follows from it (the
    /// delivery's `updated_at` and `completed_at`, a webhook disabled by it), while the attempt row keeps
    /// its start.
    pub fn ended_at(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::milliseconds(self.duration_ms)
    }
}

/// One finished attempt and what follows from it.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    pub webhook_id: Uuid,
    /// The delivery's organization, event and event type: what an operational event about it needs.
    pub organization_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    /// What the attempt came to, for the statistics.
    pub class: super::AttemptClass,
    pub next: NextStep,
    /// The delivery is not stored yet (its first attempt was handed over directly, see
    /// `worker::direct`): it is written with this outcome, created when the attempt started. If it was
    /// stored meanwhile, the outcome moves it on as any other.
    pub creates_delivery: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// No more attempts (the schedule ran out, 410 Gone, or Herald could not try).
    Dead,
}

/// What the workers decide for the store while it records outcomes, inside the recording transaction:
/// whether a dead delivery disables its webhook, and which operational event announces what happened.
/// The workers own these rules (`worker::DisableRule`, `worker::operational`).
pub trait OutcomeRules: Send + Sync {
    /// Whether (and why) the webhook is to be disabled after this dead delivery, given its run of dead
    /// deliveries including this one.
    fn disable(&self, outcome: &AttemptOutcome, consecutive_dead: u32) -> Option<String>;
    /// The event announcing what happened, if one is to be emitted; committed with the outcome.
    fn announce(&self, happening: &Happening<'_>) -> Option<NewEvent>;
}

/// Something recording outcomes brought about, caused by `outcome`.
#[derive(Debug, Clone, Copy)]
pub enum Happening<'a> {
    /// The delivery is dead.
    DeliveryDead { outcome: &'a AttemptOutcome },
    /// The outcome's webhook was disabled, for this reason.
    WebhookDisabled { outcome: &'a AttemptOutcome, reason: &'a str },
    /// The outcome's webhook, whose deliveries had died, delivered successfully again.
    WebhookRecovered { outcome: &'a AttemptOutcome },
}

impl Happening<'_> {
    pub fn outcome(&self) -> &AttemptOutcome {
        match self {
            Happening::DeliveryDead { outcome }
            | Happening::WebhookDisabled { outcome, .. }
            | Happening::WebhookRecovered { outcome } => outcome,
        }
    }
}

/// What [`DeliveryStore::record_outcomes`](super::DeliveryStore::record_outcomes) did beyond the attempts.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Webhooks disabled as a result.
    pub disabled: Vec<DisabledWebhook>,
    /// Operational events committed with the outcomes, to hand to the outbox.
    pub announced: Vec<NewEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledWebhook {
    pub webhook_id: Uuid,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub organization_id: Uuid,
    pub webhook_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub status: Option<DeliveryStatus>,
    /// Only deliveries of events of this type.
    pub event_type: Option<String>,
    /// Bounds on `created_at` (inclusive).
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Newest first: `cursor` is the last (oldest) id of the previous page.
    pub page: Page,
}

/// Which deliveries a bulk replay makes due again.
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    pub organization_id: Option<Uuid>,
    pub webhook_id: Option<Uuid>,
    /// Bounds on the delivery's creation time.
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `Dead`, or `Pending` for deliveries that failed and wait for a retry.
    pub status: DeliveryStatus,
}

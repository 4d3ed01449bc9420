//! Webhooks as the workers need them, cached for `delivery.webhook_cache_ttl` in [`moka`] caches bounded
//! to [`CACHE_CAPACITY`] entries each (so a change made through the API is seen within that bound; a TTL
//! of zero caches nothing): each organization's active webhooks for fan-out, and each webhook's URL and
//! decrypted signing secrets for delivery. Concurrent misses for one key share one database read.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use url::Url;
use uuid::Uuid;

use crate::{
    crypto::SecretBox,
    domain::EventFilter,
    store::{DynStore, StoreError, StoreResult, Webhook},
};

/// Entries each cache (webhooks, organizations) holds at most; moka evicts the least used first.
const CACHE_CAPACITY: u64 = 100_000;

/// A webhook ready to be delivered to.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub id: Uuid,
    pub url: Option<Url>,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    /// The current secret, then the previous one while its grace period lasts.
    secrets: Vec<String>,
    previous_expires_at: Option<DateTime<Utc>>,
}

impl DeliveryTarget {
    /// The secrets that sign a delivery made at `now` (the current one first).
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> &[String] {
        let valid = if self.previous_expires_at.is_some_and(|expires| expires > now) { 2 } else { 1 };
        &self.secrets[..valid.min(self.secrets.len())]
    }
}

/// An organization's active webhooks, with their filters.
pub type Subscribers = Arc<Vec<(Uuid, EventFilter)>>;

/// Why a webhook could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WebhookCacheError {
    /// Reading the store failed; retrying later may succeed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A signing secret was sealed with a key that `secrets.keys` does not hold (or holds with other
    /// bytes): no retry can fix that, only the configuration or a new secret.
    #[error(
        "the webhook's signing secret cannot be decrypted with the configured secrets.keys (key id {key_id})"
    )]
    Undecryptable { key_id: String },
}

/// What is cached per webhook id.
#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<DeliveryTarget>),
    /// Deleted, with its deliveries.
    Deleted,
    /// Its secret sealed under this key id cannot be opened.
    Undecryptable(String),
}

#[derive(Debug)]
pub struct WebhookCache {
    store: DynStore,
    secrets: Arc<SecretBox>,
    by_id: Cache<Uuid, Entry>,
    by_organization: Cache<Uuid, Subscribers>,
}

impl WebhookCache {
    pub fn new(store: DynStore, secrets: Arc<SecretBox>, ttl: Duration) -> Self {
        let by_id = Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build();
        let by_organization = Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build();
        Self { store, secrets, by_id, by_organization }
    }

    /// The organization's active webhooks.
    pub async fn subscribers(&self, organization_id: Uuid) -> StoreResult<Subscribers> {
        let load = async {
            let webhooks = self.store.active_webhooks(organization_id).await?;
            Ok::<_, StoreError>(Arc::new(
                webhooks.iter().map(|w| (w.id, EventFilter::from_stored(&w.events))).collect(),
            ))
        };
        Ok(self.by_organization.try_get_with(organization_id, load).await?)
    }

    /// The webhook, or `None` if it was deleted.
    pub async fn target(&self, id: Uuid) -> Result<Option<Arc<DeliveryTarget>>, WebhookCacheError> {
        let load = async {
            Ok::<_, StoreError>(match self.store.get_webhook(id).await? {
                Some(webhook) => self.open(webhook),
                None => Entry::Deleted,
            })
        };
        match self.by_id.try_get_with(id, load).await.map_err(StoreError::from)? {
            Entry::Found(target) => Ok(Some(target)),
            Entry::Deleted => Ok(None),
            Entry::Undecryptable(key_id) => Err(WebhookCacheError::Undecryptable { key_id }),
        }
    }

    /// Forgets a webhook (Herald just disabled it), and its organization's list if given.
    pub async fn forget(&self, webhook_id: Uuid, organization_id: Option<Uuid>) {
        self.by_id.invalidate(&webhook_id).await;
        if let Some(organization_id) = organization_id {
            self.by_organization.invalidate(&organization_id).await;
        }
    }

    /// Decrypts the webhook's secrets (never logged): the current one, and the previous one while its
    /// grace period lasts (once over, it signs nothing, so an old key it was sealed with may be retired).
    fn open(&self, webhook: Webhook) -> Entry {
        let context = webhook.id.as_bytes();
        let mut sealed = vec![(&webhook.secret_key_id, &webhook.secret_ciphertext)];
        let in_grace = webhook.previous_secret_expires_at.is_some_and(|expires| expires > Utc::now());
        if let (Some(key_id), Some(ciphertext), true) =
            (&webhook.previous_secret_key_id, &webhook.previous_secret_ciphertext, in_grace)
        {
            sealed.push((key_id, ciphertext));
        }
        let mut secrets = Vec::with_capacity(sealed.len());
        for (key_id, ciphertext) in sealed {
            match self.secrets.open(key_id, ciphertext, context) {
                Ok(secret) => secrets.push(secret),
                Err(error) => {
                    tracing::warn!(webhook_id = %webhook.id, %key_id, %error, "a webhook secret cannot be decrypted");
                    return Entry::Undecryptable(key_id.clone());
                }
            }
        }
        Entry::Found(Arc::new(DeliveryTarget {
            id: webhook.id,
            url: Url::parse(&webhook.url).ok(),
            is_active: webhook.is_active,
            disabled_reason: webhook.disabled_reason,
            secrets,
            previous_expires_at: webhook.previous_secret_expires_at,
        }))
    }
}

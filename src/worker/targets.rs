//! Webhooks as the workers need them, cached for `delivery.webhook_cache_ttl` (so a change made through
//! the API is seen within that bound): each organization's active webhooks for fan-out, and each
//! webhook's URL and decrypted signing secrets for delivery.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use url::Url;
use uuid::Uuid;

use crate::{
    cache::TtlCache,
    crypto::SecretBox,
    domain::EventFilter,
    store::{DynStore, StoreResult, Webhook},
};

/// A webhook ready to be delivered to.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    pub url: Option<Url>,
    pub is_active: bool,
    pub disabled_reason: Option<String>,
    /// The current secret, then the previous one while its grace period lasts.
    secrets: Vec<String>,
    previous_expires_at: Option<DateTime<Utc>>,
}

impl Target {
    /// The secrets that sign a delivery made at `now` (the current one first).
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> &[String] {
        let valid = if self.previous_expires_at.is_some_and(|expires| expires > now) { 2 } else { 1 };
        &self.secrets[..valid.min(self.secrets.len())]
    }
}

/// An organization's active webhooks, with their filters.
pub type Subscribers = Arc<Vec<(Uuid, EventFilter)>>;

#[derive(Debug)]
pub struct Targets {
    store: DynStore,
    secrets: Arc<SecretBox>,
    by_id: TtlCache<Uuid, Option<Arc<Target>>>,
    by_organization: TtlCache<Uuid, Subscribers>,
}

impl Targets {
    pub fn new(store: DynStore, secrets: Arc<SecretBox>, ttl: std::time::Duration) -> Self {
        Self { store, secrets, by_id: TtlCache::new(ttl), by_organization: TtlCache::new(ttl) }
    }

    /// The organization's active webhooks.
    pub async fn subscribers(&self, organization_id: Uuid) -> StoreResult<Subscribers> {
        if let Some(found) = self.by_organization.get(&organization_id) {
            return Ok(found);
        }
        let webhooks = self.store.active_webhooks(organization_id).await?;
        let subscribers: Subscribers =
            Arc::new(webhooks.iter().map(|w| (w.id, EventFilter::from_stored(&w.events))).collect());
        self.by_organization.insert(organization_id, subscribers.clone());
        Ok(subscribers)
    }

    /// The webhook, or `None` if it was deleted.
    pub async fn target(&self, id: Uuid) -> anyhow::Result<Option<Arc<Target>>> {
        if let Some(found) = self.by_id.get(&id) {
            return Ok(found);
        }
        let target = match self.store.get_webhook(id).await? {
            Some(webhook) => Some(Arc::new(self.open(webhook)?)),
            None => None,
        };
        self.by_id.insert(id, target.clone());
        Ok(target)
    }

    /// Forgets a webhook (Herald just disabled it).
    pub fn forget(&self, webhook_id: Uuid, organization_id: Option<Uuid>) {
        self.by_id.remove(&webhook_id);
        if let Some(organization_id) = organization_id {
            self.by_organization.remove(&organization_id);
        }
    }

    fn open(&self, webhook: Webhook) -> anyhow::Result<Target> {
        let context = webhook.id.as_bytes();
        let mut secrets =
            vec![self.secrets.open(&webhook.secret_key_id, &webhook.secret_ciphertext, context)?];
        if let (Some(key_id), Some(ciphertext)) =
            (&webhook.previous_secret_key_id, &webhook.previous_secret_ciphertext)
        {
            secrets.push(self.secrets.open(key_id, ciphertext, context)?);
        }
        Ok(Target {
            id: webhook.id,
            url: Url::parse(&webhook.url).ok(),
            is_active: webhook.is_active,
            disabled_reason: webhook.disabled_reason,
            secrets,
            previous_expires_at: webhook.previous_secret_expires_at,
        })
    }
}

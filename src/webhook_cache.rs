//! Webhooks as the workers need them, cached for `delivery.webhook_cache_ttl` in [`moka`] caches bounded
//! to `CACHE_CAPACITY` entries each (so a change made through the API is seen within that bound; a TTL
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
    store::{StoreError, StoreResult, Webhook, WebhookStore},
};

/// Entries each cache (webhooks, organizations) holds at most; moka evicts the least used first.
const CACHE_CAPACITY: u64 = 100_000;

/// A webhook ready to be delivered to.
#[derive(Debug, Clone)]
pub struct DeliveryTarget {
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
    store: Arc<dyn WebhookStore>,
    secrets: Arc<SecretBox>,
    by_id: Cache<Uuid, Entry>,
    by_organization: Cache<Uuid, Subscribers>,
}

impl WebhookCache {
    pub fn new(store: Arc<dyn WebhookStore>, secrets: Arc<SecretBox>, ttl: Duration) -> Self {
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
            url: Url::parse(&webhook.url).ok(),
            is_active: webhook.is_active,
            disabled_reason: webhook.disabled_reason,
            secrets,
            previous_expires_at: webhook.previous_secret_expires_at,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Secret, Settings, parse_secret_keys},
        crypto::Sealed,
        store::{NewWebhook, SecretRotation, WebhookChanges},
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn WebhookStore>,
        secrets: Arc<SecretBox>,
        organization_id: Uuid,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let mut settings = Settings::defaults();
        settings.database.url = Secret::new(format!("sqlite://{}", dir.path().join("herald.db").display()));
        let store = crate::store::connect(&settings).await.expect("store");
        let (bootstrap, _) = crate::app::bootstrap(&store, "org", "admin@test.example", false)
            .await
            .expect("bootstrap")
            .expect("new");
        let keys = parse_secret_keys(&SecretBox::generate_key_text()).expect("key");
        let secrets = Arc::new(SecretBox::from_keys(&keys));
        Fixture { _dir: dir, store, secrets, organization_id: bootstrap.organization.id }
    }

    impl Fixture {
        fn cache(&self, ttl: Duration) -> WebhookCache {
            WebhookCache::new(self.store.clone(), self.secrets.clone(), ttl)
        }

        /// Stores a webhook whose secret is `seal(id)`.
        async fn webhook(&self, seal: impl FnOnce(Uuid) -> Sealed) -> Uuid {
            let id = Uuid::now_v7();
            let webhook = NewWebhook {
                id,
                organization_id: self.organization_id,
                url: "https://example.com/hook".into(),
                events: "*".into(),
                secret: seal(id),
                description: None,
                created_at: crate::domain::now(),
            };
            self.store.create_webhook(&webhook).await.expect("stored");
            id
        }

        async fn sealed_webhook(&self) -> Uuid {
            self.webhook(|id| self.secrets.seal("whsec_current", id.as_bytes())).await
        }

        async fn set_url(&self, id: Uuid, url: &str) {
            let changes = WebhookChanges {
                url: Some(url.into()),
                updated_at: crate::domain::now(),
                ..WebhookChanges::default()
            };
            self.store.update_webhook(id, &changes).await.expect("update").expect("exists");
        }
    }

    async fn url_of(cache: &WebhookCache, id: Uuid) -> String {
        let target = cache.target(id).await.expect("loads").expect("exists");
        target.url.as_ref().map(Url::to_string).unwrap_or_default()
    }

    #[tokio::test]
    async fn webhooks_are_cached_for_the_ttl_and_forgotten_at_once() {
        let fixture = fixture().await;
        let cache = fixture.cache(Duration::from_millis(300));
        let id = fixture.sealed_webhook().await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/hook");
        assert_eq!(cache.subscribers(fixture.organization_id).await.expect("subscribers").len(), 1);
        fixture.set_url(id, "https://example.com/v2").await;
        fixture.sealed_webhook().await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/hook", "cached within the TTL");
        assert_eq!(cache.subscribers(fixture.organization_id).await.expect("subscribers").len(), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/v2", "read again once expired");
        fixture.set_url(id, "https://example.com/v3").await;
        cache.forget(id, Some(fixture.organization_id)).await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/v3", "forgotten at once");
        assert_eq!(cache.subscribers(fixture.organization_id).await.expect("subscribers").len(), 2);
        let target = cache.target(id).await.expect("loads").expect("exists");
        assert_eq!(target.signing_secrets(Utc::now()), ["whsec_current"]);
        assert!(cache.target(Uuid::now_v7()).await.expect("loads").is_none(), "deleted or never was");
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let fixture = fixture().await;
        let cache = fixture.cache(Duration::ZERO);
        let id = fixture.sealed_webhook().await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/hook");
        fixture.set_url(id, "https://example.com/v2").await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/v2");
    }

    #[tokio::test]
    async fn a_secret_the_configured_keys_cannot_open_is_undecryptable() {
        let fixture = fixture().await;
        let cache = fixture.cache(Duration::from_secs(60));
        let unknown_key = fixture
            .webhook(|id| Sealed {
                key_id: "retired".into(),
                ..fixture.secrets.seal("whsec_x", id.as_bytes())
            })
            .await;
        // Sealed for another row: the configured key does not open it here.
        let wrong_key = fixture.webhook(|_| fixture.secrets.seal("whsec_x", Uuid::now_v7().as_bytes())).await;
        let configured = fixture.secrets.seal("x", b"").key_id;
        for (id, key_id) in [(unknown_key, "retired"), (wrong_key, configured.as_str())] {
            let error = cache.target(id).await.expect_err("undecryptable");
            assert!(
                matches!(&error, WebhookCacheError::Undecryptable { key_id: found } if found == key_id),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("cannot be decrypted") && message.contains(key_id), "{message}");
            assert!(!message.contains("whsec"), "{message}");
        }

        // A previous secret whose grace period is over signs nothing: its key may be gone.
        let rotated = fixture.sealed_webhook().await;
        let rotation = SecretRotation {
            secret: fixture.secrets.seal("whsec_new", rotated.as_bytes()),
            previous: Sealed { key_id: "retired".into(), ciphertext: vec![0; 40] },
            previous_expires_at: Utc::now() - chrono::Duration::seconds(1),
            updated_at: crate::domain::now(),
        };
        fixture.store.rotate_webhook_secret(rotated, &rotation).await.expect("rotate").expect("exists");
        let target = cache.target(rotated).await.expect("opens").expect("exists");
        assert_eq!(target.signing_secrets(Utc::now()), ["whsec_new"]);
    }
}

//! Webhooks as the workers need them, in [`moka`] caches bounded to `CACHE_CAPACITY` entries each: each
//! organization's active webhooks for fan-out, and each webhook's URL and decrypted signing secrets for
//! delivery. Concurrent misses for one key share one database read.
//!
//! A change is seen by the next lookup: the API calls [`WebhookCache::changed`] before it answers (the
//! process's own cache, shared with its in-process workers), and every process hears the other
//! processes' changes from PostgreSQL (`store::postgres::follow`, which calls [`WebhookCache::heard`]).
//! `delivery.webhook_cache_ttl` only bounds what a missed notification can cost (SQLite with RabbitMQ has
//! no notifications: the TTL is all there is). A load that was already reading the database when a change
//! came cannot install what it read: each entry carries the generation at which its load began, and an
//! entry older than its key's last change (or than the last [`WebhookCache::clear`]) is read again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

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

/// A cached value and the generation at which its load began.
#[derive(Debug, Clone)]
struct Stamped<T> {
    loaded_at: u64,
    value: T,
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
    by_id: Cache<Uuid, Stamped<Entry>>,
    by_organization: Cache<Uuid, Stamped<Subscribers>>,
    /// Counts changes and clears; a load notes it before reading the database.
    generation: AtomicU64,
    /// The generation of each webhook's and organization's last change, kept as long as an entry loaded
    /// before it could still be cached (the TTL, plus a minute for a slow load).
    changes: Cache<Uuid, u64>,
    /// The generation of the last [`Self::clear`].
    cleared_at: AtomicU64,
}

impl WebhookCache {
    pub fn new(store: Arc<dyn WebhookStore>, secrets: Arc<SecretBox>, ttl: Duration) -> Self {
        let by_id = Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build();
        let by_organization = Cache::builder().max_capacity(CACHE_CAPACITY).time_to_live(ttl).build();
        let changes = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .time_to_live(ttl.saturating_add(Duration::from_secs(60)))
            .build();
        Self {
            store,
            secrets,
            by_id,
            by_organization,
            generation: AtomicU64::new(0),
            changes,
            cleared_at: AtomicU64::new(0),
        }
    }

    /// A webhook of `organization_id` was created, changed or deleted: the next lookup of either reads
    /// the database. Returns once this process's cache forgot them.
    pub async fn changed(&self, webhook_id: Uuid, organization_id: Uuid) {
        let generation = self.generation.fetch_add(1, SeqCst) + 1;
        self.changes.insert(webhook_id, generation).await;
        self.changes.insert(organization_id, generation).await;
        self.by_id.invalidate(&webhook_id).await;
        self.by_organization.invalidate(&organization_id).await;
    }

    /// Forgets everything (changes may have been missed: the notifications were lost for a while).
    pub fn clear(&self) {
        let generation = self.generation.fetch_add(1, SeqCst) + 1;
        self.cleared_at.store(generation, SeqCst);
        self.by_id.invalidate_all();
        self.by_organization.invalidate_all();
    }

    /// A notification from another process (`"{webhook_id} {organization_id}"`), or `None` after the
    /// notifications were interrupted.
    pub async fn heard(&self, payload: Option<String>) {
        let ids = payload.as_deref().and_then(|text| {
            let (webhook, organization) = text.split_once(' ')?;
            Some((webhook.parse().ok()?, organization.parse().ok()?))
        });
        match (ids, payload) {
            (Some((webhook_id, organization_id)), _) => self.changed(webhook_id, organization_id).await,
            (None, None) => self.clear(),
            (None, Some(text)) => {
                tracing::warn!(payload = %text, "unexpected webhook change notification; clearing the webhook cache");
                self.clear();
            }
        }
    }

    /// `key`'s value in `cache`, loaded by `load` unless a current one is cached.
    async fn lookup<V, F>(
        &self,
        cache: &Cache<Uuid, Stamped<V>>,
        key: Uuid,
        load: impl Fn() -> F,
    ) -> Result<V, Arc<StoreError>>
    where
        V: Clone + Send + Sync + 'static,
        F: Future<Output = StoreResult<V>>,
    {
        loop {
            let stamped = cache
                .try_get_with(key, async {
                    let loaded_at = self.generation.load(SeqCst);
                    Ok::<_, StoreError>(Stamped { loaded_at, value: load().await? })
                })
                .await?;
            let changed_at = self.changes.get(&key).await.unwrap_or(0);
            if stamped.loaded_at >= changed_at && stamped.loaded_at >= self.cleared_at.load(SeqCst) {
                return Ok(stamped.value);
            }
            // Read before a change it must reflect: read again.
            cache.invalidate(&key).await;
        }
    }

    /// The organization's active webhooks.
    pub async fn subscribers(&self, organization_id: Uuid) -> StoreResult<Subscribers> {
        let load = || async move {
            let webhooks = self.store.active_webhooks(organization_id).await?;
            Ok(Arc::new(webhooks.iter().map(|w| (w.id, EventFilter::from_stored(&w.events))).collect()))
        };
        Ok(self.lookup(&self.by_organization, organization_id, load).await?)
    }

    /// The webhook, or `None` if it was deleted.
    pub async fn target(&self, id: Uuid) -> Result<Option<Arc<DeliveryTarget>>, WebhookCacheError> {
        let load = || async move {
            Ok(match self.store.get_webhook(id).await? {
                Some(webhook) => self.open(webhook),
                None => Entry::Deleted,
            })
        };
        match self.lookup(&self.by_id, id, load).await.map_err(StoreError::from)? {
            Entry::Found(target) => Ok(Some(target)),
            Entry::Deleted => Ok(None),
            Entry::Undecryptable(key_id) => Err(WebhookCacheError::Undecryptable { key_id }),
        }
    }

    /// Herald just disabled the webhook: forgets it and its organization's list (read from the store;
    /// if that fails, everything is forgotten).
    pub async fn disabled(&self, webhook_id: Uuid) {
        match self.store.get_webhook(webhook_id).await {
            Ok(Some(webhook)) => self.changed(webhook_id, webhook.organization_id).await,
            Ok(None) => self.by_id.invalidate(&webhook_id).await,
            Err(_) => self.clear(),
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
        config::parse_secret_keys,
        crypto::Sealed,
        store::{NewWebhook, SecretRotation, WebhookChanges},
    };

    struct Fixture {
        _sqlite: crate::test_store::TestStore,
        store: Arc<dyn WebhookStore>,
        secrets: Arc<SecretBox>,
        organization_id: Uuid,
    }

    async fn fixture() -> Fixture {
        let sqlite = crate::test_store::with_organization(|_| {}).await;
        let keys = parse_secret_keys(&SecretBox::generate_key_text()).expect("key");
        let secrets = Arc::new(SecretBox::from_keys(&keys));
        let (store, organization_id) = (sqlite.store.clone(), sqlite.organization_id);
        Fixture { _sqlite: sqlite, store, secrets, organization_id }
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
        cache.changed(id, fixture.organization_id).await;
        assert_eq!(url_of(&cache, id).await, "https://example.com/v3", "forgotten at once");
        assert_eq!(cache.subscribers(fixture.organization_id).await.expect("subscribers").len(), 2);
        let target = cache.target(id).await.expect("loads").expect("exists");
        assert_eq!(target.signing_secrets(Utc::now()), ["whsec_current"]);
        assert!(cache.target(Uuid::now_v7()).await.expect("loads").is_none(), "deleted or never was");
    }

    #[tokio::test]
    async fn a_load_that_read_before_a_change_does_not_stay_cached() {
        let fixture = fixture().await;
        let cache = fixture.cache(Duration::from_secs(600));
        let organization = fixture.organization_id;
        let reads = AtomicU64::new(0);
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let gate = tokio::sync::Mutex::new(Some(gate));
        // The first read sees the database before the change but finishes after it; later reads see it.
        let load = || async {
            if reads.fetch_add(1, SeqCst) == 0 {
                let gate = gate.lock().await.take().expect("first read");
                drop(gate.await);
                return Ok(Arc::new(Vec::new()));
            }
            Ok(Arc::new(vec![(Uuid::nil(), EventFilter::from_stored("*"))]))
        };
        let change = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cache.changed(Uuid::now_v7(), organization).await;
            release.send(()).expect("the read waits");
        };
        let (first, ()) = tokio::join!(cache.lookup(&cache.by_organization, organization, load), change);
        assert_eq!(first.expect("loads").len(), 1, "read again: the first read predates the change");
        let later = cache.lookup(&cache.by_organization, organization, load).await.expect("cached");
        assert_eq!((later.len(), reads.load(SeqCst)), (1, 2), "the fresh read is cached");
        cache.clear();
        cache.lookup(&cache.by_organization, organization, load).await.expect("loads");
        assert_eq!(reads.load(SeqCst), 3, "cleared");
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

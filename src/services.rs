//! The composition root: [`Services`], the one
//! place that builds what the API and the workers share (store, queue, secret box, SSRF policy, webhook
//! cache, the outbox publisher). `herald serve` hands them to [`crate::app::App`] (and, in embedded
//! mode, to the in-process workers); `herald-worker` hands them to [`crate::worker::start`]. On
//! PostgreSQL it also starts the `webhook-listener` stage, which keeps the webhook cache in step with
//! the other processes' changes.

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use crate::{
    config::{DatabaseKind, Mode, Settings},
    crypto::SecretBox,
    net_guard::TargetPolicy,
    outbox::{Outbox, PublishedMarker},
    queue::{DynQueue, embedded::EmbeddedQueue, rabbitmq::RabbitQueue},
    stages::Stages,
    store::{self, DynStore},
    webhook_cache::WebhookCache,
};

/// Cheap handles on everything the API and the workers share. Built once per process by [`Services::connect`].
#[derive(Debug, Clone)]
pub struct Services {
    pub mode: Mode,
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub queue: DynQueue,
    /// Seals and opens webhook signing secrets (`secrets.keys`).
    pub secrets: Arc<SecretBox>,
    /// Which delivery targets are allowed (the SSRF policy).
    pub(crate) target_policy: Arc<TargetPolicy>,
    /// Webhooks as the workers need them (URL, decrypted secrets, subscriptions), cached; the API
    /// invalidates it on every change, and in production a PostgreSQL listener on other processes'.
    pub(crate) webhooks: Arc<WebhookCache>,
    /// The process's one outbox publisher, started by the first component that emits ([`Self::outbox`]).
    outbox: Arc<OnceLock<Outbox>>,
}

impl Services {
    /// Connects the store (running migrations) and the queue the settings name. The queue's background
    /// tasks (the RabbitMQ connection, the embedded queue's published-marker) are stages of `stages`.
    pub async fn connect(settings: Settings, stages: &Stages) -> anyhow::Result<Self> {
        let mode = settings.mode();
        let store = store::connect(&settings).await?;
        let secrets = Arc::new(SecretBox::from_settings(&settings)?);
        let delivery = &settings.delivery;
        let target_policy =
            Arc::new(TargetPolicy::new(delivery.allow_private_targets, delivery.allowed_cidrs.clone()));
        let webhooks =
            Arc::new(WebhookCache::new(store.clone(), secrets.clone(), delivery.webhook_cache_ttl.get()));
        if settings.database_kind()? == DatabaseKind::Postgres {
            // Every process hears the others' webhook changes (and its own, harmlessly twice).
            let url = settings.database.url.expose();
            let listener = store::postgres::listen(url, store::postgres::WEBHOOK_CHANGED).await?;
            let cache = webhooks.clone();
            let heard = move |payload| {
                let cache = cache.clone();
                async move { cache.heard(payload).await }
            };
            stages.spawn_support(
                "webhook-listener",
                store::postgres::follow(listener, stages.drained(), heard),
            );
        }
        let queue: DynQueue = match (mode, &settings.queue.url) {
            (Mode::Production, Some(url)) => {
                Arc::new(RabbitQueue::connect(url.expose(), &settings.queue.prefix, stages).await?)
            }
            _ => {
                let (taken, taken_ids) = mpsc::unbounded_channel();
                let queue = Arc::new(EmbeddedQueue::new(taken));
                // Events fan-out has taken are marked published, then released from the queue's
                // in-flight set (so the relay does not hand them over again meanwhile). Weak: the queue
                // holds the sending side, and the marker must not keep it alive.
                let embedded = Arc::downgrade(&queue);
                PublishedMarker::mark_from(stages, store.clone(), taken_ids, move |ids| {
                    if let Some(queue) = embedded.upgrade() {
                        queue.release(ids);
                    }
                });
                queue
            }
        };
        let outbox = Arc::default();
        Ok(Self {
            mode,
            settings: Arc::new(settings),
            store,
            queue,
            secrets,
            target_policy,
            webhooks,
            outbox,
        })
    }

    /// The process's outbox publisher (the API's events, the operational events the outcome recorder
    /// commits), started on `stages` at the first call with the queue as it is then.
    pub fn outbox(&self, stages: &Stages) -> Outbox {
        self.outbox
            .get_or_init(|| {
                Outbox::start(
                    stages,
                    self.mode,
                    self.store.clone(),
                    self.queue.clone(),
                    &self.settings.events,
                )
            })
            .clone()
    }
}

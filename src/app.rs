//! Assembling Herald from its settings: the store and queue chosen once, the shared state handlers take
//! with `State<AppState>`, and the background tasks of the API process (outbox publisher and relay, key
//! usage flusher), all stopped by one shutdown token and awaited before exit.

use std::sync::Arc;

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Authenticator,
    config::Settings,
    crypto::SecretBox,
    domain::{self, EventCatalog},
    ingest::EventWriter,
    net_guard::TargetPolicy,
    outbox::{Outbox, PublishedMarker},
    queue::{self, DynQueue},
    store::{self, Bootstrap, DynStore, NewApiKey, NewUser, Organization},
};

/// Cheap handles shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub queue: DynQueue,
    pub auth: Arc<Authenticator>,
    pub outbox: Outbox,
    pub events: EventWriter,
    pub catalog: EventCatalog,
    pub secrets: Arc<SecretBox>,
    pub targets: Arc<TargetPolicy>,
}

/// The API process: its state and its background tasks.
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// Connects the store (running migrations) and the queue, and starts the background tasks, which
    /// stop when `shutdown` is cancelled.
    pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let store = store::connect(&settings).await?;
        let queue: DynQueue = match queue::connect(&settings).await? {
            queue::Connected::RabbitMq(queue) => queue,
            queue::Connected::Embedded(queue, taken) => {
                // Events fan-out has taken are marked published, then released from the queue's
                // in-flight set (so the relay does not hand them over again meanwhile). Weak: the marker
                // stops once the queue, which holds the sending side, is gone.
                let embedded = Arc::downgrade(&queue);
                PublishedMarker::mark_from(store.clone(), taken, move |ids| {
                    if let Some(queue) = embedded.upgrade() {
                        queue.release(ids);
                    }
                });
                queue
            }
        };
        let secrets = Arc::new(SecretBox::from_settings(&settings)?);
        let (outbox, outbox_task) = Outbox::start(store.clone(), queue.clone(), &settings, shutdown.clone());
        let events =
            EventWriter::start(store.clone(), outbox.clone(), settings.events.idempotency_window.get());
        let auth = Arc::new(Authenticator::new(&settings, store.clone()));
        let usage_task = {
            let (usage, store, token) = (auth.usage().clone(), store.clone(), shutdown.clone());
            let interval = settings.auth.usage_flush_interval.get();
            tokio::spawn(async move { usage.run(store, interval, token).await })
        };
        let state = AppState {
            catalog: EventCatalog::new(&settings.events.types),
            targets: Arc::new(TargetPolicy::new(
                settings.delivery.allow_private_targets,
                settings.delivery.allowed_cidrs.clone(),
            )),
            settings: Arc::new(settings),
            store,
            queue,
            auth,
            outbox,
            events,
            secrets,
        };
        let mut background = vec![outbox_task, usage_task];
        if !state.queue.confirms_publication() {
            // Embedded mode: this process is also the worker.
            let (store, queue, settings, token) =
                (state.store.clone(), state.queue.clone(), state.settings.clone(), shutdown.clone());
            background.push(tokio::spawn(async move {
                if let Err(error) =
                    crate::worker::run(store, queue, settings, crate::worker::Roles::ALL, token).await
                {
                    tracing::error!(error = format!("{error:#}"), "the in-process workers stopped");
                }
            }));
        }
        Ok(Self { state, shutdown, background })
    }

    /// Serves the API until shutdown, lets in-flight requests finish (up to `server.shutdown_grace`),
    /// then waits for the background tasks' last flush and closes the queue.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let grace = self.state.settings.server.shutdown_grace.get();
        let router = crate::http::router(self.state.clone());
        let server = tokio::spawn(crate::http::serve(listener, router, self.shutdown.clone()));
        self.shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result??,
            Err(_) => tracing::warn!(?grace, "in-flight requests did not finish within the shutdown grace"),
        }
        for task in self.background {
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("a background task did not stop within the shutdown grace");
            }
        }
        self.state.queue.close().await;
        Ok(())
    }
}

/// A new organization with its first admin; the plaintext key is returned once, here.
pub async fn bootstrap(
    store: &DynStore,
    organization_name: &str,
    admin_email: &str,
    only_if_empty: bool,
) -> anyhow::Result<Option<(Bootstrap, domain::ApiKeySecret)>> {
    let now = domain::now();
    let organization = Organization {
        id: uuid::Uuid::now_v7(),
        name: organization_name.to_string(),
        is_active: true,
        created_at: now,
    };
    let admin = NewUser {
        id: uuid::Uuid::now_v7(),
        organization_id: organization.id,
        email: admin_email.trim().to_lowercase(),
        name: None,
        role: domain::Role::Admin,
        created_at: now,
    };
    let secret = domain::ApiKeySecret::generate();
    let key = NewApiKey {
        id: uuid::Uuid::now_v7(),
        organization_id: organization.id,
        user_id: admin.id,
        key_hash: secret.hash(),
        prefix: secret.hint(),
        name: "bootstrap admin key".into(),
        purpose: domain::KeyPurpose::Custom,
        expires_at: None,
        created_at: now,
    };
    let bootstrap = Bootstrap { organization, admin, key };
    if store.bootstrap(&bootstrap, only_if_empty).await? { Ok(Some((bootstrap, secret))) } else { Ok(None) }
}

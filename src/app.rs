//! The API process: the state request handlers share ([`AppState`]), built from the [`Services`], and
//! the API's background tasks (outbox publisher and relay, key usage flusher, the metrics sampler; in
//! embedded mode also the workers), all stopped by one shutdown token and awaited before exit. The admin
//! listener ([`App::serve_admin`]) is stopped by the same token.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Authenticator,
    config::Mode,
    domain::{self, EventCatalog},
    emit::Emitter,
    http::AppState,
    outbox::Outbox,
    readiness::Readiness,
    services::Services,
    store::{Bootstrap, DynStore, NewApiKey, NewUser, Organization},
    telemetry::{metrics, sampler::Sampler},
};

/// The API process: its state and its background tasks.
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    /// What `/metrics` renders (the process-wide recorder).
    pub metrics: PrometheusHandle,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl App {
    /// Starts the background tasks, which stop when `shutdown` is cancelled; in embedded mode they
    /// include the workers.
    pub async fn start(services: Services, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let settings = services.settings.clone();
        let metrics = metrics::install("api");
        let (outbox, outbox_task) = Outbox::start(
            services.mode,
            services.store.clone(),
            services.queue.clone(),
            &settings.events,
            shutdown.clone(),
        );
        let emitter =
            Emitter::start(services.store.clone(), outbox, settings.events.idempotency_window.get());
        let auth = Arc::new(Authenticator::new(&settings, services.store.clone()));
        let usage_task = {
            let (usage, store, token) = (auth.usage().clone(), services.store.clone(), shutdown.clone());
            let interval = settings.auth.usage_flush_interval.get();
            tokio::spawn(async move { usage.run(store, interval, token).await })
        };
        let readiness = Readiness::new(services.store.clone(), services.queue.clone());
        let sampler = Sampler {
            store: services.store.clone(),
            queue: services.queue.clone(),
            readiness: readiness.clone(),
            handle: metrics.clone(),
            outbox: true,
        };
        let mut background = vec![outbox_task, usage_task, sampler.spawn(shutdown.clone())];
        if services.mode == Mode::Embedded {
            // This process is also the worker.
            let (workers, token) = (services.clone(), shutdown.clone());
            background.push(tokio::spawn(async move {
                if let Err(error) = crate::worker::run(workers, crate::worker::Roles::ALL, token).await {
                    tracing::error!(error = format!("{error:#}"), "the in-process workers stopped");
                }
            }));
        }
        let state = AppState {
            catalog: EventCatalog::new(&settings.events.types),
            settings,
            store: services.store,
            queue: services.queue,
            auth,
            emitter,
            secrets: services.secrets,
            target_policy: services.target_policy,
            readiness,
        };
        Ok(Self { state, metrics, shutdown, background })
    }

    /// Serves the admin listener (`/metrics`, `/healthz`, `/readyz`) on `listener` until shutdown.
    pub fn serve_admin(&self, listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
        let (handle, readiness) = (self.metrics.clone(), self.state.readiness.clone());
        tokio::spawn(crate::http::admin::serve_admin(listener, handle, readiness, self.shutdown.clone()))
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

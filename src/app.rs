//! The API process: the state request handlers share ([`AppState`]), built from the [`Services`], and
//! the API's background tasks (outbox publisher and relay, key usage flusher, the metrics sampler, the
//! retention job; in embedded mode also the workers), all stages of one [`Stages`]: stopped by one
//! shutdown token and awaited before exit, and the first to fail stops the process. The admin listener
//! ([`App::serve_admin`]) is stopped by the same token.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    auth::Authenticator,
    config::Mode,
    domain::{self, EventCatalog},
    emit::Emitter,
    http::AppState,
    readiness::Readiness,
    services::Services,
    stages::Stages,
    store::{Bootstrap, DynStore, NewApiKey, NewUser, Organization, StoreError},
    telemetry::{metrics, sampler::Sampler},
};

/// The API process: its state and its background tasks.
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    /// What `/metrics` renders (the process-wide recorder).
    pub metrics: PrometheusHandle,
    stages: Stages,
}

impl App {
    /// Starts the background tasks as stages of `stages` (they stop at its shutdown token); in embedded
    /// mode they include the workers, whose start-up failure is this function's error.
    pub async fn start(services: Services, stages: Stages) -> anyhow::Result<Self> {
        let settings = services.settings.clone();
        let metrics = metrics::install("api");
        let outbox = services.outbox(&stages);
        let emitter =
            Emitter::start(&stages, services.store.clone(), outbox, settings.events.idempotency_window.get());
        let auth = Arc::new(Authenticator::new(&settings, services.store.clone()));
        {
            let (usage, store, token) =
                (auth.usage().clone(), services.store.clone(), stages.shutdown_token());
            let interval = settings.auth.usage_flush_interval.get();
            stages.spawn("usage-flusher", async move { usage.run(store, interval, token).await });
        }
        let readiness = Readiness::new(services.store.clone(), services.queue.clone());
        let supervised = stages.clone();
        readiness.add_check("stages", Arc::new(move || supervised.health()));
        let sampler = Sampler {
            store: services.store.clone(),
            queue: services.queue.clone(),
            readiness: readiness.clone(),
            handle: metrics.clone(),
            outbox: true,
        };
        stages.spawn("metrics-sampler", sampler.run(stages.shutdown_token()));
        if settings.retention.enabled {
            // Here, not in herald-worker: the API instances take turns through the retention lock.
            let retention =
                crate::retention::Retention::new(services.store.clone(), settings.retention.clone());
            stages.spawn("retention", retention.run(stages.shutdown_token()));
        }
        if services.mode == Mode::Embedded {
            // This process is also the worker.
            if let Err(error) =
                crate::worker::start(services.clone(), crate::worker::Roles::ALL, &stages).await
            {
                // What started stops: this is not a stage failure.
                stages.shutdown_token().cancel();
                return Err(error.context("starting the in-process workers"));
            }
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
            webhooks: services.webhooks,
            readiness,
        };
        Ok(Self { state, metrics, stages })
    }

    /// Serves the admin listener (`/metrics`, `/healthz`, `/readyz`) on `listener` until shutdown.
    pub fn serve_admin(&self, listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
        let (handle, readiness) = (self.metrics.clone(), self.state.readiness.clone());
        tokio::spawn(crate::http::admin::serve_admin(
            listener,
            handle,
            readiness,
            self.stages.shutdown_token(),
        ))
    }

    /// The owner of this process's stages (their health).
    pub fn stages(&self) -> &Stages {
        &self.stages
    }

    /// Serves the API until shutdown (a signal, or a stage's failure), lets in-flight requests finish (up
    /// to `server.shutdown_grace`), then waits for the stages' last work and closes the queue. A failed
    /// stage is the error.
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let Self { state, stages, .. } = self;
        let grace = state.settings.server.shutdown_grace.get();
        let shutdown = stages.shutdown_token();
        let router = crate::http::router(state.clone());
        let server = tokio::spawn(crate::http::serve(listener, router, shutdown.clone()));
        shutdown.cancelled().await;
        match tokio::time::timeout(grace, server).await {
            Ok(result) => result??,
            Err(_) => tracing::warn!(?grace, "in-flight requests did not finish within the shutdown grace"),
        }
        // No request submits events any more: the event writer may finish.
        let queue = state.queue.clone();
        drop(state);
        let stopped = stages.wait().await;
        queue.close().await;
        Ok(stopped?)
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
    let (key, secret) = admin_key(organization.id, admin.id, "bootstrap admin key", now);
    let bootstrap = Bootstrap { organization, admin, key };
    match store.bootstrap(&bootstrap, only_if_empty).await {
        Ok(true) => Ok(Some((bootstrap, secret))),
        Ok(false) => Ok(None),
        Err(StoreError::Conflict(_)) => anyhow::bail!(
            "an organization named '{organization_name}' exists already; for a new admin key run \
             herald admin-key --org '{organization_name}' --email EMAIL"
        ),
        Err(other) => Err(other.into()),
    }
}

/// A new API key for an organization's existing admin (`herald admin-key`: a lost key is replaced, the
/// old ones keep working until revoked). The secret is returned once, to be printed.
pub async fn new_admin_key(
    store: &DynStore,
    organization_name: &str,
    admin_email: &str,
) -> anyhow::Result<(NewApiKey, domain::ApiKeySecret)> {
    let organizations = store.organizations_named(organization_name).await?;
    let organization = match organizations.as_slice() {
        [] => anyhow::bail!("no organization is named '{organization_name}'"),
        [one] => one,
        many => anyhow::bail!(
            "{} organizations are named '{organization_name}' (made before bootstrap refused duplicates); \
             rename all but one in the database first",
            many.len()
        ),
    };
    let email = admin_email.trim().to_lowercase();
    let admin = store
        .find_user_by_email(organization.id, &email)
        .await?
        .filter(|user| user.role == domain::Role::Admin && user.is_active)
        .ok_or_else(|| {
            anyhow::anyhow!("no admin of '{organization_name}' is active with the email {email}")
        })?;
    let (key, secret) = admin_key(organization.id, admin.id, "admin key (herald admin-key)", domain::now());
    store.create_api_key(&key).await?;
    Ok((key, secret))
}

fn admin_key(
    organization_id: uuid::Uuid,
    user_id: uuid::Uuid,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (NewApiKey, domain::ApiKeySecret) {
    let secret = domain::ApiKeySecret::generate();
    let key = NewApiKey {
        id: uuid::Uuid::now_v7(),
        organization_id,
        user_id,
        key_hash: secret.hash(),
        prefix: secret.hint(),
        name: name.into(),
        purpose: domain::KeyPurpose::Custom,
        expires_at: None,
        created_at: now,
    };
    (key, secret)
}

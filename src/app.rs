//! Assembling Herald from its settings: the store and queue chosen once, the shared state handlers take
//! with `State<AppState>`, and the API process (`herald serve`) with its background tasks.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    domain,
    queue::{self, DynQueue},
    store::{self, Bootstrap, DynStore, NewApiKey, NewUser, Organization},
};

/// Cheap handles shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub queue: DynQueue,
}

impl AppState {
    /// Connects the store (running migrations) and the queue the settings select.
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let store = store::connect(&settings).await?;
        let queue = queue::connect(&settings, &store).await?;
        Ok(Self { settings: Arc::new(settings), store, queue })
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
        prefix: secret.display_prefix(),
        name: "bootstrap admin key".into(),
        purpose: domain::KeyPurpose::Custom,
        expires_at: None,
        created_at: now,
    };
    let bootstrap = Bootstrap { organization, admin, key };
    if store.bootstrap(&bootstrap, only_if_empty).await? { Ok(Some((bootstrap, secret))) } else { Ok(None) }
}

/// Runs the API until `shutdown`, then waits up to `server.shutdown_grace` for in-flight requests.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grace = state.settings.server.shutdown_grace.get();
    let router = crate::http::router(state.clone());
    let server = tokio::spawn(crate::http::serve(listener, router, shutdown.clone()));
    shutdown.cancelled().await;
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result??,
        Err(_) => tracing::warn!(?grace, "in-flight requests did not finish within the shutdown grace"),
    }
    state.queue.close().await;
    Ok(())
}

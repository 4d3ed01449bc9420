//! The state every request handler takes with `State<AppState>`: cheap handles, built by
//! [`crate::app::App::start`] from the shared services.

use std::sync::Arc;

use crate::{
    auth::Authenticator, config::Settings, crypto::SecretBox, domain::EventCatalog, emit::Emitter,
    net_guard::TargetPolicy, queue::DynQueue, readiness::Readiness, store::DynStore,
    webhook_cache::WebhookCache,
};

/// Cheap handles shared by every request.
#[derive(Debug, Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: DynStore,
    pub queue: DynQueue,
    pub(crate) auth: Arc<Authenticator>,
    /// The one way events enter Herald.
    pub(crate) emitter: Emitter,
    pub(crate) catalog: EventCatalog,
    pub secrets: Arc<SecretBox>,
    /// Which webhook URLs are allowed (the SSRF policy).
    pub(crate) target_policy: Arc<TargetPolicy>,
    /// The process's webhook cache (shared with its in-process workers): every webhook change
    /// invalidates it before the API answers.
    pub(crate) webhooks: Arc<WebhookCache>,
    /// What `/readyz` checks (also served by the admin listener).
    pub readiness: Readiness,
}

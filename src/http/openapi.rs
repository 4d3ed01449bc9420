//! The OpenAPI 3.1 document of the whole API, generated from the handlers' annotations and served at
//! `GET /api/v1/openapi.json`. A copy is checked in at `docs/openapi.json` (regenerate it with
//! `herald openapi > docs/openapi.json`); a test keeps the two equal.

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{api_keys, deliveries, events, health, users, webhooks};
use crate::app::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Webhook dispatcher: send activity events, subscribe endpoints, get signed deliveries with retries, a dead-letter queue and replay. Errors are always `{\"error\": ..., \"code\": ...}`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        health::healthz, health::readyz,
        api_keys::create, api_keys::list, api_keys::revoke,
        users::create, users::list,
        webhooks::create, webhooks::list, webhooks::read, webhooks::update, webhooks::remove, webhooks::rotate_secret,
        events::event_types, events::send, events::list, events::read,
        deliveries::list, deliveries::read, deliveries::retry, deliveries::replay, deliveries::send_test,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "health", description = "liveness and readiness"),
        (name = "api-keys", description = "API keys (seed 004)"),
        (name = "users", description = "users of an organization"),
        (name = "webhooks", description = "subscriptions"),
        (name = "events", description = "sending and reading events"),
        (name = "deliveries", description = "the delivery log, redrive, replay and test deliveries"),
    ),
)]
struct ApiDoc;

/// The two ways to authenticate.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("an API key (sk_live_...) or a Supabase-style HS256 JWT"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document as JSON text (pretty, with a trailing newline, as checked in).
pub fn document() -> String {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = document.to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

pub fn router() -> Router<AppState> {
    let document: serde_json::Value = serde_json::from_str(&document()).unwrap_or_default();
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

//! The OpenAPI 3.1 document of the whole API, served at `GET /api/v1/openapi.json`. Its paths and schemas
//! come from the routes themselves (each module declares a route once, with `utoipa_axum::routes!`, for
//! both the router and the document); this module holds the frame around them: info, security schemes,
//! tags. A copy is checked in at `docs/openapi.json` (regenerate it with
//! `herald openapi > docs/openapi.json`); a test keeps the two equal.

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Webhook dispatcher: send activity events, subscribe endpoints, get signed deliveries with retries, a dead-letter queue and replay. Errors are always `{\"error\": ..., \"code\": ...}`.",
        license(name = "Apache-2.0"),
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

/// The document's frame, without paths: the routes merged onto it add theirs.
pub(super) fn frame() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON text (pretty, with a trailing newline, as checked in).
pub fn document() -> String {
    text(super::documented().into_openapi())
}

fn text(mut document: utoipa::openapi::OpenApi) -> String {
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = document.to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// `GET /openapi.json`, serving `document` (the one generated with the routes it describes).
pub(super) fn router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document: serde_json::Value = serde_json::from_str(&text(document)).unwrap_or_default();
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

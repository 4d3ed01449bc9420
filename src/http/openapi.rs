//! The OpenAPI 3.1 document of the whole API, served at `GET /api/v1/openapi.json`. Its paths and schemas
//! come from the routes themselves (each module declares a route once, with `utoipa_axum::routes!`, for
//! both the router and the document); this module holds the frame around them: info, security schemes,
//! tags, and the error responses that the layers and extractors give every operation (`COMMON_RESPONSES`).
//! A copy is checked in at `docs/openapi.json` (regenerate it with `herald openapi > docs/openapi.json`);
//! a test keeps the two equal.

use axum::{Json, Router, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, Object, Ref, RefOr, Response, Type,
        header::Header,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
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
    add_common_responses(&mut document);
    let mut text = document.to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    text.push('\n');
    text
}

/// Which operations can give a common response.
#[derive(Clone, Copy)]
enum Applies {
    /// Every operation (the request timeout is a layer around all of them).
    Everywhere,
    /// Every authenticated operation (under `/api/v1/`): the credential extractors and the store.
    Authenticated,
    /// Every operation that reads a request body.
    WithBody,
}

/// The error responses that come from the layers and the extractors rather than from one handler. Each
/// is added, with the error schema, to every operation it applies to that does not declare that status
/// itself (a handler's own description of it is more precise and wins).
const COMMON_RESPONSES: [(&str, Applies, &str); 8] = [
    (
        "400",
        Applies::Authenticated,
        "invalid request: a malformed id, query, body or service-role target, text with a control \
         character, a time outside 1970-01-01..9999-12-31, a value the database cannot store \
         (`invalid_value`); `code` says which",
    ),
    ("401", Applies::Authenticated, "missing, malformed, expired or revoked credentials"),
    (
        "403",
        Applies::Authenticated,
        "these credentials may not do this (admins only, or another user's resource)",
    ),
    ("404", Applies::Authenticated, "not found: the resource, or the user a service-role token acts for"),
    ("408", Applies::Everywhere, "the request took longer than server.request_timeout"),
    ("413", Applies::WithBody, "the body is larger than server.max_body_bytes"),
    ("429", Applies::Authenticated, "too many requests for this API key; retry after `Retry-After` seconds"),
    ("503", Applies::Authenticated, "the database is unavailable or Herald is shutting down; retry shortly"),
];

fn add_common_responses(document: &mut utoipa::openapi::OpenApi) {
    for (path, item) in &mut document.paths.paths {
        let authenticated = path.starts_with("/api/v1/");
        let methods = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
            &mut item.query,
        ];
        let operations = methods.into_iter().flatten().chain(item.additional_operations.values_mut());
        for operation in operations {
            let with_body = operation.request_body.is_some();
            for (status, applies, description) in COMMON_RESPONSES {
                let applies = match applies {
                    Applies::Everywhere => true,
                    Applies::Authenticated => authenticated,
                    Applies::WithBody => with_body,
                };
                if applies {
                    let responses = &mut operation.responses.responses;
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(status, description)));
                }
            }
        }
    }
}

fn error_response(status: &str, description: &str) -> Response {
    let mut response = Response::new(description);
    let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
    response.content.insert("application/json".to_string(), RefOr::T(body));
    if status == "429" {
        let mut seconds = Header::new(Object::with_type(Type::Integer));
        seconds.description = Some("seconds to wait before retrying".to_string());
        response.headers.insert("Retry-After".to_string(), RefOr::T(seconds));
    }
    response
}

/// `GET /openapi.json`, serving `document` (the one generated with the routes it describes).
pub(super) fn router(document: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document: serde_json::Value = serde_json::from_str(&text(document)).unwrap_or_default();
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

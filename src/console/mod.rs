//! The web console, served by `herald serve` at `/console` in both modes: server-rendered HTML
//! ([`render`], minijinja templates embedded from `templates/`), a hand-written stylesheet and one small
//! script ([`assets`], embedded, served under content-hashed names), charts drawn as SVG on the server
//! ([`chart`]). Signing in exchanges an API key or a JWT for a session ([`session`]: an HttpOnly,
//! SameSite=Strict cookie whose token only the SHA-256 of is stored, idle and absolute expiry, the
//! credential re-checked on every request, a CSRF token on every form).
//!
//! Pages call the API's own handler functions (`crate::http::webhooks::create`, ...) with the session's
//! principal, so validation and authorization are the API's: a member asking for an admin page gets the
//! API's 403, as a page. What the console shows beyond the API's records (the overview's figures, the
//! webhooks' health) comes from [`data`], one function per figure.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style), `nosniff`, no
//! referrer and no framing ([`security_headers`]).

mod assets;
mod chart;
mod data;
mod forms;
mod pages;
mod render;
mod session;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};

use crate::http::AppState;

/// The policy of every console answer: scripts, styles and images from the console itself only, no
/// inline script or style, forms posting back only to Herald, never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (nested under `/console` by `crate::http::router`).
pub(crate) fn router() -> Router<AppState> {
    use pages::{deliveries, events, keys, overview, signin, users, webhooks};
    Router::new()
        .route("/", get(overview::show))
        .route("/assets/{name}", get(assets::serve))
        .route("/sign-in", get(signin::form).post(signin::submit))
        .route("/sign-out", post(signin::sign_out))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::show).post(webhooks::update))
        .route("/webhooks/{id}/state", post(webhooks::set_state))
        .route("/webhooks/{id}/rotate", post(webhooks::rotate))
        .route("/webhooks/{id}/test", post(webhooks::send_test))
        .route("/webhooks/{id}/replay", get(deliveries::confirm_replay).post(deliveries::replay))
        .route("/webhooks/{id}/deliveries", get(deliveries::list))
        .route("/deliveries/{id}", get(deliveries::show))
        .route("/deliveries/{id}/retry", post(deliveries::retry))
        .route("/events", get(events::list))
        .route("/events/{id}", get(events::show))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route("/api-keys/{id}/revoke", post(keys::revoke))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", post(users::update))
        .fallback(pages::not_found)
        .layer(middleware::from_fn(security_headers))
}

/// Adds the console's security headers to every answer (pages, assets, errors, redirects).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

//! The HTTP API. Each resource module exports `router()`, an `OpenApiRouter` whose routes are declared once
//! for both axum and the OpenAPI document; this module merges them (under `/api/v1`, health at the root),
//! splits off the document it serves, adds the cross-cutting layers (request ids, tracing, timeout, body
//! limit, panics as JSON 500s, request metrics by route template) and the JSON fallbacks for unknown routes
//! and methods, and serves the result with graceful shutdown. [`admin`] is the separate admin listener.

pub mod admin;
pub(crate) mod api_keys;
pub(crate) mod auth;
pub(crate) mod deliveries;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod extract;
mod health;
pub(crate) mod input;
pub mod openapi;
pub(crate) mod page;
mod recover;
mod state;
pub(crate) mod stats;
pub(crate) mod users;
pub(crate) mod webhooks;

use std::{any::Any, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{Method, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa_axum::router::OpenApiRouter;

use crate::telemetry::metrics::{Cached, intern, names};

pub use error::{ApiError, ApiResult, ErrorBody};
pub use state::AppState;

/// Every documented route, on the document's frame.
fn documented() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::default()
        .merge(api_keys::router())
        .merge(users::router())
        .merge(webhooks::router())
        .merge(deliveries::router())
        .merge(events::router())
        .merge(recover::router())
        .merge(stats::router());
    OpenApiRouter::with_openapi(openapi::frame()).merge(health::router()).nest("/api/v1", api)
}

/// The whole API with its layers.
pub fn router(state: AppState) -> Router {
    let settings = state.settings.clone();
    let (documented, document) = documented().split_for_parts();
    let timeout = settings.server.request_timeout.get();
    let mut documented = documented.nest("/api/v1", openapi::router(document));
    if settings.admin.public_metrics {
        documented = documented.merge(admin::metrics_route(crate::telemetry::metrics::install("api")));
    }
    if settings.console.enabled {
        documented = documented.nest("/console", crate::console::router());
    }
    documented
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
        .layer(DefaultBodyLimit::max(settings.server.max_body_bytes))
        .layer(axum::Extension(self::extract::BodyLimit(settings.server.max_body_bytes)))
        .layer(middleware::from_fn(move |request: Request, next: Next| enforce_timeout(timeout, request, next)))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

/// `herald_http_requests_total` and `herald_http_request_duration_seconds` by route template (or
/// `unmatched`), method and status.
async fn record_request(request: Request, next: Next) -> Response {
    static REQUESTS: Cached<(&str, &str, u16), metrics::Counter> = Cached::new(|&(route, method, status)| {
        let status = intern(&status.to_string());
        metrics::counter!(names::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
    });
    static DURATIONS: Cached<(&str, &str), metrics::Histogram> = Cached::new(
        |&(route, method)| metrics::histogram!(names::HTTP_REQUEST_DURATION, "route" => route, "method" => method),
    );
    let started = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| intern(path.as_str()));
    let method = method_label(request.method());
    let response = next.run(request).await;
    REQUESTS.get((route, method, response.status().as_u16())).increment(1);
    DURATIONS.get((route, method)).record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any other is `other` (the label's values stay a bounded set).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn unknown_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn enforce_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {}s", timeout.as_secs_f64()),
        )
        .into_response(),
    }
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
}

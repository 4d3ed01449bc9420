//! Liveness and readiness. `/healthz` answers while the process runs; `/readyz` answers 200 only when
//! the store (and the broker, in RabbitMQ mode) can be reached, and 503 naming the failing dependency.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;

/// Longest a readiness probe waits on one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(healthz)).routes(routes!(readyz))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`
    status: &'static str,
    version: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION") })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, or the failure (with `code: not_ready`) when a dependency is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// Each dependency and `ok` or what failed.
    checks: Checks,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checks {
    database: String,
    queue: String,
}

/// The store and the queue can be reached.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness, description = "a dependency is unreachable; `error` names it"),
))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("database unreachable: {error}")),
        Err(_) => Err("database did not answer within 2s".to_string()),
    };
    let queue = match tokio::time::timeout(PROBE_TIMEOUT, state.queue.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("{} {error}", state.queue.kind())),
        Err(_) => Err(format!("{} did not answer within 2s", state.queue.kind())),
    };
    let describe = |result: &Result<(), String>| match result {
        Ok(()) => "ok".to_string(),
        Err(error) => error.clone(),
    };
    let checks = Checks { database: describe(&database), queue: describe(&queue) };
    let failures: Vec<String> = [database, queue].into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        (StatusCode::OK, Json(Readiness { status: Some("ready"), error: None, code: None, checks }))
    } else {
        let error = Some(format!("not ready: {}", failures.join("; ")));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness { status: None, error, code: Some("not_ready"), checks }),
        )
    }
}

//! Liveness and readiness. `/healthz` answers while the process runs; `/readyz` answers 200 only when
//! the store (and the broker, in RabbitMQ mode) can be reached and the process's other checks pass
//! ([`crate::readiness::Readiness`]), and 503 naming the failing dependency.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::AppState;
use crate::readiness::Report;

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
#[utoipa::path(get, path = "/healthz", tag = "health", security(), responses((status = 200, body = Health, description = "the process is alive")))]
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
    /// The process's other checks (its stages), by name.
    #[serde(flatten)]
    other: BTreeMap<&'static str, String>,
}

/// The store and the queue can be reached.
#[utoipa::path(get, path = "/readyz", tag = "health", security(), responses(
    (status = 200, body = Readiness, description = "every dependency answers"),
    (status = 503, body = Readiness, description = "a dependency is unreachable; `error` names it"),
))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_response(&state.readiness.check().await)
}

/// `/readyz`'s answer for a report: 200 `{"status":"ready","checks":{...}}`, or 503 naming what failed
/// (the API and the admin listener answer alike).
pub(crate) fn readiness_response(report: &Report) -> Response {
    let mut checks = Checks { database: String::new(), queue: String::new(), other: BTreeMap::new() };
    for (name, result) in &report.checks {
        let text = match result {
            Ok(()) => "ok".to_string(),
            Err(error) => error.clone(),
        };
        match *name {
            "database" => checks.database = text,
            "queue" => checks.queue = text,
            other => drop(checks.other.insert(other, text)),
        }
    }
    if report.is_ready() {
        (StatusCode::OK, Json(Readiness { status: Some("ready"), error: None, code: None, checks }))
            .into_response()
    } else {
        let error = Some(format!("not ready: {}", report.failures()));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness { status: None, error, code: Some("not_ready"), checks }),
        )
            .into_response()
    }
}

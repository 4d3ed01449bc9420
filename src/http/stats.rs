//! Endpoint statistics (admins only): `GET /webhooks/{id}/stats?window=1h|24h|7d` answers a webhook's
//! attempts, success ratio, status classes, latency percentiles and health over the window, from the
//! rollups the outcome recorder keeps (`store::StatsStore`); nothing here scans the attempts.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::AdminAuth,
    extract::{Path, Query},
};
use crate::{
    domain,
    store::{StatsWindow, WebhookStats},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(webhook_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// `1h`, `24h` (the default) or `7d`: the attempts counted are those that ended in the window.
    window: Option<String>,
}

/// A webhook's delivery statistics over a window.
///
/// `state` is `disabled` when the webhook is not active (with Herald's `disabled_reason` when Herald
/// disabled it), `failing` when its last attempt failed (`consecutive_failures` > 0) or its success ratio
/// in the window is below 0.9, `healthy` otherwise. Latency percentiles are the upper bound of the
/// latency histogram's bucket holding them (bounds 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
/// and 15000 ms; slower attempts count in the last). Attempts Herald did not make (`not attempted`) are
/// not counted.
#[utoipa::path(get, operation_id = "webhook_stats", path = "/webhooks/{id}/stats", tag = "webhooks",
    params(("id" = Uuid, Path), StatsQuery),
    responses(
        (status = 200, body = WebhookStats, description = "the webhook's figures over the window"),
        (status = 400, body = ErrorBody, description = "invalid_window: the window is not 1h, 24h or 7d"),
        (status = 404, body = ErrorBody, description = "no such webhook in the organization"),
    ))]
pub async fn webhook_stats(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Query(query): Query<StatsQuery>,
) -> ApiResult<axum::Json<WebhookStats>> {
    let window = match query.window.as_deref() {
        None => StatsWindow::Day,
        Some(text) => StatsWindow::parse(text)
            .ok_or_else(|| ApiError::bad_request("invalid_window", "window must be 1h, 24h or 7d"))?,
    };
    let stats = state
        .store
        .webhook_stats(principal.organization_id, id, window, domain::now())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook not found"))?;
    Ok(axum::Json(stats))
}

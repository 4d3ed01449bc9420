//! The overview (admins): deliveries per minute over the last hour and per 15 minutes over the last
//! day (succeeded, retrying, dead), the attempts' success ratios, attempt latency percentiles, the
//! outbox lag, the dead-letter count, and the webhooks that are failing or disabled (their state in
//! the endpoint statistics). Members, who may not read deliveries, are sent to the events.

use axum::{
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use serde_json::json;

use super::{PageResult, notice, shown};
use crate::{
    console::{chart, data, render, session::Session},
    http::AppState,
};

/// Webhooks listed as needing attention at most.
const ATTENTION_LIMIT: usize = 20;
/// Webhooks whose health the overview looks at (the oldest first), at most.
const HEALTH_CHECKED: usize = 50;

/// `GET /console/`.
pub(crate) async fn show(State(state): State<AppState>, session: Session, uri: Uri) -> Response {
    if !session.is_admin() {
        return Redirect::to("/console/events").into_response();
    }
    let result = page(&state, &session, &uri).await;
    shown(&session, result)
}

async fn page(state: &AppState, session: &Session, uri: &Uri) -> PageResult {
    let organization_id = session.principal.organization_id;
    let store = &state.store;
    let now = data::now();
    let minutes = data::Minutes::read(store, organization_id, now).await?;
    let (hour, day) = (minutes.window(data::LAST_HOUR), minutes.window(data::LAST_DAY));
    let latency = data::attempt_latency(
        store,
        organization_id,
        now - chrono::Duration::seconds(data::LAST_HOUR.seconds),
    )
    .await?;
    let outbox = data::outbox_lag(store, now).await?;
    let dead = data::dead_letters(store, organization_id).await?;
    let (hour_success, day_success) = data::attempt_success(store, organization_id, now).await?;
    let webhooks =
        store.list_webhooks(organization_id, crate::store::Page { cursor: None, limit: 200 }).await?;
    let mut attention = Vec::new();
    for webhook in webhooks.iter().take(HEALTH_CHECKED) {
        let health = super::webhooks::health(state, session, webhook.id).await?;
        if health["state"] != "healthy" && attention.len() < ATTENTION_LIMIT {
            attention.push(json!({"id": webhook.id, "url": webhook.url, "health": health}));
        }
    }
    let active = webhooks.iter().filter(|webhook| webhook.is_active).count();
    let sum = |buckets: &[data::Bucket]| buckets.iter().map(data::Bucket::total).sum::<u64>();
    Ok(render::page(
        Some(session),
        StatusCode::OK,
        "overview.html",
        json!({
            "active": "overview",
            "notice": notice(uri),
            "hour_chart": chart::stacked_bars(&hour, "Deliveries per minute, last hour"),
            "day_chart": chart::stacked_bars(&day, "Deliveries per 15 minutes, last day"),
            "hour_total": sum(&hour),
            "day_total": sum(&day),
            "hour_ratio": hour_success.ratio.map(percent),
            "day_ratio": day_success.ratio.map(percent),
            "hour_attempts": hour_success.attempts,
            "day_attempts": day_success.attempts,
            "latency": latency,
            "outbox": outbox,
            "dead": dead,
            "active_webhooks": active,
            "attention": attention,
        }),
    ))
}

/// A ratio as a percentage with one decimal (`99.5`).
pub(crate) fn percent(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 10.0
}

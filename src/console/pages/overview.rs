//! The overview (admins): deliveries per minute over the last hour and per 15 minutes over the last
//! day (succeeded, retrying, dead), success ratios, attempt latency percentiles, the outbox lag, the
//! dead-letter count, and the webhooks that are failing or disabled. Members, who may not read
//! deliveries, are sent to the events.

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
    let hour = data::deliveries_per_bucket(store, organization_id, data::LAST_HOUR, now).await?;
    let day = data::deliveries_per_bucket(store, organization_id, data::LAST_DAY, now).await?;
    let latency = data::attempt_latency(
        store,
        organization_id,
        now - chrono::Duration::seconds(data::LAST_HOUR.seconds),
    )
    .await?;
    let outbox = data::outbox_lag(store, now).await?;
    let dead = data::dead_letters(store, organization_id).await?;
    let health = data::webhook_health(store, organization_id, now).await?;
    let webhooks = store.active_webhooks(organization_id).await?;
    let mut attention: Vec<serde_json::Value> = Vec::new();
    let all = store.list_webhooks(organization_id, crate::store::Page { cursor: None, limit: 200 }).await?;
    for webhook in all
        .iter()
        .filter(|w| !w.is_active || w.consecutive_dead > 0 || health.get(&w.id).is_some_and(|h| h.dead > 0))
    {
        if attention.len() == ATTENTION_LIMIT {
            break;
        }
        attention.push(json!({
            "id": webhook.id, "url": webhook.url, "is_active": webhook.is_active,
            "disabled_reason": webhook.disabled_reason, "consecutive_dead": webhook.consecutive_dead,
            "health": health.get(&webhook.id),
        }));
    }
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
            "hour_ratio": data::success_ratio(&hour).map(percent),
            "day_ratio": data::success_ratio(&day).map(percent),
            "latency": latency,
            "outbox": outbox,
            "dead": dead,
            "active_webhooks": webhooks.len(),
            "attention": attention,
        }),
    ))
}

/// A ratio as a percentage with one decimal (`99.5`).
pub(crate) fn percent(ratio: f64) -> f64 {
    (ratio * 1000.0).round() / 10.0
}

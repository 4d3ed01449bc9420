//! Webhooks (admins): the list with each one's health over the last day (the endpoint statistics);
//! creating one with the event picker (the secret shown once); a webhook's page with its settings, its
//! recent deliveries (followed live), editing, enabling and disabling, rotating the secret with a grace
//! period, deleting, and sending a test event. All of it through `crate::http::webhooks`,
//! `crate::http::deliveries` and `crate::http::stats`.

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use serde_json::{Value, json};

use super::{Answer, PageResult, admin, back, notice, path_id, request, shown};
use crate::{
    console::{
        forms::{CsrfForm, Fields, query},
        pages::overview::percent,
        render,
        session::Session,
    },
    http::{
        ApiError, AppState, deliveries as api_deliveries,
        extract::{Json, OptionalJson, Path as ApiPath, Query},
        page::PageQuery,
        stats as api_stats, webhooks as api,
    },
};
use uuid::Uuid;

/// Deliveries shown on a webhook's page.
const RECENT_DELIVERIES: i64 = 10;

/// The catalog's types for the event picker, each marked if `chosen` has it.
fn event_choices(state: &AppState, chosen: &[Value]) -> Value {
    let chosen: Vec<&str> = chosen.iter().filter_map(Value::as_str).collect();
    let mut types: Vec<Value> = state
        .catalog
        .list()
        .into_iter()
        .filter(|name| *name != crate::domain::TEST_EVENT)
        .map(|name| json!({"name": name, "checked": chosen.contains(&name)}))
        .collect();
    types.insert(0, json!({"name": "*", "label": "every event type", "checked": chosen.contains(&"*")}));
    Value::from(types)
}

/// A webhook's health over the last day: the API's `GET /webhooks/{id}/stats` (the endpoint
/// statistics), with the success ratio as a percentage.
pub(crate) async fn health(state: &AppState, session: &Session, id: Uuid) -> Result<Value, ApiError> {
    let window = request(json!({"window": "24h"}))?;
    let mut stats =
        api_stats::webhook_stats(State(state.clone()), admin(session)?, ApiPath(id), Query(window))
            .await?
            .json();
    stats["ratio"] = json!(stats["success_ratio"].as_f64().map(percent));
    Ok(stats)
}

/// `GET /console/webhooks`.
pub(crate) async fn list(State(state): State<AppState>, session: Session, uri: Uri) -> Response {
    let result = async {
        let auth = admin(&session)?;
        let paging: PageQuery = query(&uri, &[])?;
        let mut page = api::list(State(state.clone()), auth, Query(paging)).await?.json();
        if let Some(webhooks) = page["webhooks"].as_array_mut() {
            for webhook in webhooks {
                let id = webhook["id"].as_str().and_then(|id| id.parse().ok()).unwrap_or_default();
                webhook["health"] = health(&state, &session, id).await?;
            }
        }
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "webhooks.html",
            json!({"active": "webhooks", "notice": notice(&uri), "page": page, "events": event_choices(&state, &[])}),
        ))
    }
    .await;
    shown(&session, result)
}

/// The `events` of a form: the picker's checked types.
fn picked_events(fields: &Fields) -> Value {
    Value::from(fields.all("events").into_iter().map(Value::from).collect::<Vec<_>>())
}

/// `POST /console/webhooks`: `url`, `events` (repeated), `description`.
pub(crate) async fn create(
    State(state): State<AppState>,
    session: Session,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let auth = admin(&session)?;
        let mut body = fields.object(&["url", "description"]);
        body.insert("url".into(), json!(fields.get("url").unwrap_or_default()));
        body.insert("events".into(), picked_events(&fields));
        let created =
            api::create(State(state.clone()), auth, Json(request(Value::Object(body))?)).await?.json();
        Ok(render::page(
            Some(&session),
            StatusCode::CREATED,
            "secret.html",
            json!({"active": "webhooks", "webhook": created, "secret": created["secret"], "created": true}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `GET /console/webhooks/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let webhook = api::read(State(state.clone()), admin(&session)?, ApiPath(id)).await?.json();
        let paging: PageQuery = request(json!({"limit": RECENT_DELIVERIES}))?;
        let deliveries = api_deliveries::list(
            State(state.clone()),
            admin(&session)?,
            ApiPath(id),
            Query(request(json!({}))?),
            Query(paging),
        )
        .await?
        .json();
        let health = health(&state, &session, id).await?;
        let chosen = webhook["events"].as_array().cloned().unwrap_or_default();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "webhook.html",
            json!({
                "active": "webhooks", "notice": notice(&uri), "webhook": webhook,
                "deliveries": deliveries["deliveries"], "health": health,
                "events": event_choices(&state, &chosen),
            }),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/webhooks/{id}`: `url`, `events`, `description` (blank: removed).
pub(crate) async fn update(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let body = json!({
            "url": fields.get("url").unwrap_or_default(),
            "events": picked_events(&fields),
            "description": fields.get("description"),
        });
        let _answer =
            api::update(State(state.clone()), admin(&session)?, ApiPath(id), Json(request(body)?)).await?;
        Ok(back(&format!("/console/webhooks/{id}"), "updated"))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/webhooks/{id}/state`: `active` = `true` or `false`; `delete` deletes.
pub(crate) async fn set_state(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result: PageResult = async {
        let id = path_id(&id)?;
        if fields.get("delete").is_some() {
            let _answer = api::remove(State(state.clone()), admin(&session)?, ApiPath(id)).await?;
            return Ok(back("/console/webhooks", "deleted"));
        }
        let active = fields.get("active") == Some("true");
        let body = json!({"is_active": active});
        let _answer =
            api::update(State(state.clone()), admin(&session)?, ApiPath(id), Json(request(body)?)).await?;
        Ok(back(&format!("/console/webhooks/{id}"), if active { "enabled" } else { "disabled" }))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/webhooks/{id}/rotate`: `grace_period_seconds`; shows the new secret once.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let grace = match fields.get("grace_period_seconds") {
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
                crate::http::ApiError::invalid("grace_period_seconds must be a number of seconds")
            })?),
            None => None,
        };
        let body = json!({"grace_period_seconds": grace});
        let rotated = api::rotate_secret(
            State(state.clone()),
            admin(&session)?,
            ApiPath(id),
            OptionalJson(request(body)?),
        )
        .await?
        .json();
        let webhook = api::read(State(state.clone()), admin(&session)?, ApiPath(id)).await?.json();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "secret.html",
            json!({
                "active": "webhooks", "webhook": webhook, "secret": rotated["secret"],
                "previous_expires_at": rotated["previous_secret_expires_at"],
            }),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/webhooks/{id}/test`: sends a `webhook.test` event; the webhook's page then follows
/// its delivery.
pub(crate) async fn send_test(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let _answer = api_deliveries::send_test(State(state.clone()), admin(&session)?, ApiPath(id)).await?;
        Ok(Redirect::to(&format!("/console/webhooks/{id}?done=test")).into_response())
    }
    .await;
    shown(&session, result)
}

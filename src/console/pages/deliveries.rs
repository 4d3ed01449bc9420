//! A webhook's deliveries (admins): the log filtered by status, event type and time, paged; one
//! delivery with its payload as sent, its headers (signatures, never secrets) and every attempt
//! (time, duration, status, the start of the response, error), retried from there; and the bulk
//! replay of the dead ones, confirmed with how many it will send. Through `crate::http::deliveries`.

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::Response,
};
use serde_json::{Map, Value, json};

use super::{Answer, admin, back, notice, path_id, request, shown};
use crate::{
    console::{
        forms::{CsrfForm, Fields, as_utc, query},
        render,
        session::Session,
    },
    http::{
        AppState, deliveries as api,
        extract::{OptionalJson, Path as ApiPath, Query},
        page::PageQuery,
        webhooks as api_webhooks,
    },
};

/// The filter fields of the log, as the API's `GET /deliveries` takes them.
const FILTERS: [&str; 4] = ["status", "event_type", "since", "until"];
/// The time fields of the filters (a `datetime-local` value is UTC).
const TIMES: [&str; 2] = ["since", "until"];

/// The filters of the log's query string, as given (to fill the form in again).
fn filters_of(uri: &Uri) -> Map<String, Value> {
    let raw: std::collections::HashMap<String, String> = query(uri, &[]).unwrap_or_default();
    FILTERS
        .iter()
        .filter_map(|name| raw.get(*name).map(|value| ((*name).to_string(), json!(value))))
        .collect()
}

/// `GET /console/webhooks/{id}/deliveries?status=&event_type=&since=&until=&cursor=`.
pub(crate) async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let webhook = api_webhooks::read(State(state.clone()), admin(&session)?, ApiPath(id)).await?.json();
        let given: std::collections::HashMap<String, String> = query(&uri, &TIMES)?;
        let mut search: Map<String, Value> = FILTERS
            .iter()
            .filter_map(|name| given.get(*name).map(|value| ((*name).to_string(), json!(value))))
            .collect();
        search.insert("webhook_id".into(), json!(id));
        let paging: PageQuery = query(&uri, &[])?;
        let page = api::search(
            State(state.clone()),
            admin(&session)?,
            Query(request(Value::Object(search))?),
            Query(paging),
        )
        .await?
        .json();
        let event_types: Vec<&str> = state.catalog.list();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "deliveries.html",
            json!({
                "active": "webhooks", "notice": notice(&uri), "webhook": webhook, "page": page,
                "filters": filters_of(&uri), "event_types": event_types,
                "statuses": ["pending", "queued", "succeeded", "dead"],
            }),
        ))
    }
    .await;
    shown(&session, result)
}

/// `GET /console/deliveries/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let mut delivery = api::read(State(state.clone()), admin(&session)?, ApiPath(id)).await?.json();
        let webhook_id = delivery["webhook_id"].as_str().and_then(|id| id.parse().ok()).unwrap_or_default();
        let webhook = api_webhooks::read(State(state.clone()), admin(&session)?, ApiPath(webhook_id)).await?.json();
        // The payload pretty-printed when it is JSON (it always is), as sent otherwise.
        let payload = delivery["payload"].as_str().unwrap_or_default().to_string();
        let pretty = serde_json::from_str::<Value>(&payload)
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or(payload);
        delivery["payload_pretty"] = json!(pretty);
        let settled = matches!(delivery["status"].as_str(), Some("succeeded" | "dead"));
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "delivery.html",
            json!({"active": "webhooks", "notice": notice(&uri), "delivery": delivery, "webhook": webhook, "live": !settled}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/deliveries/{id}/retry`.
pub(crate) async fn retry(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(_): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let _answer = api::retry(State(state.clone()), admin(&session)?, ApiPath(id)).await?;
        Ok(back(&format!("/console/deliveries/{id}"), "retried"))
    }
    .await;
    shown(&session, result)
}

/// The replay's request body from the form or query: `since`, `until` (UTC) and the status (dead).
fn replay_body(fields: &Fields, dry_run: bool) -> Value {
    let mut body = Map::new();
    for name in TIMES {
        if let Some(value) = fields.get(name) {
            body.insert(name.to_string(), json!(as_utc(value)));
        }
    }
    body.insert("dry_run".into(), json!(dry_run));
    Value::Object(body)
}

/// `GET /console/webhooks/{id}/replay?since=&until=`: how many dead deliveries a replay would send,
/// and the form that confirms it.
pub(crate) async fn confirm_replay(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let webhook = api_webhooks::read(State(state.clone()), admin(&session)?, ApiPath(id)).await?.json();
        let given: Vec<(String, String)> = query(&uri, &[])?;
        let fields = Fields::from_pairs(given);
        let counted = api::replay(
            State(state.clone()),
            admin(&session)?,
            ApiPath(id),
            OptionalJson(request(replay_body(&fields, true))?),
        )
        .await?
        .json();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "replay.html",
            json!({
                "active": "webhooks", "webhook": webhook, "matching": counted["matching"],
                "since": fields.get("since"), "until": fields.get("until"),
            }),
        ))
    }
    .await;
    shown(&session, result)
}

/// `POST /console/webhooks/{id}/replay`: replays the dead deliveries (of `since`..`until`).
pub(crate) async fn replay(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    CsrfForm(fields): CsrfForm,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let _answer = api::replay(
            State(state.clone()),
            admin(&session)?,
            ApiPath(id),
            OptionalJson(request(replay_body(&fields, false))?),
        )
        .await?;
        Ok(back(&format!("/console/webhooks/{id}/deliveries"), "replayed"))
    }
    .await;
    shown(&session, result)
}

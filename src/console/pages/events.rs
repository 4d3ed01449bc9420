//! Events (every user of the organization): the log filtered by type and time, paged, and one event
//! with its data and (admins) its deliveries across webhooks. Through `crate::http::events` and
//! `crate::http::deliveries`.

use axum::{
    extract::{Path, State},
    http::{StatusCode, Uri},
    response::Response,
};
use serde_json::{Map, Value, json};

use super::{Answer, admin, notice, path_id, request, shown};
use crate::{
    console::{forms::query, render, session::Session},
    http::{
        AppState,
        auth::Auth,
        deliveries as api_deliveries, events as api,
        extract::{Path as ApiPath, Query},
        page::PageQuery,
    },
};

/// `GET /console/events?type=&from=&to=&cursor=`.
pub(crate) async fn list(State(state): State<AppState>, session: Session, uri: Uri) -> Response {
    let result = async {
        let given: std::collections::HashMap<String, String> = query(&uri, &["from", "to"])?;
        let filters: Map<String, Value> =
            ["type", "from", "to"].iter().filter_map(|name| given.get(*name).map(|v| ((*name).to_string(), json!(v)))).collect();
        let paging: PageQuery = query(&uri, &[])?;
        let page = api::list(State(state.clone()), Auth(session.principal), Query(request(Value::Object(filters))?), Query(paging))
            .await?
            .json();
        let shown_filters: std::collections::HashMap<String, String> = query(&uri, &[]).unwrap_or_default();
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "events.html",
            json!({"active": "events", "notice": notice(&uri), "page": page, "filters": shown_filters, "event_types": state.catalog.list()}),
        ))
    }
    .await;
    shown(&session, result)
}

/// `GET /console/events/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        let id = path_id(&id)?;
        let mut event = api::read(State(state.clone()), Auth(session.principal), ApiPath(id)).await?.json();
        event["data_pretty"] = json!(serde_json::to_string_pretty(&event["data"]).unwrap_or_default());
        let deliveries = match admin(&session) {
            Ok(auth) => {
                let paging: PageQuery = request(json!({"limit": 200}))?;
                api_deliveries::event_deliveries(State(state.clone()), auth, ApiPath(id), Query(paging))
                    .await?
                    .json()["deliveries"]
                    .take()
            }
            Err(_) => Value::Null,
        };
        Ok(render::page(
            Some(&session),
            StatusCode::OK,
            "event.html",
            json!({"active": "events", "event": event, "deliveries": deliveries}),
        ))
    }
    .await;
    shown(&session, result)
}

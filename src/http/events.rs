//! Events: the catalog (`GET /event-types`), ingestion (`POST /events`: validated, committed in a group
//! commit, acknowledged 202, then published) and reading them back. Any authenticated user of the
//! organization may send and read events.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::Auth,
    extract::{Json, Path, Query},
    input::{Line, Timestamp, check_depth, check_line},
    page::{PageQuery, next_cursor},
};
use crate::{
    domain::{self, TEST_EVENT},
    emit,
    store::{Event, EventQuery},
};

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The conventional header for the key, an alternative to the body's `idempotency_key`.
const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(event_types)).routes(routes!(send, list)).routes(routes!(read))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypes {
    #[schema(example = json!(["comment.created", "delivery.dead", "item.created", "item.deleted", "item.updated", "user.added", "webhook.disabled", "webhook.recovered", "webhook.test"]))]
    event_types: Vec<String>,
}

/// The event types that may be sent and subscribed to.
#[utoipa::path(get, operation_id = "list_event_types", path = "/event-types", tag = "events",
    responses((status = 200, body = EventTypes, description = "the event types this Herald accepts")))]
pub async fn event_types(State(state): State<AppState>, _auth: Auth) -> axum::Json<EventTypes> {
    axum::Json(EventTypes { event_types: state.catalog.list().into_iter().map(String::from).collect() })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEvent {
    /// An event type from the catalog.
    #[schema(value_type = String, example = "item.created")]
    event: Line,
    /// The event's data: any JSON object (nested at most 100 levels deep), delivered as is.
    #[schema(value_type = Object, example = json!({"item_id": "42", "name": "Chair"}))]
    data: Box<RawValue>,
    /// Sending the same request (event and data) with the same key again within 24 hours returns the
    /// first event instead of a new one; the key with another event or other data is refused (422). The
    /// `Idempotency-Key` header may carry it instead.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    idempotency_key: Option<Line>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    id: Uuid,
    #[schema(example = "item.created")]
    event: String,
    /// Exactly as in the payload.
    #[serde(serialize_with = "domain::serialize_timestamp")]
    timestamp: DateTime<Utc>,
}

/// Send an event; it is committed before the answer and delivered to every subscribed webhook.
#[utoipa::path(post, operation_id = "send_event", path = "/events", tag = "events", request_body = SendEvent,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "the idempotency key, instead of the body's idempotency_key (both: they must be equal)")),
    responses(
        (status = 202, body = EventAccepted, description = "accepted: committed, to be delivered"),
        (status = 200, body = EventAccepted, description = "the same request (event and data) with this idempotency key was accepted before; nothing was created"),
        (status = 400, body = ErrorBody, description = "unknown event type (the valid ones are listed), data not an object or nested more than 100 levels deep, invalid body or idempotency key, an Idempotency-Key header that differs from the body's idempotency_key"),
        (status = 422, body = ErrorBody, description = "reserved_event_type: webhook.disabled, delivery.dead and webhook.recovered are emitted by Herald only. idempotency_key_reused: this idempotency key was used within 24 hours for another event type or other data; nothing was created"),
        (status = 413, body = ErrorBody, description = "body larger than server.max_body_bytes (256 KiB)"),
    ))]
pub async fn send(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    Json(request): Json<SendEvent>,
) -> ApiResult<(StatusCode, axum::Json<EventAccepted>)> {
    if &*request.event == TEST_EVENT {
        return Err(ApiError::bad_request(
            "unknown_event_type",
            "webhook.test is sent by Herald itself; use POST /api/v1/webhooks/{id}/test",
        ));
    }
    if domain::is_operational(&request.event) {
        return Err(ApiError::unprocessable(
            "reserved_event_type",
            format!(
                "{} is an operational event that Herald emits itself; subscribe to it instead",
                &*request.event
            ),
        ));
    }
    let event_type =
        state.catalog.parse(&request.event).map_err(|m| ApiError::bad_request("unknown_event_type", m))?;
    if !request.data.get().trim_start().starts_with('{') {
        return Err(ApiError::invalid("data must be a JSON object"));
    }
    check_depth("data", request.data.get())?;
    let key = idempotency_key(&headers, request.idempotency_key)?;
    let data = request.data.get();
    let mut event = emit::new_event(principal.organization_id, event_type.as_str(), data, domain::now());
    event.request_hash = key.as_ref().map(|_| emit::request_hash(event_type.as_str(), data));
    event.idempotency_key.clone_from(&key);
    let outcome = state.emitter.emit(event).await?;
    if outcome.key_reused {
        let key = key.unwrap_or_default();
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!(
                "idempotency key '{key}' was used for event {} with another event type or other data; \
                 use a new key for a different event",
                outcome.id
            ),
        ));
    }
    let status = if outcome.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((
        status,
        axum::Json(EventAccepted {
            id: outcome.id,
            event: outcome.event_type,
            timestamp: outcome.created_at,
        }),
    ))
}

/// The request's idempotency key, from the body or the `Idempotency-Key` header (both: equal), checked.
fn idempotency_key(headers: &HeaderMap, body: Option<Line>) -> ApiResult<Option<String>> {
    let header = match headers.get(IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::invalid(format!("the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII"))
            })?;
            check_line(&format!("the {IDEMPOTENCY_KEY_HEADER} header"), text)?;
            Some(text.to_string())
        }
    };
    let body = body.map(Line::into_string);
    let key = match (header, body) {
        (Some(header), Some(body)) if header != body => {
            return Err(ApiError::invalid(format!(
                "the {IDEMPOTENCY_KEY_HEADER} header and the body's idempotency_key differ; send one of them"
            )));
        }
        (header, body) => header.or(body),
    };
    if let Some(key) = &key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ApiError::invalid(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(key)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListEvents {
    /// Only events of this type: one catalog type (an unknown type or a comma-separated list is a 400).
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<String>)]
    event_type: Option<Line>,
    /// Only events created at or after this time (RFC 3339).
    #[param(value_type = Option<String>)]
    from: Option<Timestamp>,
    /// Only events created at or before this time (RFC 3339).
    #[param(value_type = Option<String>)]
    to: Option<Timestamp>,
}

/// An event as stored, with the payload's fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    id: Uuid,
    event: String,
    timestamp: DateTime<Utc>,
    organization_id: Uuid,
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    /// When the queue confirmed it; null while it waits to be published.
    published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    events: Vec<EventView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<Uuid>,
}

/// List the organization's events, newest first.
#[utoipa::path(get, operation_id = "list_events", path = "/events", tag = "events", params(ListEvents, PageQuery),
    responses((status = 200, body = EventPage, description = "a page of the organization's events")))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<ListEvents>,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<EventPage>> {
    let page = paging.page()?;
    let event_type = query.event_type.map(Line::into_string);
    if let Some(event_type) = &event_type {
        if event_type.contains(',') {
            return Err(ApiError::bad_request(
                "unknown_event_type",
                "type takes one type per request (a comma-separated list is not supported)",
            ));
        }
        state.catalog.parse(event_type).map_err(|m| ApiError::bad_request("unknown_event_type", m))?;
    }
    let events = state
        .store
        .list_events(&EventQuery {
            organization_id: principal.organization_id,
            event_type,
            from: query.from.map(Timestamp::get),
            to: query.to.map(Timestamp::get),
            before: page.cursor,
            limit: page.limit,
        })
        .await?;
    let next_cursor = next_cursor(&events, page, |event| event.id);
    let events = events.into_iter().map(view).collect::<ApiResult<_>>()?;
    Ok(axum::Json(EventPage { events, next_cursor }))
}

/// Read one event.
#[utoipa::path(get, operation_id = "get_event", path = "/events/{id}", tag = "events", params(("id" = Uuid, Path)),
    responses((status = 200, body = EventView, description = "the event")))]
pub async fn read(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<EventView>> {
    let event = state
        .store
        .get_event(id)
        .await?
        .filter(|event| event.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("event not found"))?;
    Ok(axum::Json(view(event)?))
}

fn view(event: Event) -> ApiResult<EventView> {
    #[derive(Deserialize)]
    struct Stored {
        data: Box<RawValue>,
    }
    let stored: Stored = serde_json::from_str(&event.payload).map_err(ApiError::internal)?;
    Ok(EventView {
        id: event.id,
        event: event.event_type,
        timestamp: event.created_at,
        organization_id: event.organization_id,
        data: stored.data,
        published_at: event.published_at,
    })
}

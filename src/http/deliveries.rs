//! Deliveries (admins only): finding them (a webhook's delivery log, an event's deliveries across
//! webhooks, the organization's with filters), one delivery with every attempt, redriving one delivery
//! or replaying many, and sending a test event to one webhook. Every listing pages as [`super::page`] says.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::AdminAuth,
    extract::{OptionalJson, Path, Query},
    input::{Line, Timestamp},
    page::{PageQuery, next_cursor},
    webhooks::owned_webhook,
};
use crate::{
    auth::Principal,
    domain::{self, TEST_EVENT},
    emit,
    store::{Attempt, Delivery, DeliveryQuery, DeliveryStatus, ReplayFilter, Webhook},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list))
        .routes(routes!(search))
        .routes(routes!(event_deliveries))
        .routes(routes!(replay))
        .routes(routes!(send_test))
        .routes(routes!(read))
        .routes(routes!(retry))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    id: Uuid,
    event_id: Uuid,
    webhook_id: Uuid,
    status: DeliveryStatus,
    /// Attempts made so far.
    attempts: i64,
    /// When the next attempt is due (pending), or when a queued delivery is handed over again.
    next_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            webhook_id: d.webhook_id,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
            completed_at: d.completed_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    attempt_number: i64,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    /// The endpoint's status code; null when there was no answer.
    status_code: Option<i64>,
    /// The start of the response body (up to delivery.max_response_bytes).
    response_body: Option<String>,
    /// Why the attempt failed without an answer (timeout, refused, blocked address...).
    error: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            attempt_number: a.attempt_number,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            response_body: a.response_body,
            error: a.error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    attempts_log: Vec<AttemptView>,
    /// The body every attempt sends, byte for byte (the payload contract).
    payload: String,
    /// The headers of the last attempt (or of an attempt now, before the first), signed with the
    /// webhook's secrets as they are now: after a rotation the signatures differ from those sent.
    /// Signatures are shown; secrets never are.
    headers: Vec<HeaderView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderView {
    name: String,
    value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListDeliveries {
    /// Only deliveries in this status.
    status: Option<DeliveryStatus>,
}

/// A webhook's deliveries, newest first.
#[utoipa::path(get, operation_id = "list_deliveries", path = "/webhooks/{id}/deliveries", tag = "deliveries",
    params(("id" = Uuid, Path, description = "webhook id"), ListDeliveries, PageQuery),
    responses((status = 200, body = DeliveryPage, description = "a page of the webhook's deliveries")))]
pub async fn list(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Query(query): Query<ListDeliveries>,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    owned_webhook(&state, &principal, id).await?;
    let query = DeliveryQuery { webhook_id: Some(id), status: query.status, ..organization_wide(&principal) };
    delivery_page(&state, query, &paging).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchDeliveries {
    /// Only deliveries to this webhook.
    webhook_id: Option<Uuid>,
    /// Only deliveries in this status.
    status: Option<DeliveryStatus>,
    /// Only deliveries of events of this type (one catalog type).
    #[param(value_type = Option<String>)]
    event_type: Option<Line>,
    /// Only deliveries created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<Timestamp>,
    /// Only deliveries created at or before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
}

/// The organization's deliveries across webhooks, newest first, with filters.
#[utoipa::path(get, operation_id = "search_deliveries", path = "/deliveries", tag = "deliveries",
    params(SearchDeliveries, PageQuery),
    responses((status = 200, body = DeliveryPage, description = "a page of the matching deliveries"),
        (status = 400, body = ErrorBody, description = "an invalid filter, limit or cursor; since later than until")))]
pub async fn search(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Query(query): Query<SearchDeliveries>,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    let (since, until) = (query.since.map(Timestamp::get), query.until.map(Timestamp::get));
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::bad_request("invalid_query", "since must not be later than until"));
    }
    let event_type = match query.event_type {
        None => None,
        Some(event_type) => Some(
            state
                .catalog
                .parse(&event_type)
                .map_err(|m| ApiError::bad_request("unknown_event_type", m))?
                .as_str()
                .to_string(),
        ),
    };
    let query = DeliveryQuery {
        webhook_id: query.webhook_id,
        status: query.status,
        event_type,
        since,
        until,
        ..organization_wide(&principal)
    };
    delivery_page(&state, query, &paging).await
}

/// An event's deliveries, one per webhook it went to, newest first. A delivery whose first attempt a
/// worker made at once is listed once that attempt has ended (milliseconds for a healthy endpoint, at
/// most the request timeout); one that waits is listed as `queued`.
#[utoipa::path(get, operation_id = "list_event_deliveries", path = "/events/{id}/deliveries", tag = "deliveries",
    params(("id" = Uuid, Path, description = "event id"), PageQuery),
    responses((status = 200, body = DeliveryPage, description = "a page of the event's deliveries"),
        (status = 404, body = ErrorBody, description = "no such event in the organization")))]
pub async fn event_deliveries(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    state
        .store
        .get_event(id)
        .await?
        .filter(|event| event.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("event not found"))?;
    let query = DeliveryQuery { event_id: Some(id), ..organization_wide(&principal) };
    delivery_page(&state, query, &paging).await
}

/// Every delivery of the caller's organization: a query to narrow down.
fn organization_wide(principal: &Principal) -> DeliveryQuery {
    DeliveryQuery { organization_id: principal.organization_id, ..DeliveryQuery::default() }
}

async fn delivery_page(
    state: &AppState,
    query: DeliveryQuery,
    paging: &PageQuery,
) -> ApiResult<axum::Json<DeliveryPage>> {
    let page = paging.page()?;
    let deliveries = state.store.list_deliveries(&DeliveryQuery { page, ..query }).await?;
    let next_cursor = next_cursor(&deliveries, page, |delivery| delivery.id);
    Ok(axum::Json(DeliveryPage { deliveries: deliveries.into_iter().map(Into::into).collect(), next_cursor }))
}

/// One delivery with every attempt.
#[utoipa::path(get, operation_id = "get_delivery", path = "/deliveries/{id}", tag = "deliveries", params(("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryDetail, description = "the delivery with its attempts")))]
pub async fn read(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<DeliveryDetail>> {
    let delivery = owned_delivery(&state, &principal, id).await?;
    let attempts = state.store.list_attempts(id).await?;
    let event = state
        .store
        .get_event(delivery.event_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("delivery {id} has no event")))?;
    let at = attempts.last().map_or_else(domain::now, |attempt| attempt.started_at);
    let headers = attempt_headers(&state, &delivery, &event.event_type, &event.payload, at).await?;
    Ok(axum::Json(DeliveryDetail {
        delivery: delivery.into(),
        attempts_log: attempts.into_iter().map(Into::into).collect(),
        payload: event.payload,
        headers,
    }))
}

/// The headers an attempt of `delivery` at `at` carries (signed with the webhook's current secrets).
async fn attempt_headers(
    state: &AppState,
    delivery: &Delivery,
    event_type: &str,
    payload: &str,
    at: DateTime<Utc>,
) -> ApiResult<Vec<HeaderView>> {
    // A secret that cannot be opened (sealed under a key no longer configured) signs nothing: the
    // headers are shown without signatures, as its attempts were never sent.
    let target = match state.webhooks.target(delivery.webhook_id).await {
        Ok(target) => target,
        Err(crate::webhook_cache::WebhookCacheError::Store(error)) => return Err(error.into()),
        Err(_) => None,
    };
    let secrets = target.as_ref().map_or(&[][..], |target| target.signing_secrets(at));
    let message_id = delivery.id.to_string();
    let signed = crate::worker::deliver::headers_signed_at(
        secrets,
        &message_id,
        event_type,
        payload.as_bytes(),
        at.timestamp(),
    )
    .map_err(ApiError::internal)?;
    let mut headers = vec![HeaderView {
        name: "user-agent".into(),
        value: concat!("Herald/", env!("CARGO_PKG_VERSION")).into(),
    }];
    headers.extend(signed.iter().map(|(name, value)| HeaderView {
        name: name.as_str().to_string(),
        value: value.to_str().unwrap_or_default().to_string(),
    }));
    Ok(headers)
}

/// Deliver again now (one more attempt), whatever the delivery's state, unless it is queued already.
#[utoipa::path(post, operation_id = "retry_delivery", path = "/deliveries/{id}/retry", tag = "deliveries", params(("id" = Uuid, Path)),
    responses((status = 202, body = DeliveryView, description = "the delivery is queued again"),
        (status = 409, body = ErrorBody, description = "already queued, or the webhook is disabled")))]
pub async fn retry(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<DeliveryView>)> {
    let delivery = owned_delivery(&state, &principal, id).await?;
    require_active(&owned_webhook(&state, &principal, delivery.webhook_id).await?)?;
    let redriven = state
        .store
        .redrive_delivery(id, domain::now())
        .await?
        .ok_or_else(|| ApiError::conflict("already_queued", "the delivery is queued already"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(redriven.into())))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Only deliveries created at or after this time.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    since: Option<Timestamp>,
    /// Only deliveries created at or before this time.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    until: Option<Timestamp>,
    /// `dead` (default): deliveries that ran out of attempts; `pending`: deliveries waiting for a retry,
    /// which are attempted now instead. Any other value is a 400.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    status: Option<Line>,
    /// `true`: change nothing, only count the deliveries that would be replayed (`matching`), e.g. to
    /// confirm a bulk replay.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    /// How many deliveries were made due (0 for a dry run).
    replayed: u64,
    /// With `dry_run`: how many deliveries the filter selects now.
    #[serde(skip_serializing_if = "Option::is_none")]
    matching: Option<u64>,
}

/// Redrive many deliveries of a webhook (bulk replay), e.g. after an outage of the endpoint.
#[utoipa::path(post, operation_id = "replay_deliveries", path = "/webhooks/{id}/replay", tag = "deliveries",
    params(("id" = Uuid, Path)), request_body(content = Option<Replay>, description = "optional filter"),
    responses((status = 202, body = Replayed, description = "the matching deliveries (dead by default) are queued again"),
        (status = 200, body = Replayed, description = "dry_run: how many deliveries match; nothing changed"),
        (status = 409, body = ErrorBody, description = "the webhook is disabled; enable it first")))]
pub async fn replay(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    OptionalJson(request): OptionalJson<Replay>,
) -> ApiResult<(StatusCode, axum::Json<Replayed>)> {
    let status = match request.status.as_deref() {
        None | Some("dead") => DeliveryStatus::Dead,
        Some("pending") => DeliveryStatus::Pending,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "status must be 'dead' (the default) or 'pending' (waiting for a retry), not '{other}'"
            )));
        }
    };
    if let (Some(since), Some(until)) = (request.since, request.until)
        && since > until
    {
        return Err(ApiError::invalid("since must not be later than until"));
    }
    require_active(&owned_webhook(&state, &principal, id).await?)?;
    let filter = ReplayFilter {
        organization_id: Some(principal.organization_id),
        webhook_id: Some(id),
        since: request.since.map(Timestamp::get),
        until: request.until.map(Timestamp::get),
        status,
    };
    if request.dry_run {
        let matching = state.store.count_replayable(&filter).await?;
        return Ok((StatusCode::OK, axum::Json(Replayed { replayed: 0, matching: Some(matching) })));
    }
    let replayed = state.store.replay_deliveries(&filter, domain::now()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Replayed { replayed, matching: None })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestSent {
    event_id: Uuid,
    delivery_id: Uuid,
}

/// Send a `webhook.test` event to this webhook only; follow it with GET /deliveries/{delivery_id}.
///
/// The event takes the normal path (outbox, fan-out, delivery); its one delivery has the event's id and
/// exists once fan-out has taken the event (within milliseconds while the queue is up).
#[utoipa::path(post, operation_id = "test_webhook", path = "/webhooks/{id}/test", tag = "deliveries", params(("id" = Uuid, Path)),
    responses((status = 202, body = TestSent, description = "a test delivery is queued"),
        (status = 409, body = ErrorBody, description = "the webhook is disabled; enable it first")))]
pub async fn send_test(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<TestSent>)> {
    let webhook = owned_webhook(&state, &principal, id).await?;
    require_active(&webhook)?;
    let data = serde_json::json!({"message": "a test event from Herald", "webhook_id": id});
    let mut event = emit::new_event(principal.organization_id, TEST_EVENT, &data.to_string(), domain::now());
    // Fan-out gives a test event one delivery, to this webhook, whatever its subscribed types, and gives
    // it the event's id.
    event.only_webhook = Some(id);
    let event_id = state.emitter.emit(event).await?.id;
    let delivery_id = event_id;
    Ok((StatusCode::ACCEPTED, axum::Json(TestSent { event_id, delivery_id })))
}

async fn owned_delivery(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<Delivery> {
    state
        .store
        .get_delivery(id)
        .await?
        .filter(|d| d.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("delivery not found"))
}

fn require_active(webhook: &Webhook) -> ApiResult<()> {
    if webhook.is_active {
        return Ok(());
    }
    let reason = webhook.disabled_reason.as_deref().unwrap_or("disabled");
    Err(ApiError::conflict(
        "webhook_disabled",
        format!("the webhook is disabled ({reason}); enable it with PATCH {{\"is_active\": true}} first"),
    ))
}

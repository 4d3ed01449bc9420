//! Recovery and re-fan-out (admins only): `POST /webhooks/{id}/recover` starts a recovery ("send this
//! endpoint everything since T that it has not received"), `GET /webhooks/{id}/recoveries/{recovery_id}`
//! shows its progress, and `POST /events/{id}/redeliver` fans one event out again to its current
//! subscribers. The work is `worker::recover`'s; this module validates and answers.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header::LOCATION},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::AdminAuth,
    extract::{Json, Path},
    input::Timestamp,
    webhooks::owned_webhook,
};
use crate::{
    domain,
    store::RecoveryProgress,
    worker::recover::{self, RecoveryRefused},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(start)).routes(routes!(progress)).routes(routes!(redeliver))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRecovery {
    /// Events created at or after this time.
    #[schema(value_type = DateTime<Utc>)]
    since: Timestamp,
    /// Events created at or before this time; now when absent. Must be later than `since`.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    until: Option<Timestamp>,
}

/// A recovery and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryView {
    id: Uuid,
    webhook_id: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// `running` until every event of the window was looked at and every delivery the recovery took on
    /// is finished (succeeded or dead); then `finished`.
    #[schema(example = "running")]
    status: &'static str,
    /// Whether every event of the window was looked at (`total` no longer grows).
    scanned: bool,
    /// Deliveries the recovery created or made due again so far.
    total: u64,
    /// Of those, succeeded.
    done: u64,
    /// Of those, dead (out of attempts).
    failed: u64,
    created_at: DateTime<Utc>,
}

impl From<RecoveryProgress> for RecoveryView {
    fn from(progress: RecoveryProgress) -> Self {
        let status = if progress.is_running() { "running" } else { "finished" };
        let recovery = progress.recovery;
        Self {
            id: recovery.id,
            webhook_id: recovery.webhook_id,
            since: recovery.since,
            until: recovery.until,
            status,
            scanned: recovery.scanned,
            total: progress.total,
            done: progress.done,
            failed: progress.failed,
            created_at: recovery.created_at,
        }
    }
}

/// Deliver to this endpoint every event of the window it has not successfully received.
///
/// Every event of the organization created in the window whose type the webhook subscribes to, including
/// those sent while it was disabled or before it existed: missing deliveries are created, dead ones and
/// those waiting for a retry are attempted now; succeeded ones are not sent again. Events meant for
/// another webhook (`webhook.test`) are skipped. The work is paced in the background; follow it at the
/// `Location` answered.
#[utoipa::path(post, operation_id = "recover_webhook", path = "/webhooks/{id}/recover", tag = "webhooks",
    params(("id" = Uuid, Path)), request_body = StartRecovery,
    responses(
        (status = 202, body = RecoveryView, description = "the recovery started; `Location` is its progress"),
        (status = 400, body = ErrorBody, description = "a time is invalid, or `since` is not earlier than `until`"),
        (status = 409, body = ErrorBody, description = "the webhook is disabled (`webhook_disabled`), or a recovery of it is running (`recovery_running`)"),
    ))]
pub async fn start(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Json(request): Json<StartRecovery>,
) -> ApiResult<(StatusCode, HeaderMap, axum::Json<RecoveryView>)> {
    let since = request.since.get();
    let until = request.until.map_or_else(domain::now, Timestamp::get);
    if since >= until {
        return Err(ApiError::invalid("since must be earlier than until (which defaults to now)"));
    }
    let webhook = owned_webhook(&state, &principal, id).await?;
    let started = recover::start_recovery(&state.store, &webhook, since, until).await.map_err(refused)?;
    let location = format!("/api/v1/webhooks/{id}/recoveries/{}", started.recovery.id);
    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, HeaderValue::from_str(&location).map_err(ApiError::internal)?);
    Ok((StatusCode::ACCEPTED, headers, axum::Json(started.into())))
}

/// A recovery's progress.
#[utoipa::path(get, operation_id = "get_recovery", path = "/webhooks/{id}/recoveries/{recovery_id}", tag = "webhooks",
    params(("id" = Uuid, Path), ("recovery_id" = Uuid, Path)),
    responses((status = 200, body = RecoveryView, description = "the recovery and its progress")))]
pub async fn progress(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path((id, recovery_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<axum::Json<RecoveryView>> {
    let webhook = owned_webhook(&state, &principal, id).await?;
    let progress = state
        .store
        .get_recovery(recovery_id)
        .await?
        .filter(|progress| progress.recovery.webhook_id == webhook.id)
        .ok_or_else(|| ApiError::not_found("recovery not found"))?;
    Ok(axum::Json(progress.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    event_id: Uuid,
    /// Deliveries created for subscribers that had none.
    created: u64,
    /// Dead deliveries, or deliveries waiting for a retry, attempted now.
    readied: u64,
}

/// Fan this event out again to the organization's current active subscribers of its type.
///
/// Subscribers that received it already are skipped, as are those whose delivery is in flight; a
/// subscriber without a delivery (e.g. a webhook added since) gets one; a dead delivery, or one waiting
/// for a retry, is attempted now.
#[utoipa::path(post, operation_id = "redeliver_event", path = "/events/{id}/redeliver", tag = "events",
    params(("id" = Uuid, Path)),
    responses((status = 202, body = Redelivered, description = "the deliveries created or made due now")))]
pub async fn redeliver(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<Redelivered>)> {
    let event = state
        .store
        .get_event(id)
        .await?
        .filter(|event| event.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("event not found"))?;
    let readied = recover::redeliver(&state.store, &event).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Redelivered { event_id: id, created: readied.created, readied: readied.readied }),
    ))
}

fn refused(refusal: RecoveryRefused) -> ApiError {
    match refusal {
        RecoveryRefused::EmptyWindow => ApiError::invalid(refusal.to_string()),
        RecoveryRefused::Disabled => ApiError::conflict("webhook_disabled", refusal.to_string()),
        RecoveryRefused::Running(_) => ApiError::conflict("recovery_running", refusal.to_string()),
        RecoveryRefused::Store(error) => error.into(),
    }
}

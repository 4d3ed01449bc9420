//! Webhook subscriptions (admins only, per organization): create, list, read, update, delete, and rotate
//! the signing secret. The secret is returned only when created and when rotated; at rest it is sealed
//! ([`crate::crypto::SecretBox`]). URLs pass the SSRF policy before they are stored.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::AdminAuth,
    extract::{Json, OptionalJson, Path, Query},
    input::{Line, Prose},
    page::{PageQuery, next_cursor},
};
use crate::{
    auth::Principal,
    domain::{self, EventFilter, UrlPolicy, WebhookSecret, WebhookUrl},
    store::{NewWebhook, SecretRotation, Webhook, WebhookChanges},
};

/// Longest description accepted.
const MAX_DESCRIPTION: usize = 500;
/// Default and longest time the previous secret keeps signing after a rotation.
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;
const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create, list))
        .routes(routes!(read, update, remove))
        .routes(routes!(rotate_secret))
}

/// Event types as a list, or as one comma-separated string (seed 000 stores them that way).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventList {
    List(Vec<String>),
    Text(String),
}

impl EventList {
    fn items(self) -> Vec<String> {
        match self {
            EventList::List(items) => items,
            EventList::Text(text) => vec![text],
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Absolute `https` URL of the endpoint.
    #[schema(value_type = String, example = "https://hooks.example.com/herald")]
    url: Line,
    /// Event types to receive, or `["*"]` for all.
    #[schema(example = json!(["item.created", "comment.created"]))]
    events: EventList,
    /// The signing secret: 16 to 128 printable characters, and if it starts with `whsec_`, `whsec_`
    /// followed by padded standard base64 of 24 to 64 bytes (the form the Standard Webhooks libraries
    /// decode); generated (`whsec_` + base64 of 32 random bytes) when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    secret: Option<Line>,
    /// Free text, at most 500 characters; tabs and line breaks are kept, other control characters
    /// refused.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    description: Option<Prose>,
}

/// A webhook as the API shows it (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    id: Uuid,
    organization_id: Uuid,
    url: String,
    events: Vec<String>,
    is_active: bool,
    description: Option<String>,
    /// Why Herald disabled the webhook (410 Gone, too many dead deliveries), if it did.
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Webhook> for WebhookView {
    fn from(webhook: Webhook) -> Self {
        Self {
            id: webhook.id,
            organization_id: webhook.organization_id,
            url: webhook.url,
            events: EventFilter::from_stored(&webhook.events).to_list(),
            is_active: webhook.is_active,
            description: webhook.description,
            disabled_reason: webhook.disabled_reason,
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

/// The created webhook and its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: WebhookView,
    /// The signing secret: keep it to verify signatures; it is not shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
    /// The secret as the Standard Webhooks libraries take it (`new Webhook(...)`): `secret` itself if
    /// it starts with `whsec_`; else `whsec_` + base64 of its raw bytes, the key that signs the
    /// `webhook-signature` header (`X-Signature` is keyed with `secret` as it is).
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    standard_webhooks_secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookView>,
    /// Webhooks on this page.
    count: usize,
    /// Webhooks of the organization, on every page.
    total: u64,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<Uuid>,
}

/// Subscribe an endpoint.
#[utoipa::path(post, operation_id = "create_webhook", path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhook, description = "the new webhook with its signing secret (shown only this once)"),
        (status = 400, body = ErrorBody, description = "invalid request; unknown event types are listed"),
        (status = 422, body = ErrorBody, description = "the URL is not allowed (plain http, private or metadata address)"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Json(request): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<CreatedWebhook>)> {
    let url = parse_url(&state, &request.url)?;
    let events = parse_events(&state, request.events)?;
    let description = parse_description(request.description)?;
    let secret = match request.secret {
        Some(text) => WebhookSecret::parse(&text).map_err(ApiError::invalid)?,
        None => WebhookSecret::generate(),
    };
    let id = Uuid::now_v7();
    let webhook = state
        .store
        .create_webhook(&NewWebhook {
            id,
            organization_id: principal.organization_id,
            url: url.as_str().to_string(),
            events: events.to_stored(),
            secret: state.secrets.seal(secret.expose(), id.as_bytes()),
            description,
            created_at: domain::now(),
        })
        .await?;
    state.webhooks.changed(id, principal.organization_id).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedWebhook {
            webhook: webhook.into(),
            secret: secret.expose().to_string(),
            standard_webhooks_secret: secret.standard_webhooks_form(),
        }),
    ))
}

/// List the organization's webhooks, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "list_webhooks", path = "/webhooks", tag = "webhooks", params(PageQuery),
    responses((status = 200, body = WebhookList, description = "a page of the organization's webhooks"),
        (status = 400, body = ErrorBody, description = "invalid limit or cursor")))]
pub async fn list(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<WebhookList>> {
    let page = paging.page()?;
    let webhooks = state.store.list_webhooks(principal.organization_id, page).await?;
    let next_cursor = next_cursor(&webhooks, page, |webhook| webhook.id);
    let total = state.store.count_webhooks(principal.organization_id).await?;
    let webhooks: Vec<WebhookView> = webhooks.into_iter().map(WebhookView::from).collect();
    Ok(axum::Json(WebhookList { count: webhooks.len(), total, webhooks, next_cursor }))
}

/// Read one webhook.
#[utoipa::path(get, operation_id = "get_webhook", path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookView, description = "the webhook")))]
pub async fn read(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(owned_webhook(&state, &principal, id).await?.into()))
}

/// The changes of seed 000's WebhookUpdate (url, events, is_active) plus description; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    url: Option<Line>,
    #[serde(default)]
    events: Option<EventList>,
    /// `true` re-enables a webhook Herald disabled, clearing its disabled_reason.
    #[serde(default)]
    is_active: Option<bool>,
    /// A new description; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<Prose>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<Prose>>, D::Error> {
    Option::<Prose>::deserialize(deserializer).map(Some)
}

/// Change a webhook.
#[utoipa::path(patch, operation_id = "update_webhook", path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView, description = "the webhook as changed"),
        (status = 422, body = ErrorBody, description = "the new URL is not allowed (plain http, private or metadata address)")))]
pub async fn update(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Json(request): Json<UpdateWebhook>,
) -> ApiResult<axum::Json<WebhookView>> {
    if request.url.is_none()
        && request.events.is_none()
        && request.is_active.is_none()
        && request.description.is_none()
    {
        return Err(ApiError::invalid("provide at least one of url, events, is_active, description"));
    }
    owned_webhook(&state, &principal, id).await?;
    let changes = WebhookChanges {
        url: request
            .url
            .map(|url| parse_url(&state, &url).map(|url| url.as_str().to_string()))
            .transpose()?,
        events: request
            .events
            .map(|events| parse_events(&state, events).map(|f| f.to_stored()))
            .transpose()?,
        disabled_reason: (request.is_active == Some(false)).then(|| "disabled by an admin".to_string()),
        is_active: request.is_active,
        description: request.description.map(parse_description).transpose()?,
        updated_at: domain::now(),
    };
    let webhook = state.store.update_webhook(id, &changes).await?.ok_or_else(not_found)?;
    state.webhooks.changed(id, principal.organization_id).await;
    Ok(axum::Json(webhook.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    #[schema(example = "webhook deleted")]
    message: &'static str,
}

/// Delete a webhook and its delivery history.
#[utoipa::path(delete, operation_id = "delete_webhook", path = "/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted, description = "the webhook is deleted")))]
pub async fn remove(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Deleted>> {
    owned_webhook(&state, &principal, id).await?;
    if !state.store.delete_webhook(id).await? {
        return Err(not_found());
    }
    state.webhooks.changed(id, principal.organization_id).await;
    Ok(axum::Json(Deleted { message: "webhook deleted" }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the old secret keeps signing deliveries, in seconds (default 86400, at most 604800).
    #[serde(default)]
    grace_period_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The new signing secret (`whsec_...`), shown this once.
    secret: String,
    /// The new secret as the Standard Webhooks libraries take it (the same `whsec_` string).
    standard_webhooks_secret: String,
    /// Until then deliveries carry signatures with both secrets: `X-Signature` keeps the old one and
    /// `X-Signature-Next` has the new one; `webhook-signature` has one `v1,` entry per secret. After it,
    /// `X-Signature` is the new secret's.
    previous_secret_expires_at: DateTime<Utc>,
}

/// Replace the signing secret; the old one keeps signing for a grace period.
#[utoipa::path(post, operation_id = "rotate_webhook_secret", path = "/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body(content = Option<RotateSecret>, description = "optional"),
    responses((status = 200, body = RotatedSecret, description = "the new secret; the previous one stays valid for the grace period")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    OptionalJson(request): OptionalJson<RotateSecret>,
) -> ApiResult<axum::Json<RotatedSecret>> {
    let grace = request.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(format!("grace_period_seconds must be at most {MAX_GRACE_SECONDS}")));
    }
    let webhook = owned_webhook(&state, &principal, id).await?;
    let current = state
        .secrets
        .open(&webhook.secret_key_id, &webhook.secret_ciphertext, id.as_bytes())
        .map_err(ApiError::internal)?;
    let secret = WebhookSecret::generate();
    let now = domain::now();
    let expires = now + chrono::Duration::seconds(i64::try_from(grace).unwrap_or(i64::MAX));
    let rotation = SecretRotation {
        secret: state.secrets.seal(secret.expose(), id.as_bytes()),
        previous: state.secrets.seal(&current, id.as_bytes()),
        previous_expires_at: expires,
        updated_at: now,
    };
    state.store.rotate_webhook_secret(id, &rotation).await?.ok_or_else(not_found)?;
    state.webhooks.changed(id, principal.organization_id).await;
    Ok(axum::Json(RotatedSecret {
        secret: secret.expose().to_string(),
        standard_webhooks_secret: secret.standard_webhooks_form(),
        previous_secret_expires_at: expires,
    }))
}

fn not_found() -> ApiError {
    ApiError::not_found("webhook not found")
}

/// The webhook, if it belongs to the caller's organization (404 otherwise, never 403).
pub(super) async fn owned_webhook(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<Webhook> {
    state
        .store
        .get_webhook(id)
        .await?
        .filter(|w| w.organization_id == principal.organization_id)
        .ok_or_else(not_found)
}

fn parse_url(state: &AppState, text: &Line) -> ApiResult<WebhookUrl> {
    WebhookUrl::parse(text.trim(), &state.target_policy).map_err(|refusal| match refusal {
        UrlPolicy::Syntax(message) => ApiError::bad_request("invalid_url", message),
        UrlPolicy::Policy(message) => ApiError::unprocessable("url_not_allowed", message),
    })
}

fn parse_events(state: &AppState, events: EventList) -> ApiResult<EventFilter> {
    state
        .catalog
        .parse_filter(&events.items())
        .map_err(|message| ApiError::bad_request("unknown_event_type", message))
}

fn parse_description(description: Option<Prose>) -> ApiResult<Option<String>> {
    let description =
        description.map(|text| text.into_string().trim().to_string()).filter(|text| !text.is_empty());
    if description.as_ref().is_some_and(|text| text.chars().count() > MAX_DESCRIPTION) {
        return Err(ApiError::invalid(format!("description must be at most {MAX_DESCRIPTION} characters")));
    }
    Ok(description)
}

//! API keys, exactly as seed 004 specifies them: create (the plaintext key is in this response and nowhere
//! else, ever), list the active keys with their usage, revoke. Every user manages their own keys; an admin
//! may act for another user of the organization (`?user_id=`) and list the whole organization's keys
//! (`?scope=organization`). Ids of other organizations are answered 404.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::Auth,
    extract::{Json, Path, Query},
    input::{Line, Timestamp},
    page::{PageQuery, next_cursor},
};
use crate::{
    auth::{Actor, Principal},
    domain::{self, ApiKeySecret, KeyPurpose, Role},
    store::{ApiKey, ApiKeyQuery, NewApiKey, User},
};

/// Longest key name accepted.
const MAX_NAME: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(create, list)).routes(routes!(revoke))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name to recognise the key by, 1 to 100 characters.
    #[schema(value_type = String, example = "My Production Key")]
    name: Line,
    /// What the key is for.
    purpose: KeyPurpose,
    /// When the key stops working (RFC 3339, in the future); never, if absent.
    #[serde(default)]
    #[schema(value_type = Option<DateTime<Utc>>)]
    expires_at: Option<Timestamp>,
}

/// The created key, with its plaintext shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    id: Uuid,
    user_id: Uuid,
    /// The plaintext key: store it securely, it will not be returned again.
    #[schema(example = "sk_live_...")]
    key: String,
    name: String,
    purpose: KeyPurpose,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ActAs {
    /// The user to act for (admins only; required for service-role tokens).
    user_id: Option<Uuid>,
    /// With a service-role token, the organization to act in, instead of `user_id`.
    #[expect(dead_code, reason = "read by the Auth extractor; declared here for the OpenAPI document")]
    organization_id: Option<Uuid>,
}

/// Create an API key.
#[utoipa::path(post, operation_id = "create_api_key", path = "/api-keys", tag = "api-keys", params(ActAs), request_body = CreateApiKey,
    responses(
        (status = 201, body = CreatedApiKey, description = "the new key; `key` is shown only this once"),
        (status = 400, body = ErrorBody, description = "invalid request, or user_id missing for a service-role token"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(act_as): Query<ActAs>,
    Json(request): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, axum::Json<CreatedApiKey>)> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid(format!("name must be 1 to {MAX_NAME} characters")));
    }
    let now = domain::now();
    let expires_at = request.expires_at.map(Timestamp::get);
    if expires_at.is_some_and(|expires| expires <= now) {
        return Err(ApiError::invalid("expires_at must be in the future"));
    }
    let user = target_user(&state, &principal, act_as.user_id).await?;
    let secret = ApiKeySecret::generate();
    let key = state
        .store
        .create_api_key(&NewApiKey {
            id: Uuid::now_v7(),
            organization_id: user.organization_id,
            user_id: user.id,
            key_hash: secret.hash(),
            prefix: secret.hint(),
            name: name.to_string(),
            purpose: request.purpose,
            expires_at,
            created_at: now,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedApiKey {
            id: key.id,
            user_id: key.user_id,
            key: secret.expose().to_string(),
            name: key.name,
            purpose: key.purpose,
            created_at: key.created_at,
            expires_at: key.expires_at,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// List this user's keys (admins only; required for service-role tokens unless scope=organization).
    user_id: Option<Uuid>,
    /// With a service-role token, the organization to act in.
    #[expect(dead_code, reason = "read by the Auth extractor; declared here for the OpenAPI document")]
    organization_id: Option<Uuid>,
    /// `organization` lists every key of the organization (admins only).
    #[param(value_type = Option<String>)]
    scope: Option<Line>,
    /// Only keys last used at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<Timestamp>,
    /// Only keys last used at or before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<Timestamp>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    id: Uuid,
    user_id: Uuid,
    name: String,
    purpose: KeyPurpose,
    /// The first characters of the key, to tell keys apart.
    #[schema(example = "sk_live_AbCdEfGh")]
    prefix: String,
    last_used_at: Option<DateTime<Utc>>,
    total_requests: i64,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    /// False once the key has expired.
    is_active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    keys: Vec<ApiKeyView>,
    /// Keys on this page.
    count: usize,
    /// Keys the query selects on all pages (one organization's keys: cheap to count).
    total: u64,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    next_cursor: Option<Uuid>,
}

/// List active (not revoked) API keys, newest first, a page at a time.
#[utoipa::path(get, operation_id = "list_api_keys", path = "/api-keys", tag = "api-keys", params(ListQuery, PageQuery),
    responses(
        (status = 200, body = ApiKeyList, description = "the caller's keys (the organization's with scope=organization), with their usage"),
        (status = 400, body = ErrorBody, description = "invalid query parameters (limit, cursor, scope, from/to)"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<ApiKeyList>> {
    let page = paging.page()?;
    let (used_from, used_to) = (query.from.map(Timestamp::get), query.to.map(Timestamp::get));
    if let (Some(from), Some(to)) = (used_from, used_to)
        && from > to
    {
        return Err(ApiError::bad_request("invalid_query", "from must not be later than to"));
    }
    let user_id = match query.scope.as_deref() {
        Some("organization") => {
            principal.require_admin()?;
            None
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("scope must be 'organization', not '{other}'"),
            ));
        }
        None => Some(target_user(&state, &principal, query.user_id).await?.id),
    };
    let query = ApiKeyQuery { organization_id: principal.organization_id, user_id, used_from, used_to, page };
    let keys = state.store.list_api_keys(&query).await?;
    let total = state.store.count_api_keys(&query).await?;
    let next_cursor = next_cursor(&keys, page, |key| key.id);
    let now = Utc::now();
    let keys: Vec<ApiKeyView> = keys.into_iter().map(|key| view(&state, key, now)).collect();
    Ok(axum::Json(ApiKeyList { count: keys.len(), total, keys, next_cursor }))
}

/// A key as listed, with usage not yet flushed added in.
fn view(state: &AppState, key: ApiKey, now: DateTime<Utc>) -> ApiKeyView {
    let (mut total_requests, mut last_used_at) = (key.total_requests, key.last_used_at);
    if let Some((requests, at)) = state.auth.usage().unflushed(key.id) {
        total_requests += requests;
        last_used_at = Some(last_used_at.map_or(at, |stored| stored.max(at)));
    }
    ApiKeyView {
        id: key.id,
        user_id: key.user_id,
        name: key.name,
        purpose: key.purpose,
        prefix: ApiKeySecret::display_prefix(&key.prefix),
        last_used_at,
        total_requests,
        created_at: key.created_at,
        is_active: key.is_active && key.expires_at.is_none_or(|expires| expires > now),
        expires_at: key.expires_at,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    #[schema(example = "API key revoked successfully")]
    message: &'static str,
}

/// Revoke an API key.
#[utoipa::path(delete, operation_id = "revoke_api_key", path = "/api-keys/{id}", tag = "api-keys", params(("id" = Uuid, Path, description = "key id")),
    responses(
        (status = 200, body = Message, description = "the key is revoked"),
        (status = 400, body = ErrorBody, description = "invalid UUID"),
        (status = 403, body = ErrorBody, description = "a non-admin revoking another user's key"),
        (status = 404, body = ErrorBody, description = "key not found"),
        (status = 409, body = ErrorBody, description = "already_revoked: the key was revoked before"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Message>> {
    let key = state
        .store
        .get_api_key(id)
        .await?
        .filter(|key| key.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("API key not found"))?;
    if !principal.is_admin() && principal.user_id() != Some(key.user_id) {
        return Err(ApiError::forbidden("only admins can revoke another user's API key"));
    }
    if key.revoked_at.is_some() || !state.store.revoke_api_key(id, domain::now()).await? {
        return Err(already_revoked());
    }
    state.auth.forget_key(id);
    Ok(axum::Json(Message { message: "API key revoked successfully" }))
}

/// A second revocation: the key exists and stays revoked; the caller learns it was so already.
fn already_revoked() -> ApiError {
    ApiError::conflict("already_revoked", "this API key is already revoked")
}

/// The user a key operation is for: the caller, or (admins) the user named by `user_id`.
async fn target_user(state: &AppState, principal: &Principal, requested: Option<Uuid>) -> ApiResult<User> {
    let id = match (principal.actor, requested) {
        (Actor::User { id, .. }, None) => id,
        (Actor::User { id, role: Role::Member }, Some(other)) if other != id => {
            return Err(ApiError::forbidden("only admins can act for another user"));
        }
        (_, Some(requested)) => requested,
        (Actor::ServiceRole, None) => {
            return Err(ApiError::bad_request(
                "user_id_required",
                "user_id is required: service-role tokens map to no user",
            ));
        }
    };
    state
        .store
        .get_user(id)
        .await?
        .filter(|user| user.organization_id == principal.organization_id)
        .ok_or_else(|| ApiError::not_found("user not found"))
}

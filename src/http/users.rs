//! Users of an organization (admins only): add, list, change (name, role, is_active) and deactivate.
//! Adding a user records a `user.added` event in the outbox, in the same transaction, so subscribed
//! webhooks hear about it (when the catalog has `user.added`). A deactivated user's keys and JWTs stop
//! working (`user_inactive`); an organization always keeps one active admin (`last_admin`, 409).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// The event announcing a new user.
const USER_ADDED: &str = "user.added";

use super::{
    ApiError, ApiResult, AppState, ErrorBody,
    auth::AdminAuth,
    extract::{Json, Path, Query},
    input::Line,
    page::{PageQuery, next_cursor},
};
use crate::{
    auth::Principal,
    domain::{self, Role},
    emit,
    store::{NewUser, StoreError, User, UserChanges},
};

/// Longest user name accepted.
const MAX_NAME: usize = 200;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(create, list)).routes(routes!(update, deactivate))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    #[schema(value_type = String, example = "ada@example.com")]
    email: Line,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    name: Option<Line>,
    role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: Uuid,
    organization_id: Uuid,
    email: String,
    name: Option<String>,
    role: Role,
    is_active: bool,
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            organization_id: user.organization_id,
            email: user.email,
            name: user.name,
            role: user.role,
            is_active: user.is_active,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
    /// Users on this page.
    count: usize,
    /// Users of the organization, on every page.
    total: u64,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<Uuid>,
}

/// Add a user to the organization (emits `user.added`).
#[utoipa::path(post, operation_id = "create_user", path = "/users", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, body = UserView, description = "the new user"),
        (status = 409, body = ErrorBody, description = "a user with this email exists in the organization"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Json(request): Json<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    let email = request.email.trim().to_lowercase();
    if !domain::is_plausible_email(&email) {
        return Err(ApiError::invalid("email must be an email address such as ada@example.com"));
    }
    let name = request.name.map(|name| name.trim().to_string()).filter(|name| !name.is_empty());
    if name.as_ref().is_some_and(|name| name.chars().count() > MAX_NAME) {
        return Err(ApiError::invalid(format!("name must be at most {MAX_NAME} characters")));
    }
    let now = domain::now();
    let user = NewUser {
        id: Uuid::now_v7(),
        organization_id: principal.organization_id,
        email,
        name,
        role: request.role,
        created_at: now,
    };
    let data =
        serde_json::json!({ "id": user.id, "email": user.email, "name": user.name, "role": user.role });
    // Announced only when the catalog has the type: a custom `events.types` without it means no one
    // may subscribe to it, so no such event exists.
    let announcement =
        state.catalog.parse(USER_ADDED).ok().map(|event_type| {
            emit::new_event(user.organization_id, event_type.as_str(), &data.to_string(), now)
        });
    let created =
        state.store.create_user(&user, announcement.as_ref()).await.map_err(|error| match error {
            StoreError::Conflict(_) => {
                ApiError::conflict("user_exists", "a user with this email already exists in the organization")
            }
            other => other.into(),
        })?;
    if let Some(announcement) = announcement {
        state.emitter.committed(announcement);
    }
    Ok((StatusCode::CREATED, axum::Json(created.into())))
}

/// List the organization's users, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "list_users", path = "/users", tag = "users", params(PageQuery),
    responses((status = 200, body = UserList, description = "a page of the organization's users"),
        (status = 400, body = ErrorBody, description = "invalid limit or cursor")))]
pub async fn list(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Query(paging): Query<PageQuery>,
) -> ApiResult<axum::Json<UserList>> {
    let page = paging.page()?;
    let users = state.store.list_users(principal.organization_id, page).await?;
    let next_cursor = next_cursor(&users, page, |user| user.id);
    let total = state.store.count_users(principal.organization_id).await?;
    let users: Vec<UserView> = users.into_iter().map(UserView::from).collect();
    Ok(axum::Json(UserList { count: users.len(), total, users, next_cursor }))
}

/// The changes of `PATCH /users/{id}`; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// 1 to 200 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    name: Option<Line>,
    #[serde(default)]
    role: Option<Role>,
    /// `false` deactivates the user (as DELETE does); `true` reactivates them.
    #[serde(default)]
    is_active: Option<bool>,
}

/// Change a user's name, role or activity. Their keys follow at once on this instance (within
/// `auth.key_cache_ttl` on the others).
#[utoipa::path(patch, operation_id = "update_user", path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "user id")), request_body = UpdateUser,
    responses(
        (status = 200, body = UserView, description = "the user as changed"),
        (status = 400, body = ErrorBody, description = "invalid body or name"),
        (status = 404, body = ErrorBody, description = "no such user in the organization"),
        (status = 409, body = ErrorBody, description = "last_admin: the change would leave the organization without an active admin"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
    Json(request): Json<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let name = match request.name {
        None => None,
        Some(name) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_NAME {
                return Err(ApiError::invalid(format!("name must be 1 to {MAX_NAME} characters")));
            }
            Some(name.to_string())
        }
    };
    let changes = UserChanges { name, role: request.role, is_active: request.is_active };
    Ok(axum::Json(change_user(&state, &principal, id, &changes).await?.into()))
}

/// Deactivate a user: their API keys and JWTs answer 401 `user_inactive` from now on. The user and
/// their keys are kept (PATCH `{"is_active": true}` brings them back).
#[utoipa::path(delete, operation_id = "deactivate_user", path = "/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "user id")),
    responses(
        (status = 200, body = UserView, description = "the user, deactivated"),
        (status = 404, body = ErrorBody, description = "no such user in the organization"),
        (status = 409, body = ErrorBody, description = "last_admin: the user is the organization's last active admin"),
    ))]
pub async fn deactivate(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<UserView>> {
    let changes = UserChanges { is_active: Some(false), ..UserChanges::default() };
    Ok(axum::Json(change_user(&state, &principal, id, &changes).await?.into()))
}

/// Applies `changes` to a user of the caller's organization and forgets what authentication cached of them.
async fn change_user(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    changes: &UserChanges,
) -> ApiResult<User> {
    let not_found = || ApiError::not_found("user not found");
    state
        .store
        .get_user(id)
        .await?
        .filter(|user| user.organization_id == principal.organization_id)
        .ok_or_else(not_found)?;
    let user = state.store.update_user(id, changes).await.map_err(|error| match error {
        StoreError::Conflict(_) => ApiError::conflict(
            "last_admin",
            "the organization must keep an active admin: promote or reactivate another admin first",
        ),
        other => other.into(),
    })?;
    state.auth.forget_user(id).await;
    user.ok_or_else(not_found)
}

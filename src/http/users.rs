//! Users of an organization (admins only). Adding a user records a `user.added` event in the outbox, in
//! the same transaction, so subscribed webhooks hear about it (when the catalog has `user.added`).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

/// The event announcing a new user.
const USER_ADDED: &str = "user.added";

use super::{ApiError, ApiResult, AppState, ErrorBody, auth::AdminAuth, extract::Json, input::Line};
use crate::{
    domain::{self, Role},
    emit,
    store::{NewUser, StoreError, User},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(create, list))
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
    count: usize,
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
    if name.as_ref().is_some_and(|name| name.chars().count() > 200) {
        return Err(ApiError::invalid("name must be at most 200 characters"));
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

/// List the organization's users.
#[utoipa::path(get, operation_id = "list_users", path = "/users", tag = "users",
    responses((status = 200, body = UserList, description = "the organization's users")))]
pub async fn list(
    State(state): State<AppState>,
    AdminAuth(principal): AdminAuth,
) -> ApiResult<axum::Json<UserList>> {
    let users: Vec<UserView> =
        state.store.list_users(principal.organization_id).await?.into_iter().map(UserView::from).collect();
    Ok(axum::Json(UserList { count: users.len(), users }))
}

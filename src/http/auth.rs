//! Authentication as axum extractors: a handler that takes [`Auth`] runs only for an authenticated
//! caller, one that takes [`AdminAuth`] only for an admin. They read the credential and the service-role
//! target from the request and hand them to [`crate::auth::Authenticator`]; their rejections are API
//! errors (an [`crate::auth::AuthError`] converted by `From`).

use axum::{extract::FromRequestParts, http::request::Parts};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::auth::{Principal, ServiceTarget};

/// Any authenticated caller.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Auth(pub Principal);

/// An authenticated admin (a user with the admin role, or the service role).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminAuth(pub Principal);

impl AdminAuth {
    /// An admin principal authenticated elsewhere (a console session), refused as the extractor refuses
    /// a non-admin.
    pub(crate) fn of(principal: Principal) -> Result<Self, ApiError> {
        principal.require_admin()?;
        Ok(AdminAuth(principal))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = credential(parts)?;
        let target = service_target(parts)?;
        Ok(Auth(state.auth.authenticate(credential, target).await?))
    }
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        principal.require_admin()?;
        Ok(AdminAuth(principal))
    }
}

/// The token from `Authorization: Bearer ...` or `X-API-Key`.
fn credential(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized(
                "invalid_authorization",
                "the Authorization header must be `Bearer <API key or JWT>`",
            ));
        }
        return Ok(token.trim());
    }
    if let Some(value) = parts.headers.get("x-api-key") {
        return Ok(value.to_str().unwrap_or_default().trim());
    }
    Err(ApiError::unauthorized(
        "missing_credentials",
        "authentication required: send Authorization: Bearer <API key or JWT>, or X-API-Key: <API key>",
    ))
}

/// `user_id` and `organization_id` from the query string, for service-role tokens.
fn service_target(parts: &Parts) -> Result<ServiceTarget, ApiError> {
    let mut target = ServiceTarget::default();
    let Some(query) = parts.uri.query() else { return Ok(target) };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "user_id" => &mut target.user_id,
            "organization_id" => &mut target.organization_id,
            _ => continue,
        };
        let id = Uuid::parse_str(&value)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{name} must be a UUID")))?;
        *slot = Some(id);
    }
    Ok(target)
}

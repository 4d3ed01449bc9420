//! The API's one error type. Every rejection, from a handler, an extractor, the router's fallback or a
//! middleware, becomes `{"error": "<message>", "code": "<machine_code>"}` with its status. Server errors
//! are logged with their cause chain; the client gets a generic message.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{auth::AuthError, batch::BatchError, store::StoreError};

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    #[schema(example = "API key revoked")]
    pub error: String,
    /// What went wrong, for programs.
    #[schema(example = "api_key_revoked")]
    pub code: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, source: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A request field failed validation; the message names the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this API key; slow down",
        );
        error.retry_after = Some(retry_after_seconds.max(1));
        error
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// A failure that is Herald's fault: logged in full, answered generically.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut error = Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error");
        error.source = Some(source.into());
        error
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message the client is shown (generic for a 5xx).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs a server error (with its cause, which the client never sees); other errors are the
    /// client's and are not logged.
    pub(crate) fn report(&self) {
        if self.status.is_server_error() {
            match &self.source {
                Some(source) => {
                    tracing::error!(code = self.code, error = format!("{source:#}"), "request failed")
                }
                // 503s (database down, shutting down) come in floods and are reported elsewhere.
                None if self.status == StatusCode::SERVICE_UNAVAILABLE => {
                    tracing::debug!(code = self.code, message = %self.message, "request failed")
                }
                None => tracing::warn!(code = self.code, message = %self.message, "request failed"),
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Other(source) => ApiError::internal(source),
            error => ApiError::from_store_error(&error),
        }
    }
}

/// A store error that reached the handler through a group commit: the same answers as a direct one
/// (`503 database_unavailable` during an outage, on every endpoint).
impl From<BatchError<StoreError>> for ApiError {
    fn from(error: BatchError<StoreError>) -> Self {
        match error {
            BatchError::Failed(error) => ApiError::from_store_error(&error),
            BatchError::Miscounted { .. } => ApiError::internal(error),
            BatchError::Closed => {
                ApiError::unavailable("shutting_down", "Herald is shutting down; retry shortly")
            }
        }
    }
}

impl ApiError {
    fn from_store_error(error: &StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(what) => {
                ApiError::conflict("conflict", format!("conflicts with an existing record ({what})"))
            }
            StoreError::Unavailable(reason) => {
                // The outage itself is logged once (`outage::DATABASE`), not once per request.
                tracing::debug!(%reason, "database unavailable");
                ApiError::unavailable("database_unavailable", "the database is unavailable; retry shortly")
            }
            // The boundary (`http::input`) refuses what the databases cannot hold; this is the net
            // under it: the request is at fault, never Herald.
            StoreError::Invalid(message) => ApiError::bad_request(
                "invalid_value",
                format!("a value in the request cannot be stored: {message}"),
            ),
            StoreError::Other(source) => ApiError::internal(anyhow::anyhow!("{source:#}")),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated { code, message } => ApiError::unauthorized(code, message),
            AuthError::Forbidden { message } => ApiError::forbidden(message),
            AuthError::RateLimited { retry_after_seconds } => {
                ApiError::too_many_requests(retry_after_seconds)
            }
            AuthError::BadTarget { code, message } => ApiError::bad_request(code, message),
            AuthError::NotFound { message } => ApiError::not_found(message),
            AuthError::Store(error) => error.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.report();
        let body = ErrorBody { error: self.message, code: self.code.to_string() };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_auth_refusal_keeps_its_status_and_code() {
        let cases = [
            (
                AuthError::unauthorized("api_key_revoked", "API key revoked"),
                StatusCode::UNAUTHORIZED,
                "api_key_revoked",
            ),
            (AuthError::forbidden("admins only"), StatusCode::FORBIDDEN, "forbidden"),
            (AuthError::too_many_requests(3), StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            (
                AuthError::bad_request("user_id_required", "user_id is required"),
                StatusCode::BAD_REQUEST,
                "user_id_required",
            ),
            (AuthError::not_found("user not found"), StatusCode::NOT_FOUND, "not_found"),
            (
                AuthError::Store(StoreError::Unavailable("down".into())),
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                AuthError::Store(StoreError::Invalid("invalid byte sequence".into())),
                StatusCode::BAD_REQUEST,
                "invalid_value",
            ),
        ];
        for (error, status, code) in cases {
            let error = ApiError::from(error);
            assert_eq!((error.status(), error.code()), (status, code));
        }
        let batched = ApiError::from(BatchError::Failed(Arc::new(StoreError::Unavailable("down".into()))));
        assert_eq!(
            (batched.status(), batched.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
        );
        let limited = ApiError::from(AuthError::too_many_requests(3)).into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
    }
}

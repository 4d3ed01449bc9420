//! Why authentication or authorization refused a caller. Each refusal carries the machine `code` and the
//! message the API answers with; the HTTP layer picks the status from the kind (`From<AuthError> for
//! ApiError` in `http::error`), so this module knows nothing of HTTP.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No valid credential: missing, malformed, unknown, revoked, expired, or its owner is deactivated.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// Authenticated, but the caller's role does not allow this.
    #[error("{message}")]
    Forbidden { message: String },
    /// The key's request budget is spent; a token is available again after `retry_after_seconds`.
    #[error("too many requests for this API key; slow down")]
    RateLimited { retry_after_seconds: u64 },
    /// A service-role token named its target badly (or not at all).
    #[error("{message}")]
    BadTarget { code: &'static str, message: String },
    /// The user or organization a service-role token names does not exist.
    #[error("{message}")]
    NotFound { message: String },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    pub(crate) fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated { code, message: message.into() }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden { message: message.into() }
    }

    pub(crate) fn too_many_requests(retry_after_seconds: u64) -> Self {
        Self::RateLimited { retry_after_seconds }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadTarget { code, message: message.into() }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound { message: message.into() }
    }
}

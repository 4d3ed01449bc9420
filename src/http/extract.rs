//! Extractors that answer malformed input with [`ApiError`] (and so with the JSON error shape) instead
//! of axum's plain-text rejections: JSON bodies, path parameters and query strings. Messages name the
//! field and the form it takes, not the parser's wording (`expires_at: premature end of input`); request
//! bodies refuse unknown fields (`deny_unknown_fields`), and the refusal names them.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::error::ApiError;

/// A JSON request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

/// The body size limit (`server.max_body_bytes`), as a request extension, for the 413 message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

/// What the extractors need to know of the request once its body is taken.
struct BodyContext {
    limit: Option<usize>,
    webhook: bool,
}

impl BodyContext {
    fn of(request: &Request) -> Self {
        Self {
            limit: request.extensions().get::<BodyLimit>().map(|limit| limit.0),
            webhook: request.uri().path().contains("/webhooks/"),
        }
    }

    fn too_large(&self) -> ApiError {
        let message = match self.limit {
            Some(limit) => {
                format!("request body is larger than the limit of {limit} bytes (server.max_body_bytes)")
            }
            None => "request body is larger than the limit (server.max_body_bytes)".to_string(),
        };
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// A body that parsed as JSON but not into the request type.
    fn invalid(&self, detail: &str) -> ApiError {
        let mut message = format!("invalid request body: {}", clear_detail(detail));
        if self.webhook && detail.contains("unknown field `secret`") {
            message.push_str("; a webhook's secret changes with POST /api/v1/webhooks/{id}/rotate-secret");
        }
        ApiError::invalid(message)
    }
}

/// serde's `field: parser message at line L column C`, with the parser messages of chrono and uuid
/// replaced by the form the field takes, and the refusals of [`super::input`] (`must ...`) after the
/// field's name.
fn clear_detail(detail: &str) -> String {
    const TIME: [&str; 7] = [
        "premature end of input",
        "input contains invalid characters",
        "input is out of range",
        "input is not enough for unique date and time",
        "trailing input",
        "no possible date and time matching input",
        "bad or unsupported format string",
    ];
    let head = detail.split(" at line ").next().unwrap_or(detail);
    let Some((field, problem)) = head.split_once(": ") else { return detail.to_string() };
    if TIME.iter().any(|message| problem.starts_with(message)) {
        format!("{field} must be an RFC 3339 time such as 2030-01-31T12:00:00Z")
    } else if problem.contains("urn:uuid:") || problem.starts_with("invalid length: expected length 32") {
        format!("{field} must be a UUID such as 01a20562-11e0-76a6-aa33-890561b0b265")
    } else if problem.starts_with("must ") {
        format!("{field} {problem}")
    } else {
        detail.to_string()
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The content type, the size limit and the syntax first, then the shape, then the fields.
        let context = BodyContext::of(&request);
        let axum::Json(raw) = axum::Json::<Box<RawValue>>::from_request(request, state)
            .await
            .map_err(|rejection| json_rejection(&context, rejection))?;
        require_object(raw.get())?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(raw.get().as_bytes())
            .map_err(|rejection| json_rejection(&context, rejection))?;
        Ok(Json(value))
    }
}

/// Every request body is an object: serde would otherwise read an array as a struct's fields by
/// position (`[null, null]` as a `Replay`).
fn require_object(json: &str) -> Result<(), ApiError> {
    if json.trim_start().starts_with('{') {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid request body: expected a JSON object"))
    }
}

fn json_rejection(context: &BodyContext, rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            let text = error.body_text();
            let detail = text
                .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                .unwrap_or(&text);
            context.invalid(detail)
        }
        JsonRejection::JsonSyntaxError(error) => {
            let text = error.body_text();
            let detail = text.strip_prefix("Failed to parse the request body as JSON: ").unwrap_or(&text);
            ApiError::bad_request("malformed_json", format!("request body is not valid JSON: {detail}"))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::bad_request(
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => context.too_large(),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// An optional JSON body: an empty body is `T::default()` (for endpoints whose every field is optional).
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let context = BodyContext::of(&request);
        let body = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                context.too_large()
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let raw: Box<RawValue> = serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request("malformed_json", format!("request body is not valid JSON: {error}"))
        })?;
        require_object(raw.get())?;
        // As `Json` reads its type: the refusal names the field.
        let axum::Json(value) = axum::Json::<T>::from_bytes(raw.get().as_bytes())
            .map_err(|rejection| json_rejection(&context, rejection))?;
        Ok(OptionalJson(value))
    }
}

/// Path parameters (a malformed id is a 400 naming the problem).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let message = if text.contains("UUID") || text.contains("uuid") {
                    "invalid UUID in the path".to_string()
                } else {
                    format!("invalid path parameter: {text}")
                };
                Err(ApiError::bad_request("invalid_path", message))
            }
        }
    }
}

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                let detail = clear_detail(detail);
                Err(ApiError::bad_request("invalid_query", format!("invalid query parameters: {detail}")))
            }
        }
    }
}

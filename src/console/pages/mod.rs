//! The console's pages, one module per resource. Each handler takes the [`Session`] (and, for a form,
//! the [`super::forms::CsrfForm`]), calls the API's handler function for the work, and renders what it
//! answered; an API error becomes the error page with the API's status and message.

pub(crate) mod deliveries;
pub(crate) mod events;
pub(crate) mod keys;
pub(crate) mod overview;
pub(crate) mod signin;
pub(crate) mod users;
pub(crate) mod webhooks;

use axum::{
    http::{StatusCode, Uri},
    response::{IntoResponse, Redirect, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{render, session::Session};
use crate::http::{ApiError, auth::AdminAuth};

/// What a page handler does: a page, or an API error to show.
pub(crate) type PageResult = Result<Response, ApiError>;

/// The answer of an API handler as JSON, as the API would have sent it.
pub(crate) trait Answer {
    fn json(self) -> Value;
}

impl<T: Serialize> Answer for axum::Json<T> {
    fn json(self) -> Value {
        serde_json::to_value(self.0).unwrap_or(Value::Null)
    }
}

impl<T: Serialize> Answer for (StatusCode, axum::Json<T>) {
    fn json(self) -> Value {
        self.1.json()
    }
}

/// One of the API's request types, from the JSON a form was turned into (refused as the API refuses
/// a body: `400` naming the field).
pub(crate) fn request<T: DeserializeOwned>(json: Value) -> Result<T, ApiError> {
    serde_json::from_value(json).map_err(|error| ApiError::invalid(format!("invalid form: {error}")))
}

/// The session's principal as an admin, or the API's 403.
pub(crate) fn admin(session: &Session) -> Result<AdminAuth, ApiError> {
    AdminAuth::of(session.principal)
}

/// Shows the page, or the error page for the API's refusal.
pub(crate) fn shown(session: &Session, result: PageResult) -> Response {
    result.unwrap_or_else(|error| render::error_page(Some(session), &error))
}

/// After a form: back to `to` with a notice (`?done=CODE`, a fixed message, see [`notice`]).
pub(crate) fn back(to: &str, done: &str) -> Response {
    let separator = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{separator}done={done}")).into_response()
}

/// The notice of `?done=CODE` (fixed text: a link cannot make the console say anything else).
pub(crate) fn notice(uri: &Uri) -> Option<&'static str> {
    let done = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "done")
        .map(|(_, value)| value.into_owned())?;
    Some(match done.as_str() {
        "updated" => "Saved.",
        "enabled" => "The webhook is enabled.",
        "disabled" => "The webhook is disabled.",
        "deleted" => "The webhook is deleted.",
        "test" => "A test event is on its way; this page follows its delivery.",
        "retried" => "The delivery is queued for another attempt.",
        "replayed" => "The dead deliveries are queued again.",
        "revoked" => "The API key is revoked: it is refused from now on.",
        "user_added" => "The user is added.",
        "user_updated" => "The user is changed.",
        _ => return None,
    })
}

/// The `?name=` value of a URI, if present and not blank.
pub(crate) fn param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(key, value)| key == name && !value.trim().is_empty())
        .map(|(_, value)| value.into_owned())
}

/// Any other path under `/console` (`/console/` is the overview's other name).
pub(crate) async fn not_found(axum::extract::OriginalUri(uri): axum::extract::OriginalUri) -> Response {
    if uri.path() == "/console/" {
        return Redirect::permanent("/console").into_response();
    }
    render::error_page(None, &ApiError::not_found(format!("no console page at {}", uri.path())))
}

/// An id from the path (a malformed one is the API's `400 invalid_path`).
pub(crate) fn path_id(text: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::bad_request("invalid_path", "invalid UUID in the path"))
}

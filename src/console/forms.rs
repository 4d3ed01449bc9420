//! What the console reads from requests: posted forms, checked for CSRF ([`CsrfForm`]: the session's
//! token in the hidden `csrf` field, and a same-origin request by `Sec-Fetch-Site` and `Origin`), and
//! filter query strings ([`query`]), handed to the API's own request types so that the API's rules
//! check them. A refused form is a 403 page.

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, StatusCode, Uri, header},
    response::Response,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{render, session::Session};
use crate::http::{ApiError, AppState};

/// A posted form's fields, in order (a field may repeat: the event picker's checkboxes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The first value of `name`, if present and not blank.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// Every non-blank value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// A JSON object of the named fields that are present (as strings), for an API request type.
    pub(crate) fn object(&self, names: &[&str]) -> Map<String, Value> {
        names
            .iter()
            .filter_map(|name| self.get(name).map(|value| ((*name).to_string(), Value::from(value))))
            .collect()
    }
}

/// A posted form that carried the session's CSRF token and came from the console itself.
#[derive(Debug, Clone)]
pub(crate) struct CsrfForm(pub(crate) Fields);

/// Refuses a request another site made: `Sec-Fetch-Site` (sent by current browsers) must be
/// `same-origin` (or `none`: typed by the user), and an `Origin` must be this host. `Origin: null` says
/// nothing (browsers send it for every form of a page whose referrer policy is `no-referrer`, as the
/// console's is); the CSRF token and the SameSite=Strict cookie still stand.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|value: &axum::http::HeaderValue| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (text("origin"), text(header::HOST.as_str())) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The page a refused form gets.
pub(crate) fn forbidden_form(session: Option<&Session>) -> Response {
    render::error_page(
        session,
        &ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "this form is not from this console session (missing or wrong CSRF token, or another site); \
             reload the page and try again",
        ),
    )
}

/// Reads a form body (`application/x-www-form-urlencoded`).
pub(crate) async fn read_form(request: Request, state: &AppState) -> Result<Fields, ApiError> {
    let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(request, state)
        .await
        .map_err(|rejection| ApiError::bad_request("invalid_form", rejection.body_text()))?;
    Ok(Fields(pairs))
}

impl FromRequest<AppState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(forbidden_form(Some(&session)));
        }
        let fields = read_form(Request::from_parts(parts, body), state)
            .await
            .map_err(|error| render::error_page(Some(&session), &error))?;
        match fields.get("csrf") {
            Some(token) if super::session::same_token(token, &session.csrf) => Ok(CsrfForm(fields)),
            _ => Err(forbidden_form(Some(&session))),
        }
    }
}

/// A filter query string as one of the API's query types: blank fields are dropped (a form sends
/// them), and a `datetime-local` time (`2030-01-31T12:00`, no zone) is read as UTC.
pub(crate) fn query<T: DeserializeOwned>(uri: &Uri, times: &[&str]) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(key, value)| {
                let value = if times.contains(&key.as_ref()) { as_utc(&value) } else { value.into_owned() };
                (key.into_owned(), value)
            })
            .collect();
    let text = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
    let uri: Uri =
        format!("/?{text}").parse().map_err(|_| ApiError::bad_request("invalid_query", "invalid query"))?;
    axum::extract::Query::<T>::try_from_uri(&uri).map(|axum::extract::Query(value)| value).map_err(
        |rejection| {
            let text = rejection.body_text();
            let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
            ApiError::bad_request("invalid_query", format!("invalid filter: {detail}"))
        },
    )
}

/// `2030-01-31T12:00` (a `datetime-local` field) as `2030-01-31T12:00:00Z`; other text as it is.
pub(crate) fn as_utc(value: &str) -> String {
    let bytes = value.as_bytes();
    if value.len() == 16 && bytes.get(10) == Some(&b'T') && bytes.get(13) == Some(&b':') {
        format!("{value}:00Z")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_same_origin_requests_pass() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "no Origin, no Sec-Fetch-Site: a non-browser client");
        headers.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        headers.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn filters_drop_blank_fields_and_read_local_times_as_utc() {
        #[derive(serde::Deserialize)]
        struct Filter {
            status: Option<String>,
            since: Option<String>,
        }
        let uri: Uri = "/x?status=&since=2030-01-31T12%3A00".parse().expect("uri");
        let filter: Filter = query(&uri, &["since"]).expect("parsed");
        assert_eq!((filter.status, filter.since.as_deref()), (None, Some("2030-01-31T12:00:00Z")));
    }
}

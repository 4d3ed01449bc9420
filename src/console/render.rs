//! Pages from templates: the minijinja environment (templates embedded from `templates/`, HTML
//! auto-escaping on, so every value a page shows, a receiver's response body included, is text and
//! never markup), the frame every page shares (who is signed in, their CSRF token, the asset URLs), and
//! the error page an [`ApiError`] becomes.

use std::sync::LazyLock;

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use minijinja::{Environment, Value};
use serde_json::{Map, json};

use super::{assets, session::Session};
use crate::http::ApiError;

/// Every template, by name.
const TEMPLATES: [(&str, &str); 14] = [
    ("layout.html", include_str!("templates/layout.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    ("secret.html", include_str!("templates/secret.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("replay.html", include_str!("templates/replay.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    ("keys.html", include_str!("templates/keys.html")),
];
const MORE_TEMPLATES: [(&str, &str); 2] = [
    ("key_created.html", include_str!("templates/key_created.html")),
    ("users.html", include_str!("templates/users.html")),
];

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut environment = Environment::new();
    // `.html` templates escape every value (minijinja's default by extension); asserted in the tests.
    for (name, source) in TEMPLATES.into_iter().chain(MORE_TEMPLATES) {
        if let Err(error) = environment.add_template(name, source) {
            tracing::error!(template = name, %error, "a console template does not compile");
        }
    }
    environment.add_filter("when", when);
    environment
});

/// An RFC 3339 time as `2026-12-02 01:02:03 UTC`; nothing as a dash.
fn when(value: Value) -> String {
    match value.as_str() {
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(time) => time.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            Err(_) => text.to_string(),
        },
        None if value.is_none() || value.is_undefined() => "—".to_string(),
        None => value.to_string(),
    }
}

/// Renders `template` with `context` (a JSON object) inside the frame of `session`.
pub(crate) fn page(
    session: Option<&Session>,
    status: StatusCode,
    template: &str,
    context: serde_json::Value,
) -> Response {
    let mut frame = match context {
        serde_json::Value::Object(map) => map,
        _ => Map::new(),
    };
    frame.insert("css".into(), json!(assets::url("console.css")));
    frame.insert("js".into(), json!(assets::url("console.js")));
    frame.insert("favicon".into(), json!(assets::url("favicon.svg")));
    if let Some(session) = session {
        frame.insert(
            "me".into(),
            json!({"email": session.email, "admin": session.is_admin(), "csrf": session.csrf}),
        );
    }
    let rendered = ENVIRONMENT
        .get_template(template)
        .and_then(|template| template.render(Value::from(minijinja::value::Serde(&frame))));
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(template, error = %format!("{error:#}"), "a console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, Html("<!doctype html><title>Error</title><p>internal error"))
                .into_response()
        }
    }
}

/// The page an API error becomes: its status, its message and code.
pub(crate) fn error_page(session: Option<&Session>, error: &ApiError) -> Response {
    error.report();
    page(
        session,
        error.status(),
        "error.html",
        json!({"status": error.status().as_u16(), "code": error.code(), "message": error.message()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_values_are_escaped() {
        for (name, _) in TEMPLATES.into_iter().chain(MORE_TEMPLATES) {
            assert!(ENVIRONMENT.get_template(name).is_ok(), "{name} compiles");
        }
        let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let response = page(
            None,
            StatusCode::BAD_REQUEST,
            "error.html",
            json!({"status": 400, "code": "x", "message": hostile}),
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let html = ENVIRONMENT
            .get_template("error.html")
            .expect("template")
            .render(Value::from(minijinja::value::Serde(
                json!({"status": 400, "code": "x", "message": hostile}),
            )))
            .expect("rendered");
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(Value::from("2026-12-02T01:02:03.456+01:00")), "2026-12-02 00:02:03 UTC");
        assert_eq!(when(Value::from(())), "—");
    }
}

//! The HTTP skeleton: health, readiness, request ids, JSON errors for every rejection, shutdown.

use reqwest::{Method, StatusCode};

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    health_and_readiness_answer,
    unknown_routes_and_methods_are_json_errors,
    shutdown_finishes_cleanly
);

async fn health_and_readiness_answer(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let response = app.client.get(app.url("/healthz")).send().await.expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"), "every response carries a request id");
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["queue"], "ok");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.headers()["x-request-id"], "trace-me-42", "a caller's request id is kept");
}

async fn unknown_routes_and_methods_are_json_errors(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, body) = app.call(Method::GET, "/api/v1/no-such-thing", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["error"], "no route for GET /api/v1/no-such-thing");
    let (status, body) = app.call(Method::DELETE, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "method_not_allowed");
}

async fn shutdown_finishes_cleanly(mode: Mode) {
    let mut app = TestApp::spawn(mode).await;
    app.stop().await;
    assert!(
        app.client.get(app.url("/healthz")).send().await.is_err(),
        "the listener is closed after shutdown"
    );
}

/// Readiness names the failing dependency: the test's PostgreSQL database is dropped under a running
/// server, and `/readyz` must answer 503 naming the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_a_failing_database() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn(Mode::Services).await;
    let (status, _) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    app.database.drop_now().await;
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "not_ready");
    assert!(body["error"].as_str().unwrap_or_default().contains("database"), "{body}");
    assert_eq!(body["checks"]["queue"], "ok", "{body}");
}

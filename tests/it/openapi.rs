//! The OpenAPI document: served, OpenAPI 3.1, equal to the checked-in docs/openapi.json, and every
//! operation documents its error responses with the error schema.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::app::{Mode, TestApp};

#[tokio::test]
async fn served_document_equals_the_checked_in_copy() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let (status, served) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served["openapi"], "3.1.0");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json exists"))
            .expect("docs/openapi.json is JSON");
    assert!(
        served == checked_in,
        "docs/openapi.json is out of date: regenerate it with `cargo run --bin herald -- openapi > docs/openapi.json`"
    );
}

#[test]
fn every_operation_documents_its_errors() {
    let document: Value = serde_json::from_str(&herald::http::openapi::document()).expect("JSON");
    let mut operations = 0;
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            operations += 1;
            assert!(operation["operationId"].is_string(), "{method} {path} has an operationId");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|code| code.starts_with('2')), "{method} {path} documents success");
            if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
                let unauthorized =
                    &responses.get("401").unwrap_or_else(|| panic!("{method} {path} documents 401"));
                let schema = &unauthorized["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path}");
            }
        }
    }
    assert!(operations >= 17, "{operations} operations");
}

/// OpenAPI 3.1 requires a `description` on every response object (strict validators and client
/// generators refuse the document without one); the same check `openapi-spec-validator` makes in CI.
#[test]
fn every_response_has_a_description() {
    let document: Value = serde_json::from_str(&herald::http::openapi::document()).expect("JSON");
    let mut missing = Vec::new();
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let described = response["description"].as_str().is_some_and(|text| !text.trim().is_empty());
                if !described && response.get("$ref").is_none() {
                    missing.push(format!("{method} {path} {status}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "responses without a description: {missing:?}");
}

/// `/healthz` and `/readyz` answer without credentials, so the document says they need none (the
/// document-wide `security` would otherwise make clients send a key, and fuzzers expect a 401).
#[test]
fn health_endpoints_need_no_credentials() {
    let document: Value = serde_json::from_str(&herald::http::openapi::document()).expect("JSON");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(document["paths"][path]["get"]["security"], serde_json::json!([]), "{path}");
    }
}

/// A JSON array is not an object body: serde would read `[null, null]` as a struct's fields by
/// position (found by schemathesis: `POST /webhooks/{id}/replay` answered 202 to it).
#[tokio::test]
async fn an_array_body_is_refused() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let (status, webhook) = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(serde_json::json!({"url": "https://hooks.example.com/a", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let replay = format!("/api/v1/webhooks/{}/replay", webhook["id"].as_str().expect("id"));
    for (path, body) in [
        (replay.as_str(), serde_json::json!([null, null])),
        ("/api/v1/users", serde_json::json!(["ada@example.com", null, "member"])),
    ] {
        let (status, answer) = app.admin(Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["code"], "invalid_request", "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains("JSON object"), "{path}: {answer}");
    }
}

//! Input the databases cannot store, refused at the boundary with a `400` naming the field, in both modes:
//! NUL and other control characters in every text field, body, header, query parameter and path id, and
//! times outside 1970..=9999. Event data is JSON kept as sent: its `\u0000` and lone-surrogate escapes
//! are stored and read back byte for byte. Under the boundary, a value the database refuses is a `400
//! invalid_value`, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    control_characters_are_refused_in_every_text_field,
    control_characters_are_refused_in_queries_headers_and_paths,
    descriptions_keep_tabs_and_newlines,
    times_outside_1970_to_9999_are_refused,
    escapes_in_event_data_are_stored_as_sent,
    event_data_nested_over_100_levels_is_refused,
    values_the_database_refuses_are_invalid_not_internal,
);

/// Asserts a `400` in the error shape whose message names `field`.
fn assert_refused(what: &str, (status, body): &(StatusCode, Value), field: &str) {
    assert_eq!(*status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert!(body["code"].is_string(), "{what}: {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(field), "{what}: the message names {field}: {body}");
}

async fn control_characters_are_refused_in_every_text_field(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (_, webhook) = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://hooks.example.com/a", "events": ["*"]})),
        )
        .await;
    let webhook = webhook["id"].as_str().expect("webhook id").to_string();
    let patch = format!("/api/v1/webhooks/{webhook}");
    let hook = |fields: Value| {
        let mut body = json!({"url": "https://hooks.example.com/b", "events": ["item.created"]});
        body.as_object_mut().expect("object").extend(fields.as_object().expect("object").clone());
        body
    };
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, "/api/v1/webhooks".into(), hook(json!({"description": "a\u{0}b"})), "description"),
        (Method::POST, "/api/v1/webhooks".into(), hook(json!({"description": "\u{1b}[31m"})), "description"),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            hook(json!({"url": "https://hooks.example.com/\u{0}"})),
            "url",
        ),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            hook(json!({"url": "https://hooks.exa\tmple.com/"})),
            "url",
        ),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            hook(json!({"secret": "a-secret-that-is-long\u{0}enough"})),
            "secret",
        ),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            hook(json!({"events": ["item.created\u{0}"]})),
            "event type",
        ),
        (Method::PATCH, patch.clone(), json!({"description": "a\u{0}b"}), "description"),
        (Method::PATCH, patch.clone(), json!({"url": "https://hooks.example.com/\u{0}"}), "url"),
        (Method::PATCH, patch.clone(), json!({"events": "item.created\u{0}"}), "event type"),
        (Method::POST, "/api/v1/api-keys".into(), json!({"name": "k\u{0}", "purpose": "custom"}), "name"),
        (Method::POST, "/api/v1/api-keys".into(), json!({"name": "k\u{7f}", "purpose": "custom"}), "name"),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"email": "a\u{0}@b.example", "role": "member"}),
            "email",
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"email": "ada@b.example", "name": "A\u{0}", "role": "member"}),
            "name",
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            json!({"email": "ada@b.example", "name": "Ada\nLovelace", "role": "member"}),
            "name",
        ),
        (Method::POST, "/api/v1/events".into(), json!({"event": "item.created\u{0}", "data": {}}), "event"),
        (
            Method::POST,
            "/api/v1/events".into(),
            json!({"event": "item.created", "data": {}, "idempotency_key": "k\u{0}"}),
            "idempotency_key",
        ),
        (Method::POST, format!("{patch}/replay"), json!({"status": "dead\u{0}"}), "status"),
    ];
    for (method, path, body, field) in cases {
        let what = format!("{method} {path} {body}");
        let answer = app.admin(method, &path, Some(body)).await;
        assert_refused(&what, &answer, field);
    }
    let (_, users) = app.admin(Method::GET, "/api/v1/users", None).await;
    assert_eq!(users["count"], 1, "no user was created: {users}");
    let (_, webhooks) = app.admin(Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(webhooks["count"], 1, "no webhook was created: {webhooks}");
}

async fn control_characters_are_refused_in_queries_headers_and_paths(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let webhook = app.store_webhook("https://hooks.example.com/a", |sealed| sealed).await;
    let cases = [
        ("/api/v1/events?type=%00", "type"),
        ("/api/v1/events?type=item.created%00", "type"),
        ("/api/v1/events?from=%00", "from"),
        ("/api/v1/events?to=2030-01-01T00:00:00Z%00", "to"),
        ("/api/v1/events?cursor=%00", "cursor"),
        ("/api/v1/events?limit=%00", "limit"),
        ("/api/v1/api-keys?scope=%00", "scope"),
        ("/api/v1/api-keys?from=%00", "from"),
        ("/api/v1/api-keys?user_id=%00", "user_id"),
        (&format!("/api/v1/webhooks/{webhook}/deliveries?status=%00"), "status"),
        ("/api/v1/events/%00", "UUID"),
        ("/api/v1/webhooks/%00", "UUID"),
        ("/api/v1/deliveries/%00", "UUID"),
    ];
    for (path, field) in cases {
        let answer = app.admin(Method::GET, path, None).await;
        assert_refused(&format!("GET {path}"), &answer, field);
    }
    let response = app
        .client
        .post(app.url("/api/v1/events"))
        .header("Authorization", format!("Bearer {}", app.admin_key))
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", "tab\tkey")
        .body(json!({"event": "item.created", "data": {}}).to_string())
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let body = crate::support::json_of(response).await;
    assert_refused("an Idempotency-Key header with a tab", &(status, body), "Idempotency-Key");
}

async fn descriptions_keep_tabs_and_newlines(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let description = "line one\n\tline two\r\nZoë ✓";
    let (status, created) = app
        .admin(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "https://hooks.example.com/a", "events": ["*"], "description": description})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["description"], description);
    let (status, key) = app
        .admin(Method::POST, "/api/v1/api-keys", Some(json!({"name": "Zoë's key ✓", "purpose": "custom"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
}

async fn times_outside_1970_to_9999_are_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let webhook = app.store_webhook("https://hooks.example.com/a", |sealed| sealed).await;
    let replay = format!("/api/v1/webhooks/{webhook}/replay");
    let key = |expires_at: &str| json!({"name": "k", "purpose": "custom", "expires_at": expires_at});
    let bodies = [
        (replay.as_str(), json!({"since": "-262143-01-01T00:00:00Z"}), "since"),
        (replay.as_str(), json!({"since": "0001-01-01T00:00:00Z"}), "since"),
        (replay.as_str(), json!({"until": "1969-12-31T23:59:59Z"}), "until"),
        (replay.as_str(), json!({"until": "+262142-12-31T23:59:59Z"}), "until"),
        ("/api/v1/api-keys", key("+262142-12-31T23:59:59Z"), "expires_at"),
        ("/api/v1/api-keys", key("10000-01-01T00:00:00Z"), "expires_at"),
    ];
    for (path, body, field) in bodies {
        let answer = app.admin(Method::POST, path, Some(body.clone())).await;
        assert_refused(&format!("POST {path} {body}"), &answer, field);
    }
    for path in [
        "/api/v1/events?from=1969-12-31T23:59:59Z",
        "/api/v1/events?to=0000-01-01T00:00:00Z",
        "/api/v1/api-keys?from=0001-01-01T00:00:00Z",
        "/api/v1/api-keys?to=1900-01-01T00:00:00Z",
    ] {
        let field = if path.contains("from=") { "from" } else { "to" };
        let answer = app.admin(Method::GET, path, None).await;
        assert_refused(&format!("GET {path}"), &answer, field);
    }
    // The ends of the range are accepted and read back as sent.
    let (status, replayed) = app
        .admin(
            Method::POST,
            &replay,
            Some(json!({"since": "1970-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let (status, created) =
        app.admin(Method::POST, "/api/v1/api-keys", Some(key("9999-12-31T23:59:59.999999Z"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["expires_at"], "9999-12-31T23:59:59.999999Z");
    let (status, listed) = app.admin(Method::GET, "/api/v1/events?from=1970-01-01T00:00:00Z", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
}

/// JSON escapes are not characters until decoded: `\u0000` and a lone `\ud800` in event data are plain
/// ASCII in the stored payload, which every endpoint and every read gets byte for byte.
async fn escapes_in_event_data_are_stored_as_sent(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let data = r#"{"nul": "a\u0000b", "lone": "\ud800", "pair": "\ud83d\ude00", "controls": "\u001b\t"}"#;
    let response = app
        .client
        .post(app.url("/api/v1/events"))
        .header("Authorization", format!("Bearer {}", app.admin_key))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"event": "item.created", "data": {data}}}"#))
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let accepted = crate::support::json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id: uuid::Uuid = accepted["id"].as_str().expect("id").parse().expect("uuid");
    let stored = app.state.store.get_event(id).await.expect("read").expect("stored");
    assert!(stored.payload.ends_with(&format!(r#""data":{data}}}"#)), "as sent: {}", stored.payload);
    let read = app
        .client
        .get(app.url(&format!("/api/v1/events/{id}")))
        .header("Authorization", format!("Bearer {}", app.admin_key))
        .send()
        .await
        .expect("sent");
    assert_eq!(read.status(), StatusCode::OK);
    let text = read.text().await.expect("body");
    assert!(text.contains(data), "read back as sent: {text}");
    let (status, _) = app.admin(Method::GET, "/api/v1/events", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Valid JSON nested 10,000 deep would be stored and delivered, and then neither Herald's readers nor
/// most receivers could parse it: event data nests at most 100 levels.
async fn event_data_nested_over_100_levels_is_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let send = |depth: usize| {
        let data = format!(r#"{{"a": {}1{}}}"#, "[".repeat(depth - 1), "]".repeat(depth - 1));
        app.client
            .post(app.url("/api/v1/events"))
            .header("Authorization", format!("Bearer {}", app.admin_key))
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"event": "item.created", "data": {data}}}"#))
            .send()
    };
    for depth in [101, 10_000] {
        let response = send(depth).await.expect("sent");
        let status = response.status();
        let body = crate::support::json_of(response).await;
        assert_refused(&format!("data {depth} deep"), &(status, body), "data");
    }
    let response = send(100).await.expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED, "100 levels are accepted");
}

/// The net under the boundary: a value that reaches the store and that the database cannot hold is
/// `StoreError::Invalid` (PostgreSQL: SQLSTATE 22021 for a NUL in text), which the API answers `400
/// invalid_value`. SQLite holds any text, so there the same write succeeds.
async fn values_the_database_refuses_are_invalid_not_internal(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let id = uuid::Uuid::now_v7();
    let webhook = herald::store::NewWebhook {
        id,
        organization_id: app.organization_id,
        url: "https://hooks.example.com/a".into(),
        events: "*".into(),
        secret: app.state.secrets.seal("a-secret-that-is-long-enough", id.as_bytes()),
        description: Some("a\u{0}b".into()),
        created_at: herald::domain::now(),
    };
    let result = app.state.store.create_webhook(&webhook).await;
    match mode {
        Mode::Embedded => assert!(result.is_ok(), "SQLite stores any text: {result:?}"),
        Mode::Services => {
            let error = result.expect_err("PostgreSQL text cannot hold NUL");
            assert!(matches!(error, herald::store::StoreError::Invalid(_)), "{error:?}");
            let api = herald::http::ApiError::from(error);
            assert_eq!((api.status().as_u16(), api.code()), (400, "invalid_value"));
            // The database answered: the store is still reachable and usable.
            let (status, _) = app.admin(Method::GET, "/api/v1/webhooks", None).await;
            assert_eq!(status, StatusCode::OK);
        }
    }
}

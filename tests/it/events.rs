//! Event ingestion and reading: 202 and the stored payload, idempotency, validation, the body limit,
//! concurrent ingestion (group commit), listing with filters and a cursor, and organizations kept apart.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    accepted_events_are_stored_as_sent,
    idempotency_keys_return_the_first_event,
    a_reused_idempotency_key_is_refused,
    the_idempotency_key_header_is_accepted,
    bad_events_are_refused,
    bodies_over_the_limit_get_413,
    concurrent_events_are_all_committed,
    events_are_listed_with_filters_and_a_cursor,
);

const EVENTS: &str = "/api/v1/events";

pub async fn send(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.admin(Method::POST, EVENTS, Some(body)).await
}

async fn accepted_events_are_stored_as_sent(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let data =
        json!({"item_id": "42", "name": "Chair \u{1F4BA}", "tags": ["a", "b"], "nested": {"price": 12.5}});
    let (status, accepted) = send(&app, json!({"event": "item.created", "data": data})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["event"], "item.created");
    let id = accepted["id"].as_str().expect("id");
    assert!(accepted["timestamp"].is_string());

    let (status, event) = app.admin(Method::GET, &format!("{EVENTS}/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["data"], data);
    assert_eq!(event["organization_id"], app.organization_id.to_string());
    let stored = app.state.store.get_event(id.parse().expect("uuid")).await.expect("read").expect("stored");
    let payload: Value = serde_json::from_str(&stored.payload).expect("payload is JSON");
    assert_eq!(
        payload,
        json!({
            "id": id,
            "event": "item.created",
            "timestamp": accepted["timestamp"],
            "organization_id": app.organization_id.to_string(),
            "data": data,
        }),
        "the payload contract"
    );
    let (_, member) = app.user_with_key("member@test.example", "member").await;
    let (status, _) = app
        .call(Method::POST, EVENTS, Some(&member), Some(json!({"event": "comment.created", "data": {}})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "members send events too");
    let (status, types) = app.call(Method::GET, "/api/v1/event-types", Some(&member), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        types["event_types"],
        json!([
            "comment.created",
            "delivery.dead",
            "item.created",
            "item.deleted",
            "item.updated",
            "user.added",
            "webhook.disabled",
            "webhook.recovered",
            "webhook.test"
        ])
    );
}

async fn idempotency_keys_return_the_first_event(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let body = json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "order-7"});
    let (status, first) = send(&app, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, again) = send(&app, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "a repeat is answered 200");
    assert_eq!((&again["id"], &again["timestamp"]), (&first["id"], &first["timestamp"]));
    let (_, other) =
        send(&app, json!({"event": "item.created", "data": {}, "idempotency_key": "order-8"})).await;
    assert_ne!(other["id"], first["id"]);
    let (_, page) = app.admin(Method::GET, &format!("{EVENTS}?type=item.created"), None).await;
    assert_eq!(page["events"].as_array().expect("events").len(), 2, "the repeat created nothing");
    let (status, _) = send(&app, json!({"event": "item.created", "data": {}, "idempotency_key": ""})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The same key with another body is a mistake of the caller, never "accepted": 422, nothing created.
async fn a_reused_idempotency_key_is_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, first) =
        send(&app, json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "order-7"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    for body in [
        json!({"event": "item.created", "data": {"n": 2}, "idempotency_key": "order-7"}),
        json!({"event": "item.updated", "data": {"n": 1}, "idempotency_key": "order-7"}),
    ] {
        let (status, error) = send(&app, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["code"], "idempotency_key_reused", "{error}");
        assert!(error["error"].as_str().unwrap_or_default().contains("order-7"), "{error}");
    }
    let (status, again) =
        send(&app, json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "order-7"})).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]), "the same request is still a repeat");
    let (_, page) = app.admin(Method::GET, EVENTS, None).await;
    assert_eq!(page["events"].as_array().expect("events").len(), 1, "the reuses created nothing");
}

/// `Idempotency-Key: K` is the body's `idempotency_key: K`; both, and different, is a bad request.
async fn the_idempotency_key_header_is_accepted(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let post = |key: &'static str, body: Value| {
        let request = app
            .client
            .post(app.url(EVENTS))
            .bearer_auth(&app.admin_key)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_string());
        async move {
            let response = request.send().await.expect("sent");
            (response.status(), crate::support::json_of(response).await)
        }
    };
    let body = json!({"event": "item.created", "data": {"n": 1}});
    let (status, first) = post("h-1", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = post("h-1", body.clone()).await;
    assert_eq!((status, &again["id"]), (StatusCode::OK, &first["id"]), "a repeat by header");
    let (status, by_body) =
        send(&app, json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "h-1"})).await;
    assert_eq!(
        (status, &by_body["id"]),
        (StatusCode::OK, &first["id"]),
        "the header and the field are one key"
    );
    let (status, same) =
        post("h-1", json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "h-1"})).await;
    assert_eq!((status, &same["id"]), (StatusCode::OK, &first["id"]), "both, equal: fine");
    let (status, error) =
        post("h-1", json!({"event": "item.created", "data": {"n": 1}, "idempotency_key": "h-2"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["error"].as_str().unwrap_or_default().contains("Idempotency-Key"), "{error}");
    let (status, error) = post("h-1", json!({"event": "item.created", "data": {"n": 5}})).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
}

async fn bad_events_are_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, error) = send(&app, json!({"event": "item.exploded", "data": {}})).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_event_type")));
    assert!(
        error["error"].as_str().expect("message").contains("comment.created, delivery.dead, item.created"),
        "{error}"
    );
    for data in [json!([1, 2]), json!("text"), json!(7), Value::Null] {
        let (status, error) = send(&app, json!({"event": "item.created", "data": data})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{data}");
        assert!(error["error"].as_str().expect("message").contains("data"), "{error}");
    }
    for body in [json!({"event": "item.created"}), json!({"data": {}}), json!({"event": 5, "data": {}})] {
        let (status, _) = send(&app, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, error) = send(&app, json!({"event": "webhook.test", "data": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "webhook.test is reserved: {error}");
    let (status, _) =
        app.call(Method::POST, EVENTS, None, Some(json!({"event": "item.created", "data": {}}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn bodies_over_the_limit_get_413(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let big = "x".repeat(256 * 1024);
    let (status, error) = send(&app, json!({"event": "item.created", "data": {"blob": big}})).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    let fits = "x".repeat(200 * 1024);
    let (status, _) = send(&app, json!({"event": "item.created", "data": {"blob": fits}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "200 KiB fits");
}

async fn concurrent_events_are_all_committed(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let sends = (0..200).map(|i| {
        let (client, url, key) = (app.client.clone(), app.url(EVENTS), app.admin_key.clone());
        tokio::spawn(async move {
            // The 50 repeats send the same request again (the same key with other data would be a 422).
            let body = json!({"event": "item.updated", "data": {"i": i % 150}, "idempotency_key": format!("k{}", i % 150)});
            let response = client
                .post(url)
                .bearer_auth(key)
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("sent");
            (response.status(), crate::support::json_of(response).await["id"].as_str().map(String::from))
        })
    });
    let mut ids = std::collections::HashSet::new();
    for handle in sends.collect::<Vec<_>>() {
        let (status, id) = handle.await.expect("join");
        assert!(status == StatusCode::ACCEPTED || status == StatusCode::OK, "{status}");
        ids.insert(id.expect("id"));
    }
    assert_eq!(ids.len(), 150, "one event per idempotency key, even when sent concurrently");
    for id in &ids {
        let event = app.state.store.get_event(id.parse().expect("uuid")).await.expect("read");
        assert!(event.is_some(), "every acknowledged event is in the store");
    }
}

async fn events_are_listed_with_filters_and_a_cursor(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let event = if i % 2 == 0 { "item.created" } else { "comment.created" };
        let (_, accepted) = send(&app, json!({"event": event, "data": {"i": i}})).await;
        ids.push(accepted["id"].as_str().expect("id").to_string());
    }
    let (_, page) = app.admin(Method::GET, &format!("{EVENTS}?limit=3"), None).await;
    let first: Vec<&str> =
        page["events"].as_array().expect("events").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(first, vec![ids[6].as_str(), ids[5].as_str(), ids[4].as_str()], "newest first");
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, page) = app.admin(Method::GET, &format!("{EVENTS}?limit=3&cursor={cursor}"), None).await;
    let second: Vec<&str> =
        page["events"].as_array().expect("events").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(second, vec![ids[3].as_str(), ids[2].as_str(), ids[1].as_str()]);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, page) = app.admin(Method::GET, &format!("{EVENTS}?limit=3&cursor={cursor}"), None).await;
    assert_eq!(page["events"].as_array().expect("events").len(), 1);
    assert!(page["next_cursor"].is_null(), "the last page has no cursor");
    let (_, typed) = app.admin(Method::GET, &format!("{EVENTS}?type=comment.created"), None).await;
    assert_eq!(typed["events"].as_array().expect("events").len(), 3);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let (_, none) = app.admin(Method::GET, &format!("{EVENTS}?from={future}"), None).await;
    assert_eq!(none["events"].as_array().expect("events").len(), 0);
    for query in ["limit=0", "limit=201", "from=soon", "cursor=abc"] {
        let (status, _) = app.admin(Method::GET, &format!("{EVENTS}?{query}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
    }
    let (_, other) = herald::app::bootstrap(&app.state.store, "other", "boss@other.example", false)
        .await
        .expect("bootstrap")
        .expect("created");
    let (status, _) =
        app.call(Method::GET, &format!("{EVENTS}/{}", ids[0]), Some(other.expose()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another organization's event");
    let (_, theirs) = app.call(Method::GET, EVENTS, Some(other.expose()), None).await;
    assert_eq!(theirs["events"].as_array().expect("events").len(), 0);
    let (status, _) = app.admin(Method::GET, &format!("{EVENTS}/{}", Uuid::now_v7()), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A database outage answers `503 database_unavailable` on `POST /events` (group commit) as on every other
/// endpoint, and ingestion works again once the database is back. The proxy cuts only this app's
/// connections to the shared PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_503_on_ingestion() {
    if !Mode::services_available() {
        return;
    }
    let postgres = url::Url::parse(&std::env::var("HERALD_TEST_DATABASE_URL").expect("database"))
        .expect("HERALD_TEST_DATABASE_URL is a URL");
    let server = format!("{}:{}", postgres.host_str().expect("host"), postgres.port().unwrap_or(5432));
    let address = tokio::net::lookup_host(server).await.expect("resolve").next().expect("address");
    let proxy = crate::support::proxy::Proxy::start(address).await;
    let app = TestApp::spawn_with(Mode::Services, |settings| {
        let mut through_proxy = url::Url::parse(settings.database.url.expose()).expect("url");
        through_proxy.set_port(Some(proxy.address.port())).expect("port");
        settings.database.url = herald::config::Secret::new(through_proxy.to_string());
        settings.database.connect_timeout = herald::config::HumanDuration(std::time::Duration::from_secs(1));
    })
    .await;
    // The admin key is verified (and cached) while the database is up.
    let (status, _) = send(&app, json!({"event": "item.created", "data": {"before": true}})).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    proxy.down();
    let (status, refused) = send(&app, json!({"event": "item.created", "data": {"during": true}})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["code"], "database_unavailable", "{refused}");
    let (status, listed) = app.admin(Method::GET, EVENTS, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the same answer as a direct read: {listed}");
    assert_eq!(listed["code"], "database_unavailable");

    proxy.up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = send(&app, json!({"event": "item.created", "data": {"after": true}})).await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(std::time::Instant::now() < deadline, "ingestion did not recover: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A stopping PostgreSQL ends every open connection with `57P01 admin_shutdown`, which is what a request
/// in flight hears: `503 database_unavailable` too, not a 500. `pg_terminate_backend` sends the same to
/// the connection of a `POST /events` held, meanwhile, by an uncommitted row with its idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_terminates_answers_503() {
    use sqlx::{Connection, Executor};
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn(Mode::Services).await;
    let (status, _) = send(&app, json!({"event": "item.created", "data": {"before": true}})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut blocker = sqlx::PgConnection::connect(&app.database.url).await.expect("connect");
    blocker.execute("BEGIN").await.expect("begin");
    sqlx::query(
        "INSERT INTO events (id, organization_id, event_type, payload, idempotency_key, created_at) \
         VALUES ($1, $2, 'item.created', '{}', 'held', now())",
    )
    .bind(Uuid::now_v7())
    .bind(app.organization_id)
    .execute(&mut blocker)
    .await
    .expect("a row holding the key");
    let ingest = tokio::spawn({
        let (client, url, key) = (app.client.clone(), app.url(EVENTS), app.admin_key.clone());
        async move {
            let body = json!({"event": "item.created", "data": {"during": true}, "idempotency_key": "held"});
            let response = client
                .post(url)
                .header("Authorization", format!("Bearer {key}"))
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("sent");
            (response.status(), crate::support::json_of(response).await)
        }
    });
    let waiting = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO events%'";
    // Watched from a connection of its own: inside a transaction, pg_stat_activity is a snapshot.
    let mut watcher = sqlx::PgConnection::connect(&app.database.url).await.expect("connect");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pid: i32 = loop {
        if let Some(pid) = sqlx::query_scalar(waiting).fetch_optional(&mut watcher).await.expect("activity") {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the insert did not wait for the held key");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut watcher).await.expect("terminate");
    let (status, body) = ingest.await.expect("request task");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "database_unavailable", "{body}");
    blocker.execute("ROLLBACK").await.expect("rollback");
    let (status, body) = send(&app, json!({"event": "item.created", "data": {"after": true}})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the pool replaced the terminated connection: {body}");
}

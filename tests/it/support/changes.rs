//! The scenario behind "a webhook change acknowledged by the API governs every delivery attempted after
//! the response": run against one process (`tests/it/webhook_changes.rs`) and against two `herald-worker`
//! processes (`workers/tests/webhook_changes.rs`), with a webhook cache TTL long enough that only an
//! invalidation can explain a change being seen.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{app::TestApp, receiver::Receiver};

/// Long enough that a test finishing in time proves the cache was invalidated, not expired.
pub const LONG_TTL: Duration = Duration::from_secs(600);

const WAIT: Duration = Duration::from_secs(20);

/// The event ids a receiver got, in arrival order.
fn ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .arrivals()
        .iter()
        .map(|arrival| arrival.json()["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Sends one event and waits until `marker` (subscribed to everything, never changed) got it: fan-out
/// has then decided every delivery of that event.
async fn send_and_settle(app: &TestApp, marker: &Receiver) -> String {
    let id = app.send_event("item.created", json!({"n": 1})).await.to_string();
    let deadline = Instant::now() + WAIT;
    while !ids(marker).contains(&id) {
        assert!(Instant::now() < deadline, "the marker webhook never got event {id}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    id
}

async fn patch(app: &TestApp, webhook: uuid::Uuid, body: serde_json::Value) -> Instant {
    let (status, changed) =
        app.admin(Method::PATCH, &format!("/api/v1/webhooks/{webhook}"), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    Instant::now()
}

/// PATCH url, PATCH is_active (false, then true), DELETE, each followed at once by an event: the event
/// goes where the change says, or nowhere. `warm_up` events first fill every worker's cache. Returns
/// how long after the PATCH url response the event reached the new receiver.
pub async fn changes_govern_the_next_delivery(app: &TestApp, warm_up: usize) -> Duration {
    let (old, new, marker) = (Receiver::ok().await, Receiver::ok().await, Receiver::ok().await);
    app.subscribe(&marker, json!(["*"])).await;
    let webhook = app.subscribe(&old, json!(["*"])).await;
    for _ in 0..warm_up.max(1) {
        send_and_settle(app, &marker).await;
    }
    old.wait_for(warm_up.max(1), WAIT).await;

    // A new URL: the next event goes there, and only there.
    let answered = patch(app, webhook, json!({"url": new.url})).await;
    let moved = app.send_event("item.created", json!({"n": 2})).await.to_string();
    let arrival = new.wait_for(1, WAIT).await[0].at;
    let took = arrival.saturating_duration_since(answered);
    assert_eq!(ids(&new), [moved.as_str()], "the event after the change went to the new URL");
    send_and_settle(app, &marker).await;
    assert!(!ids(&old).contains(&moved), "the old URL got the event sent after the change");

    // Disabled: no delivery at all (not one that dies against the endpoint).
    new.wait_for(2, WAIT).await;
    patch(app, webhook, json!({"is_active": false})).await;
    let ignored = send_and_settle(app, &marker).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ids(&new).contains(&ignored), "a disabled webhook got an event");
    let deliveries = app.deliveries(webhook).await;
    assert!(
        deliveries.iter().all(|delivery| delivery["event_id"] != ignored.as_str()),
        "a delivery was made for a disabled webhook: {deliveries:?}"
    );

    // Enabled again: the next event is delivered.
    patch(app, webhook, json!({"is_active": true})).await;
    let resumed = app.send_event("item.created", json!({"n": 3})).await.to_string();
    new.wait_for(3, WAIT).await;
    assert_eq!(ids(&new)[2], resumed, "a re-enabled webhook missed the next event");

    // Deleted: nothing more.
    let (status, body) = app.admin(Method::DELETE, &format!("/api/v1/webhooks/{webhook}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = send_and_settle(app, &marker).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!ids(&new).contains(&after), "a deleted webhook got an event");
    took
}

//! Receivers answering bytes a database column cannot take as they are: a NUL character (which
//! PostgreSQL text cannot hold), invalid UTF-8, a UTF-16 surrogate encoded in UTF-8. Every attempt is
//! recorded with its body made storable (each offending byte replaced by U+FFFD), listed by the API, and
//! the delivery moves on (succeeded, or pending for its retry) instead of waiting for the sweeper.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        receiver::Receiver,
    },
};

in_both_modes!(hostile_response_bodies_are_recorded_made_storable);

const WAIT: Duration = Duration::from_secs(20);

/// A body as a receiver sends it, and as the API lists it.
const BODIES: [(&[u8], &str); 3] = [
    (b"ok\0done", "ok\u{FFFD}done"),
    (b"\xff\xfe not UTF-8", "\u{FFFD}\u{FFFD} not UTF-8"),
    (b"lone \xed\xa0\x80 surrogate", "lone \u{FFFD}\u{FFFD}\u{FFFD} surrogate"),
];

async fn hostile_response_bodies_are_recorded_made_storable(mode: Mode) {
    // A retry far off: a 500's delivery stays pending with its one attempt while the test reads it.
    let app = TestApp::spawn_with(mode, |settings| {
        settings.delivery.retry_schedule = "10m".parse().expect("schedule");
    })
    .await;
    // Every receiver gets the one event, so the hostile outcomes are recorded beside a plain one.
    let plain = Receiver::ok().await;
    let plain_webhook = app.subscribe(&plain, json!(["item.created"])).await;
    let mut hostile = Vec::new();
    for (body, stored) in BODIES {
        for status in [200, 500] {
            let receiver = Receiver::answering(body, move |_| (status, vec![], Duration::ZERO)).await;
            let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
            hostile.push((receiver, webhook, status, stored));
        }
    }
    app.send_event("item.created", json!({"id": "i-1"})).await;

    let first_attempt = |delivery: &Value| delivery["attempts"].as_i64().unwrap_or_default() >= 1;
    for (receiver, webhook, status, stored) in &hostile {
        receiver.wait_for(1, WAIT).await;
        let id = app.wait_deliveries(*webhook, 1).await[0]["id"].as_str().expect("id").to_string();
        let delivery = app.wait_delivery(&id, WAIT, first_attempt).await;
        let expected_status = if *status == 200 { "succeeded" } else { "pending" };
        assert_eq!(delivery["status"], expected_status, "status {status}, body {stored:?}: {delivery}");
        assert_eq!(delivery["last_status_code"], *status, "{delivery}");
        let attempt = &delivery["attempts_log"][0];
        assert_eq!(attempt["status_code"], *status, "{delivery}");
        assert_eq!(attempt["response_body"], *stored, "the body made storable: {delivery}");
        assert_eq!(attempt["error"], Value::Null, "{delivery}");
    }
    let plain_id = app.wait_deliveries(plain_webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    let delivery = app.wait_delivery(&plain_id, WAIT, first_attempt).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempts_log"][0]["response_body"], "received", "{delivery}");
}

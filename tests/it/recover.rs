//! Recover since (`POST /webhooks/{id}/recover`) and the re-fan-out of one event
//! (`POST /events/{id}/redeliver`), against receivers that verify every signature: a webhook disabled
//! for a window receives exactly the events it missed, none twice; a webhook added after an event gets
//! it on re-fan-out and no one else gets it again; refusals are 4xx with the error shape.

use std::{collections::HashMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        receiver::{Accepts, Arrival, Receiver},
    },
};

in_both_modes!(
    recovery_sends_exactly_the_missed_events,
    redeliver_reaches_only_the_new_subscriber,
    refusals_are_4xx,
    the_cli_recovers_and_redelivers,
);

const WAIT: Duration = Duration::from_secs(20);

/// How many requests each event id reached the receiver with.
fn by_event(arrivals: &[Arrival]) -> HashMap<Uuid, usize> {
    let mut counts = HashMap::new();
    for arrival in arrivals {
        let id: Uuid = arrival.json()["id"].as_str().expect("event id").parse().expect("uuid");
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn set_active(app: &TestApp, webhook: Uuid, active: bool) {
    let (status, body) = app
        .admin(Method::PATCH, &format!("/api/v1/webhooks/{webhook}"), Some(json!({"is_active": active})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Polls the recovery until it is finished; returns it.
async fn finished(app: &TestApp, webhook: Uuid, recovery: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, progress) =
            app.admin(Method::GET, &format!("/api/v1/webhooks/{webhook}/recoveries/{recovery}"), None).await;
        assert_eq!(status, StatusCode::OK, "{progress}");
        if progress["status"] == "finished" {
            return progress;
        }
        assert!(std::time::Instant::now() < deadline, "the recovery did not finish: {progress}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn recovery_sends_exactly_the_missed_events(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let since = herald::domain::now();
    let endpoint = Receiver::verifying(Accepts::XSignature).await;
    let webhook = app.subscribe(&endpoint, json!(["item.created"])).await;
    // Sees every event: once it has them, fan-out has taken them.
    let witness = Receiver::ok().await;
    app.subscribe(&witness, json!(["*"])).await;

    let before = [
        app.send_event("item.created", json!({"n": 1})).await,
        app.send_event("item.created", json!({"n": 2})).await,
    ];
    endpoint.wait_for(2, WAIT).await;
    witness.wait_for(2, WAIT).await;

    set_active(&app, webhook, false).await;
    let mut missed = Vec::new();
    for n in 3..6 {
        missed.push(app.send_event("item.created", json!({"n": n})).await);
    }
    // Not a subscribed type: never sent to the endpoint, recovered or not.
    app.send_event("comment.created", json!({"n": 6})).await;
    witness.wait_for(6, WAIT).await;
    set_active(&app, webhook, true).await;

    let after = app.send_event("item.created", json!({"n": 7})).await;
    endpoint.wait_for(3, WAIT).await;
    // Its delivery is recorded too (written with its outcome, a moment after the receiver has it), as
    // it would be long before anyone starts a recovery.
    app.wait_deliveries(webhook, 3).await;

    let (status, started) = app
        .admin(Method::POST, &format!("/api/v1/webhooks/{webhook}/recover"), Some(json!({"since": since})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["status"], "running", "{started}");
    let progress = finished(&app, webhook, started["id"].as_str().expect("id")).await;
    assert_eq!(
        (progress["total"].as_u64(), progress["done"].as_u64(), progress["failed"].as_u64()),
        (Some(3), Some(3), Some(0)),
        "{progress}"
    );
    assert_eq!(progress["scanned"], true);

    let arrivals = endpoint.wait_for(6, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = by_event(&endpoint.arrivals());
    let expected: HashMap<Uuid, usize> =
        before.iter().chain(&missed).chain([&after]).map(|id| (*id, 1)).collect();
    assert_eq!(counts, expected, "each event once, the missed ones included ({} requests)", arrivals.len());
    assert!(
        endpoint.arrivals().iter().all(|arrival| arrival.x_signature_ok && arrival.standard_ok),
        "every signature verified"
    );
}

async fn redeliver_reaches_only_the_new_subscriber(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let first = Receiver::verifying(Accepts::XSignature).await;
    let first_webhook = app.subscribe(&first, json!(["item.created"])).await;
    let event = app.send_event("item.created", json!({"n": 1})).await;
    first.wait_for(1, WAIT).await;
    let delivery = app.wait_deliveries(first_webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    app.wait_delivery(&delivery, WAIT, |d| d["status"] == "succeeded").await;

    let added = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&added, json!(["*"])).await;
    let (status, answer) = app.admin(Method::POST, &format!("/api/v1/events/{event}/redeliver"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!((answer["created"].as_u64(), answer["readied"].as_u64()), (Some(1), Some(0)), "{answer}");

    let arrivals = added.wait_for(1, WAIT).await;
    assert_eq!(arrivals[0].json()["id"], event.to_string());
    assert!(arrivals[0].x_signature_ok && arrivals[0].standard_ok, "verified");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.arrivals().len(), 1, "the first subscriber had it already");
    assert_eq!(added.arrivals().len(), 1);
}

async fn refusals_are_4xx(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let endpoint = Receiver::ok().await;
    let webhook = app.subscribe(&endpoint, json!(["*"])).await;
    let recover = format!("/api/v1/webhooks/{webhook}/recover");
    let cases = [
        (json!({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}), StatusCode::BAD_REQUEST),
        (json!({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}), StatusCode::BAD_REQUEST),
        (json!({"since": "yesterday"}), StatusCode::BAD_REQUEST),
        (json!({"until": "2026-01-01T00:00:00Z"}), StatusCode::BAD_REQUEST),
        (json!({"since": "2026-01-01T00:00:00Z", "extra": 1}), StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in cases {
        let (status, error) = app.admin(Method::POST, &recover, Some(body.clone())).await;
        assert_eq!(status, expected, "{body} → {error}");
        assert!(error["error"].is_string() && error["code"].is_string(), "{error}");
    }
    let since = json!({"since": "2026-01-01T00:00:00Z"});
    let unknown = Uuid::now_v7();
    let (status, error) =
        app.admin(Method::POST, &format!("/api/v1/webhooks/{unknown}/recover"), Some(since.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert!(error["code"].is_string(), "{error}");
    let (status, error) =
        app.admin(Method::GET, &format!("/api/v1/webhooks/{webhook}/recoveries/{unknown}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    let (status, error) = app.admin(Method::POST, &format!("/api/v1/events/{unknown}/redeliver"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    set_active(&app, webhook, false).await;
    let (status, error) = app.admin(Method::POST, &recover, Some(since.clone())).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::CONFLICT, Some("webhook_disabled")), "{error}");

    let (_, member_key) = app.user_with_key("member@example.com", "member").await;
    let (status, error) = app.call(Method::POST, &recover, Some(&member_key), Some(since)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
}

/// Runs `herald ARGS` against the app's database and queue (the app's workers do the work) and waits
/// for it to exit.
pub(crate) async fn run_herald(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(args).env_remove("RUST_LOG").env("HERALD_CONFIG_DIR", crate::support::empty_config_dir());
    for (name, value) in app.worker_env().into_iter().filter(|(_, value)| !value.is_empty()) {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().expect("herald runs")).await.expect("joined")
}

/// Runs `herald ARGS` ([`run_herald`]), which must succeed; returns stdout.
pub(crate) async fn herald(app: &TestApp, args: &[&str]) -> String {
    let output = run_herald(app, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

async fn the_cli_recovers_and_redelivers(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let since = herald::domain::now();
    let endpoint = Receiver::verifying(Accepts::XSignature).await;
    let webhook = app.subscribe(&endpoint, json!(["item.created"])).await;
    let witness = Receiver::ok().await;
    app.subscribe(&witness, json!(["*"])).await;
    set_active(&app, webhook, false).await;
    let missed = app.send_event("item.created", json!({"n": 1})).await;
    witness.wait_for(1, WAIT).await;
    set_active(&app, webhook, true).await;

    let printed =
        herald(&app, &["recover", "--webhook", &webhook.to_string(), "--since", &since.to_rfc3339()]).await;
    assert!(printed.trim_end().ends_with("finished: 1 deliveries, 1 done, 0 failed"), "{printed}");
    let arrivals = endpoint.wait_for(1, WAIT).await;
    assert_eq!(arrivals[0].json()["id"], missed.to_string());

    let added = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&added, json!(["*"])).await;
    let printed = herald(&app, &["events", "redeliver", &missed.to_string()]).await;
    assert!(printed.contains("1 deliveries created, 0 made due again"), "{printed}");
    assert_eq!(added.wait_for(1, WAIT).await[0].json()["id"], missed.to_string());
}

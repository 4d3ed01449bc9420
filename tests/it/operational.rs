//! Herald's operational events end to end, against receivers that verify signatures: `webhook.disabled`
//! when a 410 disables another webhook, `delivery.dead`, `webhook.recovered` once a failing webhook
//! succeeds again, the refusal of these types from applications, and the loop rule (a webhook subscribed
//! to `delivery.dead` whose own deliveries die ends the chain after one step).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        receiver::{Accepts, Arrival, Receiver},
    },
};

in_both_modes!(
    a_gone_endpoint_is_announced_to_subscribers_of_webhook_disabled,
    dead_deliveries_and_recoveries_are_announced,
    operational_events_about_operational_events_are_not_emitted,
);

const WAIT: Duration = Duration::from_secs(20);

fn no_retries(settings: &mut herald::config::Settings) {
    settings.delivery.retry_schedule = "".parse().expect("schedule");
    settings.delivery.disable_after_dead = 0;
}

/// The arrival's body, once its signatures are checked.
fn verified(arrival: &Arrival) -> Value {
    assert!(arrival.x_signature_ok && arrival.standard_ok, "signed with the watcher's secret");
    arrival.json()
}

async fn a_gone_endpoint_is_announced_to_subscribers_of_webhook_disabled(mode: Mode) {
    let app = TestApp::spawn_with(mode, no_retries).await;
    let watcher = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&watcher, json!(["webhook.disabled"])).await;
    let gone = Receiver::start(|_| (410, vec![], Duration::ZERO)).await;
    let gone_id = app.subscribe(&gone, json!(["item.created"])).await;
    app.send_event("item.created", json!({"n": 1})).await;
    let arrival = watcher.wait_for(1, WAIT).await.remove(0);
    let body = verified(&arrival);
    assert_eq!(
        (body["event"].as_str(), arrival.header("x-webhook-event")),
        (Some("webhook.disabled"), "webhook.disabled")
    );
    assert_eq!(body["organization_id"], app.organization_id.to_string());
    assert_eq!(body["data"]["webhook_id"], gone_id.to_string());
    assert!(body["data"]["reason"].as_str().expect("reason").contains("410"), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(watcher.arrivals().len(), 1, "only webhook.disabled was subscribed to");

    // Applications cannot send them.
    let (status, error) = app
        .admin(Method::POST, "/api/v1/events", Some(json!({"event": "webhook.disabled", "data": {}})))
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reserved_event_type"))
    );
    let (_, types) = app.admin(Method::GET, "/api/v1/event-types", None).await;
    for operational in ["delivery.dead", "webhook.disabled", "webhook.recovered"] {
        assert!(types.to_string().contains(operational), "{operational} is in the catalog: {types}");
    }
}

async fn dead_deliveries_and_recoveries_are_announced(mode: Mode) {
    let app = TestApp::spawn_with(mode, no_retries).await;
    let watcher = Receiver::verifying(Accepts::XSignature).await;
    app.subscribe(&watcher, json!(["delivery.dead", "webhook.recovered"])).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let flaky = Receiver::start(move |_| {
        (if flag.load(Ordering::SeqCst) { 200 } else { 500 }, vec![], Duration::ZERO)
    })
    .await;
    let flaky_id = app.subscribe(&flaky, json!(["item.created"])).await;
    let event = app.send_event("item.created", json!({"n": 1})).await;
    let dead = verified(&watcher.wait_for(1, WAIT).await[0]);
    assert_eq!(dead["event"], "delivery.dead");
    let delivery = app.wait_deliveries(flaky_id, 1).await[0].clone();
    assert_eq!(dead["data"]["delivery_id"], delivery["id"]);
    assert_eq!(dead["data"]["webhook_id"], flaky_id.to_string());
    assert_eq!(dead["data"]["event_id"], event.to_string());
    assert_eq!(
        (dead["data"]["event_type"].as_str(), dead["data"]["last_status_code"].as_i64()),
        (Some("item.created"), Some(500))
    );

    healthy.store(true, Ordering::SeqCst);
    app.send_event("item.created", json!({"n": 2})).await;
    let arrivals = watcher.wait_for(2, WAIT).await;
    let recovered = verified(&arrivals[1]);
    assert_eq!(
        (recovered["event"].as_str(), recovered["data"]["webhook_id"].as_str()),
        (Some("webhook.recovered"), Some(flaky_id.to_string().as_str()))
    );
    app.send_event("item.created", json!({"n": 3})).await;
    flaky.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(watcher.arrivals().len(), 2, "a webhook recovers once, not at every success");
}

async fn operational_events_about_operational_events_are_not_emitted(mode: Mode) {
    let app = TestApp::spawn_with(mode, no_retries).await;
    let failing = Receiver::start(|_| (500, vec![], Duration::ZERO)).await;
    let webhook = app.subscribe(&failing, json!(["*"])).await;
    app.send_event("item.created", json!({"n": 1})).await;
    // The item's delivery dies; its delivery.dead reaches the same endpoint and dies too; that second
    // death is about an operational event, so nothing announces it.
    failing.wait_for(2, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let deliveries = loop {
        let deliveries = app.deliveries(webhook).await;
        if deliveries.len() == 2 && deliveries.iter().all(|d| d["status"] == "dead") {
            break deliveries;
        }
        assert!(std::time::Instant::now() < deadline, "two dead deliveries expected: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Long enough for another round (a recording, a publication, a fan-out, an attempt) many times over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(failing.arrivals().len(), 2, "the chain ended: {deliveries:?}");
    assert_eq!(app.deliveries(webhook).await.len(), 2);
    let (_, events) = app.admin(Method::GET, "/api/v1/events?limit=100", None).await;
    let types: Vec<&str> =
        events["events"].as_array().expect("events").iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(types, vec!["delivery.dead", "item.created"], "newest first: {events}");
    let bodies: Vec<Value> = failing.arrivals().iter().map(Arrival::json).collect();
    assert_eq!(bodies[1]["event"], "delivery.dead");
}

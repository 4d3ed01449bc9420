//! Endpoint statistics end to end: a receiver answers a known sequence of 200s, 500s, a timeout and a
//! 410; `GET /webhooks/{id}/stats` then reports exactly those counts, classes, ratio, run of failures
//! and state, and latency percentiles equal to the histogram bounds of the attempts' recorded durations.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        receiver::Receiver,
    },
};

in_both_modes!(stats_match_a_known_mix_of_outcomes);

const WAIT: Duration = Duration::from_secs(20);
/// What the receiver answers, request by request (0: no answer within the delivery timeout).
const ANSWERS: [u16; 10] = [200, 200, 200, 500, 200, 200, 500, 200, 0, 410];
/// The histogram's bucket bounds (`store::LATENCY_BOUNDS_MS`).
const BOUNDS: [i64; 12] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 15_000];

/// The bound of the bucket holding the quantile of these durations, as the stats compute it.
fn bucket_percentile(durations: &[i64], quantile: f64) -> i64 {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    let duration = sorted[rank - 1];
    BOUNDS.iter().copied().find(|bound| duration <= *bound).unwrap_or(15_000)
}

async fn stats_match_a_known_mix_of_outcomes(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| {
        s.delivery.retry_schedule = "".parse().expect("schedule");
        s.delivery.disable_after_dead = 0;
        s.delivery.timeout = herald::config::HumanDuration(Duration::from_millis(500));
    })
    .await;
    let receiver = Receiver::start(|n| match ANSWERS[n.min(ANSWERS.len() - 1)] {
        0 => (200, vec![], Duration::from_secs(3)),
        status => (status, vec![], Duration::ZERO),
    })
    .await;
    let webhook = app.subscribe(&receiver, json!(["item.created"])).await;
    let stats = |window: &'static str| {
        let app = &app;
        async move {
            let (status, stats) = app
                .admin(Method::GET, &format!("/api/v1/webhooks/{webhook}/stats?window={window}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{stats}");
            stats
        }
    };
    let fresh = stats("1h").await;
    assert_eq!(
        (fresh["attempts"].as_u64(), &fresh["success_ratio"], &fresh["state"]),
        (Some(0), &Value::Null, &json!("healthy"))
    );

    let mut durations = Vec::new();
    for (n, _) in ANSWERS.iter().enumerate() {
        app.send_event("item.created", json!({"n": n})).await;
        let id = app.wait_deliveries(webhook, n + 1).await[0]["id"].as_str().expect("id").to_string();
        let done =
            app.wait_delivery(&id, WAIT, |d| d["status"] == "succeeded" || d["status"] == "dead").await;
        durations.push(done["attempts_log"][0]["duration_ms"].as_i64().expect("duration"));
        match n {
            2 => assert_eq!(stats("1h").await["state"], "healthy", "three successes"),
            8 => {
                let failing = stats("24h").await;
                assert_eq!(
                    (failing["state"].as_str(), failing["consecutive_failures"].as_u64()),
                    (Some("failing"), Some(1))
                );
                assert_eq!(failing["last_status_code"], Value::Null, "a timeout has no status");
            }
            _ => {}
        }
    }
    let figures = stats("1h").await;
    assert_eq!(
        (figures["attempts"].as_u64(), figures["succeeded"].as_u64()),
        (Some(10), Some(6)),
        "{figures}"
    );
    assert_eq!(figures["success_ratio"].as_f64(), Some(0.6));
    assert_eq!(
        figures["status_classes"],
        json!({"2xx": 6, "3xx": 0, "4xx": 1, "5xx": 2, "network_error": 0, "timeout": 1})
    );
    assert_eq!(figures["consecutive_failures"], 2, "the timeout and the 410");
    assert_eq!(
        (figures["state"].as_str(), figures["last_status_code"].as_i64()),
        (Some("disabled"), Some(410))
    );
    assert!(figures["disabled_reason"].as_str().expect("reason").contains("410"), "{figures}");
    assert!(figures["last_success_at"].is_string() && figures["last_failure_at"].is_string());
    let expected = json!({
        "p50_ms": bucket_percentile(&durations, 0.5),
        "p95_ms": bucket_percentile(&durations, 0.95),
        "p99_ms": bucket_percentile(&durations, 0.99),
    });
    assert_eq!(figures["latency"], expected, "durations {durations:?}");
    assert!(figures["latency"]["p99_ms"].as_i64().expect("p99") >= 500, "the timeout is the slowest");
    assert_eq!(stats("7d").await["attempts"], 10);

    let (status, error) =
        app.admin(Method::GET, &format!("/api/v1/webhooks/{webhook}/stats?window=2h"), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_window")));
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = app.admin(Method::GET, &format!("/api/v1/webhooks/{unknown}/stats"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

//! Webhook changes reach other processes at once: the API (in this process) and two `herald-worker`
//! processes on PostgreSQL and RabbitMQ, with a webhook cache TTL of ten minutes, so only the
//! PostgreSQL notification can explain a worker seeing a change (`tests/it/webhook_changes.rs` runs the
//! same scenario in one process). Skipped with a note when the services are not configured.

#[allow(unused_imports, unused_macros)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::time::Instant;

use sqlx::postgres::PgListener;
use support::{
    app::{Mode, TestApp},
    changes::{LONG_TTL, changes_govern_the_next_delivery},
    process::Worker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn two_workers_see_a_change_before_the_next_delivery() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(|settings| {
        settings.delivery.webhook_cache_ttl = herald::config::HumanDuration(LONG_TTL);
    })
    .await;
    let binary = env!("CARGO_BIN_EXE_herald-worker");
    let _workers = [Worker::start(binary, &app).await, Worker::start(binary, &app).await];
    // Enough events that both workers fan out and deliver some, and so cache the webhook.
    let took = changes_govern_the_next_delivery(&app, 20).await;
    eprintln!("the event after PATCH url reached the new URL {took:?} after the response");

    // How late a notification arrives after the API answered (what a worker's listener sees).
    let mut listener = PgListener::connect(&app.database.url).await.expect("listen");
    listener.listen("herald_webhook_changed").await.expect("listen");
    let receiver = support::receiver::Receiver::ok().await;
    let webhook = app.subscribe(&receiver, serde_json::json!(["*"])).await;
    listener.recv().await.expect("the creation is notified");
    let mut delays = Vec::new();
    for n in 0..20 {
        let description = format!("change {n}");
        let (status, _) = app
            .admin(
                reqwest::Method::PATCH,
                &format!("/api/v1/webhooks/{webhook}"),
                Some(serde_json::json!({"description": description})),
            )
            .await;
        let answered = Instant::now();
        assert_eq!(status, reqwest::StatusCode::OK);
        let notification = listener.recv().await.expect("notified");
        delays.push(answered.elapsed());
        assert_eq!(notification.payload(), format!("{webhook} {}", app.organization_id));
    }
    delays.sort();
    eprintln!(
        "notification after the response: median {:?}, max {:?} (0 = already there when the API answered)",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
}

//! Production-mode metrics: the API (in this process, the code `herald serve` runs) and one
//! `herald-worker` process make a known set of deliveries against PostgreSQL and RabbitMQ; the counts
//! of the two processes, summed, are exact (`tests/it/metrics.rs` does the same with the embedded
//! `herald serve` binary). Skipped with a note when the services are not configured.

#[allow(unused_imports, unused_macros)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use support::{
    app::{Mode, TestApp},
    metrics::{Source, deliveries_are_counted_exactly, total},
    process::Worker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn the_api_and_a_worker_count_every_delivery_together() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(|settings| {
        settings.delivery.retry_schedule = "200ms,200ms".parse().expect("schedule");
    })
    .await;
    let process = Worker::start(env!("CARGO_BIN_EXE_herald-worker"), &app).await;
    let (api, worker) = (Source::Local, Source::Admin(process.admin));
    deliveries_are_counted_exactly(&app.base, &app.admin_key, &[api, worker]).await;
    assert_eq!(
        total(&[worker], "herald_events_accepted_total", &[]).await,
        3.0,
        "the API accepts the application's events; the worker commits the operational ones (2 delivery.dead, 1 webhook.disabled)"
    );
    assert_eq!(total(&[api], "herald_attempts_total", &[]).await, 0.0, "the worker delivers");
    assert_eq!(total(&[worker], "herald_broker_connected", &[]).await, 1.0);
    let samples = support::metrics::scrape(worker).await;
    assert!(samples.iter().all(|s| s.labels["process"] == "worker"));
}

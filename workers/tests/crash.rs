//! `herald-worker` processes as operators run them, against PostgreSQL and RabbitMQ: killed with
//! SIGKILL in the middle of 1,000 deliveries and restarted, nothing is lost and nothing dies; stopped with
//! SIGTERM, they exit cleanly; one whose stage fails exits non-zero at once, naming it.

#[allow(unused_imports, unused_macros)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    app::{Mode, TestApp},
    process::{FAIL_AFTER_MS, FAIL_STAGE, assert_failed_promptly, run_until_exit},
    receiver::Receiver,
};

/// Starts a worker process with the app's settings.
fn worker(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald-worker"))
        .envs(app.worker_env())
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .spawn()
        .expect("herald-worker starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

/// Sends `count` events, 16 at a time.
async fn send_events(app: &TestApp, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(16) {
        let sends = chunk.iter().map(|i| app.send_event("item.created", json!({"i": i})));
        ids.extend(futures_util::future::join_all(sends).await.into_iter().map(|id| id.to_string()));
    }
    ids
}

/// Waits until every event id arrived at the receiver; returns how many requests came in all.
async fn wait_all_arrived(receiver: &Receiver, ids: &[String], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let arrivals = receiver.arrivals();
        let seen: std::collections::HashSet<String> =
            arrivals.iter().map(|a| a.json()["id"].as_str().expect("id").to_string()).collect();
        let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            assert!(arrivals.iter().all(|a| a.x_signature_ok && a.standard_ok), "every request is signed");
            return arrivals.len();
        }
        assert!(Instant::now() < deadline, "{missing} of {} events never arrived", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn a_killed_worker_loses_nothing() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(|s| s.delivery.concurrency = 16).await;
    // 10 ms per request keeps 1,000 deliveries busy long enough to kill a worker in the middle.
    let receiver = Receiver::start(|_| (200, vec![], Duration::from_millis(10))).await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let mut first = worker(&app);
    let ids = send_events(&app, 1000).await;
    let started = Instant::now();
    while receiver.arrivals().len() < 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&first, "-KILL");
    first.wait().expect("reaped");
    let delivered_before = receiver.arrivals().len();
    assert!(delivered_before < 1000, "the worker died in the middle ({delivered_before} delivered)");

    let mut second = worker(&app);
    let requests = wait_all_arrived(&receiver, &ids, Duration::from_secs(120)).await;
    let dead = app.state.store.list_dead_deliveries(None, Some(webhook), 10).await.expect("dlq");
    assert!(dead.is_empty(), "no delivery died: {dead:?}");
    eprintln!("1000 events, {requests} requests ({} duplicates after the kill)", requests - 1000);

    signal(&second, "-TERM");
    let status = tokio::task::spawn_blocking(move || second.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "SIGTERM stops a worker cleanly: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn sigterm_finishes_in_flight_deliveries() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(|s| s.delivery.concurrency = 4).await;
    let receiver = Receiver::start(|_| (200, vec![], Duration::from_secs(2))).await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let mut process = worker(&app);
    send_events(&app, 4).await;
    receiver.wait_for(4, Duration::from_secs(20)).await;
    // Four requests are in flight, each answered after 2 s; stop the worker now.
    signal(&process, "-TERM");
    let status = tokio::task::spawn_blocking(move || process.wait()).await.expect("join").expect("wait");
    assert!(status.success(), "{status:?}");
    let deliveries = app.deliveries(webhook).await;
    assert_eq!(deliveries.len(), 4);
    for delivery in deliveries {
        assert_eq!(
            delivery["status"], "succeeded",
            "in-flight deliveries finished and were recorded: {delivery}"
        );
    }
    assert_eq!(receiver.arrivals().len(), 4, "and were not sent twice");
}

/// A worker never runs half-dead: a stage that fails (made to, with the debug-build hook) stops the
/// process within a second, naming the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn a_failed_stage_stops_the_worker() {
    if !Mode::services_available() {
        eprintln!("skipped: HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL are not set");
        return;
    }
    let app = TestApp::spawn_api_only(|_| {}).await;
    let fail_after = Duration::from_millis(1500);
    for stage in ["fanout", "deliverer", "scheduler", "outcome-recorder", "rabbitmq-supervisor"] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald-worker"));
        command
            .envs(app.worker_env())
            .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
            .env("HERALD__LOG__LEVEL", "info")
            .env(FAIL_STAGE, stage)
            .env(FAIL_AFTER_MS, fail_after.as_millis().to_string());
        let exit = tokio::task::spawn_blocking(move || {
            run_until_exit(command, "workers running", Duration::from_secs(30))
        })
        .await
        .expect("join");
        assert_failed_promptly(&exit, stage, fail_after);
    }
}

/// The roles run apart, as a deployment scales them: a `--role fanout` worker and a `--role deliver`
/// worker together deliver every event, and neither exits (a fan-out-only worker once stopped at start,
/// its unused outbox dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and RabbitMQ: set HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL, run with -- --ignored"]
async fn workers_with_one_role_each_deliver_everything() {
    let app = TestApp::spawn_api_only(|_| {}).await;
    let receiver = Receiver::verifying(support::receiver::Accepts::XSignature).await;
    app.subscribe(&receiver, json!(["item.created"])).await;
    let role = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_herald-worker"))
            .args(["--role", name])
            .envs(app.worker_env())
            .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
            .spawn()
            .expect("herald-worker starts")
    };
    let mut workers = [role("fanout"), role("deliver")];
    let ids = send_events(&app, 50).await;
    wait_all_arrived(&receiver, &ids, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for worker in &mut workers {
        assert!(worker.try_wait().expect("status").is_none(), "both workers still run");
        signal(worker, "-TERM");
        assert!(worker.wait().expect("exit").success(), "and stop cleanly");
    }
}

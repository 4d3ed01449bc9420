//! RabbitMQ restarted in the middle of a run (`rabbitmqctl stop_app` / `start_app`): events accepted
//! during the outage wait in the outbox, workers reconnect by themselves, every delivery arrives, none
//! dies. This stops the shared broker, so it must run alone: `.ci/run` runs it after the other suites.

#[allow(unused_imports, unused_macros)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use support::{
    app::{Mode, TestApp},
    receiver::Receiver,
};

fn rabbitmqctl(command: &str) {
    let status = Command::new("rabbitmqctl").arg(command).status().expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {command}");
}

/// Starts the broker's application again even if the test fails half-way.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        drop(Command::new("rabbitmqctl").arg("start_app").status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared RabbitMQ; run alone: cargo test -p herald-worker --test broker_restart -- --ignored"]
async fn deliveries_survive_a_broker_restart() {
    assert!(Mode::services_available(), "this test needs HERALD_TEST_DATABASE_URL and HERALD_TEST_AMQP_URL");
    let app = TestApp::spawn_api_only(|s| s.delivery.concurrency = 16).await;
    let receiver = Receiver::start(|_| (200, vec![], Duration::from_millis(5))).await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let mut worker = Command::new(env!("CARGO_BIN_EXE_herald-worker"))
        .envs(app.worker_env())
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .spawn()
        .expect("herald-worker starts");

    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(app.send_event("item.created", json!({"i": i})).await.to_string());
    }
    let started = Instant::now();
    while receiver.arrivals().len() < 50 {
        assert!(started.elapsed() < Duration::from_secs(60), "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _guard = RestartGuard;
    rabbitmqctl("stop_app");
    for i in 300..400 {
        ids.push(app.send_event("item.created", json!({"i": i})).await.to_string());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl("start_app");

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let seen: std::collections::HashSet<String> =
            receiver.arrivals().iter().map(|a| a.json()["id"].as_str().expect("id").to_string()).collect();
        let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events never arrived after the restart",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dead = app.state.store.list_dead_deliveries(None, Some(webhook), 10).await.expect("dlq");
    assert!(dead.is_empty(), "no delivery died: {dead:?}");
    drop(Command::new("kill").args(["-TERM", &worker.id().to_string()]).status());
    drop(worker.wait());
}

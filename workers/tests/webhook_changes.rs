//! Webhook changes reach other processes at once: the API (in this process) and two `herald-worker`
//! processes on PostgreSQL and RabbitMQ, with a webhook cache TTL of ten minutes, so only the
//! PostgreSQL notification can explain a worker seeing a change (`tests/it/webhook_changes.rs` runs the
//! same scenario in one process). Skipped with a note when the services are not configured.

#[allow(unused_imports, unused_macros)]
#[path = "../../tests/it/support/mod.rs"]
mod support;

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use sqlx::postgres::PgListener;
use support::{
    app::{Mode, TestApp},
    changes::{LONG_TTL, changes_govern_the_next_delivery},
    metrics::client,
};

/// A `herald-worker` process, stopped with SIGTERM when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        drop(Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status());
        drop(self.0.wait());
    }
}

async fn start_worker(app: &TestApp) -> Worker {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let worker = Worker(
        Command::new(env!("CARGO_BIN_EXE_herald-worker"))
            .envs(app.worker_env())
            .env("HERALD_CONFIG_DIR", "/nonexistent")
            .env("HERALD__ADMIN__BIND", format!("127.0.0.1:{admin}"))
            .spawn()
            .expect("herald-worker starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    while client().get(&readyz).send().await.map(|response| response.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "the worker's admin /readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_see_a_change_before_the_next_delivery() {
    if !Mode::services_available() {
        return;
    }
    let app = TestApp::spawn_api_only(|settings| {
        settings.delivery.webhook_cache_ttl = herald::config::HumanDuration(LONG_TTL);
    })
    .await;
    let _workers = [start_worker(&app).await, start_worker(&app).await];
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

//! The metrics as an operator scrapes them: the real `herald serve` binary makes a known set of
//! deliveries (some retried, one dead, one webhook disabled by `410`), and its admin listener's
//! `/metrics` counts exactly that, in valid Prometheus text (the same with `herald-worker` processes:
//! `workers/tests/metrics.rs`). A broker outage shows in the outbox gauges and the admin `/readyz`, and
//! clears once the broker is back.

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{
    app::{Mode, delete_queues},
    db::{TEST_KEY, TestDatabase},
    metrics::{Source, client, deliveries_are_counted_exactly, parse_exposition, scrape, send, total},
    proxy::broker_proxy,
};

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A running Herald binary with its admin port; stopped with SIGTERM when dropped.
struct Process {
    child: Child,
    admin: u16,
    _stdout: Option<BufReader<ChildStdout>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        drop(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status());
        drop(self.child.wait());
    }
}

/// Settings every process of a scenario shares: fast retries (two, 200 ms apart), fast scheduling.
fn common_env(database_url: &str, queue: Option<(&str, &str)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("HERALD__DATABASE__URL", database_url),
        ("HERALD__SECRETS__KEYS", TEST_KEY),
        ("HERALD__DELIVERY__ALLOW_PRIVATE_TARGETS", "true"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE", "200ms,200ms"),
        ("HERALD__DELIVERY__JITTER", "0"),
        ("HERALD__DELIVERY__SCHEDULER_INTERVAL", "100ms"),
        ("HERALD__DELIVERY__WEBHOOK_CACHE_TTL", "200ms"),
        ("HERALD__EVENTS__RELAY_AFTER", "1s"),
        ("HERALD__LOG__LEVEL", "warn"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
    .collect();
    if let Some((url, prefix)) = queue {
        env.push(("HERALD__QUEUE__URL".into(), url.into()));
        env.push(("HERALD__QUEUE__PREFIX".into(), prefix.into()));
    }
    env
}

/// Starts `herald serve` in `dir` on a fresh database; returns it, its API base URL and the admin key
/// it printed at its first start.
async fn serve(dir: &std::path::Path, env: &[(String, String)]) -> (Process, String, String) {
    let (api, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--bind", &format!("127.0.0.1:{api}")])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .envs(env.iter().cloned())
        .env("HERALD__ADMIN__BIND", format!("127.0.0.1:{admin}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("herald serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (key, stdout) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).expect("read stdout") > 0, "herald serve printed no key");
            if herald::domain::ApiKeySecret::parse(line.trim()).is_ok() {
                return (line.trim().to_string(), reader);
            }
        }
    })
    .await
    .expect("reader");
    let process = Process { child, admin, _stdout: Some(stdout) };
    wait_ready(&process).await;
    (process, format!("http://127.0.0.1:{api}"), key)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = client().get(url).send().await.ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

/// Waits until the process's admin `/readyz` answers 200.
async fn wait_ready(process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = get(&format!("http://127.0.0.1:{}/readyz", process.admin)).await {
            return;
        }
        assert!(Instant::now() < deadline, "the admin /readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_serve_counts_every_delivery() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("herald.db").display());
    let (api, base, key) = serve(dir.path(), &common_env(&url, None)).await;
    deliveries_are_counted_exactly(&base, &key, &[Source::Admin(api.admin)]).await;
    let samples = scrape(Source::Admin(api.admin)).await;
    assert!(samples.iter().all(|s| s.labels["process"] == "api"));
    // The catalog that deploy/ (dashboard, alerts) is checked against is what the process exports: every
    // series is in it, and every metric of it is there (but those no step of this run records).
    let exported: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let unknown: Vec<_> = exported.iter().filter(|name| !crate::deploy_files::in_catalog(name)).collect();
    assert!(unknown.is_empty(), "exported but not in the catalog: {unknown:?}");
    let not_recorded_here = ["herald_endpoint_deferrals_total", "herald_broker_connected"];
    for (metric, kind) in crate::deploy_files::CATALOG {
        let series = match kind {
            crate::deploy_files::Kind::Histogram => format!("{metric}_count"),
            crate::deploy_files::Kind::Plain => metric.to_string(),
        };
        assert!(
            not_recorded_here.contains(metric) || exported.contains(series.as_str()),
            "{metric} is in the catalog but not exported"
        );
    }
}

#[test]
fn the_exposition_parser_rejects_what_prometheus_would() {
    let good =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{process=\"api\",x=\"q\\\"\"} 3\nb 1.5e-3\n";
    let samples = parse_exposition(good);
    assert_eq!(samples[0].labels["x"], "q\"");
    assert_eq!(samples[1].value, 0.0015);
    for bad in ["a_total{x=\"1\" 3", "9a 1", "a_total{x=1} 3", "a_total three", "# TYPE a wrong"] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "{bad} is refused");
    }
}

/// The value of a gauge of one process.
async fn gauge(process: &Process, name: &str) -> f64 {
    total(&[Source::Admin(process.admin)], name, &[]).await
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_shows_in_the_outbox_gauges_and_readiness() {
    if !Mode::services_available() {
        return;
    }
    let Some(database) = TestDatabase::postgres().await else { return };
    let (proxy, through_proxy) = broker_proxy().await;
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let env = common_env(&database.url, Some((through_proxy.as_str(), &prefix)));
    let dir = tempfile::tempdir().expect("dir");
    let (api, base, key) = serve(dir.path(), &env).await;
    let readyz = format!("http://127.0.0.1:{}/readyz", api.admin);

    proxy.down();
    for _ in 0..3 {
        send(&base, &key, "item.created").await;
    }
    wait_until("the oldest unpublished event has an age", Duration::from_secs(30), async || {
        gauge(&api, "herald_outbox_oldest_unpublished_age_seconds").await > 0.0
    })
    .await;
    assert_eq!(gauge(&api, "herald_outbox_unpublished_events").await, 3.0);
    assert_eq!(gauge(&api, "herald_broker_connected").await, 0.0);
    let (status, body) = get(&readyz).await.expect("readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rabbitmq"), "the broker is named: {body}");
    assert_eq!(gauge(&api, "herald_ready").await, 0.0);

    proxy.up();
    wait_until("the backlog is published", Duration::from_secs(60), async || {
        gauge(&api, "herald_outbox_unpublished_events").await == 0.0
            && gauge(&api, "herald_outbox_oldest_unpublished_age_seconds").await == 0.0
    })
    .await;
    assert_eq!(get(&readyz).await.expect("readyz answers").0, 200);
    assert_eq!(gauge(&api, "herald_broker_connected").await, 1.0);
    // At least once: a relay pass may publish again what the previous pass published but had not
    // marked yet.
    assert!(gauge(&api, "herald_events_published_total").await >= 3.0);
    drop(api);
    delete_queues(&std::env::var("HERALD_TEST_AMQP_URL").expect("amqp"), &prefix);
}

/// `admin.public_metrics` adds `GET /metrics` to the API port; without it the API has no such route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_metrics_are_served_on_the_api_port_only_when_asked() {
    use crate::support::app::TestApp;
    let private = TestApp::spawn(Mode::Embedded).await;
    assert_eq!(client().get(private.url("/metrics")).send().await.expect("get").status().as_u16(), 404);
    let public = TestApp::spawn_with(Mode::Embedded, |settings| settings.admin.public_metrics = true).await;
    let response = client().get(public.url("/metrics")).send().await.expect("get");
    assert_eq!(response.status().as_u16(), 200);
    let samples = parse_exposition(&response.text().await.expect("body"));
    assert!(samples.iter().any(|s| s.name == "herald_http_requests_total"), "the API's own requests count");
}

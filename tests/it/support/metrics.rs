//! Herald's metrics as a scraper sees them: a strict parser of the Prometheus text format, scrapes of a
//! process's admin `/metrics` (or of this process's own recorder, for an in-process API), sums over
//! processes, and the delivery scenario whose every count is known exactly.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::receiver::Receiver;

/// An HTTP client (with the TLS provider reqwest needs installed).
pub fn client() -> reqwest::Client {
    herald::install_tls_provider();
    reqwest::Client::new()
}

/// Label names and values a sample must have.
type Labels = &'static [(&'static str, &'static str)];

/// Where a process's metrics are read.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A process's admin listener on this port of 127.0.0.1.
    Admin(u16),
    /// This process's own recorder (an API started in-process).
    Local,
}

/// One sample of the exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the Prometheus text format (0.0.4), panicking on any line that does not follow it: `# HELP`
/// and `# TYPE` comments, and samples `name{label="value",...} value`.
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match kind {
                Some("HELP") => assert!(is_name(name), "bad HELP line: {line}"),
                Some("TYPE") => assert!(
                    is_name(name) && ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                    "bad TYPE line: {line}"
                ),
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (name, parse_labels(body, line))
            }
        };
        assert!(is_name(name), "bad metric name in: {line}");
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body.split_once("=\"").unwrap_or_else(|| panic!("bad label in: {line}"));
        assert!(is_name(key), "bad label name in: {line}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => panic!("bad escape in: {line}"),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        labels.insert(key.to_string(), value);
        body = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    labels
}

/// Scrapes a process's metrics, checking the content type and the format.
pub async fn scrape(source: Source) -> Vec<Sample> {
    let port = match source {
        Source::Admin(port) => port,
        Source::Local => {
            let handle =
                herald::telemetry::metrics::handle().expect("the in-process app installed the recorder");
            return parse_exposition(&handle.render());
        }
    };
    let response = client().get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse_exposition(&response.text().await.expect("body"))
}

/// The sum of a metric's samples over `sources` whose labels include `labels`.
pub async fn total(sources: &[Source], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for source in sources {
        sum += scrape(*source)
            .await
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels.iter().all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|sample| sample.value)
            .sum::<f64>();
    }
    sum
}

/// Creates a webhook of `receiver` for `events`.
async fn subscribe(base: &str, key: &str, receiver: &Receiver, events: &[&str]) {
    let response = client()
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(json!({"url": receiver.url, "events": events}).to_string())
        .send()
        .await
        .expect("create webhook");
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    receiver.trust(created["secret"].as_str().expect("secret"));
}

pub async fn send(base: &str, key: &str, event_type: &str) {
    let response = client()
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(json!({"event": event_type, "data": {"n": 1}}).to_string())
        .send()
        .await
        .expect("send event");
    assert_eq!(response.status().as_u16(), 202);
}

/// Six deliveries: three succeed at once, one after a retry, one dies after three attempts, one meets
/// `410 Gone` (its webhook is disabled); Herald announces both deaths and the disabling (operational
/// events no webhook subscribes to here). Then every count is checked exactly, summed over `processes`
/// (the API first), which run with the retry schedule `200ms,200ms` and no jitter.
pub async fn deliveries_are_counted_exactly(base: &str, key: &str, processes: &[Source]) {
    let ok = Receiver::start(|_| (200, vec![], Duration::ZERO)).await;
    let flaky = Receiver::start(|n| (if n == 0 { 500 } else { 200 }, vec![], Duration::ZERO)).await;
    let failing = Receiver::start(|_| (500, vec![], Duration::ZERO)).await;
    let gone = Receiver::start(|_| (410, vec![], Duration::ZERO)).await;
    subscribe(base, key, &ok, &["item.created"]).await;
    subscribe(base, key, &flaky, &["item.updated"]).await;
    subscribe(base, key, &failing, &["comment.created"]).await;
    subscribe(base, key, &gone, &["item.deleted"]).await;
    for event_type in ["item.created", "item.created", "item.created", "item.updated", "comment.created"] {
        send(base, key, event_type).await;
    }
    send(base, key, "item.deleted").await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while total(processes, "herald_deliveries_ended_total", &[]).await < 6.0 {
        assert!(Instant::now() < deadline, "the six deliveries did not end");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing more is coming: give a stray count the time to show before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expected: &[(&str, Labels, f64)] = &[
        ("herald_events_accepted_total", &[("type", "item.created")], 3.0),
        ("herald_events_accepted_total", &[("type", "item.updated")], 1.0),
        ("herald_events_accepted_total", &[("type", "comment.created")], 1.0),
        ("herald_events_accepted_total", &[("type", "item.deleted")], 1.0),
        ("herald_events_accepted_total", &[("type", "delivery.dead")], 2.0),
        ("herald_events_accepted_total", &[("type", "webhook.disabled")], 1.0),
        ("herald_events_accepted_total", &[], 9.0),
        ("herald_events_published_total", &[], 9.0),
        ("herald_deliveries_created_total", &[], 6.0),
        ("herald_attempts_total", &[("outcome", "2xx")], 4.0),
        ("herald_attempts_total", &[("outcome", "5xx")], 4.0),
        ("herald_attempts_total", &[("outcome", "4xx")], 1.0),
        ("herald_attempts_total", &[], 9.0),
        ("herald_attempt_duration_seconds_count", &[], 9.0),
        ("herald_deliveries_ended_total", &[("result", "succeeded")], 4.0),
        ("herald_deliveries_ended_total", &[("result", "dead")], 2.0),
        ("herald_deliveries_ended_total", &[], 6.0),
        ("herald_end_to_end_latency_seconds_count", &[], 4.0),
        ("herald_webhooks_disabled_total", &[("reason", "gone")], 1.0),
        ("herald_webhooks_disabled_total", &[], 1.0),
        ("herald_retries_scheduled_total", &[], 3.0),
        ("herald_retries_due_total", &[], 3.0),
        ("herald_deliveries_in_flight", &[], 0.0),
    ];
    let mut wrong = Vec::new();
    for (name, labels, value) in expected {
        let got = total(processes, name, labels).await;
        if got != *value {
            wrong.push(format!("{name}{labels:?}: expected {value}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let samples = scrape(processes[0]).await;
    let routes: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "herald_http_requests_total")
        .filter_map(|s| s.labels.get("route").map(String::as_str))
        .collect();
    assert!(routes.contains(&"/api/v1/events") && routes.contains(&"/api/v1/webhooks"), "{routes:?}");
    for process in processes {
        let samples = scrape(*process).await;
        assert!(samples.iter().all(|s| s.labels.contains_key("process")), "every sample names its process");
        for name in
            ["process_cpu_seconds_total", "process_resident_memory_bytes", "herald_db_pool_max_connections"]
        {
            assert!(samples.iter().any(|s| s.name == name), "{name} is exported");
        }
    }
}

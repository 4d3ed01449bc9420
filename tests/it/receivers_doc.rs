//! The signature-verification snippets of docs/receivers.md, in Python and Node.js, run against a real
//! Herald delivery (they must accept it) and a tampered copy (they must refuse it), also during a secret
//! rotation with either secret. The Rust snippet runs as a doctest. Also the example receiver script end
//! to end (with either secret across a rotation), and the official Standard Webhooks Python library
//! (`pip install standardwebhooks`) on real deliveries, with a generated and a plain secret.

use std::{io::Write, process::Command, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    app::{Mode, TestApp},
    receiver::{Arrival, Receiver},
};

/// The signature headers the snippets read.
const SIGNATURE_HEADERS: [&str; 5] =
    ["webhook-id", "webhook-timestamp", "webhook-signature", "x-signature", "x-signature-next"];

/// The fenced code blocks of one language in docs/receivers.md.
fn snippet(language: &str) -> String {
    let guide = include_str!("../../docs/receivers.md");
    let fence = format!("```{language}\n");
    let start = guide.find(&fence).unwrap_or_else(|| panic!("a {language} block")) + fence.len();
    let end = start + guide[start..].find("```").expect("closed block");
    guide[start..end].to_string()
}

/// Creates a webhook for `url`; returns the create response.
async fn create_webhook(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.admin(Method::POST, "/api/v1/webhooks", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// Rotates a webhook's secret (default grace period); returns the new secret.
async fn rotate(app: &TestApp, created: &Value) -> String {
    let path = format!("/api/v1/webhooks/{}/rotate-secret", created["id"].as_str().expect("id"));
    let (status, rotated) = app.admin(Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    rotated["secret"].as_str().expect("secret").to_string()
}

/// A real delivery, with the secrets that signed it: the webhook's one secret, or, when `rotated`, the
/// old secret and the new one (the delivery is made during the grace period).
async fn real_delivery(rotated: bool) -> (Arrival, Vec<String>, TestApp) {
    let app = TestApp::spawn(Mode::Embedded).await;
    let receiver = Receiver::ok().await;
    let created = create_webhook(&app, json!({"url": receiver.url, "events": ["*"]})).await;
    let mut secrets = vec![created["secret"].as_str().expect("secret").to_string()];
    if rotated {
        secrets.push(rotate(&app, &created).await);
        // Let the workers' webhook cache (200 ms in tests) see the rotation.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.send_event("comment.created", json!({"text": "caf\u{e9} \u{1F600}"})).await;
    let arrival = receiver.wait_for(1, Duration::from_secs(20)).await.remove(0);
    (arrival, secrets, app)
}

/// The signature headers of `arrival` that it has, as the snippets get them (lowercase names).
fn signature_headers(arrival: &Arrival) -> Value {
    SIGNATURE_HEADERS
        .iter()
        .filter(|name| arrival.headers.contains_key(**name))
        .map(|name| (name.to_string(), json!(arrival.header(name))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Runs `program` (python3 or node) on `source`, feeding `input` as JSON on stdin; returns its stdout.
fn run_with(program: &str, source: &str, input: &Value) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(if program == "node" { "check.js" } else { "check.py" });
    std::fs::write(&path, source).expect("write");
    let mut child = Command::new(program)
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} runs: {error}"));
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("finishes");
    assert!(output.status.success(), "{program} failed");
    String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
}

/// Runs a snippet harness on the delivery, with `body` in place of the one delivered.
fn run(program: &str, source: &str, arrival: &Arrival, secret: &str, body: &[u8]) -> String {
    let input = json!({
        "secret": secret,
        "body": String::from_utf8(body.to_vec()).expect("utf-8"),
        "headers": signature_headers(arrival),
    });
    run_with(program, source, &input)
}

const PYTHON_HARNESS: &str = r#"
import json, sys
given = json.load(sys.stdin)
body = given["body"].encode()
print(verify_x_signature(given["secret"], given["headers"], body),
      verify_standard_webhooks(given["secret"], given["headers"], body))
"#;

const NODE_HARNESS: &str = r#"
const given = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const body = Buffer.from(given.body, "utf8");
console.log(verifyXSignature(given.secret, given.headers, body) ? "True" : "False",
            verifyStandardWebhooks(given.secret, given.headers, body) ? "True" : "False");
"#;

/// The Python and Node.js snippets, each with its harness.
fn snippets() -> [(&'static str, String); 2] {
    [
        ("python3", format!("{}{PYTHON_HARNESS}", snippet("python"))),
        ("node", format!("{}{NODE_HARNESS}", snippet("javascript"))),
    ]
}

fn tampered(arrival: &Arrival) -> Vec<u8> {
    let mut tampered = arrival.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] = b'!';
    tampered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_snippets_verify_real_deliveries() {
    let (arrival, secrets, _app) = real_delivery(false).await;
    let secret = &secrets[0];
    let tampered = tampered(&arrival);
    for (program, source) in snippets() {
        assert_eq!(run(program, &source, &arrival, secret, &arrival.body), "True True", "{program} accepts");
        assert_eq!(
            run(program, &source, &arrival, secret, &tampered),
            "False False",
            "{program} refuses tampering"
        );
        assert_eq!(
            run(program, &source, &arrival, "whsec_d3Jvbmc=", &arrival.body),
            "False False",
            "{program}: wrong secret"
        );
    }
}

/// During a rotation's grace period a receiver verifies with either secret: the old one it still holds,
/// or the new one it switched to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_snippets_verify_with_either_secret_during_a_rotation() {
    let (arrival, secrets, _app) = real_delivery(true).await;
    let tampered = tampered(&arrival);
    for (program, source) in snippets() {
        for (secret, which) in secrets.iter().zip(["old", "new"]) {
            assert_eq!(
                run(program, &source, &arrival, secret, &arrival.body),
                "True True",
                "{program} accepts with the {which} secret"
            );
            assert_eq!(
                run(program, &source, &arrival, secret, &tampered),
                "False False",
                "{program} refuses tampering ({which} secret)"
            );
        }
        assert_eq!(
            run(program, &source, &arrival, "whsec_d3Jvbmc=", &arrival.body),
            "False False",
            "{program}: wrong secret"
        );
    }
}

/// docs/examples/receiver.py on a free port with `secret`, once it printed its first line; its output.
async fn example_receiver(
    secret: &str,
    port: u16,
) -> (tokio::process::Child, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/receiver.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, "--secret", secret, "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("receiver starts");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().expect("stdout")));
    let first = lines.next_line().await.expect("read").expect("a line");
    assert!(first.starts_with("listening"), "{first}");
    (child, lines)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// The next line the example receiver prints, within 20 s.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("in time")
        .expect("read")
        .expect("a line")
}

/// Waits until the webhook's first delivery succeeded; returns it.
async fn delivered(app: &TestApp, created: &Value) -> Value {
    let webhook = created["id"].as_str().expect("id").parse().expect("uuid");
    let id = app.wait_deliveries(webhook, 1).await[0]["id"].as_str().expect("id").to_string();
    app.wait_delivery(&id, Duration::from_secs(20), |d| d["status"] == "succeeded").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_verifies_and_prints_events() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let created = create_webhook(&app, json!({"url": url, "events": ["*"]})).await;
    let secret = created["secret"].as_str().expect("secret");
    let (_child, mut lines) = example_receiver(secret, port).await;
    let event = app.send_event("item.created", json!({"name": "Chair"})).await;
    let line = next_line(&mut lines).await;
    assert_eq!(line, format!("verified item.created {event} data={{\"name\": \"Chair\"}}"));
    let done = delivered(&app, &created).await;
    assert_eq!(done["last_status_code"], 204);
}

/// Across a rotation, the example receiver verifies whether it was started with the old secret or the
/// new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_verifies_with_either_secret_during_a_rotation() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let mut receivers = Vec::new();
    for keeps_the_old_secret in [true, false] {
        let port = free_port();
        let created =
            create_webhook(&app, json!({"url": format!("http://127.0.0.1:{port}/"), "events": ["*"]})).await;
        let new_secret = rotate(&app, &created).await;
        let secret = if keeps_the_old_secret {
            created["secret"].as_str().expect("secret").to_string()
        } else {
            new_secret
        };
        let (child, lines) = example_receiver(&secret, port).await;
        receivers.push((created, child, lines));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = app.send_event("item.created", json!({"name": "Chair"})).await;
    for (created, _child, lines) in &mut receivers {
        assert_eq!(
            next_line(lines).await,
            format!("verified item.created {event} data={{\"name\": \"Chair\"}}")
        );
        let done = delivered(&app, created).await;
        assert_eq!(done["last_status_code"], 204);
    }
}

/// Installs the official Standard Webhooks library for Python once (`pip install -q standardwebhooks`).
fn install_standardwebhooks() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let present = Command::new("python3").args(["-c", "import standardwebhooks"]).output();
        if present.is_ok_and(|output| output.status.success()) {
            return;
        }
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "standardwebhooks"])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install standardwebhooks failed (PyPI is needed for this test)");
    });
}

/// Verifies with the official library: `secret` as a string (the `whsec_` form), or its UTF-8 bytes
/// when `raw` (the library's form for a plain secret's raw bytes).
const OFFICIAL_PYTHON: &str = r#"
import json, sys
from standardwebhooks import Webhook, WebhookVerificationError
given = json.load(sys.stdin)
secret = given["secret"].encode() if given["raw"] else given["secret"]
try:
    Webhook(secret).verify(given["body"].encode(), given["headers"])
    print(True)
except WebhookVerificationError:
    print(False)
"#;

fn official(arrival: &Arrival, secret: &str, raw: bool, body: &[u8]) -> String {
    let input = json!({
        "secret": secret,
        "raw": raw,
        "body": String::from_utf8(body.to_vec()).expect("utf-8"),
        "headers": signature_headers(arrival),
    });
    run_with("python3", OFFICIAL_PYTHON, &input)
}

/// A `whsec_` secret the official libraries cannot decode is refused; a generated one and a plain one
/// (through the `standard_webhooks_secret` the API returns, or as raw bytes) verify real deliveries with
/// the official Python library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_library_verifies_generated_and_plain_secrets() {
    install_standardwebhooks();
    let app = TestApp::spawn(Mode::Embedded).await;
    let short = format!("whsec_{}", STANDARD.encode([7u8; 23]));
    let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
    let unpadded = format!("whsec_{}", STANDARD.encode([7u8; 32]).trim_end_matches('='));
    for bad in ["whsec_notbase64!!", "whsec_", short.as_str(), long.as_str(), unpadded.as_str()] {
        let body = json!({"url": "https://hooks.example.com/", "events": ["*"], "secret": bad});
        let (status, error) = app.admin(Method::POST, "/api/v1/webhooks", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
        let message = error["error"].as_str().expect("message");
        assert!(message.contains("whsec_") && message.contains("base64"), "{bad}: {message}");
    }

    let (generated, plain, given) = (Receiver::ok().await, Receiver::ok().await, Receiver::ok().await);
    let given_secret = format!("whsec_{}", STANDARD.encode([42u8; 24]));
    let mut hooks = Vec::new();
    for (receiver, secret) in [
        (&generated, None),
        (&plain, Some("my-own-secret-0123456789")),
        (&given, Some(given_secret.as_str())),
    ] {
        let mut body = json!({"url": receiver.url, "events": ["*"]});
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        hooks.push((receiver, create_webhook(&app, body).await));
    }
    app.send_event("comment.created", json!({"text": "caf\u{e9} \u{1F600}"})).await;
    for (receiver, created) in &hooks {
        let secret = created["secret"].as_str().expect("secret");
        let standard = created["standard_webhooks_secret"].as_str().expect("standard_webhooks_secret");
        let arrival = receiver.wait_for(1, Duration::from_secs(20)).await.remove(0);
        assert_eq!(official(&arrival, standard, false, &arrival.body), "True", "{secret}: {standard}");
        assert_eq!(official(&arrival, standard, false, &tampered(&arrival)), "False", "{secret}: tampered");
        if secret.starts_with("whsec_") {
            assert_eq!(standard, secret, "a whsec_ secret is already the Standard Webhooks form");
        } else {
            assert_eq!(standard, format!("whsec_{}", STANDARD.encode(secret)), "base64 of the raw bytes");
            assert_eq!(official(&arrival, secret, true, &arrival.body), "True", "the raw bytes");
        }
    }
}

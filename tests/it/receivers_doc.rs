//! The signature-verification snippets of docs/receivers.md, in Python and Node.js, run against a real
//! Herald delivery (they must accept it) and a tampered copy (they must refuse it). The Rust snippet runs
//! as a doctest. Also the example receiver script, end to end.

use std::{io::Write, process::Command, time::Duration};

use serde_json::json;

use crate::support::{
    app::{Mode, TestApp},
    receiver::{Arrival, Receiver},
};

/// The fenced code blocks of one language in docs/receivers.md.
fn snippet(language: &str) -> String {
    let guide = include_str!("../../docs/receivers.md");
    let fence = format!("```{language}\n");
    let start = guide.find(&fence).unwrap_or_else(|| panic!("a {language} block")) + fence.len();
    let end = start + guide[start..].find("```").expect("closed block");
    guide[start..end].to_string()
}

/// A real delivery, with the secret that signed it.
async fn real_delivery() -> (Arrival, String, TestApp) {
    let app = TestApp::spawn(Mode::Embedded).await;
    let receiver = Receiver::ok().await;
    let (_, created) = app
        .admin(reqwest::Method::POST, "/api/v1/webhooks", Some(json!({"url": receiver.url, "events": ["*"]})))
        .await;
    let secret = created["secret"].as_str().expect("secret").to_string();
    app.send_event("comment.created", json!({"text": "caf\u{e9} \u{1F600}"})).await;
    let arrival = receiver.wait_for(1, Duration::from_secs(20)).await.remove(0);
    (arrival, secret, app)
}

/// Runs `program` (python3 or node) on `source`, feeding the delivery on stdin; returns its stdout.
fn run(program: &str, source: &str, arrival: &Arrival, secret: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(if program == "node" { "check.js" } else { "check.py" });
    std::fs::write(&path, source).expect("write");
    let input = json!({
        "secret": secret,
        "body": String::from_utf8(body.to_vec()).expect("utf-8"),
        "headers": {
            "webhook-id": arrival.header("webhook-id"),
            "webhook-timestamp": arrival.header("webhook-timestamp"),
            "webhook-signature": arrival.header("webhook-signature"),
            "x-signature": arrival.header("x-signature"),
        },
    });
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

const PYTHON_HARNESS: &str = r#"
import json, sys
given = json.load(sys.stdin)
body = given["body"].encode()
print(verify_x_signature(given["secret"], body, given["headers"]["x-signature"]),
      verify_standard_webhooks(given["secret"], given["headers"], body))
"#;

const NODE_HARNESS: &str = r#"
const given = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const body = Buffer.from(given.body, "utf8");
console.log(verifyXSignature(given.secret, body, given.headers["x-signature"]) ? "True" : "False",
            verifyStandardWebhooks(given.secret, given.headers, body) ? "True" : "False");
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_node_snippets_verify_real_deliveries() {
    let (arrival, secret, _app) = real_delivery().await;
    let mut tampered = arrival.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] = b'!';
    for (program, source) in [
        ("python3", format!("{}{PYTHON_HARNESS}", snippet("python"))),
        ("node", format!("{}{NODE_HARNESS}", snippet("javascript"))),
    ] {
        assert_eq!(run(program, &source, &arrival, &secret, &arrival.body), "True True", "{program} accepts");
        assert_eq!(
            run(program, &source, &arrival, &secret, &tampered),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_verifies_and_prints_events() {
    let app = TestApp::spawn(Mode::Embedded).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}/");
    let (_, created) = app
        .admin(reqwest::Method::POST, "/api/v1/webhooks", Some(json!({"url": url, "events": ["*"]})))
        .await;
    let secret = created["secret"].as_str().expect("secret");
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
    let event = app.send_event("item.created", json!({"name": "Chair"})).await;
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("in time")
        .expect("read");
    let line = line.expect("a line");
    assert_eq!(line, format!("verified item.created {event} data={{\"name\": \"Chair\"}}"));
    let id =
        app.wait_deliveries(created["id"].as_str().expect("id").parse().expect("uuid"), 1).await[0]["id"]
            .as_str()
            .expect("id")
            .to_string();
    let done = app.wait_delivery(&id, Duration::from_secs(20), |d| d["status"] == "succeeded").await;
    assert_eq!(done["last_status_code"], 204);
}

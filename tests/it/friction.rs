//! What a newcomer tripped over (issue 11, item 10): filters and statuses that matched nothing instead
//! of being refused, a second revocation answered "not found", `user.added` outside a custom catalog,
//! error texts that quoted library internals, a 413 that did not state the limit, and unknown JSON
//! fields ignored without a word.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(
    listing_events_of_an_unknown_type_is_refused,
    replay_refuses_a_status_no_delivery_has,
    revoking_a_revoked_key_says_so,
    user_added_is_emitted_only_when_in_the_catalog,
    bad_request_fields_get_clear_messages,
    the_413_message_states_the_limit,
    unknown_body_fields_are_refused_by_name,
    refused_addresses_and_names_that_do_not_exist_die_at_once,
);

fn message(error: &Value) -> &str {
    error["error"].as_str().unwrap_or_else(|| panic!("an error message in {error}"))
}

async fn listing_events_of_an_unknown_type_is_refused(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, error) = app.admin(Method::GET, "/api/v1/events?type=nope", None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown_event_type")),
        "{error}"
    );
    assert!(message(&error).contains("item.created"), "the valid types are listed: {error}");
    let (status, error) = app.admin(Method::GET, "/api/v1/events?type=item.created,item.updated", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "one type per request: {error}");
    assert!(message(&error).contains("one type"), "{error}");
    let (status, _) = app.admin(Method::GET, "/api/v1/events?type=item.created", None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn replay_refuses_a_status_no_delivery_has(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let receiver = crate::support::receiver::Receiver::ok().await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let path = format!("/api/v1/webhooks/{webhook}/replay");
    let (status, error) = app.admin(Method::POST, &path, Some(json!({"status": "failed"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(message(&error).contains("dead") && message(&error).contains("pending"), "{error}");
    for status_name in ["dead", "pending"] {
        let (status, body) = app.admin(Method::POST, &path, Some(json!({"status": status_name}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{status_name}: {body}");
    }
}

async fn revoking_a_revoked_key_says_so(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, created) =
        app.admin(Method::POST, "/api/v1/api-keys", Some(json!({"name": "ci", "purpose": "zapier"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let path = format!("/api/v1/api-keys/{}", created["id"].as_str().expect("id"));
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::CONFLICT, Some("already_revoked")), "{error}");
    assert!(message(&error).contains("already revoked"), "{error}");
}

async fn user_added_is_emitted_only_when_in_the_catalog(mode: Mode) {
    let app = TestApp::spawn_with(mode, |settings| settings.events.types = vec!["order.paid".into()]).await;
    let (status, created) = app
        .admin(Method::POST, "/api/v1/users", Some(json!({"email": "ada@test.example", "role": "member"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, page) = app.admin(Method::GET, "/api/v1/events", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["events"], json!([]), "user.added is not in this catalog: {page}");

    let app = TestApp::spawn(mode).await;
    let (status, _) = app
        .admin(Method::POST, "/api/v1/users", Some(json!({"email": "ada@test.example", "role": "member"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, page) = app.admin(Method::GET, "/api/v1/events?type=user.added", None).await;
    assert_eq!(page["events"].as_array().expect("events").len(), 1, "the default catalog has it: {page}");
}

async fn bad_request_fields_get_clear_messages(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, error) =
        app.admin(Method::POST, "/api/v1/api-keys", Some(json!({"name": "ci", "expires_at": "2030"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let text = message(&error);
    assert!(text.contains("expires_at") && text.contains("RFC 3339"), "{error}");
    assert!(!text.contains("premature end of input"), "no library internals: {error}");

    let token = crate::support::app::jwt(&json!({"sub": app.admin_id.to_string(), "aud": "herald"}));
    let (status, error) = app.call(Method::GET, "/api/v1/event-types", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    assert!(message(&error).contains("exp"), "a missing claim is named: {error}");
}

async fn the_413_message_states_the_limit(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let big = "x".repeat(300 * 1024);
    let (status, error) = app
        .admin(Method::POST, "/api/v1/events", Some(json!({"event": "item.created", "data": {"big": big}})))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert!(message(&error).contains("262144 bytes"), "{error}");
}

async fn unknown_body_fields_are_refused_by_name(mode: Mode) {
    let app = TestApp::spawn(mode).await;
    let (status, error) = app
        .admin(
            Method::POST,
            "/api/v1/events",
            Some(json!({"event": "item.created", "data": {}, "colour": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(message(&error).contains("unknown field `colour`"), "{error}");

    let receiver = crate::support::receiver::Receiver::ok().await;
    let webhook = app.subscribe(&receiver, json!(["*"])).await;
    let (status, error) = app
        .admin(Method::PATCH, &format!("/api/v1/webhooks/{webhook}"), Some(json!({"secret": "whsec_x"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(message(&error).contains("rotate-secret"), "{error}");
}

/// The embedded mode's data folder holds the database and the key that opens every webhook secret:
/// its owner alone may read them.
#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut settings = herald::config::Settings::defaults();
    settings.database.url =
        herald::config::Secret::new(format!("sqlite://{}", data.join("herald.db").display()));
    settings.secrets.key_file = data.join("herald.key");
    let _store = herald::store::connect(&settings).await.expect("the database is created");
    herald::crypto::SecretBox::from_settings(&settings).expect("the key file is created");
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data folder");
    for file in ["herald.db", "herald.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// The example receiver says "listening" only once it is: on a port already taken it fails instead.
#[test]
fn the_example_receiver_binds_before_it_says_listening() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = taken.local_addr().expect("addr").port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/receiver.py");
    let output = std::process::Command::new("python3")
        .args([script, "--secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "--port", &port])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "the port is taken");
    assert!(!stdout.contains("listening"), "no 'listening' before the bind: {stdout}");
}

/// An address the SSRF policy refuses, or a name DNS says does not exist, will not change by waiting:
/// the delivery dies after its first attempt instead of retrying for ~21 hours.
async fn refused_addresses_and_names_that_do_not_exist_die_at_once(mode: Mode) {
    let app = TestApp::spawn_with(mode, |s| s.delivery.allow_private_targets = false).await;
    let urls =
        [("http://127.0.0.1:9/hook", "blocked"), ("http://no-such-host.invalid/hook", "does not exist")];
    let mut webhooks = Vec::new();
    for (url, _) in urls {
        // Stored directly: the API refuses the private address up front.
        webhooks.push(app.store_webhook(url, |sealed| sealed).await);
    }
    app.send_event("item.created", json!({})).await;
    for (webhook, (url, expected)) in webhooks.iter().zip(urls) {
        let id = app.wait_deliveries(*webhook, 1).await[0]["id"].as_str().expect("id").to_string();
        let done = app
            .wait_delivery(&id, std::time::Duration::from_secs(20), |d| {
                d["attempts"] == 1 && d["status"] != "queued"
            })
            .await;
        assert_eq!(done["status"], "dead", "{url}: no retry can help: {done}");
        assert!(done["last_error"].as_str().expect("error").contains(expected), "{url}: {done}");
    }
}

/// `data/` is relative to the working directory; `herald serve` says which file it opened, in full.
#[test]
fn serve_logs_the_absolute_database_path() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("HERALD__ADMIN__BIND", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let expected = dir.path().canonicalize().expect("dir").join("data").join("herald.db");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    for line in stderr.lines().take(30) {
        let line = line.expect("utf-8");
        let found = line.contains(&expected.display().to_string());
        seen.push(line);
        if found || seen.iter().any(|line| line.contains("listening")) {
            break;
        }
    }
    drop(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status());
    drop(child.wait());
    assert!(
        seen.iter().any(|line| line.contains(&expected.display().to_string())),
        "{}: {seen:#?}",
        expected.display()
    );
}

/// A `--config-dir` that does not exist is an error naming it, wherever the flag is placed.
#[test]
fn a_config_dir_flag_naming_no_folder_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    for args in [
        ["--config-dir", "/nonexistent/herald", "migrate"],
        ["migrate", "--config-dir", "/nonexistent/herald"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("herald runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("/nonexistent/herald does not exist"), "{args:?}: {stderr}");
    }
    // Named by the environment, it is as explicit as the flag.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("migrate")
        .env("HERALD_CONFIG_DIR", "/nonexistent/herald")
        .current_dir(dir.path())
        .output()
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "HERALD_CONFIG_DIR: {stderr}");
    assert!(stderr.contains("HERALD_CONFIG_DIR") && stderr.contains("/nonexistent/herald"), "{stderr}");
}

/// `herald ARGS` run in `dir` on the built-in defaults (its `data/` folder).
fn herald_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .current_dir(dir)
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
        .output()
        .expect("herald runs")
}

/// `herald dlq replay` names its scope: `--org`, `--webhook` or `--all`; `--dry-run` only counts.
#[test]
fn dlq_replay_needs_a_scope_and_offers_a_dry_run() {
    let dir = tempfile::tempdir().expect("dir");
    let herald = |args: &[&str]| herald_in(dir.path(), args);
    assert!(herald(&["migrate"]).status.success());
    let output = herald(&["dlq", "replay"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "no scope: {stderr}");
    assert!(stderr.contains("--org") && stderr.contains("--all"), "{stderr}");
    let output = herald(&["dlq", "replay", "--all", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("would make 0 dead deliveries due again"), "{stdout}");
    let output = herald(&["dlq", "replay", "--all"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A lost admin key is recovered with `herald admin-key`; `bootstrap` refuses a second organization of
/// the same name (running it twice made two "acme"s).
#[test]
fn admin_key_recovers_access_and_bootstrap_refuses_a_duplicate_name() {
    let dir = tempfile::tempdir().expect("dir");
    let herald = |args: &[&str]| herald_in(dir.path(), args);
    let stdout = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).to_string();
    let first = herald(&["bootstrap", "--org", "acme", "--email", "ops@acme.test"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let again = herald(&["bootstrap", "--org", "acme", "--email", "other@acme.test"]);
    assert!(!again.status.success(), "a second acme: {}", stdout(&again));
    assert!(stderr(&again).contains("acme") && stderr(&again).contains("admin-key"), "{}", stderr(&again));

    let recovered = herald(&["admin-key", "--org", "acme", "--email", "OPS@acme.test"]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let key = stdout(&recovered);
    assert!(key.starts_with("sk_live_") && !key.contains('\n'), "the key alone on stdout: {key}");
    assert_ne!(key, stdout(&first), "a new key");
    for (args, expected) in [
        (["admin-key", "--org", "nope", "--email", "ops@acme.test"], "no organization"),
        (["admin-key", "--org", "acme", "--email", "nobody@acme.test"], "no admin"),
    ] {
        let output = herald(&args);
        assert!(
            !output.status.success() && stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

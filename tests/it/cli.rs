//! The `herald` binary as a user runs it: one clear line on failure, the key on its own line.

use std::process::{Command, Output, Stdio};

fn herald(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HERALD__ADMIN__BIND", "127.0.0.1:0")
        .env("HERALD_CONFIG_DIR", dir.join("no-config"));
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("herald runs")
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr).lines().map(String::from).collect()
}

#[test]
fn bad_database_urls_fail_with_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    for (url, expected) in [
        ("mysql://root@localhost/herald", "database.url: unsupported scheme 'mysql'"),
        ("postgres://postgres@127.0.0.1:1/herald", "Connection refused"),
        ("postgres://postgres@nohost.invalid/herald", "nohost.invalid"),
    ] {
        let output = herald(&["migrate"], &[("HERALD__DATABASE__URL", url)], dir.path());
        assert_eq!(output.status.code(), Some(1), "{url}");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "one line for {url}: {lines:?}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(expected), "{lines:?}");
        assert!(!lines[0].contains("panicked") && !lines[0].contains("backtrace"));
    }
}

#[test]
fn bad_settings_name_their_key() {
    let dir = tempfile::tempdir().expect("dir");
    let output = herald(&["migrate"], &[("HERALD__DELIVERY__RETRY_SCHEDULE", "5s,soon")], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("delivery.retry_schedule"), "{lines:?}");
}

#[test]
fn a_taken_admin_address_fails_with_one_line() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let address = taken.local_addr().expect("addr").to_string();
    let output =
        herald(&["serve", "--bind", "127.0.0.1:0"], &[("HERALD__ADMIN__BIND", &address)], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let lines = stderr_lines(&output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("admin.bind") && lines[0].contains(&address), "{lines:?}");
}

#[test]
fn bootstrap_prints_the_admin_key_on_its_own_line() {
    let dir = tempfile::tempdir().expect("dir");
    let output = herald(&["bootstrap", "--org", "Acme", "--email", "Ops@Acme.test"], &[], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the key goes to stdout: {lines:?}");
    assert!(herald::domain::ApiKeySecret::parse(lines[0]).is_ok(), "{}", lines[0]);
    assert!(dir.path().join("data/herald.db").exists(), "the default SQLite file is created");
    let output = herald(&["bootstrap", "--org", "Acme", "--email", "nope"], &[], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_lines(&output)[0].contains("--email"));
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().expect("dir");
    let output = herald(&["--version"], &[], dir.path());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("herald {}", env!("CARGO_PKG_VERSION"))
    );
    let output = herald(&["serve", "--help"], &[], dir.path());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--bind"));
}

/// The README's first command on a fresh folder: prints the admin key and a next step, serves /healthz.
#[test]
fn first_serve_bootstraps_and_answers() {
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("HERALD_CONFIG_DIR", dir.path().join("no-config"))
        .env("HERALD__ADMIN__BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("read");
            healthy = response.starts_with("HTTP/1.1 200");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(Command::new("kill").args(["-TERM", &child.id().to_string()]).status());
    let output = child.wait_with_output().expect("serve exits");
    assert!(healthy, "GET /healthz answered 200");
    assert!(output.status.success(), "SIGTERM is a clean exit: {:?}", output.status);
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains("admin@localhost"));
    assert!(
        herald::domain::ApiKeySecret::parse(lines[1]).is_ok(),
        "the key is alone on its line: {}",
        lines[1]
    );
    assert!(lines[2].starts_with("Next: "));
}

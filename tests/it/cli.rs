//! The `herald` binary as a user runs it: one clear line on failure, the key on its own line.

use std::process::{Command, Output, Stdio};

fn herald(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("HERALD__ADMIN__BIND", "127.0.0.1:0")
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir());
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
        .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
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

/// `HERALD__LOG__LEVEL=loud` is not a level: one line naming `log.level`, whatever the command.
#[test]
fn an_unknown_log_level_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    for level in ["loud", "herald", "info,herald", "herald=loud"] {
        let output = herald(&["migrate"], &[("HERALD__LOG__LEVEL", level)], dir.path());
        assert_eq!(output.status.code(), Some(1), "{level} is refused");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{level}: {lines:?}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains("log.level"), "{lines:?}");
    }
    for level in ["debug", "WARN", "off", "warn,herald=debug", "herald::worker=trace,tower_http=info"] {
        let output = herald(&["migrate"], &[("HERALD__LOG__LEVEL", level)], dir.path());
        assert!(output.status.success(), "{level}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Applies only the first migration, as an older Herald would have left the database.
async fn older_schema(url: &str) {
    let folder = tempfile::tempdir().expect("dir");
    let dialect = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dialect);
    std::fs::copy(source.join("0001_schema.sql"), folder.path().join("0001_schema.sql")).expect("copy");
    let migrator = sqlx::migrate::Migrator::new(folder.path()).await.expect("migrator");
    if dialect == "sqlite" {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await.expect("sqlite");
        migrator.run(&pool).await.expect("first migration");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        migrator.run(&pool).await.expect("first migration");
        pool.close().await;
    }
}

/// Read-only commands never migrate: against an older schema they say which version they need and
/// stop; once `herald migrate` ran they work and print nothing but their output.
async fn read_only_commands_check_the_schema(url: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let env = [("HERALD__DATABASE__URL", url), ("HERALD__SECRETS__KEYS", crate::support::db::TEST_KEY)];
    older_schema(url).await;
    // The latest migration's version: the number its file name starts with.
    let dialect = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let needed = std::fs::read_dir(format!("{}/migrations/{dialect}", env!("CARGO_MANIFEST_DIR")))
        .expect("dir")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.split('_').next()?.parse::<u64>().ok())
        .max()
        .expect("migrations");
    for args in [&["dlq", "list"][..], &["dlq", "replay", "--all"][..]] {
        let output = herald(args, &env, dir.path());
        assert_eq!(output.status.code(), Some(1), "{args:?} refuses an older schema");
        let lines = stderr_lines(&output);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains("herald migrate"), "says what to do: {lines:?}");
        assert!(lines[0].contains(&format!("version {needed}")), "names the version it needs: {lines:?}");
        assert!(lines[0].contains("version 1"), "and the database's: {lines:?}");
    }
    let output = herald(&["migrate"], &env, dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = herald(&["dlq", "list"], &env, dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stderr_lines(&output), Vec::<String>::new(), "no migration notices");
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 dead deliveries shown"));
}

#[tokio::test]
async fn read_only_commands_do_not_migrate_sqlite() {
    let database = crate::support::db::TestDatabase::sqlite();
    read_only_commands_check_the_schema(&database.url).await;
    let dir = tempfile::tempdir().expect("dir");
    let output = herald(&["dlq", "list"], &[], dir.path());
    assert_eq!(output.status.code(), Some(1), "no database yet");
    assert!(stderr_lines(&output)[0].contains("herald migrate"), "{:?}", stderr_lines(&output));
    assert!(!dir.path().join("data/herald.db").exists(), "a read-only command creates no database");
}

#[tokio::test]
async fn read_only_commands_do_not_migrate_postgres() {
    let Some(database) = crate::support::db::TestDatabase::postgres().await else { return };
    read_only_commands_check_the_schema(&database.url).await;
}

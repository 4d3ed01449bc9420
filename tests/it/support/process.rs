//! A Herald binary run until it exits, its standard error read line by line as it comes, so a test can
//! tell when the process was ready and how long it took to stop after that.

use std::{
    io::{BufRead, BufReader},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The debug-build hook that makes a named stage fail (see `herald::stages`).
pub const FAIL_STAGE: &str = "HERALD_TEST_FAIL_STAGE";
/// How long after it starts the stage fails, in milliseconds.
pub const FAIL_AFTER_MS: &str = "HERALD_TEST_FAIL_AFTER_MS";

/// How a process ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// When the first line containing the readiness text was read.
    pub ready_at: Option<Instant>,
    pub exited_at: Instant,
    pub stderr: Vec<String>,
}

/// Runs `command` (standard output discarded) until it exits; kills it and panics after `timeout`.
pub fn run_until_exit(mut command: Command, ready: &str, timeout: Duration) -> Exit {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("the process starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines, arrived) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let (status, exited_at) = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break (status, Instant::now());
        }
        if Instant::now() > deadline {
            drop(child.kill());
            let stderr: Vec<String> = arrived.try_iter().map(|(_, line)| line).collect();
            panic!("the process did not exit within {timeout:?}: {stderr:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut ready_at = None;
    let mut stderr = Vec::new();
    for (at, line) in arrived {
        if ready_at.is_none() && line.contains(ready) {
            ready_at = Some(at);
        }
        stderr.push(line);
    }
    Exit { status, ready_at, exited_at, stderr }
}

/// Asserts that a process whose stage `stage` was made to fail `fail_after` after start-up exited with
/// status 1 within about a second of the failure, its last line naming the stage.
pub fn assert_failed_promptly(exit: &Exit, stage: &str, fail_after: Duration) {
    let lines = &exit.stderr;
    let ready_at = exit.ready_at.unwrap_or_else(|| panic!("the process never got ready: {lines:#?}"));
    assert_eq!(exit.status.code(), Some(1), "a failed stage is a failed process: {lines:#?}");
    // The stage started before the process said it was ready, so it failed before `ready_at + fail_after`.
    let after_failure = exit.exited_at.saturating_duration_since(ready_at).saturating_sub(fail_after);
    assert!(
        after_failure < Duration::from_millis(1200),
        "{stage}: exited {after_failure:?} after the failure: {lines:#?}"
    );
    let expected = format!("error: stage {stage} failed: ");
    let last = lines.last().map(String::as_str).unwrap_or_default();
    assert!(last.starts_with(&expected), "the last line names the stage: {lines:#?}");
    let blamed = lines.iter().filter(|line| line.contains("a stage failed")).count();
    assert_eq!(blamed, 1, "one error line when it fails: {lines:#?}");
}

/// A `herald-worker` process for a services-mode [`super::app::TestApp`], stopped with SIGTERM when
/// dropped.
pub struct Worker {
    child: std::process::Child,
    /// Its admin listener's port (`/metrics`, `/readyz`).
    pub admin: u16,
}

impl Worker {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_herald-worker")`) with the app's settings and
    /// waits until its `/readyz` answers 200.
    pub async fn start(binary: &str, app: &super::app::TestApp) -> Self {
        let admin =
            std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = Command::new(binary)
            .envs(app.worker_env())
            .env("HERALD_CONFIG_DIR", super::empty_config_dir())
            .env("HERALD__ADMIN__BIND", format!("127.0.0.1:{admin}"))
            .spawn()
            .expect("herald-worker starts");
        let worker = Self { child, admin };
        let deadline = Instant::now() + Duration::from_secs(60);
        let readyz = format!("http://127.0.0.1:{admin}/readyz");
        let client = super::metrics::client();
        while client.get(&readyz).send().await.map(|response| response.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < deadline, "the worker's admin /readyz never answered 200");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status());
        drop(self.child.wait());
    }
}

//! Herald as operators run it in production mode: the `herald serve` binary (the API; in production mode
//! it runs no workers) and `herald-worker` processes, all configured by environment variables, each
//! writing its log to a file of a shared folder (kept, and its path printed, when the test fails).
//! `herald serve` is the binary built beside `herald-worker` (`cargo build -p herald`; `.ci/run` builds
//! it): Cargo gives a test the path of its own package's binaries only.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The `herald` binary next to this package's `herald-worker`.
pub fn herald_binary() -> PathBuf {
    let worker = std::path::Path::new(env!("CARGO_BIN_EXE_herald-worker"));
    let herald = worker.with_file_name("herald");
    assert!(
        herald.is_file(),
        "{} is missing: build it first with `cargo build -p herald` (this test runs `herald serve`)",
        herald.display()
    );
    herald
}

/// The folder of the processes' logs: removed after a passing test, kept after a failing one (or after
/// any, with `HERALD_STORM_KEEP_LOGS` set).
#[derive(Debug)]
pub struct Logs {
    dir: Option<tempfile::TempDir>,
}

impl Logs {
    pub fn new() -> Self {
        Self {
            dir: Some(tempfile::Builder::new().prefix("herald-storm-logs-").tempdir().expect("logs folder")),
        }
    }

    fn file(&self, name: &str) -> std::fs::File {
        let dir = self.dir.as_ref().expect("logs folder");
        std::fs::File::create(dir.path().join(name)).expect("log file")
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if (std::thread::panicking() || std::env::var_os("HERALD_STORM_KEEP_LOGS").is_some())
            && let Some(dir) = self.dir.take()
        {
            eprintln!("the Herald processes' logs are kept in {}", dir.keep().display());
        }
    }
}

/// A Herald process, stopped with SIGTERM (then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    /// SIGKILL, as a crash or the OOM killer would, and reaps it.
    pub fn kill(mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }

    /// Its exit status if it ended by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        drop(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// The API: its base URL and the admin API key it printed on first start.
#[derive(Debug)]
pub struct Api {
    pub base: String,
    pub key: String,
    _process: Process,
}

/// Starts `herald serve` with `env` on a free port of 127.0.0.1; returns once `/readyz` answers 200.
pub async fn start_api(env: &[(String, String)], logs: &Logs) -> Api {
    let port = super::private_services::free_port();
    let mut child = Command::new(herald_binary())
        .arg("serve")
        .envs(env.iter().cloned())
        .env_remove("RUST_LOG")
        .env("HERALD__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(logs.file("api.log"))
        .spawn()
        .expect("herald serve starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let process = Process { child };
    // On an empty database `herald serve` prints the first admin's key, alone on its line. The rest of
    // its output is read too (a closed pipe would fail its next write).
    let (key_line, key) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut key_line = Some(key_line);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("sk_live_")
                && let Some(sender) = key_line.take()
            {
                drop(sender.send(line));
            }
        }
    });
    let key = key.await.expect("herald serve printed the admin API key (see api.log)");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "herald serve's /readyz never answered 200 (see api.log)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api { base, key, _process: process }
}

/// Starts a `herald-worker` with `env`, its log in `worker-{n}.log`.
pub fn start_worker(env: &[(String, String)], logs: &Logs, n: usize) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_herald-worker"))
        .envs(env.iter().cloned())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logs.file(&format!("worker-{n}.log")))
        .spawn()
        .expect("herald-worker starts");
    Process { child }
}

//! A PostgreSQL and a RabbitMQ of the test's own, for tests that stop and start them: the machine's
//! shared ones serve other tests at the same time and must never be touched. PostgreSQL is a fresh
//! cluster (`initdb` as the `postgres` user) on a free port; RabbitMQ a second node (`storm-PID@localhost`)
//! with its own ports, data, logs and an empty plugin list, so nothing of the shared node's is contended.
//! Both run from a temporary folder and are stopped, and the folder removed, when dropped, also when the
//! test fails. Missing binaries are a failure that says what to install, never a skip. Needs root (it runs
//! the servers as `postgres` and `rabbitmq`).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Where Debian's PostgreSQL 15 server binaries are.
pub const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A port nobody listens on right now (another process may take it before we do; unlikely on loopback).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// Whether an executable of that name is in one of PATH's folders.
fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// Runs `command`, panicking with its output unless it succeeds.
fn run(command: &mut Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `command`; whether it succeeded (output discarded).
fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last lines of a log file, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn owned_temp_dir(prefix: &str, owner: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("a temporary folder");
    run(Command::new("chown").arg(format!("{owner}:{owner}")).arg(dir.path()), "chown the temporary folder");
    dir
}

/// A PostgreSQL cluster of the test's own on 127.0.0.1 (trust authentication, fsync off).
#[derive(Debug)]
pub struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    pub fn start() -> Self {
        for binary in ["initdb", "pg_ctl"] {
            let path = Path::new(POSTGRES_BIN).join(binary);
            assert!(
                path.is_file(),
                "this test needs PostgreSQL 15's server binaries: {} is missing (apt-get install postgresql-15)",
                path.display()
            );
        }
        assert!(
            on_path("runuser"),
            "this test runs PostgreSQL as the postgres user with runuser, which is not on PATH"
        );
        let dir = owned_temp_dir("herald-private-pg-", "postgres");
        let postgres = Self {
            port: free_port(),
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            dir,
        };
        run(
            postgres.as_postgres("initdb").arg("-D").arg(&postgres.data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]),
            "initdb",
        );
        postgres.start_server();
        postgres
    }

    /// `postgres://` URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let mut command = self.as_postgres("pg_ctl");
        command.arg("-D").arg(&self.data).args(["-o", &options, "-l"]).arg(&self.log).args(["-w", "start"]);
        if !succeeds(&mut command) {
            panic!("PostgreSQL did not start on port {}:\n{}", self.port, tail(&self.log));
        }
    }

    /// Stops the server (fast shutdown: open connections are cut) and waits until it is down.
    pub fn stop_server(&self) {
        run(
            self.as_postgres("pg_ctl").arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    fn as_postgres(&self, binary: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(Path::new(POSTGRES_BIN).join(binary))
            .current_dir(self.dir.path());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Whatever state it is in; the folder goes with `dir` afterwards.
        succeeds(self.as_postgres("pg_ctl").arg("-D").arg(&self.data).args([
            "-m",
            "immediate",
            "-w",
            "stop",
        ]));
    }
}

/// A RabbitMQ node of the test's own, beside the shared one (same Erlang cookie and epmd, nothing else).
#[derive(Debug)]
pub struct PrivateRabbitMq {
    pub node: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRabbitMq {
    /// Starts the node and waits until it has booted.
    pub fn start() -> Self {
        for binary in ["rabbitmq-server", "rabbitmqctl"] {
            assert!(
                on_path(binary),
                "this test needs RabbitMQ's server binaries: {binary} is not on PATH (apt-get install rabbitmq-server)"
            );
        }
        let dir = owned_temp_dir("herald-private-rabbitmq-", "rabbitmq");
        let node = format!("storm-{}@localhost", std::process::id());
        let (port, dist_port) = (free_port(), free_port());
        let file = |name: &str| dir.path().join(name);
        // Its own config file: the machine's (/etc/rabbitmq/rabbitmq.conf) names the shared node's listener.
        std::fs::write(file("rabbitmq.conf"), format!("listeners.tcp.local = 127.0.0.1:{port}\n"))
            .expect("config");
        std::fs::write(file("enabled_plugins"), "").expect("plugins file");
        run(
            Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(dir.path()),
            "chown the node's files",
        );
        let started = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", file("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", file("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", file("mnesia"))
            .env("RABBITMQ_LOG_BASE", file("log"))
            .env("RABBITMQ_PID_FILE", file("rabbitmq.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmq-server runs");
        assert!(started.success(), "rabbitmq-server -detached: {started}");
        let rabbitmq = Self { node, port, dir };
        // `await_startup` fails at once until the node has registered with epmd: ask again until it answers.
        let deadline = Instant::now() + Duration::from_secs(90);
        while !succeeds(&mut rabbitmq.ctl("await_startup")) {
            assert!(
                Instant::now() < deadline,
                "the private RabbitMQ node {} did not start within 90 s:\n{}",
                rabbitmq.node,
                tail(&rabbitmq.dir.path().join("log").join(format!("{}.log", rabbitmq.node)))
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        rabbitmq
    }

    /// `amqp://` URL of its default virtual host.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl stop_app`: the broker goes away, the node stays.
    pub fn stop_app(&self) {
        run(&mut self.ctl("stop_app"), "rabbitmqctl stop_app");
    }

    /// `rabbitmqctl start_app`, returning once the broker accepts connections again.
    pub fn start_app(&self) {
        run(&mut self.ctl("start_app"), "rabbitmqctl start_app");
        run(&mut self.ctl("await_startup"), "rabbitmqctl await_startup");
    }

    fn ctl(&self, command: &str) -> Command {
        let mut ctl = Command::new("rabbitmqctl");
        ctl.args(["-q", "-n", &self.node, command]);
        ctl
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        // Given the pid file, `stop` returns once the node's process has ended.
        let pid_file = self.dir.path().join("rabbitmq.pid");
        if succeeds(self.ctl("stop").arg(&pid_file)) {
            return;
        }
        // The node does not answer: end its process by the pid it wrote.
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            succeeds(Command::new("kill").args(["-KILL", pid.trim()]));
        }
    }
}

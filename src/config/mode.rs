//! How Herald runs: [`Mode`], derived from the settings in one place ([`Settings::mode`]) and decided by
//! the queue, since the queue decides which process does what. Code that behaves differently per mode
//! matches on it; no capability of a component stands in for it.

use super::{DatabaseKind, Settings};

/// How Herald runs, as the settings select it: by the queue, since the queue decides which process does
/// what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `queue.url`: one `herald serve` process with an in-memory queue runs the API and the workers.
    /// The store holds every event and delivery; the queue only moves work inside the process.
    Embedded,
    /// `queue.url` names RabbitMQ: `herald serve` is the API; `herald-worker` processes (any number)
    /// consume, sign and deliver. The broker's publisher confirms make a published event durable.
    Production,
}

impl Settings {
    /// The running mode, which the queue decides.
    pub fn mode(&self) -> Mode {
        if self.queue.url.is_some() { Mode::Production } else { Mode::Embedded }
    }
}

impl Mode {
    /// For the start-up line: the mode with the store it runs on.
    pub fn describe(self, database: DatabaseKind) -> &'static str {
        match (self, database) {
            (Mode::Embedded, DatabaseKind::Sqlite) => "embedded (SQLite, in-process queue)",
            (Mode::Embedded, DatabaseKind::Postgres) => "embedded (PostgreSQL, in-process queue)",
            (Mode::Production, DatabaseKind::Postgres) => "production (PostgreSQL, RabbitMQ)",
            (Mode::Production, DatabaseKind::Sqlite) => "production (SQLite, RabbitMQ)",
        }
    }
}

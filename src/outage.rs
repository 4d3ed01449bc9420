//! Outage latches: a dependency (the database, RabbitMQ) that goes away is reported once, when the first
//! operation fails (`warn`, "database unavailable"), and once when the first operation succeeds again
//! (`info`, "database back", with how long it was gone), instead of one line per failed query. The
//! per-operation paths (retry loops, 503 answers) log such failures at `debug` only; [`is_reported`]
//! tells them which errors a latch covers.
//!
//! A success costs one relaxed atomic load; only the transitions take the lock.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use crate::{queue::QueueError, store::StoreError};

/// The process's database latch, fed by every store query (`store::sql`). One process talks to one
/// database, so one latch is enough.
pub(crate) static DATABASE: Outage = Outage::new("database");

/// Whether a dependency is down, and since when.
#[derive(Debug)]
pub(crate) struct Outage {
    what: &'static str,
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Outage {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self { what, down: AtomicBool::new(false), since: Mutex::new(None) }
    }

    /// An operation failed because the dependency cannot be reached: the first failure after a success
    /// logs a warning with `reason`; later ones log nothing.
    pub(crate) fn failed(&self, reason: &dyn std::fmt::Display) {
        if self.down.load(Ordering::Relaxed) || self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(reason = %reason, "{} unavailable", self.what);
    }

    /// Whether the last operation found the dependency unreachable (until one succeeds again).
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// An operation succeeded: the first success after a failure logs that the dependency is back.
    pub(crate) fn succeeded(&self) {
        if !self.down.load(Ordering::Relaxed) || !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let since = self.since.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let down_for = since.map(|since| tracing::field::debug(since.elapsed()));
        tracing::info!(down_for, "{} back", self.what);
    }
}

/// Whether `error` is an outage that a latch reports (the database or the broker unreachable), so that
/// the caller can log it at `debug` instead of once per operation. Looks through `anyhow::Error`.
pub(crate) fn is_reported(error: &(dyn std::any::Any + 'static)) -> bool {
    if let Some(error) = error.downcast_ref::<anyhow::Error>() {
        return error.chain().any(|cause| {
            matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Unavailable(_)))
                || matches!(cause.downcast_ref::<QueueError>(), Some(QueueError::Unavailable(_)))
        });
    }
    matches!(error.downcast_ref::<StoreError>(), Some(StoreError::Unavailable(_)))
        || matches!(error.downcast_ref::<QueueError>(), Some(QueueError::Unavailable(_)))
}

/// `tracing::warn!(...)`, or `tracing::debug!(...)` when `$error` is an outage that a latch reports
/// ([`is_reported`]): for the per-operation failures (a retry, a periodic job) that would otherwise log
/// one line per operation for as long as the database or broker is gone.
macro_rules! warn_unless_reported {
    ($error:expr, $($line:tt)+) => {
        if $crate::outage::is_reported($error) {
            tracing::debug!($($line)+)
        } else {
            tracing::warn!($($line)+)
        }
    };
}
pub(crate) use warn_unless_reported;

/// Runs `f` with a subscriber that writes every log line (debug and above, no colours) into a string,
/// and returns that string: for tests that check what an operator would read.
#[cfg(test)]
pub(crate) fn capture_logs(f: impl FnOnce()) -> String {
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer.0.lock().expect("buffer").clone();
    String::from_utf8(bytes).expect("log lines are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
        let database = Outage::new("database");
        let logs = capture_logs(|| {
            database.succeeded();
            for _ in 0..5 {
                database.failed(&"connection refused");
            }
            database.succeeded();
            database.succeeded();
        });
        assert_eq!(logs.matches("database unavailable").count(), 1, "{logs}");
        assert_eq!(logs.matches("database back").count(), 1, "{logs}");
        assert!(logs.contains("WARN") && logs.contains("connection refused"), "{logs}");
        let unavailable = logs.find("database unavailable").expect("logged");
        assert!(unavailable < logs.find("database back").expect("logged"), "in order: {logs}");
    }

    #[test]
    fn a_second_outage_is_reported_again() {
        let broker = Outage::new("RabbitMQ");
        let logs = capture_logs(|| {
            broker.failed(&"lost");
            broker.succeeded();
            broker.failed(&"lost");
            broker.succeeded();
        });
        assert_eq!(logs.matches("RabbitMQ unavailable").count(), 2, "{logs}");
        assert_eq!(logs.matches("RabbitMQ back").count(), 2, "{logs}");
    }

    #[test]
    fn only_unreachable_dependencies_count_as_reported() {
        assert!(is_reported(&StoreError::Unavailable("down".into())));
        assert!(is_reported(&anyhow::Error::from(StoreError::Unavailable("down".into()))));
        assert!(is_reported(&anyhow::Error::from(QueueError::Unavailable("down".into()))));
        assert!(!is_reported(&StoreError::NotFound));
        assert!(!is_reported(&anyhow::anyhow!("a bug")));
        assert!(!is_reported(&"down".to_string()));
    }
}

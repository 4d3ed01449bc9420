//! Whether this process is ready to work: the store answers a ping, the queue can take work, and every
//! extra check (such as a stage supervisor's `health()`) passes. One [`Readiness`] per process serves
//! the API's `/readyz`, the admin listener's `/readyz` and the `herald_ready` gauge.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use crate::{queue::DynQueue, store::DynStore, telemetry::metrics::names};

/// Longest a readiness probe waits on one dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// An extra readiness check: `Ok` when ready, else what is wrong.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The store, the queue and the extra checks of one process. Cheap to clone; every clone shares the
/// extra checks, so one added later (by [`Readiness::add_check`]) counts everywhere: the API's and the
/// admin listener's `/readyz` and `herald_ready`.
#[derive(Clone)]
pub struct Readiness {
    store: DynStore,
    queue: DynQueue,
    extra: Arc<RwLock<Vec<(&'static str, Check)>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<&str> = self.checks().iter().map(|(name, _)| *name).collect();
        f.debug_struct("Readiness").field("extra", &extra).finish_non_exhaustive()
    }
}

/// The outcome of every check, in order: `database`, `queue`, then the extra checks by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<(&'static str, Result<(), String>)>,
}

impl Report {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|(_, result)| result.is_ok())
    }

    /// What is not ready, `; `-separated (empty when ready).
    pub fn failures(&self) -> String {
        let failed: Vec<&str> =
            self.checks.iter().filter_map(|(_, result)| result.as_ref().err().map(String::as_str)).collect();
        failed.join("; ")
    }
}

impl Readiness {
    pub fn new(store: DynStore, queue: DynQueue) -> Self {
        Self { store, queue, extra: Arc::default() }
    }

    /// Adds a check reported under `name`, for this handle and every clone, e.g.
    /// `readiness.add_check("stages", Arc::new(move || supervisor.health()))`.
    pub fn add_check(&self, name: &'static str, check: Check) {
        self.extra.write().unwrap_or_else(PoisonError::into_inner).push((name, check));
    }

    fn checks(&self) -> Vec<(&'static str, Check)> {
        self.extra.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs every check (each dependency probe waits up to 2 s) and sets `herald_ready`.
    pub async fn check(&self) -> Report {
        let database = match tokio::time::timeout(PROBE_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("database unreachable: {error}")),
            Err(_) => Err("database did not answer within 2s".to_string()),
        };
        let queue = match tokio::time::timeout(PROBE_TIMEOUT, self.queue.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("{} {error}", self.queue.kind())),
            Err(_) => Err(format!("{} did not answer within 2s", self.queue.kind())),
        };
        let mut checks = vec![("database", database), ("queue", queue)];
        checks.extend(self.checks().into_iter().map(|(name, check)| (name, check())));
        let report = Report { checks };
        metrics::gauge!(names::READY).set(if report.is_ready() { 1.0 } else { 0.0 });
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::queue::embedded::EmbeddedQueue;

    #[tokio::test]
    async fn an_added_check_counts_for_every_clone() {
        let settings = crate::config::Settings::defaults();
        let dir = tempfile::tempdir().expect("dir");
        let mut database = settings.database.clone();
        database.url = crate::config::Secret::new(format!("sqlite://{}", dir.path().join("h.db").display()));
        let store: DynStore = Arc::new(
            crate::store::sqlite::connect(database.url.expose(), &database, crate::store::Schema::Migrate)
                .await
                .expect("sqlite"),
        );
        let queue: DynQueue = Arc::new(EmbeddedQueue::new(tokio::sync::mpsc::unbounded_channel().0));
        let readiness = Readiness::new(store, queue);
        let clone = readiness.clone();
        assert!(clone.check().await.is_ready());
        let alive = Arc::new(AtomicBool::new(false));
        let flag = alive.clone();
        readiness.add_check(
            "stages",
            Arc::new(
                move || if flag.load(Ordering::SeqCst) { Ok(()) } else { Err("fan-out stopped".into()) },
            ),
        );
        let report = clone.check().await;
        assert!(!report.is_ready());
        assert_eq!(report.failures(), "fan-out stopped");
        assert_eq!(
            report.checks.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            ["database", "queue", "stages"]
        );
        alive.store(true, Ordering::SeqCst);
        assert!(clone.check().await.is_ready());
    }
}

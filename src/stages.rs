//! Supervision: [`Stages`] owns every long-running task of a process (the group-commit writers, the
//! outbox publisher, the markers, the usage flusher, fan-out, delivery, the scheduler, the RabbitMQ
//! connection), so that the process never runs half-dead. One `Stages` per process; every component
//! registers its background task with it under a name. A stage that returns an error, panics, or ends
//! while the process is not shutting down is a failure: the first one is recorded, logged once with the
//! stage's name, and cancels the shutdown token, so the HTTP server and every other stage stop and the
//! process exits non-zero naming the stage ([`Stages::wait`] returns the [`StageFailure`]).
//!
//! Two tiers stop in order. Working stages ([`Stages::spawn`]) take work and stop at the shutdown token.
//! Support stages ([`Stages::spawn_support`]: the writers, the published-marks, the broker connection)
//! serve the working stages, so they keep going until every working stage has drained, then stop at
//! [`Stages::drained`]: an outcome recorded or a message acknowledged during the drain still goes
//! through. One-shot tasks and short helpers (per batch, per request) are not stages; they stay plain
//! spawns inside the stage that owns them.
//!
//! Fault injection, for tests only: in debug builds, `HERALD_TEST_FAIL_STAGE=NAME` makes the stage
//! `NAME` fail `HERALD_TEST_FAIL_AFTER_MS` milliseconds (default 0) after it starts. Release builds do
//! not contain the hook (`#[cfg(debug_assertions)]`).

use std::{
    collections::HashMap,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::telemetry::metrics::names;

/// How long a stage that ended on its own waits for another stage's failure (which then explains it)
/// before its early end is reported as the failure.
const EARLY_END_GRACE: Duration = Duration::from_millis(100);

/// The first stage that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stage {stage} failed: {cause}")]
pub struct StageFailure {
    pub stage: &'static str,
    /// The error with its cause chain, or the panic message.
    pub cause: String,
}

/// What a stage's future may return: `()` (it can then fail only by panicking or ending early) or
/// `anyhow::Result<()>`.
pub trait StageOutput: Send + 'static {
    fn into_result(self) -> anyhow::Result<()>;
}

impl StageOutput for () {
    fn into_result(self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl StageOutput for anyhow::Result<()> {
    fn into_result(self) -> anyhow::Result<()> {
        self
    }
}

/// The owner of a process's long-running stages. Cheap to clone; every clone is the same owner.
#[derive(Debug, Clone)]
pub struct Stages {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    working: TaskTracker,
    support: TaskTracker,
    /// Cancelled by a signal or by the first failure; working stages stop at it.
    shutdown: CancellationToken,
    /// Cancelled once every working stage has ended; support stages stop at it.
    drained: CancellationToken,
    /// How long each tier may take to stop.
    grace: Duration,
    failure: OnceLock<StageFailure>,
    /// Stages still running, by name (a name may be registered more than once).
    running: Mutex<HashMap<&'static str, usize>>,
}

impl Stages {
    /// An owner whose stages stop at `shutdown` (cancelled by a signal, or here by the first failure);
    /// [`Stages::wait`] gives each tier `grace` to stop (`server.shutdown_grace`).
    pub fn new(shutdown: CancellationToken, grace: Duration) -> Self {
        let inner = Inner {
            working: TaskTracker::new(),
            support: TaskTracker::new(),
            shutdown,
            drained: CancellationToken::new(),
            grace,
            failure: OnceLock::new(),
            running: Mutex::new(HashMap::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The process's shutdown token: working stages and the HTTP server stop when it is cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    /// Cancelled once every working stage has ended: where support stages stop.
    pub fn drained(&self) -> CancellationToken {
        self.inner.drained.clone()
    }

    /// Starts a working stage: it runs until [`Self::shutdown_token`] is cancelled.
    pub fn spawn(&self, name: &'static str, stage: impl Future<Output: StageOutput> + Send + 'static) {
        self.launch(&self.inner.working, name, stage);
    }

    /// Starts a support stage: it runs until [`Self::drained`] is cancelled (or its inputs close after
    /// shutdown).
    pub fn spawn_support(
        &self,
        name: &'static str,
        stage: impl Future<Output: StageOutput> + Send + 'static,
    ) {
        self.launch(&self.inner.support, name, stage);
    }

    /// `Err` naming the failed stage once one has failed.
    pub fn health(&self) -> Result<(), String> {
        match self.inner.failure.get() {
            Some(failure) => Err(failure.to_string()),
            None => Ok(()),
        }
    }

    /// Waits for shutdown (a signal or a failure), then for the working stages to stop, then for the
    /// support stages (each tier within the grace); returns the first failure.
    pub async fn wait(self) -> Result<(), StageFailure> {
        let inner = &self.inner;
        inner.shutdown.cancelled().await;
        self.settle(&inner.working).await;
        inner.drained.cancel();
        self.settle(&inner.support).await;
        match inner.failure.get() {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Waits up to the grace for a tier's stages to end.
    async fn settle(&self, tier: &TaskTracker) {
        tier.close();
        if tokio::time::timeout(self.inner.grace, tier.wait()).await.is_err() {
            let running = self.running();
            tracing::warn!(grace = ?self.inner.grace, ?running, "stages did not stop within the shutdown grace");
        }
    }

    fn running(&self) -> Vec<&'static str> {
        let running = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<_> = running.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn launch(
        &self,
        tracker: &TaskTracker,
        name: &'static str,
        stage: impl Future<Output: StageOutput> + Send + 'static,
    ) {
        let stage: BoxFuture<'static, anyhow::Result<()>> = Box::pin(stage.map(StageOutput::into_result));
        #[cfg(debug_assertions)]
        let stage = fault::inject(name, stage);
        // Exported at 0 from the start, so that `increase()` sees the step to 1 of a failure.
        metrics::counter!(names::STAGE_FAILURES, "stage" => name).increment(0);
        self.count(name, 1);
        let this = self.clone();
        tracker.spawn(async move {
            let outcome = AssertUnwindSafe(stage).catch_unwind().await;
            this.count(name, -1);
            let error = match outcome {
                Ok(Ok(())) if this.ended_by_shutdown().await => return,
                Ok(Ok(())) => anyhow::anyhow!("it ended while Herald was not shutting down"),
                Ok(Err(error)) => error,
                Err(panic) => anyhow::anyhow!("it panicked: {}", panic_message(panic.as_ref())),
            };
            this.fail(name, &error);
        });
    }

    /// Whether a stage that ended on its own did so because Herald is stopping. A stage whose input
    /// closed because another stage died (its sender dropped with it) may notice a moment before that
    /// stage's failure is recorded, so the failure is given [`EARLY_END_GRACE`] to be reported first.
    async fn ended_by_shutdown(&self) -> bool {
        let shutdown = &self.inner.shutdown;
        shutdown.is_cancelled() || tokio::time::timeout(EARLY_END_GRACE, shutdown.cancelled()).await.is_ok()
    }

    fn count(&self, name: &'static str, change: isize) {
        let mut running = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner);
        let count = running.entry(name).or_default();
        *count = count.saturating_add_signed(change);
        if *count == 0 {
            running.remove(name);
        }
    }

    /// Records the first failure and stops everything; later failures are only warned about.
    fn fail(&self, stage: &'static str, error: &anyhow::Error) {
        metrics::counter!(names::STAGE_FAILURES, "stage" => stage).increment(1);
        let cause = format!("{error:#}");
        match self.inner.failure.set(StageFailure { stage, cause: cause.clone() }) {
            Ok(()) => tracing::error!(stage, error = cause, "a stage failed; Herald is stopping"),
            Err(_) => tracing::warn!(stage, error = cause, "another stage failed while Herald was stopping"),
        }
        self.inner.shutdown.cancel();
    }
}

/// The body of a periodic stage: runs `tick` at once, then every `interval` (a tick that ran long delays
/// the next by a whole interval rather than bunching them), until `shutdown`. A tick in progress is
/// finished, not cut short.
pub async fn every<Tick, Ticked>(interval: Duration, shutdown: &CancellationToken, mut tick: Tick)
where
    Tick: FnMut() -> Ticked,
    Ticked: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => tick().await,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

/// The test-only failure hook (debug builds only): see the module documentation.
#[cfg(debug_assertions)]
mod fault {
    use std::time::Duration;

    use futures_util::future::BoxFuture;

    /// The stage to fail.
    const STAGE: &str = "HERALD_TEST_FAIL_STAGE";
    /// Milliseconds after the stage starts (default 0).
    const AFTER_MS: &str = "HERALD_TEST_FAIL_AFTER_MS";

    pub(super) fn inject(
        name: &'static str,
        stage: BoxFuture<'static, anyhow::Result<()>>,
    ) -> BoxFuture<'static, anyhow::Result<()>> {
        if std::env::var(STAGE).ok().as_deref() != Some(name) {
            return stage;
        }
        let after = std::env::var(AFTER_MS).ok().and_then(|ms| ms.parse().ok()).unwrap_or(0);
        Box::pin(async move {
            tokio::select! {
                result = stage => result,
                () = tokio::time::sleep(Duration::from_millis(after)) => {
                    Err(anyhow::anyhow!("injected failure ({STAGE}={name})"))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn stages() -> Stages {
        Stages::new(CancellationToken::new(), Duration::from_secs(5))
    }

    /// A working stage that runs until shutdown and says whether it stopped.
    fn until_shutdown(stages: &Stages) -> Arc<AtomicBool> {
        let stopped = Arc::new(AtomicBool::new(false));
        let (token, flag) = (stages.shutdown_token(), stopped.clone());
        stages.spawn("steady", async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
        });
        stopped
    }

    #[tokio::test]
    async fn a_failing_stage_stops_the_others_and_is_reported_first() {
        let stages = stages();
        let steady = until_shutdown(&stages);
        stages.spawn("broken", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), _>(anyhow::anyhow!("disk full").context("writing"))
        });
        let token = stages.shutdown_token();
        // Fails too, but after the first failure: not the one reported.
        stages.spawn("second", async move {
            token.cancelled().await;
            Err::<(), _>(anyhow::anyhow!("late"))
        });
        let observer = stages.clone();
        let failure = tokio::time::timeout(Duration::from_secs(2), stages.wait())
            .await
            .expect("stops promptly")
            .expect_err("fails");
        assert_eq!(failure, StageFailure { stage: "broken", cause: "writing: disk full".into() });
        assert_eq!(failure.to_string(), "stage broken failed: writing: disk full");
        assert!(steady.load(Ordering::SeqCst), "the other stage was stopped");
        assert_eq!(observer.health(), Err("stage broken failed: writing: disk full".into()));
    }

    #[tokio::test]
    async fn a_stage_whose_input_died_with_a_failed_stage_is_not_blamed() {
        let stages = stages();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<()>(1);
        stages.spawn_support("consumer", async move { while receiver.recv().await.is_some() {} });
        stages.spawn("producer", async move {
            let _sender = sender;
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), _>(anyhow::anyhow!("broken"))
        });
        assert_eq!(stages.wait().await.expect_err("fails").stage, "producer");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let stages = stages();
        let steady = until_shutdown(&stages);
        stages.spawn("panicky", async {
            let items: Vec<u8> = std::hint::black_box(Vec::new());
            assert!(!items.is_empty(), "no items");
        });
        let failure = stages.wait().await.expect_err("fails");
        assert_eq!(failure.stage, "panicky");
        assert!(failure.cause.contains("no items"), "{failure}");
        assert!(steady.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_stage_ending_before_shutdown_is_a_failure() {
        let stages = stages();
        stages.spawn_support("quitter", async {});
        let failure = stages.wait().await.expect_err("fails");
        assert_eq!(failure.stage, "quitter");
        assert!(failure.cause.contains("not shutting down"), "{failure}");
    }

    #[tokio::test]
    async fn shutdown_is_not_a_failure_and_support_stages_outlive_working_ones() {
        let stages = stages();
        let steady = until_shutdown(&stages);
        let (drained, working_done) = (stages.drained(), steady.clone());
        let saw_working_done = Arc::new(AtomicBool::new(false));
        let saw = saw_working_done.clone();
        stages.spawn_support("writer", async move {
            drained.cancelled().await;
            saw.store(working_done.load(Ordering::SeqCst), Ordering::SeqCst);
        });
        assert_eq!(stages.health(), Ok(()));
        stages.shutdown_token().cancel();
        assert_eq!(stages.clone().wait().await, Ok(()));
        assert!(saw_working_done.load(Ordering::SeqCst), "the support stage stopped after the working one");
        assert_eq!(stages.health(), Ok(()));
    }
}

//! Group commit: many concurrent callers each [`Batcher::submit`] one item; one background task takes
//! every item waiting (up to a limit), handles them in one call (one transaction, one round of publisher
//! confirms) and answers each caller. Under load batches grow on their own while the previous batch is
//! being written; when idle, an item is handled alone without waiting, unless the batcher gathers
//! ([`Batcher::spawn_gathering`]: a small batch waits a moment for more, for callers off the critical
//! path). The handler's error keeps its type (`E`), so a caller can tell a database outage from a
//! permanent failure.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::stages::Stages;

/// Batches this small wait for more, in a batcher that gathers ([`Batcher::spawn_gathering`]).
pub const GATHER_BELOW: usize = 8;

/// Why a submitted item was not handled.
#[derive(Debug, thiserror::Error)]
pub enum BatchError<E> {
    /// The batch failed as a whole; every item in it gets this error.
    #[error("{0}")]
    Failed(Arc<E>),
    /// The handler broke its contract (one result per item).
    #[error("batch handler returned {got} results for {expected} items")]
    Miscounted { expected: usize, got: usize },
    #[error("shutting down")]
    Closed,
}

impl<E> Clone for BatchError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(error) => Self::Failed(error.clone()),
            Self::Miscounted { expected, got } => Self::Miscounted { expected: *expected, got: *got },
            Self::Closed => Self::Closed,
        }
    }
}

struct Job<T, R, E> {
    item: T,
    reply: oneshot::Sender<Result<R, BatchError<E>>>,
}

/// A handle for submitting items; cheap to clone.
pub struct Batcher<T, R, E> {
    jobs: mpsc::Sender<Job<T, R, E>>,
}

impl<T, R, E> Clone for Batcher<T, R, E> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<T, R, E> std::fmt::Debug for Batcher<T, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<T: Send + 'static, R: Send + 'static, E: Send + Sync + 'static> Batcher<T, R, E> {
    /// Starts the background task, the support stage `name`. `handler` gets up to `max_batch` items and
    /// must return one result per item, in order. The task ends when every handle is dropped, or once the
    /// working stages have drained ([`Stages::drained`]), after the last batch. Batch sizes go to
    /// `herald_group_commit_batch_size` labelled `batcher` = `name`.
    pub fn spawn<F, Fut>(stages: &Stages, name: &'static str, max_batch: usize, handler: F) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send,
    {
        Self::spawn_gathering(stages, name, max_batch, Duration::ZERO, handler)
    }

    /// As [`Self::spawn`], but a batch of fewer than [`GATHER_BELOW`] items waits `gathering` for more
    /// before it is handled: for callers that can wait a moment (their result is off anyone's critical
    /// path), so that a steady trickle makes a few larger batches rather than many of one or two. Under
    /// load batches are larger and go at once: they grow on their own while the previous one is handled.
    pub fn spawn_gathering<F, Fut>(
        stages: &Stages,
        name: &'static str,
        max_batch: usize,
        gathering: Duration,
        mut handler: F,
    ) -> Self
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send,
    {
        let (jobs, mut queue) = mpsc::channel::<Job<T, R, E>>(max_batch * 4);
        let drained = stages.drained();
        let sizes = metrics::histogram!(crate::telemetry::metrics::names::BATCH_SIZE, "batcher" => name);
        stages.spawn_support(name, async move {
            let mut batch = Vec::with_capacity(max_batch);
            loop {
                let received = tokio::select! {
                    received = queue.recv_many(&mut batch, max_batch) => received,
                    () = drained.cancelled(), if !queue.is_closed() => {
                        // Nothing submits any more: refuse new items, handle those already waiting.
                        queue.close();
                        continue;
                    }
                };
                if received == 0 {
                    break;
                }
                if !gathering.is_zero() && batch.len() < GATHER_BELOW && !queue.is_closed() {
                    gather(gathering, &drained, &mut batch, max_batch, || queue.try_recv().ok()).await;
                }
                sizes.record(batch.len() as f64);
                answer(batch.drain(..), &mut handler).await;
            }
        });
        Self { jobs }
    }

    /// Submits one item and waits for its result.
    pub async fn submit(&self, item: T) -> Result<R, BatchError<E>> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { item, reply }).await.map_err(|_| BatchError::Closed)?;
        answer.await.map_err(|_| BatchError::Closed)?
    }
}

/// Waits `window` (less if `stop` comes first), then adds to `batch` what `next` has meanwhile, up to
/// `max` items in all. Nothing is waited for when the batch is full already.
pub async fn gather<T>(
    window: Duration,
    stop: &CancellationToken,
    batch: &mut Vec<T>,
    max: usize,
    mut next: impl FnMut() -> Option<T>,
) {
    if batch.len() >= max {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(window) => {}
        () = stop.cancelled() => {}
    }
    while batch.len() < max
        && let Some(item) = next()
    {
        batch.push(item);
    }
}

/// Handles one batch and answers each of its callers.
async fn answer<T, R, E, F, Fut>(jobs: impl Iterator<Item = Job<T, R, E>>, handler: &mut F)
where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, E>>,
{
    let (items, replies): (Vec<T>, Vec<_>) = jobs.map(|job| (job.item, job.reply)).unzip();
    let expected = items.len();
    match handler(items).await {
        Ok(results) if results.len() == expected => {
            for (reply, result) in replies.into_iter().zip(results) {
                drop(reply.send(Ok(result)));
            }
        }
        Ok(results) => {
            let error = BatchError::Miscounted { expected, got: results.len() };
            for reply in replies {
                drop(reply.send(Err(error.clone())));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                drop(reply.send(Err(BatchError::Failed(error.clone()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_batches_and_get_their_own_results() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let stages = Stages::new(Default::default(), std::time::Duration::from_secs(1));
        let batcher = Batcher::spawn(&stages, "test-writer", 8, move |items: Vec<u32>| {
            seen.lock().expect("lock").push(items.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok::<_, std::convert::Infallible>(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let handles: Vec<_> = (0..40u32)
            .map(|i| {
                (
                    i,
                    tokio::spawn({
                        let b = batcher.clone();
                        async move { b.submit(i).await }
                    }),
                )
            })
            .collect();
        for (i, handle) in handles {
            assert_eq!(handle.await.expect("join").expect("result"), i * 2);
        }
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|size| *size <= 8));
        assert!(sizes.len() < 40, "items were batched: {sizes:?}");
    }

    #[tokio::test]
    async fn a_gathering_batcher_lets_a_small_batch_wait_for_more() {
        for (gathering, expected) in [(Duration::from_millis(500), vec![2]), (Duration::ZERO, vec![1, 1])] {
            let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = sizes.clone();
            let stages = Stages::new(Default::default(), Duration::from_secs(1));
            let batcher =
                Batcher::spawn_gathering(&stages, "test-writer", 8, gathering, move |items: Vec<u32>| {
                    seen.lock().expect("lock").push(items.len());
                    async move { Ok::<_, std::convert::Infallible>(items) }
                });
            let first = tokio::spawn({
                let batcher = batcher.clone();
                async move { batcher.submit(1).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(batcher.submit(2).await.expect("second"), 2);
            assert_eq!(first.await.expect("join").expect("first"), 1);
            assert_eq!(*sizes.lock().expect("lock"), expected, "gathering for {gathering:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_item() {
        let stages = Stages::new(Default::default(), std::time::Duration::from_secs(1));
        let batcher = Batcher::spawn(&stages, "test-writer", 4, |_items: Vec<u32>| async {
            Err::<Vec<u32>, _>(std::io::Error::other("disk full"))
        });
        let error = batcher.submit(1).await.expect_err("fails");
        assert!(error.to_string().contains("disk full"));
        assert!(
            matches!(error, BatchError::Failed(source) if source.kind() == std::io::ErrorKind::Other),
            "the error keeps its type"
        );
    }
}

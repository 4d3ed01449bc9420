//! One way to retry a transient failure (the database or the broker is unreachable for a moment):
//! [`until_done`] runs an operation again after exponentially growing, jittered delays (`backon`) until
//! it succeeds, fails permanently, or shutdown comes. Used by fan-out and by the outcome recorder; the
//! RabbitMQ supervisor uses the same delays for reconnecting.

use std::{future::Future, time::Duration};

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

/// Why [`until_done`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum GaveUp<E> {
    /// The error is not one that waiting cures.
    Permanent(E),
    /// Shutdown came first; the work is left to whoever takes it next (redelivery, the sweeper).
    ShuttingDown,
}

/// Delays from `first` doubling up to `longest`, with jitter, without end.
pub fn delays(first: Duration, longest: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(longest)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs `operation` until it succeeds. After an error for which `transient` is true, waits (see
/// [`delays`]) and logs a warning naming `what` (at `debug` for an outage that a latch of
/// [`crate::outage`] reports once); any other error is returned at once.
pub async fn until_done<T, E, F, Fut>(
    what: &'static str,
    (first, longest): (Duration, Duration),
    shutdown: &CancellationToken,
    transient: impl Fn(&E) -> bool,
    mut operation: F,
) -> Result<T, GaveUp<E>>
where
    E: std::fmt::Display + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut waits = delays(first, longest);
    loop {
        let error = match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if transient(&error) => error,
            Err(error) => return Err(GaveUp::Permanent(error)),
        };
        let wait = waits.next().unwrap_or(longest);
        // A database or broker outage is logged once by its latch, not once per retry.
        crate::outage::warn_unless_reported!(&error, error = format!("{error:#}"), retry_in = ?wait, "{what} failed; retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Err(GaveUp::ShuttingDown),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const FAST: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(4));

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = until_done(
            "test",
            FAST,
            &CancellationToken::new(),
            |_: &String| true,
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 { Err("down".to_string()) } else { Ok(7) }
            },
        )
        .await;
        assert_eq!(result, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_permanent_error_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = until_done(
            "test",
            FAST,
            &CancellationToken::new(),
            |e: &String| e == "down",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("refused".to_string())
            },
        )
        .await;
        assert_eq!(result, Err(GaveUp::Permanent("refused".to_string())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_the_waiting() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let result: Result<(), _> =
            until_done("test", FAST, &shutdown, |_: &String| true, || async { Err("down".to_string()) })
                .await;
        assert_eq!(result, Err(GaveUp::ShuttingDown));
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let waits: Vec<Duration> =
            delays(Duration::from_millis(100), Duration::from_secs(1)).take(20).collect();
        assert_eq!(waits.len(), 20, "without end");
        assert!(waits.iter().all(|wait| *wait <= Duration::from_secs(2)), "{waits:?}");
        assert!(waits[19] >= Duration::from_secs(1), "reaches the longest delay: {waits:?}");
    }
}

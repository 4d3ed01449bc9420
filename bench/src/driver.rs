//! Sending events to Herald: the load shapes (closed loop: N sends in flight; open loop: sends scheduled
//! at t0 + i/rate, at most so many in flight), how late the open loop's sends were, 429 handling, the warm-up probe, the once-a-second progress line on stderr, and
//! waiting until every expected delivery has arrived.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::{sync::Semaphore, task::JoinHandle};
use uuid::Uuid;

use crate::{
    api::{Api, Sent},
    receiver::{Endpoint, lock, now_micros},
    scenario::{EVENT_TYPE, Load, event_body},
};

/// An open-loop send that starts later than this after its scheduled time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// Times one event is sent again after 429 before it counts as failed.
const MAX_RATE_LIMITED: u32 = 50;

/// Refusal messages kept for the report.
const ERROR_SAMPLES: usize = 5;

/// How far an open loop's sends started behind their schedule (all zero for a closed loop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// The worst delay of a send after its scheduled time.
    pub worst: Duration,
    /// Sends that started more than [`LATE_AFTER`] after their scheduled time.
    pub late: u64,
}

impl Lag {
    fn record(&mut self, behind: Duration) {
        self.worst = self.worst.max(behind);
        if behind > LATE_AFTER {
            self.late += 1;
        }
    }
}

/// Runs `op(0)`, …, `op(count - 1)` with the given load. Returns how far the open loop fell behind its
/// schedule.
pub async fn drive<F, Fut>(load: Load, count: u64, op: F) -> Lag
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    match load {
        Load::Closed { concurrency } => {
            let next = Arc::new(AtomicU64::new(0));
            let workers: Vec<JoinHandle<()>> = (0..concurrency)
                .map(|_| {
                    let (op, next) = (op.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Relaxed);
                            if i >= count {
                                break;
                            }
                            op(i).await;
                        }
                    })
                })
                .collect();
            for worker in workers {
                if let Err(error) = worker.await {
                    eprintln!("a sender task failed: {error}");
                }
            }
            Lag::default()
        }
        Load::Open { rate, in_flight } => {
            let in_flight = in_flight.clamp(1, Semaphore::MAX_PERMITS);
            let slots = Arc::new(Semaphore::new(in_flight));
            let start = Instant::now();
            let mut lag = Lag::default();
            for i in 0..count {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                lag.record(Instant::now().saturating_duration_since(at));
                let send = op(i);
                tokio::spawn(async move {
                    send.await;
                    drop(slot);
                });
            }
            // Every send has finished once all the slots are free again.
            drop(slots.acquire_many(u32::try_from(in_flight).unwrap_or(u32::MAX)).await);
            lag
        }
    }
}

/// Counts of the events sent to Herald, updated by the senders.
#[derive(Debug, Default)]
pub struct Ingest {
    accepted: AtomicU64,
    failed: AtomicU64,
    rate_limited: AtomicU64,
    last_accept_micros: AtomicI64,
    ids: Mutex<Vec<Uuid>>,
    /// How long each accepted send took, from its request to its 202 (milliseconds).
    latencies_ms: Mutex<Vec<f64>>,
    errors: Mutex<Vec<String>>,
}

/// The outcome of sending the events.
#[derive(Debug, Clone)]
pub struct IngestResult {
    pub accepted: u64,
    pub failed: u64,
    pub rate_limited: u64,
    /// The accepted events' ids.
    pub ids: Vec<Uuid>,
    /// Each accepted send's time from request to 202, in milliseconds (ingest latency).
    pub latencies_ms: Vec<f64>,
    pub started_micros: i64,
    pub last_accept_micros: Option<i64>,
    pub error_samples: Vec<String>,
    /// How far the open loop fell behind its schedule.
    pub lag: Lag,
}

impl IngestResult {
    /// Accepted events per second, from the first send to the last 202.
    pub fn events_per_sec(&self) -> f64 {
        match self.last_accept_micros {
            Some(last) if last > self.started_micros => {
                self.accepted as f64 / ((last - self.started_micros) as f64 / 1e6)
            }
            _ => 0.0,
        }
    }
}

impl Ingest {
    /// Events answered so far (accepted or failed).
    pub fn answered(&self) -> u64 {
        self.accepted.load(Relaxed) + self.failed.load(Relaxed)
    }

    fn accept(&self, id: Uuid, took: Duration) {
        lock(&self.ids).push(id);
        lock(&self.latencies_ms).push(took.as_secs_f64() * 1e3);
        self.last_accept_micros.fetch_max(now_micros(), Relaxed);
        self.accepted.fetch_add(1, Relaxed);
    }

    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Relaxed);
        let mut errors = lock(&self.errors);
        if errors.len() < ERROR_SAMPLES {
            errors.push(message);
        }
    }

    /// Sends event `seq`, again after each 429.
    async fn send(&self, api: &Api, seq: u64) {
        let body = event_body(seq);
        for _ in 0..=MAX_RATE_LIMITED {
            let sent = Instant::now();
            match api.send_event(body.clone()).await {
                Sent::Accepted(id) => return self.accept(id, sent.elapsed()),
                Sent::RateLimited(wait) => {
                    self.rate_limited.fetch_add(1, Relaxed);
                    tokio::time::sleep(wait).await;
                }
                Sent::Refused(message) => return self.fail(message),
            }
        }
        self.fail(format!("still rate-limited after {MAX_RATE_LIMITED} tries"));
    }
}

/// Sends `events` events to Herald with `load`.
pub async fn send_events(api: Arc<Api>, load: Load, events: u64, ingest: Arc<Ingest>) -> IngestResult {
    let started_micros = now_micros();
    let senders = ingest.clone();
    let lag = drive(load, events, move |seq| {
        let (api, ingest) = (api.clone(), senders.clone());
        async move { ingest.send(&api, seq).await }
    })
    .await;
    let last = ingest.last_accept_micros.load(Relaxed);
    IngestResult {
        accepted: ingest.accepted.load(Relaxed),
        failed: ingest.failed.load(Relaxed),
        rate_limited: ingest.rate_limited.load(Relaxed),
        ids: lock(&ingest.ids).clone(),
        latencies_ms: lock(&ingest.latencies_ms).clone(),
        started_micros,
        last_accept_micros: (last > 0).then_some(last),
        error_samples: lock(&ingest.errors).clone(),
        lag,
    }
}

/// Prints `sent a/b  delivered c/d  (r/s)` to stderr once a second until aborted.
pub fn spawn_progress(
    ingest: Arc<Ingest>,
    events: u64,
    endpoints: Vec<Arc<Endpoint>>,
    deliveries: u64,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut before = 0;
        loop {
            tick.tick().await;
            let delivered: u64 = endpoints.iter().map(|e| e.first_arrivals()).sum();
            let sent = ingest.answered();
            let rate = delivered.saturating_sub(before);
            before = delivered;
            eprintln!("sent {sent}/{events}  delivered {delivered}/{deliveries}  ({rate}/s)");
        }
    })
}

/// Waits until each of `ids` has arrived at every endpoint, or `deadline`. Returns whether all arrived.
pub async fn wait_for_deliveries(endpoints: &[Arc<Endpoint>], ids: &[Uuid], deadline: Instant) -> bool {
    let expected = (ids.len() * endpoints.len()) as u64;
    loop {
        // The counter is cheap but also counts unexpected events, so the exact count confirms it.
        let arrived: u64 = endpoints.iter().map(|e| e.first_arrivals()).sum();
        if arrived >= expected && endpoints.iter().map(|e| e.count_delivered(ids)).sum::<u64>() == expected {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends probe events until one reaches every endpoint: proves the pipeline works end to end and that
/// Herald's workers see the new webhooks (they cache each organization's subscribers for a while).
pub async fn warm_up(api: &Api, endpoints: &[Arc<Endpoint>], timeout: Duration) -> anyhow::Result<()> {
    let body = serde_json::json!({ "event": EVENT_TYPE, "data": { "bench": true, "probe": true } });
    let body = serde_json::to_vec(&body)?;
    let start = Instant::now();
    let mut probes = Vec::new();
    while start.elapsed() < timeout {
        match api.send_event(body.clone()).await {
            Sent::Accepted(id) => probes.push(id),
            Sent::RateLimited(wait) => tokio::time::sleep(wait).await,
            Sent::Refused(message) => bail!("Herald refused the warm-up event: {message}"),
        }
        let resend_at = Instant::now() + Duration::from_secs(2);
        while Instant::now() < resend_at {
            if probes.iter().any(|probe| endpoints.iter().all(|e| e.has(*probe))) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bail!(
        "Herald accepted the warm-up events but did not deliver them to every endpoint within {} s: are its \
         workers running (production mode needs herald-worker processes)? Herald's log says why deliveries fail.",
        timeout.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_operation_runs_once_in_both_loops() {
        let open = |in_flight| Load::Open { rate: 2_000.0, in_flight };
        for load in [Load::Closed { concurrency: 4 }, open(4096), open(1)] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            drive(load, 50, move |i| {
                let record = record.clone();
                async move { lock(&record).push(i) }
            })
            .await;
            let mut seen = lock(&seen).clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..50).collect::<Vec<_>>(), "{load:?}");
        }
    }

    #[tokio::test]
    async fn the_open_loop_keeps_its_rate() {
        let start = Instant::now();
        drive(Load::Open { rate: 100.0, in_flight: 32 }, 21, |_| async {}).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    }

    #[test]
    fn sends_later_than_10_ms_count_as_late() {
        let mut lag = Lag::default();
        for ms in [0, 3, 10, 11, 250, 4] {
            lag.record(Duration::from_millis(ms));
        }
        assert_eq!(lag, Lag { worst: Duration::from_millis(250), late: 2 });
    }
}

//! The in-process webhook receiver: one HTTP/1.1 (keep-alive) listener on 127.0.0.1, path `/hook/{n}` for
//! endpoint n. It verifies the `X-Signature` of every request, records each (event, endpoint)'s first
//! accepted arrival with its latency (arrival − the payload's `timestamp`), counts duplicates and retries
//! (a `webhook-id` seen before), and answers as the endpoint's behaviour says. State is sharded by event
//! id so the receiver stays cheap: the raw ceiling measures exactly this code.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use crate::scenario::Behavior;

const SHARDS: usize = 16;

/// How long the slow endpoint takes to answer.
pub const SLOW_DELAY: Duration = Duration::from_secs(1);

/// Locks a mutex; a panicking holder cannot leave these maps inconsistent, so poisoning is ignored.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Microseconds since the Unix epoch, from the wall clock (Herald's timestamps use the same clock).
pub fn now_micros() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Whether the retry scenario answers 500 to the first attempt of this delivery: ~1 in 10, chosen by a
/// hash of its `webhook-id` so the choice is deterministic.
pub fn fails_first(delivery_id: &str) -> bool {
    // FNV-1a, 64 bits.
    let hash = delivery_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % 10 == 0
}

/// The first accepted arrival of one event at one endpoint.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    at_micros: i64,
    latency_ms: f64,
    count: u32,
}

#[derive(Debug, Default)]
struct Shard {
    arrivals: HashMap<Uuid, Arrival>,
    /// `webhook-id`s seen, to count retries and fail only first attempts.
    seen: HashSet<String>,
}

/// How the receiver answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// An injected failure (retry scenario).
    Fail,
    /// The body is not a Herald payload.
    Malformed,
}

#[derive(Debug, Deserialize)]
struct Payload<'a> {
    id: Uuid,
    timestamp: &'a str,
}

/// One endpoint: its secret, behaviour and records.
#[derive(Debug)]
pub struct Endpoint {
    pub behavior: Behavior,
    secret: OnceLock<String>,
    shards: Vec<Mutex<Shard>>,
    first_arrivals: AtomicU64,
    bad_signatures: AtomicU64,
    malformed: AtomicU64,
    retries: AtomicU64,
    injected_failures: AtomicU64,
}

/// What an endpoint received, measured against the events that were expected.
#[derive(Debug, Clone, Default)]
pub struct EndpointResult {
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Arrivals of events that were not expected (an earlier run's, a warm-up probe, another sender's).
    pub unexpected: u64,
    pub bad_signatures: u64,
    pub malformed: u64,
    pub retries: u64,
    pub injected_failures: u64,
    pub latencies_ms: Vec<f64>,
    pub last_arrival_micros: Option<i64>,
}

impl Endpoint {
    pub fn new(behavior: Behavior) -> Self {
        Self {
            behavior,
            secret: OnceLock::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            first_arrivals: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
        }
    }

    /// Sets the signing secret (once; later calls are ignored).
    pub fn set_secret(&self, secret: String) {
        drop(self.secret.set(secret));
    }

    pub fn secret(&self) -> Option<&str> {
        self.secret.get().map(String::as_str)
    }

    fn shard(&self, event: Uuid) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(event.as_u128() % SHARDS as u128) as usize])
    }

    /// Checks and records one request that arrived at `arrival_micros`.
    pub fn handle(
        &self,
        inject_failures: bool,
        arrival_micros: i64,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Reply {
        let signed = match (self.secret(), headers.get("x-signature").and_then(|v| v.to_str().ok())) {
            (Some(secret), Some(header)) => herald::signature::verify_x_signature(secret, body, header),
            _ => false,
        };
        if !signed {
            self.bad_signatures.fetch_add(1, Relaxed);
        }
        let Some((event, timestamp_micros)) = parse_payload(body) else {
            self.malformed.fetch_add(1, Relaxed);
            return Reply::Malformed;
        };
        let delivery_id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
        let delivery_id = delivery_id.map_or_else(|| event.to_string(), str::to_string);
        self.record(inject_failures, &delivery_id, event, timestamp_micros, arrival_micros)
    }

    /// Records an arrival of `event` by delivery `delivery_id`; answers 500 to the chosen first attempts.
    pub fn record(
        &self,
        inject_failures: bool,
        delivery_id: &str,
        event: Uuid,
        timestamp_micros: i64,
        arrival_micros: i64,
    ) -> Reply {
        let mut shard = self.shard(event);
        let first_attempt = if shard.seen.contains(delivery_id) {
            false
        } else {
            shard.seen.insert(delivery_id.to_string());
            true
        };
        if !first_attempt {
            self.retries.fetch_add(1, Relaxed);
        }
        if first_attempt
            && inject_failures
            && self.behavior == Behavior::FailFirst
            && fails_first(delivery_id)
        {
            self.injected_failures.fetch_add(1, Relaxed);
            return Reply::Fail;
        }
        match shard.arrivals.get_mut(&event) {
            Some(arrival) => arrival.count += 1,
            None => {
                let latency_ms = (arrival_micros - timestamp_micros) as f64 / 1000.0;
                shard.arrivals.insert(event, Arrival { at_micros: arrival_micros, latency_ms, count: 1 });
                self.first_arrivals.fetch_add(1, Relaxed);
            }
        }
        Reply::Ok
    }

    /// Events that arrived at least once (any event, expected or not): for progress.
    pub fn first_arrivals(&self) -> u64 {
        self.first_arrivals.load(Relaxed)
    }

    /// Whether `event` arrived (and was accepted) at least once.
    pub fn has(&self, event: Uuid) -> bool {
        self.shard(event).arrivals.contains_key(&event)
    }

    /// How many of `expected` arrived at least once.
    pub fn count_delivered(&self, expected: &[Uuid]) -> u64 {
        expected.iter().filter(|id| self.has(**id)).count() as u64
    }

    /// Forgets every record and counter (after the warm-up).
    pub fn reset(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.arrivals.clear();
            shard.seen.clear();
        }
        for counter in [
            &self.first_arrivals,
            &self.bad_signatures,
            &self.malformed,
            &self.retries,
            &self.injected_failures,
        ] {
            counter.store(0, Relaxed);
        }
    }

    /// What arrived, measured against the `expected` events.
    pub fn collect(&self, expected: &[Uuid]) -> EndpointResult {
        let mut result = EndpointResult {
            bad_signatures: self.bad_signatures.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            retries: self.retries.load(Relaxed),
            injected_failures: self.injected_failures.load(Relaxed),
            latencies_ms: Vec::with_capacity(expected.len()),
            ..EndpointResult::default()
        };
        for id in expected {
            match self.shard(*id).arrivals.get(id) {
                Some(arrival) => {
                    result.delivered += 1;
                    result.duplicates += u64::from(arrival.count - 1);
                    result.latencies_ms.push(arrival.latency_ms);
                    result.last_arrival_micros = Some(
                        result.last_arrival_micros.map_or(arrival.at_micros, |t| t.max(arrival.at_micros)),
                    );
                }
                None => result.lost += 1,
            }
        }
        let arrived: u64 = self.shards.iter().map(|shard| lock(shard).arrivals.len() as u64).sum();
        result.unexpected = arrived.saturating_sub(result.delivered);
        result
    }
}

/// A payload's event id and `timestamp` (microseconds since the epoch).
fn parse_payload(body: &[u8]) -> Option<(Uuid, i64)> {
    let payload: Payload<'_> = serde_json::from_slice(body).ok()?;
    let timestamp = chrono::DateTime::parse_from_rfc3339(payload.timestamp).ok()?;
    Some((payload.id, timestamp.timestamp_micros()))
}

/// The receiver: its endpoints, indexed by the `n` of `/hook/{n}`.
#[derive(Debug, Default)]
pub struct Receiver {
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    inject_failures: AtomicBool,
}

impl Receiver {
    /// Starts listening on 127.0.0.1 (a free port) and serving in the background.
    pub async fn start() -> anyhow::Result<(Arc<Receiver>, SocketAddr)> {
        let receiver = Arc::new(Receiver::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = Router::new().route("/hook/{n}", post(hook)).with_state(receiver.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| drop(stream.set_nodelay(true)));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("receiver stopped: {error}");
            }
        });
        Ok((receiver, address))
    }

    /// Adds an endpoint; returns its index (the `n` of its path).
    pub fn add_endpoint(&self, behavior: Behavior) -> usize {
        let mut endpoints = self.endpoints.write().unwrap_or_else(PoisonError::into_inner);
        endpoints.push(Arc::new(Endpoint::new(behavior)));
        endpoints.len() - 1
    }

    pub fn endpoint(&self, n: usize) -> Option<Arc<Endpoint>> {
        self.endpoints.read().unwrap_or_else(PoisonError::into_inner).get(n).cloned()
    }

    /// Turns the retry scenario's failure injection on (it stays off during the warm-up).
    pub fn set_inject_failures(&self, on: bool) {
        self.inject_failures.store(on, Relaxed);
    }
}

async fn hook(
    State(receiver): State<Arc<Receiver>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrival = now_micros();
    let Some(endpoint) = receiver.endpoint(n) else { return StatusCode::NOT_FOUND };
    match endpoint.handle(receiver.inject_failures.load(Relaxed), arrival, &headers, &body) {
        Reply::Ok => {
            if endpoint.behavior == Behavior::Slow {
                tokio::time::sleep(SLOW_DELAY).await;
            }
            StatusCode::OK
        }
        Reply::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Reply::Malformed => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    /// Deterministic, well-spread delivery ids.
    fn delivery_ids(n: u64) -> impl Iterator<Item = String> {
        (0..n).map(|i| {
            Uuid::from_u128(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_string()
        })
    }

    #[test]
    fn about_one_delivery_in_ten_fails_first() {
        let failing = delivery_ids(10_000).filter(|id| fails_first(id)).count();
        assert!((800..=1200).contains(&failing), "{failing} of 10000 chosen");
        // Deterministic: the same id is always chosen the same way.
        assert!(delivery_ids(100).all(|id| fails_first(&id) == fails_first(&id)));
    }

    #[test]
    fn only_first_attempts_fail_and_retries_are_counted() {
        let endpoint = Endpoint::new(Behavior::FailFirst);
        let chosen = delivery_ids(1_000).find(|id| fails_first(id)).expect("some id is chosen");
        let spared = delivery_ids(1_000).find(|id| !fails_first(id)).expect("some id is spared");
        let (event_a, event_b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(endpoint.record(true, &chosen, event_a, 0, 5_000), Reply::Fail);
        assert!(!endpoint.has(event_a), "a failed attempt is not a delivery");
        assert_eq!(endpoint.record(true, &chosen, event_a, 0, 7_000), Reply::Ok);
        assert_eq!(endpoint.record(true, &spared, event_b, 0, 1_000), Reply::Ok);
        let result = endpoint.collect(&[event_a, event_b, Uuid::from_u128(3)]);
        assert_eq!((result.delivered, result.lost, result.retries, result.injected_failures), (2, 1, 1, 1));
        assert_eq!(result.duplicates, 0);
        let mut latencies = result.latencies_ms;
        latencies.sort_by(f64::total_cmp);
        assert_eq!(latencies, vec![1.0, 7.0]);
    }

    #[test]
    fn no_failure_outside_the_retry_scenario_or_before_injection() {
        let chosen = delivery_ids(1_000).find(|id| fails_first(id)).expect("some id is chosen");
        let fast = Endpoint::new(Behavior::Fast);
        assert_eq!(fast.record(true, &chosen, Uuid::from_u128(1), 0, 1), Reply::Ok);
        let failing = Endpoint::new(Behavior::FailFirst);
        assert_eq!(failing.record(false, &chosen, Uuid::from_u128(1), 0, 1), Reply::Ok);
    }

    #[test]
    fn signatures_duplicates_and_unexpected_events_are_counted() {
        let endpoint = Endpoint::new(Behavior::Fast);
        endpoint.set_secret("whsec_test-secret".into());
        let event = Uuid::now_v7();
        let body = format!(
            r#"{{"id":"{event}","event":"item.created","timestamp":"2026-11-22T22:05:21.753185Z","organization_id":"x","data":{{}}}}"#
        );
        let signed = |delivery: &str, secret: &str| {
            let mut headers = HeaderMap::new();
            let signature = herald::signature::x_signature(secret, body.as_bytes());
            headers.insert("x-signature", HeaderValue::from_str(&signature).expect("hex"));
            headers.insert("webhook-id", HeaderValue::from_str(delivery).expect("ascii"));
            headers
        };
        let sent = chrono::DateTime::parse_from_rfc3339("2026-11-22T22:05:21.753185Z").expect("RFC 3339");
        let arrival = sent.timestamp_micros() + 12_500;
        assert_eq!(
            endpoint.handle(false, arrival, &signed("d1", "whsec_test-secret"), body.as_bytes()),
            Reply::Ok
        );
        assert_eq!(
            endpoint.handle(false, arrival, &signed("d2", "wrong-secret"), body.as_bytes()),
            Reply::Ok
        );
        assert_eq!(endpoint.handle(false, arrival, &HeaderMap::new(), b"not json"), Reply::Malformed);
        let other = Uuid::now_v7();
        assert_eq!(endpoint.record(false, "d3", other, 0, 1), Reply::Ok);
        let result = endpoint.collect(&[event]);
        assert_eq!((result.delivered, result.duplicates, result.unexpected), (1, 1, 1));
        assert_eq!((result.bad_signatures, result.malformed), (2, 1));
        assert!((result.latencies_ms[0] - 12.5).abs() < 1e-9, "{:?}", result.latencies_ms);
        endpoint.reset();
        assert_eq!(endpoint.collect(&[event]).lost, 1);
    }
}

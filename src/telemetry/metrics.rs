//! Herald's metrics: the names (one constant per metric, used at every recording site), their meanings
//! and histogram buckets, and [`install`], which sets up the process-wide Prometheus recorder once.
//! Recording happens next to the work (`metrics::counter!(names::X).increment(1)` in the module that does
//! it); the admin listener renders the recorder's [`PrometheusHandle`] at `/metrics`.
//!
//! Label values are always from a bounded set (never an id). Where a value is only known at run time (an
//! event type, a route template, a status code), [`Cached`] keeps the registered handle per value, so a
//! recording costs a map lookup and an atomic add, without allocating.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{OnceLock, PoisonError, RwLock},
};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The metric names of `docs/operations.md` (the catalog shared with the dashboard and the alerts).
pub mod names {
    pub const EVENTS_ACCEPTED: &str = "herald_events_accepted_total";
    pub const EVENTS_PUBLISHED: &str = "herald_events_published_total";
    pub const OUTBOX_UNPUBLISHED: &str = "herald_outbox_unpublished_events";
    pub const OUTBOX_OLDEST_AGE: &str = "herald_outbox_oldest_unpublished_age_seconds";
    pub const DELIVERIES_CREATED: &str = "herald_deliveries_created_total";
    pub const DELIVERIES_DIRECT: &str = "herald_deliveries_direct_total";
    pub const ATTEMPTS: &str = "herald_attempts_total";
    pub const ATTEMPT_DURATION: &str = "herald_attempt_duration_seconds";
    pub const DELIVERIES_ENDED: &str = "herald_deliveries_ended_total";
    pub const END_TO_END_LATENCY: &str = "herald_end_to_end_latency_seconds";
    pub const WEBHOOKS_DISABLED: &str = "herald_webhooks_disabled_total";
    pub const RETRIES_SCHEDULED: &str = "herald_retries_scheduled_total";
    pub const RETRIES_DUE: &str = "herald_retries_due_total";
    pub const ENDPOINT_DEFERRALS: &str = "herald_endpoint_deferrals_total";
    pub const STALE_TASKS_SKIPPED: &str = "herald_stale_tasks_skipped_total";
    pub const DELIVERIES_IN_FLIGHT: &str = "herald_deliveries_in_flight";
    pub const QUEUE_DEPTH: &str = "herald_queue_depth_messages";
    pub const BATCH_SIZE: &str = "herald_group_commit_batch_size";
    pub const DB_POOL_CONNECTIONS: &str = "herald_db_pool_connections";
    pub const DB_POOL_MAX_CONNECTIONS: &str = "herald_db_pool_max_connections";
    pub const BROKER_CONNECTED: &str = "herald_broker_connected";
    pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
    pub const HTTP_REQUEST_DURATION: &str = "herald_http_request_duration_seconds";
    pub const READY: &str = "herald_ready";
    pub const STAGE_FAILURES: &str = "herald_stage_failures_total";
    pub const RETENTION_REMOVED: &str = "herald_retention_removed_total";
    pub const RETENTION_PASS_DURATION: &str = "herald_retention_pass_duration_seconds";
    pub const RETENTION_LAST_SUCCESS: &str = "herald_retention_last_success_timestamp_seconds";
    pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
    pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
}

use names::*;

const ATTEMPT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0];
const END_TO_END_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0,
    86400.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0];
const RETENTION_PASS_BUCKETS: &[f64] = &[0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0];
const HTTP_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (every metric labelled `process` = `process`: `api` or `worker`)
/// and describes every metric. Idempotent: later calls return the first handle (and keep its label),
/// so in-process tests may call it once per app.
pub fn install(process: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new().add_global_label("process", process);
            for (name, buckets) in [
                (ATTEMPT_DURATION, ATTEMPT_BUCKETS),
                (END_TO_END_LATENCY, END_TO_END_BUCKETS),
                (BATCH_SIZE, BATCH_BUCKETS),
                (HTTP_REQUEST_DURATION, HTTP_BUCKETS),
                (RETENTION_PASS_DURATION, RETENTION_PASS_BUCKETS),
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
                    .expect("the bucket lists are not empty");
            }
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed already (a test harness): record into a private one.
                Err(_) => {
                    PrometheusBuilder::new().add_global_label("process", process).build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

/// The handle [`install`] returned, if it ran.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

fn describe() {
    describe_counter!(
        EVENTS_ACCEPTED,
        "Events committed (answered 202; idempotent replays not counted), by type."
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        "Events handed to the queue (RabbitMQ: confirmed; embedded: taken by fan-out)."
    );
    describe_gauge!(OUTBOX_UNPUBLISHED, "Events committed but not yet published (sampled every 5 s).");
    describe_gauge!(OUTBOX_OLDEST_AGE, Unit::Seconds, "Age of the oldest unpublished event; 0 when none.");
    describe_counter!(DELIVERIES_CREATED, "Delivery rows created by fan-out.");
    describe_counter!(
        DELIVERIES_DIRECT,
        "First attempts fan-out handed straight to this process's deliverer (not through the queue)."
    );
    describe_counter!(ATTEMPTS, "HTTP delivery attempts by outcome class.");
    describe_histogram!(ATTEMPT_DURATION, Unit::Seconds, "Duration of one HTTP delivery attempt.");
    describe_counter!(DELIVERIES_ENDED, "Deliveries reaching a final state: succeeded, dead or dropped.");
    describe_histogram!(END_TO_END_LATENCY, Unit::Seconds, "Event accepted to delivery succeeded.");
    describe_counter!(WEBHOOKS_DISABLED, "Webhooks Herald disabled by itself, by reason.");
    describe_counter!(RETRIES_SCHEDULED, "Failed attempts given a next attempt time.");
    describe_counter!(RETRIES_DUE, "Deliveries the scheduler handed over (retries, redrives, swept).");
    describe_counter!(ENDPOINT_DEFERRALS, "Tasks deferred to the store: their endpoint was saturated.");
    describe_counter!(
        STALE_TASKS_SKIPPED,
        "Tasks handed out again not sent: their attempt was settled already."
    );
    describe_gauge!(DELIVERIES_IN_FLIGHT, "HTTP delivery attempts in progress in this process.");
    describe_gauge!(QUEUE_DEPTH, "Messages waiting in each queue (sampled every 5 s).");
    describe_histogram!(BATCH_SIZE, "Items per group-committed transaction, by batcher.");
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections by state (idle, in_use).");
    describe_gauge!(DB_POOL_MAX_CONNECTIONS, "Configured database pool size.");
    describe_gauge!(BROKER_CONNECTED, "1 while connected to RabbitMQ, 0 otherwise.");
    describe_counter!(HTTP_REQUESTS, "API requests by route template, method and status.");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "API latency by route template and method.");
    describe_gauge!(READY, "1 while /readyz answers 200.");
    describe_counter!(STAGE_FAILURES, "Supervised stages that ended unexpectedly, by stage.");
    describe_counter!(
        RETENTION_REMOVED,
        "Rows the retention job removed, by kind (response_bodies are cleared, not removed)."
    );
    describe_histogram!(RETENTION_PASS_DURATION, Unit::Seconds, "Duration of a completed retention pass.");
    describe_gauge!(
        RETENTION_LAST_SUCCESS,
        Unit::Seconds,
        "When the last retention pass completed, since the Unix epoch (not exported before the first)."
    );
    // A gauge holding the running total: metrics counters are integers, and whole seconds are too coarse
    // for `rate()` (which works on it all the same).
    describe_gauge!(PROCESS_CPU_SECONDS, Unit::Seconds, "CPU time used by this process (user + system).");
    describe_gauge!(PROCESS_RESIDENT_MEMORY, Unit::Bytes, "Resident memory of this process.");
    describe_gauge!(PROCESS_START_TIME, Unit::Seconds, "Start time of this process since the Unix epoch.");
}

/// The same text as `value`, for the life of the process. Only for values from a bounded set (route
/// templates, event types of the catalog, status codes): each distinct value is kept once.
pub fn intern(value: &str) -> &'static str {
    static INTERNED: OnceLock<RwLock<HashMap<&'static str, &'static str>>> = OnceLock::new();
    get_or_insert(INTERNED.get_or_init(Default::default), value, || {
        let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
        (leaked, leaked)
    })
}

/// The value of `key` in `map` (a read lock), or the entry `make` builds, inserted once.
fn get_or_insert<K, Q, V>(map: &RwLock<HashMap<K, V>>, key: &Q, make: impl FnOnce() -> (K, V)) -> V
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
    V: Clone,
{
    if let Some(found) = map.read().unwrap_or_else(PoisonError::into_inner).get(key) {
        return found.clone();
    }
    let mut writable = map.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = writable.get(key) {
        return found.clone();
    }
    let (key, value) = make();
    writable.insert(key, value.clone());
    value
}

/// Metric handles by label values known only at run time, registered on first use: recording is then a
/// map lookup (read lock) plus the handle's atomic operation.
pub struct Cached<K, M> {
    handles: OnceLock<RwLock<HashMap<K, M>>>,
    register: fn(&K) -> M,
}

impl<K, M> std::fmt::Debug for Cached<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Copy, M: Clone> Cached<K, M> {
    /// `register` builds the handle for a key (`metrics::counter!(NAME, "label" => key)`).
    pub const fn new(register: fn(&K) -> M) -> Self {
        Self { handles: OnceLock::new(), register }
    }

    pub fn get(&self, key: K) -> M {
        get_or_insert(self.handles.get_or_init(Default::default), &key, || (key, (self.register)(&key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_values_are_kept_once() {
        let first = intern("/api/v1/webhooks/{id}");
        let second = intern(&String::from("/api/v1/webhooks/{id}"));
        assert!(std::ptr::eq(first, second));
    }

    #[test]
    fn install_is_idempotent_and_renders_every_described_metric() {
        let handle = install("api");
        metrics::counter!(EVENTS_PUBLISHED).increment(2);
        metrics::histogram!(BATCH_SIZE, "batcher" => "events").record(3.0);
        let again = install("worker");
        let text = again.render();
        assert!(text.contains("herald_events_published_total{process=\"api\"}"), "{text}");
        assert!(
            text.contains(
                "herald_group_commit_batch_size_bucket{process=\"api\",batcher=\"events\",le=\"5\"}"
            ),
            "{text}"
        );
        drop(handle);
    }
}

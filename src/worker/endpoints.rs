//! Isolation between endpoints, so that a slow one cannot hold back the others. Each endpoint may have
//! `delivery.per_endpoint_concurrency` requests in flight; further tasks for it wait in its own line
//! without holding one of the worker's slots, and are taken from that line as its requests finish. A task
//! that would wait longer than [`MAX_WAIT`] (judged from the endpoint's recent latency) is not held at
//! all: it is deferred to the store, due when the endpoint should have room, and acknowledged, so that it
//! does not occupy the broker's prefetch window either. Due times are spaced at the endpoint's own pace,
//! so deferred deliveries come back as capacity frees rather than all at once.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::queue::{DeliveryTask, Received};

/// Longest a task waits in an endpoint's line before it is deferred to the store instead.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Weight of the newest latency in the moving average.
const LATENCY_WEIGHT: f64 = 0.2;
/// Idle endpoints faster than this are forgotten; slower ones are remembered, so that their next burst
/// is paced from the start.
const REMEMBER_SLOWER_THAN: f64 = 0.1;

/// What to do with a received task.
#[derive(Debug)]
pub enum Admission {
    /// Deliver it now.
    Run(Received<DeliveryTask>),
    /// It waits in its endpoint's line; [`Endpoints::finished`] will hand it out.
    Waiting,
    /// Defer it: make the delivery due at this time in the store, then acknowledge it.
    Defer(Received<DeliveryTask>, DateTime<Utc>),
}

#[derive(Debug, Default)]
struct Endpoint {
    in_flight: usize,
    line: VecDeque<Received<DeliveryTask>>,
    /// Moving average of request latency, in seconds.
    latency: f64,
    /// When the next deferred task should come back.
    next_due: Option<DateTime<Utc>>,
}

/// Every endpoint with work in flight or waiting (or a remembered slow pace), behind one lock.
#[derive(Debug, Default)]
struct Lines {
    by_webhook: HashMap<Uuid, Endpoint>,
    /// Shutting down: waiting tasks are not handed out any more.
    closing: bool,
}

#[derive(Debug)]
pub struct Endpoints {
    per_endpoint: usize,
    lines: Mutex<Lines>,
}

impl Endpoints {
    pub fn new(per_endpoint: usize) -> Self {
        Self { per_endpoint: per_endpoint.max(1), lines: Mutex::new(Lines::default()) }
    }

    /// Decides what happens to a task that just arrived.
    pub fn admit(&self, received: Received<DeliveryTask>) -> Admission {
        let mut guard = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let endpoint = guard.by_webhook.entry(received.message.webhook_id).or_default();
        if endpoint.in_flight < self.per_endpoint {
            endpoint.in_flight += 1;
            return Admission::Run(received);
        }
        // Each request slot of the endpoint serves one waiting task per `latency`.
        let pace = endpoint.latency / self.per_endpoint as f64;
        let wait = pace * (endpoint.line.len() + 1) as f64;
        if wait <= MAX_WAIT.as_secs_f64() {
            endpoint.line.push_back(received);
            return Admission::Waiting;
        }
        let now = Utc::now();
        let earliest = now + chrono::Duration::from_std(Duration::from_secs_f64(wait)).unwrap_or_default();
        let due = endpoint.next_due.map_or(earliest, |next| next.max(earliest));
        endpoint.next_due =
            Some(due + chrono::Duration::from_std(Duration::from_secs_f64(pace)).unwrap_or_default());
        metrics::counter!(crate::telemetry::metrics::names::ENDPOINT_DEFERRALS).increment(1);
        Admission::Defer(received, due)
    }

    /// A request to `webhook_id` finished after `latency`: returns the next task waiting for that
    /// endpoint (which takes over the request slot), if any.
    pub fn finished(&self, webhook_id: Uuid, latency: Duration) -> Option<Received<DeliveryTask>> {
        let mut guard = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let closing = guard.closing;
        let endpoint = guard.by_webhook.get_mut(&webhook_id)?;
        endpoint.latency = if endpoint.latency == 0.0 {
            latency.as_secs_f64()
        } else {
            endpoint.latency * (1.0 - LATENCY_WEIGHT) + latency.as_secs_f64() * LATENCY_WEIGHT
        };
        if !closing && let Some(next) = endpoint.line.pop_front() {
            return Some(next);
        }
        endpoint.in_flight -= 1;
        if endpoint.in_flight == 0
            && endpoint.line.is_empty()
            && endpoint.latency < REMEMBER_SLOWER_THAN
            && endpoint.next_due.is_none_or(|due| due < Utc::now())
        {
            guard.by_webhook.remove(&webhook_id);
        }
        None
    }

    /// Shutdown: waiting tasks are let go (unacknowledged, the broker hands them out again; embedded,
    /// they are queued rows in the store, made due again at the next start).
    pub fn close(&self) {
        let mut guard = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.closing = true;
        for endpoint in guard.by_webhook.values_mut() {
            endpoint.line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::NothingToSettle;

    fn task(webhook_id: Uuid) -> Received<DeliveryTask> {
        let message = DeliveryTask { webhook_id, ..DeliveryTask::for_test(1) };
        Received::new(message, Box::new(NothingToSettle), false)
    }

    #[test]
    fn each_endpoint_has_its_own_slots() {
        let endpoints = Endpoints::new(2);
        let (slow, fast) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)));
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)));
        assert!(matches!(endpoints.admit(task(slow)), Admission::Waiting), "the third waits in its line");
        assert!(
            matches!(endpoints.admit(task(fast)), Admission::Run(_)),
            "another endpoint is not held back"
        );
        let next =
            endpoints.finished(slow, Duration::from_millis(10)).expect("the waiting task takes the slot");
        assert_eq!(next.message.webhook_id, slow);
        assert!(endpoints.finished(slow, Duration::from_millis(10)).is_none());
        assert!(endpoints.finished(slow, Duration::from_millis(10)).is_none());
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)), "slots were given back");
    }

    #[test]
    fn slow_endpoints_defer_at_their_own_pace() {
        let endpoints = Endpoints::new(1);
        let slow = Uuid::now_v7();
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)));
        // Learn a 1 s latency, keep the slot busy.
        let next = endpoints.finished(slow, Duration::ZERO);
        assert!(next.is_none());
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)));
        assert!(endpoints.finished(slow, Duration::from_secs(1)).is_none());
        assert!(matches!(endpoints.admit(task(slow)), Admission::Run(_)));
        let now = Utc::now();
        let dues: Vec<DateTime<Utc>> = (0..3)
            .map(|_| match endpoints.admit(task(slow)) {
                Admission::Defer(_, due) => due,
                other => panic!("a 1 s endpoint with a busy slot defers: {other:?}"),
            })
            .collect();
        assert!(dues[0] > now, "due later");
        assert!(dues.windows(2).all(|w| w[1] > w[0]), "spaced, not all at once: {dues:?}");
    }

    #[test]
    fn closing_lets_waiting_tasks_go() {
        let endpoints = Endpoints::new(1);
        let webhook = Uuid::now_v7();
        assert!(matches!(endpoints.admit(task(webhook)), Admission::Run(_)));
        assert!(matches!(endpoints.admit(task(webhook)), Admission::Waiting));
        endpoints.close();
        assert!(endpoints.finished(webhook, Duration::from_millis(1)).is_none());
    }
}

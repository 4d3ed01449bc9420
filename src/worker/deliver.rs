//! Delivery: takes tasks from both lanes (at most `delivery.concurrency` at once, of which the
//! scheduled lane's prefetch bounds the handed-over ones), signs the payload for the webhook
//! (`X-Signature` and the Standard Webhooks headers), POSTs it, decides the next step ([`RetryPolicy`]),
//! records the attempt and its consequences (group commit with other deliveries), and acknowledges the
//! task only once that is committed. A slow endpoint holds one slot, never the others.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::{
    endpoints::{Admission, Endpoints},
    record::{Recorder, ended},
    report,
    retry::{Outcome, RetryPolicy, parse_retry_after},
    sender::{Exchange, Sender},
    storable::storable_text,
};
use crate::{
    queue::{Consumer, DeliveryTask, Received},
    signature,
    store::{self, AttemptClass, AttemptOutcome, DeliveryStatus, DeliveryStore, NewDelivery, NextStep},
    telemetry::metrics::{Cached, names},
    webhook_cache::{DeliveryTarget, WebhookCache, WebhookCacheError},
};

/// `herald_attempts_total` by outcome class.
static ATTEMPTS: Cached<&str, metrics::Counter> =
    Cached::new(|outcome| metrics::counter!(names::ATTEMPTS, "outcome" => *outcome));

/// The time from the event's acceptance (its id is a UUIDv7: its timestamp is the creation time).
fn since_accepted(event_id: Uuid) -> Option<f64> {
    crate::domain::age_of(event_id).map(|elapsed| elapsed.as_secs_f64())
}

/// The longest an attempt waits for the database to come back before it is made anyway.
const DATABASE_WAIT: Duration = Duration::from_secs(30);

/// While the database is unreachable no outcome can be recorded: an attempt made then would be
/// repeated if this process died before the database came back (its task unacknowledged), so attempts
/// wait (up to [`DATABASE_WAIT`]; the scheduler's rounds find out when it is back).
async fn wait_for_the_database() {
    let started = std::time::Instant::now();
    while crate::outage::DATABASE.is_down() && started.elapsed() < DATABASE_WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A first attempt handed over later than this after its delivery was created is checked against the
/// store before it is sent ([`may_have_a_twin`]).
pub(super) const LATE_FIRST_ATTEMPT: Duration = Duration::from_secs(5);

/// Whether a task may have a twin that was (or is being) attempted: the queue hands it out again (its
/// first holder died, or the connection broke before the ack), it is a retry (the sweeper may have
/// taken its delivery back), or it is a first attempt handed over late, as the deliveries of a fan-out
/// done again after a crash are, while their first tasks may still be in the queue. A
/// healthy system hands first attempts over in milliseconds, so the common path reads nothing.
/// A task handed over unstored has none: its delivery is not in the store yet.
fn may_have_a_twin(received: &Received<DeliveryTask>) -> bool {
    let task = &received.message;
    !task.unstored
        && (received.redelivered
            || task.attempt > 1
            || crate::domain::age_of(task.delivery_id) > Some(LATE_FIRST_ATTEMPT))
}

/// One HTTP attempt counted in `herald_deliveries_in_flight` while it lives (also if it is cancelled).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start() -> Self {
        let gauge = metrics::gauge!(names::DELIVERIES_IN_FLIGHT);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[derive(Debug)]
pub struct Deliverer {
    pub webhooks: Arc<WebhookCache>,
    pub sender: Sender,
    pub retry_policy: RetryPolicy,
    pub recorder: Recorder,
    pub endpoints: Endpoints,
    pub store: Arc<dyn DeliveryStore>,
    pub concurrency: usize,
    /// How long in-flight deliveries may take to finish at shutdown.
    pub grace: Duration,
}

/// How a task is settled once its attempt is over.
enum Settlement {
    /// Record the outcome, then acknowledge; with the class of its error, if it has one.
    Record(Box<AttemptOutcome>, Option<&'static str>),
    /// Nothing to record (the webhook was deleted with its deliveries): acknowledge.
    Ack,
    /// Hand it back to the queue (the webhook could not be loaded).
    Requeue,
}

impl Deliverer {
    /// Takes tasks from the `live` lane, the `scheduled` one and, where this process fans out too, the
    /// `direct` lane ([`super::direct`]), whichever has one ready (none waits behind another), until
    /// shutdown or until the queue closes.
    pub async fn run(
        self,
        mut live: Consumer<DeliveryTask>,
        mut scheduled: Consumer<DeliveryTask>,
        mut direct: Option<Consumer<DeliveryTask>>,
        shutdown: CancellationToken,
    ) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.concurrency));
        let in_flight = TaskTracker::new();
        loop {
            let slot = tokio::select! {
                () = shutdown.cancelled() => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            // Every `next` is cancel-safe: a lane not chosen keeps its task.
            let received = tokio::select! {
                () = shutdown.cancelled() => break,
                received = live.next() => received,
                received = scheduled.next() => received,
                received = next_direct(&mut direct) => match received {
                    Some(received) => Some(received),
                    None => {
                        direct = None; // Fan-out has stopped; the queue's lanes go on.
                        continue;
                    }
                },
            };
            let Some(received) = received else { break };
            match this.endpoints.admit(received) {
                Admission::Run(received) => {
                    in_flight.spawn(this.clone().serve_endpoint(received, slot, in_flight.clone()));
                }
                Admission::Waiting => drop(slot),
                Admission::Defer(received, due) => {
                    drop(slot);
                    in_flight.spawn(this.clone().defer(received, due));
                }
            }
        }
        // Stop taking work; let what is in flight finish. Tasks not started stay unacknowledged and go
        // back to the queue when it closes.
        this.endpoints.close();
        in_flight.close();
        if tokio::time::timeout(this.grace, in_flight.wait()).await.is_err() {
            tracing::warn!(grace = ?this.grace, "in-flight deliveries did not finish; the queue will hand them out again");
        }
    }

    /// Delivers a task, then the tasks waiting behind it for the same endpoint, on one request slot.
    /// Outcomes are recorded on the side, so the slot is busy only during HTTP exchanges.
    async fn serve_endpoint(
        self: Arc<Self>,
        first: Received<DeliveryTask>,
        slot: tokio::sync::OwnedSemaphorePermit,
        in_flight: TaskTracker,
    ) {
        let mut next = Some(first);
        while let Some(received) = next.take() {
            let webhook_id = received.message.webhook_id;
            let started = std::time::Instant::now();
            wait_for_the_database().await;
            let settlement = if may_have_a_twin(&received) && self.already_settled(&received.message).await {
                Settlement::Ack
            } else {
                self.attempt_task(&received.message).await
            };
            next = self.endpoints.finished(webhook_id, started.elapsed());
            let this = self.clone();
            in_flight.spawn(async move { this.settle(received, settlement).await });
        }
        drop(slot);
    }

    /// The endpoint is saturated: the delivery waits in the store until `due`, and the task is acknowledged.
    async fn defer(self: Arc<Self>, received: Received<DeliveryTask>, due: chrono::DateTime<Utc>) {
        let task = &received.message;
        let delivery = NewDelivery {
            id: task.delivery_id,
            event_id: task.event_id,
            webhook_id: task.webhook_id,
            organization_id: task.organization_id,
            created_at: crate::domain::now(),
            lease_until: due,
        };
        match make_due(&*self.store, delivery, task.unstored).await {
            Ok(()) => received.ack().await,
            Err(error) => {
                crate::outage::warn_unless_reported!(&error, delivery_id = %received.message.delivery_id, %error, "cannot defer a delivery; it goes back to the queue");
                received.requeue().await;
            }
        }
    }

    async fn settle(&self, received: Received<DeliveryTask>, settlement: Settlement) {
        match settlement {
            Settlement::Record(outcome, error_class) => {
                if self.recorder.record(*outcome, error_class).await {
                    received.ack().await;
                }
            }
            Settlement::Ack => received.ack().await,
            Settlement::Requeue => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                received.requeue().await;
            }
        }
    }

    /// Whether a task that [`may_have_a_twin`] is stale: its attempt was recorded already, or its
    /// delivery went back to the store (`pending`: released or deferred, the scheduler hands it out
    /// again) or ended. Sending it would only duplicate. While the database is unreachable the answer is
    /// waited for (up to [`DATABASE_WAIT`]): an attempt made then could not be recorded, and a worker
    /// dying before the database is back would have it repeated. When in doubt after that (the store
    /// cannot answer) the task is attempted: at least once.
    async fn already_settled(&self, task: &DeliveryTask) -> bool {
        let started = std::time::Instant::now();
        let stale = loop {
            match self.store.get_delivery(task.delivery_id).await {
                Ok(None) => break true,
                Ok(Some(delivery)) => {
                    break delivery.status != DeliveryStatus::Queued
                        || delivery.attempts >= i64::from(task.attempt);
                }
                Err(store::StoreError::Unavailable(_)) if started.elapsed() < DATABASE_WAIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => break false,
            }
        };
        if stale {
            tracing::debug!(delivery_id = %task.delivery_id, attempt = task.attempt, "a task handed out again was settled already; not sent");
            metrics::counter!(names::STALE_TASKS_SKIPPED).increment(1);
        }
        stale
    }

    /// Loads the webhook and makes the attempt. The span is at debug: one per delivery attempt, see
    /// "Traces and logs" in docs/architecture.md; `outcome` is the status code or the error's class.
    #[tracing::instrument(name = "attempt", level = "debug", skip_all, fields(
        delivery_id = %task.delivery_id, event_id = %task.event_id, webhook_id = %task.webhook_id,
        attempt = task.attempt, outcome = tracing::field::Empty, duration_ms = tracing::field::Empty,
        next = tracing::field::Empty,
    ))]
    async fn attempt_task(&self, task: &DeliveryTask) -> Settlement {
        let started_at = crate::domain::now();
        let attempt = match self.webhooks.target(task.webhook_id).await {
            Ok(Some(target)) => self.attempt(&target, task).await,
            // The webhook was deleted, and its deliveries with it.
            Ok(None) => {
                ended("dropped", 1);
                return Settlement::Ack;
            }
            // No retry can open the secret: the delivery ends (replayable once the keys are fixed).
            Err(error @ WebhookCacheError::Undecryptable { .. }) => Attempt::Skipped(error.to_string()),
            Err(WebhookCacheError::Store(error)) => {
                crate::outage::warn_unless_reported!(
                    &error,
                    webhook_id = %task.webhook_id,
                    error = format!("{error:#}"),
                    "cannot load the webhook; the task goes back to the queue"
                );
                return Settlement::Requeue;
            }
        };
        let (exchange, next) = match attempt {
            Attempt::Made(exchange, outcome) => {
                let next = self.retry_policy.next(task.attempt, &outcome, Utc::now());
                if next == NextStep::Succeeded
                    && let Some(latency) = since_accepted(task.event_id)
                {
                    metrics::histogram!(names::END_TO_END_LATENCY).record(latency);
                }
                (exchange, next)
            }
            // Herald could not try (disabled webhook, unusable URL or secret): the delivery ends, replayable
            // later.
            Attempt::Skipped(reason) => {
                ATTEMPTS.get("not_attempted").increment(1);
                (
                    Exchange {
                        error: Some(format!("not attempted: {reason}")),
                        error_class: Some(report::NOT_ATTEMPTED),
                        ..Exchange::default()
                    },
                    NextStep::Dead,
                )
            }
        };
        report::attempted(task, &exchange, &next);
        let error_class = exchange.error_class;
        let class = match (exchange.status, error_class) {
            (Some(status), _) => AttemptClass::of_status(status),
            (None, Some(report::NOT_ATTEMPTED)) => AttemptClass::NotAttempted,
            (None, _) if exchange.timed_out => AttemptClass::Timeout,
            (None, _) => AttemptClass::Network,
        };
        let attempt = self.stored_attempt(task, started_at, exchange);
        let outcome = AttemptOutcome {
            attempt,
            webhook_id: task.webhook_id,
            organization_id: task.organization_id,
            event_id: task.event_id,
            event_type: task.event_type.clone(),
            class,
            next,
            creates_delivery: task.unstored,
        };
        Settlement::Record(Box::new(outcome), error_class)
    }

    /// The attempt as it is stored: the response body and the error text, which a receiver (or the
    /// network) controls, made storable by [`storable_text`] within the body limit.
    fn stored_attempt(
        &self,
        task: &DeliveryTask,
        started_at: chrono::DateTime<Utc>,
        exchange: Exchange,
    ) -> store::Attempt {
        let limit = self.sender.max_response_bytes();
        store::Attempt {
            id: Uuid::now_v7(),
            delivery_id: task.delivery_id,
            attempt_number: i64::from(task.attempt),
            started_at,
            duration_ms: exchange.duration_ms,
            status_code: exchange.status.map(i64::from),
            response_body: exchange.body.map(|body| storable_text(&body, limit)),
            error: exchange.error.map(|error| storable_text(error.as_bytes(), limit)),
        }
    }

    /// Makes the HTTP attempt (unless the webhook cannot be delivered to) and classifies it.
    async fn attempt(&self, target: &DeliveryTarget, task: &DeliveryTask) -> Attempt {
        if !target.is_active {
            let reason = target.disabled_reason.as_deref().unwrap_or("disabled");
            return Attempt::Skipped(format!("the webhook is disabled ({reason})"));
        }
        let Some(url) = &target.url else {
            return Attempt::Skipped("the webhook's URL is invalid".into());
        };
        let headers = match signed_headers(target, task) {
            Ok(headers) => headers,
            Err(error) => return Attempt::Skipped(format!("cannot build the request headers: {error}")),
        };
        let in_flight = InFlight::start();
        let exchange = self.sender.post(url, headers, task.payload.clone()).await;
        drop(in_flight);
        ATTEMPTS.get(exchange.outcome_class()).increment(1);
        metrics::histogram!(names::ATTEMPT_DURATION).record(exchange.duration_ms as f64 / 1000.0);
        let retry_after = exchange
            .headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let outcome = match exchange.status {
            Some(status) if (200..300).contains(&status) => Outcome::Success,
            Some(410) => Outcome::Gone,
            Some(429) => Outcome::SlowDown { retry_after },
            Some(_) => Outcome::Failure { retry_after },
            None if exchange.is_permanent_failure() => Outcome::Permanent,
            None if exchange.timed_out => Outcome::SlowDown { retry_after: None },
            None => Outcome::Failure { retry_after: None },
        };
        Attempt::Made(exchange, outcome)
    }
}

/// The next task of the direct lane; never, where there is none.
async fn next_direct(direct: &mut Option<Consumer<DeliveryTask>>) -> Option<Received<DeliveryTask>> {
    match direct {
        Some(consumer) => consumer.next().await,
        None => std::future::pending().await,
    }
}

/// Makes `delivery` due at its `lease_until`: deferred in the store, or, if its first attempt was handed
/// over `unstored`, stored `queued` until then. Either way the scheduler hands it out when it is due.
pub(super) async fn make_due(
    store: &dyn DeliveryStore,
    delivery: NewDelivery,
    unstored: bool,
) -> store::StoreResult<()> {
    if unstored {
        store.create_deliveries(std::slice::from_ref(&delivery)).await.map(drop)
    } else {
        store.defer_deliveries(&[(delivery.id, delivery.lease_until)], crate::domain::now()).await
    }
}

/// What became of one delivery attempt.
enum Attempt {
    Made(Exchange, Outcome),
    Skipped(String),
}

/// The headers of one attempt: content type, event type, the hex signatures (`X-Signature`, plus
/// `X-Signature-Next` and `X-Signature-Previous` during a secret rotation, see [`signature`]), and the
/// Standard Webhooks trio.
pub fn signed_headers(
    target: &DeliveryTarget,
    task: &DeliveryTask,
) -> Result<HeaderMap, reqwest::header::InvalidHeaderValue> {
    let now = Utc::now();
    let message_id = task.delivery_id.to_string();
    headers_signed_at(
        target.signing_secrets(now),
        &message_id,
        &task.event_type,
        &task.payload,
        now.timestamp(),
    )
}

/// The headers of an attempt made at `timestamp` (Unix seconds), signed with `secrets`: what
/// [`signed_headers`] sends, and what the delivery log shows of an attempt made earlier.
pub fn headers_signed_at<S: AsRef<str>>(
    secrets: &[S],
    message_id: &str,
    event_type: &str,
    body: &[u8],
    timestamp: i64,
) -> Result<HeaderMap, reqwest::header::InvalidHeaderValue> {
    let mut headers = HeaderMap::with_capacity(9);
    headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(HeaderName::from_static("x-webhook-event"), HeaderValue::from_str(event_type)?);
    for (name, value) in signature::x_signature_headers(secrets, body) {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_str(&value)?);
    }
    headers.insert(HeaderName::from_static("webhook-id"), HeaderValue::from_str(message_id)?);
    headers.insert(HeaderName::from_static("webhook-timestamp"), HeaderValue::from(timestamp));
    headers.insert(
        HeaderName::from_static("webhook-signature"),
        HeaderValue::from_str(&signature::standard_signature_header(secrets, message_id, timestamp, body))?,
    );
    Ok(headers)
}

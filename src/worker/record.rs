//! Recording attempt outcomes, none dropped. Outcomes are group-committed ([`Batcher`]) with their
//! consequences for the webhook ([`DisableRule`]). A batch the store refuses is written again outcome by
//! outcome, so that only the outcome at fault fails; while the database is unreachable an outcome is
//! written again with backoff ([`retrying::until_done`]). An outcome the store refuses as it is is
//! recorded in a reduced form: its status code, duration and next step, with `body not storable` for
//! the body and the error's class for the error text. Only if even that is refused is it counted as
//! `dropped`, logged, and its delivery deferred ([`UNRECORDED_RETRY_AFTER`]) so that the scheduler hands
//! it out again like any retry. The task is acknowledged once one of these is done.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{disable::DisableRule, operational::RecordingRules};
use crate::{
    batch::Batcher,
    emit::accepted,
    outbox::Outbox,
    retrying::{self, GaveUp},
    stages::Stages,
    store::{AttemptOutcome, DeliveryStore, NewDelivery, NextStep, StoreError},
    telemetry::metrics::{Cached, names},
    webhook_cache::WebhookCache,
};

/// Outcomes written per transaction at most.
const RECORD_BATCH: usize = 512;
/// How long a batch of outcomes waits for more before it is written: the receiver has its delivery
/// already, so only the task's acknowledgement (and the outcome's appearance in the API) waits, and at a
/// steady rate one transaction (six statements, one commit) then serves several deliveries instead of
/// one (docs/benchmarks.md).
const RECORD_GATHERING: Duration = Duration::from_millis(20);
/// First and longest wait before an outcome the store could not take is written again. Short: until it
/// is written, its task stays unacknowledged, and a worker dying meanwhile has the attempt repeated, so
/// outcomes are written within a second of the database coming back.
const RECORD_RETRY_DELAYS: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(1));
/// How soon a delivery whose outcome could not be recorded at all is attempted again.
pub(super) const UNRECORDED_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The body of an attempt recorded in its reduced form.
pub(super) const BODY_NOT_STORABLE: &str = "body not storable";

/// Counts a delivery reaching a final state: `succeeded`, `dead` or `dropped`.
pub(super) fn ended(result: &'static str, count: u64) {
    static ENDED: Cached<&str, metrics::Counter> =
        Cached::new(|result| metrics::counter!(names::DELIVERIES_ENDED, "result" => *result));
    ENDED.get(result).increment(count);
}

/// Whether waiting can cure a store error: the database is unreachable.
fn transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Unavailable(_))
}

/// Writes attempt outcomes in batches, with their consequences for the webhook ([`DisableRule`]).
#[derive(Debug, Clone)]
pub struct Recorder {
    batcher: Batcher<AttemptOutcome, Result<(), StoreError>, StoreError>,
    writer: OutcomeWriter,
    shutdown: CancellationToken,
}

impl Recorder {
    /// Starts the group-commit writer of outcomes (the stage `outcome-recorder`).
    pub fn start(
        stages: &Stages,
        store: Arc<dyn DeliveryStore>,
        webhooks: Arc<WebhookCache>,
        rules: RecordingRules,
        outbox: Outbox,
        shutdown: CancellationToken,
    ) -> Self {
        let writer = OutcomeWriter { store, webhooks, rules, outbox };
        let batch_writer = writer.clone();
        let batcher = Batcher::spawn_gathering(
            stages,
            "outcome-recorder",
            RECORD_BATCH,
            RECORD_GATHERING,
            move |outcomes| {
                let writer = batch_writer.clone();
                async move { writer.write_batch(outcomes).await }
            },
        );
        Self { batcher, writer, shutdown }
    }

    /// Records one outcome (batched with others); `error_class` names its error's kind for the reduced
    /// form (see the module's header). Returns `false` if shutdown came first, or if a delivery that
    /// the outcome was to create could not be stored at all (the task is then left unacknowledged, to
    /// be delivered again), `true` once the outcome is recorded, in full or reduced, or its delivery
    /// deferred.
    pub async fn record(&self, outcome: AttemptOutcome, error_class: Option<&'static str>) -> bool {
        let refused = match self.batcher.submit(outcome.clone()).await {
            Ok(Ok(())) => return true,
            // Refused alone too (its batch was split): no retry stores it as it is.
            Ok(Err(error)) if !transient(&error) => error,
            // The database is unreachable (or the writer is shutting down): written alone until it is.
            _ => match self.write_until_done(&outcome).await {
                Ok(()) => return true,
                Err(GaveUp::ShuttingDown) => return false,
                Err(GaveUp::Permanent(error)) => error,
            },
        };
        let delivery_id = outcome.attempt.delivery_id;
        tracing::warn!(%delivery_id, error = %refused, "a delivery attempt cannot be recorded as it is; recording it without its body and error text");
        match self.write_until_done(&reduced(&outcome, error_class)).await {
            Ok(()) => true,
            Err(GaveUp::ShuttingDown) => false,
            Err(GaveUp::Permanent(error)) => self.unrecorded(&outcome, &error).await,
        }
    }

    async fn write_until_done(&self, outcome: &AttemptOutcome) -> Result<(), GaveUp<StoreError>> {
        let what = "recording a delivery attempt";
        let writer = &self.writer;
        retrying::until_done(what, RECORD_RETRY_DELAYS, &self.shutdown, transient, || {
            writer.write_alone(outcome)
        })
        .await
    }

    /// Not even the reduced form could be stored: the delivery is made due again in
    /// [`UNRECORDED_RETRY_AFTER`] (or, if that fails too, left to the sweeper after
    /// `delivery.stuck_after`), so it is attempted again rather than lost. Returns whether the task may
    /// be acknowledged: not if its delivery is still not stored (its event is then fanned out again).
    async fn unrecorded(&self, outcome: &AttemptOutcome, error: &StoreError) -> bool {
        ended("dropped", 1);
        let delivery_id = outcome.attempt.delivery_id;
        let now = crate::domain::now();
        let due = now + chrono::Duration::from_std(UNRECORDED_RETRY_AFTER).unwrap_or(chrono::Duration::MAX);
        let delivery = NewDelivery {
            id: delivery_id,
            event_id: outcome.event_id,
            webhook_id: outcome.webhook_id,
            organization_id: outcome.organization_id,
            created_at: now,
            lease_until: due,
        };
        match super::deliver::make_due(&*self.writer.store, delivery, outcome.creates_delivery).await {
            Ok(()) => {
                tracing::error!(%delivery_id, %error, retry_at = %due, "a delivery attempt cannot be recorded; the delivery will be attempted again");
                true
            }
            Err(defer_error) if outcome.creates_delivery => {
                tracing::error!(%delivery_id, %error, %defer_error, "a delivery attempt cannot be recorded, nor the delivery stored; its event will be fanned out again");
                false
            }
            Err(defer_error) => {
                tracing::error!(%delivery_id, %error, %defer_error, "a delivery attempt cannot be recorded, nor the delivery deferred; the sweeper will hand it out again");
                true
            }
        }
    }
}

/// What is kept of an outcome the store refused: everything but the texts, the body replaced by
/// [`BODY_NOT_STORABLE`] and the error text by the error's class. Its id stays the same, so a write
/// of the full form that did commit is recognised.
fn reduced(outcome: &AttemptOutcome, error_class: Option<&'static str>) -> AttemptOutcome {
    let attempt = &outcome.attempt;
    let error = attempt
        .error
        .as_ref()
        .map(|_| format!("{}: error text not storable", error_class.unwrap_or("error")));
    let attempt = crate::store::Attempt {
        response_body: attempt.response_body.as_ref().map(|_| BODY_NOT_STORABLE.to_string()),
        error,
        ..attempt.clone()
    };
    AttemptOutcome { attempt, ..outcome.clone() }
}

/// Records outcomes, forgets the cached copy of every webhook they disabled, and hands the operational
/// events committed with them to the outbox.
#[derive(Debug, Clone)]
struct OutcomeWriter {
    store: Arc<dyn DeliveryStore>,
    webhooks: Arc<WebhookCache>,
    rules: RecordingRules,
    outbox: Outbox,
}

impl OutcomeWriter {
    /// Writes a batch in one transaction. If the store refuses it (not an outage), each outcome is
    /// written alone, so that only the one at fault fails: one result per outcome.
    async fn write_batch(
        &self,
        outcomes: Vec<AttemptOutcome>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        match self.write(&outcomes).await {
            Ok(()) => return Ok(outcomes.iter().map(|_| Ok(())).collect()),
            Err(error) if transient(&error) => return Err(error),
            Err(_) => {}
        }
        let mut results = Vec::with_capacity(outcomes.len());
        for outcome in &outcomes {
            results.push(self.write_alone(outcome).await);
        }
        Ok(results)
    }

    /// Writes one outcome. A conflict can only be its attempt's id: an earlier write of it committed
    /// though its answer was lost, so it is recorded.
    async fn write_alone(&self, outcome: &AttemptOutcome) -> Result<(), StoreError> {
        match self.write(std::slice::from_ref(outcome)).await {
            Err(StoreError::Conflict(_)) => Ok(()),
            written => written,
        }
    }

    #[tracing::instrument(name = "record", skip_all, fields(count = outcomes.len(), disabled = tracing::field::Empty))]
    async fn write(&self, outcomes: &[AttemptOutcome]) -> Result<(), StoreError> {
        let recorded = self.store.record_outcomes(outcomes, &self.rules).await?;
        let disabled_webhooks = recorded.disabled;
        if !disabled_webhooks.is_empty() {
            tracing::Span::current().record("disabled", disabled_webhooks.len());
        }
        let (mut succeeded, mut dead, mut retried) = (0, 0, 0);
        for outcome in outcomes {
            match outcome.next {
                NextStep::Succeeded => succeeded += 1,
                NextStep::Dead => dead += 1,
                NextStep::Retry(_) => retried += 1,
            }
        }
        ended("succeeded", succeeded);
        ended("dead", dead);
        metrics::counter!(names::RETRIES_SCHEDULED).increment(retried);
        for disabled in disabled_webhooks {
            tracing::warn!(webhook_id = %disabled.webhook_id, reason = %disabled.reason, "webhook disabled");
            static DISABLED: Cached<&str, metrics::Counter> =
                Cached::new(|reason| metrics::counter!(names::WEBHOOKS_DISABLED, "reason" => *reason));
            DISABLED.get(DisableRule::metric_reason(&disabled.reason)).increment(1);
            self.webhooks.disabled(disabled.webhook_id).await;
        }
        // After the cache forgot the disabled webhooks: fan-out must not hand a disabled webhook the
        // event announcing its disabling.
        self.outbox.committed(recorded.announced.into_iter().map(accepted));
        Ok(())
    }
}

#[cfg(test)]
mod tests;

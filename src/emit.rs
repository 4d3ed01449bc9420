//! The one way an event enters Herald. Every event (an application's `POST /events`, Herald's own
//! `user.added`, `webhook.test` and the operational events) is rendered by [`new_event`], committed to the store (that is the
//! moment it is accepted) and handed to the outbox publisher, which puts it on the queue for fan-out.
//!
//! Events committed on their own go through a group commit ([`Emitter::emit`]): every event waiting at
//! that moment is written in one transaction (one fsync for all), each caller gets its own outcome, and
//! the new events go to the outbox. Under load batches grow by themselves; alone, an event is written at
//! once. An event that must be committed in the same transaction as the row it announces (`user.added`
//! with its user) is written by that store call and then handed over with [`Emitter::committed`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    batch::{BatchError, Batcher},
    domain,
    outbox::Outbox,
    stages::Stages,
    store::{EventStore, IngestOutcome, NewEvent, StoreError},
    telemetry::metrics::{Cached, intern, names},
};

/// Events written per transaction at most.
const MAX_BATCH: usize = 500;

/// An event as rendered and about to be committed: its payload (the webhook contract body) is fixed here,
/// once, so every endpoint and every retry receives exactly these bytes.
pub fn new_event(
    organization_id: Uuid,
    event_type: &str,
    data_json: &str,
    created_at: DateTime<Utc>,
) -> NewEvent {
    let id = Uuid::now_v7();
    NewEvent {
        id,
        organization_id,
        event_type: event_type.to_string(),
        payload: domain::render_payload(id, event_type, created_at, organization_id, data_json),
        idempotency_key: None,
        request_hash: None,
        only_webhook: None,
        created_at,
    }
}

/// What identifies a request sent with an idempotency key: the SHA-256 (hex) of its event type and its
/// data's bytes as sent. A repeat has the same; a reuse of the key for another event does not.
pub(crate) fn request_hash(event_type: &str, data_json: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(event_type.as_bytes());
    // A separator no event type contains, so that type and data cannot trade bytes.
    hash.update([0]);
    hash.update(data_json.as_bytes());
    hex::encode(hash.finalize())
}

/// Commits events and hands them to the outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Emitter {
    writer: Batcher<NewEvent, IngestOutcome, StoreError>,
    outbox: Outbox,
}

impl Emitter {
    /// Starts the group-commit writer (the stage `event-writer`). An idempotency key is remembered for
    /// `idempotency_window`.
    pub fn start(
        stages: &Stages,
        store: Arc<dyn EventStore>,
        outbox: Outbox,
        idempotency_window: Duration,
    ) -> Self {
        let window = chrono::Duration::from_std(idempotency_window).unwrap_or(chrono::Duration::days(1));
        let committed = outbox.clone();
        let writer = Batcher::spawn(stages, "event-writer", MAX_BATCH, move |events: Vec<NewEvent>| {
            let (store, outbox) = (store.clone(), committed.clone());
            async move {
                let outcomes = store.insert_events(&events, chrono::Utc::now() - window).await?;
                let fresh = events.into_iter().zip(&outcomes).filter(|(_, outcome)| !outcome.duplicate);
                outbox.committed(fresh.map(|(event, _)| accepted(event)));
                Ok(outcomes)
            }
        });
        Self { writer, outbox }
    }

    /// Commits one event (with others, if they arrive together) and hands it to the outbox; returns once
    /// it is committed. An event whose idempotency key was seen within the window is not written: the
    /// outcome names the first event. Its `ingest` span is at debug (one per event, see "Traces and
    /// logs" in docs/architecture.md).
    #[tracing::instrument(name = "ingest", level = "debug", skip_all, fields(
        event_id = %event.id, event_type = %event.event_type, duplicate = tracing::field::Empty,
    ))]
    pub async fn emit(&self, event: NewEvent) -> Result<IngestOutcome, BatchError<StoreError>> {
        let outcome = self.writer.submit(event).await?;
        if outcome.duplicate {
            // The idempotency key names an earlier event: that one is the event this request is about.
            tracing::Span::current()
                .record("duplicate", true)
                .record("event_id", tracing::field::display(outcome.id));
        }
        Ok(outcome)
    }

    /// Hands over an event that the caller committed in its own transaction.
    pub fn committed(&self, event: NewEvent) {
        self.outbox.committed([accepted(event)]);
    }
}

/// Counts a committed event in `herald_events_accepted_total` (its type is one of the catalog's).
pub(crate) fn accepted(event: NewEvent) -> NewEvent {
    static ACCEPTED: Cached<&str, metrics::Counter> =
        Cached::new(|event_type| metrics::counter!(names::EVENTS_ACCEPTED, "type" => *event_type));
    ACCEPTED.get(intern(&event.event_type)).increment(1);
    event
}

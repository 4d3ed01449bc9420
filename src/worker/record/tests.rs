//! Tests of the recorder on a real SQLite store, taught to refuse some outcomes as PostgreSQL refuses a
//! NUL: a trigger rejects an attempt whose body holds `UNSTORABLE`, or (every form of it) whose
//! duration is [`REFUSED_IN_EVERY_FORM`] ms.

use sqlx::{Connection, Executor};
use uuid::Uuid;

use super::*;
use crate::{
    config::parse_secret_keys,
    crypto::{Sealed, SecretBox},
    store::{Attempt, DeliveryStatus, DynStore, NewDelivery, NewEvent, NewWebhook},
};

/// The duration of an attempt the store refuses whatever its texts.
const REFUSED_IN_EVERY_FORM: i64 = 4242;

struct Fixture {
    _sqlite: crate::test_store::TestStore,
    store: DynStore,
    recorder: Recorder,
    organization_id: Uuid,
    webhook_id: Uuid,
    _stages: Stages,
}

async fn fixture() -> Fixture {
    let sqlite = crate::test_store::with_organization(|_| {}).await;
    let store = sqlite.store.clone();
    let mut connection = sqlx::SqliteConnection::connect(&sqlite.url).await.expect("a second connection");
    let trigger = format!(
        "CREATE TRIGGER refuse BEFORE INSERT ON delivery_attempts \
         WHEN NEW.response_body LIKE '%UNSTORABLE%' OR NEW.duration_ms = {REFUSED_IN_EVERY_FORM} \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    );
    connection.execute(sqlx::AssertSqlSafe(trigger)).await.expect("trigger");
    connection.close().await.expect("closed");
    let organization_id = sqlite.organization_id;
    let webhook_id = Uuid::now_v7();
    let webhook = NewWebhook {
        id: webhook_id,
        organization_id,
        url: "https://example.com/hook".into(),
        events: "*".into(),
        secret: Sealed { key_id: "k1".into(), ciphertext: b"sealed".to_vec() },
        description: None,
        created_at: crate::domain::now(),
    };
    store.create_webhook(&webhook).await.expect("webhook");
    let keys = parse_secret_keys(&SecretBox::generate_key_text()).expect("key");
    let webhooks = Arc::new(WebhookCache::new(
        store.clone(),
        Arc::new(SecretBox::from_keys(&keys)),
        Duration::from_secs(60),
    ));
    let stages = Stages::new(CancellationToken::new(), Duration::from_secs(1));
    let (taken, _) = tokio::sync::mpsc::unbounded_channel();
    let queue = Arc::new(crate::queue::embedded::EmbeddedQueue::new(taken));
    let outbox =
        Outbox::start(&stages, sqlite.settings.mode(), store.clone(), queue, &sqlite.settings.events);
    let rules = RecordingRules { disable: DisableRule::new(0) };
    let recorder = Recorder::start(&stages, store.clone(), webhooks, rules, outbox, stages.shutdown_token());
    Fixture { _sqlite: sqlite, store, recorder, organization_id, webhook_id, _stages: stages }
}

impl Fixture {
    /// A queued delivery and the outcome of its first attempt: 200 in 12 ms, with `body`.
    async fn outcome(&self, body: &str) -> AttemptOutcome {
        self.outcome_of(body, true).await
    }

    /// The outcome of [`Self::outcome`], its delivery `stored` or left for the outcome to create.
    async fn outcome_of(&self, body: &str, stored: bool) -> AttemptOutcome {
        let now = crate::domain::now();
        let event = NewEvent {
            id: Uuid::now_v7(),
            organization_id: self.organization_id,
            event_type: "item.created".into(),
            payload: "{}".into(),
            idempotency_key: None,
            request_hash: None,
            created_at: now,
            only_webhook: None,
        };
        self.store.insert_events(std::slice::from_ref(&event), now).await.expect("event");
        let delivery = NewDelivery {
            id: Uuid::now_v7(),
            event_id: event.id,
            webhook_id: self.webhook_id,
            organization_id: self.organization_id,
            created_at: now,
            lease_until: now + chrono::Duration::minutes(10),
        };
        if stored {
            self.store.create_deliveries(std::slice::from_ref(&delivery)).await.expect("delivery");
        }
        AttemptOutcome {
            attempt: Attempt {
                id: Uuid::now_v7(),
                delivery_id: delivery.id,
                attempt_number: 1,
                started_at: now,
                duration_ms: 12,
                status_code: Some(200),
                response_body: Some(body.into()),
                error: None,
            },
            webhook_id: self.webhook_id,
            organization_id: self.organization_id,
            event_id: event.id,
            event_type: "item.created".into(),
            class: crate::store::AttemptClass::Status2xx,
            next: NextStep::Succeeded,
            creates_delivery: !stored,
        }
    }

    async fn attempts(&self, outcome: &AttemptOutcome) -> Vec<Attempt> {
        self.store.list_attempts(outcome.attempt.delivery_id).await.expect("attempts")
    }

    async fn status(&self, outcome: &AttemptOutcome) -> (DeliveryStatus, i64) {
        let delivery =
            self.store.get_delivery(outcome.attempt.delivery_id).await.expect("read").expect("exists");
        (delivery.status, delivery.attempts)
    }
}

#[tokio::test]
async fn a_batch_with_an_unrecordable_outcome_records_the_others() {
    let fixture = fixture().await;
    let first = fixture.outcome("fine").await;
    let unstorable = fixture.outcome("UNSTORABLE").await;
    let last = fixture.outcome("fine too").await;
    let batch = vec![first.clone(), unstorable.clone(), last.clone()];
    let results = fixture.recorder.writer.write_batch(batch).await.expect("not an outage");
    let refused: Vec<bool> = results.iter().map(Result::is_err).collect();
    assert_eq!(refused, [false, true, false], "only the outcome at fault fails");
    for outcome in [&first, &last] {
        assert_eq!(fixture.attempts(outcome).await, std::slice::from_ref(&outcome.attempt));
        assert_eq!(fixture.status(outcome).await, (DeliveryStatus::Succeeded, 1));
    }
    assert_eq!(fixture.attempts(&unstorable).await, []);
}

#[tokio::test]
async fn outcomes_recorded_together_are_all_recorded_the_unstorable_one_reduced() {
    let fixture = fixture().await;
    let mut outcomes = Vec::new();
    for n in 0..20 {
        outcomes.push(fixture.outcome(if n == 7 { "UNSTORABLE" } else { "fine" }).await);
    }
    let recorded = futures_util::future::join_all(
        outcomes.iter().map(|outcome| fixture.recorder.record(outcome.clone(), None)),
    )
    .await;
    assert!(recorded.iter().all(|done| *done), "every task can be acknowledged");
    for (n, outcome) in outcomes.iter().enumerate() {
        let attempts = fixture.attempts(outcome).await;
        assert_eq!(attempts.len(), 1, "outcome {n}: {attempts:?}");
        let expected = if n == 7 { BODY_NOT_STORABLE } else { "fine" };
        assert_eq!(attempts[0].response_body.as_deref(), Some(expected), "outcome {n}");
        assert_eq!((attempts[0].status_code, attempts[0].duration_ms), (Some(200), 12), "outcome {n}");
        assert_eq!(fixture.status(outcome).await, (DeliveryStatus::Succeeded, 1), "outcome {n}");
    }
}

#[tokio::test]
async fn the_reduced_form_keeps_the_error_class_only() {
    let fixture = fixture().await;
    let mut outcome = fixture.outcome("UNSTORABLE").await;
    let at = crate::domain::now() + chrono::Duration::seconds(30);
    outcome.attempt.status_code = None;
    outcome.attempt.error = Some("tcp connect error: connection refused (UNSTORABLE)".into());
    outcome.next = NextStep::Retry(at);
    assert!(fixture.recorder.record(outcome.clone(), Some("connect")).await);
    let attempts = fixture.attempts(&outcome).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].response_body.as_deref(), Some(BODY_NOT_STORABLE));
    assert_eq!(attempts[0].error.as_deref(), Some("connect: error text not storable"));
    let delivery =
        fixture.store.get_delivery(outcome.attempt.delivery_id).await.expect("read").expect("exists");
    assert_eq!(
        (delivery.status, delivery.attempts, delivery.next_attempt_at),
        (DeliveryStatus::Pending, 1, Some(at))
    );
    assert_eq!(delivery.last_error.as_deref(), Some("connect: error text not storable"));
}

#[tokio::test]
async fn an_outcome_refused_in_every_form_defers_its_delivery() {
    let fixture = fixture().await;
    let mut outcome = fixture.outcome("fine").await;
    outcome.attempt.duration_ms = REFUSED_IN_EVERY_FORM;
    let before = crate::domain::now();
    assert!(fixture.recorder.record(outcome.clone(), None).await, "the task can be acknowledged");
    assert_eq!(fixture.attempts(&outcome).await, []);
    let delivery =
        fixture.store.get_delivery(outcome.attempt.delivery_id).await.expect("read").expect("exists");
    assert_eq!((delivery.status, delivery.attempts), (DeliveryStatus::Pending, 0), "attempted again");
    let due = delivery.next_attempt_at.expect("due");
    let retry_after = chrono::Duration::from_std(UNRECORDED_RETRY_AFTER).expect("short");
    assert!(due >= before + retry_after && due <= crate::domain::now() + retry_after, "{due}");
}

#[tokio::test]
async fn an_outcome_that_creates_its_delivery_writes_it_or_if_refused_stores_it_due_again() {
    let fixture = fixture().await;
    let written = fixture.outcome_of("fine", false).await;
    assert!(fixture.recorder.record(written.clone(), None).await);
    assert_eq!(fixture.attempts(&written).await, std::slice::from_ref(&written.attempt));
    assert_eq!(fixture.status(&written).await, (DeliveryStatus::Succeeded, 1), "written with its outcome");

    let mut refused = fixture.outcome_of("fine", false).await;
    refused.attempt.duration_ms = REFUSED_IN_EVERY_FORM;
    let before = crate::domain::now();
    assert!(fixture.recorder.record(refused.clone(), None).await, "the task can be acknowledged");
    assert_eq!(fixture.attempts(&refused).await, []);
    let delivery =
        fixture.store.get_delivery(refused.attempt.delivery_id).await.expect("read").expect("stored");
    assert_eq!((delivery.status, delivery.attempts), (DeliveryStatus::Queued, 0), "to be attempted again");
    let retry_after = chrono::Duration::from_std(UNRECORDED_RETRY_AFTER).expect("short");
    let due = delivery.next_attempt_at.expect("due");
    assert!(due >= before + retry_after && due <= crate::domain::now() + retry_after, "{due}");
}

#[tokio::test]
async fn an_outcome_already_recorded_is_not_recorded_twice() {
    let fixture = fixture().await;
    let outcome = fixture.outcome("fine").await;
    assert!(fixture.recorder.record(outcome.clone(), None).await);
    // As after a commit whose answer was lost: the same outcome again is recorded, not refused.
    let again = fixture.recorder.writer.write_alone(&outcome).await;
    assert!(again.is_ok(), "{again:?}");
    assert!(fixture.recorder.record(outcome.clone(), None).await);
    assert_eq!(fixture.attempts(&outcome).await, std::slice::from_ref(&outcome.attempt));
}

//! Herald's operational events: `delivery.dead`, `webhook.disabled` (with its reason) and
//! `webhook.recovered` (a webhook whose deliveries had died delivers successfully again), emitted into
//! the owning organization. [`RecordingRules`] is what the outcome recorder hands the store: the disable rule
//! ([`DisableRule`]) and the rendering of these events, which the store commits in the transaction that
//! records the outcome (never lost, never duplicated) and the recorder then hands to the outbox like any
//! event (`Emitter::committed`'s path). The loop rule: no operational event is emitted about a delivery
//! of an operational event, so a webhook subscribed to `delivery.dead` whose own deliveries die ends
//! the chain after one step.

use serde_json::json;

use super::DisableRule;
use crate::{
    domain::{self, DELIVERY_DEAD, WEBHOOK_DISABLED, WEBHOOK_RECOVERED},
    emit,
    store::{AttemptOutcome, Happening, NewEvent, OutcomeRules},
};

/// The rules the store applies while recording outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingRules {
    pub disable: DisableRule,
}

impl OutcomeRules for RecordingRules {
    fn disable(&self, outcome: &AttemptOutcome, consecutive_dead: u32) -> Option<String> {
        self.disable.decide(outcome, consecutive_dead)
    }

    fn announce(&self, happening: &Happening<'_>) -> Option<NewEvent> {
        let outcome = happening.outcome();
        if domain::is_operational(&outcome.event_type) {
            // The loop rule (see the module's header).
            return None;
        }
        let at = domain::now();
        let attempt = &outcome.attempt;
        let (event_type, data) = match happening {
            Happening::DeliveryDead { .. } => (
                DELIVERY_DEAD,
                json!({
                    "delivery_id": attempt.delivery_id,
                    "webhook_id": outcome.webhook_id,
                    "event_id": outcome.event_id,
                    "event_type": outcome.event_type,
                    "attempts": attempt.attempt_number,
                    "last_status_code": attempt.status_code,
                }),
            ),
            Happening::WebhookDisabled { reason, .. } => (
                WEBHOOK_DISABLED,
                json!({
                    "webhook_id": outcome.webhook_id,
                    "reason": reason,
                    "delivery_id": attempt.delivery_id,
                }),
            ),
            Happening::WebhookRecovered { .. } => (
                WEBHOOK_RECOVERED,
                json!({ "webhook_id": outcome.webhook_id, "delivery_id": attempt.delivery_id }),
            ),
        };
        Some(emit::new_event(outcome.organization_id, event_type, &data.to_string(), at))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::store::{Attempt, AttemptClass, NextStep};

    fn outcome(event_type: &str) -> AttemptOutcome {
        AttemptOutcome {
            attempt: Attempt {
                id: Uuid::now_v7(),
                delivery_id: Uuid::now_v7(),
                attempt_number: 3,
                started_at: domain::now(),
                duration_ms: 3,
                status_code: Some(500),
                response_body: None,
                error: None,
            },
            webhook_id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            class: AttemptClass::Status5xx,
            next: NextStep::Dead,
            creates_delivery: false,
        }
    }

    #[test]
    fn a_dead_delivery_is_announced_in_its_organization() {
        let rules = RecordingRules { disable: DisableRule::new(0) };
        let dead = outcome("item.created");
        let event = rules.announce(&Happening::DeliveryDead { outcome: &dead }).expect("announced");
        assert_eq!((event.event_type.as_str(), event.organization_id), (DELIVERY_DEAD, dead.organization_id));
        let payload: serde_json::Value = serde_json::from_str(&event.payload).expect("json");
        assert_eq!(payload["data"]["delivery_id"], dead.attempt.delivery_id.to_string());
        assert_eq!(
            (payload["data"]["attempts"].as_i64(), payload["data"]["last_status_code"].as_i64()),
            (Some(3), Some(500))
        );
    }

    #[test]
    fn nothing_is_announced_about_an_operational_event() {
        let rules = RecordingRules { disable: DisableRule::new(0) };
        for event_type in domain::OPERATIONAL_EVENTS {
            let dead = outcome(event_type);
            assert!(rules.announce(&Happening::DeliveryDead { outcome: &dead }).is_none());
            let disabled = Happening::WebhookDisabled { outcome: &dead, reason: "gone" };
            assert!(rules.announce(&disabled).is_none());
            assert!(rules.announce(&Happening::WebhookRecovered { outcome: &dead }).is_none());
        }
    }
}

//! When Herald disables a webhook by itself, and why: at once when its endpoint answers `410 Gone`, or
//! after `delivery.disable_after_dead` dead deliveries in a row (`0` never). This is the one owner of the
//! rule; the store only counts the run of dead deliveries and records the decision, in the same
//! transaction as the attempt that caused it.

use crate::store::{AttemptOutcome, NextStep};

/// The reason recorded when an endpoint answered `410 Gone`.
const GONE: &str = "the endpoint answered 410 Gone";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisableRule {
    /// Consecutive dead deliveries that disable a webhook; 0 never.
    after_dead: u32,
}

impl DisableRule {
    pub fn new(after_dead: u32) -> Self {
        Self { after_dead }
    }

    /// Why the webhook is to be disabled after this outcome, if it is; `consecutive_dead` is the webhook's
    /// run of dead deliveries including this one.
    pub fn decide(&self, outcome: &AttemptOutcome, consecutive_dead: u32) -> Option<String> {
        if !matches!(outcome.next, NextStep::Dead) {
            return None;
        }
        if outcome.attempt.status_code == Some(410) {
            return Some(GONE.into());
        }
        (self.after_dead > 0 && consecutive_dead >= self.after_dead)
            .then(|| format!("disabled after {consecutive_dead} consecutive dead deliveries"))
    }

    /// The `reason` label of `herald_webhooks_disabled_total` for a reason [`Self::decide`] gave:
    /// `gone` or `consecutive_dead`.
    pub fn metric_reason(reason: &str) -> &'static str {
        if reason == GONE { "gone" } else { "consecutive_dead" }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::store::Attempt;

    fn outcome(status_code: Option<i64>, next: NextStep) -> AttemptOutcome {
        AttemptOutcome {
            attempt: Attempt {
                id: Uuid::now_v7(),
                delivery_id: Uuid::now_v7(),
                attempt_number: 1,
                started_at: crate::domain::now(),
                duration_ms: 3,
                status_code,
                response_body: None,
                error: None,
            },
            webhook_id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            event_type: "item.created".into(),
            class: crate::store::AttemptClass::Status5xx,
            next,
            creates_delivery: false,
        }
    }

    #[test]
    fn gone_disables_at_once() {
        let reason = DisableRule::new(5).decide(&outcome(Some(410), NextStep::Dead), 1);
        assert!(reason.as_ref().is_some_and(|reason| reason.contains("410")));
        assert_eq!(reason.as_deref().map(DisableRule::metric_reason), Some("gone"));
    }

    #[test]
    fn a_run_of_dead_deliveries_disables_at_the_threshold() {
        let rule = DisableRule::new(3);
        let dead = outcome(Some(500), NextStep::Dead);
        assert_eq!(rule.decide(&dead, 2), None);
        assert_eq!(rule.decide(&dead, 3).as_deref(), Some("disabled after 3 consecutive dead deliveries"));
        assert_eq!(
            rule.decide(&dead, 3).as_deref().map(DisableRule::metric_reason),
            Some("consecutive_dead")
        );
        assert_eq!(DisableRule::new(0).decide(&dead, 1_000), None, "0 never disables");
    }

    #[test]
    fn only_dead_deliveries_count() {
        let rule = DisableRule::new(1);
        assert_eq!(rule.decide(&outcome(Some(410), NextStep::Succeeded), 1), None);
        let retry = NextStep::Retry(crate::domain::now());
        assert_eq!(rule.decide(&outcome(Some(500), retry), 1), None);
    }
}

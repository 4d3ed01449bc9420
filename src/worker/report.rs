//! What an attempt tells the operator: its outcome, duration and next step recorded on the `attempt` span,
//! and for a failure one log line, at `info` while the delivery will be retried (with the next attempt's
//! time) and at `warn` when the delivery is dead. A success logs nothing. Lines carry ids, the attempt
//! number and the status code or the error's class (`timeout`, `connect`, ...), never the payload, the
//! response body, the URL or a secret; the full error is in the attempt's record
//! (`GET /deliveries/{id}/attempts`).

use tracing::Span;

use super::sender::Exchange;
use crate::{queue::DeliveryTask, store::NextStep};

/// The class of an attempt that Herald did not make (disabled webhook, unusable URL or secret).
pub(super) const NOT_ATTEMPTED: &str = "not_attempted";

/// Records the attempt on the current span and logs it if it failed.
pub(super) fn attempted(task: &DeliveryTask, exchange: &Exchange, next: &NextStep) {
    let span = Span::current();
    match exchange.status {
        Some(status) => span.record("outcome", status),
        None => span.record("outcome", exchange.error_class.unwrap_or("error")),
    };
    span.record("duration_ms", exchange.duration_ms);
    span.record("next", next_name(next));
    log_failure(task, exchange, next);
}

fn next_name(next: &NextStep) -> &'static str {
    match next {
        NextStep::Succeeded => "succeeded",
        NextStep::Retry(_) => "retry",
        NextStep::Dead => "dead",
    }
}

/// One failure line at `$level`: the ids, the attempt, the status or error class, then `$rest`.
macro_rules! attempt_failed {
    ($level:ident, $task:expr, $exchange:expr, $($rest:tt)+) => {
        tracing::$level!(
            webhook_id = %$task.webhook_id,
            delivery_id = %$task.delivery_id,
            event_id = %$task.event_id,
            attempt = $task.attempt,
            status = $exchange.status,
            error = $exchange.status.is_none().then(|| $exchange.error_class.unwrap_or("error")),
            $($rest)+
        )
    };
}

fn log_failure(task: &DeliveryTask, exchange: &Exchange, next: &NextStep) {
    match next {
        NextStep::Succeeded => {}
        NextStep::Retry(at) => attempt_failed!(
            info,
            task,
            exchange,
            next_attempt_at = %at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "delivery attempt failed; will retry"
        ),
        NextStep::Dead => {
            attempt_failed!(
                warn,
                task,
                exchange,
                "delivery attempt failed; the delivery is dead (replayable)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::outage::capture_logs;

    const PAYLOAD: &str = r#"{"data":{"card":"PAYLOAD-MARKER-4242"}}"#;

    /// A task whose payload holds a marker that no log line may show.
    fn task() -> DeliveryTask {
        DeliveryTask { payload: Bytes::from_static(PAYLOAD.as_bytes()), ..DeliveryTask::for_test(2) }
    }

    fn answered(status: u16) -> Exchange {
        Exchange {
            status: Some(status),
            body: Some("RESPONSE-BODY-MARKER".into()),
            duration_ms: 12,
            ..Exchange::default()
        }
    }

    #[test]
    fn a_failed_attempt_that_will_be_retried_logs_one_line_with_ids_and_status() {
        let task = task();
        let at = chrono::Utc::now() + chrono::Duration::seconds(30);
        let logs = capture_logs(|| attempted(&task, &answered(503), &NextStep::Retry(at)));
        assert_eq!(logs.lines().count(), 1, "{logs}");
        assert!(logs.contains(" INFO ") && logs.contains("will retry"), "{logs}");
        for expected in [
            format!("delivery_id={}", task.delivery_id),
            format!("webhook_id={}", task.webhook_id),
            format!("event_id={}", task.event_id),
            "status=503".to_string(),
            "attempt=2".to_string(),
            format!("next_attempt_at={}", at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ] {
            assert!(logs.contains(&expected), "{expected} missing: {logs}");
        }
        assert!(!logs.contains("PAYLOAD-MARKER") && !logs.contains("RESPONSE-BODY"), "{logs}");
    }

    #[test]
    fn a_dead_delivery_is_a_warning_naming_the_error_class() {
        let task = task();
        let exchange = Exchange {
            error: Some("tcp connect error: Connection refused to secret.example".into()),
            error_class: Some("connect"),
            ..Exchange::default()
        };
        let logs = capture_logs(|| attempted(&task, &exchange, &NextStep::Dead));
        assert_eq!(logs.lines().count(), 1, "{logs}");
        assert!(logs.contains(" WARN ") && logs.contains("dead"), "{logs}");
        assert!(logs.contains("error=\"connect\"") || logs.contains("error=connect"), "{logs}");
        assert!(!logs.contains("secret.example"), "the detail stays in the attempt record: {logs}");
        assert!(!logs.contains("PAYLOAD-MARKER"), "{logs}");
    }

    #[test]
    fn a_success_logs_nothing() {
        let logs = capture_logs(|| attempted(&task(), &answered(200), &NextStep::Succeeded));
        assert_eq!(logs, "");
    }
}

//! What follows a failed attempt: the retry schedule (`delivery.retry_schedule`, each delay +/- jitter),
//! `Retry-After` honoured but clamped to the schedule's bounds, a floor (`delivery.slow_down_floor`)
//! after 429 and timeouts, `410 Gone` ending the delivery at once (and [`super::disable`] disabling the
//! webhook), a refused address or a name that does not exist ending it at once too, and `dead` after the
//! last attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{config::DeliverySettings, store::NextStep};

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 410 Gone: the endpoint is gone for good.
    Gone,
    /// 429, or no answer within the timeout: wait at least the floor.
    SlowDown { retry_after: Option<Duration> },
    /// No retry can help: the SSRF policy refuses the address, or the host name does not exist. Only a
    /// new URL can; the delivery dies now and is replayed after the webhook is fixed.
    Permanent,
    /// Any other failure (other status, connection refused, redirect).
    Failure { retry_after: Option<Duration> },
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    jitter: f64,
    floor: Duration,
}

impl RetryPolicy {
    pub fn new(settings: &DeliverySettings) -> Self {
        Self {
            schedule: settings.retry_schedule.0.clone(),
            jitter: settings.jitter,
            floor: settings.slow_down_floor.get(),
        }
    }

    /// Attempts in all.
    #[cfg(test)]
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX).saturating_add(1)
    }

    /// The next step after attempt number `attempt` (1-based) ended with `outcome` at `now`.
    pub fn next(&self, attempt: u32, outcome: &Outcome, now: DateTime<Utc>) -> NextStep {
        let retry_after = match outcome {
            Outcome::Success => return NextStep::Succeeded,
            Outcome::Gone | Outcome::Permanent => return NextStep::Dead,
            Outcome::SlowDown { retry_after } | Outcome::Failure { retry_after } => *retry_after,
        };
        let Some(scheduled) = self.schedule.get(attempt.saturating_sub(1) as usize) else {
            return NextStep::Dead;
        };
        let mut delay = self.jittered(*scheduled);
        if let Some(asked) = retry_after {
            let shortest = self.schedule.iter().min().copied().unwrap_or_default();
            let longest = self.schedule.iter().max().copied().unwrap_or_default();
            delay = asked.clamp(shortest, longest);
        }
        if matches!(outcome, Outcome::SlowDown { .. }) {
            delay = delay.max(self.floor);
        }
        NextStep::Retry(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1)))
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return delay;
        }
        let factor = 1.0 + rand::random_range(-self.jitter..=self.jitter);
        delay.mul_f64(factor.max(0.0))
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.to_utc();
    (at - now).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: vec![Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(120)],
            jitter,
            floor: Duration::from_secs(60),
        }
    }

    fn delay(step: NextStep, now: DateTime<Utc>) -> Duration {
        match step {
            NextStep::Retry(at) => (at - now).to_std().expect("in the future"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn the_schedule_is_followed_then_the_delivery_dies() {
        let now = Utc::now();
        let failure = Outcome::Failure { retry_after: None };
        assert_eq!(policy(0.0).max_attempts(), 4);
        assert_eq!(delay(policy(0.0).next(1, &failure, now), now), Duration::from_secs(5));
        assert_eq!(delay(policy(0.0).next(3, &failure, now), now), Duration::from_secs(120));
        assert_eq!(policy(0.0).next(4, &failure, now), NextStep::Dead);
        assert_eq!(policy(0.0).next(2, &Outcome::Success, now), NextStep::Succeeded);
        assert_eq!(policy(0.0).next(1, &Outcome::Permanent, now), NextStep::Dead, "no retry can help");
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let now = Utc::now();
        for _ in 0..200 {
            let d = delay(policy(0.2).next(2, &Outcome::Failure { retry_after: None }, now), now);
            assert!(d >= Duration::from_secs(24) && d <= Duration::from_secs(36), "{d:?}");
        }
    }

    #[test]
    fn retry_after_is_clamped_and_slow_downs_wait_the_floor() {
        let now = Utc::now();
        let asked = |secs| Outcome::Failure { retry_after: Some(Duration::from_secs(secs)) };
        assert_eq!(delay(policy(0.0).next(1, &asked(60), now), now), Duration::from_secs(60));
        assert_eq!(delay(policy(0.0).next(1, &asked(1), now), now), Duration::from_secs(5), "clamped up");
        assert_eq!(
            delay(policy(0.0).next(1, &asked(86_400), now), now),
            Duration::from_secs(120),
            "clamped down"
        );
        let slow = Outcome::SlowDown { retry_after: None };
        assert_eq!(delay(policy(0.0).next(1, &slow, now), now), Duration::from_secs(60), "the floor");
        assert_eq!(delay(policy(0.0).next(3, &slow, now), now), Duration::from_secs(120));
    }

    #[test]
    fn gone_ends_the_delivery_at_once() {
        // Disabling the webhook is `disable::DisableRule`'s decision (tested there).
        assert_eq!(policy(0.0).next(1, &Outcome::Gone, Utc::now()), NextStep::Dead);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").expect("time").to_utc();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

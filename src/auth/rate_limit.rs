//! Per-key rate limiting: a GCRA bucket per API key ([`governor`], lock-free), refilled at
//! `auth.rate_limit_per_second` up to `auth.rate_limit_burst`. A request finding the bucket empty is
//! answered 429 with `Retry-After`.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use uuid::Uuid;

#[derive(Debug)]
pub struct RateLimiter {
    /// `None` when the limit is disabled.
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
}

impl RateLimiter {
    /// `per_second == 0` disables the limit (a burst of 0 counts as 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// Takes one token for `key`, or says how many seconds (at least 1) until one is available.
    pub fn check(&self, key: Uuid) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            (wait.as_secs_f64().ceil() as u64).max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_allowed_then_requests_wait() {
        let limiter = RateLimiter::new(1, 3);
        let key = Uuid::new_v4();
        for _ in 0..3 {
            assert_eq!(limiter.check(key), Ok(()));
        }
        assert_eq!(limiter.check(key), Err(1), "the fourth request waits about a second");
        assert_eq!(limiter.check(Uuid::new_v4()), Ok(()), "buckets are per key");
    }

    #[test]
    fn zero_disables_the_limit() {
        let limiter = RateLimiter::new(0, 0);
        let key = Uuid::new_v4();
        assert!((0..10_000).all(|_| limiter.check(key).is_ok()));
    }
}

//! Per-key rate limiting: a token bucket per API key, refilled at `auth.rate_limit_per_second` up to
//! `auth.rate_limit_burst`. A request finding the bucket empty is answered 429 with `Retry-After`.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use uuid::Uuid;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second == 0` disables the limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how many seconds until one is available.
    pub fn check(&self, key: Uuid) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil() as u64)
        }
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

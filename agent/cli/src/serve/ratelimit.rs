//! The webhook's rate limit: token buckets (pure — the caller passes the time in, so every
//! case is a unit test without sleeping). It never decides whether a call is authorized; the
//! handler asks it once per call, and a refused call costs nothing more than this check.
//!
//! Two buckets, not one: calls that carry the right token and calls that do not are limited
//! apart, so a flood of unauthenticated calls cannot use up the budget Alertmanager's own
//! deliveries need. Alertmanager retries a 429 like any failed delivery
//! (notify/webhook: a non-2xx answer is retried with backoff), so a refused call loses
//! nothing; `Retry-After` (RFC 9110 §10.2.3, whole seconds) says when the next token is due.

use std::time::{Duration, Instant};

/// Default sustained rate: Alertmanager sends one call per alert group per `group_interval`
/// (5m by default) plus retries; a handful a second is far above any honest load.
pub const DEFAULT_RATE: f64 = 5.0;
/// Default burst: several groups flushing at once after Alertmanager restarts.
pub const DEFAULT_BURST: u32 = 20;

/// Whether the call carried the configured bearer token (which bucket it draws from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The right bearer token.
    Authorized,
    /// No token, a wrong one, or no token configured.
    Unauthorized,
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        // A clock read earlier than the last one (two threads racing for the lock) adds nothing.
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        } else {
            Err(Duration::MAX)
        }
    }
}

/// The webhook's two buckets.
#[derive(Debug, Clone)]
pub struct Limiter {
    authorized: Bucket,
    unauthorized: Bucket,
}

impl Limiter {
    /// Two full buckets of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Limiter {
        Limiter {
            authorized: Bucket::new(rate, burst, now),
            unauthorized: Bucket::new(rate, burst, now),
        }
    }

    /// Admits one call of `caller` at `now`, or returns the `Retry-After` seconds (at least 1).
    pub fn admit(&mut self, caller: Caller, now: Instant) -> Result<(), u64> {
        let bucket = match caller {
            Caller::Authorized => &mut self.authorized,
            Caller::Unauthorized => &mut self.unauthorized,
        };
        bucket.take(now).map_err(|wait| {
            wait.as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0))
                .max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_full_bucket_admits_exactly_its_burst_then_refuses() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1.0, 3, t0);
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0), Ok(()));
        assert_eq!(b.take(t0), Err(secs(1.0)));
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_above_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 2, t0);
        b.take(t0).unwrap();
        b.take(t0).unwrap();
        // Half a second at 2/s is one token.
        assert_eq!(b.take(t0 + secs(0.5)), Ok(()));
        assert!(b.take(t0 + secs(0.5)).is_err());
        // An hour idle refills to the burst (2), not to 7200.
        let later = t0 + secs(3600.0);
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(later), Err(secs(0.5)));
    }

    #[test]
    fn a_clock_read_before_the_last_one_adds_no_token() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1.0, 1, t0 + secs(10.0));
        b.take(t0 + secs(10.0)).unwrap();
        assert!(b.take(t0).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let t0 = Instant::now();
        let mut l = Limiter::new(0.4, 1, t0);
        l.admit(Caller::Authorized, t0).unwrap();
        // 1 token at 0.4/s is 2.5 s away: Retry-After 3.
        assert_eq!(l.admit(Caller::Authorized, t0), Err(3));
        let mut fast = Limiter::new(100.0, 1, t0);
        fast.admit(Caller::Authorized, t0).unwrap();
        assert_eq!(fast.admit(Caller::Authorized, t0), Err(1));
    }

    #[test]
    fn unauthenticated_floods_do_not_use_up_the_authorized_budget() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1.0, 2, t0);
        assert!(l.admit(Caller::Unauthorized, t0).is_ok());
        assert!(l.admit(Caller::Unauthorized, t0).is_ok());
        assert!(l.admit(Caller::Unauthorized, t0).is_err());
        assert!(l.admit(Caller::Authorized, t0).is_ok());
        assert!(l.admit(Caller::Authorized, t0).is_ok());
        assert!(l.admit(Caller::Authorized, t0).is_err());
    }

    #[test]
    fn a_zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0.0, 1, t0);
        b.take(t0).unwrap();
        assert_eq!(b.take(t0 + secs(1e6)), Err(Duration::MAX));
    }
}

//! When and how long to wait before retrying a registry request: exponential
//! backoff with jitter, and the server's `Retry-After` (seconds or an HTTP
//! date), both capped so a hostile or confused server cannot stall us forever.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The retry settings of one host.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first backoff; doubles with every attempt.
    pub base: Duration,
    /// Upper bound of one backoff.
    pub cap: Duration,
    /// Upper bound of a wait the server asks for with `Retry-After`.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The policy for `retries` retries with the default timings
    /// (200 ms · 2ⁿ, at most 10 s; `Retry-After` at most 60 s).
    pub fn new(retries: u32) -> Self {
        RetryPolicy {
            retries,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            retry_after_cap: Duration::from_secs(60),
        }
    }

    /// The un-jittered backoff before retry number `attempt` (0 = first retry).
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry number `attempt`: "equal jitter", a random
    /// duration between half and all of the ceiling, so concurrent clients
    /// do not retry in lockstep. A `Retry-After` from the server wins when
    /// it asks for longer (capped at `retry_after_cap`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let half = ceiling / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            let nanos = half.as_nanos().min(u64::MAX as u128) as u64;
            Duration::from_nanos(random_u64() % nanos.max(1))
        };
        let backoff = half + jitter;
        match retry_after {
            Some(ra) => ra.min(self.retry_after_cap).max(backoff),
            None => backoff,
        }
    }
}

/// A cheap random number (no crate needed): std's randomly keyed SipHash
/// over a counter and the clock.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to
/// `now`). A date in the past means "now"; garbage means "not given".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let p = RetryPolicy::new(5);
        assert_eq!(p.backoff_ceiling(0), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(1600));
        assert_eq!(p.backoff_ceiling(10), Duration::from_secs(10));
        assert_eq!(p.backoff_ceiling(1000), Duration::from_secs(10));
        for attempt in 0..8 {
            let d = p.delay(attempt, None);
            let ceiling = p.backoff_ceiling(attempt);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn retry_after_wins_when_longer_but_is_capped() {
        let p = RetryPolicy::new(3);
        assert_eq!(p.delay(0, Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(p.delay(0, Some(Duration::from_secs(3600))), Duration::from_secs(60));
        let d = p.delay(2, Some(Duration::ZERO));
        assert!(d >= Duration::from_millis(400));
    }
}

//! A per-host request rate limit: a token bucket shared by every task that
//! talks to the host. Each request takes a token; a task that finds the
//! bucket empty reserves the next token and sleeps until it is due, so waiting
//! tasks are served in arrival order and the rate really holds under load.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens per second, holding at most
/// `burst` tokens.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Tokens available; negative when tasks have reserved future tokens.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket for `rate` requests per second with a burst of one request:
    /// requests are spaced at least `1/rate` apart. Returns None when the
    /// rate is not a positive finite number (no limit).
    pub fn new(rate: f64) -> Option<Self> {
        Self::with_burst(rate, 1)
    }

    /// A bucket that allows `burst` requests at once after a quiet period.
    pub fn with_burst(rate: f64, burst: u32) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(TokenBucket {
            rate,
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                last: Instant::now(),
            }),
        })
    }

    /// The configured rate in requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes one token, reserving it and returning how long the caller must
    /// wait before using it.
    fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.rate).min(self.burst);
        st.last = now;
        st.tokens -= 1.0;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / self.rate)
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn no_limit_for_zero_or_nonsense() {
        assert!(TokenBucket::new(0.0).is_none());
        assert!(TokenBucket::new(-1.0).is_none());
        assert!(TokenBucket::new(f64::NAN).is_none());
        assert!(TokenBucket::new(f64::INFINITY).is_none());
        assert!(TokenBucket::new(0.5).is_some());
    }

    #[test]
    fn reservations_are_spaced_by_the_interval() {
        let bucket = TokenBucket::new(10.0).unwrap();
        let waits: Vec<u128> = (0..5).map(|_| bucket.reserve().as_millis()).collect();
        // Each caller is told to wait one more interval than the previous one
        // (less the few microseconds that passed between the calls).
        for (i, w) in waits.iter().enumerate() {
            let expected = 100 * i as u128;
            assert!(*w + 5 >= expected && *w <= expected, "{waits:?}");
        }
    }

    #[tokio::test]
    async fn spaces_requests_at_the_rate() {
        let bucket = TokenBucket::new(100.0).unwrap();
        let start = Instant::now();
        for _ in 0..21 {
            bucket.acquire().await;
        }
        // The first is free, the next 20 each wait 10 ms.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(3), "{elapsed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn shared_by_concurrent_tasks() {
        let bucket = Arc::new(TokenBucket::new(50.0).unwrap());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let b = bucket.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    b.acquire().await;
                }
                Instant::now()
            }));
        }
        let mut last = start;
        for t in tasks {
            last = last.max(t.await.unwrap());
        }
        // 20 requests at 50/s: the last one no earlier than 19 × 20 ms.
        let e = last - start;
        assert!(e >= Duration::from_millis(375), "{e:?}");
    }

    #[tokio::test]
    async fn burst_then_rate() {
        let bucket = TokenBucket::with_burst(20.0, 4).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            bucket.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(40));
        bucket.acquire().await;
        assert!(start.elapsed() >= Duration::from_millis(45));
        // After a quiet period the bucket refills, but only up to the burst.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let t = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(45), "{e:?}");
    }
}

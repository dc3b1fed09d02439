//! A per-host request rate limit: a token bucket shared by every task that
//! talks to the host. Each request takes a token; a task that finds the
//! bucket empty reserves the next token and sleeps until it is due, so waiting
//! tasks are served in arrival order and the rate really holds under load.
//! And the pull quota a registry announces (`RateLimit-Limit` /
//! `RateLimit-Remaining`, Docker Hub's `100;w=21600`): read from every
//! answer, the latest kept per host.

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

/// A registry's pull quota as its latest answer announced it: Docker Hub
/// sends `RateLimit-Limit: 100;w=21600` and `RateLimit-Remaining: 76;w=21600`
/// (pulls, and the window in seconds); the IETF draft's `RateLimit-Reset`
/// (seconds until the window resets) is read when sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullQuota {
    pub limit: u64,
    pub remaining: u64,
    /// The window's length, when the registry says it (`;w=`).
    pub window: Option<Duration>,
    /// When the window resets, counted from the answer, when the registry says it.
    pub reset: Option<Duration>,
}

impl PullQuota {
    /// The quota announced by an answer's headers (`get` looks one up by
    /// its lower-case name); None when the registry sends none, or sends
    /// something unreadable (said at `-vv`, never trusted).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<PullQuota> {
        let limit = get("ratelimit-limit")?;
        let remaining = get("ratelimit-remaining")?;
        let parsed = (|| {
            let (limit, w1) = parse_quota_value(limit)?;
            let (remaining, w2) = parse_quota_value(remaining)?;
            let reset = get("ratelimit-reset")
                .and_then(|r| r.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Some(PullQuota {
                limit,
                remaining: remaining.min(limit),
                window: w1.or(w2).map(Duration::from_secs),
                reset,
            })
        })();
        if parsed.is_none() {
            tracing::trace!(limit, remaining, "unreadable RateLimit headers, ignored");
        }
        parsed
    }

    /// Whether few enough pulls are left that requests should slow down:
    /// a fifth of the limit or less.
    pub fn is_low(&self) -> bool {
        self.remaining.saturating_mul(5) <= self.limit
    }

    /// `6 h`, `90 min`, `45 s`: a window or a wait, for people.
    pub fn human(d: Duration) -> String {
        let s = d.as_secs();
        if s >= 3600 && s % 3600 == 0 {
            format!("{} h", s / 3600)
        } else if s >= 3600 {
            format!("{:.1} h", s as f64 / 3600.0)
        } else if s >= 60 {
            format!("{} min", s.div_ceil(60))
        } else {
            format!("{s} s")
        }
    }

    /// `76 of 100 pulls left in this 6 h window`.
    pub fn describe(&self) -> String {
        let window = match self.window {
            Some(w) => format!(" in this {} window", Self::human(w)),
            None => String::new(),
        };
        format!("{} of {} pulls left{window}", self.remaining, self.limit)
    }

    /// When more pulls become available: `the window resets in 40 min`, or
    /// `the window is 6 h long`, or nothing known.
    pub fn when_reset(&self) -> String {
        match (self.reset, self.window) {
            (Some(r), _) => format!("the window resets in {}", Self::human(r)),
            (None, Some(w)) => format!(
                "the registry does not say when its window resets; it is {} long",
                Self::human(w)
            ),
            (None, None) => "the registry does not say when its quota resets".to_string(),
        }
    }
}

/// A host's pull quota as seen by this process: the latest announced, the
/// manifest GETs sent (what Docker Hub counts as pulls), and the pace they
/// keep once the quota runs low.
#[derive(Debug)]
pub struct QuotaTracker {
    latest: Mutex<Option<PullQuota>>,
    pulls: std::sync::atomic::AtomicU64,
    /// One manifest GET at a time, one a second, once the quota is low.
    pace: TokenBucket,
    /// Pulls in flight while paced: one at a time, each seeing the count
    /// the previous answer announced.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Default for QuotaTracker {
    fn default() -> Self {
        QuotaTracker {
            latest: Mutex::new(None),
            pulls: Default::default(),
            pace: TokenBucket {
                rate: Self::LOW_RATE,
                burst: 1.0,
                state: Mutex::new(BucketState {
                    tokens: 1.0,
                    last: Instant::now(),
                }),
            },
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }
}

impl QuotaTracker {
    /// Manifest GETs per second once the quota is low.
    pub const LOW_RATE: f64 = 1.0;

    /// Keeps the quota an answer announced (if any).
    pub fn observe(&self, quota: Option<PullQuota>) {
        if let Some(q) = quota {
            let mut latest = match self.latest.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *latest = Some(q);
        }
    }

    /// The latest quota announced.
    pub fn latest(&self) -> Option<PullQuota> {
        match self.latest.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Manifest GETs sent so far.
    pub fn pulls(&self) -> u64 {
        self.pulls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits before a pull as the quota asks: not at all while it is
    /// plentiful or unknown; once low, one pull at a time and at most
    /// [`Self::LOW_RATE`] a second (the guard returned is held until the
    /// answer is in). Err with the quota when none is left.
    pub async fn before_pull(&self) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, PullQuota> {
        let low = self.latest().filter(PullQuota::is_low);
        let guard = match low {
            None => None,
            Some(_) => {
                let g = self.one_at_a_time.lock().await;
                self.pace.acquire().await;
                Some(g)
            }
        };
        // Read again: the pull before this one may have used the last.
        if let Some(q) = self.latest().filter(|q| q.remaining == 0) {
            return Err(q);
        }
        self.pulls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(guard)
    }
}

/// `76;w=21600` → (76, Some(21600)); a bare `76` has no window. Other
/// parameters (`;comment=…`) are ignored.
fn parse_quota_value(v: &str) -> Option<(u64, Option<u64>)> {
    // The IETF draft allows a list (`100, 100;w=21600`); the first item counts.
    let item = v.split(',').next()?.trim();
    let mut parts = item.split(';');
    let n = parts.next()?.trim().parse::<u64>().ok()?;
    let mut window = None;
    for p in parts {
        if let Some((k, val)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("w") {
                window = Some(val.trim().trim_matches('"').parse::<u64>().ok()?);
            }
        }
    }
    Some((n, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn quota(headers: &[(&'static str, &'static str)]) -> Option<PullQuota> {
        PullQuota::from_headers(|name| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
    }

    #[test]
    fn reads_docker_hub_quota_headers() {
        let q = quota(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "76;w=21600"),
        ])
        .unwrap();
        assert_eq!(q.limit, 100);
        assert_eq!(q.remaining, 76);
        assert_eq!(q.window, Some(Duration::from_secs(21600)));
        assert_eq!(q.reset, None);
        assert_eq!(q.describe(), "76 of 100 pulls left in this 6 h window");
        assert!(q.when_reset().contains("6 h long"), "{}", q.when_reset());
        assert!(!q.is_low());
        let low = quota(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "20;w=21600"),
        ])
        .unwrap();
        assert!(low.is_low());
    }

    #[test]
    fn reads_bare_numbers_and_a_reset() {
        let q = quota(&[
            ("ratelimit-limit", "200"),
            ("ratelimit-remaining", " 3 "),
            ("ratelimit-reset", "2400"),
        ])
        .unwrap();
        assert_eq!((q.limit, q.remaining, q.window), (200, 3, None));
        assert_eq!(q.when_reset(), "the window resets in 40 min");
        assert_eq!(q.describe(), "3 of 200 pulls left");
    }

    #[tokio::test]
    async fn pulls_are_counted_paced_once_low_and_refused_when_none_is_left() {
        let t = QuotaTracker::default();
        // No quota known: no wait.
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.before_pull().await.unwrap().is_none());
        }
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(t.pulls(), 3);
        // Plenty left: no wait either.
        t.observe(quota(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "50;w=21600"),
        ]));
        assert!(t.before_pull().await.unwrap().is_none());
        // Low: one at a time, one a second.
        t.observe(quota(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "3;w=21600"),
        ]));
        let start = Instant::now();
        for _ in 0..3 {
            let guard = t.before_pull().await.unwrap();
            assert!(guard.is_some());
        }
        assert!(start.elapsed() >= Duration::from_millis(1900), "{:?}", start.elapsed());
        // None left: refused, not sent.
        t.observe(quota(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "0;w=21600"),
        ]));
        let refused = t.before_pull().await.unwrap_err();
        assert_eq!(refused.remaining, 0);
        assert_eq!(t.pulls(), 7);
        // An answer without the headers keeps the last quota known.
        t.observe(None);
        assert_eq!(t.latest().map(|q| q.remaining), Some(0));
    }

    #[test]
    fn ignores_missing_or_unreadable_quota_headers() {
        assert_eq!(quota(&[]), None);
        assert_eq!(quota(&[("ratelimit-limit", "100;w=21600")]), None);
        assert_eq!(
            quota(&[("ratelimit-limit", "lots"), ("ratelimit-remaining", "3")]),
            None
        );
        assert_eq!(
            quota(&[("ratelimit-limit", "100;w=soon"), ("ratelimit-remaining", "3")]),
            None
        );
        // More left than the limit is clamped, never trusted beyond it.
        let q = quota(&[("ratelimit-limit", "10"), ("ratelimit-remaining", "99")]).unwrap();
        assert_eq!(q.remaining, 10);
    }

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

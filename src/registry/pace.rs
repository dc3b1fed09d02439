//! How hard occy presses one registry host: how many requests of each kind
//! are in flight at once (manifests and other small requests, blob GETs,
//! blob uploads) and how many leave per second. Nothing here is a value the
//! user must choose: each kind starts small and widens (doubling at most
//! every 100 ms at first) while the answers keep their latency (and its
//! throughput does not fall), narrows when latency grows, and halves on a
//! 429, a 503 or a connection that failed.
//! The request rate is unlimited until the registry says otherwise: a
//! `RateLimit-Limit` with a short window sets it, and a 429 teaches it (the
//! requests the host accepted in the second before the one it refused),
//! with every request of the host held back for the 429's `Retry-After`, so
//! that few requests meet a 429 at all; quiet, it grows by a fifth every 5 s
//! (a probe that meets a 429 goes back to the rate that held, and the next
//! probe waits twice as long). `--rate-limit` caps the rate; `-J`
//! and `-j` cap the concurrency (the walk never asks for more).
//!
//! What a host settled at (each kind's limit, the rate learned) is
//! remembered in the cache directory (`hosts/HOST.pace`), so the next run
//! starts there: a cron sync meets no 429 where the first run met a few.
//!
//! The controllers ([`Window`], [`RateLearner`]) are plain state machines
//! fed the time by their caller, so their tests run on a simulated clock;
//! [`HostPace`] wraps them for tasks (permits, waiting, the summary `-v`
//! prints).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The kinds of request paced apart: a registry may serve many small
/// requests at once yet few blob bodies, and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Manifests (GET, HEAD, PUT), blob HEADs, tag lists, the catalog, referrers.
    Request,
    /// Blob GETs, held until the body has been read.
    BlobGet,
    /// Upload sessions and mounts (POST), chunks (PATCH), the final PUT.
    Upload,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Request, Kind::BlobGet, Kind::Upload];

    fn index(self) -> usize {
        match self {
            Kind::Request => 0,
            Kind::BlobGet => 1,
            Kind::Upload => 2,
        }
    }

    /// Where a kind starts: small, so a registry that throttles meets few
    /// requests at once before it is heard (those in flight when it first
    /// refuses are all refused; see also [`SLOW_START_STEP`]).
    pub fn initial(self) -> usize {
        match self {
            Kind::Request => 4,
            Kind::BlobGet | Kind::Upload => 2,
        }
    }

    /// Its key in the remembered pace file.
    fn key(self) -> &'static str {
        match self {
            Kind::Request => "requests",
            Kind::BlobGet => "blob-gets",
            Kind::Upload => "uploads",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Request => "requests",
            Kind::BlobGet => "blob GETs",
            Kind::Upload => "uploads",
        }
    }
}

/// The most of one kind in flight per host, whatever the answers say (the
/// walk's `-J`/`-j` and the planner's concurrency cap it lower).
pub const CEILING: usize = 64;

/// Latency holds while a window's mean is within this factor of the
/// lowest seen (plus [`SLACK`]); it has grown past [`GROWN`] (plus twice
/// the slack).
const HELD: f64 = 1.5;
const GROWN: f64 = 2.0;
/// Absolute slack on latency comparisons: scheduling noise on a loaded
/// machine is not the registry queueing.
const SLACK: Duration = Duration::from_millis(3);
/// A window ends after this many answers (at least), or this long.
const WINDOW_MIN_SAMPLES: u32 = 2;
const WINDOW_MAX: Duration = Duration::from_secs(1);
/// Slow start doubles at most this often: on a fast link a window of
/// answers takes a few milliseconds, and a registry that counts requests
/// per second would otherwise meet dozens at once before its first 429.
const SLOW_START_STEP: Duration = Duration::from_millis(100);

/// One kind's concurrency controller: a limit moved by windows of answers.
#[derive(Debug, Clone)]
pub struct Window {
    limit: f64,
    ceiling: usize,
    /// Doubling per window until the first sign of trouble.
    slow_start: bool,
    in_flight: usize,
    /// The lowest latency seen: the registry answering with nothing queued.
    base: Option<Duration>,
    /// The current window: since when, answers, their latency, whether the
    /// limit held anyone back, work done (bytes or requests).
    start: Instant,
    samples: u32,
    latency_sum: Duration,
    busy: bool,
    units: u64,
    /// The previous window's throughput (units per second), when busy.
    last_throughput: Option<f64>,
    /// The last narrowing on trouble (at most one per window).
    last_cut: Option<Instant>,
    /// The highest limit reached, and the answers that narrowed it.
    peak: f64,
    throttled: u64,
}

impl Window {
    pub fn new(initial: usize, ceiling: usize, now: Instant) -> Window {
        let ceiling = ceiling.max(1);
        let limit = initial.clamp(1, ceiling) as f64;
        Window {
            limit,
            ceiling,
            slow_start: true,
            in_flight: 0,
            base: None,
            start: now,
            samples: 0,
            latency_sum: Duration::ZERO,
            busy: false,
            units: 0,
            last_throughput: None,
            last_cut: None,
            peak: limit,
            throttled: 0,
        }
    }

    /// Starts from a limit an earlier run settled at: no doubling from
    /// there, only the steps of one.
    pub fn resume_at(&mut self, limit: usize) {
        self.limit = limit.clamp(1, self.ceiling) as f64;
        self.peak = self.limit;
        self.slow_start = false;
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> usize {
        (self.limit.floor() as usize).clamp(1, self.ceiling)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Takes a slot when one is free (true), else notes that the limit
    /// held a request back (false).
    pub fn try_start(&mut self) -> bool {
        if self.in_flight < self.limit() {
            self.in_flight += 1;
            if self.in_flight >= self.limit() {
                self.busy = true;
            }
            true
        } else {
            self.busy = true;
            false
        }
    }

    /// Takes a slot whatever the limit (a request that waited too long:
    /// see [`HostPace::acquire`]).
    pub fn force_start(&mut self) {
        self.in_flight += 1;
        self.busy = true;
    }

    /// Work done by a request in flight: bytes of a body, or one request.
    pub fn progress(&mut self, units: u64) {
        self.units = self.units.saturating_add(units);
    }

    /// A request's slot is free again.
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// An answer came `latency` after its request left; may end the window
    /// and move the limit.
    pub fn answered(&mut self, now: Instant, latency: Duration) {
        self.base = Some(self.base.map_or(latency, |b| b.min(latency)));
        self.samples += 1;
        self.latency_sum += latency;
        let elapsed = now.saturating_duration_since(self.start);
        let enough = self.samples >= WINDOW_MIN_SAMPLES.max(self.limit() as u32)
            && (!self.slow_start || elapsed >= SLOW_START_STEP);
        if enough || elapsed >= WINDOW_MAX {
            self.end_window(now);
        }
    }

    fn end_window(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64().max(1e-3);
        let throughput = self.units as f64 / elapsed;
        let base = self.base.unwrap_or_default().as_secs_f64();
        let mean = (self.latency_sum / self.samples.max(1)).as_secs_f64();
        let slack = SLACK.as_secs_f64();
        let held = mean <= base * HELD + slack;
        let grown = mean > base * GROWN + 2.0 * slack;
        let not_falling = self.last_throughput.is_none_or(|p| throughput >= p * 0.9);
        if grown {
            // Answers queue: fewer at once.
            self.limit = (self.limit * 0.8).max(1.0);
            self.slow_start = false;
        } else if held && self.busy && not_falling {
            if self.slow_start {
                self.limit *= 2.0;
            } else {
                self.limit += 1.0;
            }
        } else if self.busy && !not_falling {
            // More at once brought less: the last step was too far.
            self.slow_start = false;
        }
        self.limit = self.limit.min(self.ceiling as f64);
        self.peak = self.peak.max(self.limit);
        self.last_throughput = self.busy.then_some(throughput);
        self.reset_window(now);
    }

    fn reset_window(&mut self, now: Instant) {
        self.start = now;
        self.samples = 0;
        self.latency_sum = Duration::ZERO;
        self.busy = self.in_flight >= self.limit();
        self.units = 0;
    }

    /// The registry said slow down (429, 503) or a connection failed:
    /// halve the limit, once per window (the requests already in flight
    /// when it happened meet the same trouble and say nothing new).
    pub fn trouble(&mut self, now: Instant) {
        self.throttled += 1;
        if self.last_cut.is_some_and(|c| c >= self.start) {
            return;
        }
        self.limit = (self.limit / 2.0).max(1.0);
        self.slow_start = false;
        self.last_cut = Some(now);
        self.last_throughput = None;
        self.reset_window(now);
        // Cuts are rarer than windows: the next one starts after this instant.
        self.start = now;
    }
}

/// Requests per second a learned rate starts from, as a share of what the
/// registry accepted in the second before it refused one.
const LEARNED_SHARE: f64 = 0.9;
/// A learned rate grows by this factor after [`PROBE_AFTER`] without a
/// 429 (the registry's limit may be higher than the second we measured,
/// or than an earlier run's).
const PROBE_GROWTH: f64 = 1.2;
const PROBE_AFTER: Duration = Duration::from_secs(5);
/// The longest a `Retry-After` or `RateLimit-Reset` holds the host back.
const HOLD_CAP: Duration = Duration::from_secs(60);

/// A host's request rate: the user's cap, what the registry announced or
/// taught with its 429s, and when requests may leave again after one.
#[derive(Debug, Clone)]
pub struct RateLearner {
    /// `--rate-limit` (requests per second), never exceeded.
    cap: Option<f64>,
    /// What the registry's answers taught, when they did.
    learned: Option<f64>,
    /// When the rate was last set or lowered (requests sent before it met
    /// the old rate and teach nothing about the new one).
    learned_at: Option<Instant>,
    /// The rate that held without a 429 before the last probe raised it:
    /// where a 429 met by the probe goes back to.
    held: Option<f64>,
    /// Quiet time before the next probe: [`PROBE_AFTER`], doubled each
    /// time a probe meets a 429 (the registry's limit is found).
    probe_after: Duration,
    /// Send times of the last second.
    recent: VecDeque<Instant>,
    /// The next request may leave at this time (the token bucket's clock).
    next_free: Option<Instant>,
    /// No request leaves before this time (a `Retry-After`).
    hold_until: Option<Instant>,
    /// Answers 429, and how many of them taught a rate.
    refused: u64,
    /// When the request whose 429 taught the rate in force was sent (None:
    /// the rate came from elsewhere, or a later 429 lowered it).
    taught_by: Option<Instant>,
}

impl RateLearner {
    pub fn new(cap: Option<f64>) -> RateLearner {
        RateLearner {
            cap: cap.filter(|r| r.is_finite() && *r > 0.0),
            learned: None,
            learned_at: None,
            held: None,
            probe_after: PROBE_AFTER,
            recent: VecDeque::new(),
            next_free: None,
            hold_until: None,
            refused: 0,
            taught_by: None,
        }
    }

    /// The rate in force (None: unlimited).
    pub fn rate(&self) -> Option<f64> {
        match (self.cap, self.learned) {
            (Some(c), Some(l)) => Some(c.min(l)),
            (c, l) => c.or(l),
        }
    }

    pub fn learned(&self) -> Option<f64> {
        self.learned
    }

    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Reserves the next departure: how long the caller waits before
    /// sending (the request counts as sent at `now + wait`).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if let (Some(l), Some(at)) = (self.learned, self.learned_at) {
            if self.cap.is_none_or(|c| l < c) && now.saturating_duration_since(at) >= self.probe_after {
                self.held = Some(l);
                self.learned = Some(l * PROBE_GROWTH);
                self.learned_at = Some(now);
            }
        }
        let mut at = now;
        if let Some(h) = self.hold_until {
            at = at.max(h);
        }
        if let Some(rate) = self.rate() {
            if let Some(next) = self.next_free {
                at = at.max(next);
            }
            self.next_free = Some(at + Duration::from_secs_f64(1.0 / rate));
        }
        while self
            .recent
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
        at.saturating_duration_since(now)
    }

    /// A request sent at `sent` was answered 429 at `now`, asking to wait
    /// `retry_after` (when it said). The first one teaches the rate: the
    /// requests sent in the second before it. Another of the same burst,
    /// sent before that one (answers overtake each other), teaches it
    /// again: the registry refused from there, so the requests it accepted
    /// are those sent before the earliest it refused, and counting any
    /// later ones too would set the rate above the registry's. A later one
    /// sent at the learned rate lowers it: back to the rate that held when
    /// a probe raised it (probing half as often from then on), else by a
    /// fifth.
    pub fn throttled(&mut self, now: Instant, sent: Instant, retry_after: Option<Duration>) {
        self.refused += 1;
        if let Some(wait) = retry_after {
            let until = now + wait.min(HOLD_CAP);
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
        let before = self
            .recent
            .iter()
            .filter(|t| **t < sent && sent.saturating_duration_since(**t) < Duration::from_secs(1))
            .count();
        let taught = (before as f64 * LEARNED_SHARE).max(1.0);
        match (self.learned, self.learned_at) {
            (None, _) => {
                self.set_learned(taught, now);
                self.taught_by = Some(sent);
            }
            (Some(l), _) if self.taught_by.is_some_and(|t| sent < t) => {
                if taught < l {
                    self.set_learned(taught, now);
                }
                self.taught_by = Some(sent);
            }
            (Some(l), Some(at)) if sent >= at => match self.held.take() {
                Some(held) if held < l => {
                    self.set_learned(held, now);
                    self.probe_after = (self.probe_after * 2).min(HOLD_CAP);
                }
                _ => self.set_learned((l * 0.8).max(0.5), now),
            },
            _ => {}
        }
    }

    /// The registry announced its rate (`RateLimit-Limit: N;w=SECONDS`
    /// with a window of a minute or less): keep under it.
    pub fn announced(&mut self, now: Instant, limit: u64, window: Duration, remaining: u64, reset: Option<Duration>) {
        if window.is_zero() || window > HOLD_CAP || limit == 0 {
            return;
        }
        let rate = limit as f64 / window.as_secs_f64() * 0.95;
        if self.learned.is_none_or(|l| (l - rate).abs() > f64::EPSILON) {
            self.set_learned(rate, now);
        }
        if remaining == 0 {
            let until = now + reset.unwrap_or(window).min(HOLD_CAP);
            self.hold_until = Some(self.hold_until.map_or(until, |h| h.max(until)));
        }
    }

    /// Starts from a rate an earlier run learned.
    pub fn resume_at(&mut self, rate: f64, now: Instant) {
        if rate.is_finite() && rate > 0.0 {
            self.set_learned(rate, now);
        }
    }

    fn set_learned(&mut self, rate: f64, now: Instant) {
        self.held = None;
        self.taught_by = None;
        self.learned = Some(rate);
        self.learned_at = Some(now);
        // The bucket starts over at the new rate.
        self.next_free = None;
    }
}

/// What one kind settled at, for `-v`.
#[derive(Debug, Clone, PartialEq)]
pub struct KindSummary {
    pub kind: Kind,
    pub limit: usize,
    pub peak: usize,
    /// Answers that narrowed it (429, 503, failed connections).
    pub trouble: u64,
}

/// What a host settled at, for `-v`.
#[derive(Debug, Clone, PartialEq)]
pub struct PaceSummary {
    pub host: String,
    pub kinds: Vec<KindSummary>,
    pub learned_rate: Option<f64>,
    pub refused: u64,
}

impl fmt::Display for PaceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: settled at", self.host)?;
        for (i, k) in self.kinds.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} {} at once", k.limit, k.kind.name())?;
            if k.peak > k.limit {
                write!(f, " (up to {})", k.peak)?;
            }
        }
        match self.learned_rate {
            Some(r) => write!(
                f,
                "; {r:.1} requests/s learned from the registry ({} answered 429)",
                self.refused
            ),
            None if self.refused > 0 => write!(f, "; {} answered 429", self.refused),
            None => Ok(()),
        }
    }
}

/// A request waiting this long for a slot takes one over the limit: a
/// blob fetched once for several destinations holds its GET while each
/// upload waits for its own slot, and a wait without end could close a
/// circle of such waits.
const WAIT_CAP: Duration = Duration::from_secs(60);

struct Controllers {
    kinds: [Window; 3],
    used: [bool; 3],
    rate: RateLearner,
}

/// One host's pacing, shared by all its clients.
pub struct HostPace {
    host: String,
    state: Mutex<Controllers>,
    freed: Notify,
    /// Where what it settled at is remembered (None: the cache is off).
    memory: Option<PathBuf>,
}

/// What an earlier run settled at: each kind's limit, the rate learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remembered {
    pub limits: Vec<(Kind, usize)>,
    pub rate: Option<f64>,
}

impl Remembered {
    /// Reads `requests 8`, `blob-gets 4`, `uploads 4`, `rate 27.0` lines;
    /// anything else is ignored (a damaged file costs only the head start).
    pub fn parse(text: &str) -> Remembered {
        let mut r = Remembered::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(' ') else {
                continue;
            };
            let value = value.trim();
            if key == "rate" {
                r.rate = value.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
            } else if let Some(kind) = Kind::ALL.into_iter().find(|k| k.key() == key) {
                if let Ok(n) = value.parse::<usize>() {
                    r.limits.push((kind, n.clamp(1, CEILING)));
                }
            }
        }
        r
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, n) in &self.limits {
            out.push_str(&format!("{} {n}\n", k.key()));
        }
        if let Some(r) = self.rate {
            out.push_str(&format!("rate {r:.3}\n"));
        }
        out
    }
}

/// The file a host's pace is remembered in, under `dir` (the cache's `hosts/`).
pub fn memory_file(dir: &Path, host: &str) -> PathBuf {
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.pace"))
}

impl fmt::Debug for HostPace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostPace")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl HostPace {
    /// `rate_cap`: `--rate-limit`; `memory`: the file an earlier run's
    /// pace is read from and this run's written to ([`memory_file`]).
    pub fn new(host: &str, rate_cap: Option<f64>, memory: Option<PathBuf>) -> Arc<HostPace> {
        let now = Instant::now();
        let mut kinds = Kind::ALL.map(|k| Window::new(k.initial(), CEILING, now));
        let mut rate = RateLearner::new(rate_cap);
        if let Some(text) = memory.as_deref().and_then(|f| std::fs::read_to_string(f).ok()) {
            let r = Remembered::parse(&text);
            for (k, n) in r.limits {
                kinds[k.index()].resume_at(n);
            }
            if let Some(learned) = r.rate {
                rate.resume_at(learned, now);
            }
        }
        Arc::new(HostPace {
            host: host.to_string(),
            state: Mutex::new(Controllers {
                kinds,
                used: [false; 3],
                rate,
            }),
            freed: Notify::new(),
            memory,
        })
    }

    /// Writes what the host settled at to its memory file (when the cache
    /// is on and the host was asked anything; temp name and rename; a
    /// cache that cannot be written is only a missed head start).
    pub fn remember(&self) {
        let Some(file) = &self.memory else { return };
        let r = {
            let st = self.lock();
            if !st.used.iter().any(|u| *u) {
                return;
            }
            Remembered {
                limits: Kind::ALL
                    .into_iter()
                    .filter(|k| st.used[k.index()])
                    .map(|k| (k, st.kinds[k.index()].limit()))
                    .collect(),
                rate: st.rate.learned(),
            }
        };
        let write = || -> io::Result<()> {
            let dir = file.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            io::Write::write_all(&mut tmp, r.render().as_bytes())?;
            tmp.persist(file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::debug!("cannot remember the pace of {} in {}: {e}", self.host, file.display());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Controllers> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Waits for a slot of `kind`; the permit frees it when dropped.
    pub async fn acquire(self: &Arc<Self>, kind: Kind) -> Permit {
        let waited_since = Instant::now();
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                st.used[kind.index()] = true;
                if st.kinds[kind.index()].try_start() {
                    break;
                }
                if waited_since.elapsed() >= WAIT_CAP {
                    tracing::debug!(
                        host = self.host,
                        "a request waited {} s for a slot: sent over the limit",
                        WAIT_CAP.as_secs()
                    );
                    st.kinds[kind.index()].force_start();
                    break;
                }
            }
            let _ = tokio::time::timeout(WAIT_CAP, notified).await;
        }
        Permit {
            pace: self.clone(),
            kind,
            sent: Instant::now(),
        }
    }

    /// Waits until a request may leave (the rate, a `Retry-After`).
    pub async fn depart(&self) {
        let wait = self.lock().rate.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// An answer announced a rate limit (`RateLimit-*` headers).
    pub fn announced(&self, limit: u64, window: Duration, remaining: u64, reset: Option<Duration>) {
        self.lock()
            .rate
            .announced(Instant::now(), limit, window, remaining, reset);
    }

    /// What the host settled at (None when it was never asked anything).
    pub fn summary(&self) -> Option<PaceSummary> {
        let st = self.lock();
        if !st.used.iter().any(|u| *u) {
            return None;
        }
        let kinds = Kind::ALL
            .iter()
            .filter(|k| st.used[k.index()])
            .map(|&k| {
                let w = &st.kinds[k.index()];
                KindSummary {
                    kind: k,
                    limit: w.limit(),
                    peak: (w.peak.floor() as usize).max(w.limit()),
                    trouble: w.throttled,
                }
            })
            .collect();
        Some(PaceSummary {
            host: self.host.clone(),
            kinds,
            learned_rate: st.rate.learned(),
            refused: st.rate.refused(),
        })
    }
}

/// A slot of one kind on one host, freed on drop. The request's answers
/// are told to it: latency, work done, trouble.
pub struct Permit {
    pace: Arc<HostPace>,
    kind: Kind,
    /// When the request left (after any wait for the rate).
    sent: Instant,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// The request leaves now (after waiting for the rate).
    pub fn sending(&mut self) {
        self.sent = Instant::now();
    }

    /// Its answer's head arrived; `sample`: whether the time taken says
    /// something about the registry (not a body's upload time).
    pub fn answered(&self, sample: bool) {
        let now = Instant::now();
        let mut st = self.pace.lock();
        let w = &mut st.kinds[self.kind.index()];
        if self.kind != Kind::BlobGet {
            w.progress(1);
        }
        if sample {
            w.answered(now, now.saturating_duration_since(self.sent));
        }
        drop(st);
        // A wider limit lets waiting requests go.
        self.pace.freed.notify_waiters();
    }

    /// Bytes of a body received.
    pub fn progress(&self, bytes: u64) {
        self.pace.lock().kinds[self.kind.index()].progress(bytes);
    }

    /// The registry refused it with 429 (asking to wait `retry_after`).
    pub fn too_many(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut st = self.pace.lock();
        st.kinds[self.kind.index()].trouble(now);
        st.rate.throttled(now, self.sent, retry_after);
    }

    /// A 503 or a failed connection: fewer at once.
    pub fn trouble(&self) {
        let now = Instant::now();
        self.pace.lock().kinds[self.kind.index()].trouble(now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.pace.lock().kinds[self.kind.index()].finished();
        self.pace.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry on a simulated clock: `capacity` requests served at once
    /// in `service` each; more queue (their latency grows).
    struct Server {
        capacity: usize,
        service: Duration,
    }

    impl Server {
        /// The latency of a request sent with `in_flight` in flight.
        fn latency(&self, in_flight: usize) -> Duration {
            let rounds = in_flight.div_ceil(self.capacity).max(1) as u32;
            self.service * rounds
        }
    }

    /// Runs `rounds` rounds: each round the controller fills its limit (plenty
    /// of demand), every request is answered with the server's latency, and
    /// the clock moves by it. Returns the limits seen.
    fn drive(w: &mut Window, server: &Server, start: Instant, rounds: usize) -> (Vec<usize>, Instant) {
        let mut now = start;
        let mut limits = Vec::new();
        for _ in 0..rounds {
            let mut n = 0;
            while w.try_start() {
                n += 1;
            }
            let latency = server.latency(n);
            now += latency;
            for _ in 0..n {
                w.progress(1);
                w.answered(now, latency);
                w.finished();
            }
            limits.push(w.limit());
        }
        (limits, now)
    }

    #[test]
    fn widens_while_latency_holds_then_settles_near_capacity() {
        let t0 = Instant::now();
        let mut w = Window::new(2, CEILING, t0);
        let server = Server {
            capacity: 12,
            service: Duration::from_millis(30),
        };
        let (limits, _) = drive(&mut w, &server, t0, 40);
        // Slow start doubles, at most every 100 ms (rounds of 30 ms here):
        // 2, 4, 8, 16 …
        assert_eq!(&limits[..8], &[2, 2, 2, 4, 4, 4, 4, 8], "{limits:?}");
        // … then queueing shows and it settles around the capacity.
        let settled = &limits[20..];
        assert!(
            settled.iter().all(|l| (9..=24).contains(l)),
            "settled outside 9..=24 for a capacity of 12: {limits:?}"
        );
    }

    #[test]
    fn narrows_when_the_registry_gets_busier() {
        let t0 = Instant::now();
        let mut w = Window::new(2, CEILING, t0);
        let fast = Server {
            capacity: 12,
            service: Duration::from_millis(30),
        };
        let (limits, now) = drive(&mut w, &fast, t0, 20);
        assert!(limits[19] >= 12, "{limits:?}");
        // Now it serves 3 at once: answers queue, the limit comes down by a
        // fifth a window until the queue is short again.
        let busy = Server {
            capacity: 3,
            service: Duration::from_millis(30),
        };
        let (limits, _) = drive(&mut w, &busy, now, 20);
        assert!(
            limits[10..].iter().all(|l| (2..=6).contains(l)),
            "not narrowed to 2..=6 for a capacity of 3: {limits:?}"
        );
    }

    #[test]
    fn a_registry_that_serves_everything_at_once_reaches_the_ceiling() {
        let t0 = Instant::now();
        let mut w = Window::new(2, 16, t0);
        let server = Server {
            capacity: 1000,
            service: Duration::from_millis(600),
        };
        let (limits, _) = drive(&mut w, &server, t0, 10);
        assert_eq!(*limits.last().unwrap(), 16, "{limits:?}");
    }

    #[test]
    fn without_demand_the_limit_stays() {
        let t0 = Instant::now();
        let mut w = Window::new(4, CEILING, t0);
        let mut now = t0;
        // One request at a time, fast answers: the limit never held anyone back.
        for _ in 0..50 {
            assert!(w.try_start());
            now += Duration::from_millis(5);
            w.answered(now, Duration::from_millis(5));
            w.finished();
        }
        assert_eq!(w.limit(), 4);
    }

    #[test]
    fn trouble_halves_once_per_window_and_ends_slow_start() {
        let t0 = Instant::now();
        let mut w = Window::new(32, CEILING, t0);
        for _ in 0..32 {
            assert!(w.try_start());
        }
        let now = t0 + Duration::from_millis(10);
        // Eight answers 429 from the same burst: one cut.
        for _ in 0..8 {
            w.trouble(now);
        }
        assert_eq!(w.limit(), 16);
        assert_eq!(w.throttled, 8);
        // After a window of good answers a new 429 cuts again.
        for _ in 0..32 {
            w.finished();
        }
        let server = Server {
            capacity: 100,
            service: Duration::from_millis(10),
        };
        let (limits, now) = drive(&mut w, &server, now, 1);
        // Additive now, not doubling.
        assert_eq!(limits, [17]);
        w.trouble(now);
        assert_eq!(w.limit(), 8);
        // Never below one.
        for i in 0..10 {
            let later = now + Duration::from_secs(i + 1);
            w.answered(later, Duration::from_millis(10));
            w.answered(later, Duration::from_millis(10));
            w.answered(later, Duration::from_millis(10));
            w.trouble(later + Duration::from_millis(1));
        }
        assert_eq!(w.limit(), 1);
        assert!(w.try_start());
        assert!(!w.try_start());
    }

    #[test]
    fn falling_throughput_stops_the_doubling() {
        let t0 = Instant::now();
        let mut w = Window::new(4, CEILING, t0);
        let mut now = t0;
        // A busy window of 4 requests moving 4 MB in 100 ms …
        let mut window = |w: &mut Window, n: usize, bytes: u64| {
            let mut started = 0;
            while started < n && w.try_start() {
                started += 1;
            }
            now += Duration::from_millis(100);
            for _ in 0..started {
                w.progress(bytes);
                w.answered(now, Duration::from_millis(20));
                w.finished();
            }
            w.limit()
        };
        assert_eq!(window(&mut w, 4, 1_000_000), 8);
        // … then 8 moving less in all: the link is full, no more doubling.
        assert_eq!(window(&mut w, 8, 200_000), 8);
        assert!(!w.slow_start);
    }

    #[test]
    fn learns_the_rate_from_the_first_429_and_waits_its_retry_after() {
        let t0 = Instant::now();
        let mut r = RateLearner::new(None);
        assert_eq!(r.rate(), None);
        // 30 requests in the first 300 ms go out at once.
        let mut now = t0;
        for _ in 0..30 {
            assert_eq!(r.reserve(now), Duration::ZERO);
            now += Duration::from_millis(10);
        }
        // The 31st is refused with Retry-After: 1.
        let sent = now;
        assert_eq!(r.reserve(sent), Duration::ZERO);
        now += Duration::from_millis(2);
        r.throttled(now, sent, Some(Duration::from_secs(1)));
        let learned = r.rate().unwrap();
        assert!((learned - 27.0).abs() < 1e-9, "{learned}");
        // Everything waits for the Retry-After, then leaves at the rate.
        let w1 = r.reserve(now);
        assert_eq!(w1, Duration::from_secs(1));
        let w2 = r.reserve(now);
        let gap = w2 - w1;
        assert!((gap.as_secs_f64() - 1.0 / 27.0).abs() < 1e-6, "{gap:?}");
        // Requests sent before the rate was learned teach nothing more.
        r.throttled(now + Duration::from_millis(3), sent, Some(Duration::from_secs(1)));
        assert_eq!(r.rate(), Some(learned));
        // One sent at the learned rate that is refused lowers it.
        let later = now + Duration::from_secs(2);
        r.throttled(later, now + Duration::from_millis(1), None);
        assert!((r.rate().unwrap() - learned * 0.8).abs() < 1e-9);
        assert_eq!(r.refused(), 3);
    }

    #[test]
    fn the_earliest_refused_request_of_a_burst_teaches_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLearner::new(None);
        // 30 requests accepted, then three more sent before any answer
        // comes back: the registry refuses all three.
        let mut now = t0;
        let mut sent = Vec::new();
        for _ in 0..33 {
            r.reserve(now);
            sent.push(now);
            now += Duration::from_millis(3);
        }
        // The last one's 429 is heard first: 32 sent before it.
        r.throttled(now, sent[32], Some(Duration::from_secs(1)));
        assert!((r.rate().unwrap() - 32.0 * 0.9).abs() < 1e-9);
        // The earliest refused one's 429 follows: 30 were accepted.
        r.throttled(now, sent[30], Some(Duration::from_secs(1)));
        assert!((r.rate().unwrap() - 27.0).abs() < 1e-9);
        // The one between teaches nothing more.
        r.throttled(now, sent[31], Some(Duration::from_secs(1)));
        assert!((r.rate().unwrap() - 27.0).abs() < 1e-9);
        assert_eq!(r.refused(), 3);
    }

    #[test]
    fn a_probe_that_meets_a_429_goes_back_to_the_rate_that_held() {
        let t0 = Instant::now();
        let mut r = RateLearner::new(None);
        r.resume_at(27.0, t0);
        // Five quiet seconds: the probe raises it by a fifth …
        let probe = t0 + PROBE_AFTER;
        r.reserve(probe);
        assert!((r.rate().unwrap() - 32.4).abs() < 1e-9);
        // … a request sent at the raised rate is refused: back to 27, not
        // a fifth under the probe (25.9), so probing does not wear the
        // rate down; and the next probe waits twice as long.
        let sent = probe + Duration::from_millis(100);
        r.reserve(sent);
        r.throttled(sent + Duration::from_millis(2), sent, Some(Duration::from_secs(1)));
        assert_eq!(r.rate(), Some(27.0));
        let back = sent + Duration::from_millis(2);
        r.reserve(back + PROBE_AFTER);
        assert_eq!(r.rate(), Some(27.0));
        r.reserve(back + PROBE_AFTER * 2);
        assert!((r.rate().unwrap() - 32.4).abs() < 1e-9);
        // That probe meets a 429 too: back again; then one at the rate
        // that held lowers it by a fifth.
        let later = back + PROBE_AFTER * 2 + Duration::from_millis(10);
        r.throttled(later, later, None);
        assert!((r.rate().unwrap() - 27.0).abs() < 1e-9);
        let later = later + Duration::from_secs(1);
        r.throttled(later, later, None);
        assert!((r.rate().unwrap() - 27.0 * 0.8).abs() < 1e-9);
    }

    #[test]
    fn a_learned_rate_is_probed_upward_and_the_cap_wins() {
        let t0 = Instant::now();
        let mut r = RateLearner::new(Some(20.0));
        assert_eq!(r.rate(), Some(20.0));
        r.announced(t0, 10, Duration::from_secs(1), 5, None);
        assert!((r.rate().unwrap() - 9.5).abs() < 1e-9);
        // Five quiet seconds: a fifth more.
        r.reserve(t0 + PROBE_AFTER);
        assert!((r.rate().unwrap() - 11.4).abs() < 1e-9);
        // Never past the cap.
        let mut now = t0 + PROBE_AFTER;
        for _ in 0..20 {
            now += PROBE_AFTER;
            r.reserve(now);
        }
        assert_eq!(r.rate(), Some(20.0));
        // A pull quota's hours-long window is not a rate.
        let mut q = RateLearner::new(None);
        q.announced(t0, 100, Duration::from_secs(21600), 50, None);
        assert_eq!(q.rate(), None);
        // Nothing left in a short window: hold until it resets.
        q.announced(t0, 30, Duration::from_secs(1), 0, Some(Duration::from_millis(400)));
        assert_eq!(q.reserve(t0), Duration::from_millis(400));
    }

    /// A registry refusing past `limit` requests in any second (429 with
    /// Retry-After: 1), met by a client with `concurrency` requests in flight
    /// each taking `latency`: the share of requests answered 429.
    fn throttled_share(limit: usize, concurrency: usize, latency: Duration, total: usize) -> (f64, usize) {
        let t0 = Instant::now();
        let mut r = RateLearner::new(None);
        let mut accepted: VecDeque<Instant> = VecDeque::new();
        // Each slot's next free time, and the 429 it is about to hear then
        // (when it was sent): answers are heard in time order, never early.
        let mut slots = vec![t0; concurrency];
        let mut pending: Vec<Option<Instant>> = vec![None; concurrency];
        let (mut done, mut refused, mut sent) = (0usize, 0usize, 0usize);
        while done < total {
            // The slot free earliest hears its answer, then sends next.
            let (i, free) = slots.iter().copied().enumerate().min_by_key(|(_, t)| *t).unwrap();
            if let Some(was_sent) = pending[i].take() {
                r.throttled(free, was_sent, Some(Duration::from_secs(1)));
            }
            let at = free + r.reserve(free);
            sent += 1;
            while accepted
                .front()
                .is_some_and(|t| at.saturating_duration_since(*t) >= Duration::from_secs(1))
            {
                accepted.pop_front();
            }
            let answered = at + latency;
            if accepted.len() >= limit {
                refused += 1;
                pending[i] = Some(at);
            } else {
                accepted.push_back(at);
                done += 1;
            }
            slots[i] = answered;
        }
        (refused as f64 / sent as f64, refused)
    }

    #[test]
    fn few_requests_meet_a_429_at_30_per_second() {
        for (concurrency, latency_ms) in [(4, 2), (8, 5), (8, 30)] {
            let (share, refused) = throttled_share(30, concurrency, Duration::from_millis(latency_ms), 300);
            assert!(
                share <= 0.05,
                "{concurrency} at once, {latency_ms} ms: {refused} refused ({:.1} %)",
                share * 100.0
            );
        }
    }

    #[test]
    fn the_summary_says_what_each_kind_settled_at() {
        let s = PaceSummary {
            host: "r.example:5000".into(),
            kinds: vec![
                KindSummary {
                    kind: Kind::Request,
                    limit: 8,
                    peak: 16,
                    trouble: 0,
                },
                KindSummary {
                    kind: Kind::BlobGet,
                    limit: 4,
                    peak: 4,
                    trouble: 0,
                },
            ],
            learned_rate: Some(27.0),
            refused: 3,
        };
        assert_eq!(
            s.to_string(),
            "r.example:5000: settled at 8 requests at once (up to 16), 4 blob GETs at once; \
             27.0 requests/s learned from the registry (3 answered 429)"
        );
    }

    #[test]
    fn what_a_host_settled_at_is_remembered_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = memory_file(dir.path(), "reg.example:5000");
        assert!(file.ends_with("reg.example_5000.pace"));
        let pace = HostPace::new("reg.example:5000", None, Some(file.clone()));
        // Nothing asked: nothing written.
        pace.remember();
        assert!(!file.exists());
        {
            let mut st = pace.lock();
            st.used[Kind::Request.index()] = true;
            st.kinds[Kind::Request.index()].resume_at(12);
            let now = Instant::now();
            st.rate.throttled(now, now, Some(Duration::from_secs(1)));
        }
        pace.remember();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "requests 12\nrate 1.000\n");
        // The next run starts there.
        let next = HostPace::new("reg.example:5000", None, Some(file.clone()));
        let st = next.lock();
        assert_eq!(st.kinds[Kind::Request.index()].limit(), 12);
        assert!(!st.kinds[Kind::Request.index()].slow_start);
        assert_eq!(st.kinds[Kind::BlobGet.index()].limit(), Kind::BlobGet.initial());
        assert_eq!(st.rate.rate(), Some(1.0));
        drop(st);
        // A damaged file is ignored, line by line.
        let r = Remembered::parse("requests lots\nuploads 999\nrate -3\nrubbish\nblob-gets 3\n");
        assert_eq!(r.limits, [(Kind::Upload, CEILING), (Kind::BlobGet, 3)]);
        assert_eq!(r.rate, None);
    }

    #[tokio::test]
    async fn permits_wait_for_a_free_slot() {
        let pace = HostPace::new("permits.example", None, None);
        assert_eq!(Kind::Upload.initial(), 2);
        let a = pace.acquire(Kind::Upload).await;
        let _b = pace.acquire(Kind::Upload).await;
        // The third waits until one is dropped.
        let p2 = pace.clone();
        let third = tokio::spawn(async move { p2.acquire(Kind::Upload).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap()
            .unwrap();
        drop(c);
        let s = pace.summary().unwrap();
        assert_eq!(s.kinds.len(), 1);
        assert_eq!(s.kinds[0].kind, Kind::Upload);
    }
}

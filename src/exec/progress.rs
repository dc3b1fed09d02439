//! Progress of a run, on stderr: on a terminal, indicatif bars (the run's
//! images and bytes, and one bar per image in flight); otherwise plain lines
//! (one per finished image, and a status line every 10 s while images are in
//! flight); or nothing (`-q`). Never on stdout, which carries results.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::human_size;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing.
    Off,
    /// A line per finished image; with `periodic`, a status line every 10 s.
    Lines { periodic: bool },
    /// Bars on a terminal.
    Bars,
}

/// How often plain status lines are printed.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// How often bars are redrawn from the byte counters.
const REDRAW_EVERY: Duration = Duration::from_millis(120);

struct Active {
    id: u64,
    name: String,
    bar: Option<ProgressBar>,
    bytes: Arc<AtomicU64>,
}

struct Shared {
    active: Mutex<Vec<Active>>,
    /// Bytes of images already finished.
    finished_bytes: AtomicU64,
    done: AtomicUsize,
}

impl Shared {
    fn active(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        // A panic elsewhere must not stop progress from being shown.
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn moved(&self) -> u64 {
        self.finished_bytes.load(Ordering::Relaxed)
            + self
                .active()
                .iter()
                .map(|a| a.bytes.load(Ordering::Relaxed))
                .sum::<u64>()
    }
}

/// The progress of one run of `total` images.
pub struct RunProgress {
    mode: ProgressMode,
    total: usize,
    next_id: AtomicU64,
    shared: Arc<Shared>,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// One image in flight: the copy counts its bytes into `bytes`.
pub struct TargetProgress {
    id: u64,
    pub bytes: Arc<AtomicU64>,
}

impl RunProgress {
    /// Starts showing progress (a redraw or status task runs until `close`).
    pub fn new(mode: ProgressMode, total: usize) -> Self {
        let shared = Arc::new(Shared {
            active: Mutex::new(Vec::new()),
            finished_bytes: AtomicU64::new(0),
            done: AtomicUsize::new(0),
        });
        let (multi, overall) = match mode {
            ProgressMode::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let overall = multi.add(ProgressBar::new(total as u64));
                overall.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                (Some(multi), Some(overall))
            }
            _ => (None, None),
        };
        let ticker = match mode {
            ProgressMode::Bars => overall.clone().map(|overall| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(REDRAW_EVERY);
                    loop {
                        tick.tick().await;
                        for a in shared.active().iter() {
                            if let Some(bar) = &a.bar {
                                bar.set_position(a.bytes.load(Ordering::Relaxed));
                            }
                        }
                        overall.set_message(format!("{} moved", human_size(shared.moved())));
                        overall.tick();
                    }
                })
            }),
            ProgressMode::Lines { periodic: true } => {
                let shared = shared.clone();
                Some(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(STATUS_EVERY);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let names: Vec<String> = shared.active().iter().map(|a| a.name.clone()).collect();
                        if names.is_empty() {
                            continue;
                        }
                        eprintln!(
                            "[{}/{total}] in progress: {} ({} moved)",
                            shared.done.load(Ordering::Relaxed),
                            names.join(", "),
                            human_size(shared.moved())
                        );
                    }
                }))
            }
            _ => None,
        };
        RunProgress {
            mode,
            total,
            next_id: AtomicU64::new(0),
            shared,
            multi,
            overall,
            ticker,
        }
    }

    /// An image starts; `expected_bytes` sizes its bar (0: unknown).
    pub fn start(&self, name: &str, expected_bytes: u64) -> TargetProgress {
        self.start_counting(name, expected_bytes, Arc::new(AtomicU64::new(0)))
    }

    /// An image starts, its bytes counted in `bytes` (by whoever moves them).
    pub fn start_counting(&self, name: &str, expected_bytes: u64, bytes: Arc<AtomicU64>) -> TargetProgress {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(expected_bytes));
            let template = if expected_bytes > 0 {
                "  {prefix} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}"
            } else {
                "  {prefix} {spinner} {binary_bytes} {binary_bytes_per_sec}"
            };
            bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
            bar.set_prefix(name.to_string());
            bar
        });
        self.shared.active().push(Active {
            id,
            name: name.to_string(),
            bar,
            bytes: bytes.clone(),
        });
        TargetProgress { id, bytes }
    }

    /// An image is finished: `line` (its outcome) is printed as `[N/total] line`.
    pub fn finish(&self, t: TargetProgress, line: &str) {
        let n = self.shared.done.fetch_add(1, Ordering::Relaxed) + 1;
        let removed = {
            let mut active = self.shared.active();
            active.iter().position(|a| a.id == t.id).map(|i| active.remove(i))
        };
        self.shared
            .finished_bytes
            .fetch_add(t.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        if let (Some(multi), Some(Active { bar: Some(bar), .. })) = (&self.multi, removed) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
        if let Some(o) = &self.overall {
            o.inc(1);
            o.set_message(format!("{} moved", human_size(self.shared.moved())));
        }
        self.println(&format!("[{n}/{}] {line}", self.total));
    }

    /// A line above the bars (or on its own without them).
    pub fn println(&self, line: &str) {
        match (&self.mode, &self.multi) {
            (ProgressMode::Off, _) => {}
            (_, Some(m)) => {
                if m.println(line).is_err() {
                    eprintln!("{line}");
                }
            }
            (_, None) => eprintln!("{line}"),
        }
    }

    /// Stops the redraw task and removes the bars.
    pub fn close(self) {
        if let Some(t) = &self.ticker {
            t.abort();
        }
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

//! `occy sync FILE --every DURATION`: the service loop. Each round reads
//! the sync file again (a git-sync sidecar may have changed it), plans,
//! applies and checks, then sleeps; a failed round or an invalid sync file
//! is reported (logs, `/readyz`, metrics) and the loop goes on. `--listen`
//! serves `/healthz`, `/readyz` and `/metrics` ([`crate::metrics`]).
//! SIGTERM (and Ctrl-C while sleeping) ends it with exit 0: during a round
//! no new work starts, the transfers under way get [`GRACE`] to finish,
//! and nothing is committed that was not complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sync::{round, SyncArgs};
use super::{report_error, GlobalArgs};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How long transfers under way may go on after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(5);

/// Parses `90s`, `15m`, `1h30m`, `500ms`, `1d` (a number alone is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}: expected a number and a unit, such as 30s, 15m, 1h30m or 500ms");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return positive(Duration::from_secs(n), s);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(digits);
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let seconds = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return Err(bad()),
        };
        if !seconds.is_finite() || seconds > 1e9 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(seconds);
        rest = next;
    }
    positive(total, s)
}

fn positive(d: Duration, s: &str) -> std::result::Result<Duration, String> {
    if d.is_zero() {
        Err(format!("invalid duration {s:?}: it must be more than 0"))
    } else {
        Ok(d)
    }
}

/// Runs rounds until SIGTERM.
pub async fn run(global: &GlobalArgs, args: &SyncArgs, every: Duration) -> Result<i32> {
    // Flags are checked once, before the loop: a usage error is not a round.
    global.registry_options()?;
    let metrics = Arc::new(Metrics::new());
    if let Some(addr) = &args.listen {
        let bound = crate::metrics::serve(metrics.clone(), addr).await?;
        if !global.quiet {
            eprintln!("serving /healthz, /readyz and /metrics on http://{bound}");
        }
    }
    let mut terminate = terminate_signal()?;
    let mut n: u64 = 0;
    loop {
        n += 1;
        let started = Instant::now();
        // Boxed, so that SIGTERM can drop it (and its sinks and spools) before the process ends.
        let mut this = Box::pin(round(global, args, Some(&metrics)));
        let result = tokio::select! {
            r = &mut this => r,
            _ = terminate.recv() => {
                if !global.quiet {
                    eprintln!("SIGTERM: letting the transfers under way finish (at most {}s), committing nothing new", GRACE.as_secs());
                }
                crate::interrupt::drain();
                if tokio::time::timeout(GRACE, &mut this).await.is_err() {
                    // Dropping the round drops its sinks and spools: their
                    // temporary files go; nothing half-made has a final name.
                    crate::interrupt::interrupt();
                }
                drop(this);
                crate::interrupt::settle(Duration::from_secs(2)).await;
                if let Some(path) = &args.metrics_file {
                    metrics.write_file(path)?;
                }
                return Ok(0);
            }
        };
        match &result {
            Ok(code) if !global.quiet => eprintln!(
                "round {n} done in {:.1}s{}; next in {}",
                started.elapsed().as_secs_f64(),
                if *code == 0 { "" } else { " (some targets failed)" },
                human(every)
            ),
            Ok(_) => {}
            Err(e) => {
                report_error(e, global.output_format);
                if !global.quiet {
                    eprintln!("round {n} failed; the loop goes on, next round in {}", human(every));
                }
            }
        }
        if let Some(path) = &args.metrics_file {
            if let Err(e) = metrics.write_file(path) {
                report_error(&e, global.output_format);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = terminate.recv() => return Ok(0),
        }
    }
}

/// `15m`, `90s`, `1h30m`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() > 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A stream of SIGTERMs.
fn terminate_signal() -> Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::invalid(format!("cannot handle SIGTERM: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "s", "5x", "0s", "0", "1h-", "abc", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
    }
}

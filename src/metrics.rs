//! Monitoring of `occy sync`: Prometheus metrics of the last round and
//! counters across rounds (targets, bytes, blobs, round time, sync-file load
//! errors), registry traffic (read from [`crate::registry::stats`]), in the
//! Prometheus text format (0.0.4) for `--metrics-file` and for the small
//! HTTP listener of `--listen`, which also answers `/healthz` and `/readyz`
//! (docs/operations.md lists every metric).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::exec::sync::ApplyReport;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabel {
    how: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    host: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// What `/readyz` answers.
#[derive(Debug, Default)]
struct Readiness {
    /// A round has finished.
    finished: bool,
    /// Why the sync file could not be used, when the last load failed.
    sync_file_error: Option<String>,
}

/// The metrics of one process: a one-shot run or a service loop.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    targets: Family<StatusLabel, Gauge>,
    written: Counter,
    failed: Counter,
    bytes: Counter,
    blobs: Family<HowLabel, Counter>,
    rounds: Family<ResultLabel, Counter>,
    duration: Histogram,
    last_round: Gauge<f64, AtomicU64>,
    last_success: Gauge<f64, AtomicU64>,
    load_errors: Counter,
    sync_file_valid: Gauge,
    requests: Family<RequestLabel, Counter>,
    quota_remaining: Family<HostLabel, Gauge>,
    quota_limit: Family<HostLabel, Gauge>,
    readiness: Mutex<Readiness>,
    /// Serialises the copy of the registry tallies into the counters.
    encoding: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            targets: Family::default(),
            written: Counter::default(),
            failed: Counter::default(),
            bytes: Counter::default(),
            blobs: Family::default(),
            rounds: Family::default(),
            // 0.25 s … about 2.3 h.
            duration: Histogram::new(exponential_buckets(0.25, 2.0, 16)),
            last_round: Gauge::default(),
            last_success: Gauge::default(),
            load_errors: Counter::default(),
            sync_file_valid: Gauge::default(),
            requests: Family::default(),
            quota_remaining: Family::default(),
            quota_limit: Family::default(),
            readiness: Mutex::new(Readiness::default()),
            encoding: Mutex::new(()),
            registry: Registry::default(),
        };
        let info: Family<VersionLabel, Gauge> = Family::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
        registry.register("occy_build_info", "occy's version (always 1)", info);
        registry.register(
            "occy_targets",
            "Targets of the last round by status (written, unchanged, failed)",
            m.targets.clone(),
        );
        registry.register(
            "occy_targets_written",
            "Targets written (created or updated), all rounds",
            m.written.clone(),
        );
        registry.register(
            "occy_targets_failed",
            "Targets that failed, all rounds",
            m.failed.clone(),
        );
        registry.register(
            "occy_bytes",
            "Layer bytes written to destinations, all rounds",
            m.bytes.clone(),
        );
        registry.register(
            "occy_blobs",
            "Layers moved, all rounds: copied (uploaded or written) or mounted (cross-repository)",
            m.blobs.clone(),
        );
        registry.register(
            "occy_rounds",
            "Rounds finished by result: success (every target in place), failure (a target failed or the plan could not be made), invalid (the sync file could not be loaded)",
            m.rounds.clone(),
        );
        registry.register(
            "occy_round_duration_seconds",
            "Time a round took: load, plan, apply, check",
            m.duration.clone(),
        );
        registry.register(
            "occy_last_round_timestamp_seconds",
            "When the last round ended (Unix time)",
            m.last_round.clone(),
        );
        registry.register(
            "occy_last_success_timestamp_seconds",
            "When the last round with every target in place ended (Unix time; 0: none yet)",
            m.last_success.clone(),
        );
        registry.register(
            "occy_sync_file_load_errors",
            "Rounds whose sync file could not be read or was invalid",
            m.load_errors.clone(),
        );
        registry.register(
            "occy_sync_file_valid",
            "1 when the sync file loaded at the last round, else 0",
            m.sync_file_valid.clone(),
        );
        registry.register(
            "occy_registry_requests",
            "Registry requests by host and answer class (2xx, 3xx, 4xx, 5xx; error: no answer)",
            m.requests.clone(),
        );
        registry.register(
            "occy_registry_pull_quota_remaining",
            "Pulls left in the quota a registry announced last (RateLimit-Remaining)",
            m.quota_remaining.clone(),
        );
        registry.register(
            "occy_registry_pull_quota_limit",
            "The pull quota a registry announced last (RateLimit-Limit)",
            m.quota_limit.clone(),
        );
        for status in ["written", "unchanged", "failed"] {
            let _ = m.targets.get_or_create(&StatusLabel { status: status.into() });
        }
        for how in ["copied", "mounted"] {
            let _ = m.blobs.get_or_create(&HowLabel { how: how.into() });
        }
        for result in ["success", "failure", "invalid"] {
            let _ = m.rounds.get_or_create(&ResultLabel { result: result.into() });
        }
        Metrics { registry, ..m }
    }

    /// Records a round that applied its plan.
    pub fn round(&self, report: &ApplyReport, took: Duration) {
        let set = |status: &str, n: usize| {
            self.targets
                .get_or_create(&StatusLabel { status: status.into() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("written", report.written);
        set("unchanged", report.unchanged);
        set("failed", report.failed);
        self.written.inc_by(report.written as u64);
        self.failed.inc_by(report.failed as u64);
        self.bytes.inc_by(report.bytes);
        self.blobs
            .get_or_create(&HowLabel { how: "copied".into() })
            .inc_by(report.layers_copied as u64);
        self.blobs
            .get_or_create(&HowLabel { how: "mounted".into() })
            .inc_by(report.layers_mounted as u64);
        let success = report.exit_code() == 0;
        self.finish(if success { "success" } else { "failure" }, took);
    }

    /// Records a round that loaded its sync file but could not make its plan.
    pub fn round_failed(&self, took: Duration) {
        self.finish("failure", took);
    }

    /// Records a round whose sync file could not be loaded (`why`).
    pub fn load_error(&self, why: &str, took: Duration) {
        self.load_errors.inc();
        self.sync_file_valid.set(0);
        if let Ok(mut r) = self.readiness.lock() {
            // The first line: the file, line and column, and what is wrong.
            r.sync_file_error = Some(why.lines().next().unwrap_or(why).to_string());
        }
        self.finish("invalid", took);
    }

    /// The sync file loaded.
    pub fn loaded(&self) {
        self.sync_file_valid.set(1);
        if let Ok(mut r) = self.readiness.lock() {
            r.sync_file_error = None;
        }
    }

    /// Whether the sync file loaded at the last round.
    pub fn sync_file_valid(&self) -> bool {
        self.sync_file_valid.get() == 1
    }

    fn finish(&self, result: &str, took: Duration) {
        let now = now_seconds();
        self.rounds.get_or_create(&ResultLabel { result: result.into() }).inc();
        self.duration.observe(took.as_secs_f64());
        self.last_round.set(now);
        if result == "success" {
            self.last_success.set(now);
        }
        if let Ok(mut r) = self.readiness.lock() {
            r.finished = true;
        }
    }

    /// `Ok` when a round has finished and the sync file is valid, else why not.
    pub fn ready(&self) -> std::result::Result<(), String> {
        let r = self
            .readiness
            .lock()
            .map_err(|_| "the readiness state is poisoned".to_string())?;
        match (&r.sync_file_error, r.finished) {
            (Some(e), _) => Err(format!("the sync file is invalid: {e}")),
            (None, false) => Err("the first round has not finished".to_string()),
            (None, true) => Ok(()),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let _one_at_a_time = self.encoding.lock();
        for (host, class, n) in crate::registry::stats::requests() {
            let c = self.requests.get_or_create(&RequestLabel {
                host,
                class: class.to_string(),
            });
            let have = c.get();
            if n > have {
                c.inc_by(n - have);
            }
        }
        for (host, q) in crate::registry::stats::quotas() {
            let label = HostLabel { host };
            self.quota_remaining
                .get_or_create(&label)
                .set(i64::try_from(q.remaining).unwrap_or(i64::MAX));
            self.quota_limit
                .get_or_create(&label)
                .set(i64::try_from(q.limit).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; a metric that failed to
            // encode leaves what came before it.
            tracing::warn!("a metric could not be encoded");
        }
        out
    }

    /// Writes the metrics to `path` atomically (a temporary file beside
    /// it, renamed), for node_exporter's textfile collector.
    pub fn write_file(&self, path: &Path) -> Result<()> {
        use std::io::Write as _;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".occy-metrics")
            .tempfile_in(dir)
            .map_err(|e| Error::io("create a file in", dir, e))?;
        tmp.write_all(self.encode().as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| Error::io("write the metrics to", tmp.path(), e))?;
        // Readable by the collector, as a file written by `>` would be.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
        }
        tmp.persist(path)
            .map_err(|e| Error::io("write the metrics to", path, e.error))?;
        Ok(())
    }

    /// The answer to one HTTP request.
    fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, content_type: &str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        };
        let text = "text/plain; charset=utf-8";
        if method != Method::GET && method != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, text, "only GET\n".into());
        }
        match path {
            "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
            "/readyz" => match self.ready() {
                Ok(()) => reply(StatusCode::OK, text, "ready\n".into()),
                Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("not ready: {why}\n")),
            },
            "/metrics" => reply(StatusCode::OK, CONTENT_TYPE, self.encode()),
            "/" => reply(
                StatusCode::OK,
                text,
                "occy sync: /healthz (alive), /readyz (last round finished, sync file valid), /metrics (Prometheus)\n"
                    .into(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                text,
                format!("{path}: not found; try /healthz, /readyz or /metrics\n"),
            ),
        }
    }
}

/// Binds `addr` and serves `/healthz`, `/readyz` and `/metrics` from a task
/// of its own until the process ends; returns the bound address.
pub async fn serve(metrics: Arc<Metrics>, addr: &str) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::usage(format!(
            "--listen {addr}: cannot listen there: {e}; give a free ADDR:PORT such as 127.0.0.1:9090 or 0.0.0.0:9090"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::usage(format!("--listen {addr}: {e}")))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!("--listen: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let r = m.respond(req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!("--listen: connection ended: {e}");
                }
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(written: usize, failed: usize) -> ApplyReport {
        ApplyReport {
            targets: Vec::new(),
            written,
            unchanged: 2,
            failed,
            bytes: 1000,
            layers_copied: 3,
            layers_mounted: 1,
            mounts_declined: 0,
            uploads_duplicated: 0,
            layers_rewritten: 0,
            checks_skipped: 0,
            pruned: Vec::new(),
            prune_failed: Vec::new(),
            archives: Vec::new(),
            archives_failed: Vec::new(),
            seconds: 1.0,
            shard: None,
        }
    }

    fn value(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse::<f64>().unwrap()))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
    }

    #[test]
    fn rounds_add_up_and_the_last_sets_the_gauges() {
        let m = Metrics::new();
        assert!(m.ready().is_err(), "ready before a round");
        m.loaded();
        m.round(&report(4, 0), Duration::from_secs(2));
        m.round(&report(1, 1), Duration::from_secs(1));
        let t = m.encode();
        assert_eq!(value(&t, "occy_targets_written_total "), 5.0);
        assert_eq!(value(&t, "occy_targets_failed_total "), 1.0);
        assert_eq!(value(&t, "occy_targets{status=\"written\"} "), 1.0);
        assert_eq!(value(&t, "occy_targets{status=\"failed\"} "), 1.0);
        assert_eq!(value(&t, "occy_bytes_total "), 2000.0);
        assert_eq!(value(&t, "occy_blobs_total{how=\"copied\"} "), 6.0);
        assert_eq!(value(&t, "occy_rounds_total{result=\"success\"} "), 1.0);
        assert_eq!(value(&t, "occy_rounds_total{result=\"failure\"} "), 1.0);
        assert_eq!(value(&t, "occy_round_duration_seconds_count "), 2.0);
        assert!(value(&t, "occy_last_success_timestamp_seconds ") > 1.7e9);
        assert!(t.contains("# TYPE occy_targets_written_total counter"), "{t}");
        assert!(!t.contains("# EOF"), "Prometheus text, not OpenMetrics: {t}");
        assert!(m.ready().is_ok());
    }

    #[test]
    fn an_invalid_sync_file_is_counted_and_not_ready_until_it_loads() {
        let m = Metrics::new();
        m.loaded();
        m.round(&report(1, 0), Duration::from_secs(1));
        m.load_error("mirror.yaml:3:1: expected a mapping", Duration::from_millis(5));
        let why = m.ready().unwrap_err();
        assert!(why.contains("mirror.yaml:3:1"), "{why}");
        let t = m.encode();
        assert_eq!(value(&t, "occy_sync_file_load_errors_total "), 1.0);
        assert_eq!(value(&t, "occy_sync_file_valid "), 0.0);
        m.loaded();
        assert!(m.ready().is_ok());
    }

    #[test]
    fn http_answers() {
        let m = Metrics::new();
        assert_eq!(m.respond(&Method::GET, "/healthz").status(), StatusCode::OK);
        assert_eq!(
            m.respond(&Method::GET, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(m.respond(&Method::GET, "/metrics").status(), StatusCode::OK);
        assert_eq!(m.respond(&Method::GET, "/nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            m.respond(&Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn the_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("occy.prom");
        let m = Metrics::new();
        m.write_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("occy_build_info{version="), "{text}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left beside it");
    }
}

//! Applies a plan: every target that needs writing is copied (`-J` at a
//! time, `-j` layers each) by the same engine `occy process` uses, with one
//! run-wide record of which registry repository holds which blob, so a layer
//! shared by many images is uploaded once per registry and mounted elsewhere.
//! A failing target does not stop the others. Each written target is then
//! checked (`off`, `fast`, `full`) and recorded, so the next plan finds it
//! unchanged.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::copy::{copy_image, CopyOptions, CopyReport};
use super::progress::{ProgressMode, RunProgress};
use crate::cache::LayerCache;
use crate::check::{verify_written, Mode};
use crate::cli::output::human_size;
use crate::error::{Error, Result};
use crate::image::Digest;
use crate::plan::prune;
use crate::plan::state::{self, WrittenState};
use crate::plan::{chain_record, holds_index, platforms_key, Action, Plan, PlanContext, PlannedTarget};
use crate::reference::Reference;
use crate::sink::registry::BlobLocations;
use crate::sink::{open_sink, SinkOptions};
use crate::source::open_source;

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Targets at once (`-J`).
    pub image_parallel: usize,
    /// Layer transfers per target (`-j`).
    pub parallel: usize,
    pub retries: u32,
    /// The check run on each written target (None: off).
    pub check: Option<Mode>,
    /// Progress on stderr: bars, `[N/total] … complete` lines, or nothing.
    pub progress: ProgressMode,
    /// Keep a state record beside file destinations for the next plan
    /// (`occy sync`; one-shot commands leave nothing beside their outputs).
    pub record: bool,
}

/// What happened to one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetOutcome {
    pub source: String,
    pub destination: String,
    /// `written`, `unchanged` or `failed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<CopyReport>,
    /// The check's result: `fast: ok`, `off`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit code the error maps to (2 for a usage error, else 1).
    #[serde(skip)]
    pub exit_code: i32,
    pub seconds: f64,
}

impl TargetOutcome {
    /// An outcome of `t` with `status` and nothing else known yet.
    fn new(t: &PlannedTarget, status: &'static str) -> Self {
        TargetOutcome {
            source: t.source.clone(),
            destination: t.destination.clone(),
            status,
            digest: None,
            report: None,
            check: None,
            error: None,
            exit_code: 0,
            seconds: 0.0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub targets: Vec<TargetOutcome>,
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Layer bytes read from sources.
    pub bytes: u64,
    pub layers_copied: usize,
    pub layers_mounted: usize,
    /// Tags deleted by `--prune`.
    pub pruned: Vec<String>,
    /// Tags `--prune` could not delete, with why.
    pub prune_failed: Vec<PruneFailure>,
    pub seconds: f64,
}

/// A tag `--prune` could not delete.
#[derive(Debug, Clone, Serialize)]
pub struct PruneFailure {
    pub destination: String,
    pub error: String,
}

impl ApplyReport {
    /// 0 when every target is in place, 1 when some failed.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0 || !self.prune_failed.is_empty())
    }
}

/// Applies `plan`: writes what it says needs writing, in its order.
/// Removes what crashed runs left beside the plan's file destinations
/// (temporaries no live writer holds; see `sink/sweep.rs`) and says at `-v`
/// how much that reclaimed.
async fn sweep_stale_temporaries(plan: &Plan) {
    let mut dests: Vec<Reference> = Vec::new();
    for t in &plan.targets {
        if !matches!(t.action, Action::Failed { .. }) && !dests.contains(&t.target.destination) {
            dests.push(t.target.destination.clone());
        }
    }
    let swept = tokio::task::spawn_blocking(move || {
        let mut total = crate::sink::sweep::Swept::default();
        for d in &dests {
            let s = crate::sink::sweep::sweep_destination(d);
            if s.entries > 0 {
                tracing::debug!(
                    "{d}: removed {} stale temporary file(s), {}",
                    s.entries,
                    human_size(s.bytes)
                );
            }
            total.entries += s.entries;
            total.bytes += s.bytes;
        }
        total
    })
    .await
    .unwrap_or_default();
    if swept.entries > 0 {
        tracing::debug!(
            "reclaimed {} in {} stale temporary file(s) left by interrupted runs",
            human_size(swept.bytes),
            swept.entries
        );
    }
}

pub async fn apply(ctx: &PlanContext, plan: &Plan, opts: &ApplyOptions) -> ApplyReport {
    let started = Instant::now();
    sweep_stale_temporaries(plan).await;
    let locations = BlobLocations::default();
    let to_write = plan.targets.iter().filter(|t| t.action.writes()).count();
    let progress = RunProgress::new(opts.progress, to_write);
    let mut outcomes: Vec<(usize, TargetOutcome)> = stream::iter(plan.targets.iter().enumerate())
        .map(|(i, t)| {
            let locations = locations.clone();
            let progress = &progress;
            async move {
                let outcome = match &t.action {
                    Action::Unchanged => TargetOutcome {
                        digest: t.current.clone(),
                        ..TargetOutcome::new(t, "unchanged")
                    },
                    Action::Failed { error } => TargetOutcome {
                        error: Some(error.clone()),
                        exit_code: 1,
                        ..TargetOutcome::new(t, "failed")
                    },
                    _ => {
                        let shown = progress.start(&t.destination, t.blobs.bytes);
                        let o = write_target(ctx, t, opts, locations, shown.bytes.clone()).await;
                        progress.finish(shown, &progress_line(t, &o));
                        o
                    }
                };
                (i, outcome)
            }
        })
        .buffer_unordered(opts.image_parallel.max(1))
        .collect()
        .await;
    outcomes.sort_by_key(|(i, _)| *i);
    let targets: Vec<TargetOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    let (mut pruned, mut prune_failed) = (Vec::new(), Vec::new());
    for p in &plan.prune {
        match prune::delete(ctx, p).await {
            Ok(()) => {
                progress.println(&format!("[prune] {} deleted ({})", p.destination, p.digest.short()));
                pruned.push(p.destination.clone());
            }
            Err(e) => {
                progress.println(&format!("[prune] {} FAILED: {e}", p.destination));
                prune_failed.push(PruneFailure {
                    destination: p.destination.clone(),
                    error: e.to_string(),
                });
            }
        }
    }
    progress.close();
    let count = |s: &str| targets.iter().filter(|o| o.status == s).count();
    ApplyReport {
        written: count("written"),
        unchanged: count("unchanged"),
        failed: count("failed"),
        bytes: targets.iter().filter_map(|o| o.report.as_ref()).map(|r| r.bytes).sum(),
        layers_copied: targets
            .iter()
            .filter_map(|o| o.report.as_ref())
            .map(|r| r.layers_copied)
            .sum(),
        layers_mounted: targets
            .iter()
            .filter_map(|o| o.report.as_ref())
            .map(|r| r.layers_mounted)
            .sum(),
        seconds: started.elapsed().as_secs_f64(),
        pruned,
        prune_failed,
        targets,
    }
}

/// `name complete (digest, bytes, mounted k of n)`, shown after `[N/total]`.
fn progress_line(t: &PlannedTarget, o: &TargetOutcome) -> String {
    match (&o.report, &o.error) {
        (Some(r), None) => format!(
            "{} complete ({}, {}, mounted {} of {} layers)",
            t.destination,
            r.digest.short(),
            human_size(r.bytes),
            r.layers_mounted,
            r.layers
        ),
        (_, Some(e)) => format!("{} FAILED: {e}", t.destination),
        _ => format!("{} complete", t.destination),
    }
}

async fn write_target(
    ctx: &PlanContext,
    t: &PlannedTarget,
    opts: &ApplyOptions,
    locations: BlobLocations,
    bytes_read: Arc<AtomicU64>,
) -> TargetOutcome {
    let started = Instant::now();
    let mut outcome = TargetOutcome::new(t, "failed");
    match copy_target(ctx, t, opts, locations, bytes_read).await {
        Ok(report) => {
            outcome.digest = Some(report.digest.clone());
            let check = match opts.check {
                None => Ok("off".to_string()),
                Some(mode) => {
                    let tt = &t.target;
                    verify_written(&tt.destination, &tt.name, mode, &ctx.source_options(&tt.destination))
                        .await
                        .map(|_| format!("{}: ok", mode.as_str()))
                }
            };
            match check {
                Ok(c) => {
                    outcome.check = Some(c);
                    outcome.status = "written";
                    record(ctx, t, &report.digest, opts.record);
                }
                Err(e) => {
                    outcome.check = Some("failed".to_string());
                    outcome.error = Some(e.to_string());
                    outcome.exit_code = e.exit_code();
                }
            }
            outcome.report = Some(report);
        }
        Err(e) => {
            outcome.error = Some(e.to_string());
            outcome.exit_code = e.exit_code();
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// Copies one target, reading the source at the digest the plan resolved.
async fn copy_target(
    ctx: &PlanContext,
    t: &PlannedTarget,
    opts: &ApplyOptions,
    locations: BlobLocations,
    bytes_read: Arc<AtomicU64>,
) -> Result<CopyReport> {
    let tt = &t.target;
    let mut source_ref = tt.source.clone();
    if let (Reference::Registry(r), Some(d)) = (&mut source_ref, &t.source_digest) {
        // Exactly what was planned, even if the tag moved since.
        r.digest = Some(d.clone());
    }
    let source = open_source(&source_ref, &ctx.source_options(&source_ref)).await?;
    if let (false, Some(planned)) = (matches!(source_ref, Reference::Registry(_)), &t.source_digest) {
        let root = source.root_manifest().await?;
        if &root.digest != planned {
            return Err(Error::invalid(format!(
                "{} changed since the plan: it holds {}, the plan resolved {planned}",
                tt.source, root.digest
            )));
        }
    }
    let sink_opts = SinkOptions {
        registry: ctx.source_options(&tt.destination).registry,
        blob_locations: locations,
        source: source_ref.as_registry().cloned(),
    };
    let sink = open_sink(&tt.destination, &tt.name, &sink_opts).await?;
    let copy = CopyOptions {
        parallel: opts.parallel,
        platforms: tt.platforms.clone(),
        retries: opts.retries,
        filters: tt.chain.clone(),
        name: tt.name.to_string(),
        cache: ctx.cache.clone(),
        bytes_read: Some(bytes_read),
    };
    let report = copy_image(source.as_ref(), sink.as_ref(), &copy).await?;
    Ok(report)
}

/// Remembers what was written so the next plan finds it unchanged: a state
/// record beside file destinations, the filtered output digest in the cache.
fn record(ctx: &PlanContext, t: &PlannedTarget, output: &Digest, state_record: bool) {
    let tt = &t.target;
    let Some(source_digest) = &t.source_digest else { return };
    if tt.chain.changes_content() {
        if let Some(cache) = &ctx.cache {
            let key = LayerCache::output_key(
                source_digest,
                &tt.chain.hash(),
                &platforms_key(&tt.platforms),
                holds_index(&tt.destination),
            );
            cache.record_output(&key, output);
        }
    }
    if !state_record {
        return;
    }
    if let Some(path) = state::state_path(&tt.destination, &tt.name) {
        let s = WrittenState {
            source: tt.source.to_string(),
            source_digest: source_digest.clone(),
            chain: chain_record(&tt.chain),
            platforms: platforms_key(&tt.platforms),
            output: output.clone(),
        };
        if let Err(e) = state::write(&path, &s) {
            tracing::warn!(
                "{}: written, but its state record could not be saved: {e}",
                tt.destination
            );
        }
    }
}

/// The run's summary as a table, for people.
pub fn summary_text(report: &ApplyReport) -> String {
    let mut rows: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|o| {
            let detail = match (&o.report, &o.error) {
                (_, Some(e)) => e.lines().next().unwrap_or_default().to_string(),
                (Some(r), None) => format!(
                    "{} copied, {} mounted, {} present, {}",
                    r.layers_copied,
                    r.layers_mounted,
                    r.layers_skipped.saturating_sub(r.layers_mounted),
                    human_size(r.bytes)
                ),
                (None, None) => String::new(),
            };
            vec![
                o.status.to_string(),
                o.destination.clone(),
                o.digest
                    .as_ref()
                    .map(|d| d.short().to_string())
                    .unwrap_or_else(|| "-".into()),
                o.check.clone().unwrap_or_else(|| "-".into()),
                detail,
            ]
        })
        .collect();
    rows.extend(
        report
            .pruned
            .iter()
            .map(|d| vec!["pruned".into(), d.clone(), "-".into(), "-".into(), "tag deleted".into()]),
    );
    rows.extend(report.prune_failed.iter().map(|f| {
        vec![
            "failed".into(),
            f.destination.clone(),
            "-".into(),
            "-".into(),
            format!("not pruned: {}", f.error.lines().next().unwrap_or_default()),
        ]
    }));
    let mut out = crate::cli::output::table(&["status", "destination", "digest", "check", "detail"], &rows);
    out.push_str(&format!(
        "\n{} written, {} unchanged, {} failed{}; {} layers copied ({}), {} mounted, in {:.1}s\n",
        report.written,
        report.unchanged,
        report.failed,
        if report.pruned.is_empty() && report.prune_failed.is_empty() {
            String::new()
        } else {
            format!(", {} tags pruned", report.pruned.len())
        },
        report.layers_copied,
        human_size(report.bytes),
        report.layers_mounted,
        Duration::from_secs_f64(report.seconds).as_secs_f64()
    ));
    out
}

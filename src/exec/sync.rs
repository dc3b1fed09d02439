//! Applies a plan: opens the source and sink of every target that needs
//! writing and walks the plan's work graph ([`super::walk`]), the one copy
//! pipeline of `occy sync` and `occy process` alike: each blob fetched once,
//! uploaded once per registry and mounted elsewhere, each layer rewritten
//! once per chain. A failing target does not stop the others. Each written
//! target is then checked (`off`, `fast`, `full`) and recorded, so the next
//! plan finds it unchanged; then `--prune` deletes what it listed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use super::progress::{ProgressMode, RunProgress, TargetProgress};
use super::walk::{walk, AfterCommit, CopyReport, TargetIo, TargetResult, WalkOptions};
use crate::blob_locations::Sighting;
use crate::check::{verify_written, Mode, Verified};
use crate::error::{Error, Result};
use crate::image::{human_size, Digest};
use crate::plan::prune;
use crate::plan::state::{self, WrittenState};
use crate::plan::{chain_record, platforms_key, Action, Plan, PlanContext, PlannedTarget};
use crate::reference::Reference;
use crate::sink::{open_sink, SinkOptions};

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
    /// Who signed the source image, when `verify:` checked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// The exit code the error maps to (2 for a usage error, else 1).
    #[serde(skip)]
    pub exit_code: i32,
    pub seconds: f64,
}

impl TargetOutcome {
    /// An outcome of `t` with `status` and nothing else known yet.
    fn new(t: &PlannedTarget, status: &'static str) -> Self {
        TargetOutcome {
            source: t.source().into_owned(),
            destination: t.destination().into_owned(),
            status,
            digest: None,
            report: None,
            check: None,
            error: None,
            signed_by: t.verification.as_ref().and_then(|v| v.signer.clone()),
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
    /// Layer bytes written to destinations (the sum of the targets').
    pub bytes: u64,
    pub layers_copied: usize,
    pub layers_mounted: usize,
    /// Mounts the registries declined (those blobs were uploaded instead).
    pub mounts_declined: usize,
    /// Blobs another shard of the saved plan was to upload that this shard
    /// uploaded too, the wait for that shard having run out.
    #[serde(skip_serializing_if = "super::walk::is_zero")]
    pub uploads_duplicated: usize,
    /// Layers rewritten by filter chains (each once for the whole run).
    pub layers_rewritten: usize,
    /// Written targets whose check could not run (their `check` says why).
    pub checks_skipped: usize,
    /// Tags deleted by `--prune`.
    pub pruned: Vec<String>,
    /// Tags `--prune` could not delete, with why.
    pub prune_failed: Vec<PruneFailure>,
    /// Transfer archives written (`archive://` destinations), sealed after
    /// every target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<crate::archive::pack::Sealed>,
    /// `archive://` destinations whose archive could not be sealed (what
    /// was written stays staged; the next run resumes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives_failed: Vec<PruneFailure>,
    pub seconds: f64,
    /// The shard this run did (`--shard I/N`), for `occy report`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<super::report::ShardOf>,
}

/// A tag `--prune` could not delete, or an archive not sealed.
#[derive(Debug, Clone, Serialize)]
pub struct PruneFailure {
    pub destination: String,
    pub error: String,
}

impl ApplyReport {
    /// 0 when every target is in place, 1 when some failed.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0 || !self.prune_failed.is_empty() || !self.archives_failed.is_empty())
    }
}

/// What follows each commit: the check, the state record, the progress line.
struct Finisher<'a> {
    ctx: &'a PlanContext,
    plan: &'a Plan,
    opts: &'a ApplyOptions,
    progress: &'a RunProgress,
    counters: &'a HashMap<usize, Arc<AtomicU64>>,
    shown: Mutex<HashMap<usize, TargetProgress>>,
}

#[async_trait]
impl AfterCommit for Finisher<'_> {
    async fn after_commit(&self, target: usize, report: &CopyReport) -> Result<String> {
        let t = &self.plan.targets[target];
        let check = match self.opts.check {
            None => "off".to_string(),
            Some(mode) => {
                let tt = &t.target;
                let opts = self.ctx.source_options(&tt.destination);
                match verify_written(&tt.destination, &tt.name, mode, &opts, &report.written).await? {
                    Verified::Checked => format!("{}: ok", mode.as_str()),
                    Verified::Skipped(why) => format!("{}: skipped ({why})", mode.as_str()),
                }
            }
        };
        record(self.ctx, t, &report.digest, self.opts.record);
        Ok(check)
    }

    fn started(&self, target: usize) {
        let Ok(mut shown) = self.shown.lock() else { return };
        if shown.contains_key(&target) {
            return;
        }
        let (Some(t), Some(counter)) = (self.plan.targets.get(target), self.counters.get(&target)) else {
            return;
        };
        shown.insert(
            target,
            self.progress
                .start_counting(&t.destination(), t.blobs.bytes, counter.clone()),
        );
    }
}

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

/// How long a shard applying a saved plan waits for the shard that uploads
/// a blob both write (seconds, decimals allowed), before it uploads the
/// blob itself: [`DEFAULT_SHARD_WAIT`] unless set (tests shorten it; pods
/// started minutes apart may lengthen it). docs/scale-out.md says why.
pub const SHARD_WAIT_ENV: &str = "OCCY_SHARD_WAIT";

/// Pods started at once reach their first cut blob within seconds of one
/// another (each reads the same plan and checks a like share of targets);
/// a minute covers that with room for slow starts (an image pull), and
/// costs a pod run after its owner has stopped one minute once.
pub const DEFAULT_SHARD_WAIT: Duration = Duration::from_secs(60);

/// The wait [`SHARD_WAIT_ENV`] asks for, else the default (with a warning
/// naming a value that is not a number of seconds).
fn shard_wait(value: Option<&str>) -> Duration {
    let Some(v) = value else { return DEFAULT_SHARD_WAIT };
    match v.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Duration::from_secs_f64(secs),
        _ => {
            tracing::warn!(
                "{SHARD_WAIT_ENV}={v:?} is not a number of seconds from 0 to 86400; waiting {}s for other shards' uploads",
                DEFAULT_SHARD_WAIT.as_secs()
            );
            DEFAULT_SHARD_WAIT
        }
    }
}

/// Applies `plan`: writes what it says needs writing.
pub async fn apply(ctx: &PlanContext, plan: &Plan, opts: &ApplyOptions) -> ApplyReport {
    let started = Instant::now();
    sweep_stale_temporaries(plan).await;
    // A one-shot command shows targets that failed to resolve among the
    // rest (a sync showed them in its plan).
    let shows = |t: &PlannedTarget| t.action.writes() || (ctx.write_all && matches!(t.action, Action::Failed { .. }));
    let to_write = plan.targets.iter().filter(|t| shows(t)).count();
    let progress = RunProgress::new(opts.progress, to_write);
    let mut io: HashMap<usize, TargetIo> = HashMap::new();
    let mut failed: HashMap<usize, Error> = HashMap::new();
    let mut counters: HashMap<usize, Arc<AtomicU64>> = HashMap::new();
    for (i, t) in plan.targets.iter().enumerate() {
        if !t.action.writes() {
            continue;
        }
        if !plan.graph.targets.contains_key(&i) {
            failed.insert(
                i,
                Error::invalid(format!("{} was not resolved by the plan", t.source())),
            );
            continue;
        }
        let counter = Arc::new(AtomicU64::new(0));
        match open_target(ctx, t, counter.clone()).await {
            Ok(x) => {
                counters.insert(i, counter);
                io.insert(i, x);
            }
            Err(e) => {
                failed.insert(i, e);
            }
        }
    }
    let finisher = Finisher {
        ctx,
        plan,
        opts,
        progress: &progress,
        counters: &counters,
        shown: Mutex::new(HashMap::new()),
    };
    let walk_opts = WalkOptions {
        image_parallel: opts.image_parallel,
        parallel: opts.parallel,
        retries: opts.retries,
        cache: ctx.cache.clone(),
        shard_wait: shard_wait(std::env::var(SHARD_WAIT_ENV).ok().as_deref()),
    };
    let mut results = walk(&plan.graph, &io, &walk_opts, &finisher).await;
    drop(io);
    for pace in crate::registry::RegistryClient::pace_summaries() {
        tracing::debug!("{pace}");
    }
    crate::registry::RegistryClient::remember_paces();
    let mut shown = finisher.shown.into_inner().unwrap_or_default();
    let mut targets: Vec<TargetOutcome> = Vec::with_capacity(plan.targets.len());
    for (i, t) in plan.targets.iter().enumerate() {
        let outcome = match &t.action {
            Action::Unchanged => TargetOutcome {
                digest: t.current.clone(),
                ..TargetOutcome::new(t, "unchanged")
            },
            Action::Failed { error } => {
                let o = TargetOutcome {
                    error: Some(error.clone()),
                    exit_code: 1,
                    ..TargetOutcome::new(t, "failed")
                };
                if shows(t) {
                    let p = progress.start(&t.destination(), 0);
                    progress.finish(p, &progress_line(t, &o));
                }
                o
            }
            _ => {
                let result = match failed.remove(&i) {
                    Some(e) => TargetResult::Failed { error: e },
                    None => results.remove(&i).unwrap_or(TargetResult::Failed {
                        error: Error::invalid("the target was not walked"),
                    }),
                };
                let o = outcome_of(t, result, started);
                let line = progress_line(t, &o);
                match shown.remove(&i) {
                    Some(p) => progress.finish(p, &line),
                    None => {
                        let p = progress.start(&t.destination(), 0);
                        progress.finish(p, &line);
                    }
                }
                o
            }
        };
        targets.push(outcome);
    }
    if let Some(cache) = &ctx.cache {
        cache.blob_locations().record(sightings(plan, &targets)).await;
    }
    let (mut pruned, mut prune_failed) = (Vec::new(), Vec::new());
    for p in &plan.prune {
        if crate::interrupt::is_draining() {
            break;
        }
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
    let (archives, archives_failed) = seal_archives(plan, &progress).await;
    progress.close();
    let count = |s: &str| targets.iter().filter(|o| o.status == s).count();
    let reports = || targets.iter().filter_map(|o| o.report.as_ref());
    ApplyReport {
        written: count("written"),
        unchanged: count("unchanged"),
        failed: count("failed"),
        bytes: reports().map(|r| r.bytes).sum(),
        layers_copied: reports().map(|r| r.layers_copied).sum(),
        layers_mounted: reports().map(|r| r.layers_mounted).sum(),
        uploads_duplicated: reports().map(|r| r.uploads_duplicated).sum(),
        mounts_declined: reports().map(|r| r.mounts_declined).sum(),
        layers_rewritten: plan.graph.rewrites(),
        checks_skipped: targets
            .iter()
            .filter(|o| o.check.as_deref().is_some_and(|c| c.contains(": skipped")))
            .count(),
        seconds: started.elapsed().as_secs_f64(),
        pruned,
        prune_failed,
        archives,
        archives_failed,
        targets,
        shard: None,
    }
}

/// Seals the staging layout of each `archive://` destination into its next
/// archive (nothing staged: no archive), after every target is done.
async fn seal_archives(plan: &Plan, progress: &RunProgress) -> (Vec<crate::archive::pack::Sealed>, Vec<PruneFailure>) {
    let mut dirs: Vec<(std::path::PathBuf, Option<u64>, bool)> = Vec::new();
    // (A target that failed to expand names its source as its destination.)
    for t in plan
        .targets
        .iter()
        .filter(|t| !matches!(t.action, Action::Failed { .. }))
    {
        if let Reference::Archive {
            path,
            volume_size,
            full,
        } = &t.target.destination
        {
            if !dirs.iter().any(|(p, ..)| p == path) {
                dirs.push((path.clone(), *volume_size, *full));
            }
        }
    }
    let (mut sealed, mut failed) = (Vec::new(), Vec::new());
    for (dir, volume_size, full) in dirs {
        let d = dir.clone();
        let result = tokio::task::spawn_blocking(move || crate::archive::pack::seal(&d, volume_size, full))
            .await
            .map_err(|e| Error::invalid(format!("sealing task failed: {e}")))
            .and_then(|r| r);
        match result {
            Ok(Some(s)) => {
                progress.println(&format!(
                    "[archive] wrote {}: {} images, {} referrers, {} in {} volume(s)",
                    s.path.display(),
                    s.images,
                    s.referrers,
                    human_size(s.bytes),
                    s.volumes
                ));
                sealed.push(s);
            }
            Ok(None) => progress.println(&format!(
                "[archive] archive://{}: nothing new to carry; no archive written",
                dir.display()
            )),
            Err(e) => {
                progress.println(&format!("[archive] archive://{} FAILED: {e}", dir.display()));
                failed.push(PruneFailure {
                    destination: format!("archive://{}", dir.display()),
                    error: e.to_string(),
                });
            }
        }
    }
    (sealed, failed)
}

/// Where this run saw blobs on registries, for later runs to mount from
/// (`crate::blob_locations`): every blob of a registry source the plan
/// resolved, and every blob of an image written to a registry.
fn sightings(plan: &Plan, outcomes: &[TargetOutcome]) -> Vec<Sighting> {
    let mut seen: HashSet<Sighting> = HashSet::new();
    for (t, o) in plan.targets.iter().zip(outcomes) {
        if let (Reference::Registry(r), Some(resolved), false) =
            (&t.target.source, &t.resolved, matches!(t.action, Action::Failed { .. }))
        {
            for img in &resolved.images {
                let blobs = img.manifest.layers.iter().chain(std::iter::once(&img.manifest.config));
                seen.extend(blobs.map(|b| Sighting {
                    host: r.host.clone(),
                    repository: r.repository.clone(),
                    digest: b.digest.clone(),
                }));
            }
        }
        if let (Reference::Registry(r), Some(report)) = (&t.target.destination, &o.report) {
            seen.extend(report.blobs.iter().map(|d| Sighting {
                host: r.host.clone(),
                repository: r.repository.clone(),
                digest: d.clone(),
            }));
        }
    }
    seen.into_iter().collect()
}

/// The outcome of one walked target.
fn outcome_of(t: &PlannedTarget, result: TargetResult, started: Instant) -> TargetOutcome {
    let mut outcome = TargetOutcome::new(t, "failed");
    match result {
        TargetResult::Done { report, check } => {
            outcome.digest = Some(report.digest.clone());
            outcome.check = Some(check);
            outcome.status = "written";
            outcome.report = Some(report);
        }
        TargetResult::Failed { error } => {
            outcome.exit_code = error.exit_code();
            outcome.error = Some(error.to_string());
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

/// `name complete (digest, bytes, mounted k of n)`, shown after `[N/total]`.
fn progress_line(t: &PlannedTarget, o: &TargetOutcome) -> String {
    let line = progress_text(t, o);
    match (&o.signed_by, &o.error) {
        (Some(who), None) => format!("{line}; signed by {who}"),
        _ => line,
    }
}

fn progress_text(t: &PlannedTarget, o: &TargetOutcome) -> String {
    match (&o.report, &o.error) {
        (Some(r), None) => format!(
            "{} complete ({}, {}, mounted {} of {} layers)",
            t.destination(),
            r.digest.short(),
            human_size(r.bytes),
            r.layers_mounted,
            r.layers
        ),
        (_, Some(e)) => format!("{} FAILED: {e}", t.destination()),
        _ => format!("{} complete", t.destination()),
    }
}

/// Opens what one target reads and writes: the source at the digest the
/// plan resolved (the plan's own reading of it for archives, layouts and
/// daemons), and the sink.
async fn open_target(ctx: &PlanContext, t: &PlannedTarget, bytes_read: Arc<AtomicU64>) -> Result<TargetIo> {
    let tt = &t.target;
    let resolved = t
        .resolved
        .clone()
        .ok_or_else(|| Error::invalid(format!("{} was not resolved by the plan", tt.source)))?;
    let mut source_ref = tt.source.clone();
    if let (Reference::Registry(r), Some(d)) = (&mut source_ref, &t.source_digest) {
        // Exactly what was planned, even if the tag moved since.
        r.digest = Some(d.clone());
    }
    let source = ctx
        .memo
        .open_source(&source_ref, &ctx.source_options(&source_ref))
        .await?;
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
    };
    let sink = open_sink(&tt.destination, &tt.name, &sink_opts).await?;
    Ok(TargetIo {
        source,
        sink,
        resolved,
        chain: tt.chain.clone(),
        platforms: tt.platforms.clone(),
        name: tt.name.to_string(),
        bytes_read,
    })
}

/// Remembers what was written so the next plan finds it unchanged: a state
/// record beside file destinations, the output digest in the cache (for a
/// filtered target, and for a copy from a registry, whose next plan then
/// needs only HEADs: see `plan/quick.rs`).
fn record(ctx: &PlanContext, t: &PlannedTarget, output: &Digest, state_record: bool) {
    let tt = &t.target;
    let Some(source_digest) = &t.source_digest else { return };
    if tt.chain.changes_content() || matches!(tt.source, crate::reference::Reference::Registry(_)) {
        if let Some(cache) = &ctx.cache {
            cache.record_output(&crate::plan::output_key(tt, source_digest), output);
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

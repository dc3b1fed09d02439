//! `occy sync FILE`: plan (and with `--plan`, only show) then apply a sync
//! file; `--plan --out` saves the plan and `--apply` carries it out exactly;
//! `--shard I/N` does one shard of it and `--plan --shards N` shows the shards;
//! `--every` runs it as a service ([`super::service`]), `--metrics-file`
//! writes what a run did for Prometheus.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::{GlobalArgs, OutputFormat};
use crate::cache::LayerCache;
use crate::check::Mode;
use crate::cli::output::summary_text;
use crate::error::{Error, Result};
use crate::exec::report::ShardOf;
use crate::exec::sync::{apply, ApplyOptions};
use crate::filter::parse_compression;
use crate::metrics::Metrics;
use crate::plan::shard::{self, ShardArg, Sharding};
use crate::plan::{self, render, PlanContext, SavedPlan};
use crate::spec::model::CheckSetting;

/// `-J` when neither the command line nor the sync file says: a cap, not a
/// setting to tune (each registry's pace is found as the run goes, see
/// [`crate::registry::pace`]).
pub const DEFAULT_IMAGE_PARALLEL: u16 = 8;
/// `-j` when neither says: a cap likewise.
pub const DEFAULT_PARALLEL: u16 = 8;

/// The post-run check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckArg {
    Off,
    Fast,
    Full,
}

/// Arguments of `occy sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The sync file: YAML, or TOML when it ends in .toml
    #[arg(required_unless_present = "apply")]
    pub file: Option<PathBuf>,

    /// Show what would change and change nothing
    #[arg(long)]
    pub plan: bool,

    /// With --plan: also save the plan as JSON, for --apply
    #[arg(long, value_name = "PLAN.json", requires = "plan")]
    pub out: Option<PathBuf>,

    /// Apply a saved plan exactly (its digests are pinned)
    ///
    /// Refused if the sync file changed since the plan was made.
    #[arg(long, value_name = "PLAN.json", conflicts_with = "plan")]
    pub apply: Option<PathBuf>,

    /// With --plan: exit 0 when nothing is to do, 3 when changes are pending
    ///
    /// And 1 on errors: a pull-request check.
    #[arg(long, requires = "plan")]
    pub detailed_exitcode: bool,

    /// At most N images at once (default: the file's image_parallel, else 8)
    ///
    /// [env: OCCY_IMAGE_PARALLEL]
    #[arg(short = 'J', long, value_name = "N", env = "OCCY_IMAGE_PARALLEL", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub image_parallel: Option<u16>,

    /// At most N layer transfers per image (default: the file's parallel, else 8)
    ///
    /// [env: OCCY_PARALLEL]
    #[arg(short = 'j', long, value_name = "N", env = "OCCY_PARALLEL", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: Option<u16>,

    /// Check written targets: off, fast or full (default: the file's, else fast)
    #[arg(long, value_enum, value_name = "MODE", hide_possible_values = true)]
    pub check: Option<CheckArg>,

    /// Only targets whose source or destination matches this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<String>,

    /// Also delete registry tags the sync file no longer selects
    ///
    /// Only in the registry repositories the file syncs to; --plan lists them first.
    #[arg(long, conflicts_with = "only")]
    pub prune: bool,

    /// Only shard I of N (from 0; auto/N: I from JOB_COMPLETION_INDEX)
    ///
    /// auto/N suits Kubernetes Indexed Jobs. Images sharing layers stay in one
    /// shard. Not with --prune: a shard does not see every tag the file keeps.
    #[arg(long, value_name = "I/N", value_parser = ShardArg::parse, conflicts_with_all = ["shards", "prune"])]
    pub shard: Option<ShardArg>,

    /// With --plan: show which of N shards each target is in
    ///
    /// With each shard's bytes and the bytes shards share (-O json for a CI matrix).
    #[arg(long, value_name = "N", requires = "plan", value_parser = shard::parse_count, conflicts_with = "prune")]
    pub shards: Option<usize>,

    /// A service: a round every DURATION (30s, 15m), re-reading the sync file
    ///
    /// A round loads the sync file, plans, applies and checks, then sleeps
    /// DURATION; a failed round (or an invalid sync file) does not end the
    /// loop. SIGTERM lets the transfers under way finish (at most 5 s),
    /// commits nothing new and exits 0.
    #[arg(long, value_name = "DURATION", value_parser = super::service::parse_duration, conflicts_with_all = ["plan", "apply"])]
    pub every: Option<std::time::Duration>,

    /// With --every: serve /healthz, /readyz and /metrics on ADDR:PORT
    #[arg(long, value_name = "ADDR:PORT", requires = "every")]
    pub listen: Option<String>,

    /// Write the run's metrics to PATH (Prometheus text format, atomically)
    ///
    /// For node_exporter's textfile collector; with --every, after each round.
    #[arg(long, value_name = "PATH", conflicts_with = "plan")]
    pub metrics_file: Option<PathBuf>,

    /// Also write the run's JSON report to PATH (atomically), for occy report
    ///
    /// Whatever -O says: a container without a shell cannot redirect
    /// stdout. In a Kubernetes Indexed Job:
    /// --report /reports/shard-$(JOB_COMPLETION_INDEX).json
    #[arg(long, value_name = "PATH", conflicts_with = "plan")]
    pub report: Option<PathBuf>,
}

/// Runs `occy sync`: one round, or with `--every` the service loop.
pub async fn run(global: &GlobalArgs, args: &SyncArgs) -> Result<i32> {
    if let Some(every) = args.every {
        return super::service::run(global, args, every).await;
    }
    let Some(path) = &args.metrics_file else {
        return round(global, args, None).await;
    };
    let metrics = Metrics::new();
    let result = round(global, args, Some(&metrics)).await;
    metrics.write_file(path)?;
    result
}

/// One round: load the sync file, plan, and show the plan or apply it;
/// what it did goes to `metrics` too.
pub async fn round(global: &GlobalArgs, args: &SyncArgs, metrics: Option<&Metrics>) -> Result<i32> {
    let started = std::time::Instant::now();
    let loaded = load_and_plan(global, args, metrics, started).await;
    if let (Err(e), Some(m)) = (&loaded, metrics) {
        match e {
            Error::SyncFile(_) => m.load_error(&e.to_string(), started.elapsed()),
            // Counted by load_and_plan when the file could not be loaded.
            _ if m.sync_file_valid() => m.round_failed(started.elapsed()),
            _ => {}
        }
    }
    let (ctx, plan, settings, base) = loaded?;
    finish_round(global, args, metrics, started, ctx, plan, settings, base).await
}

/// Loads the sync file and makes the plan.
async fn load_and_plan(
    global: &GlobalArgs,
    args: &SyncArgs,
    metrics: Option<&Metrics>,
    started: std::time::Instant,
) -> Result<(
    PlanContext,
    plan::Plan,
    crate::spec::Settings,
    crate::registry::RegistryOptions,
)> {
    let sharding = match (args.shard, args.shards) {
        (Some(arg), _) => {
            let job_index = std::env::var_os(shard::JOB_INDEX_ENV).map(|v| v.to_string_lossy().into_owned());
            Some(Sharding::Run(arg.resolve(job_index.as_deref())?))
        }
        (None, Some(n)) => Some(Sharding::Assign(n)),
        (None, None) => None,
    };
    let mut saved = args.apply.as_deref().map(SavedPlan::load).transpose()?;
    if let (Some(saved), Some(Sharding::Run(s))) = (saved.as_mut(), sharding) {
        // A shard of a plan that saved its assignment keeps its own targets
        // and work only: the others are neither resolved nor compared.
        shard::keep_saved_shard(saved, s);
    }
    let file = match (&args.file, &saved) {
        (Some(f), _) => f.clone(),
        (None, Some(s)) => PathBuf::from(&s.sync_file),
        (None, None) => return Err(Error::usage("occy sync needs a sync file (or --apply PLAN.json)")),
    };
    let mut spec = match crate::spec::load(&file) {
        Ok(spec) => spec,
        Err(e) => {
            if let (Some(m), false) = (metrics, matches!(e, Error::SyncFile(_))) {
                m.load_error(&e.to_string(), started.elapsed());
            }
            return Err(e);
        }
    };
    if let Some(m) = metrics {
        m.loaded();
    }
    if let Some(s) = &saved {
        if s.sync_file_sha256 != spec.hash {
            return Err(Error::usage(format!(
                "{} changed since the plan {} was made: its sha256 is now {}, the plan was made from {}; make a new plan with --plan --out",
                file.display(),
                args.apply.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                spec.hash,
                s.sync_file_sha256
            )));
        }
    }
    if let Some(c) = global.compression.as_deref() {
        let c = parse_compression(c)?;
        for e in &mut spec.entries {
            e.chain.compression = Some(c);
        }
    }
    let mut base = global.registry_options()?;
    if base.rate_limit.is_none() {
        base.rate_limit = spec.settings.rate_limit.filter(|r| *r > 0.0);
    }
    if global.retries == 3 {
        if let Some(r) = spec.settings.retries {
            base.retries = r;
        }
    }
    let only = args
        .only
        .iter()
        .map(|g| {
            globset::Glob::new(g)
                .map(|g| g.compile_matcher())
                .map_err(|e| Error::usage(format!("invalid --only pattern {g:?}: {}", e.kind())))
        })
        .collect::<Result<Vec<_>>>()?;
    let settings = spec.settings.clone();
    let ctx = PlanContext {
        spec: Arc::new(spec),
        base: base.clone(),
        cache: if global.no_cache {
            None
        } else {
            LayerCache::open(global.cache_dir.as_deref())
        },
        only,
        pinned: saved,
        write_all: false,
        prune: args.prune,
        sharding,
        memo: Default::default(),
        shown_only: args.plan,
    };
    let plan = plan::build(&ctx).await?;
    if let (Some(saved), Some(path)) = (&ctx.pinned, &args.apply) {
        // The saved work, node for node, or nothing: a destination that
        // changed since the plan (a blob now there, a tag moved) makes
        // other work than the reviewer saw.
        // A shard does its share of the saved graph: its nodes must be
        // the saved ones, but the other shards' nodes are not missing.
        let differences = saved.differences(&plan.graph, plan.shard.is_none(), 5);
        if !differences.is_empty() {
            return Err(Error::usage(format!(
                "the plan {} no longer matches the destinations, so applying it would do other work than it shows:\n  {}\nmake a new plan with --plan --out {}",
                path.display(),
                differences.join("\n  "),
                path.display()
            )));
        }
    }
    Ok((ctx, plan, settings, base))
}

/// Shows or applies the plan of a round.
#[allow(clippy::too_many_arguments)]
async fn finish_round(
    global: &GlobalArgs,
    args: &SyncArgs,
    metrics: Option<&Metrics>,
    started: std::time::Instant,
    ctx: PlanContext,
    plan: plan::Plan,
    settings: crate::spec::Settings,
    base: crate::registry::RegistryOptions,
) -> Result<i32> {
    let colour = global.colour_stdout();

    // A shard whose partition missed some source's layers may disagree with
    // the other shards: it does its part but does not report success.
    let shard_unsure = plan.shard.as_ref().is_some_and(|s| !s.failed_elsewhere.is_empty());
    if let Some(s) = &plan.shard {
        if !global.quiet {
            eprintln!("{}", shard::summary_line(s));
            for f in &s.failed_elsewhere {
                eprintln!(
                    "error: shard {} cannot be sure of its targets without the layers of {f}",
                    s.shard
                );
            }
        }
    }

    if args.plan {
        match (&plan.assignment, global.output_format) {
            (Some(a), format) => {
                let r = shard::report(&plan, a);
                match format {
                    OutputFormat::Text | OutputFormat::Github => print!("{}", shard::text(&r)),
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                    OutputFormat::Markdown => print!("{}", shard::markdown(&r)),
                    OutputFormat::Dot => print!("{}", plan.graph.dot(&plan.targets)),
                }
            }
            (None, OutputFormat::Text | OutputFormat::Github) => print!("{}", render::text(&plan, colour)),
            // Streamed: a plan of 10,000 tags is tens of MB of JSON.
            (None, OutputFormat::Json) => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                serde_json::to_writer_pretty(&mut out, &plan)?;
                writeln!(out)
                    .and_then(|_| out.flush())
                    .map_err(|e| Error::io("write the plan to", std::path::Path::new("standard output"), e))?;
            }
            (None, OutputFormat::Markdown) => print!("{}", render::markdown(&plan)),
            (None, OutputFormat::Dot) => print!("{}", plan.graph.dot(&plan.targets)),
        }
        if let Some(out) = &args.out {
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create a file in", dir, e))?;
            serde_json::to_writer_pretty(&mut tmp, &plan)?;
            tmp.persist(out)
                .map_err(|e| Error::io("write the plan to", out, e.error))?;
            if !global.quiet {
                eprintln!(
                    "plan saved to {}; apply it with: occy sync --apply {}",
                    out.display(),
                    out.display()
                );
            }
        }
        let code = if plan.has_failures() || shard_unsure {
            1
        } else if args.detailed_exitcode && plan.has_changes() {
            3
        } else {
            0
        };
        return Ok(code);
    }

    if !global.quiet {
        for line in render::quota_lines(&plan) {
            eprintln!("{line}");
        }
        eprintln!("{}", render::summary_line(&plan));
        for line in plan.graph.awaited_lines() {
            eprintln!("{line}");
        }
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
        for t in &plan.targets {
            if let plan::Action::Failed { error } = &t.action {
                eprintln!("error: {} → {}: {error}", t.source(), t.destination());
            }
        }
    }
    let check = match args.check {
        Some(CheckArg::Off) => None,
        Some(CheckArg::Fast) => Some(Mode::Fast),
        Some(CheckArg::Full) => Some(Mode::Full),
        None => match settings.check {
            Some(CheckSetting::Off) => None,
            Some(CheckSetting::Full) => Some(Mode::Full),
            Some(CheckSetting::Fast) | None => Some(Mode::Fast),
        },
    };
    let opts = ApplyOptions {
        image_parallel: args
            .image_parallel
            .or(settings.image_parallel)
            .unwrap_or(DEFAULT_IMAGE_PARALLEL) as usize,
        parallel: args.parallel.or(settings.parallel).unwrap_or(DEFAULT_PARALLEL) as usize,
        retries: base.retries,
        check,
        progress: global.progress_mode(true),
        record: true,
    };
    let mut report = apply(&ctx, &plan, &opts).await;
    report.shard = plan.shard.as_ref().map(|s| ShardOf {
        index: s.index,
        count: s.count,
    });
    if let Some(m) = metrics {
        m.round(&report, started.elapsed());
    }
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            if report.written == 0
                && report.failed == 0
                && report.pruned.is_empty()
                && report.prune_failed.is_empty()
                && report.archives.is_empty()
                && report.archives_failed.is_empty()
            {
                if !global.quiet {
                    eprintln!("Nothing to do: {} targets up to date.", report.unchanged);
                }
            } else {
                print!("{}", summary_text(&report));
            }
        }
    }
    Ok(report.exit_code().max(i32::from(shard_unsure)))
}

/// Writes the run's JSON report through a temporary file beside `path`,
/// renamed into place (readable by others, as a file written by `>`).
fn write_report(path: &std::path::Path, report: &crate::exec::sync::ApplyReport) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create a file in", dir, e))?;
    serde_json::to_writer_pretty(tmp.as_file_mut(), report)?;
    tmp.as_file_mut()
        .write_all(b"\n")
        .map_err(|e| Error::io("write the report to", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path)
        .map_err(|e| Error::io("write the report to", path, e.error))?;
    Ok(())
}

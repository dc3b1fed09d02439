//! `occy process SRC DST`: copy an image from a source to a destination
//! through the sync engine (a one-entry plan in which every target is
//! written), printing a one-line summary on stderr (or a JSON report on
//! stdout). A source that names many images (`quay://org/*:tag`,
//! `registry://host/org/*:tag`) is expanded and copied `-J` at a time, with
//! a `[N/total] … complete` line per image and a summary table.

use std::sync::Arc;

use clap::Args;

use super::{GlobalArgs, OutputFormat, PlatformArgs};
use crate::cache::LayerCache;
use crate::check::Mode;
use crate::cli::output::human_size;
use crate::cli::output::summary_text;
use crate::error::{Error, Result};
use crate::exec::sync::{apply, ApplyOptions, ApplyReport, TargetOutcome};
use crate::filter::{parse_compression, FilterChain};
use crate::plan::{self, PlanContext};
use crate::reference::Reference;
use crate::spec::command_line::{names_many, OneShot};
use crate::spec::VerifyKeys;

/// Arguments of `occy process`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Source reference
    #[arg(help = format!("Source reference ({}); a glob or quay:// names many images", crate::reference::source_schemes()))]
    pub source: String,

    /// Destination reference
    #[arg(help = format!("Destination reference ({}); {{name}} and {{tag}} template many", crate::reference::destination_schemes()))]
    pub destination: String,

    /// At most N layer transfers at once (default 8)
    ///
    /// [env: OCCY_PARALLEL]
    #[arg(short = 'j', long, value_name = "N", default_value_t = super::sync::DEFAULT_PARALLEL, hide_default_value = true, env = "OCCY_PARALLEL", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    /// At most N images at once, when the source names many (default 8)
    ///
    /// [env: OCCY_IMAGE_PARALLEL]
    #[arg(short = 'J', long, value_name = "N", default_value_t = super::sync::DEFAULT_IMAGE_PARALLEL, hide_default_value = true, env = "OCCY_IMAGE_PARALLEL", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub image_parallel: u16,

    #[command(flatten)]
    pub platforms: PlatformArgs,

    /// A filter each layer goes through, in the order given (repeatable)
    ///
    /// normalize-timestamps[:ts=N,config=true], exclude:pattern=GLOB[,pattern=GLOB],
    /// search:pattern=P[,regex=true], inspect:file=PATH, recompress:format=gzip|zstd[,level=N]
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,

    /// After writing, run the full check (every layer read back)
    #[arg(long, conflicts_with = "no_verify")]
    pub verify_full: bool,

    /// Do not check the destination after writing
    ///
    /// By default the fast check runs on it: manifests, configs, blob existence.
    #[arg(long)]
    pub no_verify: bool,

    /// Copy only an image with a valid cosign signature by this public key (PEM; repeatable: any one)
    ///
    /// The signature is read from the source's sha256-<hex>.sig tag (registry:// and oci://
    /// sources), as `verify:` in a sync file does.
    #[arg(long = "verify-key", value_name = "PATH")]
    pub verify_keys: Vec<std::path::PathBuf>,
}

/// Runs `occy process`.
pub async fn run(global: &GlobalArgs, args: &ProcessArgs) -> Result<i32> {
    let src_ref = Reference::parse(&args.source)?;
    if Reference::parse(&args.destination).is_ok_and(|d| d == src_ref) {
        return Err(Error::usage(format!("source and destination are the same: {src_ref}")));
    }
    let compression = global.compression.as_deref().map(parse_compression).transpose()?;
    let keys = super::info::load_keys(&args.verify_keys)?;
    if !keys.is_empty()
        && !matches!(
            src_ref,
            Reference::Registry(_) | Reference::Quay { .. } | Reference::Oci { .. }
        )
    {
        return Err(Error::usage(format!(
            "--verify-key needs a registry://, quay:// or oci:// source, not {}: cosign signatures are tags beside the image",
            src_ref.scheme()
        )));
    }
    let mut spec = OneShot {
        command: "occy process",
        source: &args.source,
        destination: Some(&args.destination),
        chain: FilterChain::parse(&args.filters, compression)?,
        filter_texts: &args.filters,
        platforms: args.platforms.selection()?,
    }
    .spec()?;
    if !keys.is_empty() {
        for e in &mut spec.entries {
            e.verify = Some(VerifyKeys {
                keys: keys.clone(),
                ..Default::default()
            });
        }
    }
    let many = names_many(&src_ref);
    let ctx = PlanContext {
        spec: Arc::new(spec),
        base: global.registry_options()?,
        cache: if global.no_cache {
            None
        } else {
            LayerCache::open(global.cache_dir.as_deref())
        },
        only: Vec::new(),
        pinned: None,
        write_all: true,
        prune: false,
        sharding: None,
        memo: Default::default(),
        shown_only: false,
    };
    let plan = plan::build(&ctx).await?;
    if plan.targets.is_empty() {
        if !global.quiet {
            eprintln!("No images found matching {src_ref}");
        }
        return Ok(0);
    }
    if !global.quiet {
        for w in &plan.warnings {
            eprintln!("warning: {w}");
        }
    }
    let opts = ApplyOptions {
        image_parallel: args.image_parallel as usize,
        parallel: args.parallel as usize,
        retries: global.retries,
        check: match (args.no_verify, args.verify_full) {
            (true, _) => None,
            (false, true) => Some(Mode::Full),
            (false, false) => Some(Mode::Fast),
        },
        progress: global.progress_mode(many),
        record: false,
    };
    let report = apply(&ctx, &plan, &opts).await;
    if !many {
        return print_one(global, &report);
    }
    match global.output_format {
        OutputFormat::Json => {
            let all: Vec<serde_json::Value> = report.targets.iter().map(target_json).collect::<Result<_>>()?;
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            for o in &report.targets {
                print_matches(o);
            }
            print!("{}", summary_text(&report));
        }
    }
    for o in report.targets.iter().filter(|o| o.error.is_some()) {
        eprintln!(
            "error: {} → {}: {}",
            o.source,
            o.destination,
            o.error.as_deref().unwrap_or_default()
        );
    }
    Ok(report.exit_code())
}

/// A target's report as JSON: the copy report with its source, destination,
/// time and check (`fast: ok`, `full: skipped (why)`…), or its error.
fn target_json(o: &TargetOutcome) -> Result<serde_json::Value> {
    let mut v = match &o.report {
        Some(r) => serde_json::to_value(r)?,
        None => serde_json::json!({}),
    };
    v["source"] = o.source.clone().into();
    v["destination"] = o.destination.clone().into();
    v["seconds"] = o.seconds.into();
    if let Some(c) = &o.check {
        v["check"] = c.clone().into();
    }
    if let Some(e) = &o.error {
        v["error"] = e.clone().into();
    }
    Ok(v)
}

/// What `search` filters found, a line per match.
fn print_matches(o: &TargetOutcome) {
    for m in o.report.iter().flat_map(|r| &r.matches) {
        println!("{} {}", m.layer_digest, m.path);
    }
}

/// The report of a one-image process: its error, or a one-line summary.
fn print_one(global: &GlobalArgs, report: &ApplyReport) -> Result<i32> {
    let Some(o) = report.targets.first() else {
        return Ok(0);
    };
    if let Some(e) = &o.error {
        return Err(match o.exit_code {
            2 => Error::usage(e.clone()),
            _ => Error::invalid(e.clone()),
        });
    }
    let Some(r) = &o.report else {
        return Ok(0);
    };
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&target_json(o)?)?),
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            print_matches(o);
            if !global.quiet {
                let mut mounted = if r.layers_mounted > 0 {
                    format!(", {} mounted", r.layers_mounted)
                } else {
                    String::new()
                };
                if r.mounts_declined > 0 {
                    mounted.push_str(&format!(", {} mounts declined", r.mounts_declined));
                }
                eprintln!(
                    "{} → {}: {} layers ({} copied, {} already present{mounted}), {} in {:.2}s, digest {}",
                    o.source,
                    o.destination,
                    r.layers,
                    r.layers_copied,
                    r.layers_skipped.saturating_sub(r.layers_mounted),
                    human_size(r.bytes),
                    o.seconds,
                    r.digest
                );
            }
        }
    }
    Ok(0)
}

//! `occy process SRC DST`: copy one image from a source to a destination,
//! printing a one-line summary on stderr (or a JSON report on stdout).

use crate::cache::LayerCache;
use crate::check::Mode;
use crate::filter::{parse_compression, FilterChain};
use clap::Args;

use super::{GlobalArgs, OutputFormat, PlatformArgs};
use crate::cli::output::human_size;
use crate::error::{Error, Result};
use crate::exec::{copy_image, CopyOptions};
use crate::image::ImageName;
use crate::reference::Reference;
use crate::sink::{open_sink, SinkOptions};
use crate::source::{open_source, Source};

/// Arguments of `occy process`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Source reference (registry://, tar://, oci://, dir://)
    pub source: String,

    /// Destination reference (registry://, tar://, oci://, dir://, bundle://)
    pub destination: String,

    /// Layer transfers at once
    #[arg(short = 'j', long, default_value_t = 4, env = "OCCY_PARALLEL", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,

    #[command(flatten)]
    pub platforms: PlatformArgs,

    /// A filter every layer goes through, in the order given (repeatable):
    /// normalize-timestamps[:ts=N,config=true], exclude:pattern=GLOB[,pattern=GLOB],
    /// search:pattern=P[,regex=true], inspect:file=PATH, recompress:format=gzip|zstd[,level=N]
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,

    /// After writing, run the full check (every layer read back) on the
    /// destination instead of the fast one
    #[arg(long, conflicts_with = "no_verify")]
    pub verify_full: bool,

    /// Do not check the destination after writing (by default the fast
    /// check runs on it: manifests, configs, blob existence)
    #[arg(long)]
    pub no_verify: bool,
}

/// The name and tag to record at the destination: what the source's
/// reference says, else what the source records, else the path's last part.
pub fn image_name_for(reference: &Reference, source: &dyn Source) -> ImageName {
    match reference {
        Reference::Registry(r) => ImageName {
            repository: r.name(),
            tag: r.tag_or_latest().to_string(),
        },
        Reference::Docker { name, tag, .. } => ImageName {
            repository: name.clone(),
            tag: tag.clone(),
        },
        other => source.recorded_name().unwrap_or_else(|| {
            let base = match other {
                Reference::Oci { path, .. }
                | Reference::Tar { path }
                | Reference::Dir { path, .. }
                | Reference::Bundle { path } => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "image".to_string()),
                _ => "image".to_string(),
            };
            ImageName {
                repository: base,
                tag: other.tag().unwrap_or("latest").to_string(),
            }
        }),
    }
}

/// Runs `occy process`.
pub async fn run(global: &GlobalArgs, args: &ProcessArgs) -> Result<i32> {
    let src_ref = Reference::parse(&args.source)?;
    let dst_ref = Reference::parse(&args.destination)?;
    if src_ref == dst_ref {
        return Err(Error::usage(format!("source and destination are the same: {src_ref}")));
    }
    let compression = global.compression.as_deref().map(parse_compression).transpose()?;
    let filters = FilterChain::parse(&args.filters, compression)?;
    let platforms = args.platforms.selection()?;
    let source = open_source(&src_ref, &global.source_options()?).await?;
    let name = image_name_for(&src_ref, source.as_ref());
    let opts = CopyOptions {
        parallel: args.parallel as usize,
        platforms,
        retries: global.retries,
        filters,
        name: format!("{}:{}", name.repository, name.tag),
        cache: if global.no_cache {
            None
        } else {
            LayerCache::open(global.cache_dir.as_deref())
        },
    };
    let sink_opts = SinkOptions {
        registry: global.source_options()?.registry,
        blob_locations: Default::default(),
        source: match &src_ref {
            Reference::Registry(r) => Some(r.clone()),
            _ => None,
        },
    };
    let sink = open_sink(&dst_ref, &name, &sink_opts).await?;
    let report = copy_image(source.as_ref(), sink.as_ref(), &opts).await?;
    if !args.no_verify {
        let mode = if args.verify_full { Mode::Full } else { Mode::Fast };
        crate::check::verify_written(&dst_ref, &name, mode, &global.source_options()?).await?;
    }
    match global.output_format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["source"] = src_ref.to_string().into();
            v["destination"] = dst_ref.to_string().into();
            v["seconds"] = report.elapsed.as_secs_f64().into();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Text | OutputFormat::Markdown => {
            for m in &report.matches {
                println!("{} {}", m.layer_digest, m.path);
            }
            if !global.quiet {
                let mounted = if report.layers_mounted > 0 {
                    format!(", {} mounted", report.layers_mounted)
                } else {
                    String::new()
                };
                eprintln!(
                    "{} → {}: {} layers ({} copied, {} already present{mounted}), {} in {:.2}s, digest {}",
                    src_ref,
                    dst_ref,
                    report.layers,
                    report.layers_copied,
                    report.layers_skipped.saturating_sub(report.layers_mounted),
                    human_size(report.bytes),
                    report.elapsed.as_secs_f64(),
                    report.digest
                );
            }
        }
    }
    Ok(0)
}

//! `occy search SRC PATTERN [--regex]`: finds paths in every layer of an
//! image (glob by default, `**` crossing directories), printing
//! `layer-digest path` lines (JSON with `-O json`) and a summary.

pub use crate::filter::search::{layer_path, PathMatcher};
use clap::Args;
use serde::Serialize;

use super::{GlobalArgs, OutputFormat, PlatformArgs};
use crate::error::{Error, Result};
use crate::filter::tar_stream::TarReader;
use crate::reference::Reference;
use crate::source::stream::decompressed;
use crate::source::{open_source, resolve};

/// Arguments of `occy search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Image reference
    #[arg(help = format!("Image reference ({})", crate::reference::readable_schemes()))]
    pub source: String,

    /// Glob (default; `*` within a directory, `**` across) or, with --regex, a regular expression
    pub pattern: String,

    /// Treat PATTERN as a regular expression
    #[arg(long)]
    pub regex: bool,

    #[command(flatten)]
    pub platforms: PlatformArgs,
}

/// One match.
#[derive(Debug, Serialize, Clone)]
pub struct SearchMatch {
    pub layer: usize,
    pub layer_digest: String,
    pub path: String,
}

/// Runs `occy search`.
pub async fn run(global: &GlobalArgs, args: &SearchArgs) -> Result<i32> {
    let matcher = std::sync::Arc::new(PathMatcher::new(&args.pattern, args.regex)?);
    let reference = Reference::parse(&args.source)?;
    let source = open_source(&reference, &global.source_options()?).await?;
    let selection = args.platforms.selection()?;
    let resolved = resolve(source.as_ref(), &selection).await?;
    let mut matches: Vec<SearchMatch> = Vec::new();
    let mut layers_scanned = 0;
    for image in &resolved.images {
        for (i, desc) in image.manifest.layers.iter().enumerate() {
            let what = format!("layer {}", desc.digest);
            let plain = decompressed(source.open_blob(desc).await?, image.diff_id(i)?, &what).await?;
            let bridge = crate::interrupt::Bridge::new(plain);
            let m = matcher.clone();
            let digest = desc.digest.to_string();
            let found = tokio::task::spawn_blocking(move || -> Result<Vec<SearchMatch>> {
                let mut out = Vec::new();
                // The same reader filters, check and extraction use.
                let mut archive = TarReader::new(bridge, what);
                while let Some(entry) = archive.next_entry()? {
                    let path = layer_path(&entry.path);
                    if !path.is_empty() && m.is_match(&path) {
                        out.push(SearchMatch {
                            layer: i,
                            layer_digest: digest.clone(),
                            path,
                        });
                    }
                }
                // Read to the end so the diff_id is verified.
                archive.drain()?;
                Ok(out)
            })
            .await
            .map_err(|e| Error::invalid(format!("search task failed: {e}")))??;
            layers_scanned += 1;
            matches.extend(found);
        }
    }
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&matches)?),
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            for m in &matches {
                println!("{} {}", m.layer_digest, m.path);
            }
            if !global.quiet {
                eprintln!(
                    "{} match(es) for {:?} in {} layer(s) of {}",
                    matches.len(),
                    args.pattern,
                    layers_scanned,
                    reference
                );
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_semantics() {
        let m = PathMatcher::new("etc/*.conf", false).unwrap();
        assert!(m.is_match("etc/a.conf"));
        assert!(!m.is_match("etc/x/a.conf"));
        let m = PathMatcher::new("**/*.so", false).unwrap();
        assert!(m.is_match("usr/lib/x/libz.so"));
        let m = PathMatcher::new("passwd", false).unwrap();
        assert!(m.is_match("etc/passwd"));
        assert!(PathMatcher::new("[", false).is_err());
        assert!(PathMatcher::new("(", true).is_err());
        assert_eq!(layer_path("./etc/"), "etc");
    }
}

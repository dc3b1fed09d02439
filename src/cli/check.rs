//! `occy check SRC [--fast]`: runs the rules of [`crate::check`] on an image
//! (every platform of an index) and prints the findings grouped by severity,
//! or one JSON document; exits 1 when any error is found. A `bundle://` and
//! an expanded `dir://` also have their trees compared with their layers
//! (rule `tree`); a check that cannot run says `skipped` and why.

use clap::Args;
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::check::{check_bundle, check_expanded, check_source, Findings, Mode, Severity, Verified};
use crate::error::Result;
use crate::image::ImageName;
use crate::reference::Reference;
use crate::source::docker_save::DockerSaveSource;
use crate::source::image_name_for;
use crate::source::open_source;

/// Arguments of `occy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Image reference
    #[arg(help = format!(
        "Image reference ({}), or bundle:// (its rootfs against its layers)",
        crate::reference::readable_schemes()
    ))]
    pub source: String,

    /// Metadata only: manifests, configs and blob existence, no layer reads
    #[arg(long)]
    pub fast: bool,
}

/// Runs `occy check`.
pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<i32> {
    let reference = Reference::parse(&args.source)?;
    let mode = if args.fast { Mode::Fast } else { Mode::Full };
    let (name, findings, verified) = match &reference {
        // A bundle holds no image to read back: its rootfs is compared
        // with the view of its layers kept beside it.
        Reference::Bundle { path } => {
            let mut findings = Findings::default();
            let verified = check_bundle(path, mode, &mut findings).await?;
            let name = ImageName {
                repository: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "bundle".into()),
                tag: String::new(),
            };
            (name, findings, verified)
        }
        _ => {
            let source = open_source(&reference, &global.source_options()?).await?;
            let name = image_name_for(&reference, source.as_ref());
            let mut findings = check_source(source.as_ref(), mode).await?;
            let opts = global.source_options()?.registry;
            crate::check::referrers::check_referrer_subjects(&reference, &opts, &mut findings).await?;
            if let Reference::Dir { path, expand: true, .. } = &reference {
                let dir = DockerSaveSource::open_dir(path, Some((&name.repository, Some(&name.tag)))).await?;
                check_expanded(path, &dir, mode, &mut findings).await?;
            }
            (name, findings, Verified::Checked)
        }
    };
    let skipped = match &verified {
        Verified::Checked => None,
        Verified::Skipped(why) => Some(why.clone()),
    };
    let errors = findings.count(Severity::Error);
    let warnings = findings.count(Severity::Warning);
    match global.output_format {
        OutputFormat::Json => {
            let doc = json!({
                "image": name.repository,
                "tag": name.tag,
                "mode": mode.as_str(),
                "skipped": skipped,
                "errors": errors,
                "warnings": warnings,
                "results": findings.results,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            println!("{} ({} check)", reference, mode.as_str());
            for (severity, title) in [
                (Severity::Error, "Errors"),
                (Severity::Warning, "Warnings"),
                (Severity::Info, "Info"),
            ] {
                let rows: Vec<_> = findings.results.iter().filter(|f| f.severity == severity).collect();
                if rows.is_empty() {
                    continue;
                }
                println!("\n{title}:");
                for r in rows {
                    println!("  [{}] {}", r.check, r.message);
                }
            }
            match &skipped {
                Some(why) => println!("\ncheck skipped ({why}); {errors} error(s), {warnings} warning(s)"),
                None => println!("\n{errors} error(s), {warnings} warning(s)"),
            }
        }
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

//! `occy check SRC [--fast]`: runs the rules of [`crate::check`] on an image
//! (every platform of an index) and prints the findings grouped by severity,
//! or one JSON document; exits 1 when any error is found.

use clap::Args;
use serde_json::json;

use super::{GlobalArgs, OutputFormat};
use crate::check::{check_source, Mode, Severity};
use crate::error::Result;
use crate::reference::Reference;
use crate::source::image_name_for;
use crate::source::open_source;

/// Arguments of `occy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Image reference
    #[arg(help = format!("Image reference ({})", crate::reference::readable_schemes()))]
    pub source: String,

    /// Metadata only: manifests, configs and blob existence, no layer reads
    #[arg(long)]
    pub fast: bool,
}

/// Runs `occy check`.
pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<i32> {
    let reference = Reference::parse(&args.source)?;
    let source = open_source(&reference, &global.source_options()?).await?;
    let name = image_name_for(&reference, source.as_ref());
    let mode = if args.fast { Mode::Fast } else { Mode::Full };
    let findings = check_source(source.as_ref(), mode).await?;
    let errors = findings.count(Severity::Error);
    let warnings = findings.count(Severity::Warning);
    match global.output_format {
        OutputFormat::Json => {
            let doc = json!({
                "image": name.repository,
                "tag": name.tag,
                "mode": mode.as_str(),
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
            println!("\n{errors} error(s), {warnings} warning(s)");
        }
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

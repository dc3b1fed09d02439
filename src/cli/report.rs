//! `occy report FILES...`: one summary of the JSON reports of a sharded
//! sync, in text, JSON or markdown; exit 1 when a shard failed or a shard's
//! report is missing.

use std::path::PathBuf;

use clap::Args;

use super::output::{human_size, table};
use super::{GlobalArgs, OutputFormat};
use crate::error::Result;
use crate::exec::report::{merge, Merged};

/// Arguments of `occy report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The JSON reports of the shards (`occy -O json sync … --shard I/N > FILE`)
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `occy report`.
pub async fn run(global: &GlobalArgs, args: &ReportArgs) -> Result<i32> {
    let mut texts = Vec::new();
    let mut unreadable = Vec::new();
    for f in &args.files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.display().to_string(), t)),
            Err(e) => unreadable.push(format!("{}: cannot read this report: {e}", f.display())),
        }
    }
    for u in &unreadable {
        eprintln!("error: {u}");
    }
    if texts.is_empty() {
        return Ok(1);
    }
    let m = merge(&texts)?;
    if !global.quiet {
        for &i in &m.missing {
            eprintln!(
                "error: shard {i} of {} has no report (reports given: {})",
                m.shards,
                m.reports
                    .iter()
                    .map(|r| format!("shard {} in {}", r.shard, r.file))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&m)?),
        OutputFormat::Markdown => print!("{}", markdown(&m)),
        OutputFormat::Text | OutputFormat::Github | OutputFormat::Dot => print!("{}", text(&m)),
    }
    Ok(m.exit_code().max(i32::from(!unreadable.is_empty())))
}

/// A row per shard, missing ones included.
fn shard_rows(m: &Merged) -> Vec<Vec<String>> {
    (0..m.shards)
        .map(|i| match m.reports.iter().find(|r| r.shard == i) {
            Some(r) => vec![
                i.to_string(),
                if r.failed > 0 { "failed" } else { "ok" }.to_string(),
                r.file.clone(),
                r.written.to_string(),
                r.unchanged.to_string(),
                r.failed.to_string(),
                human_size(r.bytes),
                format!("{:.1}s", r.seconds),
            ],
            None => {
                let mut row = vec![i.to_string(), "missing".to_string(), "(no report)".to_string()];
                row.extend(std::iter::repeat_n("-".to_string(), 5));
                row
            }
        })
        .collect()
}

const HEADER: [&str; 8] = [
    "shard",
    "status",
    "report",
    "written",
    "unchanged",
    "failed",
    "bytes",
    "time",
];

fn totals(m: &Merged) -> String {
    format!(
        "{} written, {} unchanged, {} failed{}; {} layers copied ({}), {} mounted, in {:.1}s (the longest shard); {} of {} shards reported",
        m.written,
        m.unchanged,
        m.failed,
        if m.pruned + m.prune_failed > 0 {
            format!(", {} tags pruned, {} not", m.pruned, m.prune_failed)
        } else {
            String::new()
        },
        m.layers_copied,
        human_size(m.bytes),
        m.layers_mounted,
        m.seconds,
        m.reports.len(),
        m.shards
    )
}

/// The merged report for people.
pub fn text(m: &Merged) -> String {
    let mut out = table(&HEADER, &shard_rows(m));
    if !m.failures.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = m
            .failures
            .iter()
            .map(|f| {
                vec![
                    f.shard.to_string(),
                    f.destination.clone(),
                    f.error.lines().next().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&["shard", "failed target", "error"], &rows));
    }
    out.push('\n');
    out.push_str(&totals(m));
    out.push('\n');
    out
}

/// The merged report in markdown (a CI job summary).
pub fn markdown(m: &Merged) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::from("### occy sync: ");
    out.push_str(&format!("{} shards\n\n", m.shards));
    out.push_str(&format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        "---|".repeat(HEADER.len())
    ));
    for row in shard_rows(m) {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    if !m.failures.is_empty() {
        out.push_str("\n| shard | failed target | error |\n|---|---|---|\n");
        for f in &m.failures {
            out.push_str(&format!(
                "| {} | `{}` | {} |\n",
                f.shard,
                cell(&f.destination),
                cell(f.error.lines().next().unwrap_or_default())
            ));
        }
    }
    out.push('\n');
    out.push_str(&totals(m));
    out.push('\n');
    out
}

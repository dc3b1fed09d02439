//! The plan for people and machines: text (colour on a terminal, with the
//! work shared between stores), JSON (the documented `plan_version: 2`
//! document with the work graph's `nodes` and `edges`, which `--out` saves
//! and `--apply` reads back) and Markdown (a table to post on a pull
//! request). The DOT picture is drawn by [`super::graph::WorkGraph::dot`].

use std::fmt::Write as _;

use super::{Action, Plan, PlannedTarget};
use crate::image::human_size;
use crate::image::Digest;

fn short(d: &Option<Digest>) -> String {
    match d {
        Some(d) => d.hex().chars().take(12).collect(),
        None => "-".to_string(),
    }
}

/// `create`, `update old → new`, `unchanged`, `rebuild (why)`, `failed: why`.
fn change(t: &PlannedTarget) -> String {
    match &t.action {
        Action::Create => format!("create {}", short(&t.expected)),
        Action::Update => format!("update {} → {}", short(&t.current), short(&t.expected)),
        Action::Unchanged => format!("unchanged {}", short(&t.current)),
        Action::Rebuild { .. } => "rebuild (filters)".to_string(),
        Action::Failed { error } => format!("failed: {error}"),
    }
}

fn blobs(t: &PlannedTarget) -> String {
    if !t.action.writes() {
        return String::new();
    }
    let b = &t.blobs;
    let approx = if b.estimated { "~" } else { "" };
    let mut parts = vec![format!("{approx}{} up ({approx}{})", b.upload, human_size(b.bytes))];
    if b.mount > 0 {
        parts.push(format!("{} mount", b.mount));
    }
    if b.present > 0 {
        parts.push(format!("{} present", b.present));
    }
    parts.join(", ")
}

fn symbol(a: &Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Unchanged => "=",
        Action::Rebuild { .. } => "*",
        Action::Failed { .. } => "!",
    }
}

fn colour(a: &Action) -> &'static str {
    match a {
        Action::Create => "\x1b[32m",
        Action::Update | Action::Rebuild { .. } => "\x1b[33m",
        Action::Unchanged => "\x1b[2m",
        Action::Failed { .. } => "\x1b[31m",
    }
}

/// The one-line summary of counts.
pub fn summary_line(plan: &Plan) -> String {
    let t = &plan.totals;
    let approx = if t.blobs.estimated { "~" } else { "" };
    let prune = if t.prune > 0 {
        format!("; {} tags to prune", t.prune)
    } else {
        String::new()
    };
    format!(
        "{} targets: {} to create, {} to update, {} to rebuild, {} unchanged, {} failed; blobs: {approx}{} to upload ({approx}{}), {} to mount, {} present{prune}",
        t.targets,
        t.create,
        t.update,
        t.rebuild,
        t.unchanged,
        t.failed,
        t.blobs.upload,
        human_size(t.blobs.bytes),
        t.blobs.mount,
        t.blobs.present
    )
}

/// `- registry://host/repo:tag: delete (digest)`, a line per pruned tag.
fn prune_lines(plan: &Plan) -> Vec<String> {
    plan.prune
        .iter()
        .map(|p| format!("{}: delete ({})", p.destination, short(&Some(p.digest.clone()))))
        .collect()
}

/// The plan as text.
pub fn text(plan: &Plan, colour_on: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for {} (sha256 {})",
        plan.sync_file,
        &plan.sync_file_sha256[..12.min(plan.sync_file_sha256.len())]
    );
    for t in &plan.targets {
        let (on, off) = if colour_on {
            (colour(&t.action), "\x1b[0m")
        } else {
            ("", "")
        };
        let filters = t
            .filters
            .as_ref()
            .map(|f| format!(" [filters: {f}]"))
            .unwrap_or_default();
        let plats = if t.platforms > 1 {
            format!(" ({} platforms)", t.platforms)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{on}{} {} → {}{filters}{plats}: {}{off}",
            symbol(&t.action),
            t.source,
            t.destination,
            change(t)
        );
        let b = blobs(t);
        if !b.is_empty() {
            let _ = writeln!(out, "    blobs: {b}");
        }
    }
    if !plan.shared.is_empty() {
        let _ = writeln!(out, "\nShared work (each node done once):");
        for line in &plan.shared {
            let _ = writeln!(out, "  {line}");
        }
    }
    let (on, off) = if colour_on { ("\x1b[31m", "\x1b[0m") } else { ("", "") };
    for line in prune_lines(plan) {
        let _ = writeln!(out, "{on}- {line}{off}");
    }
    if !plan.destinations.is_empty() {
        let _ = writeln!(out, "\nPer destination:");
        for d in &plan.destinations {
            let approx = if d.blobs.estimated { "~" } else { "" };
            let _ = writeln!(
                out,
                "  {}: {} targets to write; {approx}{} blobs to upload ({approx}{}), {} to mount, {} present",
                d.destination,
                d.targets,
                d.blobs.upload,
                human_size(d.blobs.bytes),
                d.blobs.mount,
                d.blobs.present
            );
        }
    }
    if !plan.requests.is_empty() && plan.has_changes() {
        let reqs: Vec<String> = plan.requests.iter().map(|(h, n)| format!("{h} ~{n}")).collect();
        let _ = writeln!(out, "Estimated requests: {}", reqs.join(", "));
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out, "\n{}", summary_line(plan));
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The plan as a Markdown comment for a pull request.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let t = &plan.totals;
    let _ = writeln!(out, "### occy sync plan: `{}`\n", md_escape(&plan.sync_file));
    let _ = writeln!(
        out,
        "**{}** to create, **{}** to update, **{}** to rebuild, {} unchanged, **{}** failed{} · {} blobs to upload ({}), {} to mount\n",
        t.create,
        t.update,
        t.rebuild,
        t.unchanged,
        t.failed,
        if t.prune > 0 {
            format!(", **{}** to prune", t.prune)
        } else {
            String::new()
        },
        t.blobs.upload,
        human_size(t.blobs.bytes),
        t.blobs.mount
    );
    let _ = writeln!(out, "| | source | destination | change | blobs |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for p in &plan.targets {
        let _ = writeln!(
            out,
            "| {} | `{}` | `{}` | {} | {} |",
            symbol(&p.action),
            md_escape(&p.source),
            md_escape(&p.destination),
            md_escape(&change(p)),
            md_escape(&blobs(p))
        );
    }
    for p in &plan.prune {
        let _ = writeln!(
            out,
            "| - | | `{}` | delete {} | |",
            md_escape(&p.destination),
            short(&Some(p.digest.clone()))
        );
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\n**Warnings**\n");
        for w in &plan.warnings {
            let _ = writeln!(out, "- {}", md_escape(w));
        }
    }
    out
}

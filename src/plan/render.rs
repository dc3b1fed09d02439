//! The plan for people and machines: text (colour on a terminal, with the
//! work shared between stores), JSON (the documented `plan_version: 2`
//! document with the work graph's `nodes` and `edges`, which `--out` saves
//! and `--apply` reads back) and Markdown (a table to post on a pull
//! request). The DOT picture is drawn by [`super::graph::WorkGraph::dot`].

use std::fmt::Write as _;

use super::{Action, BlobCounts, DestinationTotals, Plan, PlannedTarget};
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
        Action::Update if t.current.is_some() && t.current == t.expected => {
            format!("update {} (its referrers)", short(&t.current))
        }
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
    if b.remembered > 0 {
        parts.push(remembered_part(b));
    }
    if b.present > 0 {
        parts.push(format!("{} present", b.present));
    }
    parts.join(", ")
}

/// `3 mount from remembered repositories (may upload 1.2 MiB)`: mounts
/// the registry may decline, each then an upload from the blob's one read.
fn remembered_part(b: &BlobCounts) -> String {
    format!(
        "{} mount from remembered repositories (may upload {})",
        b.remembered,
        human_size(b.remembered_bytes)
    )
}

/// `+ 2 referrers: 1 signature, 1 SBOM`, or why the source's are not copied.
fn referrers_line(t: &PlannedTarget) -> Option<String> {
    let r = t.referrers.as_ref()?;
    if let Some((n, why)) = &r.not_copied {
        return Some(format!("referrers: {n} not copied: {why}"));
    }
    if r.copy.is_empty() || !t.action.writes() {
        return None;
    }
    let n = r.copy.len();
    let mut line = format!("+ {n} referrer{}: {}", if n == 1 { "" } else { "s" }, r.kinds());
    if r.present > 0 {
        line.push_str(&format!(" ({} present)", r.present));
    }
    if r.fallback_tag {
        line.push_str(", listed in the referrers tag");
    }
    Some(line)
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
    let remembered = if t.blobs.remembered > 0 {
        format!(", {}", remembered_part(&t.blobs))
    } else {
        String::new()
    };
    format!(
        "{} targets: {} to create, {} to update, {} to rebuild, {} unchanged, {} failed; blobs: {approx}{} to upload ({approx}{}), {} to mount{remembered}, {} present{prune}",
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

/// Whether a destination has anything to receive.
fn has_work(d: &DestinationTotals) -> bool {
    d.targets > 0 || d.blobs.upload > 0 || d.blobs.mount > 0 || d.blobs.remembered > 0
}

/// `Pull quota: docker.io: 76 of 100 pulls left in this 6 h window; this
/// run needs 12`, a line per source registry that announces a quota.
pub fn quota_lines(plan: &Plan) -> Vec<String> {
    plan.pull_quotas
        .iter()
        .map(|q| format!("Pull quota: {}", q.describe()))
        .collect()
}

/// `Nothing to do: N targets up to date.`, as apply says it.
pub fn nothing_to_do(plan: &Plan) -> String {
    format!("Nothing to do: {} targets up to date.", plan.totals.unchanged)
}

/// The plan as text: each target, the destinations with work, warnings and
/// totals; one line when nothing is to be done.
pub fn text(plan: &Plan, colour_on: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for {} (sha256 {})",
        plan.sync_file,
        &plan.sync_file_sha256[..12.min(plan.sync_file_sha256.len())]
    );
    for line in quota_lines(plan) {
        let _ = writeln!(out, "{line}");
    }
    if !plan.has_changes() && !plan.has_failures() {
        for line in plan.archives.iter().flat_map(|a| a.lines()) {
            let _ = writeln!(out, "{line}");
        }
        for w in &plan.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "{}", nothing_to_do(plan));
        return out;
    }
    for (i, t) in plan.targets.iter().enumerate() {
        let (on, off) = if colour_on {
            (colour(&t.action), "\x1b[0m")
        } else {
            ("", "")
        };
        let filters = t
            .filters()
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
            t.source(),
            t.destination(),
            change(t)
        );
        let b = blobs(t);
        if !b.is_empty() {
            let _ = writeln!(out, "    blobs: {b}");
        }
        for (repo, n) in plan.graph.remembered_mounts(i) {
            let blobs = if n == 1 { "blob" } else { "blobs" };
            let _ = writeln!(out, "    mount from remembered {repo}, may upload: {n} {blobs}");
        }
        if let Some(line) = referrers_line(t) {
            let _ = writeln!(out, "    {line}");
        }
        if let Some(v) = &t.verification {
            match &v.signer {
                Some(s) => {
                    let _ = writeln!(out, "    signed by {s}");
                }
                None => {
                    let _ = writeln!(out, "    verify: requires {}", v.requires);
                }
            }
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
    let busy: Vec<&DestinationTotals> = plan.destinations.iter().filter(|d| has_work(d)).collect();
    if !busy.is_empty() {
        let _ = writeln!(out, "\nPer destination:");
        for d in busy {
            let approx = if d.blobs.estimated { "~" } else { "" };
            let remembered = if d.blobs.remembered > 0 {
                format!(", {}", remembered_part(&d.blobs))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {}: {} targets to write; {approx}{} blobs to upload ({approx}{}), {} to mount{remembered}, {} present",
                d.destination,
                d.targets,
                d.blobs.upload,
                human_size(d.blobs.bytes),
                d.blobs.mount,
                d.blobs.present
            );
        }
    }
    if !plan.archives.is_empty() {
        let _ = writeln!(out, "\nArchives:");
        for line in plan.archives.iter().flat_map(|a| a.lines()) {
            let _ = writeln!(out, "  {line}");
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

/// Text safe inside a Markdown table cell: no `|`, no line break.
fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// GitHub refuses a comment over 65,536 characters; the whole Markdown plan
/// stays under this many bytes (a character is at least one byte).
pub const MARKDOWN_LIMIT: usize = 65_000;
/// The table of changes stops before this many bytes.
pub const MARKDOWN_TABLE_LIMIT: usize = 60_000;
/// Unchanged targets named inside `<details>`; the rest are counted.
pub const MARKDOWN_UNCHANGED_LISTED: usize = 50;
/// Warnings shown; the rest are counted.
const MARKDOWN_WARNINGS_LISTED: usize = 20;
/// Longest warning, unchanged-target line or sync-file name shown, in bytes.
const MARKDOWN_ITEM_MAX: usize = 300;

/// The plan as a Markdown comment for a pull request, sized to fit one:
/// warnings first, then a table of the targets that change (failed ones
/// first, then create, update, rebuild, and the tags to prune), the
/// unchanged targets as a count with the first 50 inside `<details>`, and a
/// final line of totals. A table that would pass 60,000 characters drops its
/// source and blob columns; if it still would, it is cut, with a line saying
/// how many rows were left out and how to get the whole plan as JSON.
pub fn markdown(plan: &Plan) -> String {
    let file = cut(&plan.sync_file, MARKDOWN_ITEM_MAX);
    let mut head = String::new();
    let _ = writeln!(head, "### occy sync plan: `{}`\n", md_escape(&file));
    if !plan.warnings.is_empty() {
        let _ = writeln!(head, "**Warnings**\n");
        for w in plan.warnings.iter().take(MARKDOWN_WARNINGS_LISTED) {
            let _ = writeln!(head, "- {}", md_escape(&cut(w, MARKDOWN_ITEM_MAX)));
        }
        if plan.warnings.len() > MARKDOWN_WARNINGS_LISTED {
            let _ = writeln!(
                head,
                "- … and {} more warnings",
                plan.warnings.len() - MARKDOWN_WARNINGS_LISTED
            );
        }
        head.push('\n');
    }
    for line in quota_lines(plan) {
        let _ = writeln!(head, "{}\n", md_escape(&cut(&line, MARKDOWN_ITEM_MAX)));
    }
    for line in plan.archives.iter().flat_map(|a| a.lines()) {
        let _ = writeln!(head, "{}\n", md_escape(&cut(line.trim(), MARKDOWN_ITEM_MAX)));
    }
    let totals = format!("**Totals:** {}\n", summary_line(plan));
    if !plan.has_changes() && !plan.has_failures() {
        return format!("{head}{}\n\n{totals}", nothing_to_do(plan));
    }

    let unchanged: Vec<&PlannedTarget> = plan
        .targets
        .iter()
        .filter(|t| matches!(t.action, Action::Unchanged))
        .collect();
    let mut details = String::new();
    if !unchanged.is_empty() {
        let _ = writeln!(
            details,
            "<details><summary>{} unchanged targets</summary>\n",
            unchanged.len()
        );
        for t in unchanged.iter().take(MARKDOWN_UNCHANGED_LISTED) {
            let line = format!("{} → {}", t.source(), t.destination());
            let _ = writeln!(details, "- `{}`", md_escape(&cut(&line, MARKDOWN_ITEM_MAX)));
        }
        if unchanged.len() > MARKDOWN_UNCHANGED_LISTED {
            let _ = writeln!(details, "- … and {} more", unchanged.len() - MARKDOWN_UNCHANGED_LISTED);
        }
        let _ = writeln!(details, "\n</details>\n");
    }

    // Failed targets first: they are what a reviewer must see.
    let rank = |a: &Action| match a {
        Action::Failed { .. } => 0,
        Action::Create => 1,
        Action::Update => 2,
        Action::Rebuild { .. } => 3,
        Action::Unchanged => 4,
    };
    let mut changed: Vec<&PlannedTarget> = plan
        .targets
        .iter()
        .filter(|t| !matches!(t.action, Action::Unchanged))
        .collect();
    changed.sort_by_key(|t| rank(&t.action));
    // A row per change; when they would not fit, a compact row (what
    // changes where) before cutting any.
    let full_rows: Vec<String> = changed
        .iter()
        .map(|p| {
            format!(
                "| {} | `{}` | `{}` | {} | {} |\n",
                symbol(&p.action),
                md_escape(&p.source()),
                md_escape(&p.destination()),
                {
                    let mut cell = md_escape(&change(p));
                    if let Some(r) = referrers_line(p) {
                        cell = format!("{cell}<br>{}", md_escape(&r));
                    }
                    if let Some(who) = p.verification.as_ref().and_then(|v| v.signer.as_deref()) {
                        cell = format!("{cell}<br>signed by {}", md_escape(who));
                    }
                    cell
                },
                md_escape(&blobs(p))
            )
        })
        .chain(plan.prune.iter().map(|p| {
            format!(
                "| - | | `{}` | delete {} | |\n",
                md_escape(&p.destination),
                short(&Some(p.digest.clone()))
            )
        }))
        .collect();
    let total_rows = full_rows.len();
    let left_out_note = |n: usize| {
        format!(
            "\n**{n} more rows left out** to fit a pull-request comment. The whole plan: `occy sync {} --plan -O json > plan.json`\n",
            md_escape(&file)
        )
    };
    let others = head.len() + details.len() + totals.len() + left_out_note(total_rows).len() + 200;
    let budget = MARKDOWN_TABLE_LIMIT.min(MARKDOWN_LIMIT.saturating_sub(others));
    let full_header = "| | source | destination | change | blobs |\n|---|---|---|---|---|\n";
    let full_len = full_header.len() + full_rows.iter().map(String::len).sum::<usize>();
    let (mut table, rows) = if full_len <= budget {
        (full_header.to_string(), full_rows)
    } else {
        let compact: Vec<String> = changed
            .iter()
            .map(|p| {
                format!(
                    "| {} | `{}` | {} |\n",
                    symbol(&p.action),
                    md_escape(&p.destination()),
                    md_escape(&cut(&change(p), MARKDOWN_ITEM_MAX))
                )
            })
            .chain(plan.prune.iter().map(|p| {
                format!(
                    "| - | `{}` | delete {} |\n",
                    md_escape(&p.destination),
                    short(&Some(p.digest.clone()))
                )
            }))
            .collect();
        (
            "Sources and blob counts are left out to fit a comment; they are in the JSON plan.\n\n| | destination | change |\n|---|---|---|\n".to_string(),
            compact,
        )
    };
    let mut shown = 0;
    for row in &rows {
        if table.len() + row.len() > budget {
            break;
        }
        table.push_str(row);
        shown += 1;
    }
    if shown < total_rows {
        table.push_str(&left_out_note(total_rows - shown));
    }
    format!("{head}{table}\n{details}{totals}")
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::image::ImageName;
    use crate::plan::{BlobCounts, Target, Totals};
    use crate::reference::Reference;
    use crate::source::PlatformSelection;

    fn target(i: usize, action: Action) -> PlannedTarget {
        let source = format!("registry://registry.example.com/library/app{i}:v{i}");
        let destination = format!("registry://mirror.example.com/library/app{i}:v{i}");
        let digest = |n: usize| Some(Digest::of(format!("{n}").as_bytes()));
        let writes = action.writes();
        PlannedTarget {
            entry: 0,
            source_digest: digest(i),
            platforms: 1,
            expected: digest(i),
            current: if matches!(action, Action::Create) {
                None
            } else {
                digest(i + 1)
            },
            action,
            blobs: BlobCounts {
                upload: if writes { 3 } else { 0 },
                bytes: if writes { 12_345_678 } else { 0 },
                ..Default::default()
            },
            target: Target {
                entry: 0,
                source: Reference::parse(&source).unwrap(),
                destination: Reference::parse(&destination).unwrap(),
                name: ImageName {
                    repository: format!("library/app{i}"),
                    tag: format!("v{i}"),
                },
                chain: Default::default(),
                chain_name: None,
                platforms: PlatformSelection::Default,
                dest_span: Range::default(),
                pinned: None,
                compressed_for_store: false,
            },
            resolved: None,
            media: Default::default(),
            referrers: None,
            verification: None,
            shown: None,
        }
    }

    /// A plan of `n` targets of which those `changed` picks are created,
    /// updated, rebuilt or failed in turn, the others unchanged.
    fn fake_plan(n: usize, changed: impl Fn(usize) -> bool) -> Plan {
        let mut k = 0;
        let targets: Vec<PlannedTarget> = (0..n)
            .map(|i| {
                let action = if !changed(i) {
                    Action::Unchanged
                } else {
                    k += 1;
                    match k % 4 {
                        0 => Action::Create,
                        1 => Action::Update,
                        2 => Action::Rebuild {
                            reason: "filters".into(),
                        },
                        _ => Action::Failed {
                            error: format!("GET app{i}: 500\nretry later | or not"),
                        },
                    }
                };
                target(i, action)
            })
            .collect();
        let mut totals = Totals {
            targets: n,
            ..Default::default()
        };
        for t in &targets {
            match t.action {
                Action::Create => totals.create += 1,
                Action::Update => totals.update += 1,
                Action::Unchanged => totals.unchanged += 1,
                Action::Rebuild { .. } => totals.rebuild += 1,
                Action::Failed { .. } => totals.failed += 1,
            }
        }
        let writing = totals.create + totals.update + totals.rebuild;
        Plan {
            archives: Vec::new(),
            plan_version: super::super::PLAN_VERSION,
            sync_file: "mirror.yaml".into(),
            sync_file_sha256: "0".repeat(64),
            destinations: vec![
                DestinationTotals {
                    destination: "mirror.example.com".into(),
                    targets: writing,
                    blobs: BlobCounts::default(),
                },
                DestinationTotals {
                    destination: "/srv/airgap".into(),
                    ..Default::default()
                },
            ],
            targets,
            totals,
            requests: Default::default(),
            pull_quotas: Vec::new(),
            prune: Vec::new(),
            warnings: vec!["entry 3 (registry://registry.example.com/x:*) matched no image".into()],
            shard: None,
            assignment: None,
            shards: None,
            stores: Default::default(),
            shared: Vec::new(),
            graph: Default::default(),
        }
    }

    #[test]
    fn remembered_mounts_are_counted_apart_as_mounts_that_may_upload() {
        let mut plan = fake_plan(2, |_| true);
        let remembered = BlobCounts {
            upload: 1,
            bytes: 1000,
            mount: 2,
            remembered: 3,
            remembered_bytes: 3 * 1024 * 1024,
            ..Default::default()
        };
        plan.targets[0].blobs = remembered.clone();
        plan.totals.blobs = remembered;
        assert_eq!(
            blobs(&plan.targets[0]),
            "1 up (1000 B), 2 mount, 3 mount from remembered repositories (may upload 3.0 MiB)"
        );
        let line = summary_line(&plan);
        assert!(
            line.contains("2 to mount, 3 mount from remembered repositories (may upload 3.0 MiB), 0 present"),
            "{line}"
        );
        // Without any, the counts read as they always did.
        plan.totals.blobs.remembered = 0;
        assert!(!summary_line(&plan).contains("remembered"));
        let json = serde_json::to_value(&plan.targets[1].blobs).unwrap();
        assert!(json.get("remembered").is_none(), "{json}");
    }

    #[test]
    fn markdown_of_ten_thousand_targets_fits_a_comment_and_lists_every_change() {
        let plan = fake_plan(10_000, |i| i % 20 == 0 && i < 9_980); // 499 changed
        let md = markdown(&plan);
        assert!(md.chars().count() < 65_536, "{} characters", md.chars().count());
        for t in plan.targets.iter().filter(|t| !matches!(t.action, Action::Unchanged)) {
            assert!(
                md.contains(&format!("`{}`", t.destination())),
                "{} missing",
                t.destination()
            );
        }
        assert!(
            md.contains("<details><summary>9501 unchanged targets</summary>"),
            "{md}"
        );
        let listed = md.lines().filter(|l| l.starts_with("- `registry://")).count();
        assert_eq!(listed, MARKDOWN_UNCHANGED_LISTED);
        assert!(md.contains("- … and 9451 more"));
        let warning = md.find("matched no image").unwrap();
        assert!(warning < md.find("| | ").unwrap(), "warnings go above the table");
        assert!(md
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("**Totals:** 10000 targets: 124 to create, 125 to update"));
        assert!(!md.contains("rows left out"));
        // A failure's message stays on its row.
        assert!(md
            .lines()
            .any(|l| l.starts_with("| ! |") && l.contains("500 retry later \\| or not")));
        assert!(md.find("| ! |").unwrap() < md.find("| + |").unwrap(), "failures first");
    }

    #[test]
    fn a_markdown_table_past_sixty_thousand_characters_is_cut_and_says_so() {
        let plan = fake_plan(10_000, |_| true);
        let md = markdown(&plan);
        assert!(md.chars().count() < 65_536, "{} characters", md.chars().count());
        let table: usize = md.lines().filter(|l| l.starts_with("| ")).map(|l| l.len() + 1).sum();
        assert!(table <= MARKDOWN_TABLE_LIMIT, "{table}");
        let rows = md
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| |"))
            .count();
        assert!(rows > 100, "{rows} rows");
        assert!(
            md.contains(&format!("**{} more rows left out**", 10_000 - rows)),
            "{}",
            &md[md.len() - 600..]
        );
        assert!(md.contains("`occy sync mirror.yaml --plan -O json > plan.json`"));
        assert!(!md.contains("<details>"), "nothing is unchanged");
    }

    #[test]
    fn nothing_to_do_is_one_line() {
        let plan = fake_plan(16, |_| false);
        let text = text(&plan, false);
        assert!(text.contains("Nothing to do: 16 targets up to date."), "{text}");
        assert!(!text.contains("Per destination"), "{text}");
        assert!(!text.contains(" → "), "no target lines: {text}");
        let md = markdown(&plan);
        assert!(
            md.contains("Nothing to do: 16 targets up to date.") && !md.contains("| | source"),
            "{md}"
        );
    }

    #[test]
    fn only_destinations_with_work_are_listed() {
        let plan = fake_plan(16, |i| i == 0);
        let text = text(&plan, false);
        assert!(
            text.contains("Per destination:\n  mirror.example.com: 1 targets to write"),
            "{text}"
        );
        assert!(!text.contains("/srv/airgap:"), "{text}");
    }
}

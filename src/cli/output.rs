//! Output helpers shared by commands: human sizes and plain-text tables.

pub use crate::image::human_size;

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<w$}  ", c, w = widths[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The run's summary as a table, for people.
pub fn summary_text(report: &crate::exec::sync::ApplyReport) -> String {
    let mut rows: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|o| {
            let detail = match (&o.report, &o.error) {
                (_, Some(e)) => e.lines().next().unwrap_or_default().to_string(),
                (Some(r), None) => {
                    let mut d = format!(
                        "{} copied, {} mounted, {} present, {}",
                        r.layers_copied,
                        r.layers_mounted,
                        r.layers_skipped.saturating_sub(r.layers_mounted),
                        human_size(r.bytes)
                    );
                    if r.referrers > 0 {
                        d.push_str(&format!(", +{} referrers", r.referrers));
                    }
                    d
                }
                (None, None) => String::new(),
            };
            // The signer, in short: who (and the form), for the report.
            let detail = match (&o.signed_by, &o.error) {
                (Some(who), None) => {
                    let who = who.split(", logged").next().unwrap_or(who);
                    let who = who.split(", signed ").next().unwrap_or(who);
                    if detail.is_empty() {
                        format!("signed by {who}")
                    } else {
                        format!("{detail}; signed by {who}")
                    }
                }
                _ => detail,
            };
            vec![
                o.status.to_string(),
                o.destination.clone(),
                o.digest
                    .as_ref()
                    .map(|d| d.short().to_string())
                    .unwrap_or_else(|| "-".into()),
                o.check.clone().unwrap_or_else(|| "-".into()),
                detail,
            ]
        })
        .collect();
    rows.extend(
        report
            .pruned
            .iter()
            .map(|d| vec!["pruned".into(), d.clone(), "-".into(), "-".into(), "tag deleted".into()]),
    );
    rows.extend(report.prune_failed.iter().map(|f| {
        vec![
            "failed".into(),
            f.destination.clone(),
            "-".into(),
            "-".into(),
            format!("not pruned: {}", f.error.lines().next().unwrap_or_default()),
        ]
    }));
    rows.extend(report.archives.iter().map(|a| {
        let depends = if a.depends_on.is_empty() {
            String::new()
        } else {
            format!("; depends on archive {}", a.depends_on.join(", "))
        };
        vec![
            "archive".into(),
            a.path.display().to_string(),
            "-".into(),
            "sealed".into(),
            format!(
                "{} images, {} referrers, {} blobs, {} in {} volume(s){depends}",
                a.images,
                a.referrers,
                a.blobs,
                human_size(a.bytes),
                a.volumes
            ),
        ]
    }));
    rows.extend(report.archives_failed.iter().map(|f| {
        vec![
            "failed".into(),
            f.destination.clone(),
            "-".into(),
            "-".into(),
            format!("not sealed: {}", f.error.lines().next().unwrap_or_default()),
        ]
    }));
    let mut out = table(&["status", "destination", "digest", "check", "detail"], &rows);
    out.push_str(&format!(
        "\n{} written, {} unchanged, {} failed{}{}; {} layers copied ({}), {} mounted{}, in {:.1}s\n",
        report.written,
        report.unchanged,
        report.failed,
        if report.checks_skipped == 0 {
            String::new()
        } else {
            format!(", {} checks skipped", report.checks_skipped)
        },
        if report.pruned.is_empty() && report.prune_failed.is_empty() {
            String::new()
        } else {
            format!(", {} tags pruned", report.pruned.len())
        },
        report.layers_copied,
        human_size(report.bytes),
        report.layers_mounted,
        match (report.mounts_declined, report.uploads_duplicated) {
            (0, 0) => String::new(),
            (d, 0) => format!(" ({d} mounts declined, uploaded instead)"),
            (d, u) => format!(
                " ({d} mounts declined, uploaded instead; {u} uploaded again after the wait for another shard ran out)"
            ),
        },
        std::time::Duration::from_secs_f64(report.seconds).as_secs_f64()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MiB");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}

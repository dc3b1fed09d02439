//! Merging run reports: the JSON reports of a sharded sync (`occy -O json
//! sync --shard I/N`, one per shard) read back and added up into one
//! summary — targets by status, failures with their shard, bytes, layers,
//! time — and which shards are missing, N being read from the reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shard a run did: `index` of `count` (from 0).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardOf {
    pub index: usize,
    pub count: usize,
}

/// A run report as `occy -O json sync` writes it (the parts merged).
#[derive(Debug, Deserialize)]
struct ReadReport {
    targets: Vec<ReadTarget>,
    written: usize,
    unchanged: usize,
    failed: usize,
    bytes: u64,
    layers_copied: usize,
    layers_mounted: usize,
    #[serde(default)]
    pruned: Vec<String>,
    #[serde(default)]
    prune_failed: Vec<ReadPruneFailure>,
    seconds: f64,
    #[serde(default)]
    shard: Option<ShardOf>,
}

#[derive(Debug, Deserialize)]
struct ReadTarget {
    source: String,
    destination: String,
    status: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    report: Option<ReadCopy>,
}

#[derive(Debug, Deserialize)]
struct ReadCopy {
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct ReadPruneFailure {
    destination: String,
    error: String,
}

/// One shard's report, in brief.
#[derive(Debug, Clone, Serialize)]
pub struct ShardLine {
    pub shard: usize,
    /// The file it was read from.
    pub file: String,
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// A target that failed, with the shard that had it.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub shard: usize,
    pub source: String,
    pub destination: String,
    pub error: String,
}

/// One target of the merged run.
#[derive(Debug, Clone, Serialize)]
pub struct MergedTarget {
    pub shard: usize,
    pub source: String,
    pub destination: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Layer bytes written to this target's destination.
    pub bytes: u64,
}

/// The reports of a sharded run, added up.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    /// N: how many shards the run was split into.
    pub shards: usize,
    /// The shards that reported, in order.
    pub reports: Vec<ShardLine>,
    /// Shards without a report.
    pub missing: Vec<usize>,
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Layer bytes written to destinations.
    pub bytes: u64,
    pub layers_copied: usize,
    pub layers_mounted: usize,
    pub pruned: usize,
    pub prune_failed: usize,
    /// The longest shard's time (shards run side by side).
    pub seconds: f64,
    /// Failed targets (and tags `--prune` could not delete), with their shard.
    pub failures: Vec<Failure>,
    pub targets: Vec<MergedTarget>,
}

impl Merged {
    /// 1 when a target failed or a shard's report is missing, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0 || self.prune_failed > 0 || !self.missing.is_empty())
    }
}

/// Merges reports given as (file name, JSON text). A report without a
/// shard is the whole run (shard 0 of 1). Reports of different N, two
/// reports of one shard, and text that is not a report are errors (2).
pub fn merge(reports: &[(String, String)]) -> Result<Merged> {
    if reports.is_empty() {
        return Err(Error::usage(
            "occy report needs the JSON reports of the shards (occy -O json sync … --shard I/N > FILE)",
        ));
    }
    let mut by_shard: BTreeMap<usize, (String, ReadReport)> = BTreeMap::new();
    let mut count: Option<(usize, String)> = None;
    for (file, text) in reports {
        let r: ReadReport = serde_json::from_str(text).map_err(|e| {
            Error::usage(format!(
                "{file}: not a report of occy sync ({e}); write one with: occy -O json sync FILE --shard I/N > {file}"
            ))
        })?;
        let shard = r.shard.unwrap_or(ShardOf { index: 0, count: 1 });
        if shard.count == 0 || shard.index >= shard.count {
            return Err(Error::usage(format!(
                "{file}: shard {} of {} is not a shard (expected an index from 0 to N-1)",
                shard.index, shard.count
            )));
        }
        match &count {
            Some((n, first)) if *n != shard.count => {
                return Err(Error::usage(format!(
                    "{file} is a report of a run in {} shard(s), {first} of a run in {n}: give the reports of one run",
                    shard.count
                )))
            }
            Some(_) => {}
            None => count = Some((shard.count, file.clone())),
        }
        if let Some((other, _)) = by_shard.get(&shard.index) {
            return Err(Error::usage(format!(
                "{other} and {file} are both reports of shard {}/{}: give one report per shard",
                shard.index, shard.count
            )));
        }
        by_shard.insert(shard.index, (file.clone(), r));
    }
    let shards = count.map(|(n, _)| n).unwrap_or(1);
    let mut m = Merged {
        shards,
        reports: Vec::new(),
        missing: (0..shards).filter(|i| !by_shard.contains_key(i)).collect(),
        written: 0,
        unchanged: 0,
        failed: 0,
        bytes: 0,
        layers_copied: 0,
        layers_mounted: 0,
        pruned: 0,
        prune_failed: 0,
        seconds: 0.0,
        failures: Vec::new(),
        targets: Vec::new(),
    };
    for (shard, (file, r)) in by_shard {
        m.reports.push(ShardLine {
            shard,
            file,
            written: r.written,
            unchanged: r.unchanged,
            failed: r.failed,
            bytes: r.bytes,
            seconds: r.seconds,
        });
        m.written += r.written;
        m.unchanged += r.unchanged;
        m.failed += r.failed;
        m.bytes += r.bytes;
        m.layers_copied += r.layers_copied;
        m.layers_mounted += r.layers_mounted;
        m.pruned += r.pruned.len();
        m.prune_failed += r.prune_failed.len();
        m.seconds = m.seconds.max(r.seconds);
        for t in r.targets {
            if t.status == "failed" {
                m.failures.push(Failure {
                    shard,
                    source: t.source.clone(),
                    destination: t.destination.clone(),
                    error: t.error.clone().unwrap_or_default(),
                });
            }
            m.targets.push(MergedTarget {
                shard,
                bytes: t.report.as_ref().map(|c| c.bytes).unwrap_or(0),
                source: t.source,
                destination: t.destination,
                status: t.status,
                digest: t.digest,
            });
        }
        for p in r.prune_failed {
            m.failures.push(Failure {
                shard,
                source: String::new(),
                destination: p.destination,
                error: format!("not pruned: {}", p.error),
            });
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard: Option<(usize, usize)>, written: usize, failed: usize) -> String {
        let mut targets = Vec::new();
        for i in 0..written {
            targets.push(serde_json::json!({
                "source": format!("registry://src/a{i}:1"), "destination": format!("registry://dst/a{i}:1"),
                "status": "written", "digest": "sha256:00", "seconds": 1.0,
                "report": {"bytes": 100, "layers_copied": 1, "layers_mounted": 0}
            }));
        }
        for i in 0..failed {
            targets.push(serde_json::json!({
                "source": format!("registry://src/f{i}:1"), "destination": format!("registry://dst/f{i}:1"),
                "status": "failed", "error": "manifest unknown", "seconds": 1.0
            }));
        }
        let mut r = serde_json::json!({
            "targets": targets, "written": written, "unchanged": 1, "failed": failed,
            "bytes": 100 * written, "layers_copied": written, "layers_mounted": 2,
            "mounts_declined": 0, "layers_rewritten": 0, "checks_skipped": 0,
            "pruned": [], "prune_failed": [], "seconds": 2.5 + written as f64
        });
        if let Some((index, count)) = shard {
            r["shard"] = serde_json::json!({"index": index, "count": count});
        }
        r.to_string()
    }

    fn files(rs: &[String]) -> Vec<(String, String)> {
        rs.iter()
            .enumerate()
            .map(|(i, r)| (format!("r{i}.json"), r.clone()))
            .collect()
    }

    #[test]
    fn shards_add_up() {
        let m = merge(&files(&[
            report(Some((0, 3)), 2, 0),
            report(Some((2, 3)), 3, 0),
            report(Some((1, 3)), 1, 0),
        ]))
        .unwrap();
        assert_eq!(m.shards, 3);
        assert!(m.missing.is_empty());
        assert_eq!((m.written, m.unchanged, m.failed), (6, 3, 0));
        assert_eq!(m.bytes, 600);
        assert_eq!(m.layers_copied, 6);
        assert_eq!(m.layers_mounted, 6);
        assert_eq!(m.seconds, 5.5, "the longest shard");
        assert_eq!(m.reports.iter().map(|r| r.shard).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(m.targets.len(), 9 - 3);
        assert_eq!(m.exit_code(), 0);
    }

    #[test]
    fn a_missing_shard_and_a_failure_are_named() {
        let m = merge(&files(&[report(Some((0, 3)), 2, 1), report(Some((2, 3)), 1, 0)])).unwrap();
        assert_eq!(m.missing, [1]);
        assert_eq!(m.failures.len(), 1);
        assert_eq!(m.failures[0].shard, 0);
        assert_eq!(m.failures[0].destination, "registry://dst/f0:1");
        assert_eq!(m.exit_code(), 1);
    }

    #[test]
    fn a_whole_run_is_shard_0_of_1() {
        let m = merge(&files(&[report(None, 2, 0)])).unwrap();
        assert_eq!((m.shards, m.written), (1, 2));
        assert_eq!(m.exit_code(), 0);
    }

    #[test]
    fn reports_that_do_not_belong_together_are_refused() {
        let e = merge(&files(&[report(Some((0, 3)), 1, 0), report(Some((1, 2)), 1, 0)])).unwrap_err();
        assert!(
            e.to_string().contains("r1.json is a report of a run in 2 shard(s)"),
            "{e}"
        );
        let e = merge(&files(&[report(Some((1, 3)), 1, 0), report(Some((1, 3)), 1, 0)])).unwrap_err();
        assert!(e.to_string().contains("both reports of shard 1/3"), "{e}");
        let e = merge(&[("x.json".into(), "{\"plan\": 1}".into())]).unwrap_err();
        assert!(e.to_string().contains("x.json: not a report of occy sync"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}

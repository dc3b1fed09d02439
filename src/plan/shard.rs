//! Sharding: splits a sync into N independent parts (`occy sync --shard I/N`) that keep images sharing a layer together.
//!
//! Every shard process expands and resolves the whole sync file, computes the
//! same partition from what it resolved, and then diffs, counts and applies
//! only its own targets. The partition depends on nothing but the targets'
//! names and the blobs their sources resolve to: not on the order of the
//! entries in the file, not on what the destinations hold already (so a shard
//! that ran earlier does not move targets between shards), not on hash-map
//! order.
//!
//! 1. A *unit* is a target, named by its destination and source.
//! 2. Units writing the same blob to the same destination store (a registry
//!    host, an OCI layout, a directory; a tarball is a store of its own) are
//!    joined (union-find): the connected components are *groups*. A group in
//!    one shard means each of its blobs is uploaded by one process only, and
//!    mounted or found present by the others of that shard.
//! 3. A group bigger than its fair share (the distinct blob bytes of the
//!    whole sync / N) by more than a quarter is split into k = ⌈bytes / fair⌉
//!    parts: the blob shared by the most of its targets (the smallest of
//!    those on a tie) is cut, again and again, until no remaining piece is
//!    more than a quarter over bytes / k; the pieces, largest first, then go
//!    to the part where they add the fewest bytes without making it more than
//!    a quarter over (else to the part that ends smallest). The cut blobs are
//!    uploaded once per shard holding them: the *duplicated bytes* the plan
//!    reports.
//! 4. Groups and parts go into N shards largest first (ties by the smallest
//!    target name), each into the shard where the shard's bytes end up
//!    smallest (then the lighter shard, the one with fewer targets, the lower
//!    index).
//!
//! A target whose source did not resolve has no blobs: it is a group of its
//! own with no bytes, and the shard it falls in reports it failed. The other
//! shards cannot know its layers, so they cannot be sure the partition they
//! computed is the one every machine computes: they report the failure too
//! (exit 1), so no shard ends "done" on a partition that might differ.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::{platforms_key, Action, Plan, PlannedTarget, Resolutions, Target};
use crate::error::{Error, Result};
use crate::image::human_size;
use crate::reference::Reference;

/// The most shards a sync splits into.
pub const MAX_SHARDS: usize = 10_000;

/// Where `--shard auto/N` reads the index: set by Kubernetes for each pod of
/// an Indexed Job (`completionMode: Indexed`).
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// One shard of a sync: `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// A shard, if `index` is one of `count`.
    pub fn new(index: usize, count: usize) -> std::result::Result<Shard, String> {
        check_count(count)?;
        if index >= count {
            return Err(format!(
                "shard index {index} is out of range for {count} shards (0..={})",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }
}

fn check_count(count: usize) -> std::result::Result<(), String> {
    if (1..=MAX_SHARDS).contains(&count) {
        Ok(())
    } else {
        Err(format!("the shard count must be 1 to {MAX_SHARDS}, not {count}"))
    }
}

/// Parses a shard count (`--shards N`).
pub fn parse_count(text: &str) -> std::result::Result<usize, String> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of shards (1 to {MAX_SHARDS}), got {text:?}"))?;
    check_count(n)?;
    Ok(n)
}

/// `--shard` as written: `I/N`, or `auto/N` for the index from
/// [`JOB_INDEX_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Index(Shard),
    Auto { count: usize },
}

impl ShardArg {
    /// Parses `I/N` or `auto/N`.
    pub fn parse(text: &str) -> std::result::Result<ShardArg, String> {
        let Some((index, count)) = text.split_once('/') else {
            return Err(format!(
                "expected I/N (shard I of N, from 0), or auto/N to take I from {JOB_INDEX_ENV}; got {text:?}"
            ));
        };
        let count = parse_count(count)?;
        if index.trim() == "auto" {
            return Ok(ShardArg::Auto { count });
        }
        let index: usize = index.trim().parse().map_err(|_| {
            format!(
                "expected a shard index (0 to {}) or auto before the /, got {index:?}",
                count - 1
            )
        })?;
        Shard::new(index, count).map(ShardArg::Index)
    }

    /// The shard this run is; `job_index` is the value of
    /// [`JOB_INDEX_ENV`] (None when unset).
    pub fn resolve(self, job_index: Option<&str>) -> Result<Shard> {
        match self {
            ShardArg::Index(s) => Ok(s),
            ShardArg::Auto { count } => {
                let Some(text) = job_index else {
                    return Err(Error::usage(format!(
                        "--shard auto/{count} takes the shard index from {JOB_INDEX_ENV}, which is not set \
                         (Kubernetes sets it in Indexed Jobs); give the index instead: --shard I/{count}"
                    )));
                };
                let index: usize = text.trim().parse().map_err(|_| {
                    Error::usage(format!(
                        "{JOB_INDEX_ENV}={text:?} (for --shard auto/{count}) is not a shard index"
                    ))
                })?;
                Shard::new(index, count)
                    .map_err(|e| Error::usage(format!("{JOB_INDEX_ENV}={text} (for --shard auto/{count}): {e}")))
            }
        }
    }
}

/// What the planner does with shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// Plan (and apply) only this shard's targets.
    Run(Shard),
    /// Plan everything and record which of N shards each target is in.
    Assign(usize),
}

/// One target as the partition sees it.
#[derive(Debug, Clone)]
pub struct Item {
    /// The same on every machine: destination, then source.
    pub key: String,
    /// The blobs it writes, as the work graph names them: (the store
    /// where it is shared, blob, size).
    pub blobs: Vec<(String, String, u64)>,
}

/// What one shard gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardLoad {
    pub targets: usize,
    /// Bytes of the distinct blobs its targets write.
    pub bytes: u64,
    /// Of those, bytes of blobs another shard writes to the same store too.
    pub shared_bytes: u64,
}

/// The partition of items into shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The shard of each item, in the order the items were given.
    pub shard_of: Vec<usize>,
    pub shards: Vec<ShardLoad>,
    /// Bytes of the distinct blobs of all items.
    pub total_bytes: u64,
    /// Bytes written more than once because a group was split: each blob's
    /// size times the number of shards writing it, less one.
    pub duplicated_bytes: u64,
    /// Groups of targets sharing blobs (a target sharing nothing is a group).
    pub groups: usize,
    /// Groups too big for one shard, split.
    pub split_groups: usize,
}

/// A set of units placed together.
struct Piece {
    units: Vec<usize>,
    blobs: BTreeSet<usize>,
    bytes: u64,
    targets: usize,
}

struct Units {
    /// Per unit: the items with its key.
    items: Vec<Vec<usize>>,
    /// Per unit: its distinct blobs (ids, ascending).
    blobs: Vec<Vec<usize>>,
    /// Per blob: its size.
    sizes: Vec<u64>,
    /// Per blob: the units writing it (ascending).
    users: Vec<Vec<usize>>,
}

impl Units {
    /// Units sorted by key (items with one key are one unit), blobs by (store, digest).
    fn new(items: &[Item]) -> Units {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            by_key.entry(it.key.as_str()).or_default().push(i);
        }
        let mut ids: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for it in items {
            for (store, digest, size) in &it.blobs {
                ids.entry((store.as_str(), digest.as_str())).or_insert(*size);
            }
        }
        let index: HashMap<(&str, &str), usize> = ids.keys().enumerate().map(|(i, k)| (*k, i)).collect();
        let sizes: Vec<u64> = ids.values().copied().collect();
        let mut unit_items = Vec::new();
        let mut unit_blobs = Vec::new();
        let mut users = vec![Vec::new(); sizes.len()];
        for (u, members) in by_key.into_values().enumerate() {
            let mut blobs: Vec<usize> = members
                .iter()
                .flat_map(|&i| items[i].blobs.iter().map(|(s, d, _)| index[&(s.as_str(), d.as_str())]))
                .collect();
            blobs.sort_unstable();
            blobs.dedup();
            for &b in &blobs {
                users[b].push(u);
            }
            unit_items.push(members);
            unit_blobs.push(blobs);
        }
        Units {
            items: unit_items,
            blobs: unit_blobs,
            sizes,
            users,
        }
    }

    fn piece(&self, mut units: Vec<usize>) -> Piece {
        units.sort_unstable();
        let blobs: BTreeSet<usize> = units.iter().flat_map(|&u| self.blobs[u].iter().copied()).collect();
        Piece {
            bytes: blobs.iter().map(|&b| self.sizes[b]).sum(),
            targets: units.iter().map(|&u| self.items[u].len()).sum(),
            units,
            blobs,
        }
    }

    /// The connected components of `units` joined by blobs not in `cut`,
    /// each ascending, ordered by their first unit.
    fn components(&self, units: &[usize], cut: &HashSet<usize>) -> Vec<Vec<usize>> {
        let pos: HashMap<usize, usize> = units.iter().enumerate().map(|(i, &u)| (u, i)).collect();
        let mut parent: Vec<usize> = (0..units.len()).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        for &u in units {
            for &b in &self.blobs[u] {
                if cut.contains(&b) {
                    continue;
                }
                for v in &self.users[b] {
                    if let Some(&j) = pos.get(v) {
                        let (a, c) = (find(&mut parent, pos[&u]), find(&mut parent, j));
                        if a != c {
                            // The smaller position is the root: components keep the input order.
                            parent[a.max(c)] = a.min(c);
                        }
                    }
                }
            }
        }
        let mut out: Vec<Vec<usize>> = Vec::new();
        let mut slot: HashMap<usize, usize> = HashMap::new();
        for (i, &u) in units.iter().enumerate() {
            let root = find(&mut parent, i);
            let s = *slot.entry(root).or_insert_with(|| {
                out.push(Vec::new());
                out.len() - 1
            });
            out[s].push(u);
        }
        out
    }

    /// Splits a group of `bytes` into `k` parts, cutting the most shared blobs.
    fn split(&self, group: Vec<usize>, bytes: u64, k: usize) -> Vec<Piece> {
        let limit = bytes.div_ceil(k as u64);
        // Pieces up to a quarter over the mean part are left whole.
        let part_cap = limit + limit / 4;
        let mut cut: HashSet<usize> = HashSet::new();
        let mut pieces: Vec<Piece> = vec![self.piece(group)];
        while let Some(at) = biggest_over(&pieces, part_cap) {
            let inside: HashSet<usize> = pieces[at].units.iter().copied().collect();
            // The blob most of its units share; the smaller, then the first, on a tie.
            let best = pieces[at]
                .blobs
                .iter()
                .filter(|b| !cut.contains(b))
                .map(|&b| (self.users[b].iter().filter(|u| inside.contains(u)).count(), b))
                .filter(|(n, _)| *n > 1)
                .max_by(|(n1, b1), (n2, b2)| n1.cmp(n2).then(self.sizes[*b2].cmp(&self.sizes[*b1])).then(b2.cmp(b1)));
            let Some((_, blob)) = best else { break };
            cut.insert(blob);
            let piece = pieces.remove(at);
            let parts = self.components(&piece.units, &cut);
            for (i, p) in parts.into_iter().enumerate() {
                pieces.insert(at + i, self.piece(p));
            }
        }
        // Pack the pieces into k parts: each into the part where it adds the
        // fewest bytes among those it fits in, else where the part ends smallest.
        let mut parts: Vec<Piece> = (0..k).map(|_| self.piece(Vec::new())).collect();
        for p in sorted(pieces) {
            let added: Vec<u64> = parts.iter().map(|q| self.added(&p, &q.blobs)).collect();
            let fitting = (0..k)
                .filter(|&i| parts[i].bytes + added[i] <= part_cap)
                .min_by_key(|&i| (added[i], parts[i].bytes, i));
            let best = fitting
                .or_else(|| (0..k).min_by_key(|&i| (parts[i].bytes + added[i], added[i], i)))
                .unwrap_or(0);
            let mut units = std::mem::take(&mut parts[best].units);
            units.extend(p.units);
            parts[best] = self.piece(units);
        }
        parts.retain(|p| !p.units.is_empty());
        parts
    }

    /// Bytes of `p`'s blobs not in `have`.
    fn added(&self, p: &Piece, have: &BTreeSet<usize>) -> u64 {
        p.blobs.difference(have).map(|&b| self.sizes[b]).sum()
    }
}

/// The biggest piece over `cap` that has more than one unit (the first on a tie).
fn biggest_over(pieces: &[Piece], cap: u64) -> Option<usize> {
    pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| p.bytes > cap && p.units.len() > 1)
        .max_by(|(i, a), (j, b)| a.bytes.cmp(&b.bytes).then(j.cmp(i)))
        .map(|(i, _)| i)
}

/// Largest first, then by the first unit (the smallest key).
fn sorted(mut pieces: Vec<Piece>) -> Vec<Piece> {
    pieces.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.units.first().cmp(&b.units.first())));
    pieces
}

/// Partitions `items` into `count` shards (see the module documentation).
pub fn partition(items: &[Item], count: usize) -> Partition {
    let count = count.max(1);
    let units = Units::new(items);
    let all: Vec<usize> = (0..units.items.len()).collect();
    let groups = units.components(&all, &HashSet::new());
    let total_bytes: u64 = units.sizes.iter().sum();
    let fair = total_bytes.div_ceil(count as u64);
    let cap = fair + fair / 4;
    let n_groups = groups.len();
    let mut split_groups = 0;
    let mut pieces: Vec<Piece> = Vec::new();
    for g in groups {
        let p = units.piece(g);
        if p.bytes > cap && p.units.len() > 1 {
            let k = (p.bytes.div_ceil(fair.max(1)) as usize).clamp(2, count.min(p.units.len()));
            split_groups += 1;
            let bytes = p.bytes;
            pieces.extend(units.split(p.units, bytes, k));
        } else {
            pieces.push(p);
        }
    }
    let mut shards: Vec<Piece> = (0..count).map(|_| units.piece(Vec::new())).collect();
    let mut shard_of_unit = vec![0; units.items.len()];
    for p in sorted(pieces) {
        let best = (0..count)
            .min_by_key(|&i| {
                let s = &shards[i];
                (s.bytes + units.added(&p, &s.blobs), s.bytes, s.targets, i)
            })
            .unwrap_or(0);
        for &u in &p.units {
            shard_of_unit[u] = best;
        }
        let s = &mut shards[best];
        s.bytes += units.added(&p, &s.blobs);
        s.targets += p.targets;
        s.blobs.extend(p.blobs.iter().copied());
        s.units.extend(p.units.iter().copied());
    }
    // Blobs written by more than one shard.
    let mut holders = vec![0usize; units.sizes.len()];
    for s in &shards {
        for &b in &s.blobs {
            holders[b] += 1;
        }
    }
    let duplicated_bytes = holders
        .iter()
        .zip(&units.sizes)
        .map(|(&h, &size)| size * h.saturating_sub(1) as u64)
        .sum();
    let loads = shards
        .iter()
        .map(|s| ShardLoad {
            targets: s.targets,
            bytes: s.bytes,
            shared_bytes: s
                .blobs
                .iter()
                .filter(|&&b| holders[b] > 1)
                .map(|&b| units.sizes[b])
                .sum(),
        })
        .collect();
    let mut shard_of = vec![0; items.len()];
    for (u, members) in units.items.iter().enumerate() {
        for &i in members {
            shard_of[i] = shard_of_unit[u];
        }
    }
    Partition {
        shard_of,
        shards: loads,
        total_bytes,
        duplicated_bytes,
        groups: n_groups,
        split_groups,
    }
}

/// The name of a target the partition sorts by: the same on every machine.
pub fn target_key(destination: &str, source: &str) -> String {
    format!("{destination} <- {source}")
}

/// A source as the partition names it: a registry image by its tag when it
/// has one, so a run pinned to digests (`--apply plan.json`) sorts its targets
/// like the run that made the plan.
fn source_key(source: &Reference) -> String {
    source.by_tag().to_string()
}

/// What a sharded run of one shard reports about itself (`"shard"` in the
/// JSON plan).
#[derive(Debug, Clone, Serialize)]
pub struct ShardInfo {
    /// `I/N`.
    pub shard: String,
    pub index: usize,
    pub count: usize,
    /// Targets of the whole sync.
    pub all_targets: usize,
    #[serde(flatten)]
    pub load: ShardLoad,
    /// Bytes of the whole sync written by more than one shard.
    pub duplicated_bytes: u64,
    /// Targets of other shards that failed to resolve: the partition could
    /// not use their layers, so this shard's part is not certain.
    pub failed_elsewhere: Vec<String>,
}

/// Which shard each target is in (`--plan --shards N`).
#[derive(Debug, Clone)]
pub struct Assignment {
    pub count: usize,
    pub partition: Partition,
    /// (destination, source) → shard.
    pub shard_of: HashMap<(String, String), usize>,
}

/// The targets left for the planner after sharding.
pub struct Selected {
    pub targets: Vec<Target>,
    pub failed: Vec<PlannedTarget>,
    pub info: Option<ShardInfo>,
    pub assignment: Option<Assignment>,
}

/// Partitions the expanded, resolved targets and keeps this shard's
/// (`Run`), or keeps all and records where each goes (`Assign`).
pub fn select(
    sharding: Option<Sharding>,
    targets: Vec<Target>,
    failed: Vec<PlannedTarget>,
    resolutions: &Resolutions,
) -> Selected {
    let Some(sharding) = sharding else {
        return Selected {
            targets,
            failed,
            info: None,
            assignment: None,
        };
    };
    let count = match sharding {
        Sharding::Run(s) => s.count,
        Sharding::Assign(n) => n,
    };
    // Items: the failed first, then the targets (the order does not matter).
    let mut items: Vec<Item> = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    // Why an item has no blobs, for the other shards' report.
    let mut errors: Vec<Option<String>> = Vec::new();
    for f in &failed {
        items.push(Item {
            key: target_key(&f.destination, &f.source),
            blobs: Vec::new(),
        });
        names.push((f.destination.clone(), f.source.clone()));
        errors.push(match &f.action {
            Action::Failed { error } => Some(error.clone()),
            _ => None,
        });
    }
    // Which blob goes where, as the work graph says it (its shape: every
    // blob counted, nothing asked of the stores).
    let shaped: Vec<PlannedTarget> = targets
        .iter()
        .map(|t| {
            let mut p = super::planned_target(t.clone());
            p.resolved = resolutions
                .get(&(t.source.to_string(), platforms_key(&t.platforms)))
                .and_then(|r| r.as_ref().ok().cloned());
            p
        })
        .collect();
    let mut blobs_of = super::graph::shape(&shaped).blobs_by_target();
    for (i, t) in targets.iter().enumerate() {
        let destination = t.destination.to_string();
        let source = t.source.to_string();
        let resolved = resolutions.get(&(source.clone(), platforms_key(&t.platforms)));
        let (blobs, error) = match resolved {
            Some(Ok(_)) => (blobs_of.remove(&i).unwrap_or_default(), None),
            Some(Err(e)) => (Vec::new(), Some(e.clone())),
            None => (Vec::new(), Some("the source was not resolved".to_string())),
        };
        items.push(Item {
            key: target_key(&destination, &source_key(&t.source)),
            blobs,
        });
        names.push((destination, source));
        errors.push(error);
    }
    let partition = partition(&items, count);
    match sharding {
        Sharding::Assign(count) => {
            let shard_of = names.into_iter().zip(partition.shard_of.iter().copied()).collect();
            Selected {
                targets,
                failed,
                info: None,
                assignment: Some(Assignment {
                    count,
                    partition,
                    shard_of,
                }),
            }
        }
        Sharding::Run(shard) => {
            let mine = |i: usize| partition.shard_of[i] == shard.index;
            let failed_elsewhere: Vec<String> = (0..items.len())
                .filter(|&i| !mine(i))
                .filter_map(|i| {
                    errors[i].as_ref().map(|e| {
                        format!(
                            "{} → {} (shard {}/{}): {e}",
                            names[i].1, names[i].0, partition.shard_of[i], shard.count
                        )
                    })
                })
                .collect();
            let n_failed = failed.len();
            let failed: Vec<PlannedTarget> = failed
                .into_iter()
                .enumerate()
                .filter(|(i, _)| mine(*i))
                .map(|(_, f)| f)
                .collect();
            let targets: Vec<Target> = targets
                .into_iter()
                .enumerate()
                .filter(|(i, _)| mine(n_failed + i))
                .map(|(_, t)| t)
                .collect();
            let info = ShardInfo {
                shard: shard.to_string(),
                index: shard.index,
                count: shard.count,
                all_targets: items.len(),
                load: partition.shards.get(shard.index).cloned().unwrap_or_default(),
                duplicated_bytes: partition.duplicated_bytes,
                failed_elsewhere,
            };
            Selected {
                targets,
                failed,
                info: Some(info),
                assignment: None,
            }
        }
    }
}

/// One target in the assignment.
#[derive(Debug, Clone, Serialize)]
pub struct AssignedTarget {
    pub source: String,
    pub destination: String,
    pub action: &'static str,
}

/// One shard in the assignment.
#[derive(Debug, Clone, Serialize)]
pub struct AssignedShard {
    /// `I/N`, as `--shard` takes it.
    pub shard: String,
    pub index: usize,
    pub targets: Vec<AssignedTarget>,
    /// Targets applying this shard writes (the others are up to date or failed).
    pub writes: usize,
    /// Bytes of the distinct blobs its targets write.
    pub bytes: u64,
    /// Of those, bytes of blobs another shard writes to the same store too.
    pub shared_bytes: u64,
}

/// `--plan --shards N -O json`.
#[derive(Debug, Clone, Serialize)]
pub struct AssignmentReport {
    pub assignment_version: u32,
    pub sync_file: String,
    pub sync_file_sha256: String,
    /// N.
    pub shards: usize,
    pub targets: usize,
    /// Bytes of the distinct blobs of all targets.
    pub bytes: u64,
    /// Bytes written by more than one shard (split groups).
    pub duplicated_bytes: u64,
    /// Groups of targets sharing layers; the split ones.
    pub groups: usize,
    pub split_groups: usize,
    pub assignment: Vec<AssignedShard>,
    /// For a CI matrix: `{"include": [{"shard": "0/3"}, …]}`, shards with targets only.
    pub matrix: serde_json::Value,
    pub warnings: Vec<String>,
}

/// The assignment of a plan made with [`Sharding::Assign`], targets listed
/// in the plan's order under their shard.
pub fn report(plan: &Plan, a: &Assignment) -> AssignmentReport {
    let mut shards: Vec<AssignedShard> = a
        .partition
        .shards
        .iter()
        .enumerate()
        .map(|(i, load)| AssignedShard {
            shard: format!("{i}/{}", a.count),
            index: i,
            targets: Vec::new(),
            writes: 0,
            bytes: load.bytes,
            shared_bytes: load.shared_bytes,
        })
        .collect();
    let mut warnings = plan.warnings.clone();
    for t in &plan.targets {
        let Some(&i) = a.shard_of.get(&(t.destination.clone(), t.source.clone())) else {
            warnings.push(format!("{} → {} is in no shard", t.source, t.destination));
            continue;
        };
        let Some(s) = shards.get_mut(i) else { continue };
        if t.action.writes() {
            s.writes += 1;
        }
        s.targets.push(AssignedTarget {
            source: t.source.clone(),
            destination: t.destination.clone(),
            action: t.action.name(),
        });
    }
    let include: Vec<serde_json::Value> = shards
        .iter()
        .filter(|s| !s.targets.is_empty())
        .map(|s| serde_json::json!({ "shard": s.shard }))
        .collect();
    AssignmentReport {
        assignment_version: 1,
        sync_file: plan.sync_file.clone(),
        sync_file_sha256: plan.sync_file_sha256.clone(),
        shards: a.count,
        targets: plan.targets.len(),
        bytes: a.partition.total_bytes,
        duplicated_bytes: a.partition.duplicated_bytes,
        groups: a.partition.groups,
        split_groups: a.partition.split_groups,
        assignment: shards,
        matrix: serde_json::json!({ "include": include }),
        warnings,
    }
}

/// The assignment for people.
pub fn text(r: &AssignmentReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Shards of {} (sha256 {}): {} targets in {} groups sharing layers, {} of blobs, into {} shards",
        r.sync_file,
        &r.sync_file_sha256[..12.min(r.sync_file_sha256.len())],
        r.targets,
        r.groups,
        human_size(r.bytes),
        r.shards
    );
    for s in &r.assignment {
        let _ = writeln!(
            out,
            "\nshard {}: {} targets ({} to write), {}, {} shared with other shards",
            s.shard,
            s.targets.len(),
            s.writes,
            human_size(s.bytes),
            human_size(s.shared_bytes)
        );
        for t in &s.targets {
            let _ = writeln!(out, "  {} {} → {}", t.action, t.source, t.destination);
        }
    }
    let _ = writeln!(out);
    if r.split_groups == 0 {
        let _ = writeln!(out, "No group was split: no blob is written by two shards.");
    } else {
        let _ = writeln!(
            out,
            "{} group(s) too big for one shard were split: {} written by more than one shard.",
            r.split_groups,
            human_size(r.duplicated_bytes)
        );
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// The assignment as a Markdown table.
pub fn markdown(r: &AssignmentReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### occy sync shards: `{}` into {}\n\n{} targets, {} groups sharing layers, {} of blobs, {} duplicated by splitting\n",
        r.sync_file.replace('|', "\\|"),
        r.shards,
        r.targets,
        r.groups,
        human_size(r.bytes),
        human_size(r.duplicated_bytes)
    );
    let _ = writeln!(out, "| shard | targets | to write | bytes | shared |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for s in &r.assignment {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            s.shard,
            s.targets.len(),
            s.writes,
            human_size(s.bytes),
            human_size(s.shared_bytes)
        );
    }
    out
}

/// The one line a shard's run starts with.
pub fn summary_line(s: &ShardInfo) -> String {
    format!(
        "Shard {}: {} of {} targets, {} of blobs, {} shared with other shards",
        s.shard,
        s.load.targets,
        s.all_targets,
        human_size(s.load.bytes),
        human_size(s.load.shared_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Digest;

    const REG: &str = "registry://mirror.example.com";

    fn blob(name: &str, size: u64) -> (String, String, u64) {
        (REG.to_string(), Digest::of(name.as_bytes()).to_string(), size)
    }

    fn item(key: &str, blobs: &[(&str, u64)]) -> Item {
        Item {
            key: key.to_string(),
            blobs: blobs.iter().map(|(n, s)| blob(n, *s)).collect(),
        }
    }

    /// Families sharing a base each (sizes differ), two-level `py`, and loners.
    fn families() -> Vec<Item> {
        let mut items = Vec::new();
        for (family, base, n, own) in [("deb", 640, 6, 240), ("alp", 320, 5, 240), ("node", 480, 4, 240)] {
            for i in 0..n {
                let key = format!("registry://m/{family}/app{i}:1");
                items.push(item(
                    &key,
                    &[
                        (&format!("{family}-base"), base),
                        (&format!("{key}-own"), own),
                        (&key, 1),
                    ],
                ));
            }
        }
        for i in 0..5 {
            let key = format!("registry://m/py/app{i}:1");
            items.push(item(
                &key,
                &[
                    ("py-base", 480),
                    ("py-runtime", 320),
                    (&format!("{key}-own"), 240),
                    (&key, 1),
                ],
            ));
        }
        for i in 0..3 {
            let key = format!("registry://m/solo/s{i}:1");
            items.push(item(&key, &[(&format!("{key}-own"), 400), (&key, 1)]));
        }
        items
    }

    /// Each item's key with its shard, sorted: what must not depend on order.
    fn by_key(items: &[Item], p: &Partition) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = items.iter().map(|i| i.key.clone()).zip(p.shard_of.clone()).collect();
        v.sort();
        v
    }

    /// A deterministic shuffle (Fisher–Yates with xorshift).
    fn shuffle<T>(v: &mut [T], seed: u64) {
        let mut x = seed | 1;
        for i in (1..v.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }

    /// Every blob's shards.
    fn holders(items: &[Item], p: &Partition) -> BTreeMap<(String, String), BTreeSet<usize>> {
        let mut h: BTreeMap<(String, String), BTreeSet<usize>> = BTreeMap::new();
        for (it, &s) in items.iter().zip(&p.shard_of) {
            for (store, d, _) in &it.blobs {
                h.entry((store.clone(), d.clone())).or_default().insert(s);
            }
        }
        h
    }

    #[test]
    fn families_stay_together_and_shards_balance() {
        let items = families();
        let p = partition(&items, 3);
        assert_eq!(p.groups, 4 + 3, "4 families and 3 loners");
        assert_eq!(p.split_groups, 0);
        assert_eq!(p.duplicated_bytes, 0);
        for (blob, shards) in holders(&items, &p) {
            assert_eq!(shards.len(), 1, "{blob:?} is written by shards {shards:?}");
        }
        assert_eq!(p.shards.iter().map(|s| s.targets).sum::<usize>(), items.len());
        assert_eq!(p.shards.iter().map(|s| s.bytes).sum::<u64>(), p.total_bytes);
        let fair = p.total_bytes / 3;
        for s in &p.shards {
            assert_eq!(s.shared_bytes, 0);
            assert!(s.bytes <= fair + fair / 4, "{s:?} of {}", p.total_bytes);
        }
    }

    #[test]
    fn the_order_of_the_targets_does_not_change_the_partition() {
        let items = families();
        for n in [1, 2, 3, 4, 7] {
            let first = partition(&items, n);
            for seed in 1..20u64 {
                let mut shuffled = items.clone();
                shuffle(&mut shuffled, seed * 7919);
                let p = partition(&shuffled, n);
                assert_eq!(by_key(&shuffled, &p), by_key(&items, &first), "n={n} seed={seed}");
                assert_eq!(p.shards, first.shards, "n={n} seed={seed}");
                assert_eq!(p.duplicated_bytes, first.duplicated_bytes);
            }
            let mut reversed = items.clone();
            reversed.reverse();
            let p = partition(&reversed, n);
            assert_eq!(by_key(&reversed, &p), by_key(&items, &first), "n={n} reversed");
        }
    }

    #[test]
    fn a_group_too_big_for_one_shard_is_split_at_its_most_shared_layer() {
        // Nine images on one base: a third each is fair, the base goes to every shard.
        let items: Vec<Item> = (0..9)
            .map(|i| {
                item(
                    &format!("registry://m/a{i}:1"),
                    &[("base", 900), (&format!("own{i}"), 300)],
                )
            })
            .collect();
        let p = partition(&items, 3);
        assert_eq!(p.groups, 1);
        assert_eq!(p.split_groups, 1);
        assert_eq!(p.duplicated_bytes, 2 * 900, "the base, once more per extra shard");
        for s in &p.shards {
            assert_eq!(s.targets, 3, "{:?}", p.shards);
            assert_eq!(s.shared_bytes, 900);
            assert_eq!(s.bytes, 900 + 3 * 300);
        }
        // Own layers are never duplicated.
        for ((_, d), shards) in holders(&items, &p) {
            if *d != Digest::of(b"base").to_string() {
                assert_eq!(shards.len(), 1);
            }
        }
    }

    #[test]
    fn a_split_keeps_sub_families_whole_and_duplicates_only_the_shared_base() {
        // Two runtimes on one base; each runtime's images share it.
        let mut items = Vec::new();
        for rt in ["py", "rb"] {
            for i in 0..4 {
                items.push(item(
                    &format!("registry://m/{rt}{i}:1"),
                    &[
                        ("base", 200),
                        (&format!("{rt}-runtime"), 800),
                        (&format!("{rt}-own{i}"), 100),
                    ],
                ));
            }
        }
        let p = partition(&items, 2);
        assert_eq!(p.split_groups, 1);
        assert_eq!(p.duplicated_bytes, 200, "only the base crosses: {:?}", p.shards);
        let shard_of = |k: &str| p.shard_of[items.iter().position(|i| i.key == k).unwrap()];
        assert_eq!(shard_of("registry://m/py0:1"), shard_of("registry://m/py3:1"));
        assert_eq!(shard_of("registry://m/rb0:1"), shard_of("registry://m/rb3:1"));
        assert_ne!(shard_of("registry://m/py0:1"), shard_of("registry://m/rb0:1"));
    }

    #[test]
    fn a_group_a_bit_over_its_share_is_not_split() {
        // 55% of the bytes in one family, 2 shards: within the quarter margin.
        let mut items: Vec<Item> = (0..5)
            .map(|i| {
                item(
                    &format!("registry://m/f{i}:1"),
                    &[("base", 100), (&format!("o{i}"), 100)],
                )
            })
            .collect();
        items.extend((0..5).map(|i| item(&format!("registry://m/s{i}:1"), &[(&format!("s{i}"), 98)])));
        let p = partition(&items, 2);
        assert_eq!(p.split_groups, 0);
        assert_eq!(p.duplicated_bytes, 0);
    }

    #[test]
    fn the_same_blob_in_two_stores_does_not_join_targets() {
        let a = item("registry://one/a:1", &[("layer", 100)]);
        let mut b = item("registry://two/b:1", &[("layer", 100)]);
        b.blobs[0].0 = "registry://two".to_string();
        let p = partition(&[a, b], 2);
        assert_eq!(p.groups, 2);
        assert_ne!(p.shard_of[0], p.shard_of[1]);
        assert_eq!(p.duplicated_bytes, 0, "different stores: nothing is written twice");
    }

    #[test]
    fn targets_without_blobs_spread_by_count_and_equal_keys_stay_together() {
        let mut items: Vec<Item> = (0..6).map(|i| item(&format!("failed{i}"), &[])).collect();
        items.push(item("failed3", &[("x", 10)]));
        let p = partition(&items, 3);
        assert_eq!(p.shard_of[3], p.shard_of[6], "one key, one shard");
        let counts: Vec<usize> = p.shards.iter().map(|s| s.targets).collect();
        assert!(counts.iter().all(|&c| c >= 2), "{counts:?}");
        let empty = partition(&[], 4);
        assert_eq!(empty.shards.len(), 4);
        assert_eq!(empty.total_bytes, 0);
    }

    #[test]
    fn one_shard_takes_everything() {
        let items = families();
        let p = partition(&items, 1);
        assert!(p.shard_of.iter().all(|&s| s == 0));
        assert_eq!(p.duplicated_bytes, 0);
        assert_eq!(p.shards[0].bytes, p.total_bytes);
    }

    #[test]
    fn shard_arguments_name_the_offending_value() {
        assert_eq!(
            ShardArg::parse("1/3"),
            Ok(ShardArg::Index(Shard { index: 1, count: 3 }))
        );
        assert_eq!(ShardArg::parse("auto/4"), Ok(ShardArg::Auto { count: 4 }));
        assert_eq!(
            ShardArg::parse("3/3").unwrap_err(),
            "shard index 3 is out of range for 3 shards (0..=2)"
        );
        assert!(ShardArg::parse("1/0").unwrap_err().contains("not 0"));
        assert!(ShardArg::parse("x/3").unwrap_err().contains("\"x\""));
        assert!(ShardArg::parse("2").unwrap_err().contains("expected I/N"));
        assert!(ShardArg::parse("0/many").unwrap_err().contains("\"many\""));
        assert!(parse_count("10001").unwrap_err().contains("10000"));

        let auto = ShardArg::Auto { count: 3 };
        assert_eq!(auto.resolve(Some("2")).unwrap(), Shard { index: 2, count: 3 });
        let e = auto.resolve(None).unwrap_err();
        assert!(e.to_string().contains(JOB_INDEX_ENV), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = auto.resolve(Some("3")).unwrap_err().to_string();
        assert!(e.contains("shard index 3 is out of range for 3 shards (0..=2)"), "{e}");
        assert!(auto.resolve(Some("one")).unwrap_err().to_string().contains("\"one\""));
    }
}

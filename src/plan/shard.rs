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
//!    parts: its blobs are taken least shared first (then the larger, then
//!    the later digest), each joining the pieces of the targets writing it
//!    unless the joined piece would be more than a quarter over bytes / k;
//!    then the blob is cut, so the most shared blobs are the ones cut. The
//!    pieces, largest first, then go to the part where they add the fewest
//!    bytes without making it more than bytes / k (else to the part that ends
//!    smallest). The cut blobs are uploaded once per shard holding them:
//!    the *duplicated bytes* the plan reports.
//! 4. Groups and parts go into N shards largest first (ties by the smallest
//!    target name), each into the shard where the shard's bytes end up
//!    smallest (then the lighter shard, the one with fewer targets, the lower
//!    index).
//!
//! All of it is about linear in targets and blobs: one sort, a union-find
//! (path compression, union by size) over the blobs once for the groups and
//! once inside each split group, pieces merging their blob sets smaller into
//! larger; 100,000 targets take well under a second.
//!
//! A target whose source did not resolve has no blobs: it is a group of its
//! own with no bytes, and the shard it falls in reports it failed. The other
//! shards cannot know its layers, so they cannot be sure the partition they
//! computed is the one every machine computes: they report the failure too
//! (exit 1), so no shard ends "done" on a partition that might differ.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{platforms_key, Action, Plan, PlanContext, PlannedTarget, Resolutions, SavedPlan, Target};
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The blobs more than one shard writes (cut when a group was split),
    /// by (digest, store).
    pub cut: Vec<Cut>,
}

/// A blob written by more than one shard (see [`Partition::cut`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// An item writing it, and the blob's place in that item's `blobs`.
    pub named_by: (usize, usize),
    /// The shards writing it, ascending.
    pub shards: Vec<usize>,
    /// The first item (by key) of the lowest of `shards` writing it: the
    /// blob's owner, whose destination holds it first.
    pub owner_item: usize,
}

/// A set of units placed together: a whole group, or a part of a split one.
struct Piece {
    /// Ascending.
    units: Vec<usize>,
    /// Its distinct blobs; kept for the parts of split groups only (a whole
    /// group shares no blob with any other piece).
    blobs: Option<Vec<usize>>,
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
    /// Per blob: an item writing it and its place in the item's blobs.
    named_by: Vec<(u32, u32)>,
}

/// A hasher for the partition's small integer keys (blob and unit ids):
/// one multiply instead of SipHash, which took a third of the time at
/// 100,000 targets. The ids are not chosen by anyone who could make them
/// collide on purpose.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdBuild = std::hash::BuildHasherDefault<IdHasher>;
type IdSet = HashSet<usize, IdBuild>;
type IdMap<V> = HashMap<usize, V, IdBuild>;

/// Union-find over `0..n`, with path compression and union by size.
struct Sets {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl Sets {
    fn new(n: usize) -> Sets {
        Sets {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, x: usize) -> usize {
        let mut root = x;
        while self.parent[root] as usize != root {
            root = self.parent[root] as usize;
        }
        let mut x = x;
        while self.parent[x] as usize != root {
            let next = self.parent[x] as usize;
            self.parent[x] = root as u32;
            x = next;
        }
        root
    }

    /// Joins the sets of `a` and `b`; returns the new root.
    fn union(&mut self, a: usize, b: usize) -> usize {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return a;
        }
        let (big, small) = if self.size[a] >= self.size[b] { (a, b) } else { (b, a) };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        big
    }
}

impl Units {
    /// Units sorted by key (items with one key are one unit), blobs by (store, digest).
    fn new(items: &[Item]) -> Units {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| items[a].key.cmp(&items[b].key));
        let mut unit_items: Vec<Vec<usize>> = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            if n > 0 && items[order[n - 1]].key == items[i].key {
                if let Some(last) = unit_items.last_mut() {
                    last.push(i);
                }
            } else {
                unit_items.push(vec![i]);
            }
        }
        // Blob ids in (digest, store) order, so that they are the same on
        // every machine: one sort of every (blob, unit) pair, no hashing.
        let mut unit_of = vec![0usize; items.len()];
        for (u, members) in unit_items.iter().enumerate() {
            for &i in members {
                unit_of[i] = u;
            }
        }
        // (digest, store, size, unit, (item, place in its blobs))
        type Pair<'a> = (&'a str, &'a str, u64, usize, (u32, u32));
        let mut pairs: Vec<Pair> = items
            .iter()
            .enumerate()
            .flat_map(|(i, it)| {
                let u = unit_of[i];
                it.blobs
                    .iter()
                    .enumerate()
                    .map(move |(at, (s, d, size))| (d.as_str(), s.as_str(), *size, u, (i as u32, at as u32)))
            })
            .collect();
        pairs.sort_unstable_by(|a, b| (a.0, a.1, a.3).cmp(&(b.0, b.1, b.3)));
        let mut sizes: Vec<u64> = Vec::new();
        let mut users: Vec<Vec<usize>> = Vec::new();
        let mut named_by: Vec<(u32, u32)> = Vec::new();
        let mut unit_blobs: Vec<Vec<usize>> = vec![Vec::new(); unit_items.len()];
        for (n, &(digest, store, size, u, at)) in pairs.iter().enumerate() {
            let new_blob = n == 0 || (pairs[n - 1].0, pairs[n - 1].1) != (digest, store);
            if new_blob {
                sizes.push(size);
                users.push(Vec::new());
                named_by.push(at);
            }
            let b = sizes.len() - 1;
            if users[b].last() != Some(&u) {
                users[b].push(u);
                unit_blobs[u].push(b);
            }
        }
        drop(pairs);
        Units {
            items: unit_items,
            blobs: unit_blobs,
            sizes,
            users,
            named_by,
        }
    }

    fn targets(&self, units: &[usize]) -> usize {
        units.iter().map(|&u| self.items[u].len()).sum()
    }

    /// The connected components (groups), each ascending, ordered by their
    /// first unit, with their bytes: one pass over the blobs.
    fn groups(&self) -> Vec<(Vec<usize>, u64)> {
        let n = self.items.len();
        let mut sets = Sets::new(n);
        for users in &self.users {
            if let Some((&first, rest)) = users.split_first() {
                for &u in rest {
                    sets.union(first, u);
                }
            }
        }
        let mut slot: Vec<usize> = vec![usize::MAX; n];
        let mut out: Vec<(Vec<usize>, u64)> = Vec::new();
        let slot_of: Vec<usize> = (0..n)
            .map(|u| {
                let root = sets.find(u);
                if slot[root] == usize::MAX {
                    slot[root] = out.len();
                    out.push((Vec::new(), 0));
                }
                out[slot[root]].0.push(u);
                slot[root]
            })
            .collect();
        for (b, users) in self.users.iter().enumerate() {
            if let Some(&u) = users.first() {
                out[slot_of[u]].1 += self.sizes[b];
            }
        }
        out
    }

    /// Splits a group of `bytes` into `k` parts. Its blobs are taken least
    /// shared first (then the larger, then the later digest), each joining
    /// the pieces of its targets unless the joined piece would be more than a
    /// quarter over bytes / k: then the blob is cut. Every blob is looked at
    /// once and pieces merge smaller into larger, so the cost is about linear
    /// in the group's targets and blobs. The pieces are then packed into k
    /// parts.
    fn split(&self, group: &[usize], bytes: u64, k: usize) -> Vec<Piece> {
        let limit = bytes.div_ceil(k as u64);
        // Pieces up to a quarter over the mean part are left whole.
        let part_cap = limit + limit / 4;
        // Pieces are indexed by the unit's position in the group.
        let pos: IdMap<usize> = group.iter().enumerate().map(|(i, &u)| (u, i)).collect();
        let mut sets = Sets::new(group.len());
        let mut piece_blobs: Vec<IdSet> = group.iter().map(|&u| self.blobs[u].iter().copied().collect()).collect();
        let mut piece_bytes: Vec<u64> = group
            .iter()
            .map(|&u| self.blobs[u].iter().map(|&b| self.sizes[b]).sum())
            .collect();
        let mut shared: Vec<usize> = piece_blobs
            .iter()
            .flatten()
            .copied()
            .filter(|&b| self.users[b].len() > 1)
            .collect::<IdSet>()
            .into_iter()
            .collect();
        shared.sort_unstable_by(|&a, &b| {
            (
                self.users[a].len(),
                std::cmp::Reverse(self.sizes[a]),
                std::cmp::Reverse(a),
            )
                .cmp(&(
                    self.users[b].len(),
                    std::cmp::Reverse(self.sizes[b]),
                    std::cmp::Reverse(b),
                ))
        });
        for b in shared {
            let mut roots: Vec<usize> = self.users[b]
                .iter()
                .filter_map(|u| pos.get(u))
                .map(|&i| sets.find(i))
                .collect();
            roots.sort_unstable();
            roots.dedup();
            if roots.len() < 2 {
                continue;
            }
            // The joined piece's bytes, counted from the largest piece.
            let largest = roots
                .iter()
                .copied()
                .max_by_key(|&r| (piece_blobs[r].len(), std::cmp::Reverse(r)))
                .unwrap_or(roots[0]);
            let mut joined = piece_bytes[largest];
            let mut added: IdSet = IdSet::default();
            'count: for &r in &roots {
                if r == largest {
                    continue;
                }
                for &x in &piece_blobs[r] {
                    if !piece_blobs[largest].contains(&x) && added.insert(x) {
                        joined += self.sizes[x];
                        if joined > part_cap {
                            break 'count;
                        }
                    }
                }
            }
            if joined > part_cap {
                continue; // cut
            }
            let mut into = largest;
            for &r in &roots {
                if r == largest {
                    continue;
                }
                let root = sets.union(into, r);
                let other = if root == into { r } else { into };
                // The smaller set of blobs moves into the larger.
                if piece_blobs[other].len() > piece_blobs[root].len() {
                    piece_blobs.swap(other, root);
                }
                let moved = std::mem::take(&mut piece_blobs[other]);
                piece_blobs[root].extend(moved);
                into = root;
            }
            piece_bytes[into] = joined;
        }
        // The pieces, each ascending, ordered by their first unit.
        let mut slot: IdMap<usize> = IdMap::default();
        let mut pieces: Vec<Piece> = Vec::new();
        for (i, &u) in group.iter().enumerate() {
            let root = sets.find(i);
            let s = *slot.entry(root).or_insert_with(|| {
                let mut blobs: Vec<usize> = piece_blobs[root].iter().copied().collect();
                blobs.sort_unstable();
                pieces.push(Piece {
                    units: Vec::new(),
                    blobs: Some(blobs),
                    bytes: piece_bytes[root],
                    targets: 0,
                });
                pieces.len() - 1
            });
            pieces[s].units.push(u);
            pieces[s].targets += self.items[u].len();
        }
        // Pack the pieces into k parts: each into the part where it adds the
        // fewest bytes among those it keeps within bytes / k, else where the
        // part ends smallest (so parts fill evenly, not the first ones to
        // the quarter margin).
        let mut parts: Vec<(Piece, IdSet)> = (0..k)
            .map(|_| {
                (
                    Piece {
                        units: Vec::new(),
                        blobs: Some(Vec::new()),
                        bytes: 0,
                        targets: 0,
                    },
                    IdSet::default(),
                )
            })
            .collect();
        for p in sorted(pieces) {
            let added: Vec<u64> = parts.iter().map(|(_, have)| self.added(&p, have)).collect();
            let fitting = (0..k)
                .filter(|&i| parts[i].0.bytes + added[i] <= limit)
                .min_by_key(|&i| (added[i], parts[i].0.bytes, i));
            let best = fitting
                .or_else(|| (0..k).min_by_key(|&i| (parts[i].0.bytes + added[i], added[i], i)))
                .unwrap_or(0);
            let (part, have) = &mut parts[best];
            part.bytes += added[best];
            part.targets += p.targets;
            part.units.extend(p.units);
            have.extend(p.blobs.into_iter().flatten());
        }
        parts
            .into_iter()
            .filter(|(p, _)| !p.units.is_empty())
            .map(|(mut p, have)| {
                p.units.sort_unstable();
                let mut blobs: Vec<usize> = have.into_iter().collect();
                blobs.sort_unstable();
                p.blobs = Some(blobs);
                p
            })
            .collect()
    }

    /// Bytes of `p`'s blobs not in `have` (all of them for a whole group).
    fn added(&self, p: &Piece, have: &IdSet) -> u64 {
        match &p.blobs {
            Some(blobs) => blobs.iter().filter(|b| !have.contains(b)).map(|&b| self.sizes[b]).sum(),
            None => p.bytes,
        }
    }
}

/// Largest first, then by the first unit (the smallest key).
fn sorted(mut pieces: Vec<Piece>) -> Vec<Piece> {
    pieces.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.units.first().cmp(&b.units.first())));
    pieces
}

/// Partitions `items` into `count` shards (see the module documentation).
/// About linear in the items and their blobs: sorting them, one union-find
/// pass over the blobs for the groups, one more inside each group split.
pub fn partition(items: &[Item], count: usize) -> Partition {
    let count = count.max(1);
    let units = Units::new(items);
    let groups = units.groups();
    let total_bytes: u64 = units.sizes.iter().sum();
    let fair = total_bytes.div_ceil(count as u64);
    let cap = fair + fair / 4;
    let n_groups = groups.len();
    let mut split_groups = 0;
    let mut pieces: Vec<Piece> = Vec::new();
    for (g, bytes) in groups {
        if bytes > cap && g.len() > 1 {
            let k = (bytes.div_ceil(fair.max(1)) as usize).clamp(2, count.min(g.len()));
            split_groups += 1;
            pieces.extend(units.split(&g, bytes, k));
        } else {
            pieces.push(Piece {
                targets: units.targets(&g),
                units: g,
                blobs: None,
                bytes,
            });
        }
    }
    // Shards by (bytes, targets, index): the lightest first. A whole group
    // adds its bytes wherever it goes, so it goes to the first of these; a
    // part of a split group is weighed against every shard.
    let mut loads: Vec<(u64, usize)> = vec![(0, 0); count];
    let mut order: BTreeSet<(u64, usize, usize)> = (0..count).map(|i| (0, 0, i)).collect();
    let mut have: Vec<IdSet> = vec![IdSet::default(); count];
    let mut shard_of_unit = vec![0; units.items.len()];
    for p in sorted(pieces) {
        let (best, added) = match &p.blobs {
            None => (order.first().map(|&(_, _, i)| i).unwrap_or(0), p.bytes),
            Some(_) => (0..count)
                .map(|i| (i, units.added(&p, &have[i])))
                .min_by_key(|&(i, added)| (loads[i].0 + added, loads[i].0, loads[i].1, i))
                .unwrap_or((0, p.bytes)),
        };
        for &u in &p.units {
            shard_of_unit[u] = best;
        }
        order.remove(&(loads[best].0, loads[best].1, best));
        loads[best].0 += added;
        loads[best].1 += p.targets;
        order.insert((loads[best].0, loads[best].1, best));
        if let Some(blobs) = p.blobs {
            have[best].extend(blobs);
        }
    }
    // Blobs written by more than one shard: only parts of split groups share.
    let mut holders: IdMap<usize> = IdMap::default();
    for h in &have {
        for &b in h {
            *holders.entry(b).or_default() += 1;
        }
    }
    let duplicated_bytes = holders
        .iter()
        .map(|(&b, &h)| units.sizes[b] * h.saturating_sub(1) as u64)
        .sum();
    let loads = loads
        .iter()
        .zip(&have)
        .map(|(&(bytes, targets), h)| ShardLoad {
            targets,
            bytes,
            shared_bytes: h
                .iter()
                .filter(|b| holders.get(b).is_some_and(|&n| n > 1))
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
    // Each cut blob's shards, and its owner: the lowest of them, by its
    // first unit writing the blob.
    let mut cut_ids: Vec<usize> = holders.iter().filter(|(_, &h)| h > 1).map(|(&b, _)| b).collect();
    cut_ids.sort_unstable();
    let cut = cut_ids
        .into_iter()
        .filter_map(|b| {
            let shards: Vec<usize> = (0..count).filter(|&s| have[s].contains(&b)).collect();
            let owner = *shards.first()?;
            let unit = units.users[b].iter().copied().find(|&u| shard_of_unit[u] == owner)?;
            let (item, at) = units.named_by[b];
            Some(Cut {
                named_by: (item as usize, at as usize),
                shards,
                owner_item: *units.items[unit].first()?,
            })
        })
        .collect();
    Partition {
        shard_of,
        shards: loads,
        total_bytes,
        duplicated_bytes,
        groups: n_groups,
        split_groups,
        cut,
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
    /// The blobs more than one shard writes, each with its owner.
    pub cut: Vec<CutBlob>,
}

/// A blob more than one shard writes to one store (its group was split).
/// Its *owner*, the lowest of those shards, uploads it first; applying a
/// saved plan, each other shard mounts it from the owner's repository
/// once it is there instead of uploading it too (registries only: a store
/// that cannot mount has no `mount_from`, and each shard writes its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutBlob {
    /// Where it is shared: `registry://host`, or the file store.
    pub store: String,
    /// The blob (its digest).
    pub blob: String,
    pub size: u64,
    /// The shards writing it, ascending.
    pub shards: Vec<usize>,
    /// The shard that uploads it: the first of `shards`.
    pub owner: usize,
    /// The repository (of `store`'s registry) the owner uploads it to,
    /// which the other shards mount it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_from: Option<String>,
}

/// The cut blobs of `p`, named: `destination(i)` is the destination of
/// item `i` (None for an item that is no target).
fn cut_blobs(p: &Partition, items: &[Item], destination: impl Fn(usize) -> Option<Reference>) -> Vec<CutBlob> {
    p.cut
        .iter()
        .filter_map(|c| {
            let (store, blob, size) = items.get(c.named_by.0)?.blobs.get(c.named_by.1)?;
            let mount_from = destination(c.owner_item).and_then(|d| {
                let id = crate::sink::store::StoreId::of(&d);
                let caps = crate::sink::store::capabilities(&d);
                (caps.can_mount && id.sharing().to_string() == *store)
                    .then(|| id.repository_name().map(str::to_string))
                    .flatten()
            });
            Some(CutBlob {
                store: store.clone(),
                blob: blob.clone(),
                size: *size,
                owner: *c.shards.first()?,
                shards: c.shards.clone(),
                mount_from,
            })
        })
        .collect()
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
            key: target_key(&f.destination(), &f.source()),
            blobs: Vec::new(),
        });
        names.push((f.destination().into_owned(), f.source().into_owned()));
        errors.push(match &f.action {
            Action::Failed { error } => Some(error.clone()),
            _ => None,
        });
    }
    // Which blob goes where, as the work graph says it (its shape: every
    // blob counted, nothing asked of the stores).
    let mut blobs_of = blobs_by_target(&targets, resolutions);
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
            let n_failed = failed.len();
            let cut = cut_blobs(&partition, &items, |i| {
                i.checked_sub(n_failed)
                    .and_then(|t| targets.get(t))
                    .map(|t| t.destination.clone())
            });
            let shard_of = names.into_iter().zip(partition.shard_of.iter().copied()).collect();
            Selected {
                targets,
                failed,
                info: None,
                assignment: Some(Assignment {
                    count,
                    partition,
                    shard_of,
                    cut,
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

/// The assignment as a saved plan keeps it (`"shards"` in the plan of
/// `--plan --shards N --out plan.json`), so that `--apply plan.json --shard
/// I/N` takes its targets without resolving or partitioning the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedShards {
    /// N.
    pub count: usize,
    /// Bytes of the distinct blobs of all targets.
    pub bytes: u64,
    pub duplicated_bytes: u64,
    pub groups: usize,
    pub split_groups: usize,
    /// Per shard.
    pub loads: Vec<ShardLoad>,
    /// The shard of each of the plan's targets, in the plan's order.
    pub shard_of: Vec<usize>,
    /// The blobs more than one shard writes, each with the shard that
    /// uploads it and the repository the others mount it from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cut: Vec<CutBlob>,
    /// The shard this run applies ([`keep_saved_shard`]); not saved.
    #[serde(skip)]
    pub this: Option<usize>,
}

/// What a shard applying a saved plan does with a blob other shards write too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CutRole {
    /// It uploads it, first, and puts it in repository `from` (of the
    /// blob's registry), where the others wait for it.
    Owner { from: String },
    /// It mounts it from `from` once shard `owner` has uploaded it there.
    Mount { from: String, owner: usize },
}

impl SavedShards {
    /// The cut blobs this shard ([`SavedShards::this`]) writes to a
    /// registry, by (host, digest), with what it does with each.
    pub fn cut_roles(&self) -> HashMap<(String, crate::image::Digest), CutRole> {
        let Some(me) = self.this else {
            return HashMap::new();
        };
        self.cut
            .iter()
            .filter(|c| c.shards.contains(&me))
            .filter_map(|c| {
                let from = c.mount_from.clone()?;
                let host = crate::sink::store::StoreId::parse(&c.store)?.host()?.to_string();
                let digest = crate::image::Digest::parse(&c.blob).ok()?;
                let role = if c.owner == me {
                    CutRole::Owner { from: from.clone() }
                } else {
                    CutRole::Mount { from, owner: c.owner }
                };
                Some(((host, digest), role))
            })
            .collect()
    }
}

/// What a plan made with [`Sharding::Assign`] saves of its assignment.
pub fn saved(a: &Assignment, targets: &[PlannedTarget]) -> SavedShards {
    SavedShards {
        count: a.count,
        bytes: a.partition.total_bytes,
        duplicated_bytes: a.partition.duplicated_bytes,
        groups: a.partition.groups,
        split_groups: a.partition.split_groups,
        loads: a.partition.shards.clone(),
        cut: a.cut.clone(),
        this: None,
        shard_of: targets
            .iter()
            .map(|t| {
                a.shard_of
                    .get(&(t.destination().into_owned(), t.source().into_owned()))
                    .copied()
                    .unwrap_or(0)
            })
            .collect(),
    }
}

/// Whether `saved` says which of `shard.count` shards each target is in.
pub fn saved_assignment(saved: &SavedPlan, shard: Shard) -> Option<&SavedShards> {
    saved
        .shards
        .as_ref()
        .filter(|s| s.count == shard.count && s.shard_of.len() == saved.targets.len())
}

/// Keeps `shard`'s targets of a saved plan and the saved work they need,
/// when the plan recorded its assignment into as many shards; the rest is
/// dropped before anything is resolved (false: the plan has no such
/// assignment, and the shard is found as without a saved plan).
pub fn keep_saved_shard(saved: &mut SavedPlan, shard: Shard) -> bool {
    let Some(a) = saved_assignment(saved, shard) else {
        return false;
    };
    let mine: Vec<bool> = a.shard_of.iter().map(|&s| s == shard.index).collect();
    // The saved nodes refer to targets by index: renumber them.
    let mut new_index = vec![usize::MAX; mine.len()];
    let mut n = 0;
    for (i, &m) in mine.iter().enumerate() {
        if m {
            new_index[i] = n;
            n += 1;
        }
    }
    let mut i = 0;
    saved.targets.retain(|_| {
        i += 1;
        mine[i - 1]
    });
    if let Some(a) = &mut saved.shards {
        a.shard_of = vec![shard.index; n];
        a.this = Some(shard.index);
    }
    // A fetch or a rewrite is shared by every store it feeds but names only
    // the targets of the first: it is kept whoever it names.
    saved.nodes.retain_mut(|w| {
        let shared = matches!(
            w.key,
            super::graph::NodeKey::Fetch { .. } | super::graph::NodeKey::Rewrite { .. }
        );
        w.targets = w
            .targets
            .iter()
            .filter_map(|&t| new_index.get(t).copied().filter(|&x| x != usize::MAX))
            .collect();
        shared || !w.targets.is_empty()
    });
    true
}

/// Which blobs each of `targets` writes where, as the work graph's shape
/// says (every blob counted, nothing asked of the stores), by index.
fn blobs_by_target(targets: &[Target], resolutions: &Resolutions) -> BTreeMap<usize, Vec<(String, String, u64)>> {
    let mut shaped: Vec<PlannedTarget> = targets
        .iter()
        .map(|t| {
            let mut p = super::planned_target(t.clone());
            p.resolved = resolutions
                .get(&(t.source.to_string(), platforms_key(&t.platforms)))
                .and_then(|r| r.as_ref().ok().cloned());
            p
        })
        .collect();
    // The shape alone is wanted: each target's manifests go as it is shaped.
    super::graph::shape(&mut shaped).blobs_by_target()
}

/// The repository of a source, the unit `--shard I/N` assigns without a
/// saved plan: `registry://host/repo` for a registry image, the reference
/// itself for others.
pub fn repository_key(source: &Reference) -> String {
    match source.as_registry() {
        Some(r) => format!("registry://{}/{}", r.host, r.repository),
        None => source.to_string(),
    }
}

/// This shard's targets, found before the others are resolved.
pub struct OwnShare {
    pub targets: Vec<Target>,
    pub failed: Vec<PlannedTarget>,
    pub info: ShardInfo,
    /// What was resolved to find them (this shard's probes), to be reused.
    pub resolved: Resolutions,
}

/// `--shard I/N`: this shard's targets, resolving no other shard's.
///
/// From a saved plan with an assignment into N shards, the targets are
/// already this shard's ([`keep_saved_shard`]): nothing else is asked.
///
/// Without a saved plan, every shard lists the same targets (the sync file's
/// expansion) and assigns whole source **repositories** to shards: it
/// resolves one *probe* per repository (its first target by name), joins
/// repositories whose probes write a blob to the same store, and partitions
/// those (see [`partition`]), each repository weighing its probe's blobs
/// plus, for its other tags, as many bytes as the probe writes alone. A shard
/// then resolves only its own repositories' tags: its source requests are
/// its share plus one probe per repository. Layers that tags of one
/// repository share with tags of a repository in another shard, and that
/// the probes did not show, are uploaded by both shards: the price of not
/// resolving everything everywhere (a saved plan does not pay it).
///
/// Only when [`early`]: else (a saved plan without an assignment into N
/// shards) the whole plan is resolved and partitioned by target, as
/// [`select`] does.
pub async fn own_share(ctx: &PlanContext, shard: Shard, targets: Vec<Target>, failed: Vec<PlannedTarget>) -> OwnShare {
    if let Some(saved) = &ctx.pinned {
        let a = saved_assignment(saved, shard);
        // An entry's other destinations may be another shard's.
        let mine: HashSet<&str> = saved.targets.iter().map(|t| t.destination.as_str()).collect();
        let targets: Vec<Target> = targets
            .into_iter()
            .filter(|t| mine.contains(t.destination.to_string().as_str()))
            .collect();
        let failed: Vec<PlannedTarget> = failed
            .into_iter()
            .filter(|t| mine.contains(t.destination().as_ref()))
            .collect();
        return OwnShare {
            info: ShardInfo {
                shard: shard.to_string(),
                index: shard.index,
                count: shard.count,
                all_targets: a.map(|a| a.loads.iter().map(|l| l.targets).sum()).unwrap_or_default(),
                load: a.and_then(|a| a.loads.get(shard.index).cloned()).unwrap_or_default(),
                duplicated_bytes: a.map(|a| a.duplicated_bytes).unwrap_or_default(),
                failed_elsewhere: Vec::new(),
            },
            targets,
            failed,
            resolved: Resolutions::new(),
        };
    }
    // Repositories, each with its targets and its probe (the target of the
    // least key, kept beside it: a pod of four once held every target's
    // key at once, 12 MB at 100,000 targets).
    let mut repos: BTreeMap<String, (Vec<usize>, usize, String)> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let key = target_key(&t.destination.to_string(), &source_key(&t.source));
        match repos.entry(repository_key(&t.source)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((vec![i], i, key));
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let r = o.get_mut();
                r.0.push(i);
                if key < r.2 {
                    (r.1, r.2) = (i, key);
                }
            }
        }
    }
    let probes: Vec<Target> = repos.values().map(|(_, p, _)| targets[*p].clone()).collect();
    let reads = super::resolve::distinct_reads(&probes, &Resolutions::new());
    let resolved = super::resolve_all(ctx, &probes, &reads, true).await;
    let mut blobs_of = blobs_by_target(&probes, &resolved);
    let probe_blobs: Vec<Vec<(String, String, u64)>> = (0..probes.len())
        .map(|i| blobs_of.remove(&i).unwrap_or_default())
        .collect();
    // How many probes write each blob: the others' are the probe's own.
    let mut writers: HashMap<(&str, &str), usize> = HashMap::new();
    for blobs in &probe_blobs {
        let distinct: HashSet<(&str, &str)> = blobs.iter().map(|(s, d, _)| (s.as_str(), d.as_str())).collect();
        for k in distinct {
            *writers.entry(k).or_default() += 1;
        }
    }
    // Items: the failed first, then one per repository.
    let mut items: Vec<Item> = failed
        .iter()
        .map(|f| Item {
            key: target_key(&f.destination(), &f.source()),
            blobs: Vec::new(),
        })
        .collect();
    let mut errors: Vec<Option<String>> = failed
        .iter()
        .map(|f| match &f.action {
            Action::Failed { error } => Some(format!("{} → {}: {error}", f.source(), f.destination())),
            _ => None,
        })
        .collect();
    for ((repo, (members, _, _)), (probe, blobs)) in repos.iter().zip(probes.iter().zip(&probe_blobs)) {
        let own: u64 = blobs
            .iter()
            .filter(|(s, d, _)| writers.get(&(s.as_str(), d.as_str())) == Some(&1))
            .map(|(_, _, size)| size)
            .sum();
        let mut blobs = blobs.clone();
        let others = members.len() as u64 - 1;
        if own > 0 && others > 0 {
            // The repository's other tags: a blob of their estimated bytes
            // that no other repository writes.
            blobs.push((
                String::new(),
                format!("{repo} (other tags)"),
                own.saturating_mul(others),
            ));
        }
        items.push(Item {
            key: repo.clone(),
            blobs,
        });
        errors.push(
            match resolved.get(&(probe.source.to_string(), platforms_key(&probe.platforms))) {
                Some(Err(e)) => Some(format!("{} → {}: {e}", probe.source, probe.destination)),
                _ => None,
            },
        );
    }
    drop(probe_blobs);
    let partition = partition(&items, shard.count);
    drop(items);
    let mine = |i: usize| partition.shard_of[i] == shard.index;
    let failed_elsewhere: Vec<String> = errors
        .iter()
        .enumerate()
        .filter(|(i, _)| !mine(*i))
        .filter_map(|(i, e)| {
            e.as_ref()
                .map(|e| format!("{e} (shard {}/{})", partition.shard_of[i], shard.count))
        })
        .collect();
    let n_failed = failed.len();
    let all_targets = n_failed + targets.len();
    let failed: Vec<PlannedTarget> = failed
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mine(*i))
        .map(|(_, f)| f)
        .collect();
    let mut own_target = vec![false; targets.len()];
    for (r, (members, _, _)) in repos.values().enumerate() {
        if mine(n_failed + r) {
            for &i in members {
                own_target[i] = true;
            }
        }
    }
    let targets: Vec<Target> = targets
        .into_iter()
        .zip(own_target)
        .filter(|(_, m)| *m)
        .map(|(t, _)| t)
        .collect();
    // Only this shard's probes are worth keeping.
    let mine_sources: HashSet<(String, String)> = targets
        .iter()
        .map(|t| (t.source.to_string(), platforms_key(&t.platforms)))
        .collect();
    let resolved: Resolutions = resolved.into_iter().filter(|(k, _)| mine_sources.contains(k)).collect();
    let mut load = partition.shards.get(shard.index).cloned().unwrap_or_default();
    load.targets = failed.len() + targets.len();
    OwnShare {
        info: ShardInfo {
            shard: shard.to_string(),
            index: shard.index,
            count: shard.count,
            all_targets,
            load,
            duplicated_bytes: partition.duplicated_bytes,
            failed_elsewhere,
        },
        targets,
        failed,
        resolved,
    }
}

/// Whether a shard finds its targets before resolving (no saved plan, or
/// one whose assignment it keeps: [`keep_saved_shard`]).
pub fn early(ctx: &PlanContext) -> bool {
    match (&ctx.pinned, ctx.sharding) {
        (None, _) => true,
        (Some(saved), Some(Sharding::Run(s))) => saved_assignment(saved, s).is_some(),
        (Some(_), _) => false,
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
    /// The blobs more than one shard writes: the owner uploads each, the
    /// others mount it from `mount_from` once it is there (registries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cut_blobs: Vec<CutBlob>,
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
        let Some(&i) = a.shard_of.get(&(t.destination().into_owned(), t.source().into_owned())) else {
            warnings.push(format!("{} → {} is in no shard", t.source(), t.destination()));
            continue;
        };
        let Some(s) = shards.get_mut(i) else { continue };
        if t.action.writes() {
            s.writes += 1;
        }
        s.targets.push(AssignedTarget {
            source: t.source().into_owned(),
            destination: t.destination().into_owned(),
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
        cut_blobs: a.cut.clone(),
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
        for c in r.cut_blobs.iter().filter(|c| c.shards.contains(&s.index)) {
            let _ = writeln!(out, "  {}", cut_line(c, s.index));
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

/// What shard `me` does with cut blob `c`, in words.
fn cut_line(c: &CutBlob, me: usize) -> String {
    let blob = crate::image::Digest::parse(&c.blob)
        .map(|d| d.short().to_string())
        .unwrap_or_else(|_| c.blob.clone());
    let others: Vec<String> = c.shards.iter().filter(|&&k| k != me).map(|k| k.to_string()).collect();
    let others = others.join(", ");
    match &c.mount_from {
        Some(repo) if c.owner == me => format!(
            "upload {blob} ({}) to {}/{repo} first: shard(s) {others} mount it from there",
            human_size(c.size),
            c.store
        ),
        Some(repo) => format!(
            "mount {blob} ({}) from {}/{repo} once shard {} uploads it",
            human_size(c.size),
            c.store,
            c.owner
        ),
        None => format!(
            "write {blob} ({}) to {} (shard(s) {others} write it too)",
            human_size(c.size),
            c.store
        ),
    }
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
    use std::collections::BTreeMap;

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
        // The base is the one cut blob: in all three shards, owned by shard
        // 0 through the first of its targets (by key) there.
        assert_eq!(p.cut.len(), 1, "{:?}", p.cut);
        let c = &p.cut[0];
        assert_eq!(c.shards, vec![0, 1, 2]);
        let (i, at) = c.named_by;
        assert_eq!(items[i].blobs[at].1, Digest::of(b"base").to_string());
        assert_eq!(p.shard_of[c.owner_item], 0);
        let first = (0..items.len())
            .filter(|&i| p.shard_of[i] == 0)
            .min_by_key(|&i| items[i].key.clone());
        assert_eq!(Some(c.owner_item), first);
        // Reversed input: the same owner target.
        let reversed: Vec<Item> = items.iter().rev().cloned().collect();
        let r = partition(&reversed, 3);
        assert_eq!(reversed[r.cut[0].owner_item].key, items[c.owner_item].key);
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

    /// `repos` × `tags` targets each writing a base shared by all, a layer
    /// and a config of their own (the shape of `--set bench-plan`).
    pub(crate) fn bench_items(repos: usize, tags: usize) -> Vec<Item> {
        let mut items = Vec::with_capacity(repos * tags);
        for r in 0..repos {
            for t in 0..tags {
                let key = format!("registry://dst/plan/r{r:02}:t{t:03} <- registry://src/plan/r{r:02}:t{t:03}");
                items.push(item(
                    &key,
                    &[
                        ("base", 180),
                        (&format!("{key}-app"), 700),
                        (&format!("{key}-config"), 400),
                    ],
                ));
            }
        }
        items
    }

    #[test]
    fn a_hundred_thousand_targets_on_one_base_split_evenly_and_only_the_base_is_duplicated() {
        // The scale of issue 35 (its timing is bench/plan-scale.sh's and
        // `occy-testkit partition`'s, not this test's).
        let items = bench_items(100, 1_000);
        let p = partition(&items, 4);
        assert_eq!(p.groups, 1);
        assert_eq!(p.split_groups, 1);
        assert_eq!(p.duplicated_bytes, 3 * 180, "the base, once more per extra shard");
        let fair = items.len() / 4;
        for s in &p.shards {
            assert!(s.targets.abs_diff(fair) <= fair / 4, "{:?}", p.shards);
            assert_eq!(s.shared_bytes, 180);
        }
        assert_eq!(p.shards.iter().map(|s| s.targets).sum::<usize>(), items.len());
        // The same partition from the items in another order.
        let mut reversed = items.clone();
        reversed.reverse();
        let q = partition(&reversed, 4);
        assert_eq!(by_key(&reversed, &q), by_key(&items, &p));
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

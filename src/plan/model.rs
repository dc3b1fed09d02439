//! What a plan is made of: targets, their actions and blob counts, the
//! plan with its totals, the saved plan `--apply` replays, and the keys that
//! name a target's output (platforms, layer-cache output keys, chains).

use std::borrow::Cow;

use super::*;

/// One (source image, chain, destination).
#[derive(Debug, Clone)]
pub struct Target {
    pub entry: usize,
    pub source: Reference,
    pub destination: Reference,
    /// The name and tag recorded at the destination.
    pub name: ImageName,
    pub chain: FilterChain,
    pub chain_name: Option<String>,
    pub platforms: PlatformSelection,
    /// Where the destination is written in the sync file.
    pub dest_span: Range<usize>,
    /// A digest the saved plan pins the source to.
    pub pinned: Option<Digest>,
    /// Whether occy added a recompression for a store that wants
    /// compressed layers (the source's are plain tar).
    pub compressed_for_store: bool,
}

/// What a target needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// The destination lacks it.
    Create,
    /// The destination holds another digest.
    Update,
    /// The destination already holds the expected result.
    Unchanged,
    /// Filters rewrite it and the output digest is not known yet.
    Rebuild { reason: String },
    /// The source could not be resolved (or the destination not read).
    Failed { error: String },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Rebuild { .. } => "rebuild",
            Action::Failed { .. } => "failed",
        }
    }

    /// Whether applying the plan writes this target.
    pub fn writes(&self) -> bool {
        matches!(self, Action::Create | Action::Update | Action::Rebuild { .. })
    }
}

/// Blobs a target moves to its destination.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCounts {
    /// Blobs sent (uploaded to a registry, written to a file).
    pub upload: usize,
    /// Blobs mounted from another repository of the destination registry
    /// that this run knows holds them.
    pub mount: usize,
    /// Blobs to mount from a repository earlier runs remembered them in:
    /// the registry may decline (the repository was deleted, the registry
    /// wiped), and then the blob is uploaded (from the same one read of
    /// the source as every other copy of it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub remembered: usize,
    /// The bytes of those, uploaded if every remembered mount is declined.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub remembered_bytes: u64,
    /// Blobs the destination already holds.
    pub present: usize,
    /// Bytes sent.
    pub bytes: u64,
    /// True when filters will rewrite the layers: counts are the source's.
    pub estimated: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl BlobCounts {
    pub fn add(&mut self, o: &BlobCounts) {
        self.upload += o.upload;
        self.mount += o.mount;
        self.remembered += o.remembered;
        self.remembered_bytes += o.remembered_bytes;
        self.present += o.present;
        self.bytes += o.bytes;
        self.estimated |= o.estimated;
    }
}

/// One planned target.
#[derive(Debug, Clone)]
pub struct PlannedTarget {
    pub entry: usize,
    /// The manifest digest the source's tag names now.
    pub source_digest: Option<Digest>,
    /// Platform images taken.
    pub platforms: usize,
    /// The digest the destination will name (unknown for a first filtered run).
    pub expected: Option<Digest>,
    /// The digest the destination names now.
    pub current: Option<Digest>,
    pub action: Action,
    pub blobs: BlobCounts,
    pub target: Target,
    pub resolved: Option<Arc<ResolvedImage>>,
    /// What the destination does to the media types of the source's manifests.
    pub media: MediaNote,
    /// The referrers (signatures, SBOMs, attestations) copied with the image.
    /// (Boxed, as `verification`: most targets have none, and a plan of
    /// 100,000 targets holds each inline.)
    pub referrers: Option<Box<referrers::TargetReferrers>>,
    /// What `verify:` requires of its source, and who signed it.
    pub verification: Option<Box<verify::Verification>>,
    /// How the target is shown where that is not its own references' text
    /// (a source imported from an archive, a sync entry that failed to
    /// expand); None for nearly all: a plan of 100,000 targets kept three
    /// strings each.
    pub shown: Option<Box<Shown>>,
}

/// A planned target in the JSON plan: its fields in this order, its text
/// made as it is written.
impl Serialize for PlannedTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            entry: usize,
            source: Cow<'a, str>,
            destination: Cow<'a, str>,
            name: Cow<'a, str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            filters: Option<&'a str>,
            source_digest: &'a Option<Digest>,
            platforms: usize,
            expected: &'a Option<Digest>,
            current: &'a Option<Digest>,
            #[serde(flatten)]
            action: &'a Action,
            blobs: &'a BlobCounts,
            #[serde(skip_serializing_if = "Option::is_none")]
            referrers: Option<&'a referrers::TargetReferrers>,
            #[serde(skip_serializing_if = "Option::is_none")]
            verification: Option<&'a verify::Verification>,
        }
        Wire {
            entry: self.entry,
            source: self.source(),
            destination: self.destination(),
            name: self.name(),
            filters: self.filters(),
            source_digest: &self.source_digest,
            platforms: self.platforms,
            expected: &self.expected,
            current: &self.current,
            action: &self.action,
            blobs: &self.blobs,
            referrers: self.referrers.as_deref(),
            verification: self.verification.as_deref(),
        }
        .serialize(serializer)
    }
}

/// The text a [`PlannedTarget`] is shown by, where it is not its target's own.
#[derive(Debug, Clone)]
pub struct Shown {
    pub source: String,
    pub destination: String,
    pub name: String,
}

impl PlannedTarget {
    /// The source as the plan shows it.
    pub fn source(&self) -> Cow<'_, str> {
        match &self.shown {
            Some(s) => Cow::Borrowed(&s.source),
            None => Cow::Owned(self.target.source.to_string()),
        }
    }

    /// The destination as the plan shows it.
    pub fn destination(&self) -> Cow<'_, str> {
        match &self.shown {
            Some(s) => Cow::Borrowed(&s.destination),
            None => Cow::Owned(self.target.destination.to_string()),
        }
    }

    /// The name and tag recorded at the destination, as the plan shows it.
    pub fn name(&self) -> Cow<'_, str> {
        match &self.shown {
            Some(s) => Cow::Borrowed(&s.name),
            None => Cow::Owned(self.target.name.to_string()),
        }
    }

    /// The name of the target's filter chain.
    pub fn filters(&self) -> Option<&str> {
        self.target.chain_name.as_deref()
    }
}

/// What an OCI-layout destination does to the media types of the manifests
/// it is given (see [`MediaTypes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MediaNote {
    /// Nothing worth saying.
    #[default]
    None,
    /// Docker v2 manifests converted to OCI (`?format=oci`): the digest changes.
    Converted,
    /// Manifests occy made up, written with OCI media types.
    SynthesisedOci,
    /// Docker v2 manifests kept byte for byte in an OCI layout, which OCI-only
    /// tools may refuse.
    DockerKept,
}

/// Totals of one destination (registry host or file path).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestinationTotals {
    pub destination: String,
    pub targets: usize,
    #[serde(flatten)]
    pub blobs: BlobCounts,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Format of this document.
    pub plan_version: u32,
    pub sync_file: String,
    /// sha256 of the sync file: `--apply` refuses another file.
    pub sync_file_sha256: String,
    pub targets: Vec<PlannedTarget>,
    pub destinations: Vec<DestinationTotals>,
    pub totals: Totals,
    /// Estimated requests per registry host to apply the plan.
    pub requests: BTreeMap<String, u64>,
    /// With `--prune`: destination tags no target selects, to delete.
    pub prune: Vec<prune::PruneTag>,
    /// What each `archive://` destination gets: the archive written, its
    /// bytes and volumes, what earlier archives carried and it leaves out.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<archive::ArchiveNote>,
    /// The pull quota of each source registry that announces one
    /// (`RateLimit-*` headers), and the manifest pulls the run needs there.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pull_quotas: Vec<quota::PullQuotaLine>,
    pub warnings: Vec<String>,
    /// With `--shard I/N`: which shard this plan is, and its share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<shard::ShardInfo>,
    /// With `--shards N`: which shard each target is in.
    #[serde(skip)]
    pub assignment: Option<shard::Assignment>,
    /// With `--shards N`: the assignment as `--apply plan.json --shard I/N` reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<shard::SavedShards>,
    /// Per store (a registry repository, a file destination) and per
    /// source: what applying does there.
    pub stores: BTreeMap<String, graph::StoreTotals>,
    /// Layers needed by more than one store, and what happens to each.
    pub shared: Vec<String>,
    /// The work graph: its nodes, and its edges (`to` needs `from`),
    /// serialized as `nodes` and `edges`.
    #[serde(flatten)]
    pub graph: graph::WorkGraph,
}

/// Counts over all targets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub targets: usize,
    pub create: usize,
    pub update: usize,
    pub unchanged: usize,
    pub rebuild: usize,
    pub failed: usize,
    /// Tags to delete (`--prune`).
    pub prune: usize,
    #[serde(flatten)]
    pub blobs: BlobCounts,
}

impl Plan {
    /// Whether applying it would change anything.
    pub fn has_changes(&self) -> bool {
        self.targets.iter().any(|t| t.action.writes()) || !self.prune.is_empty()
    }

    /// Whether some target failed to resolve.
    pub fn has_failures(&self) -> bool {
        self.targets.iter().any(|t| matches!(t.action, Action::Failed { .. }))
    }
}

/// The version of the JSON plan this occy writes and applies.
pub const PLAN_VERSION: u32 = 2;

/// A plan as saved by `--plan --out`, read back by `--apply`.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedPlan {
    #[serde(default)]
    pub plan_version: u32,
    pub sync_file: String,
    pub sync_file_sha256: String,
    pub targets: Vec<SavedTarget>,
    /// The work graph's nodes: `--apply` does exactly these.
    #[serde(default)]
    pub nodes: Vec<graph::Work>,
    /// Which shard each target is in, if planned with `--shards N`.
    #[serde(default)]
    pub shards: Option<shard::SavedShards>,
}

/// One saved target: enough to pin it.
#[derive(Debug, Clone, Deserialize)]
pub struct SavedTarget {
    pub entry: usize,
    pub source: String,
    pub destination: String,
    pub source_digest: Option<Digest>,
}

impl SavedPlan {
    /// Reads a plan file written by `occy sync --plan --out`.
    pub fn load(path: &std::path::Path) -> Result<SavedPlan> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read the plan", path, e))?;
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            plan_version: u32,
        }
        if let Ok(v) = serde_json::from_slice::<Version>(&bytes) {
            if v.plan_version != PLAN_VERSION {
                return Err(Error::usage(format!(
                    "{} is a version-{} plan; this occy applies version-{PLAN_VERSION} plans (a work graph): plan again with `occy sync FILE --plan --out {}`",
                    path.display(),
                    v.plan_version,
                    path.display()
                )));
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::usage(format!(
                "{} is not a plan written by `occy sync --plan --out`: {e}",
                path.display()
            ))
        })
    }
}

/// Whether a saved node's way and the current one agree ([`graph::How::agrees_with`]).
fn same_how(saved: &Option<graph::How>, now: &Option<graph::How>) -> bool {
    match (saved, now) {
        (Some(a), Some(b)) => a.agrees_with(b),
        (a, b) => a == b,
    }
}

/// Whether a shard sends a blob another way than the whole plan said only
/// because it holds part of a split group: where the whole plan mounts a
/// layer from a repository another shard writes, the shard uploads it, or
/// mounts it from one of its own or from the shard that owns it; or finds
/// it present, another shard running at once having put it there first (a
/// cut blob's owner does so before anything else).
fn lent(saved: &Option<graph::How>, now: &Option<graph::How>) -> bool {
    let sent = |h: &Option<graph::How>| matches!(h, Some(graph::How::Upload | graph::How::Mount(_)));
    sent(saved) && (sent(now) || matches!(now, Some(graph::How::Present)))
}

impl SavedPlan {
    /// The first differences between the work this plan saved and `now`,
    /// the graph of the same targets at the same digests planned against
    /// the destinations as they are: empty when the saved plan still
    /// applies node for node (same nodes, each blob getting in the same
    /// way). Ids and the order of nodes do not matter.
    /// With `whole` false (one shard of the saved plan), saved nodes that
    /// `now` lacks are not differences, nor a blob uploaded or mounted where
    /// the plan mounted or uploaded it ([`lent`]).
    pub fn differences(&self, now: &graph::WorkGraph, whole: bool, limit: usize) -> Vec<String> {
        let now = now.works();
        let saved: HashMap<&graph::NodeKey, &Option<graph::How>> =
            self.nodes.iter().map(|w| (&w.key, &w.how)).collect();
        let current: HashMap<&graph::NodeKey, &Option<graph::How>> = now.iter().map(|w| (&w.key, &w.how)).collect();
        let mut out = Vec::new();
        for w in &now {
            match saved.get(&w.key) {
                None => out.push(format!("{} is new", graph::describe_work(w))),
                Some(how) if !same_how(how, &w.how) && (whole || !lent(how, &w.how)) => out.push(format!(
                    "{}: the plan says {}, the destination now needs {}",
                    graph::describe_work(w),
                    graph::how_word(how.as_ref()),
                    graph::how_word(w.how.as_ref())
                )),
                Some(_) => {}
            }
        }
        for w in self.nodes.iter().filter(|_| whole) {
            if !current.contains_key(&w.key) {
                out.push(format!("{} is no longer needed", graph::describe_work(w)));
            }
        }
        out.truncate(limit);
        out
    }
}

/// The platforms a selection takes, spelled for plans and state records.
pub fn platforms_key(p: &PlatformSelection) -> String {
    match p {
        PlatformSelection::Default => "default".to_string(),
        PlatformSelection::All => "all".to_string(),
        PlatformSelection::List(l) => l.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
    }
}

/// The layer cache's key of the output a filtered target writes: the source
/// digest, the chain, the platforms, whether an index is kept and the media
/// types the destination wants.
pub fn output_key(t: &Target, source_digest: &Digest) -> String {
    let platforms = match crate::sink::kind::media_types(&t.destination) {
        MediaTypes::Oci => format!("{}+format=oci", platforms_key(&t.platforms)),
        MediaTypes::Keep | MediaTypes::OciWhenSynthesised => platforms_key(&t.platforms),
    };
    LayerCache::output_key(
        source_digest,
        &t.chain.hash(),
        &platforms,
        kind::of(&t.destination).keeps_index,
    )
}

/// How a chain is recorded in state files (empty without filters).
pub fn chain_record(chain: &FilterChain) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        chain.hash()
    }
}

/// Puts planned targets in sync-file order (by entry, keeping the order
/// within an entry) without a scratch copy of them: a stable sort of a
/// large element type takes a buffer of up to the whole array (at 10,000
/// targets it was the plan's heap peak; 34 MB at 100,000). Sorts their
/// positions, then moves each target once along the permutation's cycles.
pub fn sort_by_entry(targets: &mut [PlannedTarget]) {
    sort_by_key_in_place(targets, |t| t.entry)
}

fn sort_by_key_in_place<T, K: Ord>(items: &mut [T], key: impl Fn(&T) -> K) {
    if items.is_sorted_by_key(&key) {
        return;
    }
    // order[i]: the position whose item goes to i.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| key(&items[i]));
    for start in 0..items.len() {
        let mut at = start;
        while order[at] != start && order[at] != at {
            let from = order[at];
            items.swap(at, from);
            order[at] = at;
            at = from;
        }
        order[at] = at;
    }
}

#[cfg(test)]
mod tests {
    use super::sort_by_key_in_place;

    #[test]
    fn the_in_place_sort_is_stable_and_moves_every_item_where_a_stable_sort_would() {
        let mut seed = 7u64;
        for len in [0usize, 1, 2, 3, 10, 257, 1000] {
            let items: Vec<(u8, usize)> = (0..len)
                .map(|i| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((seed >> 60) as u8, i)
                })
                .collect();
            let mut expected = items.clone();
            expected.sort_by_key(|x| x.0);
            let mut sorted = items.clone();
            sort_by_key_in_place(&mut sorted, |x| x.0);
            assert_eq!(sorted, expected, "{len} items");
        }
        let mut reversed: Vec<(u8, usize)> = (0..100).rev().map(|i| ((i % 7) as u8, i)).collect();
        let mut expected = reversed.clone();
        expected.sort_by_key(|x| x.0);
        sort_by_key_in_place(&mut reversed, |x| x.0);
        assert_eq!(reversed, expected);
    }
}

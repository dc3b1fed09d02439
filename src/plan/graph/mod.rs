//! The work graph: the one model of what a run does. Every writing target
//! becomes nodes keyed by what they produce, so equal work is one node:
//!
//! - `fetch`: one read of a blob from a source (a registry is one source for
//!   all its repositories: a layer shared by 40 images is read once);
//! - `rewrite`: one pass of a filter chain over one layer, feeding every
//!   destination of that chain;
//! - `blob` / `config`: a blob in a store (a registry repository, or one file
//!   destination), and how it gets there: `present`, `mount` from another
//!   repository of the same registry (one this run reads or writes, or one
//!   earlier runs saw it in: `crate::blob_locations`), `upload`, or `write`
//!   (files);
//! - `manifest`, `index`, `tag`: the commit of one target, in that order;
//! - `referrer`: a manifest that refers to a target's image (a signature,
//!   an SBOM, an attestation), copied with its digest (and its cosign tag)
//!   after its subject; `referrers-tag`: the `sha256-<hex>` index a registry
//!   without the referrers API lists them in, merged with what is there;
//! - `check`: the post-run check of a target; `prune`: a tag to delete.
//!
//! Edges point from a node to the nodes that need it (a fetch feeds blobs and
//! rewrites; blobs and configs feed a manifest; manifests an index; the top
//! manifest or index its tag; a tag its check; an upload the mounts that
//! copy it within the same registry). The plan's per-target counts, its
//! totals and shared-work lines, the JSON `nodes`/`edges`, the DOT picture
//! and the executor all read this graph.

mod assemble;
mod presence;
mod render;

use crate::plan::shard::CutRole;
pub use assemble::{add_prunes, build, shape};
use assemble::{cached_output, Stores};
use presence::Presence;
pub use render::{describe_work, how_word};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use super::{Action, BlobCounts, PlanContext, PlannedTarget};
use crate::blob_locations::Remembered;
use crate::cache::LayerCache;
use crate::filter::FilterSpec;
use crate::image::{Compression, Descriptor, Digest};
use crate::reference::Reference;
pub use crate::sink::kind::StoredForm;
use crate::sink::store::{self, Capabilities, StoreId};

/// How a blob reaches its store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "how")]
pub enum How {
    /// The store holds it already.
    Present,
    /// Mounted from another repository of the same registry (boxed: most
    /// nodes are not mounts, and a node is small).
    Mount(Box<Mount>),
    /// Sent to a registry.
    Upload,
    /// Written to a file destination.
    Write,
}

/// A mount: from `from`, then each of `or` in turn while the registry
/// declines; uploaded when all decline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub from: String,
    /// More repositories to try (remembered ones), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or: Vec<String>,
    /// Whether the repositories are remembered from earlier runs (the
    /// blob-location cache), not known to hold the blob in this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remembered: bool,
    /// The shard of a saved plan that uploads the blob to `from` (`--apply
    /// plan.json --shard I/N`, the blob cut between shards): the mount is
    /// asked again, with a growing pause, until that shard has uploaded it
    /// or the wait runs out (then the blob is uploaded from its one read,
    /// as a declined remembered mount is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_shard: Option<usize>,
}

impl How {
    /// A mount from `from`, then from each of `or`.
    pub fn mount(from: String, or: Vec<String>, remembered: bool) -> How {
        How::Mount(Box::new(Mount {
            from,
            or,
            remembered,
            after_shard: None,
        }))
    }

    /// A mount from `from` once shard `owner` has uploaded the blob there.
    pub fn mount_after(from: String, owner: usize) -> How {
        How::Mount(Box::new(Mount {
            from,
            or: Vec::new(),
            remembered: true,
            after_shard: Some(owner),
        }))
    }
}

impl How {
    fn name(&self) -> &'static str {
        match self {
            How::Present => "present",
            How::Mount { .. } => "mount",
            How::Upload => "upload",
            How::Write => "write",
        }
    }

    /// Whether this moves bytes.
    pub fn sends(&self) -> bool {
        matches!(self, How::Upload | How::Write)
    }

    /// Whether this is a mount from repositories earlier runs remembered:
    /// a question to the registry, an upload when it declines.
    pub fn is_remembered_mount(&self) -> bool {
        matches!(self, How::Mount(m) if m.remembered)
    }

    /// Whether this may move bytes: it sends, or it is a remembered mount
    /// the registry may decline (then uploaded from the blob's one fetch).
    pub fn may_send(&self) -> bool {
        self.sends() || self.is_remembered_mount()
    }

    /// Whether a saved plan's way still holds: the same way, or both an
    /// upload or a mount from remembered repositories (hints of earlier
    /// runs, which the registry's answer turns into one or the other).
    pub fn agrees_with(&self, other: &How) -> bool {
        let hinted = |h: &How| matches!(h, How::Upload) || matches!(h, How::Mount(m) if m.remembered);
        self == other || (hinted(self) && hinted(other))
    }
}

/// A name in a node's key: shared text, as one store's or target's names
/// recur in many nodes.
pub type Name = Arc<str>;

/// What a node produces; equal keys are one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum NodeKey {
    Fetch {
        source: Name,
        digest: Digest,
    },
    Rewrite {
        input: Digest,
        chain: Name,
    },
    Blob {
        store: Name,
        blob: Name,
    },
    Config {
        store: Name,
        blob: Name,
    },
    Manifest {
        store: Name,
        manifest: Name,
    },
    Index {
        store: Name,
        manifest: Name,
    },
    Tag {
        destination: Name,
        image: Name,
    },
    /// A referrer manifest in a store, by its cosign tag or its digest.
    Referrer {
        store: Name,
        reference: Name,
    },
    /// The referrers tag (`sha256-<hex>`) of `subject` in a registry repository.
    ReferrersTag {
        store: Name,
        subject: Digest,
    },
    Check {
        destination: Name,
        image: Name,
    },
    Prune {
        destination: Name,
    },
}

impl NodeKey {
    /// `fetch`, `rewrite`, `blob`…
    pub fn kind(&self) -> &'static str {
        match self {
            NodeKey::Fetch { .. } => "fetch",
            NodeKey::Rewrite { .. } => "rewrite",
            NodeKey::Blob { .. } => "blob",
            NodeKey::Config { .. } => "config",
            NodeKey::Manifest { .. } => "manifest",
            NodeKey::Index { .. } => "index",
            NodeKey::Tag { .. } => "tag",
            NodeKey::Referrer { .. } => "referrer",
            NodeKey::ReferrersTag { .. } => "referrers-tag",
            NodeKey::Check { .. } => "check",
            NodeKey::Prune { .. } => "prune",
        }
    }

    /// The store a blob, config, manifest or index is in.
    pub fn store(&self) -> Option<&str> {
        match self {
            NodeKey::Blob { store, .. }
            | NodeKey::Config { store, .. }
            | NodeKey::Manifest { store, .. }
            | NodeKey::Index { store, .. }
            | NodeKey::Referrer { store, .. }
            | NodeKey::ReferrersTag { store, .. } => Some(store),
            _ => None,
        }
    }
}

/// The targets of a node, in order (up to two without a heap block).
pub type NodeTargets = smallvec::SmallVec<[usize; 2]>;

/// One node of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    /// (Four bytes: a plan of 100,000 targets has 700,000 nodes.)
    pub id: u32,
    #[serde(flatten)]
    pub key: NodeKey,
    /// Bytes this node moves (0 for a present or mounted blob).
    pub bytes: u64,
    /// For blobs and configs: how they get to their store.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    /// Whether the bytes are the source's and the output is only known
    /// after the rewrite (filtered targets).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub estimated: bool,
    /// The targets (indexes into the plan's `targets`) that need it: most
    /// nodes have one or two, kept inline (a plan of 100,000 targets has
    /// 700,000 nodes, and a one-element vector is a heap block of its own).
    pub targets: NodeTargets,
    /// The source blob a fetch reads, or a blob copies (for the executor).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_blob: Option<Arc<Descriptor>>,
    /// The uncompressed digest of a layer (plain-tar stores keep it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diff_id: Option<Digest>,
    /// The form of a blob in its store.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub form: Option<StoredForm>,
    /// A rewrite's output compression.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compression: Option<Compression>,
    /// A rewrite's output level.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub level: Option<i32>,
}

/// Why an edge's `to` needs its `from` (a byte in the graph, where a
/// string slice took 16: a plan of 100,000 targets has 800,000 edges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Label {
    AfterCommit,
    Checks,
    ConfigRead,
    Config,
    CopiedTo,
    Feeds,
    Layer,
    ListedIn,
    Manifest,
    MountedFrom,
    Referrer,
    ReferrersTag,
    RewrittenTo,
    Subject,
    Tagged,
}

impl Label {
    /// The label as plans show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::AfterCommit => "after commit",
            Label::Checks => "checks",
            Label::ConfigRead => "config read",
            Label::Config => "config",
            Label::CopiedTo => "copied to",
            Label::Feeds => "feeds",
            Label::Layer => "layer",
            Label::ListedIn => "listed in",
            Label::Manifest => "manifest",
            Label::MountedFrom => "mounted from",
            Label::Referrer => "referrer",
            Label::ReferrersTag => "referrers tag",
            Label::RewrittenTo => "rewritten to",
            Label::Subject => "subject",
            Label::Tagged => "tagged",
        }
    }
}

/// A "needs" edge: `to` needs `from`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeOut {
    pub from: u32,
    pub to: u32,
    pub label: &'static str,
}

/// The nodes of one writing target, in commit order.
#[derive(Debug, Clone, Default)]
pub struct TargetWork {
    /// Per platform image: its layer blob nodes (in manifest order), its
    /// config node and its manifest node.
    pub images: Vec<ImageWork>,
    pub index: Option<NodeIndex>,
    pub tag: Option<NodeIndex>,
    pub check: Option<NodeIndex>,
    /// The destination's tag names the image already: only its referrers
    /// are written (the commit puts nothing).
    pub in_place: bool,
}

/// The nodes of one platform image of a target.
#[derive(Debug, Clone)]
pub struct ImageWork {
    pub layers: Vec<NodeIndex>,
    /// The rewrite node of each layer (filtered targets), or None when the
    /// layer cache answered; empty for a target without filters.
    pub rewrites: Vec<Option<NodeIndex>>,
    pub config: NodeIndex,
    pub manifest: NodeIndex,
}

/// The graph of a run.
#[derive(Debug, Clone, Default)]
pub struct WorkGraph {
    pub graph: StableDiGraph<Work, Label>,
    by_key: KeyIndex,
    /// Planned target index → its nodes (writing targets only).
    pub targets: BTreeMap<usize, TargetWork>,
    /// What each `referrer` node puts.
    pub referrers: HashMap<NodeIndex, ReferrerWork>,
    /// What each `referrers-tag` node lists: its subject and the entries to add.
    pub referrers_tags: HashMap<NodeIndex, (Digest, Vec<Descriptor>)>,
    /// Nodes that start before the others when ready: what puts the blobs
    /// other shards wait for where they mount them from.
    pub first: HashSet<NodeIndex>,
}

/// The edges of the JSON plan, by (from, to, label), each made as it is
/// written: their order is kept as 4-byte edge numbers (a plan of 100,000
/// targets has 700,000 edges, and the made edges were 22 MiB at once).
struct EdgesInOrder<'a> {
    g: &'a WorkGraph,
    order: Vec<petgraph::stable_graph::EdgeIndex>,
}

impl<'a> EdgesInOrder<'a> {
    fn of(g: &'a WorkGraph) -> Self {
        let mut order: Vec<_> = g.graph.edge_indices().collect();
        // (Each key made as it is compared: cached keys would be the 22 MiB.)
        order.sort_unstable_by(|&a, &b| Self::edge(g, a).cmp(&Self::edge(g, b)));
        EdgesInOrder { g, order }
    }

    fn edge(g: &WorkGraph, e: petgraph::stable_graph::EdgeIndex) -> Option<EdgeOut> {
        let (from, to) = g.graph.edge_endpoints(e)?;
        Some(EdgeOut {
            from: g.graph[from].id,
            to: g.graph[to].id,
            label: g.graph.edge_weight(e)?.as_str(),
        })
    }
}

impl Serialize for EdgesInOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.order.len()))?;
        for edge in self.order.iter().filter_map(|&e| Self::edge(self.g, e)) {
            seq.serialize_element(&edge)?;
        }
        seq.end()
    }
}

/// A referrer manifest to put: its bytes, its descriptor (as the
/// referrers tag or `index.json` lists it) and its cosign tag.
#[derive(Debug, Clone)]
pub struct ReferrerWork {
    pub manifest: crate::image::RawManifest,
    pub descriptor: Descriptor,
    pub tag: Option<String>,
}

/// The JSON plan's `nodes` and `edges`, written from the graph as they are
/// serialized (a plan of 10,000 targets holds its nodes once).
impl Serialize for WorkGraph {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("nodes", &self.works())?;
        map.serialize_entry("edges", &EdgesInOrder::of(self))?;
        map.end()
    }
}

/// Where a destination keeps blobs, and what it is (its store's id and
/// capabilities, as the graph reads them).
#[derive(Debug, Clone)]
pub struct Store {
    pub id: StoreId,
    /// The id as nodes name it: `registry://host/repo`, or the destination
    /// for files.
    pub key: Name,
    pub form: StoredForm,
    /// The registry host, for registries (shared text: each blob uploaded
    /// remembers where, and a plan of 100,000 targets uploads 200,000).
    pub host: Option<Name>,
    pub repository: Option<Name>,
    pub keeps_index: bool,
    /// Blobs can be mounted into it from stores with its sharing id.
    pub can_mount: bool,
}

impl Store {
    /// The store a destination writes, as its kind answers.
    pub fn of(dest: &Reference) -> Store {
        Store::new(StoreId::of(dest), store::capabilities(dest))
    }

    /// The store with `id` that can do what `caps` says.
    pub fn new(id: StoreId, caps: Capabilities) -> Store {
        Store {
            key: Name::from(id.to_string()),
            form: caps.stored_form,
            host: id.host().map(Name::from),
            repository: id.repository_name().map(Name::from),
            keeps_index: caps.keeps_index,
            can_mount: caps.can_mount,
            id,
        }
    }
}

/// Where a blob, once in a store, is there for every target: a registry
/// host (its repositories mount it) for a registry repository, else the
/// store itself.
pub fn sharing_store(store: &str) -> String {
    match StoreId::parse(store) {
        Some(id) => id.sharing().to_string(),
        None => store.to_string(),
    }
}

/// Where a source reads blobs: a registry is one source for all its
/// repositories (a blob is the same wherever it is).
pub fn source_store(source: &Reference) -> String {
    StoreId::place_of(source).to_string()
}

/// The node of each key, found by the key's hash: the keys themselves are
/// kept once, in the graph's nodes (a 10,000-target plan has 70,000 of
/// them).
#[derive(Debug, Clone, Default)]
struct KeyIndex {
    hasher: std::hash::RandomState,
    /// Key hash → the node of the first key with that hash.
    first: HashMap<u64, NodeIndex>,
    /// The keys whose hash an other key has (rare, but kept exact).
    more: HashMap<NodeKey, NodeIndex>,
}

impl KeyIndex {
    fn get(&self, graph: &StableDiGraph<Work, Label>, key: &NodeKey) -> Option<NodeIndex> {
        let i = *self.first.get(&self.hasher.hash_one(key))?;
        if graph.node_weight(i).is_some_and(|w| w.key == *key) {
            Some(i)
        } else {
            self.more.get(key).copied()
        }
    }

    /// Records that node `i` has `key` (replacing an earlier node of it).
    fn insert(&mut self, graph: &StableDiGraph<Work, Label>, key: &NodeKey, i: NodeIndex) {
        use std::collections::hash_map::Entry;
        match self.first.entry(self.hasher.hash_one(key)) {
            Entry::Vacant(e) => {
                e.insert(i);
            }
            Entry::Occupied(mut e) => {
                if graph.node_weight(*e.get()).is_none_or(|w| w.key == *key) {
                    e.insert(i);
                } else {
                    self.more.insert(key.clone(), i);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.first.clear();
        self.more.clear();
    }
}

impl WorkGraph {
    fn node(&mut self, key: NodeKey, target: usize, init: impl FnOnce(&mut Work)) -> (NodeIndex, bool) {
        if let Some(i) = self.by_key.get(&self.graph, &key) {
            let w = &mut self.graph[i];
            // Targets come in order, so this is mostly a push.
            if let Err(at) = w.targets.binary_search(&target) {
                w.targets.insert(at, target);
            }
            return (i, false);
        }
        let mut w = Work {
            id: 0,
            key,
            bytes: 0,
            how: None,
            estimated: false,
            targets: smallvec::smallvec![target],
            source_blob: None,
            diff_id: None,
            form: None,
            compression: None,
            level: None,
        };
        init(&mut w);
        let i = self.graph.add_node(w);
        self.by_key.insert(&self.graph, &self.graph[i].key, i);
        (i, true)
    }

    fn edge(&mut self, from: NodeIndex, to: NodeIndex, label: Label) {
        if !self.graph.edges_connecting(from, to).any(|e| *e.weight() == label) {
            self.graph.add_edge(from, to, label);
        }
    }

    /// The node a key names.
    pub fn find(&self, key: &NodeKey) -> Option<NodeIndex> {
        self.by_key.get(&self.graph, key)
    }

    /// The nodes `i` needs.
    pub fn needs(&self, i: NodeIndex) -> Vec<(NodeIndex, &str)> {
        self.graph
            .edges_directed(i, Direction::Incoming)
            .map(|e| (e.source(), e.weight().as_str()))
            .collect()
    }

    /// The nodes that need `i`.
    pub fn needed_by(&self, i: NodeIndex) -> Vec<(NodeIndex, &str)> {
        self.graph
            .edges_directed(i, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().as_str()))
            .collect()
    }

    /// Nodes in a stable order (by key), numbered for JSON and DOT.
    fn numbered(&self) -> Vec<NodeIndex> {
        let mut v: Vec<NodeIndex> = self.graph.node_indices().collect();
        v.sort_by(|a, b| self.graph[*a].key.cmp(&self.graph[*b].key));
        v
    }

    /// Gives every node its `id` (its place in the stable order).
    fn renumber(&mut self) {
        for (n, i) in self.numbered().into_iter().enumerate() {
            self.graph[i].id = n as u32;
        }
    }

    /// The nodes in the order of their ids (the JSON plan's order).
    pub fn works(&self) -> Vec<&Work> {
        let mut v: Vec<&Work> = self.graph.node_weights().collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The edges, for DOT, by (from, to, label).
    pub fn edges_out(&self) -> Vec<EdgeOut> {
        let edges = EdgesInOrder::of(self);
        edges
            .order
            .iter()
            .filter_map(|&e| EdgesInOrder::edge(self, e))
            .collect()
    }

    /// What one target moves: each blob and config node counted for the
    /// first target that needs it; for later ones it is present by then.
    pub fn counts_for(&self, target: usize) -> BlobCounts {
        let mut c = BlobCounts::default();
        let Some(tw) = self.targets.get(&target) else { return c };
        let mut seen = HashSet::new();
        for img in &tw.images {
            for &i in img.layers.iter().chain(std::iter::once(&img.config)) {
                if !seen.insert(i) {
                    continue;
                }
                let w = &self.graph[i];
                c.estimated |= w.estimated;
                if w.targets.first() != Some(&target) {
                    c.present += 1;
                    continue;
                }
                match &w.how {
                    Some(How::Present) | None => c.present += 1,
                    Some(How::Mount(m)) if m.remembered && m.after_shard.is_none() => {
                        c.remembered += 1;
                        c.remembered_bytes += w.source_blob.as_ref().map(|d| d.size).unwrap_or(0);
                    }
                    Some(How::Mount { .. }) => c.mount += 1,
                    Some(How::Upload | How::Write) => {
                        c.upload += 1;
                        c.bytes += w.bytes;
                    }
                }
            }
        }
        c
    }

    /// The remembered repositories (from earlier runs) that target `target`
    /// mounts from first, with how many of its blobs each: for the plan.
    pub fn remembered_mounts(&self, target: usize) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        let Some(tw) = self.targets.get(&target) else {
            return out;
        };
        let mut seen = HashSet::new();
        for img in &tw.images {
            for &i in img.layers.iter().chain(std::iter::once(&img.config)) {
                let w = &self.graph[i];
                if !seen.insert(i) || w.targets.first() != Some(&target) {
                    continue;
                }
                if let Some(How::Mount(m)) = &w.how {
                    if m.remembered && m.after_shard.is_none() {
                        *out.entry(m.from.clone()).or_default() += 1;
                    }
                }
            }
        }
        out
    }

    /// What a shard of a saved plan waits for other shards to upload, for
    /// people: `mount 2 blobs (1.2 KiB) from plan/r00 once shard 0 uploads
    /// them`, per repository and shard.
    pub fn awaited_lines(&self) -> Vec<String> {
        let mut by: BTreeMap<(&str, usize), (usize, u64)> = BTreeMap::new();
        for w in self.graph.node_weights() {
            if let Some(How::Mount(m)) = &w.how {
                if let Some(k) = m.after_shard {
                    let e = by.entry((m.from.as_str(), k)).or_default();
                    e.0 += 1;
                    e.1 += w.source_blob.as_ref().map(|d| d.size).unwrap_or(0);
                }
            }
        }
        by.into_iter()
            .map(|((from, k), (n, bytes))| {
                let (blobs, them) = if n == 1 { ("blob", "it") } else { ("blobs", "them") };
                format!(
                    "mount {n} {blobs} ({}) from {from} once shard {k} uploads {them}",
                    crate::image::human_size(bytes)
                )
            })
            .collect()
    }

    /// Per store: fetches (sources), rewrites, uploads, mounts, present
    /// blobs, manifest PUTs and bytes, as the executor will do them.
    pub fn store_totals(&self) -> BTreeMap<String, StoreTotals> {
        let mut out: BTreeMap<String, StoreTotals> = BTreeMap::new();
        for w in self.graph.node_weights() {
            match &w.key {
                NodeKey::Fetch { .. } => {}
                NodeKey::Rewrite { .. } => {
                    if let Some(t) = w.targets.first() {
                        let _ = t;
                    }
                }
                NodeKey::Blob { store, .. } | NodeKey::Config { store, .. } => {
                    let t = out.entry(store.to_string()).or_default();
                    match &w.how {
                        Some(How::Upload | How::Write) => {
                            t.uploads += 1;
                            t.bytes_sent += w.bytes;
                        }
                        Some(How::Mount(m)) if m.remembered && m.after_shard.is_none() => t.remembered_mounts += 1,
                        Some(How::Mount { .. }) => t.mounts += 1,
                        _ => t.present += 1,
                    }
                    t.estimated |= w.estimated;
                }
                NodeKey::Manifest { store, .. }
                | NodeKey::Index { store, .. }
                | NodeKey::Referrer { store, .. }
                | NodeKey::ReferrersTag { store, .. } => {
                    out.entry(store.to_string()).or_default().manifests += 1;
                }
                _ => {}
            }
        }
        for i in self.graph.node_indices() {
            let w = &self.graph[i];
            if let NodeKey::Fetch { source, .. } = &w.key {
                let t = out.entry(source.to_string()).or_default();
                if self.fetched_only_if_declined(i) {
                    t.fetches_if_declined += 1;
                    t.bytes_read_if_declined += w.bytes;
                } else {
                    t.fetches += 1;
                    t.bytes_read += w.bytes;
                }
            }
            if let NodeKey::Rewrite { .. } = &w.key {
                for (to, _) in self.needed_by(i) {
                    if let Some(store) = self.graph[to].key.store() {
                        out.entry(store.to_string()).or_default().rewrites_in += 1;
                    }
                }
            }
        }
        out
    }

    /// The blobs each target writes, as `(store, blob, size)`: the store
    /// where a blob is shared once there (a registry host, whose
    /// repositories mount it; a layout or directory; else the destination),
    /// and the blob as the graph names it. What `--shard` partitions by.
    pub fn blobs_by_target(&self) -> BTreeMap<usize, Vec<(String, String, u64)>> {
        let mut out = BTreeMap::new();
        for (&t, tw) in &self.targets {
            let mut v: Vec<(String, String, u64)> = Vec::new();
            for img in &tw.images {
                for &i in img.layers.iter().chain(std::iter::once(&img.config)) {
                    let w = &self.graph[i];
                    if let NodeKey::Blob { store, blob } | NodeKey::Config { store, blob } = &w.key {
                        let size = w.source_blob.as_ref().map(|d| d.size).unwrap_or(w.bytes);
                        v.push((sharing_store(store), blob.to_string(), size));
                    }
                }
            }
            out.insert(t, v);
        }
        out
    }

    /// Whether fetch `f` feeds only mounts from remembered repositories:
    /// it reads the blob only if the registry declines one of them.
    pub fn fetched_only_if_declined(&self, f: NodeIndex) -> bool {
        let fed = self.needed_by(f);
        !fed.is_empty()
            && fed.iter().all(|&(n, label)| {
                label == "copied to" && self.graph[n].how.as_ref().is_some_and(How::is_remembered_mount)
            })
    }

    /// Rewrites in the whole run.
    pub fn rewrites(&self) -> usize {
        self.graph
            .node_weights()
            .filter(|w| matches!(w.key, NodeKey::Rewrite { .. }))
            .count()
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Per-store counts of a plan (`"stores"` in the JSON plan).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreTotals {
    /// Blobs read from this source.
    pub fetches: usize,
    pub bytes_read: u64,
    /// Blobs read from this source only if the registry declines a mount
    /// from a remembered repository (each read at most once either way).
    #[serde(skip_serializing_if = "is_zero")]
    pub fetches_if_declined: usize,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_read_if_declined: u64,
    /// Rewritten layers this store receives.
    pub rewrites_in: usize,
    /// Blobs uploaded (registries) or written (files).
    pub uploads: usize,
    /// Mounts from repositories this run knows hold the blob.
    pub mounts: usize,
    /// Mounts from repositories earlier runs remembered (uploads if declined).
    #[serde(skip_serializing_if = "is_zero")]
    pub remembered_mounts: usize,
    pub present: usize,
    /// Manifests and indexes PUT or written.
    pub manifests: usize,
    pub bytes_sent: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// Marks a target as failed in the counts (no nodes).
pub fn is_writing(t: &PlannedTarget) -> bool {
    !matches!(t.action, Action::Unchanged | Action::Failed { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_mount_agrees_with_an_upload_and_nothing_else_changes() {
        let remembered = |from: &str| How::mount(from.into(), Vec::new(), true);
        let known = How::mount("a".into(), Vec::new(), false);
        assert!(remembered("a").agrees_with(&How::Upload));
        assert!(How::Upload.agrees_with(&remembered("b")));
        assert!(remembered("a").agrees_with(&remembered("b")));
        assert!(known.agrees_with(&known.clone()));
        assert!(!known.agrees_with(&How::Upload));
        assert!(!How::Present.agrees_with(&remembered("a")));
        assert!(!How::Upload.agrees_with(&How::Present));
    }

    #[test]
    fn keys_whose_hashes_meet_are_still_two_nodes() {
        let mut g = WorkGraph::default();
        let a = NodeKey::Prune {
            destination: "a".into(),
        };
        let b = NodeKey::Prune {
            destination: "b".into(),
        };
        let (ia, _) = g.node(a.clone(), 0, |_| {});
        // As if b's hash were a's: the index names a for it.
        let hb = g.by_key.hasher.hash_one(&b);
        g.by_key.first.insert(hb, ia);
        let (ib, created) = g.node(b.clone(), 1, |_| {});
        assert!(created);
        assert_ne!(ia, ib);
        assert_eq!(g.find(&a), Some(ia));
        assert_eq!(g.find(&b), Some(ib));
        let (again, created) = g.node(b.clone(), 2, |_| {});
        assert!(!created);
        assert_eq!(again, ib);
        assert_eq!(g.graph[ib].targets.as_slice(), [1, 2]);
        assert_eq!(
            g.find(&NodeKey::Prune {
                destination: "c".into()
            }),
            None
        );
    }

    #[test]
    fn a_node_lists_each_target_once_in_order() {
        let mut g = WorkGraph::default();
        let k = NodeKey::Prune {
            destination: "a".into(),
        };
        for t in [5, 3, 5, 9, 3, 0] {
            g.node(k.clone(), t, |_| {});
        }
        let i = g.find(&k).expect("the node");
        assert_eq!(g.graph[i].targets.as_slice(), [0, 3, 5, 9]);
    }

    /// A plan of 10,000 targets holds 70,000 nodes and 40,000 descriptors:
    /// their size is the plan's memory (bench/plan-scale.sh measures it).
    #[test]
    fn nodes_and_descriptors_stay_small() {
        assert!(std::mem::size_of::<Work>() <= 160, "{}", std::mem::size_of::<Work>());
        assert!(
            std::mem::size_of::<crate::plan::PlannedTarget>() <= 608,
            "{}",
            std::mem::size_of::<crate::plan::PlannedTarget>()
        );
        assert!(
            std::mem::size_of::<Descriptor>() <= 56,
            "{}",
            std::mem::size_of::<Descriptor>()
        );
        assert!(
            std::mem::size_of::<Option<How>>() <= 16,
            "{}",
            std::mem::size_of::<Option<How>>()
        );
    }
}

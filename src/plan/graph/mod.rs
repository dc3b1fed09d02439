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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
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
}

impl How {
    /// A mount from `from`, then from each of `or`.
    pub fn mount(from: String, or: Vec<String>, remembered: bool) -> How {
        How::Mount(Box::new(Mount { from, or, remembered }))
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

    /// Whether a saved plan's way still holds: the same way, or both an
    /// upload or a mount from remembered repositories (hints of earlier
    /// runs, which the registry's answer turns into one or the other).
    pub fn agrees_with(&self, other: &How) -> bool {
        let hinted = |h: &How| matches!(h, How::Upload) || matches!(h, How::Mount(m) if m.remembered);
        self == other || (hinted(self) && hinted(other))
    }
}

/// `upload blob sha256:ab12… to registry://host/repo`: one node of work,
/// for messages.
pub fn describe_work(w: &Work) -> String {
    let short = |s: &str| match Digest::parse(s) {
        Ok(d) => d.short().to_string(),
        Err(_) => s.to_string(),
    };
    match &w.key {
        NodeKey::Fetch { source, digest } => format!("fetch {} from {source}", digest.short()),
        NodeKey::Rewrite { input, .. } => format!("rewrite {}", input.short()),
        NodeKey::Blob { store, blob } | NodeKey::Config { store, blob } => {
            let verb = match &w.how {
                Some(How::Upload) => "upload".to_string(),
                Some(How::Write) => "write".to_string(),
                Some(How::Mount(m)) => format!("mount (from {})", m.from),
                _ => "find".to_string(),
            };
            let what = w
                .source_blob
                .as_ref()
                .map(|d| d.digest.short().to_string())
                .unwrap_or_else(|| short(blob));
            format!("{verb} {} {what} to {store}", w.key.kind())
        }
        NodeKey::Manifest { store, .. } | NodeKey::Index { store, .. } => format!("{} in {store}", w.key.kind()),
        NodeKey::Tag { destination, image } => format!("commit {image} to {destination}"),
        NodeKey::Referrer { store, reference } => format!("referrer {reference} in {store}"),
        NodeKey::ReferrersTag { store, subject } => format!("the referrers tag of {subject} in {store}"),
        NodeKey::Check { destination, image } => format!("check {image} at {destination}"),
        NodeKey::Prune { destination } => format!("prune {destination}"),
    }
}

/// How a blob gets in, in words: `present`, `mount from a/b`, `upload`.
pub fn how_word(how: Option<&How>) -> String {
    match how {
        None => "nothing to move".to_string(),
        Some(How::Mount(m)) if m.remembered => format!("mount from {} (remembered)", m.from),
        Some(How::Mount(m)) => format!("mount from {}", m.from),
        Some(h) => h.name().to_string(),
    }
}

/// What a node produces; equal keys are one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum NodeKey {
    Fetch {
        source: String,
        digest: Digest,
    },
    Rewrite {
        input: Digest,
        chain: String,
    },
    Blob {
        store: String,
        blob: String,
    },
    Config {
        store: String,
        blob: String,
    },
    Manifest {
        store: String,
        manifest: String,
    },
    Index {
        store: String,
        manifest: String,
    },
    Tag {
        destination: String,
        image: String,
    },
    /// A referrer manifest in a store, by its cosign tag or its digest.
    Referrer {
        store: String,
        reference: String,
    },
    /// The referrers tag (`sha256-<hex>`) of `subject` in a registry repository.
    ReferrersTag {
        store: String,
        subject: Digest,
    },
    Check {
        destination: String,
        image: String,
    },
    Prune {
        destination: String,
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

/// One node of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Work {
    pub id: usize,
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
    /// The targets (indexes into the plan's `targets`) that need it.
    pub targets: Vec<usize>,
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

/// A "needs" edge: `to` needs `from`.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeOut {
    pub from: usize,
    pub to: usize,
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
    /// layer cache answered.
    pub rewrites: Vec<Option<NodeIndex>>,
    pub config: NodeIndex,
    pub manifest: NodeIndex,
}

/// The graph of a run.
#[derive(Debug, Clone, Default)]
pub struct WorkGraph {
    pub graph: StableDiGraph<Work, &'static str>,
    by_key: KeyIndex,
    /// Planned target index → its nodes (writing targets only).
    pub targets: BTreeMap<usize, TargetWork>,
    /// What each `referrer` node puts.
    pub referrers: HashMap<NodeIndex, ReferrerWork>,
    /// What each `referrers-tag` node lists: its subject and the entries to add.
    pub referrers_tags: HashMap<NodeIndex, (Digest, Vec<Descriptor>)>,
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
        map.serialize_entry("edges", &self.edges_out())?;
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
    pub key: String,
    pub form: StoredForm,
    /// The registry host, for registries.
    pub host: Option<String>,
    pub repository: Option<String>,
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
            key: id.to_string(),
            form: caps.stored_form,
            host: id.host().map(str::to_string),
            repository: id.repository_name().map(str::to_string),
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

/// The compression of a layer as its media type says (gzip when unknown).
fn layer_compression(desc: &Descriptor) -> Compression {
    Compression::from_media_type(&desc.media_type).unwrap_or(Compression::Gzip)
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
    fn get(&self, graph: &StableDiGraph<Work, &'static str>, key: &NodeKey) -> Option<NodeIndex> {
        let i = *self.first.get(&self.hasher.hash_one(key))?;
        if graph.node_weight(i).is_some_and(|w| w.key == *key) {
            Some(i)
        } else {
            self.more.get(key).copied()
        }
    }

    /// Records that node `i` has `key` (replacing an earlier node of it).
    fn insert(&mut self, graph: &StableDiGraph<Work, &'static str>, key: &NodeKey, i: NodeIndex) {
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
            targets: vec![target],
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

    fn edge(&mut self, from: NodeIndex, to: NodeIndex, label: &'static str) {
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
            .map(|e| (e.source(), *e.weight()))
            .collect()
    }

    /// The nodes that need `i`.
    pub fn needed_by(&self, i: NodeIndex) -> Vec<(NodeIndex, &str)> {
        self.graph
            .edges_directed(i, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
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
            self.graph[i].id = n;
        }
    }

    /// The nodes in the order of their ids (the JSON plan's order).
    pub fn works(&self) -> Vec<&Work> {
        let mut v: Vec<&Work> = self.graph.node_weights().collect();
        v.sort_by_key(|w| w.id);
        v
    }

    /// The edges, for the JSON plan and DOT, by (from, to, label).
    pub fn edges_out(&self) -> Vec<EdgeOut> {
        let mut v: Vec<EdgeOut> = (&self.graph)
            .edge_references()
            .map(|e| EdgeOut {
                from: self.graph[e.source()].id,
                to: self.graph[e.target()].id,
                label: e.weight(),
            })
            .collect();
        v.sort_by(|a, b| (a.from, a.to, a.label).cmp(&(b.from, b.to, b.label)));
        v
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
                    if m.remembered {
                        *out.entry(m.from.clone()).or_default() += 1;
                    }
                }
            }
        }
        out
    }

    /// Per store: fetches (sources), rewrites, uploads, mounts, present
    /// blobs, manifest PUTs and bytes, as the executor will do them.
    pub fn store_totals(&self) -> BTreeMap<String, StoreTotals> {
        let mut out: BTreeMap<String, StoreTotals> = BTreeMap::new();
        for w in self.graph.node_weights() {
            match &w.key {
                NodeKey::Fetch { source, .. } => {
                    let t = out.entry(source.clone()).or_default();
                    t.fetches += 1;
                    t.bytes_read += w.bytes;
                }
                NodeKey::Rewrite { .. } => {
                    if let Some(t) = w.targets.first() {
                        let _ = t;
                    }
                }
                NodeKey::Blob { store, .. } | NodeKey::Config { store, .. } => {
                    let t = out.entry(store.clone()).or_default();
                    match &w.how {
                        Some(How::Upload | How::Write) => {
                            t.uploads += 1;
                            t.bytes_sent += w.bytes;
                        }
                        Some(How::Mount { .. }) => t.mounts += 1,
                        _ => t.present += 1,
                    }
                    t.estimated |= w.estimated;
                }
                NodeKey::Manifest { store, .. }
                | NodeKey::Index { store, .. }
                | NodeKey::Referrer { store, .. }
                | NodeKey::ReferrersTag { store, .. } => {
                    out.entry(store.clone()).or_default().manifests += 1;
                }
                _ => {}
            }
        }
        for i in self.graph.node_indices() {
            if let NodeKey::Rewrite { .. } = &self.graph[i].key {
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
                        v.push((sharing_store(store), blob.clone(), size));
                    }
                }
            }
            out.insert(t, v);
        }
        out
    }

    /// Rewrites in the whole run.
    pub fn rewrites(&self) -> usize {
        self.graph
            .node_weights()
            .filter(|w| matches!(w.key, NodeKey::Rewrite { .. }))
            .count()
    }

    /// Lines of shared work: each layer needed by more than one store, with
    /// what happens to it everywhere.
    pub fn shared_lines(&self) -> Vec<String> {
        // source digest → (fetch, rewrite?, blob nodes fed by it)
        let mut out = Vec::new();
        let mut fetches: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|&i| matches!(self.graph[i].key, NodeKey::Fetch { .. }))
            .collect();
        fetches.sort_by_key(|&i| self.graph[i].id);
        for f in fetches {
            let w = &self.graph[f];
            let NodeKey::Fetch { digest, .. } = &w.key else {
                continue;
            };
            let mut how: BTreeMap<&'static str, usize> = BTreeMap::new();
            let mut rewrites = 0;
            let mut stores = HashSet::new();
            let mut visit = vec![f];
            while let Some(n) = visit.pop() {
                for (to, _) in self.needed_by(n) {
                    match &self.graph[to].key {
                        NodeKey::Rewrite { .. } => {
                            rewrites += 1;
                            visit.push(to);
                        }
                        NodeKey::Blob { store, .. } => {
                            stores.insert(store.clone());
                            if let Some(h) = &self.graph[to].how {
                                *how.entry(h.name()).or_default() += 1;
                            }
                            // Mounts that copy this upload.
                            for (m, label) in self.needed_by(to) {
                                if label == "mounted from" {
                                    if let Some(h) = &self.graph[m].how {
                                        *how.entry(h.name()).or_default() += 1;
                                    }
                                    if let Some(s) = self.graph[m].key.store() {
                                        stores.insert(s.to_string());
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if stores.len() < 2 {
                continue;
            }
            let mut parts = vec!["fetched once".to_string()];
            if rewrites > 0 {
                parts.push(format!("rewritten {}", times(rewrites)));
            }
            for (name, verb) in [
                ("upload", "uploaded to"),
                ("mount", "mounted in"),
                ("write", "written to"),
            ] {
                if let Some(n) = how.get(name) {
                    parts.push(format!("{verb} {n} {}", if *n == 1 { "store" } else { "stores" }));
                }
            }
            out.push(format!(
                "layer {} ({}): {}",
                digest.short(),
                crate::image::human_size(w.bytes),
                parts.join("; ")
            ));
        }
        out
    }

    /// The graph in Graphviz's DOT language: targets as clusters, shared
    /// fetches and rewrites outside them, drawn once.
    pub fn dot(&self, plan_targets: &[PlannedTarget]) -> String {
        let mut s = String::from("digraph occy_plan {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n");
        let label = |w: &Work| -> String {
            let what = match &w.key {
                NodeKey::Fetch { source, digest } => format!("fetch {}\\nfrom {}", digest.short(), source),
                NodeKey::Rewrite { input, chain } => {
                    format!("rewrite {}\\nchain {}", input.short(), &chain[..12.min(chain.len())])
                }
                NodeKey::Blob { store, blob } | NodeKey::Config { store, blob } => format!(
                    "{} {}\\n{}\\n{}",
                    w.key.kind(),
                    short_blob(blob),
                    w.how.as_ref().map(|h| how_word(Some(h))).unwrap_or_default(),
                    store
                ),
                NodeKey::Manifest { manifest, .. } | NodeKey::Index { manifest, .. } => {
                    format!("{} {}", w.key.kind(), short_blob(manifest))
                }
                NodeKey::Tag { destination, .. } => format!("tag {destination}"),
                NodeKey::Referrer { reference, .. } => format!("referrer {}", short_blob(reference)),
                NodeKey::ReferrersTag { subject, .. } => format!("referrers tag of {}", subject.short()),
                NodeKey::Check { .. } => "check".to_string(),
                NodeKey::Prune { destination } => format!("prune {destination}"),
            };
            dot_escape(&what)
        };
        let shape = |w: &Work| match w.key {
            NodeKey::Fetch { .. } => "shape=box, style=filled, fillcolor=\"#dbeafe\"",
            NodeKey::Rewrite { .. } => "shape=box, style=filled, fillcolor=\"#fde68a\"",
            NodeKey::Blob { .. } | NodeKey::Config { .. } => match w.how {
                Some(How::Present) => "shape=ellipse, style=dashed",
                Some(How::Mount { .. }) => "shape=ellipse, style=filled, fillcolor=\"#e9d5ff\"",
                _ => "shape=ellipse, style=filled, fillcolor=\"#bbf7d0\"",
            },
            NodeKey::Tag { .. } | NodeKey::ReferrersTag { .. } => "shape=tab",
            NodeKey::Referrer { .. } => "shape=component, style=filled, fillcolor=\"#fbcfe8\"",
            NodeKey::Check { .. } => "shape=note",
            NodeKey::Prune { .. } => "shape=octagon, style=filled, fillcolor=\"#fecaca\"",
            _ => "shape=component",
        };
        // A node belongs to a target's cluster when that target is its only one.
        let mut clustered: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
        let mut free = Vec::new();
        for i in self.numbered() {
            let w = &self.graph[i];
            match (w.targets.as_slice(), &w.key) {
                ([_], NodeKey::Fetch { .. } | NodeKey::Rewrite { .. }) => free.push(i),
                ([t], _) => clustered.entry(*t).or_default().push(i),
                _ => free.push(i),
            }
        }
        for (t, nodes) in &clustered {
            let name = plan_targets.get(*t).map(|p| p.destination.clone()).unwrap_or_default();
            let _ = writeln!(
                s,
                "  subgraph cluster_{t} {{\n    label=\"{}\";\n    style=rounded;",
                dot_escape(&name)
            );
            for &i in nodes {
                let w = &self.graph[i];
                let _ = writeln!(s, "    n{} [label=\"{}\", {}];", w.id, label(w), shape(w));
            }
            s.push_str("  }\n");
        }
        for i in free {
            let w = &self.graph[i];
            let _ = writeln!(s, "  n{} [label=\"{}\", {}];", w.id, label(w), shape(w));
        }
        for e in self.edges_out() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{}\"];", e.from, e.to, dot_escape(e.label));
        }
        s.push_str("}\n");
        s
    }
}

fn times(n: usize) -> String {
    match n {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    }
}

fn short_blob(b: &str) -> String {
    match Digest::parse(b) {
        Ok(d) => d.short().to_string(),
        Err(_) => b.chars().take(40).collect(),
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace("\\\\n", "\\n")
}

/// Per-store counts of a plan (`"stores"` in the JSON plan).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreTotals {
    /// Blobs read from this source.
    pub fetches: usize,
    pub bytes_read: u64,
    /// Rewritten layers this store receives.
    pub rewrites_in: usize,
    /// Blobs uploaded (registries) or written (files).
    pub uploads: usize,
    pub mounts: usize,
    pub present: usize,
    /// Manifests and indexes PUT or written.
    pub manifests: usize,
    pub bytes_sent: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// A blob of one target: the layer (or config) and its key in the store.
struct WantedBlob {
    /// The digest the store keeps it under (digest or diff_id), or the
    /// rewrite's output name.
    blob: String,
    /// The digest to look for in the store (None: unknown until rewritten).
    lookup: Option<Digest>,
}

/// Builds the graph of every writing target of `planned`, asking each
/// store which blobs it holds.
pub async fn build(ctx: &PlanContext, planned: &[PlannedTarget]) -> WorkGraph {
    // Each destination's store: its id and what it can do.
    let mut stores = Stores::new();
    for t in planned.iter().filter(|t| t.action.writes()) {
        if stores.contains_key(&t.destination) {
            continue;
        }
        let view = match ctx.store(&t.target.destination) {
            Ok(s) => Store::new(s.id().clone(), s.capabilities()),
            Err(_) => Store::of(&t.target.destination),
        };
        stores.insert(t.destination.clone(), view);
    }
    // Blobs each store holds now (asked once per store and blob).
    let presence = presence(ctx, planned, &stores).await;
    // Where earlier runs saw blobs, when a store that mounts is written (read once).
    let writes_registry = stores.values().any(|s| s.can_mount);
    // A saved plan (`--apply`) mounts from exactly the repositories it
    // showed, whatever other runs have remembered since.
    let remembered = match (&ctx.pinned, &ctx.cache) {
        (Some(saved), _) => saved_candidates(&saved.nodes),
        (None, Some(c)) if writes_registry => c.blob_locations().load(),
        _ => Remembered::default(),
    };
    assemble(ctx.cache.as_ref(), planned, &presence, &remembered, &stores)
}

/// Each destination's store (by the destination as the plan spells it).
type Stores = HashMap<String, Store>;

/// The remembered repositories a saved plan's mounts try, per host and blob.
fn saved_candidates(nodes: &[Work]) -> Remembered {
    let mut r = Remembered::default();
    for w in nodes {
        let (Some(How::Mount(m)), Some(store), Some(desc)) = (&w.how, w.key.store(), &w.source_blob) else {
            continue;
        };
        if !m.remembered {
            continue;
        }
        let Some(id) = StoreId::parse(store) else { continue };
        let Some(host) = id.host() else { continue };
        r.add(
            host,
            &desc.digest,
            std::iter::once(m.from.clone()).chain(m.or.iter().cloned()),
        );
    }
    r
}

/// The graph's shape alone: every blob sent, nothing asked of the stores
/// nor of the layer cache (for partitioning targets into shards).
pub fn shape(planned: &[PlannedTarget]) -> WorkGraph {
    assemble(
        None,
        planned,
        &Presence::default(),
        &Remembered::default(),
        &Stores::new(),
    )
}

fn assemble(
    cache: Option<&LayerCache>,
    planned: &[PlannedTarget],
    presence: &Presence,
    remembered: &Remembered,
    stores: &Stores,
) -> WorkGraph {
    let mut g = WorkGraph::default();
    // Room for the nodes and edges up front (each a few per layer and per
    // target; shared layers make fewer): growing by doubling would hold the
    // old and the new array at once.
    let (nodes, edges) = planned
        .iter()
        .filter(|t| t.action.writes())
        .filter_map(|t| t.resolved.as_ref())
        .map(|r| {
            let layers: usize = r.images.iter().map(|i| i.manifest.layers.len()).sum();
            let images = r.images.len();
            (2 * layers + 3 * images + 3, 2 * layers + 3 * images + 3)
        })
        .fold((0, 0), |(n, e), (a, b)| (n + a, e + b));
    g.graph.reserve_nodes(nodes);
    g.graph.reserve_edges(edges);
    g.by_key.first.reserve(nodes);
    // (host, digest) → the upload node that first sends it there, and its repository.
    let mut uploaded_on: Uploads = HashMap::new();
    for (ti, t) in planned.iter().enumerate() {
        if !t.action.writes() {
            continue;
        }
        let Some(resolved) = t.resolved.clone() else { continue };
        let tt = &t.target;
        let store = stores
            .get(&t.destination)
            .cloned()
            .unwrap_or_else(|| Store::of(&tt.destination));
        let src_store = source_store(&tt.source);
        let chain = &tt.chain;
        let filtered = !chain.is_empty();
        let rewrites_content = chain.changes_content();
        let observes = chain
            .filters
            .iter()
            .any(|f| matches!(f, FilterSpec::Search { .. } | FilterSpec::Inspect { .. }));
        let chain_hash = chain.hash();
        let source_id = StoreId::of(&tt.source);
        let same_host_source = match (source_id.host(), source_id.repository_name(), &store.host) {
            (Some(sh), Some(sr), Some(h)) if store.can_mount && sh == h && Some(sr) != store.repository.as_deref() => {
                Some(sr.to_string())
            }
            _ => None,
        };
        let mut tw = TargetWork {
            in_place: t.current.is_some() && t.current == t.expected && t.referrers.is_some(),
            ..TargetWork::default()
        };
        for img in &resolved.images {
            let mut layers = Vec::new();
            let mut rewrites = Vec::new();
            for (li, desc) in img.manifest.layers.iter().enumerate() {
                // One copy of the descriptor for the layer's blob and fetch nodes.
                let shared = Arc::new(desc.clone());
                let diff_id = img.diff_id(li).ok().cloned();
                let plain_key = match store.form {
                    StoredForm::Compressed => Some(desc.digest.clone()),
                    StoredForm::PlainTar => diff_id.clone(),
                };
                // A rewritten layer the cache knows, and the store holds.
                let cached = if rewrites_content && !observes {
                    cached_output(cache, chain, desc, store.form).filter(|d| presence.holds(&store, d))
                } else {
                    None
                };
                let wanted = match (&cached, rewrites_content) {
                    (Some(d), _) => WantedBlob {
                        blob: d.to_string(),
                        lookup: Some(d.clone()),
                    },
                    (None, true) => WantedBlob {
                        blob: format!(
                            "rewrite:{}:{}:{}",
                            desc.digest.hex(),
                            &chain_hash[..16],
                            match store.form {
                                StoredForm::Compressed => "blob",
                                StoredForm::PlainTar => "tar",
                            }
                        ),
                        lookup: None,
                    },
                    (None, false) => WantedBlob {
                        blob: plain_key
                            .as_ref()
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| desc.digest.to_string()),
                        lookup: plain_key.clone(),
                    },
                };
                let how = blob_how(&store, &wanted, presence, &same_host_source, &uploaded_on, remembered);
                let sends = how.sends();
                let (blob, created) = g.node(
                    NodeKey::Blob {
                        store: store.key.clone(),
                        blob: wanted.blob.clone(),
                    },
                    ti,
                    |w| {
                        w.how = Some(how.clone());
                        w.bytes = if sends { desc.size } else { 0 };
                        w.estimated = rewrites_content && cached.is_none();
                        w.source_blob = Some(Arc::clone(&shared));
                        w.diff_id = diff_id.clone();
                        w.form = Some(store.form);
                    },
                );
                // A rewrite runs for every layer of a filtered target, even
                // one the store holds, when the chain observes (search and
                // inspect must see every layer); a cached output skips it.
                let rewrite = if filtered && cached.is_none() && (sends || observes || !rewrites_content) {
                    let (r, _) = g.node(
                        NodeKey::Rewrite {
                            input: desc.digest.clone(),
                            chain: chain_hash.clone(),
                        },
                        ti,
                        |w| {
                            w.bytes = desc.size;
                            w.source_blob = Some(Arc::clone(&shared));
                            w.diff_id = diff_id.clone();
                            w.estimated = true;
                        },
                    );
                    // The output compression: the chain's for compressed
                    // stores; plain tar when only plain-tar stores need it.
                    if store.form == StoredForm::Compressed {
                        let (c, level) = chain.output_compression(layer_compression(desc));
                        g.graph[r].compression = Some(c);
                        g.graph[r].level = level;
                    } else if g.graph[r].compression.is_none() {
                        g.graph[r].compression = Some(Compression::None);
                    }
                    let f = fetch_node(&mut g, &src_store, &shared, diff_id.as_ref(), ti);
                    g.edge(f, r, "feeds");
                    if rewrites_content && sends {
                        g.edge(r, blob, "rewritten to");
                    } else if sends {
                        g.edge(f, blob, "copied to");
                    }
                    Some(r)
                } else {
                    if sends && created {
                        let f = fetch_node(&mut g, &src_store, &shared, diff_id.as_ref(), ti);
                        g.edge(f, blob, "copied to");
                    }
                    None
                };
                note_upload(&mut g, &mut uploaded_on, &store, &how, &wanted, blob);
                layers.push(blob);
                rewrites.push(rewrite);
            }
            // The config: the source's, or the filtered one (unknown yet).
            let cfg = &img.manifest.config;
            let shared = Arc::new(cfg.clone());
            let changes_config = rewrites_content || chain.config_timestamp().is_some();
            let wanted = if changes_config {
                WantedBlob {
                    blob: format!("rewrite:{}:{}:config", cfg.digest.hex(), &chain_hash[..16]),
                    lookup: None,
                }
            } else {
                WantedBlob {
                    blob: cfg.digest.to_string(),
                    lookup: Some(cfg.digest.clone()),
                }
            };
            let how = blob_how(&store, &wanted, presence, &same_host_source, &uploaded_on, remembered);
            let (config, _) = g.node(
                NodeKey::Config {
                    store: store.key.clone(),
                    blob: wanted.blob.clone(),
                },
                ti,
                |w| {
                    w.bytes = if how.sends() { cfg.size } else { 0 };
                    w.how = Some(how.clone());
                    w.estimated = changes_config;
                    w.source_blob = Some(Arc::clone(&shared));
                },
            );
            note_upload(&mut g, &mut uploaded_on, &store, &how, &wanted, config);
            // A config planning did not read is read once for every store
            // that writes it (a registry that holds it needs none).
            if img.config.bytes.is_empty() && !changes_config && (store.host.is_none() || how != How::Present) {
                let f = fetch_node(&mut g, &src_store, &shared, None, ti);
                g.edge(f, config, "config read");
            }
            let manifest_name = if changes_config || rewrites_content {
                format!("rewrite:{}:{}", img.raw_manifest.digest.hex(), &chain_hash[..16])
            } else {
                img.raw_manifest.digest.to_string()
            };
            let (manifest, _) = g.node(
                NodeKey::Manifest {
                    store: format!("{}#{}", store.key, t.destination),
                    manifest: manifest_name,
                },
                ti,
                |w| {
                    w.bytes = img.raw_manifest.bytes.len() as u64;
                    w.estimated = changes_config;
                },
            );
            // Only the real store name shows in the key's store field.
            if let NodeKey::Manifest { store: s, .. } = &mut g.graph[manifest].key {
                *s = store.key.clone();
            }
            for &l in &layers {
                g.edge(l, manifest, "layer");
            }
            g.edge(config, manifest, "config");
            tw.images.push(ImageWork {
                layers,
                rewrites,
                config,
                manifest,
            });
        }
        let writes_index = crate::image::writes_index(&resolved, &tt.platforms, store.keeps_index);
        let top = if writes_index {
            let name = match (&t.expected, rewrites_content) {
                (Some(d), false) => d.to_string(),
                _ => format!(
                    "rewrite:{}:{}",
                    resolved.root().map(|r| r.digest.hex().to_string()).unwrap_or_default(),
                    &chain_hash[..16]
                ),
            };
            let (ix, _) = g.node(
                NodeKey::Index {
                    store: format!("{}#{}", store.key, t.destination),
                    manifest: name,
                },
                ti,
                |w| w.estimated = rewrites_content,
            );
            if let NodeKey::Index { store: s, .. } = &mut g.graph[ix].key {
                *s = store.key.clone();
            }
            for m in tw.images.iter().map(|i| i.manifest).collect::<Vec<_>>() {
                g.edge(m, ix, "manifest");
            }
            tw.index = Some(ix);
            Some(ix)
        } else {
            tw.images.first().map(|i| i.manifest)
        };
        let (tag, _) = g.node(
            NodeKey::Tag {
                destination: t.destination.clone(),
                image: t.name.clone(),
            },
            ti,
            |_| {},
        );
        if let Some(top) = top {
            g.edge(top, tag, "tagged");
        }
        let (check, _) = g.node(
            NodeKey::Check {
                destination: t.destination.clone(),
                image: t.name.clone(),
            },
            ti,
            |_| {},
        );
        g.edge(tag, check, "checks");
        tw.tag = Some(tag);
        tw.check = Some(check);
        if let Some(r) = &t.referrers {
            let at = TargetAt {
                ti,
                store: &store,
                src_store: &src_store,
                same_host_source: &same_host_source,
                tag,
                check,
            };
            add_referrers(&mut g, &at, &tw, r, presence, &mut uploaded_on);
        }
        g.targets.insert(ti, tw);
    }
    // Keys were made with a per-destination store for manifests (so two
    // tags of one repository commit separately); rebuild the key map.
    // (Cleared in place: the old map's room is reused, not doubled.)
    g.by_key.clear();
    for i in g.graph.node_indices() {
        g.by_key.insert(&g.graph, &g.graph[i].key, i);
    }
    g.renumber();
    g
}

/// Where a target's referrers go: its index, store, source and commit nodes.
struct TargetAt<'a> {
    ti: usize,
    store: &'a Store,
    src_store: &'a str,
    same_host_source: &'a Option<String>,
    tag: NodeIndex,
    check: NodeIndex,
}

/// The nodes of a target's referrers: each referrer's blobs (fetched and
/// copied like layers), its manifest after its subject (the subject's
/// manifest or index, and the target's commit), the referrers tag of each
/// subject on a registry without the referrers API, all before the check.
fn add_referrers(
    g: &mut WorkGraph,
    at: &TargetAt<'_>,
    tw: &TargetWork,
    r: &super::referrers::TargetReferrers,
    presence: &Presence,
    uploaded_on: &mut Uploads,
) {
    let ti = at.ti;
    let store = at.store;
    for rf in &r.copy {
        let Some(raw) = &rf.manifest else { continue };
        let reference = rf.tag.clone().unwrap_or_else(|| rf.descriptor.digest.to_string());
        let (node, created) = g.node(
            NodeKey::Referrer {
                store: store.key.clone(),
                reference,
            },
            ti,
            |w| w.bytes = raw.bytes.len() as u64,
        );
        if created {
            g.referrers.insert(
                node,
                ReferrerWork {
                    manifest: raw.clone(),
                    descriptor: rf.descriptor.clone(),
                    tag: rf.tag.clone(),
                },
            );
        }
        for (bi, desc) in rf.blobs.iter().enumerate() {
            let shared = Arc::new(desc.clone());
            let wanted = WantedBlob {
                blob: desc.digest.to_string(),
                lookup: Some(desc.digest.clone()),
            };
            // Referrer blobs are small and their own: no remembered mounts.
            let how = blob_how(
                store,
                &wanted,
                presence,
                at.same_host_source,
                uploaded_on,
                &Remembered::default(),
            );
            let sends = how.sends();
            let (blob, made) = g.node(
                NodeKey::Blob {
                    store: store.key.clone(),
                    blob: wanted.blob.clone(),
                },
                ti,
                |w| {
                    w.how = Some(how.clone());
                    w.bytes = if sends { desc.size } else { 0 };
                    w.source_blob = Some(Arc::clone(&shared));
                    w.form = Some(StoredForm::Compressed);
                },
            );
            if sends && made {
                let f = fetch_node(g, at.src_store, &shared, None, ti);
                g.edge(f, blob, "copied to");
            }
            note_upload(g, uploaded_on, store, &how, &wanted, blob);
            g.edge(blob, node, if bi == 0 { "config" } else { "layer" });
        }
        // After its subject: the manifest (or index) it refers to, and the
        // commit that writes it.
        let subject = rf.subject.to_string();
        for m in tw.images.iter().map(|i| i.manifest).chain(tw.index) {
            let names_subject = matches!(&g.graph[m].key,
                NodeKey::Manifest { manifest, .. } | NodeKey::Index { manifest, .. } if *manifest == subject);
            if names_subject {
                g.edge(m, node, "subject");
            }
        }
        g.edge(at.tag, node, "after commit");
        g.edge(node, at.check, "referrer");
        if r.fallback_tag && rf.tag.is_none() {
            let (list, made) = g.node(
                NodeKey::ReferrersTag {
                    store: store.key.clone(),
                    subject: rf.subject.clone(),
                },
                ti,
                |_| {},
            );
            let entries = g
                .referrers_tags
                .entry(list)
                .or_insert_with(|| (rf.subject.clone(), Vec::new()));
            if !entries.1.iter().any(|d| d.digest == rf.descriptor.digest) {
                entries.1.push(rf.descriptor.clone());
            }
            let _ = made;
            g.edge(node, list, "listed in");
            g.edge(list, at.check, "referrers tag");
        }
    }
}

/// Adds prune nodes (one per tag to delete).
pub fn add_prunes(g: &mut WorkGraph, prunes: &[super::prune::PruneTag]) {
    for p in prunes {
        g.node(
            NodeKey::Prune {
                destination: p.destination.clone(),
            },
            usize::MAX,
            |w| w.targets.clear(),
        );
    }
    g.renumber();
}

fn fetch_node(
    g: &mut WorkGraph,
    src_store: &str,
    desc: &Arc<Descriptor>,
    diff_id: Option<&Digest>,
    ti: usize,
) -> NodeIndex {
    g.node(
        NodeKey::Fetch {
            source: src_store.to_string(),
            digest: desc.digest.clone(),
        },
        ti,
        |w| {
            w.bytes = desc.size;
            w.source_blob = Some(Arc::clone(desc));
            w.diff_id = diff_id.cloned();
        },
    )
    .0
}

/// The output digest the layer cache remembers for a layer through `chain`
/// in the form `form` stores it.
fn cached_output(
    cache: Option<&LayerCache>,
    chain: &crate::filter::FilterChain,
    desc: &Descriptor,
    form: StoredForm,
) -> Option<Digest> {
    let cache = cache?;
    let (compression, level) = match form {
        StoredForm::Compressed => chain.output_compression(layer_compression(desc)),
        StoredForm::PlainTar => (Compression::None, None),
    };
    let entry = cache.get(&LayerCache::rewrite_key(
        &desc.digest,
        &chain.hash(),
        compression,
        level,
    ))?;
    Some(match form {
        StoredForm::Compressed => entry.digest,
        StoredForm::PlainTar => entry.diff_id,
    })
}

/// (registry host, digest) → the node that uploads it there first in this
/// run, and its repository.
type Uploads = HashMap<(String, Digest), (NodeIndex, String)>;

/// Records an upload (later targets mount from it), or links a mount to
/// the upload it copies.
fn note_upload(
    g: &mut WorkGraph,
    uploads: &mut Uploads,
    store: &Store,
    how: &How,
    wanted: &WantedBlob,
    node: NodeIndex,
) {
    let (Some(host), Some(repo), Some(d)) = (&store.host, &store.repository, &wanted.lookup) else {
        return;
    };
    let key = (host.clone(), d.clone());
    match how {
        // A mount from a remembered repository brings the blob here too
        // (mounted, or uploaded when declined): later targets mount from here.
        How::Upload => {
            uploads.entry(key).or_insert((node, repo.clone()));
        }
        How::Mount(m) if m.remembered => {
            uploads.entry(key).or_insert((node, repo.clone()));
        }
        How::Mount(m) => {
            if let Some((up, up_repo)) = uploads.get(&key) {
                if *up != node && *up_repo == m.from {
                    g.edge(*up, node, "mounted from");
                }
            }
        }
        _ => {}
    }
}

/// How a blob gets into a store: present if the store holds it; else for a
/// registry, mounted from a repository of the same host that this run
/// uploads it to first, that holds it already, or that is the source's, or
/// else that earlier runs saw it in (remembered: the registry's answer to
/// the mount decides, an upload when it declines); else sent.
fn blob_how(
    store: &Store,
    wanted: &WantedBlob,
    presence: &Presence,
    same_host_source: &Option<String>,
    uploads: &Uploads,
    remembered: &Remembered,
) -> How {
    let Some(d) = &wanted.lookup else {
        return if store.host.is_some() { How::Upload } else { How::Write };
    };
    if presence.holds(store, d) {
        return How::Present;
    }
    let Some(host) = &store.host else { return How::Write };
    if !store.can_mount {
        return How::Upload;
    }
    let key = (host.clone(), d.clone());
    let mount = |from: &String| How::mount(from.clone(), Vec::new(), false);
    if let Some((_, repo)) = uploads.get(&key) {
        if Some(repo) != store.repository.as_ref() {
            return mount(repo);
        }
    }
    if let Some(repo) = presence.on_host.get(&key) {
        if Some(repo) != store.repository.as_ref() {
            return mount(repo);
        }
    }
    if let Some(repo) = same_host_source {
        return mount(repo);
    }
    let mut candidates = remembered.candidates(host, d, store.repository.as_deref().unwrap_or_default());
    if candidates.is_empty() {
        return How::Upload;
    }
    let from = candidates.remove(0);
    How::mount(from, candidates, true)
}

/// What the stores hold now, as each store answered.
#[derive(Default)]
struct Presence {
    held: HashMap<StoreId, HashSet<Digest>>,
    /// (host, digest) → a repository there that holds it.
    on_host: HashMap<(String, Digest), String>,
}

impl Presence {
    fn holds(&self, store: &Store, d: &Digest) -> bool {
        self.held.get(&store.id).is_some_and(|h| h.contains(d))
    }
}

/// Asks each destination store that can say which blobs it holds about the
/// blobs the targets want there (one presence query per store and blob:
/// a HEAD for a registry, a file for an OCI layout; registry repositories
/// known to hold no tags are not asked).
async fn presence(ctx: &PlanContext, planned: &[PlannedTarget], stores: &Stores) -> Presence {
    let mut asks: Vec<(Arc<dyn crate::sink::store::Store>, Digest)> = Vec::new();
    let mut seen: HashSet<(StoreId, Digest)> = HashSet::new();
    for t in planned.iter().filter(|t| t.action.writes()) {
        let Some(resolved) = &t.resolved else { continue };
        let Some(view) = stores.get(&t.destination) else {
            continue;
        };
        let Ok(store) = ctx.store(&t.target.destination) else {
            continue;
        };
        if !store.capabilities().answers_presence {
            continue;
        }
        if let (Some(host), Some(repo)) = (&view.host, &view.repository) {
            if ctx.memo.repository_empty(host, repo) {
                continue;
            }
        }
        let content = t.target.chain.changes_content();
        let observes = t
            .target
            .chain
            .filters
            .iter()
            .any(|f| matches!(f, FilterSpec::Search { .. } | FilterSpec::Inspect { .. }));
        let mut blobs: Vec<Digest> = Vec::new();
        for img in &resolved.images {
            if !content {
                blobs.extend(img.manifest.layers.iter().map(|l| l.digest.clone()));
            } else if !observes {
                // Rewritten layers the layer cache knows: are they there?
                blobs.extend(
                    img.manifest
                        .layers
                        .iter()
                        .filter_map(|l| cached_output(ctx.cache.as_ref(), &t.target.chain, l, StoredForm::Compressed)),
                );
            }
            if !content && t.target.chain.config_timestamp().is_none() {
                blobs.push(img.manifest.config.digest.clone());
            }
        }
        // The blobs of the referrers to copy (a re-signed image's new
        // signature often shares its payload with the old one).
        blobs.extend(
            t.referrers
                .iter()
                .flat_map(|r| &r.copy)
                .flat_map(|rf| rf.blobs.iter().map(|b| b.digest.clone())),
        );
        for d in blobs {
            if seen.insert((view.id.clone(), d.clone())) {
                asks.push((store.clone(), d));
            }
        }
    }
    let found = super::concurrently_in_order(asks, |(store, d)| async move {
        let there = matches!(store.present(std::slice::from_ref(&d)).await.as_deref(), Ok([true]));
        there.then_some((store, d))
    })
    .await;
    let mut p = Presence::default();
    for (store, d) in found.into_iter().flatten() {
        let id = store.id();
        if let (Some(host), Some(repo)) = (id.host(), id.repository_name()) {
            p.on_host
                .entry((host.to_string(), d.clone()))
                .or_insert_with(|| repo.to_string());
        }
        p.held.entry(id.clone()).or_default().insert(d);
    }
    p
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
        assert_eq!(g.graph[ib].targets, vec![1, 2]);
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
        assert_eq!(g.graph[i].targets, vec![0, 3, 5, 9]);
    }

    /// A plan of 10,000 targets holds 70,000 nodes and 40,000 descriptors:
    /// their size is the plan's memory (bench/plan-scale.sh measures it).
    #[test]
    fn nodes_and_descriptors_stay_small() {
        assert!(std::mem::size_of::<Work>() <= 160, "{}", std::mem::size_of::<Work>());
        assert!(
            std::mem::size_of::<Descriptor>() <= 144,
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

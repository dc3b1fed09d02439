//! The executor: walks the plan's work graph. A node runs once every node
//! it needs is done, under the run's limits (`-J` commits and checks at
//! once, `-J × -j` blob transfers, one layer rewrite per core), earlier
//! targets first. One fetch feeds every consumer of its blob in one stream
//! ([`tee`]): uploads, file writes and rewrites read the same bytes once.
//! One rewrite feeds every destination of its chain from its spool file.
//! A failed node fails only the nodes that need it; every target it
//! belongs to is reported with that node and its error, and the rest of
//! the run goes on.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use petgraph::stable_graph::NodeIndex;
use tracing::{info, warn};

use super::blob::{boxed, chunks, tee, Branch};
use super::rewrite::{
    cache_key, matches_of, output_descriptor, rewrite_image, rewrite_index, rewrite_stream, spool_file,
    write_inspect_lines, FilterMatch, Rewritten,
};
use crate::cache::LayerCache;
use crate::check::WrittenImage;
use crate::error::{Error, Result};
use crate::filter::layer::LayerResult;
use crate::filter::FilterChain;
use crate::image::{
    index_to_write, media_type, Compression, Descriptor, Digest, ImageData, PlatformSelection, RawManifest,
    ResolvedImage,
};
use crate::plan::graph::{How, NodeKey, StoredForm, WorkGraph};
use crate::sink::atomic::write_chunks;
use crate::sink::{Reuse, Sink};
use crate::source::stream::{
    after_stream_failure, chunk_reader, decompressed, read_chunks, Chunks, CountingReader, CHUNK,
};
use crate::source::{BlobReader, Source};

/// The chunks a blob is read from its source in (compressed bytes: a
/// quarter of an uncompressed chunk carries about as much of a layer).
const SOURCE_CHUNK: usize = 256 * 1024;

/// What one target brings to the walk: where it reads, where it writes.
pub struct TargetIo {
    pub source: Arc<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub resolved: Arc<ResolvedImage>,
    pub chain: FilterChain,
    pub platforms: PlatformSelection,
    /// The image's name, for filter reports (`inspect`, `search`).
    pub name: String,
    /// Layer bytes read for this target, as they stream (progress).
    pub bytes_read: Arc<AtomicU64>,
}

/// How to walk.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Targets committed (and checked) at once (`-J`).
    pub image_parallel: usize,
    /// Blob transfers per target (`-j`); the run moves `-J × -j` at once.
    pub parallel: usize,
    /// Attempts after the first for work that fails transiently (a stream
    /// cut or corrupted on the way; the registry client retries requests).
    pub retries: u32,
    pub cache: Option<LayerCache>,
    /// How long a shard of a saved plan waits for another shard to upload a
    /// blob both write before it uploads the blob itself.
    pub shard_wait: Duration,
}

/// The first pause between two asks of a mount another shard makes
/// possible; it doubles up to [`AWAIT_MAX_PAUSE`].
const AWAIT_FIRST_PAUSE: Duration = Duration::from_millis(250);
const AWAIT_MAX_PAUSE: Duration = Duration::from_secs(5);

/// What a copy did, per target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// Digest of the manifest (or index) the destination's tag now names.
    pub digest: Digest,
    /// Platform images written.
    pub images: usize,
    /// Distinct layers referenced.
    pub layers: usize,
    /// Layers this target transferred (uploaded or written).
    pub layers_copied: usize,
    /// Layers the destination held, got by a mount, or got from another
    /// target of the run.
    pub layers_skipped: usize,
    /// Layers the destination got by a cross-repository mount.
    pub layers_mounted: usize,
    /// Mounts the registry declined (the repository asked no longer holds
    /// the blob, or may not be read); each blob was then tried elsewhere or
    /// uploaded. Not an error.
    pub mounts_declined: usize,
    /// Blobs another shard of the saved plan was to upload, uploaded by
    /// this one too because the wait for that shard ran out.
    #[serde(skip_serializing_if = "is_zero")]
    pub uploads_duplicated: usize,
    /// Layer bytes read from the source for this target.
    pub bytes: u64,
    /// Wall time.
    #[serde(skip)]
    pub elapsed: Duration,
    /// What `search` filters found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<FilterMatch>,
    /// Rewritten layers the layer cache knew the destination already held
    /// (neither fetched nor rewritten).
    pub layers_from_cache: usize,
    /// Layers rewritten by this target's chain (each counted for the first
    /// target that needed it).
    pub layers_rewritten: usize,
    /// Each image written (config digest, diff_ids), for the post-run check.
    #[serde(skip)]
    pub written: Vec<WrittenImage>,
    /// Every blob (layers and configs) of the images written, as the
    /// destination now holds them: where later runs may mount them from.
    #[serde(skip)]
    pub blobs: Vec<Digest>,
    /// Referrers (signatures, SBOMs, attestations) put with the image.
    #[serde(skip_serializing_if = "is_zero")]
    pub referrers: usize,
}

pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Runs the check (and whatever else follows a commit) of a target.
#[async_trait]
pub trait AfterCommit: Send + Sync {
    /// Returns the check's outcome (`fast: ok`, `skipped (…)`), or the error.
    async fn after_commit(&self, target: usize, report: &CopyReport) -> Result<String>;
    /// A target starts moving (first node) — for progress.
    fn started(&self, _target: usize) {}
}

/// One target's end: its report and check, or the node that failed first.
#[derive(Debug)]
pub enum TargetResult {
    Done { report: CopyReport, check: String },
    Failed { error: Error },
}

/// A node's place in the walk.
#[derive(Debug, Clone)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
}

/// The walk's shared state.
struct Walk<'a> {
    graph: &'a WorkGraph,
    io: &'a HashMap<usize, TargetIo>,
    opts: &'a WalkOptions,
    after: &'a dyn AfterCommit,
    transfers: tokio::sync::Semaphore,
    commits: tokio::sync::Semaphore,
    rewrites: Mutex<HashMap<NodeIndex, Arc<Rewritten>>>,
    /// Rewritten blobs put in a registry by this walk, by (host, digest):
    /// the repository the one upload went to (None if it failed). A
    /// rewrite's output is known only once it has run, so the plan sends it
    /// to each repository; the first uploads it, the others mount it from
    /// there (go-containerregistry's `workers.Do(digest)`).
    rewritten_uploads: Mutex<HashMap<(String, Digest), UploadedTo>>,
    /// Configs read by the walk (planning read only manifests).
    configs: Mutex<HashMap<Digest, bytes::Bytes>>,
    reports: Mutex<HashMap<usize, CopyReport>>,
    /// Check outcomes by target.
    checks: Mutex<HashMap<usize, String>>,
    started: Instant,
    copied: HashMap<usize, AtomicUsize>,
    mounted: HashMap<usize, AtomicUsize>,
    declined: HashMap<usize, AtomicUsize>,
    /// Blobs uploaded after the wait for the shard owning them ran out.
    duplicated: HashMap<usize, AtomicUsize>,
    /// Per shard owning blobs this one waits for: when the wait for it ends
    /// (set by the first wait: every wait for one shard ends together).
    shard_deadlines: Mutex<HashMap<usize, Instant>>,
    /// Referrer manifests put, per target.
    referred: HashMap<usize, AtomicUsize>,
}

/// The repository of a registry one upload put a blob in (None if it
/// failed), set once by the upload that others wait for.
type UploadedTo = Arc<tokio::sync::OnceCell<Option<String>>>;

/// What running one node finished: itself, and the nodes it ran inline
/// (the consumers a fetch fed).
type Finished = Vec<(NodeIndex, Result<()>)>;

/// Walks `graph` for the targets in `io` (targets of the graph missing from
/// `io` failed to open and are reported by the caller).
pub async fn walk(
    graph: &WorkGraph,
    io: &HashMap<usize, TargetIo>,
    opts: &WalkOptions,
    after: &dyn AfterCommit,
) -> BTreeMap<usize, TargetResult> {
    let j = opts.parallel.max(1);
    let jj = opts.image_parallel.max(1);
    let w = Walk {
        graph,
        io,
        opts,
        after,
        transfers: tokio::sync::Semaphore::new(jj * j),
        commits: tokio::sync::Semaphore::new(jj),
        rewrites: Mutex::new(HashMap::new()),
        rewritten_uploads: Mutex::new(HashMap::new()),
        configs: Mutex::new(HashMap::new()),
        reports: Mutex::new(HashMap::new()),
        checks: Mutex::new(HashMap::new()),
        started: Instant::now(),
        copied: io.keys().map(|&t| (t, AtomicUsize::new(0))).collect(),
        mounted: io.keys().map(|&t| (t, AtomicUsize::new(0))).collect(),
        declined: io.keys().map(|&t| (t, AtomicUsize::new(0))).collect(),
        duplicated: io.keys().map(|&t| (t, AtomicUsize::new(0))).collect(),
        shard_deadlines: Mutex::new(HashMap::new()),
        referred: io.keys().map(|&t| (t, AtomicUsize::new(0))).collect(),
    };
    w.run().await
}

/// Where a ready node stands: (not first, its earliest target, its id).
type Priority = (bool, usize, u32);

/// The order ready nodes start in: what other shards wait for first
/// ([`WorkGraph::first`]), then earlier targets, then the graph's order.
fn priority(g: &WorkGraph, i: NodeIndex) -> Priority {
    let work = &g.graph[i];
    (
        !g.first.contains(&i),
        work.targets.iter().copied().min().unwrap_or(usize::MAX),
        work.id,
    )
}

impl<'a> Walk<'a> {
    /// Nodes a fetch runs inline: the blobs it copies and the rewrites it feeds.
    fn inline_consumers(&self, fetch: NodeIndex) -> Vec<NodeIndex> {
        self.graph
            .needed_by(fetch)
            .into_iter()
            .filter(|(_, label)| *label == "copied to" || *label == "feeds")
            .map(|(n, _)| n)
            .collect()
    }

    async fn run(self) -> BTreeMap<usize, TargetResult> {
        let g = self.graph;
        let mut state: HashMap<NodeIndex, State> = g.graph.node_indices().map(|i| (i, State::Waiting)).collect();
        // Nodes run inside their fetch never start on their own.
        let mut inline: HashSet<NodeIndex> = HashSet::new();
        for i in g.graph.node_indices() {
            if matches!(g.graph[i].key, NodeKey::Fetch { .. }) {
                inline.extend(self.inline_consumers(i));
            }
        }
        let mut waiting_on: HashMap<NodeIndex, usize> = g.graph.node_indices().map(|i| (i, g.needs(i).len())).collect();
        let mut failures: BTreeMap<usize, Error> = BTreeMap::new();
        // Nodes of targets that could not be opened fail from the start.
        let mut doomed: Vec<(NodeIndex, Error)> = Vec::new();
        for i in g.graph.node_indices() {
            let w = &g.graph[i];
            if !w.targets.is_empty() && w.targets.iter().all(|t| !self.io.contains_key(t)) {
                doomed.push((i, Error::invalid("its target could not be opened")));
            }
        }
        let mut running: FuturesUnordered<BoxFuture<'_, Finished>> = FuturesUnordered::new();
        let mut ready: Vec<NodeIndex> = g
            .graph
            .node_indices()
            .filter(|i| waiting_on[i] == 0 && !inline.contains(i))
            .collect();
        // Targets refused by a registry (credentials, a scope): their
        // nodes that have not started never will.
        let mut refused: HashSet<usize> = HashSet::new();
        let settle = |done: Finished,
                      state: &mut HashMap<NodeIndex, State>,
                      waiting_on: &mut HashMap<NodeIndex, usize>,
                      failures: &mut BTreeMap<usize, Error>,
                      refused: &mut HashSet<usize>,
                      ready: &mut Vec<NodeIndex>| {
            for (n, r) in done {
                match r {
                    Ok(()) => {
                        state.insert(n, State::Done);
                        for (next, _) in g.needed_by(n) {
                            if let Some(c) = waiting_on.get_mut(&next) {
                                *c = c.saturating_sub(1);
                                if *c == 0 && !inline.contains(&next) && matches!(state[&next], State::Waiting) {
                                    ready.push(next);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let what = describe(g, n);
                        let targets = &g.graph[n].targets;
                        if !targets.is_empty() && targets.iter().all(|t| refused.contains(t)) {
                            // Said once already, for the node that met the refusal first.
                            tracing::debug!("{what} failed: {e}");
                        } else {
                            warn!("{what} failed: {e}");
                        }
                        // This node and everything that needs it.
                        let mut stack = vec![n];
                        while let Some(x) = stack.pop() {
                            if matches!(state[&x], State::Failed) {
                                continue;
                            }
                            state.insert(x, State::Failed);
                            for &t in &g.graph[x].targets {
                                failures
                                    .entry(t)
                                    .or_insert_with(|| prefix_error(&format!("{what}: "), e.duplicate()));
                            }
                            stack.extend(g.needed_by(x).into_iter().map(|(y, _)| y));
                        }
                        if e.is_refusal() && targets.iter().any(|t| refused.insert(*t)) {
                            for x in g.graph.node_indices() {
                                let w = &g.graph[x];
                                if matches!(state[&x], State::Waiting)
                                    && !w.targets.is_empty()
                                    && w.targets.iter().all(|t| refused.contains(t))
                                {
                                    state.insert(x, State::Failed);
                                }
                            }
                        }
                    }
                }
            }
        };
        settle(
            doomed.into_iter().map(|(i, e)| (i, Err(e))).collect(),
            &mut state,
            &mut waiting_on,
            &mut failures,
            &mut refused,
            &mut ready,
        );
        // Ready nodes wait in a heap, earlier targets first; a bounded
        // number run (or wait for a permit) at once, so a run of many
        // thousand targets holds few futures.
        let cap = 2 * (self.opts.image_parallel.max(1) * (self.opts.parallel.max(1) + 1)) + 8;
        let mut heap: BinaryHeap<Reverse<(Priority, NodeIndex)>> = BinaryHeap::new();
        loop {
            for i in ready.drain(..) {
                if matches!(state[&i], State::Waiting) {
                    heap.push(Reverse((priority(g, i), i)));
                }
            }
            // Draining (SIGTERM in a service loop): nothing new starts, so
            // no tag is committed that was not under way.
            while running.len() < cap && !crate::interrupt::is_draining() {
                let Some(Reverse((_, i))) = heap.pop() else { break };
                if !matches!(state[&i], State::Waiting) {
                    continue;
                }
                state.insert(i, State::Running);
                for &t in &g.graph[i].targets {
                    self.after.started(t);
                }
                running.push(Box::pin(self.run_node(i)));
            }
            match running.next().await {
                Some(done) => settle(
                    done,
                    &mut state,
                    &mut waiting_on,
                    &mut failures,
                    &mut refused,
                    &mut ready,
                ),
                None => break,
            }
        }
        let mut out = BTreeMap::new();
        for (&t, tw) in &g.targets {
            if !self.io.contains_key(&t) {
                continue;
            }
            if let Some(e) = failures.remove(&t) {
                if let Some(io) = self.io.get(&t) {
                    io.sink.abort().await;
                }
                out.insert(t, TargetResult::Failed { error: e });
                continue;
            }
            let report = self.reports.lock().ok().and_then(|mut r| r.remove(&t));
            let check = tw.check.and_then(|c| match &state[&c] {
                State::Done => Some(()),
                _ => None,
            });
            match (report, check) {
                (Some(report), Some(())) => {
                    let check = self
                        .checks
                        .lock()
                        .ok()
                        .and_then(|mut c| c.remove(&t))
                        .unwrap_or_else(|| "off".to_string());
                    out.insert(t, TargetResult::Done { report, check });
                }
                _ => {
                    out.insert(
                        t,
                        TargetResult::Failed {
                            error: Error::invalid("the target's work did not finish"),
                        },
                    );
                }
            }
        }
        out
    }

    /// Runs one node; returns it and any node it ran inline.
    async fn run_node(&self, i: NodeIndex) -> Finished {
        let g = self.graph;
        let work = &g.graph[i];
        let r = match &work.key {
            NodeKey::Fetch { .. } => return self.fetch(i).await,
            NodeKey::Blob { .. } => self.blob(i).await,
            NodeKey::Config { .. } => self.config(i).await,
            NodeKey::Tag { .. } => self.commit(i).await,
            NodeKey::Referrer { .. } => self.referrer(i).await,
            NodeKey::ReferrersTag { .. } => self.referrers_tag(i).await,
            NodeKey::Check { .. } => self.check(i).await,
            // Rewrites run inside their fetch; manifests and indexes are
            // written by the commit of their tag; prunes by the caller.
            _ => Ok(()),
        };
        vec![(i, r)]
    }

    /// The target (of those that opened) that does a node's work.
    fn owner(&self, i: NodeIndex) -> Result<usize> {
        self.graph.graph[i]
            .targets
            .iter()
            .copied()
            .find(|t| self.io.contains_key(t))
            .ok_or_else(|| Error::invalid("no target of this work could be opened"))
    }

    fn io_of(&self, t: usize) -> Result<&TargetIo> {
        self.io
            .get(&t)
            .ok_or_else(|| Error::invalid(format!("target {t} was not opened")))
    }

    /// One read of a blob from its source, teed to every consumer; retried
    /// for the consumers that failed transiently.
    async fn fetch(&self, i: NodeIndex) -> Finished {
        let g = self.graph;
        let consumers = self.inline_consumers(i);
        let mut results: HashMap<NodeIndex, Result<()>> = HashMap::new();
        let owner = match self.owner(i) {
            Ok(o) => o,
            Err(e) => {
                let mut v: Finished = vec![(i, Err(e.duplicate()))];
                v.extend(consumers.iter().map(|&c| (c, Err(e.duplicate()))));
                return v;
            }
        };
        let Some(desc) = g.graph[i].source_blob.clone() else {
            return vec![(i, Err(Error::invalid("a fetch without a blob")))];
        };
        if consumers.is_empty() {
            let _permit = self.transfers.acquire().await;
            // A config, read into memory for the stores that write it.
            let io = match self.io_of(owner) {
                Ok(io) => io,
                Err(e) => return vec![(i, Err(e))],
            };
            let r = crate::source::read_small_blob(io.source.as_ref(), &desc)
                .await
                .map(|bytes| {
                    if let Ok(mut c) = self.configs.lock() {
                        c.insert(desc.digest.clone(), bytes);
                    }
                });
            return vec![(i, r)];
        }
        // Mounts from remembered repositories are asked first: those the
        // registry takes need no bytes, those it declines are uploaded from
        // this one read with every other consumer (never read again).
        // (Each ask holds a transfer permit while it is made; a wait for
        // another shard holds none.)
        let mut pending: Vec<NodeIndex> = self.remembered_mounts_first(&consumers, &mut results).await;
        let _permit = self.transfers.acquire().await;
        if pending.is_empty() {
            // Every consumer was mounted (or failed asking): nothing to read.
            let mut out: Finished = vec![(i, Ok(()))];
            out.extend(consumers.into_iter().map(|c| {
                let r = results
                    .remove(&c)
                    .unwrap_or_else(|| Err(Error::invalid("the blob was not delivered")));
                (c, r)
            }));
            return out;
        }
        // The transport retried failed requests and resumed cut downloads;
        // here a fetch starts over only for what it cannot: bytes that
        // arrived corrupted, an upload cut mid-body. Each start, and each
        // extra read telling corruption from a malformed layer, spends one
        // read of the blob's --retries + 1.
        let budget = ReadBudget::new(self.opts.retries + 1);
        let policy = crate::registry::retry::RetryPolicy::new(self.opts.retries);
        let mut attempt = 0;
        let mut fetch_result: Result<()> = Ok(());
        while !pending.is_empty() {
            budget.take();
            let r = self.fetch_once(owner, &desc, &pending, &budget).await;
            let (pumped, per) = match r {
                Ok(x) => x,
                Err(e) => (Err(e), Vec::new()),
            };
            let mut retry = Vec::new();
            let pump_failed = pumped.as_ref().err().map(Error::duplicate);
            for (c, res) in per {
                // A cut or corrupt source stream is every consumer's error.
                let res = match (&pump_failed, res) {
                    (Some(e), _) => Err(e.duplicate()),
                    (None, r) => r,
                };
                match res {
                    Err(e) if e.restarts_copy() && budget.left() > 0 => {
                        warn!(
                            "{}: attempt {} failed, starting it again: {e}",
                            describe(g, c),
                            attempt + 1
                        );
                        retry.push(c);
                    }
                    other => {
                        results.insert(c, other);
                    }
                }
            }
            if let Err(e) = pumped {
                if retry.is_empty() {
                    fetch_result = Err(e);
                    for &c in &pending {
                        results
                            .entry(c)
                            .or_insert_with(|| Err(Error::invalid("the shared stream failed")));
                    }
                }
            }
            pending = retry;
            if !pending.is_empty() {
                tokio::time::sleep(policy.delay(attempt, None)).await;
                attempt += 1;
            }
        }
        // The fetch itself is done when some consumer got the blob; its
        // consumers carry their own results.
        let mut out: Finished = vec![(
            i,
            match fetch_result {
                Err(e) if results.values().all(|r| r.is_err()) => Err(e),
                _ => Ok(()),
            },
        )];
        out.extend(consumers.into_iter().map(|c| {
            let r = results
                .remove(&c)
                .unwrap_or_else(|| Err(Error::invalid("the blob was not delivered")));
            (c, r)
        }));
        out
    }

    /// Asks the registry for each mount from a remembered repository among
    /// `consumers` (before the blob is read): a mount made, or an error
    /// asking, settles that consumer in `results`; a mount declined leaves
    /// it to be uploaded from the fetch's one read. Returns the consumers
    /// the read still feeds.
    async fn remembered_mounts_first(
        &self,
        consumers: &[NodeIndex],
        results: &mut HashMap<NodeIndex, Result<()>>,
    ) -> Vec<NodeIndex> {
        let g = self.graph;
        let asks = consumers.iter().filter_map(|&c| {
            let work = &g.graph[c];
            match (&work.key, &work.how, &work.source_blob) {
                (NodeKey::Blob { store, .. }, Some(How::Mount(m)), Some(desc)) if m.remembered => Some(async move {
                    let asked = async {
                        let owner = self.owner(c)?;
                        let io = self.io_of(owner)?;
                        let mounted = match m.after_shard {
                            Some(shard) => self.awaited_mount(io, owner, &desc.digest, store, m, shard).await?,
                            None => {
                                let _permit = self.transfers.acquire().await;
                                self.mount(io, owner, &desc.digest, &m.from, &m.or, true).await?
                            }
                        };
                        if mounted {
                            tally(&self.mounted, owner);
                        } else {
                            info!(blob = %desc.digest, from = %m.from, "mount declined, uploading from the one read of the blob");
                        }
                        Ok(mounted)
                    };
                    (c, asked.await)
                }),
                _ => None,
            }
        });
        for (c, r) in futures_util::future::join_all(asks).await {
            match r {
                Ok(false) => {}
                Ok(true) => {
                    results.insert(c, Ok(()));
                }
                Err(e) => {
                    results.insert(c, Err(e));
                }
            }
        }
        consumers.iter().copied().filter(|c| !results.contains_key(c)).collect()
    }

    /// Reads the blob once and feeds `consumers`; returns the stream's
    /// result and each consumer's. Consumers that want the layer
    /// uncompressed (plain-tar stores, rewrites) share one inflate of it,
    /// verified once against its diff_id: the plain chunks are teed to
    /// them all, every store writing from the same buffers.
    async fn fetch_once(
        &self,
        owner: usize,
        desc: &Descriptor,
        consumers: &[NodeIndex],
        budget: &ReadBudget,
    ) -> Result<(Result<()>, Vec<(NodeIndex, Result<()>)>)> {
        let io = self.io_of(owner)?;
        let raw = io.source.open_blob(desc).await?;
        let (direct, plain) = self.split_by_form(consumers);
        let (branches, pump) = tee(read_chunks(raw, SOURCE_CHUNK), direct.len() + plain.len());
        let mut branches = branches;
        let plain_branches = branches.split_off(direct.len());
        // Each blob copied counts for the target whose destination gets it
        // (not only for the fetch's first target), per chunk as it passes;
        // a layer inflated for plain-tar stores counts its compressed bytes
        // for each of them, as a layer copied as it is does. A rewrite's
        // output counts when it is written (see `blob`).
        let direct_feeds = direct.iter().zip(branches).map(|(&c, b)| {
            async move {
                let stream = self.counted(chunks(b), &[c]);
                vec![(c, self.consume(c, stream).await)]
            }
            .boxed()
        });
        let plain_feeds = plain.into_iter().zip(plain_branches).map(|((diff_id, members), b)| {
            let stream = self.counted(chunks(b), &members);
            self.inflate_once(desc, diff_id, members, stream).boxed()
        });
        let feeds = futures_util::future::join_all(direct_feeds.chain(plain_feeds));
        let (pumped, per) = tokio::join!(pump, feeds);
        let per = per.into_iter().flatten().collect();
        let pumped = match pumped {
            // The stream stopped for another reason than the transport's
            // (its requests were retried already): read the blob once more,
            // within the budget, to tell corruption on the way from a
            // malformed layer.
            Err(e) if !e.restarts_copy() && !is_transport_error(&e) && budget.take() => {
                Err(after_stream_failure(io.source.as_ref(), desc, e).await)
            }
            other => other,
        };
        Ok((pumped, per))
    }

    /// `chunks`, each chunk counted as it passes for the destination of
    /// each blob among `consumers` (a rewrite's output counts when it is
    /// written; a referrer's blob counts as the image's do).
    fn counted(&self, chunks: Chunks, consumers: &[NodeIndex]) -> Chunks {
        let counters: Vec<Arc<AtomicU64>> = consumers
            .iter()
            .filter(|&&c| matches!(self.graph.graph[c].key, NodeKey::Blob { .. }))
            .filter_map(|&c| self.owner(c).and_then(|t| self.io_of(t)).ok())
            .map(|io| io.bytes_read.clone())
            .collect();
        if counters.is_empty() {
            return chunks;
        }
        Box::pin(chunks.inspect(move |c| {
            if let Ok(c) = c {
                for counter in &counters {
                    counter.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            }
        }))
    }

    /// The consumers that take the blob as it is, and those that take it
    /// uncompressed, grouped by the diff_id they verify it against.
    fn split_by_form(&self, consumers: &[NodeIndex]) -> (Vec<NodeIndex>, Vec<(Digest, Vec<NodeIndex>)>) {
        let g = self.graph;
        let mut direct = Vec::new();
        let mut plain: Vec<(Digest, Vec<NodeIndex>)> = Vec::new();
        for &c in consumers {
            let work = &g.graph[c];
            let wants_plain = match work.key {
                NodeKey::Blob { .. } => work.form == Some(StoredForm::PlainTar),
                NodeKey::Rewrite { .. } => true,
                _ => false,
            };
            match (&work.diff_id, wants_plain) {
                (Some(d), true) => match plain.iter_mut().find(|(p, _)| p == d) {
                    Some((_, members)) => members.push(c),
                    None => plain.push((d.clone(), vec![c])),
                },
                _ => direct.push(c),
            }
        }
        (direct, plain)
    }

    /// Inflates the layer arriving on `branch` once, verified against
    /// `diff_id`, and feeds the uncompressed chunks to `members`. A store
    /// that is writing another blob now (a tarball takes one entry at a
    /// time) is not made to hold the stream back or spool a copy of its
    /// own: one spool file, written once beside the streams, gives it the
    /// layer when the stream has ended whole.
    async fn inflate_once(
        &self,
        desc: &Descriptor,
        diff_id: Digest,
        members: Vec<NodeIndex>,
        compressed: Chunks,
    ) -> Vec<(NodeIndex, Result<()>)> {
        let what = format!("layer {}", desc.digest);
        let plain = match decompressed(chunk_reader(compressed), &diff_id, &what).await {
            Ok(p) => p,
            Err(e) => return members.into_iter().map(|c| (c, Err(e.duplicate()))).collect(),
        };
        let (later, now): (Vec<NodeIndex>, Vec<NodeIndex>) = members.into_iter().partition(|&c| {
            matches!(self.graph.graph[c].key, NodeKey::Blob { .. })
                && self
                    .owner(c)
                    .and_then(|o| self.io_of(o))
                    .is_ok_and(|io| io.sink.stream_would_wait())
        });
        // Without a spool file, everyone streams (a busy store spools its own).
        let (spool, now, later) = match later.is_empty() {
            true => (None, now, later),
            false => match spool_file() {
                Ok(f) => (Some(f), now, later),
                Err(e) => {
                    warn!("{what}: {e}; the stores that are busy spool the layer on their own");
                    (None, now.into_iter().chain(later).collect(), Vec::new())
                }
            },
        };
        let (mut branches, pump) = tee(read_chunks(plain, CHUNK), now.len() + usize::from(spool.is_some()));
        let spool_branch = spool.as_ref().and_then(|_| branches.pop());
        let spooled = async {
            match (&spool, spool_branch) {
                (Some(f), Some(b)) => Some(write_chunks(f.as_file(), chunks(b), &what, f.path()).await),
                _ => None,
            }
        };
        let diff = &diff_id;
        let feeds = futures_util::future::join_all(
            now.iter()
                .zip(branches)
                .map(|(&c, b)| async move { (c, self.consume_plain(c, diff, b).await) }),
        );
        // A failed inflate reaches every member through its branch.
        let (_, mut per, spooled) = tokio::join!(pump, feeds, spooled);
        match (spool, spooled) {
            (Some(f), Some(Ok(_))) => {
                let plain_desc = Descriptor::new(media_type::DOCKER_LAYER_TAR, diff_id.clone(), 0);
                let copies = later.iter().map(|&c| {
                    let (plain_desc, path) = (&plain_desc, f.path());
                    async move {
                        let r = match self.owner(c).and_then(|o| Ok((o, self.io_of(o)?))) {
                            Ok((owner, io)) => {
                                let r = io.sink.put_blob_file(plain_desc, path).await;
                                self.copied_by(c, owner, &r);
                                r
                            }
                            Err(e) => Err(e),
                        };
                        (c, r)
                    }
                });
                per.extend(futures_util::future::join_all(copies).await);
            }
            (_, Some(Err(e))) => per.extend(later.into_iter().map(|c| (c, Err(e.duplicate())))),
            _ => {}
        }
        per
    }

    /// One consumer of a fetched stream taking it as it is.
    async fn consume(&self, c: NodeIndex, stream: Chunks) -> Result<()> {
        let g = self.graph;
        let work = &g.graph[c];
        let desc = work
            .source_blob
            .clone()
            .ok_or_else(|| Error::invalid("a consumer without a blob"))?;
        match &work.key {
            // Those were given the inflated layer; without a diff_id to
            // verify it against, they cannot take it.
            NodeKey::Blob { .. } if work.form == Some(StoredForm::PlainTar) => {
                Err(Error::invalid(format!("layer {} has no diff_id", desc.digest)))
            }
            NodeKey::Rewrite { .. } => Err(Error::invalid(format!("layer {} has no diff_id", desc.digest))),
            NodeKey::Blob { .. } => {
                let owner = self.owner(c)?;
                let r = self.io_of(owner)?.sink.put_blob_chunks(&desc, stream).await;
                self.copied_by(c, owner, &r);
                r
            }
            _ => Err(Error::invalid("only blobs and rewrites read a fetched stream")),
        }
    }

    /// One consumer of an inflated layer (its chunks on `plain`): a blob
    /// for a plain-tar store, or a rewrite.
    async fn consume_plain(&self, c: NodeIndex, diff_id: &Digest, plain: Branch) -> Result<()> {
        let g = self.graph;
        let work = &g.graph[c];
        let owner = self.owner(c)?;
        let io = self.io_of(owner)?;
        match &work.key {
            NodeKey::Blob { .. } => {
                let r = io
                    .sink
                    .put_blob_chunks(
                        &Descriptor::new(media_type::DOCKER_LAYER_TAR, diff_id.clone(), 0),
                        chunks(plain),
                    )
                    .await;
                self.copied_by(c, owner, &r);
                r
            }
            NodeKey::Rewrite { input, .. } => {
                let compression = work.compression.unwrap_or(Compression::None);
                let rewritten = rewrite_stream(
                    boxed(plain),
                    &io.chain,
                    input,
                    compression,
                    work.level,
                    self.opts.cache.as_ref(),
                )
                .await?;
                if let Ok(mut m) = self.rewrites.lock() {
                    m.insert(c, Arc::new(rewritten));
                }
                Ok(())
            }
            _ => Err(Error::invalid("only blobs and rewrites read a fetched stream")),
        }
    }

    /// Counts blob `c` as copied for `owner` when it was (a referrer's
    /// blob is not one of the image's layers).
    fn copied_by(&self, c: NodeIndex, owner: usize, r: &Result<()>) {
        let g = self.graph;
        let of_referrers = g
            .needed_by(c)
            .iter()
            .all(|(n, _)| matches!(g.graph[*n].key, NodeKey::Referrer { .. }));
        if r.is_ok() && !of_referrers {
            tally(&self.copied, owner);
        }
    }

    /// A blob that is not copied from a fetch: present, mounted, or
    /// written from a rewrite's spool.
    async fn blob(&self, i: NodeIndex) -> Result<()> {
        let g = self.graph;
        let work = &g.graph[i];
        let owner = self.owner(i)?;
        let io = self.io_of(owner)?;
        if let Some((rw, _)) = g.needs(i).into_iter().find(|(_, l)| *l == "rewritten to") {
            let rewritten = self
                .rewrites
                .lock()
                .ok()
                .and_then(|m| m.get(&rw).cloned())
                .ok_or_else(|| Error::invalid("the rewrite's output is gone"))?;
            let plain_store = work.form == Some(StoredForm::PlainTar);
            let out = output_descriptor(&rewritten.result, plain_store);
            let put = || self.put_rewritten(i, io, owner, &rewritten, plain_store);
            let place = match &work.key {
                NodeKey::Blob { store, .. } => crate::sink::store::StoreId::parse(store),
                _ => None,
            };
            let (Some(host), Some(repo)) = (
                place.as_ref().and_then(|p| p.host()),
                place.as_ref().and_then(|p| p.repository_name()),
            ) else {
                return put().await;
            };
            // In a registry: one upload per host, the other repositories
            // mount it from there.
            let cell = {
                let mut m = match self.rewritten_uploads.lock() {
                    Ok(m) => m,
                    Err(p) => p.into_inner(),
                };
                m.entry((host.to_string(), out.digest.clone())).or_default().clone()
            };
            let mut uploaded = None;
            let from = cell
                .get_or_init(|| async {
                    let r = put().await;
                    let there = r.is_ok().then(|| repo.to_string());
                    uploaded = Some(r);
                    there
                })
                .await
                .clone();
            if let Some(r) = uploaded {
                return r;
            }
            if let Some(from) = from.filter(|f| f != repo) {
                let _permit = self.transfers.acquire().await;
                if self.mount(io, owner, &out.digest, &from, &[], false).await? {
                    tally(&self.mounted, owner);
                    return Ok(());
                }
                info!(blob = %out.digest, %from, "mount of a rewritten layer declined, uploading instead");
            }
            return put().await;
        }
        match &work.how {
            Some(How::Mount(m)) => {
                let _permit = self.transfers.acquire().await;
                let desc = work
                    .source_blob
                    .clone()
                    .ok_or_else(|| Error::invalid("a mount without a blob"))?;
                if self
                    .mount(io, owner, &desc.digest, &m.from, &m.or, m.remembered)
                    .await?
                {
                    tally(&self.mounted, owner);
                    return Ok(());
                }
                // Declined (the repository this run wrote it to, or the
                // source's, may not be read): upload it after all. (A mount
                // from a remembered repository is asked by its fetch, before
                // the one read that then uploads it if declined.)
                info!(blob = %desc.digest, from = %m.from, "mount declined, uploading instead");
                let raw = io.source.open_blob(&desc).await?;
                let counted: BlobReader = Box::pin(CountingReader {
                    inner: raw,
                    counter: io.bytes_read.clone(),
                });
                io.sink.put_blob(&desc, counted).await?;
                tally(&self.copied, owner);
                Ok(())
            }
            Some(How::Present) => {
                if let Some(d) = work.source_blob.as_ref().map(|d| &d.digest) {
                    for t in &work.targets {
                        if let Some(io) = self.io.get(t) {
                            io.sink.note_present(d);
                        }
                    }
                }
                Ok(())
            }
            // Sent by the fetch that feeds it (or by an earlier target).
            _ => Ok(()),
        }
    }

    /// Mounts `digest` into `store` from `m.from` once shard `shard` (of a
    /// saved plan's assignment) has uploaded it there: asked again while the
    /// registry declines, after a pause growing from
    /// [`AWAIT_FIRST_PAUSE`] to [`AWAIT_MAX_PAUSE`], until the wait for that
    /// shard ([`WalkOptions::shard_wait`], from the first wait for it) runs
    /// out. Then false, with a warning: the caller uploads the blob itself,
    /// counted as a duplicated upload. A blob waited for in `store`'s own
    /// repository (the owner writes other tags of it) is looked for there.
    /// No transfer permit is held while pausing.
    async fn awaited_mount(
        &self,
        io: &TargetIo,
        owner: usize,
        digest: &Digest,
        store: &str,
        m: &crate::plan::graph::Mount,
        shard: usize,
    ) -> Result<bool> {
        let started = Instant::now();
        let deadline = match self.shard_deadlines.lock() {
            Ok(mut d) => *d.entry(shard).or_insert_with(|| started + self.opts.shard_wait),
            Err(_) => started + self.opts.shard_wait,
        };
        let own = crate::sink::store::StoreId::parse(store)
            .and_then(|id| id.repository_name().map(|r| r == m.from))
            .unwrap_or(false);
        let mut pause = AWAIT_FIRST_PAUSE;
        let mut asks = 0u32;
        loop {
            let there = {
                let _permit = self.transfers.acquire().await;
                asks += 1;
                let from = (!own).then_some(m.from.as_str());
                match io.sink.try_reuse(digest, from).await {
                    Ok(Reuse::No) => false,
                    Ok(_) => true,
                    Err(e) if !matches!(e, Error::Network(_)) => {
                        info!(blob = %digest, from = %m.from, "mount refused while waiting for shard {shard}: {e}");
                        false
                    }
                    Err(e) => return Err(e),
                }
            };
            if there {
                if asks > 1 {
                    info!(
                        blob = %digest,
                        from = %m.from,
                        "shard {shard} uploaded it after {:.1}s ({asks} asks)",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    "blob {digest}: shard {shard} did not upload it to {} within the {:?} wait for it (is that shard running?); uploading it from this shard too, a duplicated upload",
                    m.from,
                    self.opts.shard_wait
                );
                tally(&self.duplicated, owner);
                return Ok(false);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(AWAIT_MAX_PAUSE);
        }
    }

    /// Mounts `digest` from `from`, else from each of `or` in turn: whether
    /// one registry answer was "mounted". Each decline is counted; for
    /// remembered repositories (hints from earlier runs) a refusal other
    /// than the network's (a scope not granted, a repository gone) is a
    /// decline too, never the blob's failure.
    /// Puts rewritten blob `i` from its spool, unless the store holds it
    /// already (the output of a deterministic rewrite may be there from an
    /// earlier run without the layer cache): a look, then a put; an upload
    /// cut mid-body starts again from the spool.
    async fn put_rewritten(
        &self,
        i: NodeIndex,
        io: &TargetIo,
        owner: usize,
        rewritten: &Rewritten,
        plain_store: bool,
    ) -> Result<()> {
        let _permit = self.transfers.acquire().await;
        let out = output_descriptor(&rewritten.result, plain_store);
        if io.sink.try_reuse(&out.digest, None).await? == Reuse::Present {
            return Ok(());
        }
        let budget = ReadBudget::new(self.opts.retries + 1);
        let policy = crate::registry::retry::RetryPolicy::new(self.opts.retries);
        let mut attempt = 0;
        let r = loop {
            budget.take();
            match put_spooled(io.sink.as_ref(), rewritten, plain_store).await {
                Err(e) if e.restarts_copy() && budget.left() > 0 => {
                    warn!("{}: upload failed, starting it again: {e}", describe(self.graph, i));
                    tokio::time::sleep(policy.delay(attempt, None)).await;
                    attempt += 1;
                }
                r => break r,
            }
        };
        if r.is_ok() {
            tally(&self.copied, owner);
            io.bytes_read.fetch_add(out.size, Ordering::Relaxed);
        }
        r
    }

    async fn mount(
        &self,
        io: &TargetIo,
        owner: usize,
        digest: &Digest,
        from: &str,
        or: &[String],
        remembered: bool,
    ) -> Result<bool> {
        for repo in std::iter::once(from).chain(or.iter().map(String::as_str)) {
            match io.sink.try_reuse(digest, Some(repo)).await {
                Ok(Reuse::No) => {}
                Ok(_) => return Ok(true),
                Err(e) if remembered && !matches!(e, Error::Network(_)) => {
                    info!(blob = %digest, from = repo, "remembered location refused: {e}");
                }
                Err(e) => return Err(e),
            }
            tally(&self.declined, owner);
        }
        Ok(false)
    }

    /// A config: registries get it as a blob now (present, mounted or
    /// uploaded); file stores write it with the manifest; a filtered
    /// config is known only at the commit, which puts it.
    async fn config(&self, i: NodeIndex) -> Result<()> {
        let g = self.graph;
        let work = &g.graph[i];
        if work.estimated {
            return Ok(());
        }
        let Some(desc) = work.source_blob.clone() else {
            return Ok(());
        };
        let owner = self.owner(i)?;
        let io = self.io_of(owner)?;
        let note_all = || {
            for t in &work.targets {
                if let Some(io) = self.io.get(t) {
                    io.sink.note_present(&desc.digest);
                }
            }
        };
        match &work.how {
            Some(How::Present) => {
                note_all();
                Ok(())
            }
            Some(How::Mount(m)) => {
                let mounted = match (m.after_shard, &work.key) {
                    (Some(shard), NodeKey::Config { store, .. }) => {
                        self.awaited_mount(io, owner, &desc.digest, store, m, shard).await?
                    }
                    _ => {
                        let _permit = self.transfers.acquire().await;
                        self.mount(io, owner, &desc.digest, &m.from, &m.or, m.remembered)
                            .await?
                    }
                };
                if !mounted {
                    let _permit = self.transfers.acquire().await;
                    let bytes = config_bytes(&io.resolved, &self.configs, &desc.digest)?;
                    put_bytes(io.sink.as_ref(), &desc, bytes).await?;
                }
                note_all();
                Ok(())
            }
            Some(How::Upload) => {
                let _permit = self.transfers.acquire().await;
                let bytes = config_bytes(&io.resolved, &self.configs, &desc.digest)?;
                put_bytes(io.sink.as_ref(), &desc, bytes).await?;
                note_all();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The commit of one target: its images (rewritten when filtered), the
    /// index, then the sink's finish, which makes it visible.
    async fn commit(&self, i: NodeIndex) -> Result<()> {
        let g = self.graph;
        let t = self.owner(i)?;
        let io = self.io_of(t)?;
        let tw = g
            .targets
            .get(&t)
            .ok_or_else(|| Error::invalid("a tag without a target"))?;
        let _permit = self.commits.acquire().await;
        let plain_store = tw
            .images
            .first()
            .and_then(|im| im.layers.first())
            .and_then(|&l| g.graph[l].form)
            == Some(StoredForm::PlainTar);
        // Configs planning did not read, as the walk read them (a registry
        // that holds a config needs no bytes for it).
        let filled: Vec<ImageData> = io
            .resolved
            .images
            .iter()
            .map(|img| {
                if !img.config.bytes.is_empty() {
                    return Ok(img.clone());
                }
                match config_bytes(&io.resolved, &self.configs, &img.manifest.config.digest) {
                    Ok(bytes) => {
                        let mut img = img.clone();
                        img.config = crate::image::ConfigBlob::parse(bytes, &img.manifest.config.digest.to_string())?;
                        Ok(img)
                    }
                    Err(_) => Ok(img.clone()),
                }
            })
            .collect::<Result<_>>()?;
        let before = &filled;
        let mut results: HashMap<Digest, LayerResult> = HashMap::new();
        let mut from_cache = 0;
        let mut rewritten_here = 0;
        if !io.chain.is_empty() {
            for (img, iw) in before.iter().zip(&tw.images) {
                for (desc, rw) in img.manifest.layers.iter().zip(&iw.rewrites) {
                    if results.contains_key(&desc.digest) {
                        continue;
                    }
                    let result = match rw {
                        Some(r) => {
                            if g.graph[*r].targets.first() == Some(&t) {
                                rewritten_here += 1;
                            }
                            self.rewrites
                                .lock()
                                .ok()
                                .and_then(|m| m.get(r).map(|x| x.result.clone()))
                                .ok_or_else(|| Error::invalid(format!("layer {} was not rewritten", desc.digest)))?
                        }
                        None if io.chain.changes_content() => {
                            from_cache += 1;
                            self.cached_result(&io.chain, desc, plain_store)?
                        }
                        None => continue,
                    };
                    results.insert(desc.digest.clone(), result);
                }
            }
        }
        let after: Vec<ImageData> = if io.chain.is_empty() {
            before.clone()
        } else {
            before
                .iter()
                .map(|img| rewrite_image(img, &results, &io.chain, plain_store))
                .collect::<Result<_>>()?
        };
        let mut matches = Vec::new();
        for (b, a) in before.iter().zip(&after) {
            if !io.chain.is_empty() {
                write_inspect_lines(&io.chain, &io.name, b, a, &results)?;
                matches.extend(matches_of(&io.name, b, &results));
            }
        }
        let index = match (io.resolved.index.as_deref(), tw.index.is_some()) {
            (Some((raw, idx)), true) if !io.chain.is_empty() => Some(rewrite_index(raw, idx, before, &after)?),
            (Some((raw, idx)), true) => {
                let written = index_to_write(raw, idx, before)?;
                if written.digest != raw.digest {
                    info!(
                        "the index was rewritten to the {} chosen platforms: its digest changes from {} to {}",
                        before.len(),
                        raw.digest,
                        written.digest
                    );
                }
                Some(written)
            }
            _ => None,
        };
        let digest = if tw.in_place {
            // Only referrers to add: the image is there as it is.
            match (&index, after.first()) {
                (Some(raw), _) => raw.digest.clone(),
                (None, Some(img)) => img.raw_manifest.digest.clone(),
                (None, None) => return Err(Error::invalid(format!("{} received no image", io.sink.describe()))),
            }
        } else {
            commit_images(io.sink.as_ref(), &after, index).await?
        };
        let distinct: HashSet<&Digest> = before
            .iter()
            .flat_map(|i| i.manifest.layers.iter().map(|l| &l.digest))
            .collect();
        let (copied, mounted) = (count(&self.copied, t), count(&self.mounted, t));
        let report = CopyReport {
            digest,
            images: after.len(),
            layers: distinct.len(),
            layers_copied: copied,
            layers_skipped: distinct.len().saturating_sub(copied),
            layers_mounted: mounted,
            mounts_declined: count(&self.declined, t),
            uploads_duplicated: count(&self.duplicated, t),
            bytes: io.bytes_read.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
            matches,
            layers_from_cache: from_cache,
            layers_rewritten: rewritten_here,
            written: after.iter().map(WrittenImage::of).collect(),
            blobs: after
                .iter()
                .flat_map(|i| {
                    i.manifest
                        .layers
                        .iter()
                        .map(|l| l.digest.clone())
                        .chain(std::iter::once(i.manifest.config.digest.clone()))
                })
                .collect(),
            referrers: 0,
        };
        if let Ok(mut r) = self.reports.lock() {
            r.insert(t, report);
        }
        Ok(())
    }

    /// A referrer manifest, put after its subject (with its cosign tag,
    /// else by digest).
    async fn referrer(&self, i: NodeIndex) -> Result<()> {
        let io = self.io_of(self.owner(i)?)?;
        let r = self
            .graph
            .referrers
            .get(&i)
            .ok_or_else(|| Error::invalid("a referrer without its manifest"))?;
        let _permit = self.commits.acquire().await;
        io.sink
            .put_referrer(&r.manifest, &r.descriptor, r.tag.as_deref())
            .await?;
        for t in &self.graph.graph[i].targets {
            tally(&self.referred, *t);
        }
        Ok(())
    }

    /// The referrers tag of a subject, merged with what the registry lists.
    async fn referrers_tag(&self, i: NodeIndex) -> Result<()> {
        let io = self.io_of(self.owner(i)?)?;
        let (subject, entries) = self
            .graph
            .referrers_tags
            .get(&i)
            .ok_or_else(|| Error::invalid("a referrers tag without entries"))?;
        let _permit = self.commits.acquire().await;
        io.sink.list_referrers(subject, entries).await
    }

    /// The layer cache's answer for a layer the plan found there.
    fn cached_result(&self, chain: &FilterChain, desc: &Descriptor, plain_store: bool) -> Result<LayerResult> {
        let cache = self
            .opts
            .cache
            .as_ref()
            .ok_or_else(|| Error::invalid("the plan used the layer cache, which this run has not"))?;
        let (compression, level) = if plain_store {
            (Compression::None, None)
        } else {
            chain.output_compression(Compression::from_media_type(&desc.media_type).unwrap_or(Compression::Gzip))
        };
        let e = cache
            .get(&cache_key(&desc.digest, chain, compression, level))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "the layer cache entry for {} went away since the plan: plan again",
                    desc.digest
                ))
            })?;
        Ok(LayerResult {
            diff_id: e.diff_id,
            digest: e.digest,
            size: e.size,
            plain_size: if plain_store { e.size } else { 0 },
            compression: e.compression,
            taps: Vec::new(),
            matches: Vec::new(),
        })
    }

    /// The check of a committed target.
    async fn check(&self, i: NodeIndex) -> Result<()> {
        let t = self.owner(i)?;
        let report = self
            .reports
            .lock()
            .ok()
            .and_then(|mut r| {
                let report = r.get_mut(&t)?;
                report.referrers = count(&self.referred, t);
                Some(report.clone())
            })
            .ok_or_else(|| Error::invalid("checked before its commit"))?;
        let _permit = self.commits.acquire().await;
        let outcome = self.after.after_commit(t, &report).await?;
        if let Ok(mut c) = self.checks.lock() {
            c.insert(t, outcome);
        }
        Ok(())
    }
}

/// Counts one more layer for target `t` (copied or mounted).
fn tally(counts: &HashMap<usize, AtomicUsize>, t: usize) {
    if let Some(n) = counts.get(&t) {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// The layers counted for target `t`.
fn count(counts: &HashMap<usize, AtomicUsize>, t: usize) -> usize {
    counts.get(&t).map(|n| n.load(Ordering::Relaxed)).unwrap_or(0)
}

/// `upload sha256:ab12… to registry://host/repo`, for error messages.
fn describe(g: &WorkGraph, i: NodeIndex) -> String {
    crate::plan::graph::describe_work(&g.graph[i])
}

/// `error` with `prefix` in front of its message, same kind.
fn prefix_error(prefix: &str, error: Error) -> Error {
    match error {
        Error::Usage(m) => Error::Usage(format!("{prefix}{m}")),
        Error::Network(m) => Error::Network(format!("{prefix}{m}")),
        Error::Unauthorized(m) => Error::Unauthorized(format!("{prefix}{m}")),
        Error::NotFound(m) => Error::NotFound(format!("{prefix}{m}")),
        Error::Invalid(m) => Error::Invalid(format!("{prefix}{m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{prefix}{m}")),
        other => Error::Invalid(format!("{prefix}{other}")),
    }
}

/// The config bytes of the image whose config has `digest`: as planning
/// read them, or as the walk did.
fn config_bytes(
    resolved: &ResolvedImage,
    read: &Mutex<HashMap<Digest, bytes::Bytes>>,
    digest: &Digest,
) -> Result<bytes::Bytes> {
    if let Some(b) = resolved
        .images
        .iter()
        .find(|i| &i.manifest.config.digest == digest && !i.config.bytes.is_empty())
        .map(|i| i.config.bytes.clone())
    {
        return Ok(b);
    }
    read.lock()
        .ok()
        .and_then(|m| m.get(digest).cloned())
        .ok_or_else(|| Error::invalid(format!("config {digest} was not read")))
}

async fn put_bytes(sink: &dyn Sink, desc: &Descriptor, bytes: bytes::Bytes) -> Result<()> {
    sink.put_blob_bytes(desc, bytes).await
}

/// Puts a rewritten layer from its spool: as written, or decompressed
/// (verified against its diff_id) for a plain-tar store.
async fn put_spooled(sink: &dyn Sink, rewritten: &Rewritten, plain_store: bool) -> Result<()> {
    let spool = rewritten
        .spool
        .as_ref()
        .ok_or_else(|| Error::invalid("a rewrite without output"))?;
    let file = tokio::fs::File::open(spool.path())
        .await
        .map_err(|e| Error::io("open", spool.path(), e))?;
    let reader: BlobReader = Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, file));
    let desc = output_descriptor(&rewritten.result, plain_store);
    if plain_store && rewritten.result.compression != Compression::None {
        let what = format!("rewritten layer {}", rewritten.result.digest);
        let plain = decompressed(reader, &rewritten.result.diff_id, &what).await?;
        return sink.put_blob(&desc, plain).await;
    }
    sink.put_blob(&desc, reader).await
}

/// Commits the images (configs and manifests), then the index if there is
/// one to write, then finishes the sink. Returns the digest the destination's
/// tag now names.
async fn commit_images(sink: &dyn Sink, images: &[ImageData], index: Option<RawManifest>) -> Result<Digest> {
    for img in images {
        sink.put_image(img, index.is_none()).await?;
    }
    let digest = match index {
        Some(raw) => {
            sink.put_index(&raw, images).await?;
            raw.digest
        }
        None => images
            .first()
            .map(|i| i.raw_manifest.digest.clone())
            .ok_or_else(|| Error::invalid(format!("{} received no image", sink.describe())))?,
    };
    sink.finish().await?;
    Ok(digest)
}

/// The reads of one blob a fetch may still make: each start and each extra
/// read to tell corruption from a malformed layer spends one.
struct ReadBudget(std::sync::atomic::AtomicU32);

impl ReadBudget {
    fn new(reads: u32) -> Self {
        ReadBudget(std::sync::atomic::AtomicU32::new(reads))
    }

    /// Spends one read; false when none is left.
    fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn left(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether an error is the transport's final word on a request (already
/// retried there), which reading again would only repeat.
fn is_transport_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Network(_) | Error::Registry { .. } | Error::NotFound(_) | Error::Unauthorized(_)
    )
}

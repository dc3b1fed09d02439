//! The planner: expand → resolve → diff → graph. A validated sync file
//! becomes [`Target`]s (one source image, one chain, one destination), each
//! source resolved to its manifest digest and platform images, each
//! destination compared with what it holds, and the work left built into
//! one [`graph::WorkGraph`]: each blob fetched once, uploaded once per
//! registry and mounted everywhere else, each layer rewritten once per
//! chain, what is present skipped. `occy sync --plan` renders this graph;
//! `occy sync` walks it.

pub mod archive;
pub mod expand;
pub mod graph;
mod memo;
pub mod prune;
pub mod quay;
mod quick;
pub mod quota;
pub mod referrers;
pub mod render;
pub mod shard;
pub mod state;
pub mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::cache::LayerCache;
use crate::error::{Error, Result};
use crate::filter::FilterChain;
use crate::image::convert::{adapt_media_types, docker_kept_warning, keeps_docker_in_oci_layout, MediaTypes};
use crate::image::{check_fits, expected_digest, Digest, ImageName, ResolvedImage};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryOptions};
use crate::sink::kind::{self, CurrentDigest};
use crate::source::docker_daemon::DaemonConnection;
use crate::source::{resolve_with, Configs, PlatformSelection, SourceOptions};
use crate::spec::{SpecProblem, SyncSpec, TemplateFields};
use expand::{expand_all, Expansion, RegistryAccess, SourceImage};

/// Requests in flight while planning (resolutions, HEADs).
const PLAN_CONCURRENCY: usize = 16;

/// Everything the planner needs besides the sync file.
#[derive(Clone)]
pub struct PlanContext {
    pub spec: Arc<SyncSpec>,
    /// Registry settings from the command line; the sync file's per-host
    /// settings are laid over them.
    pub base: RegistryOptions,
    pub cache: Option<LayerCache>,
    /// `--only`: targets whose source or destination matches one of these.
    pub only: Vec<globset::GlobMatcher>,
    /// A saved plan to apply exactly (`--apply`).
    pub pinned: Option<SavedPlan>,
    /// One-shot commands (`occy process`): every target is written, so
    /// sources are not resolved nor destinations compared beforehand.
    pub write_all: bool,
    /// `--prune`: also list the tags of synced registry repositories that
    /// no target selects.
    pub prune: bool,
    /// `--shard I/N` (only that shard's targets) or `--shards N` (record the assignment).
    pub sharding: Option<shard::Sharding>,
    /// What planning has asked the registries already.
    pub memo: Arc<memo::PlanMemo>,
}

impl PlanContext {
    /// Registry settings for `host`: the command line's, plus the sync
    /// file's `registries:` entry for it.
    pub fn registry_options(&self, host: &str) -> RegistryOptions {
        let mut o = self.base.clone();
        if let Some(h) = self.spec.registries.get(host) {
            if let Some(u) = &h.username {
                o.username = Some(u.clone());
            }
            if let Some(p) = h.password.as_ref().or(h.token.as_ref()) {
                o.password = Some(p.clone());
                if o.username.is_none() {
                    o.username = Some("$oauthtoken".to_string());
                }
            }
            if h.authfile.is_some() {
                o.authfile = h.authfile.clone();
            }
            if h.cert_dir.is_some() {
                o.cert_dir = h.cert_dir.clone();
            }
        }
        // Every host gets the same insecure list, so its client is shared.
        for (name, h) in &self.spec.registries {
            if h.insecure && !o.insecure_hosts.contains(name) {
                o.insecure_hosts.push(name.clone());
            }
        }
        o
    }

    /// Source settings for reading `reference`.
    pub fn source_options(&self, reference: &Reference) -> SourceOptions {
        SourceOptions {
            registry: match reference {
                Reference::Registry(r) => self.registry_options(&r.host),
                _ => self.registry_options(""),
            },
        }
    }
}

impl RegistryAccess for PlanContext {
    fn client(&self, host: &str) -> Result<RegistryClient> {
        RegistryClient::for_host(host, &self.registry_options(host))
    }

    fn source_options(&self, reference: &Reference) -> SourceOptions {
        PlanContext::source_options(self, reference)
    }

    fn remember_tags(&self, host: &str, repo: &str, tags: &[String]) {
        self.memo.remember_tags(host, repo, tags);
    }

    fn quay_token(&self) -> Option<String> {
        self.spec
            .registries
            .iter()
            .find(|(h, _)| h.as_str() == "quay.io" || h.as_str() == quay::registry_host())
            .and_then(|(_, a)| a.token.clone())
    }
}

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
    /// Blobs mounted from another repository of the destination registry.
    pub mount: usize,
    /// Blobs the destination already holds.
    pub present: usize,
    /// Bytes sent.
    pub bytes: u64,
    /// True when filters will rewrite the layers: counts are the source's.
    pub estimated: bool,
}

impl BlobCounts {
    pub fn add(&mut self, o: &BlobCounts) {
        self.upload += o.upload;
        self.mount += o.mount;
        self.present += o.present;
        self.bytes += o.bytes;
        self.estimated |= o.estimated;
    }
}

/// One planned target.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTarget {
    pub entry: usize,
    pub source: String,
    pub destination: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<String>,
    /// The manifest digest the source's tag names now.
    pub source_digest: Option<Digest>,
    /// Platform images taken.
    pub platforms: usize,
    /// The digest the destination will name (unknown for a first filtered run).
    pub expected: Option<Digest>,
    /// The digest the destination names now.
    pub current: Option<Digest>,
    #[serde(flatten)]
    pub action: Action,
    pub blobs: BlobCounts,
    #[serde(skip)]
    pub target: Target,
    #[serde(skip)]
    pub resolved: Option<Arc<ResolvedImage>>,
    /// What the destination does to the media types of the source's manifests.
    #[serde(skip)]
    pub media: MediaNote,
    /// The referrers (signatures, SBOMs, attestations) copied with the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<referrers::TargetReferrers>,
    /// What `verify:` requires of its source, and who signed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<verify::Verification>,
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

/// The images as `p`'s destination will hold them: with OCI media types
/// where it wants them (see [`MediaTypes`]), so that the expected digest,
/// the work graph and the walk all see the manifests that are written.
fn for_destination(p: &mut PlannedTarget, resolved: Arc<ResolvedImage>) -> Result<Arc<ResolvedImage>> {
    let rule = MediaTypes::of(&p.target.destination);
    if keeps_docker_in_oci_layout(&resolved, rule) {
        p.media = MediaNote::DockerKept;
    }
    match adapt_media_types(&resolved, rule).map_err(|e| {
        Error::invalid(format!(
            "cannot convert to OCI media types for {}: {e}",
            p.target.destination
        ))
    })? {
        Some(converted) => {
            p.media = if converted.synthesised {
                MediaNote::SynthesisedOci
            } else {
                MediaNote::Converted
            };
            Ok(Arc::new(converted))
        }
        None => Ok(resolved),
    }
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

impl SavedPlan {
    /// The first differences between the work this plan saved and `now`,
    /// the graph of the same targets at the same digests planned against
    /// the destinations as they are: empty when the saved plan still
    /// applies node for node (same nodes, each blob getting in the same
    /// way). Ids and the order of nodes do not matter.
    /// With `whole` false (one shard of the saved plan), saved nodes that
    /// `now` lacks are not differences.
    pub fn differences(&self, now: &graph::WorkGraph, whole: bool, limit: usize) -> Vec<String> {
        let now = now.works();
        let saved: HashMap<&graph::NodeKey, &Option<graph::How>> =
            self.nodes.iter().map(|w| (&w.key, &w.how)).collect();
        let current: HashMap<&graph::NodeKey, &Option<graph::How>> = now.iter().map(|w| (&w.key, &w.how)).collect();
        let mut out = Vec::new();
        for w in &now {
            match saved.get(&w.key) {
                None => out.push(format!("{} is new", graph::describe_work(w))),
                Some(how) if !same_how(how, &w.how) => out.push(format!(
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
    let platforms = match MediaTypes::of(&t.destination) {
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

/// The place a target writes, to find two targets writing the same one.
fn destination_key(dest: &Reference, name: &ImageName) -> String {
    match dest {
        Reference::Registry(r) => format!(
            "registry://{}/{}:{}",
            r.host,
            r.repository,
            r.digest
                .as_ref()
                .map(|d| d.to_string())
                .or(r.tag.clone())
                .unwrap_or_else(|| name.tag.clone())
        ),
        Reference::Oci { path, tag, .. } => {
            format!(
                "oci://{}:{}",
                path.display(),
                tag.clone().unwrap_or_else(|| name.tag.clone())
            )
        }
        Reference::Dir { path, .. } => format!("dir://{}#{}", path.display(), name),
        Reference::Archive { path, .. } => format!("archive://{}#{}", path.display(), crate::archive::layout_ref(name)),
        Reference::Docker { name, tag, digest, .. } => format!(
            "docker://{}",
            crate::reference::docker_image(name, tag.as_deref(), digest.as_ref())
        ),
        other => other.to_string(),
    }
}

/// The name a destination records for a source image.
fn image_name(src: &SourceImage) -> ImageName {
    match &src.reference {
        Reference::Registry(r) => ImageName {
            repository: r.name(),
            tag: src.fields.tag.clone(),
        },
        _ => ImageName {
            repository: src.fields.repo.clone(),
            tag: src.fields.tag.clone(),
        },
    }
}

/// The items without repeats, each where it first came (a set beside the
/// list: at 10,000 targets, a scan of the list for each item is quadratic).
pub(crate) fn distinct<T: std::hash::Hash + Eq + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// Runs `f` on each item, [`PLAN_CONCURRENCY`] at a time, and returns the
/// results in the items' order. Whichever request answers first makes room
/// for the next (one slow answer does not hold the others back, as an
/// ordered buffer would).
pub(crate) async fn concurrently_in_order<I, T, F, Fut>(items: I, f: F) -> Vec<T>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out: Vec<(usize, T)> = stream::iter(items.into_iter().enumerate())
        .map(|(i, item)| {
            let fut = f(item);
            async move { (i, fut.await) }
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Builds the plan: expands, resolves and diffs every target.
pub async fn build(ctx: &PlanContext) -> Result<Plan> {
    let spec = ctx.spec.clone();
    let mut warnings = Vec::new();
    let mut failed: Vec<PlannedTarget> = Vec::new();
    let sources: Vec<SourceImage> = match &ctx.pinned {
        Some(saved) => pinned_sources(ctx, saved)?,
        None => {
            let mut out = Vec::new();
            for e in expand_all(&spec, ctx).await {
                match e {
                    Expansion::Images(images) => {
                        if let Some(first) = images.first() {
                            warn_dir_overwrites(&spec, first.entry, images.len(), &mut warnings);
                        }
                        out.extend(images)
                    }
                    Expansion::Failed { entry, source, error } => {
                        failed.push(failed_target(&spec, entry, source, &error));
                    }
                }
            }
            for entry in &spec.entries {
                let n = out.iter().filter(|s| s.entry == entry.index).count();
                let broke = failed.iter().any(|f| f.entry == entry.index);
                if n == 0 && !broke {
                    warnings.push(format!("sync[{}]: {} matched no images", entry.index, entry.from));
                }
            }
            out
        }
    };

    // Resolve each distinct (source, platforms) once.
    let mut wanted: Vec<(Reference, PlatformSelection)> = Vec::new();
    let mut wanted_keys: HashSet<(Reference, String)> = HashSet::new();
    let mut want = |r: &Reference, p: &PlatformSelection| {
        if wanted_keys.insert((r.clone(), platforms_key(p))) {
            wanted.push((r.clone(), p.clone()));
        }
    };
    let mut targets: Vec<Target> = Vec::new();
    for src in &sources {
        let entry = &spec.entries[src.entry];
        let platforms = entry
            .platforms
            .clone()
            .or(spec.settings.platforms.clone())
            .unwrap_or(PlatformSelection::Default);
        let pinned = match (&ctx.pinned, &src.reference) {
            (Some(_), Reference::Registry(r)) => r.digest.clone(),
            _ => None,
        };
        for dest in &entry.to {
            if dest.uses("platform") {
                // One target per platform: resolve now to learn them.
                let key = (src.reference.clone(), platforms.clone());
                let resolved = resolve_one(ctx, &key.0, &key.1).await;
                let plats: Vec<_> = match &resolved {
                    Ok(r) => r
                        .images
                        .iter()
                        .map(|i| i.platform.as_deref().cloned().unwrap_or_else(|| platform_of(i)))
                        .collect(),
                    Err(e) => {
                        failed.push(failed_target(&spec, src.entry, src.reference.to_string(), e));
                        continue;
                    }
                };
                for p in plats {
                    let mut fields = src.fields.clone();
                    fields.platform = p.to_string();
                    let sel = PlatformSelection::List(vec![p]);
                    targets.push(make_target(&spec, src, &fields, dest, sel.clone(), pinned.clone())?);
                    want(&src.reference, &sel);
                }
                continue;
            }
            targets.push(make_target(
                &spec,
                src,
                &src.fields,
                dest,
                platforms.clone(),
                pinned.clone(),
            )?);
            want(&src.reference, &platforms);
        }
    }
    // What a plan of 10,000 targets holds while it builds the graph is
    // mostly per target: what only led to the targets goes now.
    drop((sources, wanted_keys));
    if !ctx.only.is_empty() {
        targets.retain(|t| {
            let s = archive::shown_source(&t.source).unwrap_or_else(|| t.source.to_string());
            let d = t.destination.to_string();
            ctx.only.iter().any(|m| {
                m.is_match(&s)
                    || m.is_match(&d)
                    || m.is_match(s.split_once("://").map(|x| x.1).unwrap_or(&s))
                    || m.is_match(d.split_once("://").map(|x| x.1).unwrap_or(&d))
            })
        });
    }
    check_clashes(&spec, &targets)?;

    let mut planned = failed;
    let mut sharded = None;
    let mut pull_quotas = Vec::new();
    if ctx.write_all {
        // Every target is written: resolved, not compared. One image that
        // cannot be read is the command's error (with its exit code); of
        // several, it is that target's failure and the rest go on.
        let single = targets.len() == 1;
        for t in targets {
            let mut p = planned_target(t);
            match resolve_for_writing(ctx, &p.target).await {
                Ok(resolved) => {
                    compress_for_registry(&mut p.target, &resolved);
                    p.source_digest = resolved.root().map(|r| r.digest.clone());
                    p.platforms = resolved.images.len();
                    match for_destination(&mut p, resolved) {
                        Ok(resolved) => {
                            let tt = &p.target;
                            if !tt.chain.changes_content() {
                                p.expected =
                                    expected_digest(&resolved, &tt.platforms, kind::of(&tt.destination).keeps_index)
                                        .ok();
                            }
                            p.resolved = Some(resolved);
                        }
                        Err(e) if single => return Err(e),
                        Err(e) => p.action = Action::Failed { error: e.to_string() },
                    }
                }
                Err(e) if single => return Err(e),
                Err(e) => {
                    p.action = Action::Failed { error: e.to_string() };
                }
            }
            planned.push(p);
        }
        planned.sort_by_key(|t| t.entry);
    } else {
        // `--shard I/N`: this shard's targets before any other is resolved
        // (by the saved plan's assignment, or by repository).
        let mut sharding = ctx.sharding;
        let mut own_info = None;
        let mut probes = Resolutions::new();
        if let Some(shard::Sharding::Run(s)) = sharding.filter(|_| shard::early(ctx)) {
            let own = shard::own_share(ctx, s, targets, std::mem::take(&mut planned)).await;
            (targets, planned, probes, own_info) = (own.targets, own.failed, own.resolved, Some(own.info));
            sharding = None;
        }
        memo::list_destination_tags(ctx, &targets).await;
        // Unsharded, a target already in place is found with one request on
        // each side and is not resolved further.
        let all = targets.clone();
        let targets = if sharding.is_none() {
            let (unchanged, rest) = quick::split_unchanged(ctx, targets).await;
            planned.extend(unchanged);
            rest
        } else {
            targets
        };
        // Before the first manifest GET: stop when a source registry's
        // pull quota cannot cover them.
        pull_quotas = quota::gate(ctx, &all, &targets).await?;
        wanted.retain(|(r, p)| !probes.contains_key(&(r.to_string(), platforms_key(p))));
        let mut resolutions = resolve_all(ctx, &targets, &wanted).await;
        resolutions.extend(probes);
        // Sharded: only this shard's targets are diffed, counted and applied.
        let selected = shard::select(sharding, targets, planned, &resolutions);
        planned = selected.failed;
        planned.extend(diff_all(ctx, selected.targets, &resolutions).await);
        planned.sort_by_key(|t| t.entry);
        sharded = Some((own_info.or(selected.info), selected.assignment));
    }
    drop(wanted);
    // `verify:`: an image without a valid signature is not planned.
    verify::check_targets(ctx, &mut planned).await;
    archive::check_bases(ctx, &mut planned).await;
    referrers::plan(ctx, &mut planned, &mut warnings).await;
    let mut work = graph::build(ctx, &planned).await;
    for (i, t) in planned.iter_mut().enumerate() {
        t.blobs = work.counts_for(i);
    }
    let (shard_info, assignment) = sharded.unwrap_or_default();

    let mut docker_kept = Vec::new();
    for t in &planned {
        if t.action.writes() && t.media == MediaNote::DockerKept {
            docker_kept.push(t.destination.clone());
        }
        if t.action.writes() {
            if let (Some(src), Some(exp)) = (&t.source_digest, &t.expected) {
                // One platform taken from an index is written as its
                // upstream manifest: no digest is made up.
                let upstream_manifest = t.media != MediaNote::Converted
                    && !t.target.chain.changes_content()
                    && t.resolved
                        .as_ref()
                        .is_some_and(|r| r.images.iter().any(|i| &i.raw_manifest.digest == exp));
                // A manifest occy made up has no upstream digest to keep.
                let made_up = t.resolved.as_ref().is_some_and(|r| r.synthesised) && !t.target.chain.changes_content();
                if src != exp && !upstream_manifest && !made_up {
                    let why = if t.target.chain_name.as_deref() == Some(COMPRESSING) {
                        "its uncompressed layers are compressed for the registry"
                    } else if t.target.chain.changes_content() {
                        "filters rewrite it"
                    } else if t.media == MediaNote::Converted {
                        "?format=oci converts its Docker v2 manifests to OCI media types"
                    } else {
                        "a subset of its platforms is taken"
                    };
                    warnings.push(format!(
                        "{} will hold {exp}, not the upstream {src}: {why}",
                        t.destination
                    ));
                }
            }
        }
    }

    if let Some(first) = docker_kept.first() {
        let named = match docker_kept.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more OCI-layout destinations)", n - 1),
        };
        warnings.push(docker_kept_warning(&named));
    }

    let mut destinations: BTreeMap<String, DestinationTotals> = BTreeMap::new();
    let mut totals = Totals::default();
    let mut requests: BTreeMap<String, u64> = BTreeMap::new();
    for t in &planned {
        totals.targets += 1;
        match &t.action {
            Action::Create => totals.create += 1,
            Action::Update => totals.update += 1,
            Action::Unchanged => totals.unchanged += 1,
            Action::Rebuild { .. } => totals.rebuild += 1,
            Action::Failed { .. } => totals.failed += 1,
        }
        totals.blobs.add(&t.blobs);
        let dkey = match &t.target.destination {
            Reference::Registry(r) => format!("registry://{}", r.host),
            other => other.to_string(),
        };
        let d = destinations.entry(dkey.clone()).or_insert_with(|| DestinationTotals {
            destination: dkey,
            ..Default::default()
        });
        if t.action.writes() {
            d.targets += 1;
        }
        d.blobs.add(&t.blobs);
        estimate_requests(t, &mut requests);
    }
    let prune = if ctx.prune {
        prune::find(ctx, &planned, &mut warnings).await
    } else {
        Vec::new()
    };
    totals.prune = prune.len();
    graph::add_prunes(&mut work, &prune);
    for p in &prune {
        // A DELETE, and a HEAD when the registry deletes only by digest.
        *requests.entry(p.host.clone()).or_default() += 2;
    }
    let shards = assignment.as_ref().map(|a| shard::saved(a, &planned));
    Ok(Plan {
        plan_version: PLAN_VERSION,
        archives: archive::notes(&planned),
        stores: work.store_totals(),
        shared: work.shared_lines(),
        graph: work,
        sync_file: spec.source.name.clone(),
        sync_file_sha256: spec.hash.clone(),
        targets: planned,
        destinations: destinations.into_values().collect(),
        totals,
        requests,
        prune,
        pull_quotas,
        warnings,
        shard: shard_info,
        shards,
        assignment,
    })
}

fn platform_of(i: &crate::image::ImageData) -> crate::image::Platform {
    crate::image::Platform {
        os: i.config.parsed.os.clone(),
        architecture: i.config.parsed.architecture.clone(),
        variant: i.config.parsed.variant.clone(),
        os_version: None,
        os_features: None,
    }
}

/// dir:// without unique_names shares layer files by name; many images there
/// may overwrite each other's layers.
fn warn_dir_overwrites(spec: &SyncSpec, entry: usize, images: usize, warnings: &mut Vec<String>) {
    if images < 2 {
        return;
    }
    for d in &spec.entries[entry].to {
        if let Ok(Reference::Dir {
            unique_names: false,
            expand: false,
            ..
        }) = Reference::parse(&d.render(&TemplateFields::default()))
        {
            warnings.push(format!(
                "sync[{entry}]: {} gets {images} images without unique_names=true: layers with the same file name overwrite each other",
                d.text
            ));
        }
    }
}

fn make_target(
    spec: &SyncSpec,
    src: &SourceImage,
    fields: &TemplateFields,
    dest: &crate::spec::DestTemplate,
    platforms: PlatformSelection,
    pinned: Option<Digest>,
) -> Result<Target> {
    let entry = &spec.entries[src.entry];
    let text = dest.render(fields);
    let destination = Reference::parse(&text).map_err(|e| {
        spec.source.error(SpecProblem::new(
            format!("for {}, the destination becomes {text:?}: {e}", src.reference),
            dest.span.clone(),
            "this template",
        ))
    })?;
    let name = image_name(src);
    let destination = crate::spec::validate::rebase(&destination, &spec.base_dir);
    // Spell out the tag a destination keeps from its source.
    let destination = match destination {
        Reference::Registry(mut r) if r.tag.is_none() && r.digest.is_none() => {
            r.tag = Some(name.tag.clone());
            Reference::Registry(r)
        }
        Reference::Oci {
            path,
            tag: None,
            oci_format,
        } => Reference::Oci {
            path,
            tag: Some(name.tag.clone()),
            oci_format,
        },
        other => other,
    };
    Ok(Target {
        entry: src.entry,
        source: src.reference.clone(),
        destination,
        name,
        chain: entry.chain.clone(),
        chain_name: entry.chain_name.clone(),
        platforms,
        dest_span: dest.span.clone(),
        pinned,
    })
}

/// Two targets writing the same place is a sync-file error, pointed at both.
fn check_clashes(spec: &SyncSpec, targets: &[Target]) -> Result<()> {
    let mut seen: HashMap<String, &Target> = HashMap::new();
    for t in targets {
        let key = destination_key(&t.destination, &t.name);
        if let Some(first) = seen.get(&key) {
            if first.source == t.source && first.dest_span == t.dest_span {
                continue;
            }
            let mut p = SpecProblem::new(
                format!("two targets write {key}: {} and {}", first.source, t.source),
                t.dest_span.clone(),
                "writes it again",
            )
            .help("give each its own destination, e.g. with {repo}, {name} or {tag} in the template");
            if first.dest_span != t.dest_span {
                p = p.also(first.dest_span.clone(), "first written here");
            }
            return Err(spec.source.error(p));
        }
        seen.insert(key, t);
    }
    Ok(())
}

fn pinned_sources(ctx: &PlanContext, saved: &SavedPlan) -> Result<Vec<SourceImage>> {
    let mut out: Vec<SourceImage> = Vec::new();
    let mut seen: HashSet<(Reference, usize)> = HashSet::new();
    for t in &saved.targets {
        if t.entry >= ctx.spec.entries.len() {
            return Err(Error::usage(format!(
                "the plan names sync[{}], which the sync file does not have",
                t.entry
            )));
        }
        let mut reference = Reference::parse(&t.source)?;
        let fields = match &mut reference {
            Reference::Registry(r) => {
                let f = expand::registry_fields(r);
                if let Some(d) = &t.source_digest {
                    r.digest = Some(d.clone());
                }
                f
            }
            other => {
                let name = other.image_name();
                TemplateFields {
                    registry: String::new(),
                    name: name.rsplit('/').next().unwrap_or(&name).to_string(),
                    repo: name.clone(),
                    tag: other.tag().unwrap_or("latest").to_string(),
                    platform: String::new(),
                }
            }
        };
        if seen.insert((reference.clone(), t.entry)) {
            out.push(SourceImage {
                entry: t.entry,
                reference,
                fields,
            });
        }
    }
    Ok(out)
}

fn failed_target(spec: &SyncSpec, entry: usize, source: String, error: &Error) -> PlannedTarget {
    let e = &spec.entries[entry];
    let destination = e.to.iter().map(|d| d.text.clone()).collect::<Vec<_>>().join(", ");
    PlannedTarget {
        entry,
        source: source.clone(),
        destination: destination.clone(),
        name: source.clone(),
        filters: e.chain_name.clone(),
        source_digest: None,
        platforms: 0,
        expected: None,
        current: None,
        action: Action::Failed {
            error: error.to_string(),
        },
        blobs: BlobCounts::default(),
        target: Target {
            entry,
            source: e.from.clone(),
            destination: e.from.clone(),
            name: ImageName::parse(&source),
            chain: e.chain.clone(),
            chain_name: e.chain_name.clone(),
            platforms: PlatformSelection::Default,
            dest_span: e.to.first().map(|d| d.span.clone()).unwrap_or_default(),
            pinned: None,
        },
        resolved: None,
        media: MediaNote::None,
        referrers: None,
        verification: None,
    }
}

/// The name a target's chain gets when occy compresses its layers for a
/// registry (see [`compress_for_registry`]).
pub const COMPRESSING: &str = "compress";

/// Layers that arrive uncompressed (from a docker-save archive, a
/// directory or a daemon) are compressed for a registry, as skopeo does:
/// the target's chain becomes `recompress` to `--compression` (or
/// `defaults.compression`; gzip when neither says), so the layers are
/// compressed once, block-parallel, remembered in the layer cache, and a
/// second run finds the output without compressing again. A target with
/// filters of its own writes its rewritten layers gzip-compressed unless
/// `--compression` says otherwise; one whose layers are not all plain tar is
/// left as it is; `--compression none` keeps them uncompressed.
fn compress_for_registry(t: &mut Target, resolved: &ResolvedImage) {
    if !matches!(t.destination, Reference::Registry(_)) {
        return;
    }
    let plain = |mt: &str| crate::image::Compression::from_media_type(mt) == Some(crate::image::Compression::None);
    let all_plain = resolved
        .images
        .iter()
        .all(|i| !i.manifest.layers.is_empty() && i.manifest.layers.iter().all(|l| plain(&l.media_type)));
    if !t.chain.is_empty() {
        // Filters of its own rewrite the layers anyway: their output is
        // compressed (gzip unless --compression says), not left plain.
        if all_plain && t.chain.changes_content() && t.chain.compression.is_none() {
            t.chain.compression = Some(crate::image::Compression::Gzip);
        }
        return;
    }
    let format = t.chain.compression.unwrap_or(crate::image::Compression::Gzip);
    if !all_plain || format == crate::image::Compression::None {
        return;
    }
    t.chain
        .filters
        .push(crate::filter::FilterSpec::Recompress { format, level: None });
    t.chain_name = Some(COMPRESSING.to_string());
}

/// Why a filtered target is rebuilt.
fn rebuild_reason(t: &Target) -> String {
    let first = "the output digest is known after the first run";
    if t.chain_name.as_deref() == Some(COMPRESSING) {
        let c = t.chain.output_compression(crate::image::Compression::None).0;
        format!(
            "its uncompressed layers are compressed ({}) for the registry; {first}",
            c.as_str()
        )
    } else {
        format!("filters rewrite the layers; {first}")
    }
}

/// Resolves a target that a one-shot command writes, and checks that the
/// destination can hold what it selects.
async fn resolve_for_writing(ctx: &PlanContext, t: &Target) -> Result<Arc<ResolvedImage>> {
    let resolved = resolve_reading(ctx, &t.source, &t.platforms, Configs::Load).await?;
    check_fits(
        &resolved,
        &t.platforms,
        kind::of(&t.destination).keeps_index,
        &t.destination.to_string(),
        &t.source.to_string(),
    )?;
    Ok(Arc::new(resolved))
}

async fn resolve_one(ctx: &PlanContext, r: &Reference, p: &PlatformSelection) -> Result<ResolvedImage> {
    resolve_reading(ctx, r, p, Configs::Load).await
}

/// Resolves `r`, starting from its root manifest when planning has read it.
async fn resolve_reading(
    ctx: &PlanContext,
    r: &Reference,
    p: &PlatformSelection,
    configs: Configs,
) -> Result<ResolvedImage> {
    let source = ctx.memo.open_source(r, &ctx.source_options(r)).await?;
    resolve_with(source.as_ref(), ctx.memo.root(r), p, configs).await
}

/// Whether planning `t` needs its images' configs: diff_ids for archives and
/// directories, the image ID for a daemon, the layers a chain rewrites
/// (compressing a local source's plain layers for a registry is one). An
/// unfiltered copy from a registry or OCI layout to a registry or OCI layout
/// needs only the manifests.
fn needs_configs(t: &Target) -> bool {
    let remote_or_layout = |r: &Reference| matches!(r, Reference::Registry(_) | Reference::Oci { .. });
    !t.chain.is_empty() || !remote_or_layout(&t.destination) || !remote_or_layout(&t.source)
}

/// The digest an OCI layout's tag names now.
fn oci_layout_tag(path: &std::path::Path, tag: &str) -> Option<Digest> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<crate::image::Descriptor>,
    }
    let bytes = std::fs::read(path.join("index.json")).ok()?;
    let index: Index = serde_json::from_slice(&bytes).ok()?;
    index
        .manifests
        .into_iter()
        .find(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(crate::source::oci_layout::REF_NAME))
                .is_some_and(|n| n == tag)
        })
        .map(|d| d.digest)
}

/// Compares one target's destination with what the plan would write.
/// A target not yet resolved nor compared: to be created.
fn planned_target(t: Target) -> PlannedTarget {
    PlannedTarget {
        entry: t.entry,
        source: archive::shown_source(&t.source).unwrap_or_else(|| t.source.to_string()),
        destination: t.destination.to_string(),
        name: t.name.to_string(),
        filters: t.chain_name.clone(),
        source_digest: None,
        platforms: 0,
        expected: None,
        current: None,
        action: Action::Create,
        blobs: BlobCounts::default(),
        target: t,
        resolved: None,
        media: MediaNote::None,
        referrers: None,
        verification: None,
    }
}

/// Resolves each distinct (source, platforms) of the targets once, then
/// compares every target with its destination.
/// Each (source, platforms) the targets read, resolved once.
type Resolutions = HashMap<(String, String), std::result::Result<Arc<ResolvedImage>, String>>;

/// Resolves every (source, platforms) some target reads.
async fn resolve_all(ctx: &PlanContext, targets: &[Target], wanted: &[(Reference, PlatformSelection)]) -> Resolutions {
    // (source, platforms) → whether some target reading it needs its configs.
    let mut read: HashMap<(&Reference, String), bool> = HashMap::new();
    for t in targets {
        *read.entry((&t.source, platforms_key(&t.platforms))).or_default() |= needs_configs(t);
    }
    stream::iter(
        wanted
            .iter()
            .filter_map(|(r, p)| read.get(&(r, platforms_key(p))).map(|&configs| (r, p, configs))),
    )
    .map(|(r, p, configs)| async move {
        let key = (r.to_string(), platforms_key(p));
        let configs = if configs { Configs::Load } else { Configs::Skip };
        (
            key,
            resolve_reading(ctx, r, p, configs)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        )
    })
    .buffer_unordered(PLAN_CONCURRENCY)
    .collect()
    .await
}

/// Compares each target's destination with what its resolved source gives.
async fn diff_all(ctx: &PlanContext, targets: Vec<Target>, resolutions: &Resolutions) -> Vec<PlannedTarget> {
    concurrently_in_order(targets, |t| {
        let key = (t.source.to_string(), platforms_key(&t.platforms));
        let resolved = resolutions.get(&key).cloned();
        diff_target(ctx, t, resolved)
    })
    .await
}

/// The digest a registry or OCI-layout destination's tag names now (one
/// HEAD, or a read of index.json); None for other destinations.
async fn tagged_digest(ctx: &PlanContext, t: &Target) -> Result<Option<Digest>> {
    match &t.destination {
        Reference::Registry(r) => {
            let reference = r
                .digest
                .as_ref()
                .map(|d| d.to_string())
                .or(r.tag.clone())
                .unwrap_or_else(|| t.name.tag.clone());
            if r.digest.is_none() && ctx.memo.tag_missing(&r.host, &r.repository, &reference) {
                return Ok(None);
            }
            let key = format!("{}/{}:{reference}", r.host, r.repository);
            if let Some(known) = ctx.memo.head(&key) {
                return Ok(known);
            }
            let digest = ctx
                .client(&r.host)?
                .head_manifest(&r.repository, &reference)
                .await
                .map(|d| d.map(|d| d.digest))?;
            ctx.memo.remember_head(&key, &digest);
            Ok(digest)
        }
        Reference::Oci { path, tag, .. } => Ok(oci_layout_tag(path, tag.as_deref().unwrap_or(&t.name.tag))),
        Reference::Archive { path, full, .. } => archive::current(path, &t.name, *full).await,
        _ => Ok(None),
    }
}

async fn diff_target(
    ctx: &PlanContext,
    t: Target,
    resolved: Option<std::result::Result<Arc<ResolvedImage>, String>>,
) -> PlannedTarget {
    let mut p = planned_target(t);
    let resolved = match resolved {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            p.action = Action::Failed { error: e };
            return p;
        }
        None => {
            p.action = Action::Failed {
                error: "the source was not resolved".into(),
            };
            return p;
        }
    };
    compress_for_registry(&mut p.target, &resolved);
    let t = &p.target;
    let source_digest = resolved.root().map(|r| r.digest.clone());
    if let (Some(pin), Some(got)) = (&t.pinned, &source_digest) {
        if pin != got {
            p.action = Action::Failed {
                error: format!("the source changed since the plan: it names {got}, the plan pinned {pin}"),
            };
            return p;
        }
    }
    p.source_digest = source_digest.clone();
    p.platforms = resolved.images.len();
    let supports_index = kind::of(&t.destination).keeps_index;
    if let Err(e) = check_fits(
        &resolved,
        &t.platforms,
        supports_index,
        &t.destination.to_string(),
        &t.source.to_string(),
    ) {
        p.action = Action::Failed { error: e.to_string() };
        return p;
    }
    let resolved = match for_destination(&mut p, resolved) {
        Ok(r) => r,
        Err(e) => {
            p.action = Action::Failed { error: e.to_string() };
            return p;
        }
    };
    let t = &p.target;
    let filtered = t.chain.changes_content();
    let output_key = source_digest.as_ref().map(|d| output_key(t, d));
    p.expected = if filtered {
        match (&ctx.cache, &output_key) {
            (Some(c), Some(k)) => c.output(k),
            _ => None,
        }
    } else {
        expected_digest(&resolved, &t.platforms, supports_index).ok()
    };
    let current: Result<Option<Digest>> = match (kind::of(&t.destination).current, &t.destination) {
        (CurrentDigest::Tagged, _) => tagged_digest(ctx, t).await,
        (CurrentDigest::DaemonImageId, Reference::Docker { name, tag, socket, .. }) => {
            // A daemon knows an image by its ID, the config digest, which
            // a copy without filters keeps; a filtered one is rebuilt.
            p.expected = match (filtered, resolved.images.as_slice()) {
                (false, [one]) => Some(one.manifest.config.digest.clone()),
                _ => None,
            };
            match DaemonConnection::open(socket.as_deref()).await {
                Ok(conn) => conn.image_id(name, tag.as_deref().unwrap_or("latest")).await,
                Err(e) => Err(e),
            }
        }
        (_, dest) => {
            // File destinations: the record beside them.
            let record = state::state_path(dest, &t.name).and_then(|s| state::read(&s));
            let current = record.as_ref().map(|r| r.output.clone());
            let same = record.as_ref().is_some_and(|r| {
                Some(&r.source_digest) == source_digest.as_ref()
                    && r.chain == chain_record(&t.chain)
                    && r.platforms == platforms_key(&t.platforms)
            }) && state::output_exists(dest);
            p.current = current.filter(|_| state::output_exists(dest));
            if same {
                p.expected = p.current.clone();
                p.action = Action::Unchanged;
            } else if p.current.is_some() {
                p.action = Action::Update;
            } else {
                p.action = Action::Create;
            }
            if filtered && p.action != Action::Unchanged && p.expected.is_none() {
                p.action = Action::Rebuild {
                    reason: rebuild_reason(&p.target),
                };
            }
            p.resolved = Some(resolved);
            return p;
        }
    };
    match current {
        Err(e) => {
            p.action = Action::Failed {
                error: format!("cannot read the destination {}: {e}", t.destination),
            };
            return p;
        }
        Ok(c) => p.current = c,
    }
    p.action = match (&p.expected, &p.current) {
        (Some(e), Some(c)) if e == c => Action::Unchanged,
        (None, _) if kind::of(&t.destination).current == CurrentDigest::DaemonImageId => Action::Rebuild {
            reason: "filters rewrite the layers; a daemon's image is compared only for copies without filters".into(),
        },
        (None, _) => Action::Rebuild {
            reason: rebuild_reason(&p.target),
        },
        (Some(_), None) => Action::Create,
        (Some(_), Some(_)) => Action::Update,
    };
    p.resolved = Some(resolved);
    p
}

/// How a chain is recorded in state files (empty without filters).
pub fn chain_record(chain: &FilterChain) -> String {
    if chain.is_empty() {
        String::new()
    } else {
        chain.hash()
    }
}

/// Adds the requests applying `t` takes, per registry host.
fn estimate_requests(t: &PlannedTarget, requests: &mut BTreeMap<String, u64>) {
    if !t.action.writes() {
        return;
    }
    if let Reference::Registry(s) = &t.target.source {
        // Index + platform manifests + configs + each blob fetched.
        let n = 1 + 2 * t.platforms as u64 + t.blobs.upload as u64;
        *requests.entry(s.host.clone()).or_default() += n;
    }
    if let Reference::Registry(d) = &t.target.destination {
        let b = &t.blobs;
        // HEAD each blob; a mount is one POST; an upload POST + PATCH + PUT;
        // one PUT per manifest (and the index).
        let n = (b.upload + b.mount + b.present) as u64 + b.mount as u64 + 3 * b.upload as u64 + t.platforms as u64 + 1;
        *requests.entry(d.host.clone()).or_default() += n;
    }
    // Referrers: each blob read and sent (POST + PUT), each manifest PUT,
    // and a GET + PUT of the referrers tag per subject where it is kept.
    if let Some(r) = &t.referrers {
        let blobs: u64 = r.copy.iter().map(|c| c.blobs.len() as u64).sum();
        if let Reference::Registry(s) = &t.target.source {
            *requests.entry(s.host.clone()).or_default() += blobs;
        }
        if let Reference::Registry(d) = &t.target.destination {
            let subjects: std::collections::HashSet<&Digest> =
                r.copy.iter().filter(|c| c.tag.is_none()).map(|c| &c.subject).collect();
            let tags = if r.fallback_tag { 2 * subjects.len() as u64 } else { 0 };
            *requests.entry(d.host.clone()).or_default() += 2 * blobs + r.copy.len() as u64 + tags;
        }
    }
}

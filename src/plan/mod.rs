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
mod quick;
pub mod quota;
pub mod referrers;
pub mod render;
pub mod shard;
#[cfg(test)]
mod store_tests;
/// occy's record of a write beside a file output lives with the stores.
pub use crate::sink::state;
pub mod verify;

mod diff;
mod model;
mod resolve;

use diff::*;
pub use model::*;
use resolve::*;

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
use crate::registry::RegistryOptions;
use crate::sink::kind;
use crate::sink::store::{self, Capabilities, Current, Store, StoreId, StoreOptions};
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
    /// The plan is only shown (`--plan`), never applied: once a target's
    /// nodes are in the graph, what only applying reads (its resolved
    /// manifests) is let go, so a plan of 100,000 targets does not hold
    /// them all at once.
    pub shown_only: bool,
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

    /// The store `dest` names, opened once per plan through its kind's
    /// registration (`sink::kind`), with the registry settings of its host.
    pub fn store(&self, dest: &Reference) -> Result<Arc<dyn Store>> {
        self.memo.store(dest, || {
            let host = StoreId::of(dest).host().map(str::to_string).unwrap_or_default();
            store::open(
                dest,
                &StoreOptions {
                    registry: self.registry_options(&host),
                },
            )
        })
    }

    /// What the store `dest` names can do (as its kind answers when it
    /// cannot be opened).
    pub fn capabilities(&self, dest: &Reference) -> Capabilities {
        self.store(dest)
            .map(|s| s.capabilities())
            .unwrap_or_else(|_| store::capabilities(dest))
    }

    /// Source settings for reading `reference`.
    pub fn source_options(&self, reference: &Reference) -> SourceOptions {
        SourceOptions {
            registry: self.registry_options(reference.as_registry().map(|r| r.host.as_str()).unwrap_or("")),
        }
    }
}

impl RegistryAccess for PlanContext {
    fn registry_options(&self, host: &str) -> RegistryOptions {
        PlanContext::registry_options(self, host)
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
            .find(|(h, _)| h.as_str() == "quay.io" || h.as_str() == crate::source::quay::registry_host())
            .and_then(|(_, a)| a.token.clone())
    }
}

/// The name a destination records for a source image.
fn image_name(src: &SourceImage) -> ImageName {
    ImageName {
        repository: src
            .reference
            .as_registry()
            .map(|r| r.name())
            .unwrap_or_else(|| src.fields.repo.clone()),
        tag: src.fields.tag.clone(),
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
    let items = items.into_iter();
    // Room for every answer up front: a plan of 100,000 targets would
    // otherwise hold the old and the doubled array at once.
    let mut out: Vec<(usize, T)> = Vec::with_capacity(items.size_hint().0);
    let mut answers = stream::iter(items.enumerate())
        .map(|(i, item)| {
            let fut = f(item);
            async move { (i, fut.await) }
        })
        .buffer_unordered(PLAN_CONCURRENCY);
    while let Some(answer) = answers.next().await {
        out.push(answer);
    }
    drop(answers);
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

/// Builds the plan: expands, resolves and diffs every target.
pub async fn build(ctx: &PlanContext) -> Result<Plan> {
    if ctx.shown_only {
        large_blocks_from_the_system();
    }
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

    // Each source is let go once its targets are made (their strings are
    // the same size: a plan of 100,000 would hold both sets at once).
    let mut targets: Vec<Target> = Vec::with_capacity(sources.len());
    for src in sources {
        let src = &src;
        let entry = &spec.entries[src.entry];
        let platforms = entry
            .platforms
            .clone()
            .or(spec.settings.platforms.clone())
            .unwrap_or(PlatformSelection::Default);
        let pinned = ctx
            .pinned
            .as_ref()
            .and_then(|_| src.reference.as_registry())
            .and_then(|r| r.digest.clone());
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
                    targets.push(make_target(&spec, src, &fields, dest, sel, pinned.clone())?);
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
        }
    }
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
    check_clashes(ctx, &spec, &targets)?;

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
                    let caps = ctx.capabilities(&p.target.destination);
                    compress_for_store(&mut p.target, &resolved, &caps);
                    p.source_digest = resolved.root().map(|r| r.digest.clone());
                    p.platforms = resolved.images.len();
                    match for_destination(&mut p, resolved, caps.media_types) {
                        Ok(resolved) => {
                            let tt = &p.target;
                            if !tt.chain.changes_content() {
                                p.expected = expected_digest(&resolved, &tt.platforms, caps.keeps_index).ok();
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
        sort_by_entry(&mut planned);
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
        drop(all);
        // Each distinct (source, platforms) of the targets left, resolved
        // once (a pod's, not every target's: listed only now).
        let reads = resolve::distinct_reads(&targets, &probes);
        let keep_bytes = resolve::keeps_manifest_bytes(ctx, &targets);
        let mut resolutions = resolve_all(ctx, &targets, &reads, keep_bytes).await;
        drop(reads);
        resolutions.extend(probes);
        // Sharded: only this shard's targets are diffed, counted and applied.
        let selected = shard::select(sharding, targets, planned, &resolutions);
        // (The failed ones go in front of the compared: a plan of 100,000
        // targets would hold two arrays of them if the compared were
        // copied into another.)
        let failed = selected.failed;
        planned = diff_all(ctx, selected.targets, &resolutions).await;
        planned.splice(0..0, failed);
        sort_by_entry(&mut planned);
        sharded = Some((own_info.or(selected.info), selected.assignment));
    }
    // A plan that is only shown lets go of what it read once its targets
    // are compared (an archive's note counts its manifests' bytes).
    let let_go = ctx.shown_only && !archive::writes_archive(&planned);
    if let_go {
        drop_manifest_bytes(&mut planned);
        crate::registry::RegistryClient::forget_manifests();
        give_back_freed_memory();
    }
    // `verify:`: an image without a valid signature is not planned.
    verify::check_targets(ctx, &mut planned).await;
    archive::check_bases(ctx, &mut planned).await;
    referrers::plan(ctx, &mut planned, &mut warnings).await;
    // The warnings read the resolved manifests, which a shown plan lets go
    // of while its graph is built.
    let mut docker_kept = Vec::new();
    for t in &planned {
        if t.action.writes() && t.media == MediaNote::DockerKept {
            docker_kept.push(t.destination().into_owned());
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
                    let why = if t.target.compressed_for_store {
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
                        t.destination()
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

    // (The referrers planner's lookups are gone too: their holes go back
    // before the graph's arrays are filled.)
    if let_go {
        give_back_freed_memory();
    }
    let mut work = graph::build(ctx, &mut planned, let_go).await;
    for (i, t) in planned.iter_mut().enumerate() {
        t.blobs = work.counts_for(i);
    }
    let (shard_info, assignment) = sharded.unwrap_or_default();

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
        let dkey = StoreId::place_of(&t.target.destination).to_string();
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

/// A plan that is only shown reads no manifest's bytes once its targets are
/// compared: the graph needs their digests and sizes. Each resolution is
/// stripped once, in place when one target holds it.
fn drop_manifest_bytes(planned: &mut [PlannedTarget]) {
    type Shared = HashMap<*const ResolvedImage, (Arc<ResolvedImage>, Arc<ResolvedImage>)>;
    // (The originals are kept until the end, so no address is reused.)
    let mut stripped: Shared = HashMap::new();
    for t in planned {
        let Some(r) = t.resolved.as_mut() else { continue };
        if let Some(only) = Arc::get_mut(r) {
            only.drop_manifest_bytes();
            continue;
        }
        let (_, slim) = stripped.entry(Arc::as_ptr(r)).or_insert_with(|| {
            let mut slim = ResolvedImage::clone(r);
            slim.drop_manifest_bytes();
            (Arc::clone(r), Arc::new(slim))
        });
        *r = Arc::clone(slim);
    }
}

/// Makes every large block (128 KiB and up: glibc's own starting point) a
/// mapping of its own, returned to the system when freed. By default glibc
/// raises that bound to the size of each large block freed, so the tag
/// lists, growing tables and vectors a plan frees along the way are carved
/// from the heap afterwards, and their holes, among the small blocks a plan
/// keeps to its end, stay resident (a shown plan of 100,000 targets: 397
/// MiB peak, 381 with this). Only for plans that are only shown: an apply
/// that frees large buffers over and over is better served by the heap.
fn large_blocks_from_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a setting of the allocator; it takes no
    // pointer and is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Hands the pages of what was freed back to the system: the manifests a
/// plan let go of are small blocks among the ones it keeps, and the graph
/// it builds next wants large arrays that such holes cannot hold (a plan of
/// 100,000 targets would otherwise keep both).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // arenas to the system; it takes no pointer and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
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
    let destination = destination.with_default_tag(&name.tag);
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
        compressed_for_store: false,
    })
}

/// Two targets writing the same place is a sync-file error, pointed at both.
fn check_clashes(ctx: &PlanContext, spec: &SyncSpec, targets: &[Target]) -> Result<()> {
    use std::hash::BuildHasher;
    // The places by their hash, a hash met twice compared in full (a plan
    // of 100,000 targets held every place's text at once, 11 MB, in each
    // pod too); places whose hashes collide are kept by their text.
    let hasher = std::hash::RandomState::new();
    let mut seen: HashMap<u64, &Target> = HashMap::with_capacity(targets.len());
    let mut collided: HashMap<String, &Target> = HashMap::new();
    for t in targets {
        let key = ctx.store(&t.destination)?.written_place(&t.name);
        let first = match seen.entry(hasher.hash_one(&key)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(t);
                continue;
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let first = *o.get();
                if ctx.store(&first.destination)?.written_place(&first.name) == key {
                    Some(first)
                } else {
                    collided.get(&key).copied()
                }
            }
        };
        if let Some(first) = first {
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
        collided.insert(key, t);
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
        let fields = if let Some(r) = reference.as_registry_mut() {
            let f = expand::registry_fields(r);
            if let Some(d) = &t.source_digest {
                r.digest = Some(d.clone());
            }
            f
        } else {
            let name = reference.image_name();
            TemplateFields {
                registry: String::new(),
                name: name.rsplit('/').next().unwrap_or(&name).to_string(),
                repo: name.clone(),
                tag: reference.tag().unwrap_or("latest").to_string(),
                platform: String::new(),
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
            compressed_for_store: false,
        },
        resolved: None,
        media: MediaNote::None,
        referrers: None,
        verification: None,
        shown: Some(Box::new(Shown {
            source: source.clone(),
            destination,
            name: source,
        })),
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
        // HEAD each blob; a mount is one POST (a remembered one too, if the
        // registry takes it); an upload POST + PATCH + PUT; one PUT per
        // manifest (and the index).
        let mounts = (b.mount + b.remembered) as u64;
        let n = (b.upload + b.present) as u64 + 2 * mounts + 3 * b.upload as u64 + t.platforms as u64 + 1;
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

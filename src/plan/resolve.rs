//! Resolving sources: each (source, platforms) read once, through the plan
//! memo, to the platform images the targets need.

use super::*;

/// Resolves a target that a one-shot command writes, and checks that the
/// destination can hold what it selects.
pub(super) async fn resolve_for_writing(ctx: &PlanContext, t: &Target) -> Result<Arc<ResolvedImage>> {
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

pub(super) async fn resolve_one(ctx: &PlanContext, r: &Reference, p: &PlatformSelection) -> Result<ResolvedImage> {
    resolve_reading(ctx, r, p, Configs::Load).await
}

/// Resolves `r`, starting from its root manifest when planning has read it.
pub(super) async fn resolve_reading(
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
pub(super) fn needs_configs(t: &Target) -> bool {
    let remote_or_layout = |r: &Reference| matches!(r, Reference::Registry(_) | Reference::Oci { .. });
    !t.chain.is_empty() || !remote_or_layout(&t.destination) || !remote_or_layout(&t.source)
}

/// Resolves each distinct (source, platforms) of the targets once, then
/// compares every target with its destination.
/// Each (source, platforms) the targets read, resolved once.
pub(super) type Resolutions = HashMap<(String, String), std::result::Result<Arc<ResolvedImage>, String>>;

/// A (source, platforms) that targets read: the first target reading it,
/// and whether any of them needs the images' configs.
pub(super) struct Read {
    target: usize,
    configs: Configs,
}

/// Each distinct (source, platforms) of `targets` that `probes` has not
/// resolved already, once (as indexes into `targets`, not copies: a plan
/// of 100,000 distinct images holds them while it resolves).
pub(super) fn distinct_reads(targets: &[Target], probes: &Resolutions) -> Vec<Read> {
    let mut first: HashMap<(&Reference, String), usize> = HashMap::new();
    let mut reads: Vec<Read> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let configs = if needs_configs(t) { Configs::Load } else { Configs::Skip };
        match first.entry((&t.source, platforms_key(&t.platforms))) {
            std::collections::hash_map::Entry::Occupied(e) => {
                if configs == Configs::Load {
                    reads[*e.get()].configs = Configs::Load;
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(reads.len());
                reads.push(Read { target: i, configs });
            }
        }
    }
    drop(first);
    reads.retain(|r| {
        let t = &targets[r.target];
        !probes.contains_key(&(t.source.to_string(), platforms_key(&t.platforms)))
    });
    reads.shrink_to_fit();
    reads
}

/// Whether a plan reads the bytes of the manifests it resolves after it
/// has resolved them: a plan that is only shown reads them only to convert
/// media types (OCI layouts and archives may), so a plan of 100,000
/// targets to registries keeps none (their digests and sizes stay).
pub(super) fn keeps_manifest_bytes(ctx: &PlanContext, targets: &[Target]) -> bool {
    !ctx.shown_only
        || targets
            .iter()
            .any(|t| crate::sink::kind::media_types(&t.destination) != MediaTypes::Keep)
}

/// Resolves every (source, platforms) of `reads` (without the manifests'
/// bytes unless `keep_bytes`).
pub(super) async fn resolve_all(
    ctx: &PlanContext,
    targets: &[Target],
    reads: &[Read],
    keep_bytes: bool,
) -> Resolutions {
    let mut answers = stream::iter(reads)
        .map(|read| async move {
            let t = &targets[read.target];
            let key = (t.source.to_string(), platforms_key(&t.platforms));
            let answer = resolve_reading(ctx, &t.source, &t.platforms, read.configs)
                .await
                .map_err(|e| e.to_string());
            (key, read.configs, answer)
        })
        .buffer_unordered(PLAN_CONCURRENCY);
    // Tags that name one image (`latest`, `1`, `1.2`…) share its
    // resolution: the same root digest read the same way is the same
    // images, kept once.
    let mut same: HashMap<(Digest, String, bool, bool), Arc<ResolvedImage>> = HashMap::new();
    let mut out = Resolutions::new();
    while let Some((key, configs, answer)) = answers.next().await {
        let answer = answer.map(|mut resolved| {
            if !keep_bytes {
                resolved.drop_manifest_bytes();
            }
            resolved
        });
        let answer = answer.map(|resolved| match resolved.root().map(|r| r.digest.clone()) {
            Some(root) => {
                let kept = (root, key.1.clone(), configs == Configs::Load, resolved.synthesised);
                Arc::clone(same.entry(kept).or_insert_with(|| Arc::new(resolved)))
            }
            None => Arc::new(resolved),
        });
        out.insert(key, answer);
    }
    out
}

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

/// Resolves every (source, platforms) some target reads.
pub(super) async fn resolve_all(
    ctx: &PlanContext,
    targets: &[Target],
    wanted: &[(Reference, PlatformSelection)],
) -> Resolutions {
    // (source, platforms) → whether some target reading it needs its configs.
    let mut read: HashMap<(&Reference, String), bool> = HashMap::new();
    for t in targets {
        *read.entry((&t.source, platforms_key(&t.platforms))).or_default() |= needs_configs(t);
    }
    let mut answers = stream::iter(
        wanted
            .iter()
            .filter_map(|(r, p)| read.get(&(r, platforms_key(p))).map(|&configs| (r, p, configs))),
    )
    .map(|(r, p, configs)| async move {
        let key = (r.to_string(), platforms_key(p));
        let configs = if configs { Configs::Load } else { Configs::Skip };
        let answer = resolve_reading(ctx, r, p, configs).await.map_err(|e| e.to_string());
        (key, configs, answer)
    })
    .buffer_unordered(PLAN_CONCURRENCY);
    // Tags that name one image (`latest`, `1`, `1.2`…) share its
    // resolution: the same root digest read the same way is the same
    // images, kept once.
    let mut same: HashMap<(Digest, String, bool, bool), Arc<ResolvedImage>> = HashMap::new();
    let mut out = Resolutions::new();
    while let Some((key, configs, answer)) = answers.next().await {
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

//! The cheap path of the diff: a target copied without filters, from a
//! registry or an OCI layout to a registry or an OCI layout, is unchanged
//! when the destination's tag already names the digest the copy would write.
//! That digest follows from the source's root manifest alone (the image's
//! own digest, the index's, or the chosen platform's entry in it), so such a
//! target costs one request on each side — the source's manifest and the
//! destination's HEAD — and is never resolved further. Every other target
//! (a changed one, filters, a platform list, files and daemons) takes the
//! full path.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};

use super::{planned_target, tagged_digest, Action, PlanContext, PlannedTarget, Target, PLAN_CONCURRENCY};
use crate::image::{Digest, Manifest, RawManifest};
use crate::reference::Reference;
use crate::sink::kind::{self, CurrentDigest};
use crate::source::{choose_platforms, open_source, PlatformSelection};

/// The source's root manifest, read once per source reference.
async fn root_of(ctx: &PlanContext, r: &Reference) -> Option<RawManifest> {
    let source = open_source(r, &ctx.source_options(r)).await.ok()?;
    let root = source.root_manifest().await.ok()?;
    ctx.memo.remember_root(r, &root);
    Some(root)
}

/// Whether the cheap path applies to `t`.
fn eligible(t: &Target) -> bool {
    t.chain.is_empty()
        && matches!(t.platforms, PlatformSelection::Default | PlatformSelection::All)
        && matches!(t.source, Reference::Registry(_) | Reference::Oci { .. })
        && kind::of(&t.destination).current == CurrentDigest::Tagged
        && !matches!(t.destination, Reference::Oci { oci_format: true, .. })
}

/// What an unfiltered copy of `root` writes, and how many platform images
/// it takes; None when that needs more than the root manifest.
fn expected_from_root(root: &RawManifest, selection: &PlatformSelection) -> Option<(Digest, usize)> {
    match root.parse().ok()? {
        Manifest::Image(_) => Some((root.digest.clone(), 1)),
        Manifest::Index(index) => {
            let chosen = choose_platforms(&index.manifests, selection, "").ok()?;
            match selection {
                // One platform image, written on its own.
                PlatformSelection::Default => match chosen.as_slice() {
                    [one] => Some((one.digest.clone(), 1)),
                    _ => None,
                },
                // The whole index, unchanged when every entry with a
                // platform is taken (attestations aside it may be rewritten).
                _ => {
                    let platform_entries = index
                        .manifests
                        .iter()
                        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"))
                        .count();
                    (chosen.len() == platform_entries).then(|| (root.digest.clone(), chosen.len()))
                }
            }
        }
    }
}

/// Splits `targets` into those found unchanged cheaply (planned) and the rest.
pub async fn split_unchanged(ctx: &PlanContext, targets: Vec<Target>) -> (Vec<PlannedTarget>, Vec<Target>) {
    let mut sources: Vec<Reference> = Vec::new();
    for t in targets.iter().filter(|t| eligible(t)) {
        if !sources.contains(&t.source) {
            sources.push(t.source.clone());
        }
    }
    let roots: HashMap<String, RawManifest> = stream::iter(sources)
        .map(|r| async move { (r.to_string(), root_of(ctx, &r).await) })
        .buffer_unordered(PLAN_CONCURRENCY)
        .filter_map(|(k, root)| async move { root.map(|r| (k, r)) })
        .collect()
        .await;
    let checked: Vec<Result<PlannedTarget, Target>> = stream::iter(targets)
        .map(|t| {
            let root = roots.get(&t.source.to_string()).filter(|_| eligible(&t)).cloned();
            async move {
                let Some(root) = root else { return Err(t) };
                if t.pinned.as_ref().is_some_and(|pin| *pin != root.digest) {
                    return Err(t);
                }
                let Some((expected, platforms)) = expected_from_root(&root, &t.platforms) else {
                    return Err(t);
                };
                match tagged_digest(ctx, &t).await {
                    Ok(Some(current)) if current == expected => Ok(PlannedTarget {
                        source_digest: Some(root.digest.clone()),
                        platforms,
                        expected: Some(expected),
                        current: Some(current),
                        action: Action::Unchanged,
                        ..planned_target(t)
                    }),
                    _ => Err(t),
                }
            }
        })
        .buffered(PLAN_CONCURRENCY)
        .collect()
        .await;
    let mut unchanged = Vec::new();
    let mut rest = Vec::new();
    for c in checked {
        match c {
            Ok(p) => unchanged.push(p),
            Err(t) => rest.push(t),
        }
    }
    (unchanged, rest)
}

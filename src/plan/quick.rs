//! The cheap path of the diff: a target from a registry or an OCI layout to
//! a registry or an OCI layout is unchanged when the destination's tag
//! already names the digest the copy would write. A registry source's tag is
//! resolved with a HEAD (`Docker-Content-Digest` and the media type: pull
//! quotas such as Docker Hub's count manifest GETs, not HEADs), and the
//! digest the copy writes follows without fetching the source's manifest:
//!
//! - an image manifest copied without filters writes itself;
//! - an index copied without filters writes what its bytes say (itself, or
//!   the chosen platform's entry); the bytes are read from the destination
//!   when its tag already names that index (verified against the digest), so
//!   the source is not asked;
//! - otherwise (filters, a platform list, an index the destination does not
//!   hold) the layer cache's record of what an earlier run wrote from that
//!   source digest with that chain, compared with the destination's HEAD.
//!
//! Such a target costs a HEAD on each side and is never resolved further.
//! Every other target (a changed one, files and daemons) takes the full
//! path, which fetches what it needs.

use futures_util::stream::{self, StreamExt};

use super::{
    concurrently_in_order, output_key, planned_target, referrers, tagged_digest, Action, PlanContext, PlannedTarget,
    Target, PLAN_CONCURRENCY,
};
use crate::image::convert::MediaTypes;
use crate::image::media_type::is_index;
use crate::image::{Descriptor, Digest, Manifest, RawManifest};
use crate::reference::Reference;
use crate::sink::kind::{self, CurrentDigest};
use crate::source::{choose_platforms, open_source, PlatformSelection};

/// What a source reference names: from a HEAD for a registry (the manifest
/// itself only when the registry's HEAD did not say enough), from the file
/// for an OCI layout. Remembered in the plan memo; askers of the same
/// source at once share one HEAD.
async fn head_of(ctx: &PlanContext, r: &Reference) -> Option<Descriptor> {
    if let Some(known) = ctx.memo.source_head(r) {
        return Some(known);
    }
    let flight = ctx.memo.source_head_flight(r);
    flight.get_or_init(|| ask_head(ctx, r)).await.clone()
}

async fn ask_head(ctx: &PlanContext, r: &Reference) -> Option<Descriptor> {
    let desc = match r.store_reference() {
        // A store asked by name: a HEAD for a registry (the manifest too
        // when the HEAD did not say enough), index.json for a layout.
        Some(reference) => match ctx.store(r).ok()?.resolve(&reference).await {
            Ok(Some((desc, fetched))) => {
                if let Some(root) = fetched {
                    ctx.memo.remember_root(r, &root);
                }
                desc
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!("HEAD of {r} failed ({e}); it is resolved in full");
                return None;
            }
        },
        // A layout's only image: read as the source reads it.
        None => {
            let source = open_source(r, &ctx.source_options(r)).await.ok()?;
            let root = source.root_manifest().await.ok()?;
            ctx.memo.remember_root(r, &root);
            root.descriptor()
        }
    };
    ctx.memo.remember_source_head(r, &desc);
    Some(desc)
}

/// Whether the cheap path applies to `t`: both sides name images by tag
/// (registries, OCI layouts) and the destination keeps manifests as they are.
fn eligible(ctx: &PlanContext, t: &Target) -> bool {
    (t.chain.is_empty() || t.chain.changes_content())
        && kind::of(&t.source).current == CurrentDigest::Tagged
        && kind::of(&t.destination).current == CurrentDigest::Tagged
        && ctx.capabilities(&t.destination).media_types != MediaTypes::Oci
}

/// What an unfiltered copy of `root` writes, and how many platform images
/// it takes; None when that needs more than the root manifest.
fn expected_from_root(root: &RawManifest, selection: &PlatformSelection) -> Option<(Digest, usize)> {
    match root.parse().ok()? {
        Manifest::Image(_) => {
            matches!(selection, PlatformSelection::Default | PlatformSelection::All).then(|| (root.digest.clone(), 1))
        }
        Manifest::Index(index) => {
            let chosen = choose_platforms(&index.manifests, selection, "").ok()?;
            match selection {
                // One platform image, written on its own.
                PlatformSelection::Default => match chosen.as_slice() {
                    [one] => Some((one.digest.clone(), 1)),
                    _ => None,
                },
                PlatformSelection::List(_) => None,
                // The whole index, unchanged when every entry with a
                // platform is taken (attestations aside it may be rewritten).
                PlatformSelection::All => {
                    let platform_entries = index
                        .manifests
                        .iter()
                        .filter(|d| d.platform().is_some_and(|p| p.os != "unknown"))
                        .count();
                    (chosen.len() == platform_entries).then(|| (root.digest.clone(), chosen.len()))
                }
            }
        }
    }
}

/// The manifest `digest` as the destination holds it, verified against the
/// digest: the source's root, read without asking the source.
async fn root_from_destination(ctx: &PlanContext, t: &Target, digest: &Digest) -> Option<RawManifest> {
    let store = ctx.store(&t.destination).ok()?;
    store.manifest(digest.as_str()).await.ok().flatten()
}

/// The digest the target writes and its platform count, when it follows
/// from the source's HEAD (`head`), a root manifest already known, the
/// destination or the layer cache; `current` is what the destination's tag
/// names now.
async fn expected_for(
    ctx: &PlanContext,
    t: &Target,
    head: &Descriptor,
    current: Option<&Digest>,
) -> Option<(Digest, usize)> {
    let from_cache = || {
        ctx.cache
            .as_ref()
            .and_then(|c| c.output(&output_key(t, &head.digest)))
            .map(|d| (d, 1))
    };
    if !t.chain.is_empty() {
        return from_cache();
    }
    if !is_index(&head.media_type) {
        if matches!(t.platforms, PlatformSelection::Default | PlatformSelection::All) {
            return Some((head.digest.clone(), 1));
        }
        return from_cache();
    }
    let mut root = ctx.memo.root(&t.source).filter(|r| r.digest == head.digest);
    if root.is_none() && current == Some(&head.digest) {
        root = root_from_destination(ctx, t, &head.digest).await;
        if let Some(r) = &root {
            ctx.memo.remember_root(&t.source, r);
        }
    }
    match root {
        Some(r) => expected_from_root(&r, &t.platforms).or_else(from_cache),
        None => from_cache(),
    }
}

/// Splits `targets` into those found unchanged cheaply (planned) and the
/// rest. Each target's destination is asked first: its source is asked
/// (with a HEAD) only when the destination holds something, since a target
/// the destination lacks is resolved in full anyway. Targets do not wait
/// for each other: a target's source HEAD follows its own destination HEAD,
/// and once it is found unchanged the referrers of its image are looked up
/// on both sides, while the tags of the source repositories are listed
/// from the start (see [`referrers::list_sources_early`]).
pub async fn split_unchanged(ctx: &PlanContext, targets: Vec<Target>) -> (Vec<PlannedTarget>, Vec<Target>) {
    let listing = referrers::list_sources_early(ctx, &targets);
    let checking = concurrently_in_order(targets, |t| async move {
        let p = check(ctx, t).await?;
        referrers::look_up_early(ctx, &p).await;
        Ok(p)
    });
    let ((), checked) = futures_util::future::join(listing, checking).await;
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

/// `t` planned unchanged when the HEADs (and what is known) show it is,
/// else `t` back.
async fn check(ctx: &PlanContext, t: Target) -> Result<PlannedTarget, Target> {
    if !eligible(ctx, &t) {
        return Err(t);
    }
    // A source an applied run looked at a short while ago was most likely
    // mirrored then: both sides are asked at once (else the source only
    // once the destination holds something).
    let (current, head) = if referrers::recently_looked_at(ctx, &t.source) {
        let (current, head) = futures_util::future::join(tagged_digest(ctx, &t), head_of(ctx, &t.source)).await;
        (current.ok().flatten(), head)
    } else {
        match tagged_digest(ctx, &t).await.ok().flatten() {
            Some(current) => (Some(current), head_of(ctx, &t.source).await),
            None => (None, None),
        }
    };
    let (Some(current), Some(head)) = (current, head) else {
        return Err(t);
    };
    if t.pinned.as_ref().is_some_and(|pin| *pin != head.digest) {
        return Err(t);
    }
    match expected_for(ctx, &t, &head, Some(&current)).await {
        Some((expected, platforms)) if expected == current => Ok(PlannedTarget {
            source_digest: Some(head.digest.clone()),
            platforms,
            expected: Some(expected),
            current: Some(current),
            action: Action::Unchanged,
            ..planned_target(t)
        }),
        _ => Err(t),
    }
}

/// Asks each of `sources` with a HEAD (which pull quotas do not count),
/// remembering the answers in the plan memo: for a source registry that
/// announces a pull quota, before its first manifest GET.
pub async fn head_sources(ctx: &PlanContext, sources: Vec<Reference>) {
    stream::iter(sources)
        .for_each_concurrent(PLAN_CONCURRENCY, |r| async move {
            head_of(ctx, &r).await;
        })
        .await;
}

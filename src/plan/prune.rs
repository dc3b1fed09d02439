//! Prune (`--prune`, opt-in): the tags of each synced registry repository
//! that no target of the sync file selects any more. The planner lists them
//! (each with the manifest it names) and apply deletes them: by tag where
//! the registry allows it, else by digest, which the planner allows only
//! when no kept tag of the repository names the same manifest.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::{Action, PlanContext, PlannedTarget};
use crate::error::Result;
use crate::image::Digest;
use crate::reference::{Reference, RegistryRef};

/// HEAD requests in flight while looking at prune candidates.
const PRUNE_CONCURRENCY: usize = 8;

/// A destination tag to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneTag {
    /// `registry://HOST/REPO:TAG`.
    pub destination: String,
    pub host: String,
    pub repository: String,
    pub tag: String,
    /// The manifest the tag names now.
    pub digest: Digest,
}

/// What the selected targets keep in one repository.
#[derive(Default)]
struct Kept {
    tags: HashSet<String>,
    digests: HashSet<Digest>,
}

/// The tags to prune from the repositories `planned` writes to. Nothing is
/// pruned when some target failed to resolve: its tags are unknown, and a
/// partial selection would delete tags still wanted.
pub async fn find(ctx: &PlanContext, planned: &[PlannedTarget], warnings: &mut Vec<String>) -> Vec<PruneTag> {
    if planned.iter().any(|t| matches!(t.action, Action::Failed { .. })) {
        warnings.push(
            "--prune: nothing is pruned while some targets fail to resolve (the tags they select are unknown)"
                .to_string(),
        );
        return Vec::new();
    }
    let mut repos: BTreeMap<(String, String), Kept> = BTreeMap::new();
    for t in planned {
        let Reference::Registry(r) = &t.target.destination else {
            continue;
        };
        let kept = repos.entry((r.host.clone(), r.repository.clone())).or_default();
        if let Some(tag) = &r.tag {
            kept.tags.insert(tag.clone());
        }
        kept.digests.extend(t.current.iter().chain(&t.expected).cloned());
    }
    let mut out = Vec::new();
    for ((host, repo), kept) in &repos {
        match candidates(ctx, host, repo, kept, warnings).await {
            Ok(found) => out.extend(found),
            Err(e) => warnings.push(format!(
                "--prune: registry://{host}/{repo} is not pruned: its tags could not be listed: {e}"
            )),
        }
    }
    out
}

/// The tags of one repository the sync does not keep.
async fn candidates(
    ctx: &PlanContext,
    host: &str,
    repo: &str,
    kept: &Kept,
    warnings: &mut Vec<String>,
) -> Result<Vec<PruneTag>> {
    let store = ctx.store(&repository(host, repo))?;
    // A repository not created yet has no tags: nothing to prune.
    let tags = store.tags().await?.unwrap_or_default();
    let unkept: BTreeSet<String> = tags.into_iter().filter(|t| !kept.tags.contains(t)).collect();
    let heads: Vec<(String, Result<Option<crate::image::Descriptor>>)> = stream::iter(unkept)
        .map(|tag| {
            let store = store.clone();
            async move {
                let head = store.head(&tag).await;
                (tag, head)
            }
        })
        .buffered(PRUNE_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    for (tag, head) in heads {
        let digest = match head? {
            Some(d) => d.digest,
            None => continue,
        };
        if kept.digests.contains(&digest) {
            warnings.push(format!(
                "--prune: registry://{host}/{repo}:{tag} is kept: it names {digest}, as a tag the sync file selects does, and deleting it by digest would delete both"
            ));
            continue;
        }
        out.push(PruneTag {
            destination: format!("registry://{host}/{repo}:{tag}"),
            host: host.to_string(),
            repository: repo.to_string(),
            tag,
            digest,
        });
    }
    Ok(out)
}

/// Deletes one pruned tag: by tag, else (a registry that deletes only
/// manifests) by the digest the plan saw, after checking the tag still names it.
pub async fn delete(ctx: &PlanContext, p: &PruneTag) -> Result<()> {
    ctx.store(&repository(&p.host, &p.repository))?
        .untag(&p.tag, &p.digest)
        .await
}

/// The registry repository `host/repo`, as a store is opened for it.
fn repository(host: &str, repo: &str) -> Reference {
    Reference::Registry(RegistryRef {
        host: host.to_string(),
        repository: repo.to_string(),
        tag: None,
        digest: None,
    })
}

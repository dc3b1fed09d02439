//! What the destination stores hold now: the one presence query of the
//! plan, asked of each store (through the store interface) once per store
//! and blob before the graph is built.

use super::*;

/// What the stores hold now, as each store answered.
#[derive(Default)]
pub(super) struct Presence {
    pub(super) held: HashMap<StoreId, HashSet<Digest>>,
    /// (host, digest) → a repository there that holds it.
    pub(super) on_host: HashMap<(String, Digest), String>,
}

impl Presence {
    pub(super) fn holds(&self, store: &Store, d: &Digest) -> bool {
        self.held.get(&store.id).is_some_and(|h| h.contains(d))
    }
}

/// Asks each destination store that can say which blobs it holds about the
/// blobs the targets want there (one presence query per store and blob:
/// a HEAD for a registry, a file for an OCI layout; registry repositories
/// known to hold no tags are not asked).
pub(super) async fn presence(ctx: &PlanContext, planned: &[PlannedTarget], stores: &Stores) -> Presence {
    let mut asks: Vec<(Arc<dyn crate::sink::store::Store>, Digest)> = Vec::new();
    let mut seen: HashSet<(StoreId, Digest)> = HashSet::new();
    for t in planned.iter().filter(|t| t.action.writes()) {
        let Some(resolved) = &t.resolved else { continue };
        let Some(view) = stores.get(&t.destination()) else {
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
    let found = crate::plan::concurrently_in_order(asks, |(store, d)| async move {
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

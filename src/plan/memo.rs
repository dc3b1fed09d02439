//! What planning has already asked the registries, so that no question is
//! asked twice and none is asked whose answer is already known:
//!
//! - each source's root manifest, read by the cheap unchanged check (or
//!   taken from a destination holding it) and reused when the source is
//!   resolved;
//! - what each registry source's tag names, from a HEAD (one HEAD however
//!   many targets ask at once);
//! - the tags of destination repositories that several targets write, listed
//!   once, so a tag that is not there costs no HEAD and a repository without
//!   tags costs no blob HEADs;
//! - each destination tag's digest (one HEAD at most);
//! - each archive, layout or daemon source opened (a daemon's image is
//!   exported once), so apply reads what planning read;
//! - the referrers looked up on either side (see [`super::referrers::Lister`]);
//! - what earlier runs remembered in the cache directory
//!   (`crate::blob_locations`), read once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use super::{PlanContext, Target, PLAN_CONCURRENCY};
use crate::blob_locations::Remembered;
use crate::cache::LayerCache;
use crate::error::Result;
use crate::image::{Descriptor, Digest, RawManifest};
use crate::reference::Reference;
use crate::sink::store::Store;
use crate::source::{open_source, Source, SourceOptions};

/// A registry host and one of its repositories.
type Repository = (String, String);

/// The answers planning keeps (shared by the planner's tasks).
#[derive(Default)]
pub struct PlanMemo {
    roots: Mutex<HashMap<String, RawManifest>>,
    /// What each source reference names (a HEAD's answer).
    source_heads: Mutex<HashMap<String, Descriptor>>,
    /// (host, repository) → its tags (destinations several targets write,
    /// sources whose tags were expanded); absent when not listed or when
    /// the listing failed (then every tag is asked about with a HEAD).
    /// Shared: each referrers lookup of a source reads its repository's
    /// tags, and a copy of 1,000 tags per lookup would cost more than the
    /// lookup.
    destination_tags: Mutex<HashMap<Repository, Arc<HashSet<String>>>>,
    heads: Mutex<HashMap<String, Option<Digest>>>,
    /// Sources other than registries, opened once.
    opened: tokio::sync::Mutex<HashMap<String, Arc<dyn Source>>>,
    /// Each destination's store other than a registry's, opened once (a
    /// registry store answers for its destination's tag, so one would be
    /// kept per tag, about half a KiB each, while opening one costs no
    /// request: those are opened when asked for).
    stores: Mutex<HashMap<String, Arc<dyn Store>>>,
    /// Source HEADs in flight or answered: two targets of one source wait
    /// for the one HEAD.
    head_flights: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<Descriptor>>>>>,
    /// The referrers looked up on either side, each once.
    pub referrers: super::referrers::Lister,
    /// The cache directory's remembered blob locations and referrers.
    remembered: std::sync::OnceLock<Arc<Remembered>>,
}

impl PlanMemo {
    /// What earlier runs remembered in `cache` (`crate::blob_locations`),
    /// read the first time it is asked for; nothing without a cache.
    pub fn remembered(&self, cache: Option<&LayerCache>) -> Arc<Remembered> {
        self.remembered
            .get_or_init(|| Arc::new(cache.map(|c| c.blob_locations().load()).unwrap_or_default()))
            .clone()
    }

    /// The store `dest` names: opened with `open` the first time, the same
    /// one after; a registry's is opened each time (it holds nothing but
    /// the host's shared client and the destination, and a plan of 100,000
    /// tags would keep 100,000 of them). Tests hand in stores of their own
    /// with [`PlanMemo::provide_store`].
    pub fn store(&self, dest: &Reference, open: impl FnOnce() -> Result<Box<dyn Store>>) -> Result<Arc<dyn Store>> {
        let key = dest.to_string();
        if let Some(s) = self.stores.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(s);
        }
        let s: Arc<dyn Store> = Arc::from(open()?);
        if matches!(dest, Reference::Registry(_)) {
            return Ok(s);
        }
        if let Ok(mut m) = self.stores.lock() {
            m.entry(key).or_insert_with(|| s.clone());
        }
        Ok(s)
    }

    /// Makes `store` the store `dest` names for this plan.
    #[cfg(test)]
    pub fn provide_store(&self, dest: &Reference, store: Arc<dyn Store>) {
        if let Ok(mut m) = self.stores.lock() {
            m.insert(dest.to_string(), store);
        }
    }

    /// Opens `reference` as a source: a registry each time (it costs no
    /// request), anything else once per run.
    pub async fn open_source(&self, reference: &Reference, opts: &SourceOptions) -> Result<Arc<dyn Source>> {
        if matches!(reference, Reference::Registry(_)) {
            return Ok(Arc::from(open_source(reference, opts).await?));
        }
        let mut opened = self.opened.lock().await;
        if let Some(s) = opened.get(&reference.to_string()) {
            return Ok(s.clone());
        }
        let s: Arc<dyn Source> = Arc::from(open_source(reference, opts).await?);
        opened.insert(reference.to_string(), s.clone());
        Ok(s)
    }

    pub fn root(&self, source: &Reference) -> Option<RawManifest> {
        self.roots.lock().ok()?.get(&source.to_string()).cloned()
    }

    pub fn remember_root(&self, source: &Reference, root: &RawManifest) {
        if let Ok(mut m) = self.roots.lock() {
            m.insert(source.to_string(), root.clone());
        }
    }

    /// What `source` names, when a HEAD said it.
    pub fn source_head(&self, source: &Reference) -> Option<Descriptor> {
        self.source_heads.lock().ok()?.get(&source.to_string()).cloned()
    }

    /// The one flight of the HEAD of `source`: every asker of the same
    /// source shares it.
    pub fn source_head_flight(&self, source: &Reference) -> Arc<tokio::sync::OnceCell<Option<Descriptor>>> {
        let mut m = match self.head_flights.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(source.to_string()).or_default().clone()
    }

    pub fn remember_source_head(&self, source: &Reference, desc: &Descriptor) {
        if let Ok(mut m) = self.source_heads.lock() {
            m.insert(source.to_string(), desc.clone());
        }
    }

    /// `answer` applied to the tags of a listed repository; None when it
    /// was not listed.
    fn listed<R>(&self, host: &str, repo: &str, answer: impl FnOnce(&HashSet<String>) -> R) -> Option<R> {
        let m = self.destination_tags.lock().ok()?;
        m.get(&(host.to_string(), repo.to_string()))
            .map(|tags| answer(tags.as_ref()))
    }

    /// The tags of a repository planning has listed (a destination written
    /// by several targets, a source whose tags were expanded).
    pub fn listed_tags(&self, host: &str, repo: &str) -> Option<Arc<HashSet<String>>> {
        let m = self.destination_tags.lock().ok()?;
        m.get(&(host.to_string(), repo.to_string())).cloned()
    }

    /// Records the tags a listing of `host/repo` gave.
    pub fn remember_tags(&self, host: &str, repo: &str, tags: &[String]) {
        if let Ok(mut m) = self.destination_tags.lock() {
            m.insert(
                (host.to_string(), repo.to_string()),
                Arc::new(tags.iter().cloned().collect()),
            );
        }
    }

    /// Whether `tag` is known to be missing from a listed repository.
    pub fn tag_missing(&self, host: &str, repo: &str, tag: &str) -> bool {
        self.listed(host, repo, |tags| !tags.contains(tag)).unwrap_or(false)
    }

    /// Whether a listed repository has no tags at all (it does not exist,
    /// or holds nothing a manifest names).
    pub fn repository_empty(&self, host: &str, repo: &str) -> bool {
        self.listed(host, repo, HashSet::is_empty).unwrap_or(false)
    }

    pub fn head(&self, key: &str) -> Option<Option<Digest>> {
        self.heads.lock().ok()?.get(key).cloned()
    }

    pub fn remember_head(&self, key: &str, digest: &Option<Digest>) {
        if let Ok(mut m) = self.heads.lock() {
            m.insert(key.to_string(), digest.clone());
        }
    }
}

/// Lists the tags of every registry destination repository that two or
/// more targets write by tag: one request there instead of a HEAD per tag
/// that turns out to be missing. (A repository written by one target is
/// asked with its one HEAD.)
pub async fn list_destination_tags(ctx: &PlanContext, targets: &[Target]) {
    let mut writers: HashMap<Repository, usize> = HashMap::new();
    let mut first: HashMap<Repository, Reference> = HashMap::new();
    for t in targets {
        if let Some(r) = t.destination.as_registry() {
            if r.digest.is_none() {
                let key = (r.host.clone(), r.repository.clone());
                first.entry(key.clone()).or_insert_with(|| t.destination.clone());
                *writers.entry(key).or_default() += 1;
            }
        }
    }
    let first = &first;
    let repos: Vec<Repository> = writers.into_iter().filter(|(_, n)| *n >= 2).map(|(k, _)| k).collect();
    let listed: Vec<(Repository, Option<HashSet<String>>)> = stream::iter(repos)
        .map(|(host, repo)| async move {
            let tags = match ctx.store(&first[&(host.clone(), repo.clone())]) {
                Ok(store) => match store.tags().await {
                    Ok(tags) => tags.map(|t| t.into_iter().collect()),
                    Err(e) => {
                        tracing::debug!(
                            host,
                            repo,
                            "listing the destination's tags failed ({e}); asking tag by tag"
                        );
                        None
                    }
                },
                Err(_) => None,
            };
            ((host, repo), tags)
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    if let Ok(mut m) = ctx.memo.destination_tags.lock() {
        for (key, tags) in listed {
            if let Some(tags) = tags {
                m.insert(key, Arc::new(tags));
            }
        }
    }
}

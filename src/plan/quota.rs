//! Pull quotas while planning. Registries such as Docker Hub count every
//! manifest GET against a pull quota and announce what is left
//! (`RateLimit-Limit` / `RateLimit-Remaining`, read by the registry client
//! from every answer, HEADs included). Once the cheap path has resolved the
//! source tags with HEADs, this counts the manifest GETs the rest of the run
//! needs per source host and, when a host announced fewer pulls left, stops
//! the run before the first of them, instead of failing half-way on 429.
//! The quota and the count are shown in the plan.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::{platforms_key, PlanContext, Target};
use crate::error::{Error, Result};
use crate::image::media_type::is_index;
use crate::image::Manifest;
use crate::reference::Reference;
use crate::registry::rate_limit::PullQuota;
use crate::source::{choose_platforms, PlatformSelection};

/// A source host's pull quota as the plan shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PullQuotaLine {
    pub host: String,
    pub limit: u64,
    /// Pulls left when planning started pulling.
    pub remaining: u64,
    /// The quota's window in seconds, when the registry says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
    /// Seconds until the window resets, when the registry says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_seconds: Option<u64>,
    /// Manifest GETs the run makes on the host (HEADs are not counted).
    pub needed: u64,
    /// True when `needed` is a lower bound: an index not read yet may
    /// list more platform manifests.
    pub needed_at_least: bool,
}

impl PullQuotaLine {
    fn new(host: &str, q: &PullQuota, needed: Needed) -> Self {
        PullQuotaLine {
            host: host.to_string(),
            limit: q.limit,
            remaining: q.remaining,
            window_seconds: q.window.map(|w| w.as_secs()),
            reset_seconds: q.reset.map(|r| r.as_secs()),
            needed: needed.pulls,
            needed_at_least: needed.at_least,
        }
    }

    fn quota(&self) -> PullQuota {
        PullQuota {
            limit: self.limit,
            remaining: self.remaining,
            window: self.window_seconds.map(std::time::Duration::from_secs),
            reset: self.reset_seconds.map(std::time::Duration::from_secs),
        }
    }

    fn needed_text(&self) -> String {
        let at_least = if self.needed_at_least { "at least " } else { "" };
        format!("{at_least}{}", self.needed)
    }

    /// `docker.io: 76 of 100 pulls left in this 6 h window; this run needs 12`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {}; this run needs {}",
            self.host,
            self.quota().describe(),
            self.needed_text()
        )
    }
}

/// Manifest GETs needed on one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needed {
    pub pulls: u64,
    pub at_least: bool,
}

/// The manifest GETs resolving `targets` needs per source registry host:
/// each source's root manifest not known yet, and the platform manifests
/// of an index (counted from the index when it is known, else from the
/// selection: one for the default platform, one per listed platform, at
/// least one for all).
pub fn pulls_needed(ctx: &PlanContext, targets: &[Target]) -> BTreeMap<String, Needed> {
    let mut out: BTreeMap<String, Needed> = BTreeMap::new();
    let mut roots: HashSet<String> = HashSet::new();
    let mut selections: HashSet<(String, String)> = HashSet::new();
    for t in targets {
        let Reference::Registry(r) = &t.source else { continue };
        let key = t.source.to_string();
        let n = out.entry(r.host.clone()).or_default();
        let root = ctx.memo.root(&t.source);
        if roots.insert(key.clone()) && root.is_none() {
            n.pulls += 1;
        }
        if !selections.insert((key, platforms_key(&t.platforms))) {
            continue;
        }
        match root.map(|r| r.parse()) {
            Some(Ok(Manifest::Index(index))) => {
                let chosen = choose_platforms(&index.manifests, &t.platforms, "").map_or(0, |c| c.len());
                n.pulls += chosen as u64;
            }
            Some(_) => {}
            None => match ctx.memo.source_head(&t.source) {
                Some(h) if !is_index(&h.media_type) => {}
                // An index: its platform manifests too.
                Some(_) => match &t.platforms {
                    PlatformSelection::Default => n.pulls += 1,
                    PlatformSelection::List(l) => n.pulls += l.len() as u64,
                    PlatformSelection::All => {
                        n.pulls += 1;
                        n.at_least = true;
                    }
                },
                // Not asked: an image, or an index with more to fetch.
                None => n.at_least = true,
            },
        }
    }
    out
}

/// The quota of every source host of `all` that announced one, with the
/// pulls resolving `unresolved` needs there; an error, before any of those
/// pulls, when a host has fewer left than needed. A host that pulls are
/// needed from and that no HEAD has asked yet (a first run: no destination
/// held anything) is asked one HEAD first, to learn whether it has a quota;
/// on a host that has one, every source tag not asked yet gets its HEAD
/// (HEADs are free), so that the count is exact.
pub async fn gate(ctx: &PlanContext, all: &[Target], unresolved: &[Target]) -> Result<Vec<PullQuotaLine>> {
    let hosts: BTreeSet<String> = all
        .iter()
        .filter_map(|t| t.source.as_registry().map(|r| r.host.clone()))
        .collect();
    let quota_of = |host: &str| {
        all.iter()
            .find(|t| t.source.as_registry().is_some_and(|r| r.host == host))
            .and_then(|t| ctx.store(&t.source).ok())
            .and_then(|s| s.pull_quota())
    };
    let on_host = |t: &Target, host: &str| t.source.as_registry().is_some_and(|r| r.host == host);
    let unasked_of = |host: &str| -> Vec<Reference> {
        super::distinct(
            unresolved
                .iter()
                .filter(|t| on_host(t, host))
                .filter(|t| ctx.memo.source_head(&t.source).is_none() && ctx.memo.root(&t.source).is_none())
                .map(|t| t.source.clone()),
        )
    };
    let needed = pulls_needed(ctx, unresolved);
    let probes: Vec<Reference> = needed
        .iter()
        .filter(|(host, n)| {
            n.pulls > 0
                && quota_of(host).is_none()
                && !all
                    .iter()
                    .any(|t| on_host(t, host) && ctx.memo.source_head(&t.source).is_some())
        })
        .filter_map(|(host, _)| unasked_of(host).into_iter().next())
        .collect();
    super::quick::head_sources(ctx, probes).await;
    let rest: Vec<Reference> = needed
        .keys()
        .filter(|host| quota_of(host).is_some())
        .flat_map(|host| unasked_of(host))
        .collect();
    super::quick::head_sources(ctx, rest).await;
    let needed = pulls_needed(ctx, unresolved);
    let mut lines = Vec::new();
    for host in hosts {
        let Some(q) = quota_of(&host) else { continue };
        let n = needed.get(&host).copied().unwrap_or_default();
        let line = PullQuotaLine::new(&host, &q, n);
        if n.pulls > q.remaining {
            return Err(Error::PullQuota(format!(
                "{host} has {} and this run needs {} manifest pulls there (tags whose digest a HEAD showed new or changed, \
                 and their platform manifests; HEADs are not counted): stopped before pulling any. {}. \
                 Run again then, sync fewer tags per run (--only), or log in for a larger quota",
                q.describe(),
                line.needed_text(),
                capitalised(&q.when_reset())
            )));
        }
        lines.push(line);
    }
    Ok(lines)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn describes_a_quota_line() {
        let q = PullQuota {
            limit: 100,
            remaining: 76,
            window: Some(Duration::from_secs(21600)),
            reset: None,
        };
        let line = PullQuotaLine::new(
            "docker.io",
            &q,
            Needed {
                pulls: 12,
                at_least: false,
            },
        );
        assert_eq!(
            line.describe(),
            "docker.io: 76 of 100 pulls left in this 6 h window; this run needs 12"
        );
        let more = PullQuotaLine::new(
            "docker.io",
            &q,
            Needed {
                pulls: 3,
                at_least: true,
            },
        );
        assert!(more.describe().ends_with("needs at least 3"), "{}", more.describe());
        assert_eq!(capitalised("the window"), "The window");
    }
}

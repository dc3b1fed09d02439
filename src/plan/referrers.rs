//! Referrers in the plan: what refers to each image a target copies —
//! OCI 1.1 referrers (through the referrers API where the source offers it,
//! else the `sha256-<hex>` referrers tag) and cosign's
//! `sha256-<hex>.sig/.att/.sbom` tags — found in the source, compared with
//! the destination, and those missing there attached to the target, so the
//! work graph copies each like an image (digests kept) after its subject.
//! An image whose digest changes on the way (filters, a platform subset,
//! `?format=oci`) takes none: the plan says why.
//!
//! A destination registry is asked about the referrers of a subject whose
//! source has none only when the cache directory remembers referrers of it
//! there (occy saw or copied some: then the plan warns that the source lost
//! them); without a cache it is always asked. So a warm run over unsigned
//! images asks each side one question per tag fewer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::OnceCell;

use super::{Action, MediaNote, PlanContext, PlannedTarget, PLAN_CONCURRENCY};
use crate::blob_locations::ReferrersSeen;
use crate::error::{Error, Result};
use crate::image::convert::MediaTypes;
use crate::image::referrers::{cosign_tag, parse_cosign_tag, CosignKind};
use crate::image::{Descriptor, Digest, ImageManifest, Manifest, RawManifest};
use crate::reference::Reference;
use crate::sink::store::{Capabilities, HeldReferrers, Store, StoreId};
use crate::source::{Configs, PlatformSelection};
use crate::spec::ReferrerPolicy;

/// One referrer the destination lacks (or holds another version of).
#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    /// The manifest it refers to.
    pub subject: Digest,
    /// Its manifest (with `artifactType` and annotations as listed).
    pub descriptor: Descriptor,
    /// `signature`, `attestation`, `SBOM`, or its artifact type.
    pub kind: String,
    /// The cosign tag it is copied under (none for OCI 1.1 referrers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `create`, or `update` when the destination's cosign tag names another manifest.
    pub change: &'static str,
    /// Its manifest, read from the source while planning.
    #[serde(skip)]
    pub manifest: Option<RawManifest>,
    /// Its config and layers.
    #[serde(skip)]
    pub blobs: Vec<Descriptor>,
}

/// What a target does about the referrers of its image.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReferrers {
    /// Referrers to copy.
    pub copy: Vec<Referrer>,
    /// Referrers the destination already holds.
    pub present: usize,
    /// Referrers of the source that are not copied, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_copied: Option<(usize, String)>,
    /// Whether the destination keeps the `sha256-<hex>` referrers tag (a
    /// registry without the referrers API).
    pub fallback_tag: bool,
}

impl TargetReferrers {
    /// `1 signature, 1 SBOM`.
    pub fn kinds(&self) -> String {
        let rank = |k: &str| match k {
            "signature" => 0,
            "attestation" => 1,
            "SBOM" => 2,
            _ => 3,
        };
        let mut by: BTreeMap<(u8, &str), usize> = BTreeMap::new();
        for r in &self.copy {
            *by.entry((rank(&r.kind), r.kind.as_str())).or_default() += 1;
        }
        by.into_iter()
            .map(|((_, k), n)| (k, n))
            .map(|(k, n)| {
                let plural = if n == 1 || k.contains('/') { "" } else { "s" };
                format!("{n} {k}{plural}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What a referrer is, for people and for `referrers: [signature, …]`.
pub fn kind_of(artifact_type: Option<&str>, cosign: Option<CosignKind>) -> String {
    if let Some(k) = cosign {
        return match k {
            CosignKind::Signature => "signature",
            CosignKind::Attestation => "attestation",
            CosignKind::Sbom => "SBOM",
        }
        .to_string();
    }
    let Some(t) = artifact_type else {
        return "artifact".to_string();
    };
    let l = t.to_ascii_lowercase();
    if l.contains("spdx") || l.contains("cyclonedx") || l.contains("syft") || l.contains("sbom") {
        "SBOM".to_string()
    } else if l.contains("signature") || l.contains("simplesigning") || l.contains("sigstore.bundle") {
        "signature".to_string()
    } else if l.contains("in-toto") || l.contains("dsse") || l.contains("attestation") || l.contains("provenance") {
        "attestation".to_string()
    } else {
        t.to_string()
    }
}

/// Whether `policy` takes a referrer of `artifact_type` and `kind`.
fn takes(policy: &ReferrerPolicy, artifact_type: Option<&str>, kind: &str) -> bool {
    policy.takes(artifact_type, Some(kind.to_ascii_lowercase().as_str()))
}

/// A referrer found in the source.
#[derive(Debug, Clone)]
struct Found {
    descriptor: Descriptor,
    tag: Option<String>,
    cosign: Option<CosignKind>,
}

/// What the source holds for one subject.
type SourceAnswer = std::result::Result<Vec<Found>, String>;

/// The source's answers by (store, subject), of the subjects that have
/// referrers or could not be looked up.
type SourceAnswers = HashMap<(Arc<StoreId>, Digest), SourceAnswer>;

/// Each store id once, shared by the lookups that name it: a plan of
/// 100,000 tags asks about 100,000 subjects in a few hundred stores.
#[derive(Default)]
struct StoreIds(HashMap<StoreId, Arc<StoreId>>);

impl StoreIds {
    fn shared(&mut self, id: StoreId) -> Arc<StoreId> {
        self.0.entry(id).or_insert_with_key(|id| Arc::new(id.clone())).clone()
    }
}

/// A subject asked about and not in the answers: it has no referrers.
static NONE_FOUND: SourceAnswer = Ok(Vec::new());

/// Why a target's referrers cannot travel with it, if they cannot.
fn why_not(p: &PlannedTarget, dest: Capabilities) -> Option<String> {
    let t = &p.target;
    if t.chain.changes_content() {
        Some("filters rewrite the image, so its digest changes and they no longer refer to it".into())
    } else if matches!(t.platforms, PlatformSelection::List(_)) {
        Some("a subset of its platforms is taken, so its digest changes and they no longer refer to it".into())
    } else if p.media == MediaNote::Converted || dest.media_types == MediaTypes::Oci {
        Some("?format=oci converts its manifests, so its digest changes and they no longer refer to it".into())
    } else {
        None
    }
}

/// A target's plan for referrers before looking: its source repository,
/// the subjects, and whether they are copied.
struct Want {
    target: usize,
    /// The store the source image is in (a registry repository, a layout).
    source: Arc<StoreId>,
    subjects: Vec<Digest>,
    policy: ReferrerPolicy,
    /// Why they are not copied (they are only counted).
    not_copied: Option<String>,
}

/// The subjects a target's destination will hold: the manifest its tag
/// names and, for an index, every manifest in it.
fn subjects(ctx: &PlanContext, p: &PlannedTarget) -> Option<Vec<Digest>> {
    // The root and, when it is an index, its entries: from the resolution
    // (parsed already; a shown plan has let the bytes go), else from the
    // root the unchanged check read.
    let (root, entries) = match p.resolved.as_ref().and_then(|r| r.root().map(|root| (r, root))) {
        Some((r, root)) => (
            root.digest.clone(),
            r.index
                .as_deref()
                .map(|(_, ix)| ix.manifests.iter().map(|d| d.digest.clone()).collect::<Vec<_>>()),
        ),
        None => match ctx.memo.root(&p.target.source) {
            Some(root) => {
                let entries = match root.parse() {
                    Ok(Manifest::Index(ix)) => Some(ix.manifests.iter().map(|d| d.digest.clone()).collect()),
                    _ => None,
                };
                (root.digest, entries)
            }
            // A target found unchanged by HEADs alone (an image manifest, whose
            // root was never read): its digest is the one subject.
            None => return p.expected.clone().or_else(|| p.source_digest.clone()).map(|d| vec![d]),
        },
    };
    let top = p.expected.clone().unwrap_or_else(|| root.clone());
    let mut out = vec![top.clone()];
    if top == root {
        out.extend(entries.unwrap_or_default());
    }
    Some(out)
}

/// Finds the referrers of every target's image, compares them with each
/// destination, and attaches what to copy to the targets. A target whose
/// image is in place but whose destination lacks a referrer becomes an
/// update. Warnings: destinations that cannot hold referrers (when asked
/// for), referrers the source lost.
pub async fn plan(ctx: &PlanContext, planned: &mut [PlannedTarget], warnings: &mut Vec<String>) {
    plan_targets(ctx, planned, warnings).await;
    // Each subject's answers are in the planned targets now: what the
    // lister kept of them (a few hundred bytes a target) goes.
    ctx.memo.referrers.forget_subjects();
}

async fn plan_targets(ctx: &PlanContext, planned: &mut [PlannedTarget], warnings: &mut Vec<String>) {
    if ctx.write_all {
        return;
    }
    let mut wants: Vec<Want> = Vec::new();
    let mut ids = StoreIds::default();
    for (i, p) in planned.iter().enumerate() {
        if matches!(p.action, Action::Failed { .. }) {
            continue;
        }
        match policy_of(ctx, &p.target) {
            Policy::Look(_) => {}
            Policy::Skip => continue,
            Policy::CannotHold => {
                warnings.push(format!(
                    "{} cannot hold referrers (signatures, SBOMs, attestations): {} is copied without them",
                    p.destination(),
                    p.source()
                ));
                continue;
            }
        }
        if let Some(w) = want(ctx, i, p, &mut ids) {
            wants.push(w);
        }
    }
    if wants.is_empty() {
        return;
    }

    // The source: each (repository, subject) looked up once (the cheap
    // unchanged check may have asked already: the answers are kept).
    // (Inserted one by one: collected, the map would reserve room for a
    // store per target where a repository's targets share one.)
    let mut source_of: HashMap<Arc<StoreId>, Reference> = HashMap::new();
    for w in &wants {
        if !source_of.contains_key(&w.source) {
            source_of.insert(w.source.clone(), planned[w.target].target.source.clone());
        }
    }
    // (An image found mirrored and unchanged whose source had no
    // referrers a short while ago is not asked about: its answer is none.)
    let asks = super::distinct(wants.iter().flat_map(|w| {
        let p = &planned[w.target];
        w.subjects
            .iter()
            .filter(move |s| !known_unreferred(ctx, p, &w.source, s))
            .map(|s| (w.source.clone(), s.clone()))
    }));
    let lister = &ctx.memo.referrers;
    // Only the subjects that have referrers (or whose lookup failed) are
    // kept: most have none, and every subject was asked about. Those
    // without are remembered in the cache directory (see
    // `crate::blob_locations`) when the plan is applied.
    let remembers_unreferred = ctx.cache.is_some() && !ctx.shown_only;
    let mut unreferred: Vec<(Arc<StoreId>, Digest)> = Vec::new();
    let mut found: SourceAnswers = SourceAnswers::default();
    let mut answers = stream::iter(asks)
        .map(|k| {
            let source = &source_of[&k.0];
            async move {
                let answer = lister.source(ctx, source, &k.1).await;
                (k, answer)
            }
        })
        .buffer_unordered(PLAN_CONCURRENCY);
    while let Some((k, answer)) = answers.next().await {
        match answer {
            Ok(list) if list.is_empty() => {
                if remembers_unreferred {
                    unreferred.push(k);
                }
            }
            answer => {
                found.insert(k, answer);
            }
        }
    }
    drop(answers);
    remember_unreferred(ctx, unreferred).await;
    let found = |k: &(Arc<StoreId>, Digest)| Some(found.get(k).unwrap_or(&NONE_FOUND));

    // The destinations: each (store, subject) once, asking about the
    // cosign tags the source has.
    let mut dest_asks: Vec<(usize, Digest, Vec<String>)> = Vec::new();
    let mut dest_seen: HashSet<(Arc<StoreId>, Digest)> = HashSet::new();
    for w in wants.iter().filter(|w| w.not_copied.is_none()) {
        let p = &planned[w.target];
        let store = ids.shared(StoreId::of(&p.target.destination));
        for s in &w.subjects {
            if !dest_seen.insert((store.clone(), s.clone())) {
                continue;
            }
            let answer = found(&(w.source.clone(), s.clone()));
            if !worth_asking(ctx, &p.target.destination, s, answer) {
                continue;
            }
            let tags = match answer {
                Some(Ok(list)) => list.iter().filter_map(|f| f.tag.clone()).collect(),
                _ => Vec::new(),
            };
            dest_asks.push((w.target, s.clone(), tags));
        }
    }
    // Only the answers that hold something (or failed) are kept, as at the
    // source: most subjects have nothing at the destination.
    let mut held = Held::default();
    let mut answers = stream::iter(dest_asks)
        .map(|(ti, subject, tags)| {
            let dest = planned[ti].target.destination.clone();
            async move {
                let answer = lister.destination(ctx, &dest, &subject, &tags).await;
                (StoreId::of(&dest), subject, answer)
            }
        })
        .buffer_unordered(PLAN_CONCURRENCY);
    while let Some((store, subject, answer)) = answers.next().await {
        held.insert(ids.shared(store), subject, answer);
    }
    drop(answers);

    // Per target: what to copy.
    let mut manifests_wanted: Vec<(Arc<StoreId>, Digest)> = Vec::new();
    let mut manifests_asked: HashSet<(Arc<StoreId>, Digest)> = HashSet::new();
    let mut lost_warned: HashSet<(Arc<StoreId>, Digest)> = HashSet::new();
    for w in &wants {
        let p = &mut planned[w.target];
        let store = ids.shared(StoreId::of(&p.target.destination));
        let keeps_referrers_tag = ctx.capabilities(&p.target.destination).referrers_tag;
        let mut tr = TargetReferrers::default();
        let mut count_not_copied = 0;
        for s in &w.subjects {
            let list = match found(&(w.source.clone(), s.clone())) {
                Some(Ok(list)) => list,
                Some(Err(e)) => {
                    warnings.push(format!(
                        "cannot list the referrers of {} ({}): {e}; it is copied without them",
                        p.source(),
                        s.short()
                    ));
                    continue;
                }
                None => continue,
            };
            let taken: Vec<&Found> = list
                .iter()
                .filter(|f| {
                    let kind = kind_of(f.descriptor.artifact_type(), f.cosign);
                    takes(&w.policy, f.descriptor.artifact_type(), &kind)
                })
                .collect();
            if w.not_copied.is_some() {
                count_not_copied += taken.len();
                continue;
            }
            let dest = match held.get(&store, s) {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    warnings.push(format!(
                        "cannot list the referrers {} holds for {}: {e}; they are copied again",
                        p.destination(),
                        s.short()
                    ));
                    HeldReferrers::default()
                }
                None => HeldReferrers::default(),
            };
            tr.fallback_tag = keeps_referrers_tag && !dest.native;
            for f in taken {
                let (there, change) = match &f.tag {
                    Some(tag) => match dest.tags.get(tag) {
                        Some(Some(d)) if *d == f.descriptor.digest => (true, "create"),
                        Some(Some(_)) => (false, "update"),
                        _ => (false, "create"),
                    },
                    None => (dest.listed.contains(&f.descriptor.digest), "create"),
                };
                if there {
                    tr.present += 1;
                    continue;
                }
                let k = (w.source.clone(), f.descriptor.digest.clone());
                if manifests_asked.insert(k.clone()) {
                    manifests_wanted.push(k);
                }
                tr.copy.push(Referrer {
                    subject: s.clone(),
                    descriptor: f.descriptor.clone(),
                    kind: kind_of(f.descriptor.artifact_type(), f.cosign),
                    tag: f.tag.clone(),
                    change,
                    manifest: None,
                    blobs: Vec::new(),
                });
            }
            // What the destination lists that the source no longer has.
            let source_has: HashSet<&Digest> = list.iter().map(|f| &f.descriptor.digest).collect();
            let lost: Vec<&Digest> = dest.listed.iter().filter(|d| !source_has.contains(d)).collect();
            if !lost.is_empty() && lost_warned.insert((store.clone(), s.clone())) {
                let mut names: Vec<String> = lost.iter().map(|d| d.short().to_string()).collect();
                names.sort();
                warnings.push(format!(
                    "{} holds {} referrer{} of {} that the source {} no longer has ({}); occy leaves them",
                    p.destination(),
                    lost.len(),
                    if lost.len() == 1 { "" } else { "s" },
                    s.short(),
                    p.source(),
                    names.join(", ")
                ));
            }
        }
        if let Some(why) = &w.not_copied {
            if count_not_copied > 0 {
                tr.not_copied = Some((count_not_copied, why.clone()));
            }
        }
        if !tr.copy.is_empty() || tr.present > 0 || tr.not_copied.is_some() {
            p.referrers = Some(Box::new(tr));
        }
    }

    remember_held(ctx, planned, &wants, &held).await;

    // The manifests of the referrers to copy, read once each.
    let manifests: HashMap<(Arc<StoreId>, Digest), Result<RawManifest>> = stream::iter(manifests_wanted)
        .map(|k| {
            let source = &source_of[&k.0];
            async move {
                let r = match ctx.store(source) {
                    Ok(store) => store
                        .manifest(k.1.as_str())
                        .await
                        .and_then(|m| m.ok_or_else(|| Error::NotFound(format!("referrer {} is not in {}", k.1, k.0)))),
                    Err(e) => Err(e),
                };
                (k, r)
            }
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    for w in &wants {
        let p = &mut planned[w.target];
        let source = p.source().into_owned();
        let Some(tr) = p.referrers.as_mut() else { continue };
        tr.copy.retain_mut(|r| {
            let k = (w.source.clone(), r.descriptor.digest.clone());
            let raw = match manifests.get(&k) {
                Some(Ok(raw)) => raw.clone(),
                Some(Err(e)) => {
                    warnings.push(format!(
                        "cannot read referrer {} of {source}: {e}; it is not copied",
                        r.descriptor.digest
                    ));
                    return false;
                }
                None => return false,
            };
            match serde_json::from_slice::<ImageManifest>(&raw.bytes) {
                Ok(m) if raw.parse().is_ok_and(|x| matches!(x, Manifest::Image(_))) => {
                    r.blobs = std::iter::once(m.config.clone())
                        .chain(m.layers.iter().cloned())
                        .collect();
                    r.descriptor.media_type = raw.media_type.clone();
                    r.descriptor.size = raw.bytes.len() as u64;
                    if r.descriptor.artifact_type().is_none() {
                        r.descriptor.set_artifact_type(
                            m.artifact_type
                                .clone()
                                .or_else(|| (m.subject.is_some()).then(|| m.config.media_type.to_string())),
                        );
                    }
                    r.manifest = Some(raw);
                    true
                }
                _ => {
                    warnings.push(format!(
                        "referrer {} of {source} is not an image manifest ({}); it is not copied",
                        r.descriptor.digest, raw.media_type
                    ));
                    false
                }
            }
        });
    }

    // An image in place whose destination lacks referrers is an update:
    // resolved now (the cheap path did not), so the graph can commit it.
    for w in &wants {
        let p = &mut planned[w.target];
        let needs = p.referrers.as_ref().is_some_and(|r| !r.copy.is_empty());
        if !needs || p.action != Action::Unchanged {
            continue;
        }
        if p.resolved.is_none() {
            match super::resolve_reading(ctx, &p.target.source, &p.target.platforms, Configs::Skip).await {
                Ok(r) => {
                    match super::for_destination(p, Arc::new(r), ctx.capabilities(&p.target.destination).media_types) {
                        Ok(r) => p.resolved = Some(r),
                        Err(e) => {
                            warnings.push(format!("{}: its referrers are not copied: {e}", p.destination()));
                            p.referrers = None;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    warnings.push(format!("{}: its referrers are not copied: {e}", p.destination()));
                    p.referrers = None;
                    continue;
                }
            }
        }
        p.action = Action::Update;
    }
}

/// Whether planning looks up the referrers of a target's image.
enum Policy {
    /// Yes, taking those the policy names.
    Look(ReferrerPolicy),
    /// No: the entry says `referrers: none`, or the source keeps none.
    Skip,
    /// No: the destination cannot hold them, and the entry asked for them
    /// (the plan warns).
    CannotHold,
}

fn policy_of(ctx: &PlanContext, t: &super::Target) -> Policy {
    let entry = &ctx.spec.entries[t.entry];
    let explicit = entry.referrers.is_some();
    let policy = entry.referrers.clone().unwrap_or(ReferrerPolicy::All);
    if policy == ReferrerPolicy::None {
        return Policy::Skip;
    }
    if !ctx.capabilities(&t.destination).holds_referrers {
        return if explicit { Policy::CannotHold } else { Policy::Skip };
    }
    if !ctx.capabilities(&t.source).holds_referrers {
        return Policy::Skip;
    }
    Policy::Look(policy)
}

/// What planning looks up for target `i` (`p`): its source store, the
/// subjects, whether they are copied; None when nothing is looked up.
fn want(ctx: &PlanContext, i: usize, p: &PlannedTarget, ids: &mut StoreIds) -> Option<Want> {
    if matches!(p.action, Action::Failed { .. }) {
        return None;
    }
    let Policy::Look(policy) = policy_of(ctx, &p.target) else {
        return None;
    };
    let subjects = subjects(ctx, p)?;
    let not_copied = why_not(p, ctx.capabilities(&p.target.destination));
    let subjects = if not_copied.is_some() {
        // Counted on the source's own manifest alone.
        vec![p.source_digest.clone()?]
    } else {
        subjects
    };
    Some(Want {
        target: i,
        source: ids.shared(StoreId::of(&p.target.source)),
        subjects,
        policy,
        not_copied,
    })
}

/// Lists the tags of the source stores of `targets` whose referrers the
/// plan looks up, all at once: the lookups of each subject start from the
/// listing (cosign's tags, the referrers tag), so it need not wait for the
/// subject's digest.
pub(super) fn list_sources_early<'a>(
    ctx: &'a PlanContext,
    targets: &[super::Target],
) -> impl std::future::Future<Output = ()> + 'a {
    let mut seen: HashSet<StoreId> = HashSet::new();
    // A repository whose images had no referrers a short while ago is
    // listed only if a target needs it (an image not mirrored yet).
    let sources: Vec<Reference> = targets
        .iter()
        .filter(|t| matches!(policy_of(ctx, t), Policy::Look(_)))
        .filter(|t| seen.insert(StoreId::of(&t.source)) && !recently_looked_at(ctx, &t.source))
        .map(|t| t.source.clone())
        .collect();
    stream::iter(sources).for_each_concurrent(PLAN_CONCURRENCY, move |source| async move {
        if let Ok(store) = ctx.store(&source) {
            ctx.memo.referrers.tags_of(ctx, store.as_ref()).await;
        }
    })
}

/// Whether the cache directory remembers looking at the referrers of an
/// image of `source`'s repository a short while ago (an applied run that
/// found none there: see [`crate::blob_locations::UNREFERRED_FRESH_MILLIS`]).
pub(super) fn recently_looked_at(ctx: &PlanContext, source: &Reference) -> bool {
    let id = StoreId::of(source);
    match (ctx.cache.as_ref(), id.host(), id.repository_name()) {
        (Some(cache), Some(host), Some(repo)) => {
            ctx.memo
                .remembered(Some(cache))
                .unreferred_repository(host, repo, crate::blob_locations::now_millis())
        }
        _ => false,
    }
}

/// Looks up the referrers of `p` (found unchanged by the cheap check) on
/// both sides now, as [`plan`] will: their answers are kept, so the
/// lookups of one target follow its HEADs instead of waiting for every
/// target's.
pub(super) async fn look_up_early(ctx: &PlanContext, p: &PlannedTarget) {
    let Some(w) = want(ctx, 0, p, &mut StoreIds::default()) else {
        return;
    };
    let lister = &ctx.memo.referrers;
    for s in &w.subjects {
        let found = if known_unreferred(ctx, p, &w.source, s) {
            Ok(Vec::new())
        } else {
            lister.source(ctx, &p.target.source, s).await
        };
        if w.not_copied.is_some() || !worth_asking(ctx, &p.target.destination, s, Some(&found)) {
            continue;
        }
        let tags: Vec<String> = match &found {
            Ok(list) => list.iter().filter_map(|f| f.tag.clone()).collect(),
            Err(_) => Vec::new(),
        };
        // Kept for the plan, which says what a failure means.
        let _ = lister.destination(ctx, &p.target.destination, s, &tags).await;
    }
}

/// Whether to ask `dest` which referrers of `subject` it holds, given the
/// source's answer: always, unless the source has none and the cache
/// directory remembers none there (a registry repository where occy never
/// saw nor put referrers of it; what it holds then is not occy's to warn
/// about). Without a cache, always.
fn worth_asking(ctx: &PlanContext, dest: &Reference, subject: &Digest, source: Option<&SourceAnswer>) -> bool {
    let Some(Ok(found)) = source else { return true };
    if !found.is_empty() || ctx.cache.is_none() {
        return true;
    }
    let id = StoreId::of(dest);
    let (Some(host), Some(repo)) = (id.host(), id.repository_name()) else {
        return true;
    };
    ctx.memo
        .remembered(ctx.cache.as_ref())
        .referrers_held(host, repo, subject)
        .is_some()
}

/// Whether the referrers of `subject` at the source of `p` need no look:
/// `p` found its image mirrored and unchanged, and the cache directory
/// remembers that the source had none of it a short while ago
/// ([`crate::blob_locations::UNREFERRED_FRESH_MILLIS`]).
fn known_unreferred(ctx: &PlanContext, p: &PlannedTarget, source: &StoreId, subject: &Digest) -> bool {
    let (Some(cache), Some(host), Some(repo)) = (ctx.cache.as_ref(), source.host(), source.repository_name()) else {
        return false;
    };
    matches!(p.action, Action::Unchanged)
        && ctx
            .memo
            .remembered(Some(cache))
            .unreferred_since(host, repo, subject, crate::blob_locations::now_millis())
            .is_some()
}

/// Remembers in the cache directory the registry sources that had no
/// referrers of a subject when this plan looked.
async fn remember_unreferred(ctx: &PlanContext, looked: Vec<(Arc<StoreId>, Digest)>) {
    let Some(cache) = ctx.cache.as_ref() else { return };
    let looked: Vec<ReferrersSeen> = looked
        .into_iter()
        .filter_map(|(id, subject)| {
            Some(ReferrersSeen {
                host: id.host()?.to_string(),
                repository: id.repository_name()?.to_string(),
                subject,
            })
        })
        .collect();
    cache.blob_locations().record_unreferred(looked).await;
}

/// How long a remembered "referrers there" stands before the plan writes
/// it again (the file keeps the most recent entries).
const REFRESH_MILLIS: u64 = 12 * 3600 * 1000;

/// Remembers in the cache directory the registry repositories that hold
/// referrers of a subject now, or will once this plan is applied, so a
/// later plan asks them again when the source has lost its referrers. A
/// plan that is only shown (`--plan`) records nothing, as with blobs.
async fn remember_held(ctx: &PlanContext, planned: &[PlannedTarget], wants: &[Want], held: &Held) {
    let Some(cache) = ctx.cache.as_ref().filter(|_| !ctx.shown_only) else {
        return;
    };
    let holds = |h: &HeldAnswer| match h {
        Ok(h) => !h.listed.is_empty() || h.tags.values().any(Option::is_some),
        Err(_) => false,
    };
    let mut there: HashSet<(StoreId, Digest)> = held
        .answers
        .iter()
        .filter(|(_, h)| holds(h))
        .map(|((id, d), _)| (StoreId::clone(id), d.clone()))
        .collect();
    for w in wants {
        let p = &planned[w.target];
        let Some(tr) = &p.referrers else { continue };
        let store = StoreId::of(&p.target.destination);
        there.extend(tr.copy.iter().map(|r| (store.clone(), r.subject.clone())));
    }
    let remembered = ctx.memo.remembered(Some(cache));
    let now = crate::blob_locations::now_millis();
    let fresh: Vec<ReferrersSeen> = there
        .into_iter()
        .filter_map(|(id, subject)| {
            let (host, repo) = (id.host()?, id.repository_name()?);
            let recent = remembered
                .referrers_held(host, repo, &subject)
                .is_some_and(|at| now.saturating_sub(at) < REFRESH_MILLIS);
            (!recent).then(|| ReferrersSeen {
                host: host.to_string(),
                repository: repo.to_string(),
                subject,
            })
        })
        .collect();
    cache.blob_locations().record_referred(fresh).await;
}

/// What a destination holds for one subject.
type HeldAnswer = std::result::Result<HeldReferrers, String>;

/// What the destinations hold, per (store, subject) asked about: the
/// answers that found nothing are one shared empty answer (natively listed
/// or not), and a plan of 100,000 tags keeps only the others.
#[derive(Default)]
struct Held {
    answers: HashMap<(Arc<StoreId>, Digest), HeldAnswer>,
    empty_native: HashSet<(Arc<StoreId>, Digest)>,
    empty: HashSet<(Arc<StoreId>, Digest)>,
}

impl Held {
    fn insert(&mut self, store: Arc<StoreId>, subject: Digest, answer: HeldAnswer) {
        match &answer {
            Ok(h) if h.listed.is_empty() && h.tags.values().all(Option::is_none) => {
                if h.native {
                    self.empty_native.insert((store, subject));
                } else {
                    self.empty.insert((store, subject));
                }
            }
            _ => {
                self.answers.insert((store, subject), answer);
            }
        }
    }

    fn get(&self, store: &Arc<StoreId>, subject: &Digest) -> Option<HeldAnswer> {
        let k = (store.clone(), subject.clone());
        if let Some(a) = self.answers.get(&k) {
            return Some(a.clone());
        }
        if self.empty_native.contains(&k) {
            return Some(Ok(HeldReferrers {
                native: true,
                ..HeldReferrers::default()
            }));
        }
        self.empty.contains(&k).then(|| Ok(HeldReferrers::default()))
    }
}

/// Answers by question, each made once (a second asker waits for the
/// first's answer).
type Answers<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// The answer kept under `key` in `map`, made by `make` the first time.
async fn once<K, V, F, Fut>(map: &Answers<K, V>, key: K, make: F) -> V
where
    K: std::hash::Hash + Eq,
    V: Clone,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = V>,
{
    let cell = {
        let mut m = match map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(key).or_default().clone()
    };
    cell.get_or_init(make).await.clone()
}

/// Looks referrers up in the stores, each question once per plan: a
/// store's tags listed once (to spare asking for tags that are not there),
/// each subject asked once of its source store and once of each
/// destination. Kept in the plan memo, so lookups started early (by the
/// cheap unchanged check) are the ones [`plan`] reads, and lookups of
/// different stores run at once.
#[derive(Default)]
pub struct Lister {
    tags: Answers<StoreId, Option<Arc<HashSet<String>>>>,
    sources: Answers<(StoreId, Digest), SourceAnswer>,
    destinations: Answers<(StoreId, Digest, Vec<String>), HeldAnswer>,
}

impl Lister {
    /// Lets go of the answers about each subject (the stores' tag
    /// listings stay).
    fn forget_subjects(&self) {
        if let Ok(mut m) = self.sources.lock() {
            *m = HashMap::new();
        }
        if let Ok(mut m) = self.destinations.lock() {
            *m = HashMap::new();
        }
    }
    /// The tags of a store: the plan's listing when it made one, else one
    /// listing here (None when it cannot be listed).
    async fn tags_of(&self, ctx: &PlanContext, store: &dyn Store) -> Option<Arc<HashSet<String>>> {
        let id = store.id();
        if let (Some(host), Some(repo)) = (id.host(), id.repository_name()) {
            if let Some(known) = ctx.memo.listed_tags(host, repo) {
                return Some(known);
            }
        }
        once(&self.tags, id.clone(), || async {
            match store.tags().await {
                Ok(t) => t.map(|t| Arc::new(t.into_iter().collect())),
                Err(e) => {
                    tracing::debug!(store = %id, "listing tags for referrers failed ({e}); asking tag by tag");
                    None
                }
            }
        })
        .await
    }

    /// What the source store holds that refers to `subject`: its OCI
    /// referrers and cosign's tags of it.
    async fn source(&self, ctx: &PlanContext, source: &Reference, subject: &Digest) -> SourceAnswer {
        let key = (StoreId::of(source), subject.clone());
        once(&self.sources, key, || async {
            self.look_in_source(ctx, source, subject)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn look_in_source(&self, ctx: &PlanContext, source: &Reference, subject: &Digest) -> Result<Vec<Found>> {
        let store = ctx.store(source)?;
        let known = self.tags_of(ctx, store.as_ref()).await;
        let cosign: Vec<String> = CosignKind::ALL.iter().map(|k| cosign_tag(subject, *k)).collect();
        let answer = store.referrers(subject, &cosign, known.as_deref()).await?;
        let mut out: Vec<Found> = answer
            .listed
            .into_iter()
            .map(|descriptor| Found {
                descriptor,
                tag: None,
                cosign: None,
            })
            .collect();
        for (tag, named) in answer.tags {
            let Some(descriptor) = named else { continue };
            let cosign = parse_cosign_tag(&tag).map(|(_, k)| k);
            out.push(Found {
                descriptor,
                tag: Some(tag),
                cosign,
            });
        }
        Ok(out)
    }

    /// What a destination holds that refers to `subject`, and what its
    /// cosign tags `tags` name.
    async fn destination(&self, ctx: &PlanContext, dest: &Reference, subject: &Digest, tags: &[String]) -> HeldAnswer {
        let key = (StoreId::of(dest), subject.clone(), tags.to_vec());
        once(&self.destinations, key, || async {
            look_in_destination(ctx, dest, subject, tags)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }
}

async fn look_in_destination(
    ctx: &PlanContext,
    dest: &Reference,
    subject: &Digest,
    tags: &[String],
) -> Result<HeldReferrers> {
    let store = ctx.store(dest)?;
    let id = store.id();
    let mut known = None;
    if let (Some(host), Some(repo)) = (id.host(), id.repository_name()) {
        if ctx.memo.repository_empty(host, repo) {
            return Ok(HeldReferrers::default());
        }
        known = ctx.memo.listed_tags(host, repo);
    }
    store.held_referrers(subject, tags, known.as_deref()).await
}

/// What refers to `subject` in the store `image` names, as `verify:` looks
/// for signatures there: the referrers API where the registry offers it,
/// else the referrers tag; an OCI layout's `index.json`. Cosign's tags are
/// not included.
pub async fn listed(ctx: &PlanContext, image: &Reference, subject: &Digest) -> Result<Vec<Descriptor>> {
    let store = ctx.store(image)?;
    Ok(store.referrers(subject, &[], None).await?.listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_for_people() {
        assert_eq!(kind_of(Some("application/spdx+json"), None), "SBOM");
        assert_eq!(kind_of(Some("application/vnd.cyclonedx+json"), None), "SBOM");
        assert_eq!(kind_of(None, Some(CosignKind::Signature)), "signature");
        assert_eq!(kind_of(Some("application/vnd.in-toto+json"), None), "attestation");
        assert_eq!(kind_of(Some("application/x-custom"), None), "application/x-custom");
        let policy = ReferrerPolicy::Types(vec!["signature".into(), "application/spdx+json".into()]);
        assert!(takes(&policy, None, "signature"));
        assert!(takes(&policy, Some("application/spdx+json"), "SBOM"));
        assert!(!takes(&policy, Some("application/vnd.cyclonedx+json"), "SBOM"));
        assert!(takes(
            &ReferrerPolicy::Types(vec!["sbom".into()]),
            Some("application/vnd.cyclonedx+json"),
            "SBOM"
        ));
    }

    #[test]
    fn counts_read_like_the_plan() {
        let d = Digest::of(b"x");
        let r = |kind: &str| Referrer {
            subject: d.clone(),
            descriptor: Descriptor::new("m", d.clone(), 1),
            kind: kind.into(),
            tag: None,
            change: "create",
            manifest: None,
            blobs: Vec::new(),
        };
        let tr = TargetReferrers {
            copy: vec![r("signature"), r("SBOM")],
            ..Default::default()
        };
        assert_eq!(tr.kinds(), "1 signature, 1 SBOM");
    }
}

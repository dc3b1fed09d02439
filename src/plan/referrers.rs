//! Referrers in the plan: what refers to each image a target copies —
//! OCI 1.1 referrers (through the referrers API where the source offers it,
//! else the `sha256-<hex>` referrers tag) and cosign's
//! `sha256-<hex>.sig/.att/.sbom` tags — found in the source, compared with
//! the destination, and those missing there attached to the target, so the
//! work graph copies each like an image (digests kept) after its subject.
//! An image whose digest changes on the way (filters, a platform subset,
//! `?format=oci`) takes none: the plan says why.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::expand::RegistryAccess;
use super::{Action, MediaNote, PlanContext, PlannedTarget, PLAN_CONCURRENCY};
use crate::error::{Error, Result};
use crate::image::referrers::{cosign_tag, fallback_tag, CosignKind};
use crate::image::{Descriptor, Digest, ImageManifest, Manifest, RawManifest};
use crate::reference::Reference;
use crate::registry::RegistryClient;
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

/// What a destination holds for one subject.
#[derive(Debug, Clone, Default)]
struct DestAnswer {
    /// Referrers listed by the API, the referrers tag or `index.json`.
    listed: HashSet<Digest>,
    /// Each cosign tag asked about → the manifest it names.
    tags: HashMap<String, Option<Digest>>,
    /// The destination offers the referrers API (no referrers tag to keep).
    api: bool,
}

/// Why a target's referrers cannot travel with it, if they cannot.
fn why_not(p: &PlannedTarget) -> Option<String> {
    let t = &p.target;
    if t.chain.changes_content() {
        Some("filters rewrite the image, so its digest changes and they no longer refer to it".into())
    } else if matches!(t.platforms, PlatformSelection::List(_)) {
        Some("a subset of its platforms is taken, so its digest changes and they no longer refer to it".into())
    } else if p.media == MediaNote::Converted || matches!(t.destination, Reference::Oci { oci_format: true, .. }) {
        Some("?format=oci converts its manifests, so its digest changes and they no longer refer to it".into())
    } else {
        None
    }
}

/// A target's plan for referrers before looking: its source repository,
/// the subjects, and whether they are copied.
struct Want {
    target: usize,
    /// The source registry host, or "" for an OCI layout…
    host: String,
    /// …and its repository, or the layout's directory.
    repo: String,
    subjects: Vec<Digest>,
    policy: ReferrerPolicy,
    /// Why they are not copied (they are only counted).
    not_copied: Option<String>,
}

/// The subjects a target's destination will hold: the manifest its tag
/// names and, for an index, every manifest in it.
fn subjects(ctx: &PlanContext, p: &PlannedTarget) -> Option<Vec<Digest>> {
    let root = p
        .resolved
        .as_ref()
        .and_then(|r| r.root().cloned())
        .or_else(|| ctx.memo.root(&p.target.source));
    // A target found unchanged by HEADs alone (an image manifest, whose
    // root was never read): its digest is the one subject.
    let Some(root) = root else {
        return p.expected.clone().or_else(|| p.source_digest.clone()).map(|d| vec![d]);
    };
    let top = p.expected.clone().unwrap_or_else(|| root.digest.clone());
    let mut out = vec![top.clone()];
    if top == root.digest {
        if let Ok(Manifest::Index(ix)) = root.parse() {
            out.extend(ix.manifests.iter().map(|d| d.digest.clone()));
        }
    }
    Some(out)
}

/// Finds the referrers of every target's image, compares them with each
/// destination, and attaches what to copy to the targets. A target whose
/// image is in place but whose destination lacks a referrer becomes an
/// update. Warnings: destinations that cannot hold referrers (when asked
/// for), referrers the source lost.
pub async fn plan(ctx: &PlanContext, planned: &mut [PlannedTarget], warnings: &mut Vec<String>) {
    if ctx.write_all {
        return;
    }
    let mut wants: Vec<Want> = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        if matches!(p.action, Action::Failed { .. }) {
            continue;
        }
        let entry = &ctx.spec.entries[p.target.entry];
        let explicit = entry.referrers.is_some();
        let policy = entry.referrers.clone().unwrap_or(ReferrerPolicy::All);
        if policy == ReferrerPolicy::None {
            continue;
        }
        if !crate::sink::kind::of(&p.target.destination).holds_referrers {
            if explicit {
                warnings.push(format!(
                    "{} cannot hold referrers (signatures, SBOMs, attestations): {} is copied without them",
                    p.destination, p.source
                ));
            }
            continue;
        }
        let (host, repo) = match &p.target.source {
            Reference::Registry(src) => (src.host.clone(), src.repository.clone()),
            Reference::Oci { path, .. } => (String::new(), path.display().to_string()),
            _ => continue,
        };
        let Some(subjects) = subjects(ctx, p) else { continue };
        let not_copied = why_not(p);
        let subjects = if not_copied.is_some() {
            // Counted on the source's own manifest alone.
            match p.source_digest.clone() {
                Some(d) => vec![d],
                None => continue,
            }
        } else {
            subjects
        };
        wants.push(Want {
            target: i,
            host,
            repo,
            subjects,
            policy,
            not_copied,
        });
    }
    if wants.is_empty() {
        return;
    }

    // The source: each (repository, subject) looked up once.
    let asks = super::distinct(
        wants
            .iter()
            .flat_map(|w| w.subjects.iter().map(|s| (w.host.clone(), w.repo.clone(), s.clone()))),
    );
    let lister = Lister::default();
    let found: HashMap<(String, String, Digest), SourceAnswer> = stream::iter(asks)
        .map(|k| {
            let lister = &lister;
            async move {
                let answer = lister.source(ctx, &k.0, &k.1, &k.2).await.map_err(|e| e.to_string());
                (k, answer)
            }
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;

    // The destinations: each (store, subject) once, asking about the
    // cosign tags the source has.
    let mut dest_asks: Vec<(usize, Digest, Vec<String>)> = Vec::new();
    let mut dest_seen: HashSet<(String, Digest)> = HashSet::new();
    for w in wants.iter().filter(|w| w.not_copied.is_none()) {
        let p = &planned[w.target];
        let store = super::graph::Store::of(&p.target.destination).key;
        for s in &w.subjects {
            if !dest_seen.insert((store.clone(), s.clone())) {
                continue;
            }
            let tags = match found.get(&(w.host.clone(), w.repo.clone(), s.clone())) {
                Some(Ok(list)) => list.iter().filter_map(|f| f.tag.clone()).collect(),
                _ => Vec::new(),
            };
            dest_asks.push((w.target, s.clone(), tags));
        }
    }
    let held: HashMap<(String, Digest), std::result::Result<DestAnswer, String>> = stream::iter(dest_asks)
        .map(|(ti, subject, tags)| {
            let lister = &lister;
            let dest = planned[ti].target.destination.clone();
            async move {
                let key = (super::graph::Store::of(&dest).key, subject.clone());
                let answer = lister
                    .destination(ctx, &dest, &subject, &tags)
                    .await
                    .map_err(|e| e.to_string());
                (key, answer)
            }
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;

    // Per target: what to copy.
    let mut manifests_wanted: Vec<(String, String, Digest)> = Vec::new();
    let mut manifests_asked: HashSet<(String, String, Digest)> = HashSet::new();
    let mut lost_warned: HashSet<(String, Digest)> = HashSet::new();
    for w in &wants {
        let p = &mut planned[w.target];
        let store = super::graph::Store::of(&p.target.destination).key;
        let mut tr = TargetReferrers::default();
        let mut count_not_copied = 0;
        for s in &w.subjects {
            let list = match found.get(&(w.host.clone(), w.repo.clone(), s.clone())) {
                Some(Ok(list)) => list,
                Some(Err(e)) => {
                    warnings.push(format!(
                        "cannot list the referrers of {} ({}): {e}; it is copied without them",
                        p.source,
                        s.short()
                    ));
                    continue;
                }
                None => continue,
            };
            let taken: Vec<&Found> = list
                .iter()
                .filter(|f| {
                    let kind = kind_of(f.descriptor.artifact_type.as_deref(), f.cosign);
                    takes(&w.policy, f.descriptor.artifact_type.as_deref(), &kind)
                })
                .collect();
            if w.not_copied.is_some() {
                count_not_copied += taken.len();
                continue;
            }
            let dest = match held.get(&(store.clone(), s.clone())) {
                Some(Ok(d)) => d.clone(),
                Some(Err(e)) => {
                    warnings.push(format!(
                        "cannot list the referrers {} holds for {}: {e}; they are copied again",
                        p.destination,
                        s.short()
                    ));
                    DestAnswer::default()
                }
                None => DestAnswer::default(),
            };
            tr.fallback_tag = !dest.api && matches!(p.target.destination, Reference::Registry(_));
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
                let k = (w.host.clone(), w.repo.clone(), f.descriptor.digest.clone());
                if manifests_asked.insert(k.clone()) {
                    manifests_wanted.push(k);
                }
                tr.copy.push(Referrer {
                    subject: s.clone(),
                    descriptor: f.descriptor.clone(),
                    kind: kind_of(f.descriptor.artifact_type.as_deref(), f.cosign),
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
                    p.destination,
                    lost.len(),
                    if lost.len() == 1 { "" } else { "s" },
                    s.short(),
                    p.source,
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
            p.referrers = Some(tr);
        }
    }

    // The manifests of the referrers to copy, read once each.
    let manifests: HashMap<(String, String, Digest), Result<RawManifest>> = stream::iter(manifests_wanted)
        .map(|k| async move {
            let r = if k.0.is_empty() {
                layout_manifest(std::path::Path::new(&k.1), &k.2)
            } else {
                match ctx.client(&k.0) {
                    Ok(c) => c.get_manifest(&k.1, &k.2.to_string()).await,
                    Err(e) => Err(e),
                }
            };
            (k, r)
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    for w in &wants {
        let p = &mut planned[w.target];
        let Some(tr) = p.referrers.as_mut() else { continue };
        let source = p.source.clone();
        tr.copy.retain_mut(|r| {
            let k = (w.host.clone(), w.repo.clone(), r.descriptor.digest.clone());
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
                    if r.descriptor.artifact_type.is_none() {
                        r.descriptor.artifact_type = m
                            .artifact_type
                            .clone()
                            .or_else(|| (m.subject.is_some()).then(|| m.config.media_type.clone()));
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
                            warnings.push(format!("{}: its referrers are not copied: {e}", p.destination));
                            p.referrers = None;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    warnings.push(format!("{}: its referrers are not copied: {e}", p.destination));
                    p.referrers = None;
                    continue;
                }
            }
        }
        p.action = Action::Update;
    }
}

/// A repository's tags, None when they cannot be listed.
type ListedTags = Option<HashSet<String>>;

/// Looks referrers up, remembering per registry host whether it offers
/// the referrers API and per repository its tags.
#[derive(Default)]
struct Lister {
    /// host → whether it answered the referrers API.
    /// host → whether it offers the referrers API, learned by the first
    /// lookup there while the others wait (a registry without it costs one 404).
    api: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<bool>>>>,
    /// (host, repository) → its tags (listed once).
    tags: tokio::sync::Mutex<HashMap<(String, String), ListedTags>>,
    /// OCI layout → what refers to each subject in it (scanned once).
    layouts: std::sync::Mutex<HashMap<std::path::PathBuf, Arc<LayoutReferrers>>>,
}

/// Subject → what an OCI layout lists that refers to it.
type LayoutReferrers = HashMap<Digest, Vec<Found>>;

impl Lister {
    /// What the OCI layout at `path` lists that refers to `subject`: the
    /// layout is scanned once per plan, not once per subject.
    fn layout_referrers(&self, path: &std::path::Path, subject: &Digest) -> Vec<Found> {
        let known = self.layouts.lock().ok().and_then(|m| m.get(path).cloned());
        let all = match known {
            Some(all) => all,
            None => {
                let all = Arc::new(scan_layout(path));
                if let Ok(mut m) = self.layouts.lock() {
                    m.insert(path.to_path_buf(), all.clone());
                }
                all
            }
        };
        all.get(subject).cloned().unwrap_or_default()
    }

    fn api_cell(&self, host: &str) -> Arc<tokio::sync::OnceCell<bool>> {
        match self.api.lock() {
            Ok(mut m) => m.entry(host.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The tags of a repository: the plan's listing when it made one, else
    /// one listing here (None when it cannot be listed).
    async fn tags_of(
        &self,
        ctx: &PlanContext,
        client: &RegistryClient,
        host: &str,
        repo: &str,
    ) -> Option<HashSet<String>> {
        if let Some(known) = ctx.memo.listed_tags(host, repo) {
            return Some(known);
        }
        let mut m = self.tags.lock().await;
        if let Some(t) = m.get(&(host.to_string(), repo.to_string())) {
            return t.clone();
        }
        let tags = match client.list_tags(repo).await {
            Ok(t) => Some(t.into_iter().collect()),
            Err(Error::NotFound(_)) => Some(HashSet::new()),
            Err(e) => {
                tracing::debug!(host, repo, "listing tags for referrers failed ({e}); asking tag by tag");
                None
            }
        };
        m.insert((host.to_string(), repo.to_string()), tags.clone());
        tags
    }

    /// OCI referrers of `subject` listed by the API, or None when the host
    /// does not offer it.
    async fn by_api(
        &self,
        client: &RegistryClient,
        host: &str,
        repo: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<Descriptor>>> {
        let cell = self.api_cell(host);
        let mut first: Option<Option<Vec<Descriptor>>> = None;
        let offered = *cell
            .get_or_try_init(|| async {
                let answer = client.referrers(repo, subject, None).await?;
                let offered = answer.is_some();
                first = Some(answer);
                Ok::<bool, Error>(offered)
            })
            .await?;
        match first {
            Some(answer) => Ok(answer),
            None if offered => client.referrers(repo, subject, None).await,
            None => Ok(None),
        }
    }

    /// The entries of the referrers tag of `subject`, if it is there.
    async fn by_tag(
        &self,
        client: &RegistryClient,
        tags: Option<&HashSet<String>>,
        repo: &str,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>> {
        let tag = fallback_tag(subject);
        if tags.is_some_and(|t| !t.contains(&tag)) {
            return Ok(Vec::new());
        }
        match client.get_manifest(repo, &tag).await {
            Ok(raw) => match raw.parse() {
                Ok(Manifest::Index(ix)) => Ok(ix.manifests),
                _ => Err(Error::invalid(format!(
                    "{repo}:{tag} should hold an index of the referrers of {subject} (the OCI referrers tag schema), but holds {}",
                    raw.media_type
                ))),
            },
            Err(Error::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// What the source repository holds that refers to `subject`.
    async fn source(&self, ctx: &PlanContext, host: &str, repo: &str, subject: &Digest) -> Result<Vec<Found>> {
        if host.is_empty() {
            return Ok(self.layout_referrers(std::path::Path::new(repo), subject));
        }
        let client = ctx.client(host)?;
        let tags = self.tags_of(ctx, &client, host, repo).await;
        let listed = match self.by_api(&client, host, repo, subject).await? {
            Some(l) => l,
            None => self.by_tag(&client, tags.as_ref(), repo, subject).await?,
        };
        let mut out: Vec<Found> = listed
            .into_iter()
            .map(|descriptor| Found {
                descriptor,
                tag: None,
                cosign: None,
            })
            .collect();
        for kind in CosignKind::ALL {
            let tag = cosign_tag(subject, kind);
            if tags.as_ref().is_some_and(|t| !t.contains(&tag)) {
                continue;
            }
            if let Some(descriptor) = client.head_manifest(repo, &tag).await? {
                out.push(Found {
                    descriptor,
                    tag: Some(tag),
                    cosign: Some(kind),
                });
            }
        }
        Ok(out)
    }

    /// What a destination holds that refers to `subject`, and what its
    /// cosign tags `tags` name.
    async fn destination(
        &self,
        ctx: &PlanContext,
        dest: &Reference,
        subject: &Digest,
        tags: &[String],
    ) -> Result<DestAnswer> {
        let mut out = DestAnswer::default();
        match dest {
            Reference::Registry(r) => {
                let client = ctx.client(&r.host)?;
                if ctx.memo.repository_empty(&r.host, &r.repository) {
                    return Ok(out);
                }
                let listed = match self.by_api(&client, &r.host, &r.repository, subject).await? {
                    Some(l) => {
                        out.api = true;
                        l
                    }
                    None => {
                        let known = ctx.memo.listed_tags(&r.host, &r.repository);
                        self.by_tag(&client, known.as_ref(), &r.repository, subject).await?
                    }
                };
                out.listed = listed.into_iter().map(|d| d.digest).collect();
                for tag in tags {
                    let digest = if ctx.memo.tag_missing(&r.host, &r.repository, tag) {
                        None
                    } else {
                        client.head_manifest(&r.repository, tag).await?.map(|d| d.digest)
                    };
                    out.tags.insert(tag.clone(), digest);
                }
            }
            Reference::Oci { .. } | Reference::Archive { .. } => {
                let Some(path) = crate::sink::kind::layout_of(dest) else {
                    return Ok(out);
                };
                let path = path.as_path();
                // What an earlier transfer archive carried counts as held.
                if let Reference::Archive {
                    path: dir, full: false, ..
                } = dest
                {
                    if let Ok(history) = crate::archive::history(dir) {
                        for r in history.referrers_of(subject) {
                            match &r.tag {
                                Some(tag) if tags.contains(tag) => {
                                    out.tags.insert(tag.clone(), Some(r.digest.clone()));
                                }
                                Some(_) => {}
                                None => {
                                    out.listed.insert(r.digest.clone());
                                }
                            }
                        }
                    }
                }
                // What index.json lists by this subject (its blob there).
                for f in self.layout_referrers(path, subject) {
                    if !path
                        .join("blobs")
                        .join("sha256")
                        .join(f.descriptor.digest.hex())
                        .is_file()
                    {
                        continue;
                    }
                    match f.tag {
                        Some(tag) => {
                            if tags.contains(&tag) {
                                out.tags.insert(tag, Some(f.descriptor.digest));
                            }
                        }
                        None => {
                            out.listed.insert(f.descriptor.digest);
                        }
                    }
                }
                out.api = true;
            }
            _ => {}
        }
        Ok(out)
    }
}

/// What refers to `subject` in the registry repository or OCI layout
/// `image` names, as `verify:` looks for signatures there: the referrers
/// API where the registry offers it, else the referrers tag; an OCI
/// layout's `index.json`. Cosign's tags are not included.
pub async fn listed(ctx: &PlanContext, image: &Reference, subject: &Digest) -> Result<Vec<Descriptor>> {
    match image {
        Reference::Registry(r) => {
            let lister = Lister::default();
            let client = ctx.client(&r.host)?;
            match lister.by_api(&client, &r.host, &r.repository, subject).await? {
                Some(l) => Ok(l),
                None => lister.by_tag(&client, None, &r.repository, subject).await,
            }
        }
        Reference::Oci { path, .. } => Ok(scan_layout(path)
            .remove(subject)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.tag.is_none())
            .map(|f| f.descriptor)
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// The manifest `digest` of an OCI layout, verified.
pub(super) fn layout_manifest(path: &std::path::Path, digest: &Digest) -> Result<RawManifest> {
    let file = path.join("blobs").join("sha256").join(digest.hex());
    let bytes = std::fs::read(&file).map_err(|e| Error::io("read a referrer", &file, e))?;
    let media_type = layout_manifests(path)
        .into_iter()
        .find(|d| &d.digest == digest)
        .map(|d| d.media_type);
    RawManifest::verified(
        bytes::Bytes::from(bytes),
        media_type.as_deref(),
        digest,
        &format!("referrer {digest} in {}", path.display()),
    )
}

/// What an OCI layout's `index.json` lists that refers to something, by
/// subject: the manifests whose `subject` names it, and cosign's tags of it.
fn scan_layout(path: &std::path::Path) -> LayoutReferrers {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct WithSubject {
        #[serde(default)]
        subject: Option<Descriptor>,
        #[serde(default)]
        artifact_type: Option<String>,
        #[serde(default)]
        config: Option<Descriptor>,
    }
    let mut out: LayoutReferrers = HashMap::new();
    for d in layout_manifests(path) {
        let name = d
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::source::oci_layout::REF_NAME))
            .cloned();
        if let Some((s, kind)) = name.as_deref().and_then(crate::image::referrers::parse_cosign_tag) {
            out.entry(s).or_default().push(Found {
                descriptor: Descriptor { annotations: None, ..d },
                tag: name,
                cosign: Some(kind),
            });
            continue;
        }
        let Ok(bytes) = std::fs::read(path.join("blobs").join("sha256").join(d.digest.hex())) else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<WithSubject>(&bytes) else {
            continue;
        };
        if let Some(subject) = m.subject.map(|s| s.digest) {
            let artifact_type = d
                .artifact_type
                .clone()
                .or(m.artifact_type)
                .or(m.config.map(|c| c.media_type));
            out.entry(subject).or_default().push(Found {
                descriptor: Descriptor {
                    artifact_type,
                    annotations: d
                        .annotations
                        .filter(|a| !a.contains_key(crate::source::oci_layout::REF_NAME)),
                    ..d
                },
                tag: None,
                cosign: None,
            });
        }
    }
    out
}

/// The descriptors an OCI layout's `index.json` lists (none when it has none).
fn layout_manifests(path: &std::path::Path) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    std::fs::read(path.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .map(|i| i.manifests)
        .unwrap_or_default()
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

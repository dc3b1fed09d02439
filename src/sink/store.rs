//! The store interface: what a place that holds images is and holds, asked
//! the same way whatever its kind. The planner asks only this (the digest a
//! name has now, which blobs are there and where they could be mounted
//! from, a manifest by digest or tag, what the store can do); it never
//! matches on the kind of a reference. Each kind answers in its own file
//! (`registry.rs`, `oci_layout.rs`, `docker_save.rs`, `bundle.rs`,
//! `docker_daemon.rs`) and registers its opener in its
//! [`DestinationKind`](super::kind::DestinationKind), which `kind::of`
//! maps from a reference: a new kind is one file plus one line there.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::kind::{self, DestinationKind, StoredForm};
use super::state::WrittenState;
use crate::error::{Error, Result};
use crate::image::convert::MediaTypes;
use crate::image::{Descriptor, Digest, ImageName, RawManifest};
use crate::reference::Reference;
use crate::registry::rate_limit::PullQuota;
use crate::registry::RegistryOptions;

/// Which store: a registry repository, or the path or name of any other
/// kind. Printed as `registry://HOST/REPO` or `SCHEME://PATH`; blobs of a
/// registry are shared by its repositories (its [`StoreId::sharing`] id is
/// the host), those of any other store by that store alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    scheme: &'static str,
    /// The host whose repositories share blobs (registries only).
    host: Option<String>,
    /// The repository on that host, or the path or name of the store.
    place: String,
}

impl StoreId {
    /// A repository of a registry host.
    pub fn repository(scheme: &'static str, host: &str, repository: &str) -> StoreId {
        StoreId {
            scheme,
            host: Some(host.to_string()),
            place: repository.to_string(),
        }
    }

    /// A store known by its path (an archive, a layout, a directory).
    pub fn path(scheme: &'static str, path: &Path) -> StoreId {
        StoreId {
            scheme,
            host: None,
            place: path.display().to_string(),
        }
    }

    /// A store known by a name of its own (a daemon).
    pub fn named(scheme: &'static str, name: &str) -> StoreId {
        StoreId {
            scheme,
            host: None,
            place: name.to_string(),
        }
    }

    /// The id of the store `dest` writes (a registry's repository, a file
    /// output's path), as its kind says.
    pub fn of(dest: &Reference) -> StoreId {
        let k = kind::of(dest);
        match (dest.as_registry(), kind::path_of(dest)) {
            (Some(r), _) => StoreId::repository(k.scheme, &r.host, &r.repository),
            (None, Some(path)) => StoreId::path(k.scheme, path),
            (None, None) => StoreId::whole(dest),
        }
    }

    /// A store known by its whole reference (a daemon's image, a source
    /// other than a registry).
    fn whole(r: &Reference) -> StoreId {
        let scheme = r.scheme();
        let shown = r.to_string();
        let place = shown
            .strip_prefix(&format!("{scheme}://"))
            .unwrap_or(&shown)
            .to_string();
        StoreId {
            scheme,
            host: None,
            place,
        }
    }

    /// The place a reference reads or writes blobs in, as plans total and
    /// key them: a registry host is one place for all its repositories (a
    /// blob is the same wherever it is), any other reference is its own.
    pub fn place_of(source: &Reference) -> StoreId {
        match StoreId::of(source) {
            id if id.host.is_some() => id.sharing(),
            _ => StoreId::whole(source),
        }
    }

    /// Reads back an id as [`fmt::Display`] printed it (a saved plan's
    /// store names).
    pub fn parse(s: &str) -> Option<StoreId> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = crate::reference::SCHEMES.iter().find(|k| k.name == scheme)?.name;
        if scheme != super::registry::KIND.scheme {
            return Some(StoreId::named(scheme, rest));
        }
        let (host, repository) = rest.split_once('/').unwrap_or((rest, ""));
        Some(StoreId::repository(scheme, host, repository))
    }

    /// Where a blob, once in this store, is there for every store: the
    /// registry host for a repository (its repositories mount it), else the
    /// store itself.
    pub fn sharing(&self) -> StoreId {
        match &self.host {
            Some(h) => StoreId {
                scheme: self.scheme,
                host: Some(h.clone()),
                place: String::new(),
            },
            None => self.clone(),
        }
    }

    /// The registry host, for a repository of one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// The repository within [`StoreId::host`].
    pub fn repository_name(&self) -> Option<&str> {
        self.host.as_ref().map(|_| self.place.as_str())
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.place.is_empty()) {
            (Some(h), true) => write!(f, "{}://{h}", self.scheme),
            (Some(h), false) => write!(f, "{}://{h}/{}", self.scheme, self.place),
            (None, _) => write!(f, "{}://{}", self.scheme, self.place),
        }
    }
}

/// What a store can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The form its layers are stored in (keyed by digest or by diff_id).
    pub stored_form: StoredForm,
    /// It keeps a multi-platform index (else one platform is written).
    pub keeps_index: bool,
    /// It holds referrers (signatures, SBOMs) beside their subject.
    pub holds_referrers: bool,
    /// The manifest forms it stores: which manifests it converts to OCI.
    pub media_types: MediaTypes,
    /// It wants layers compressed: plain tar layers are compressed before
    /// they are stored (a registry).
    pub wants_compressed: bool,
    /// Without the referrers API it keeps the OCI 1.1 referrers tag
    /// `sha256-<hex>` up to date (a registry).
    pub referrers_tag: bool,
    /// It can mount a blob from another store with the same
    /// [`StoreId::sharing`] id (a registry's repositories).
    pub can_mount: bool,
    /// Which blobs it holds can be asked before writing (else a write
    /// rewrites the output whole).
    pub answers_presence: bool,
}

impl Capabilities {
    /// The answers of a kind as it registers them; the store overrides
    /// what its reference changes.
    pub fn of_kind(k: &DestinationKind) -> Capabilities {
        Capabilities {
            stored_form: k.stored_form,
            keeps_index: k.keeps_index,
            holds_referrers: k.holds_referrers,
            media_types: MediaTypes::Keep,
            wants_compressed: false,
            referrers_tag: false,
            can_mount: false,
            answers_presence: k.blob_lookup != kind::BlobLookup::None,
        }
    }
}

/// What a store holds under a name now, in the form its kind knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// The manifest digest its tag names (None: no such tag).
    Tagged(Option<Digest>),
    /// The image ID (config digest) a daemon has under the tag.
    ImageId(Option<Digest>),
    /// occy's record of its last write there, when the output it speaks
    /// for is still there.
    Record(Option<WrittenState>),
}

impl Current {
    /// The digest the store names now.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            Current::Tagged(d) | Current::ImageId(d) => d.as_ref(),
            Current::Record(r) => r.as_ref().map(|r| &r.output),
        }
    }
}

/// What a store holds that refers to a subject.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// OCI referrers, listed by the referrers API, the referrers tag or
    /// `index.json`.
    pub listed: Vec<Descriptor>,
    /// Listed natively (a registry's referrers API, a layout's
    /// `index.json`): no referrers tag to keep up to date.
    pub native: bool,
    /// Each tag asked about (cosign's `sha256-<hex>.sig`…) and the manifest
    /// it names (None: no such tag).
    pub tags: Vec<(String, Option<Descriptor>)>,
}

/// Which referrers of a subject a destination holds, by digest: what the
/// planner compares the source's with.
#[derive(Debug, Clone, Default)]
pub struct HeldReferrers {
    /// OCI referrers listed there.
    pub listed: HashSet<Digest>,
    /// Each tag asked about → the manifest it names (None: no such tag).
    pub tags: std::collections::HashMap<String, Option<Digest>>,
    /// Listed natively (a registry's referrers API, a layout's
    /// `index.json`): no referrers tag to keep up to date.
    pub native: bool,
}

impl From<Referrers> for HeldReferrers {
    fn from(r: Referrers) -> HeldReferrers {
        HeldReferrers {
            listed: r.listed.into_iter().map(|d| d.digest).collect(),
            tags: r.tags.into_iter().map(|(t, d)| (t, d.map(|d| d.digest))).collect(),
            native: r.native,
        }
    }
}

/// What opening a store may need beyond its reference.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Registry access (credentials, TLS, retries, rate limit) for the
    /// store's host.
    pub registry: RegistryOptions,
}

/// A place that holds images, asked about what it holds and can do.
#[async_trait]
pub trait Store: Send + Sync {
    /// Which store this is.
    fn id(&self) -> &StoreId;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The tag or digest it keeps the image `name` under (the reference's
    /// own tag or digest when it has one, else the name's tag).
    fn reference_for(&self, name: &ImageName) -> String;

    /// What it holds under `name` now: one HEAD, a read of `index.json`, the
    /// daemon's image ID, or occy's record beside a file output.
    async fn current(&self, name: &ImageName) -> Result<Current>;

    /// Which of `blobs` it holds (keyed as its [`StoredForm`] keys them),
    /// one answer per blob in order. A query: nothing is reserved or
    /// changed. A store that cannot say answers `false` for each.
    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>>;

    /// The manifest it holds under `reference` (a digest or a tag),
    /// verified against the digest when one is asked for; None when it
    /// holds none.
    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>>;

    /// What `reference` (a tag or digest) names here: its descriptor and,
    /// when it was read to say so, the manifest itself. None: nothing by
    /// that name.
    async fn resolve(&self, reference: &str) -> Result<Option<(Descriptor, Option<RawManifest>)>> {
        Ok(self.manifest(reference).await?.map(|m| (m.descriptor(), Some(m))))
    }

    /// What `reference` names here, reading no more than needed (a HEAD).
    async fn head(&self, reference: &str) -> Result<Option<Descriptor>> {
        Ok(self.resolve(reference).await?.map(|(d, _)| d))
    }

    /// Removes the tag `reference` (a registry that deletes only manifests
    /// is asked by the digest the tag still names, if it is `expected`).
    async fn untag(&self, reference: &str, _expected: &Digest) -> Result<()> {
        Err(Error::usage(format!(
            "{} cannot delete {reference}: only registry destinations are pruned",
            self.id()
        )))
    }

    /// The pull quota its host announced (`RateLimit-*`), if any.
    fn pull_quota(&self) -> Option<PullQuota> {
        None
    }

    /// What refers to `subject` here (OCI referrers) and what each of
    /// `tags` names. `known_tags`, the store's tags when the caller listed
    /// them, spares asking for tags that are not there. A store that keeps
    /// no referrers holds none.
    async fn referrers(
        &self,
        _subject: &Digest,
        tags: &[String],
        _known_tags: Option<&HashSet<String>>,
    ) -> Result<Referrers> {
        Ok(Referrers {
            tags: tags.iter().map(|t| (t.clone(), None)).collect(),
            ..Referrers::default()
        })
    }

    /// Which referrers of `subject` it holds and what each of `tags`
    /// names, by digest (as [`Store::referrers`] lists them, unless the
    /// store knows more: what an earlier transfer archive carried).
    async fn held_referrers(
        &self,
        subject: &Digest,
        tags: &[String],
        known_tags: Option<&HashSet<String>>,
    ) -> Result<HeldReferrers> {
        self.referrers(subject, tags, known_tags).await.map(HeldReferrers::from)
    }

    /// The tags it holds; None for a store that does not name images by
    /// tag.
    async fn tags(&self) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// A small blob (a signature envelope, a bundle) read whole and checked
    /// against `desc`; more than `limit` bytes is an error.
    async fn small_blob(&self, desc: &Descriptor, _limit: u64) -> Result<Vec<u8>> {
        Err(Error::invalid(format!(
            "{} keeps no blob {} that can be read back",
            self.id(),
            desc.digest
        )))
    }
}

/// Opens the store `dest` names through its kind's registration.
pub fn open(dest: &Reference, opts: &StoreOptions) -> Result<Box<dyn Store>> {
    (kind::of(dest).open_store)(dest, opts)
}

/// What the store `dest` names can do, as its kind answers for that
/// reference (opened without asking it anything).
pub fn capabilities(dest: &Reference) -> Capabilities {
    open(dest, &StoreOptions::default())
        .map(|s| s.capabilities())
        .unwrap_or_else(|_| Capabilities::of_kind(kind::of(dest)))
}

/// The place writing image `name` to `dest` fills (a repository's tag, a
/// layout's tag, a directory's entry, a file), as each kind spells it: two
/// targets with one place would overwrite each other.
pub fn written_place(dest: &Reference, name: &ImageName) -> String {
    match dest {
        Reference::Registry(r) => format!(
            "registry://{}/{}:{}",
            r.host,
            r.repository,
            r.digest
                .as_ref()
                .map(|d| d.to_string())
                .or(r.tag.clone())
                .unwrap_or_else(|| name.tag.clone())
        ),
        Reference::Oci { path, tag, .. } => {
            format!(
                "oci://{}:{}",
                path.display(),
                tag.clone().unwrap_or_else(|| name.tag.clone())
            )
        }
        Reference::Dir { path, .. } => format!("dir://{}#{}", path.display(), name),
        Reference::Archive { path, .. } => {
            format!("archive://{}#{}", path.display(), crate::archive::layout_ref(name))
        }
        Reference::Docker { name, tag, digest, .. } => format!(
            "docker://{}",
            crate::reference::docker_image(name, tag.as_deref(), digest.as_ref())
        ),
        other => other.to_string(),
    }
}

/// The store of a kind that keeps no images to ask about, for a reference
/// that names none (a `quay://` pattern is expanded, never written).
pub fn not_a_store(dest: &Reference) -> Error {
    Error::usage(format!(
        "{dest} cannot be written as a destination: supported destinations are {}",
        crate::reference::destination_schemes()
    ))
}

/// A file output written whole (a docker-save tarball, a `dir://`, a
/// bundle): it holds what occy's record beside it says, and no blob can be
/// asked for before the write. Its kind's file registers it.
pub struct RecordStore {
    id: StoreId,
    kind: &'static DestinationKind,
    dest: Reference,
}

impl RecordStore {
    pub fn open(dest: &Reference, kind: &'static DestinationKind) -> Result<Box<dyn Store>> {
        if kind::path_of(dest).is_none() {
            return Err(not_a_store(dest));
        }
        Ok(Box::new(RecordStore {
            id: StoreId::of(dest),
            kind,
            dest: dest.clone(),
        }))
    }

    fn path(&self) -> Option<PathBuf> {
        kind::path_of(&self.dest).map(Path::to_path_buf)
    }
}

#[async_trait]
impl Store for RecordStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of_kind(self.kind)
    }

    fn reference_for(&self, name: &ImageName) -> String {
        name.to_string()
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        let record = super::state::state_path(&self.dest, name).and_then(|s| super::state::read(&s));
        let there = match (self.kind.output, self.path()) {
            (Some(marker), Some(path)) => marker.present(&path),
            _ => false,
        };
        Ok(Current::Record(record.filter(|_| there)))
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        Ok(vec![false; blobs.len()])
    }

    async fn manifest(&self, _reference: &str) -> Result<Option<RawManifest>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_the_plan_names_stores_and_read_back() {
        let r = Reference::parse("registry://h:5000/a/b:1").unwrap();
        let id = StoreId::of(&r);
        assert_eq!(id.to_string(), "registry://h:5000/a/b");
        assert_eq!(id.sharing().to_string(), "registry://h:5000");
        assert_eq!(StoreId::place_of(&r).to_string(), "registry://h:5000");
        assert_eq!(StoreId::parse("registry://h:5000/a/b"), Some(id.clone()));
        assert_eq!(id.host(), Some("h:5000"));
        assert_eq!(id.repository_name(), Some("a/b"));
        let t = Reference::parse("tar:///o/a.tar").unwrap();
        assert_eq!(StoreId::of(&t).to_string(), "tar:///o/a.tar");
        assert_eq!(StoreId::of(&t).sharing(), StoreId::of(&t));
        assert_eq!(StoreId::of(&t).host(), None);
        assert_eq!(StoreId::parse("nope://x"), None);
        let o = Reference::parse("oci:///l:1?format=oci").unwrap();
        assert_eq!(StoreId::place_of(&o).to_string(), o.to_string());
        let d = Reference::parse("docker://app:1").unwrap();
        assert_eq!(StoreId::of(&d).to_string(), d.to_string());
        assert_eq!(StoreId::parse(&d.to_string()), Some(StoreId::of(&d)));
    }
}

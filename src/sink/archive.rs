//! Sink: the next transfer archive of a directory of archives
//! (`archive:///DIR`, see `crate::archive`). Images are written through the
//! OCI layout sink into the directory's staging layout under their
//! archive names (`127.0.0.1_5000_team_app_1.0`), each recorded with its
//! source name once committed; what an earlier archive of the directory
//! carried counts as held (unless `?full=true`), so it is left out. After
//! the run the staging layout is sealed into `DIR/NNNN` (see
//! `crate::archive::pack`). Blobs already staged by a killed run are kept
//! and not written again.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::kind::{BlobLookup, CurrentDigest, DestinationKind, ReadBack, StoredForm};
use super::oci_layout::{OciLayoutSink, OciLayoutStore};
use super::store::{Capabilities, Current, HeldReferrers, Referrers, Store, StoreId, StoreOptions};
use super::Sink;
use crate::archive::{self, StagedImage};
use crate::error::{Error, Result};
use crate::image::convert::MediaTypes;
use crate::image::{Descriptor, Digest, ImageData, ImageName, RawManifest};
use crate::reference::Reference;
use crate::source::BlobReader;

/// A directory of archives: compressed blobs, indexes and referrers kept
/// (an OCI layout inside), what it holds read from its history and staging
/// layout, checked when sealed.
pub const KIND: DestinationKind = DestinationKind {
    scheme: "archive",
    keeps_index: true,
    stored_form: StoredForm::Compressed,
    current: CurrentDigest::Tagged,
    blob_lookup: BlobLookup::Archive,
    record: None,
    output: None,
    read_back: ReadBack::Sealed,
    holds_referrers: true,
    one_image: None,
    open_store,
};

/// Writes one image into the next archive of a directory.
pub struct ArchiveSink {
    dir: PathBuf,
    full: bool,
    name: ImageName,
    layout_ref: String,
    layout: OciLayoutSink,
    /// The digest the image's tag got, once committed.
    committed: std::sync::Mutex<Option<Digest>>,
}

impl ArchiveSink {
    /// The sink for `name` in the directory of archives `dir`.
    pub async fn create(dir: &Path, name: &ImageName, full: bool) -> Result<Self> {
        archive::check_destination(dir)?;
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || archive::lock_next(&d))
            .await
            .map_err(|e| crate::error::Error::invalid(format!("archive lock task failed: {e}")))??;
        let layout_ref = archive::layout_ref(name);
        Ok(ArchiveSink {
            dir: dir.to_path_buf(),
            full,
            name: name.clone(),
            layout: OciLayoutSink::create(&archive::staging_layout(dir), &layout_ref).await?,
            layout_ref,
            committed: std::sync::Mutex::new(None),
        })
    }

    fn commit(&self, digest: &Digest) {
        if let Ok(mut c) = self.committed.lock() {
            *c = Some(digest.clone());
        }
    }
}

#[async_trait]
impl Sink for ArchiveSink {
    fn describe(&self) -> String {
        format!(
            "archive://{} ({}:{})",
            self.dir.display(),
            self.name.repository,
            self.name.tag
        )
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        if self.layout.has_blob(digest).await? {
            return Ok(true);
        }
        let (dir, d, full) = (self.dir.clone(), digest.clone(), self.full);
        tokio::task::spawn_blocking(move || archive::holds_blob(&dir, &d, full))
            .await
            .map_err(|e| crate::error::Error::invalid(format!("archive history task failed: {e}")))?
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        self.layout.put_blob(desc, reader).await
    }

    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()> {
        self.layout.put_image(image, tagged).await?;
        if tagged {
            self.commit(&image.raw_manifest.digest);
        }
        Ok(())
    }

    async fn put_index(&self, index: &RawManifest, images: &[ImageData]) -> Result<()> {
        self.layout.put_index(index, images).await?;
        self.commit(&index.digest);
        Ok(())
    }

    async fn put_referrer(&self, manifest: &RawManifest, desc: &Descriptor, tag: Option<&str>) -> Result<()> {
        self.layout.put_referrer(manifest, desc, tag).await
    }

    async fn finish(&self) -> Result<()> {
        self.layout.finish().await?;
        let digest = self.committed.lock().ok().and_then(|c| c.clone());
        if let Some(digest) = digest {
            let staged = StagedImage {
                repository: self.name.repository.clone(),
                tag: self.name.tag.clone(),
                digest,
                layout_ref: self.layout_ref.clone(),
            };
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || archive::stage_image(&dir, &staged))
                .await
                .map_err(|e| crate::error::Error::invalid(format!("archive staging task failed: {e}")))??;
        }
        Ok(())
    }

    async fn abort(&self) {
        self.layout.abort().await;
    }
}

/// What the planner asks of a directory of archives: what the next archive
/// would hold (its staging layout) and what earlier ones carried, unless
/// `?full=true` (then only what is staged counts).
pub struct ArchiveStore {
    id: StoreId,
    dir: PathBuf,
    full: bool,
    /// The staging layout of the next archive.
    staged: OciLayoutStore,
}

fn open_store(dest: &Reference, _: &StoreOptions) -> Result<Box<dyn Store>> {
    let Reference::Archive { path, full, .. } = dest else {
        return Err(super::store::not_a_store(dest));
    };
    let id = StoreId::of(dest);
    Ok(Box::new(ArchiveStore {
        staged: OciLayoutStore::at(id.clone(), &archive::staging_layout(path)),
        id,
        dir: path.clone(),
        full: *full,
    }))
}

/// Runs a blocking read of the archive directory off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::invalid(format!("archive history task failed: {e}")))?
}

#[async_trait]
impl Store for ArchiveStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            media_types: MediaTypes::OciWhenSynthesised,
            ..Capabilities::of_kind(&KIND)
        }
    }

    fn reference_for(&self, name: &ImageName) -> String {
        archive::layout_ref(name)
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        let (dir, name, full) = (self.dir.clone(), name.clone(), self.full);
        blocking(move || archive::current_digest(&dir, &name, full))
            .await
            .map(Current::Tagged)
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        let (dir, blobs, full) = (self.dir.clone(), blobs.to_vec(), self.full);
        blocking(move || blobs.iter().map(|d| archive::holds_blob(&dir, d, full)).collect()).await
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        self.staged.manifest(reference).await
    }

    async fn referrers(&self, subject: &Digest, tags: &[String], known: Option<&HashSet<String>>) -> Result<Referrers> {
        self.staged.referrers(subject, tags, known).await
    }

    /// What the staging layout holds, and what an earlier archive carried
    /// (unless `full`).
    async fn held_referrers(
        &self,
        subject: &Digest,
        tags: &[String],
        known: Option<&HashSet<String>>,
    ) -> Result<HeldReferrers> {
        let mut held = HeldReferrers::from(self.staged.referrers(subject, tags, known).await?);
        if self.full {
            return Ok(held);
        }
        let (dir, s) = (self.dir.clone(), subject.clone());
        let carried = blocking(move || {
            Ok(archive::history(&dir)?
                .referrers_of(&s)
                .map(|r| (r.tag.clone(), r.digest.clone()))
                .collect::<Vec<_>>())
        })
        .await?;
        for (tag, digest) in carried {
            match tag {
                Some(tag) if tags.contains(&tag) => {
                    held.tags.insert(tag, Some(digest));
                }
                Some(_) => {}
                None => {
                    held.listed.insert(digest);
                }
            }
        }
        Ok(held)
    }
}

//! Sink: a Distribution-API registry. A HEAD before each blob; a blob the
//! destination lacks is first mounted from another repository of the same
//! registry that holds it (the source's, or one this run has written to),
//! and uploaded, streamed, only when no mount succeeds (a 202 answer). Configs
//! and manifests go last, exact bytes kept: a manifest only after every blob
//! it references, an index only after every platform manifest, so a tag never
//! names something incomplete.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tracing::debug;

use super::{LayerForm, Sink};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, RawManifest};
use crate::reference::RegistryRef;
use crate::registry::{RegistryClient, RegistryOptions};
use crate::source::BlobReader;

/// (registry host, blob digest) → the repositories known to hold it.
type Holders = HashMap<(String, Digest), Vec<String>>;

/// (registry host, blob digest) → the lock held by whoever is uploading it.
type Uploads = HashMap<(String, Digest), Arc<tokio::sync::Mutex<()>>>;

/// Which repositories of which registry are known to hold which blob, shared
/// by every sink of one run so a layer pushed once is mounted elsewhere. It
/// also serialises uploads of one blob to one registry: while one sink
/// uploads it, another that needs it waits and then mounts it.
#[derive(Debug, Clone, Default)]
pub struct BlobLocations {
    inner: Arc<Mutex<Holders>>,
    uploads: Arc<Mutex<Uploads>>,
}

impl BlobLocations {
    /// Records that `repo` on `host` holds `digest`.
    pub fn record(&self, host: &str, repo: &str, digest: &Digest) {
        if let Ok(mut map) = self.inner.lock() {
            let repos = map.entry((host.to_string(), digest.clone())).or_default();
            if !repos.iter().any(|r| r == repo) {
                repos.push(repo.to_string());
            }
        }
    }

    /// Takes the right to upload `digest` to `host`. Returns the guard and
    /// whether someone else held it first (then the blob may be mountable now).
    pub async fn claim_upload(&self, host: &str, digest: &Digest) -> (tokio::sync::OwnedMutexGuard<()>, bool) {
        let lock = match self.uploads.lock() {
            Ok(mut map) => map.entry((host.to_string(), digest.clone())).or_default().clone(),
            Err(_) => Arc::new(tokio::sync::Mutex::new(())),
        };
        match lock.clone().try_lock_owned() {
            Ok(g) => (g, false),
            Err(_) => (lock.lock_owned().await, true),
        }
    }

    /// The repositories on `host` known to hold `digest`.
    pub fn holders(&self, host: &str, digest: &Digest) -> Vec<String> {
        self.inner
            .lock()
            .ok()
            .and_then(|map| map.get(&(host.to_string(), digest.clone())).cloned())
            .unwrap_or_default()
    }
}

/// Writes images to one repository of a registry.
pub struct RegistrySink {
    client: RegistryClient,
    target: RegistryRef,
    /// The tag to push the top manifest under; None pushes by digest only.
    tag: Option<String>,
    /// The source repository when it is on this registry: mount candidate.
    source_repo: Option<String>,
    locations: BlobLocations,
    mounted: AtomicUsize,
    uploaded: AtomicUsize,
    /// Upload rights this sink holds, released when the blob is in.
    claims: Mutex<HashMap<Digest, tokio::sync::OwnedMutexGuard<()>>>,
}

impl RegistrySink {
    /// A sink for `target`. Without a tag or digest in `target`, the image
    /// keeps `default_tag` (the source's tag), as skopeo and crane do.
    /// `source` is the source repository when it is a registry: on the same
    /// host, its blobs are mounted rather than uploaded.
    pub fn new(
        target: &RegistryRef,
        default_tag: &str,
        opts: &RegistryOptions,
        locations: BlobLocations,
        source: Option<&RegistryRef>,
    ) -> Result<Self> {
        let client = RegistryClient::for_host(&target.host, opts)?;
        let tag = match (&target.tag, &target.digest) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(default_tag.to_string()),
        };
        let source_repo = source
            .filter(|s| s.host == target.host && s.repository != target.repository)
            .map(|s| s.repository.clone());
        Ok(RegistrySink {
            client,
            target: target.clone(),
            tag,
            source_repo,
            locations,
            mounted: AtomicUsize::new(0),
            uploaded: AtomicUsize::new(0),
            claims: Mutex::new(HashMap::new()),
        })
    }

    fn repo(&self) -> &str {
        &self.target.repository
    }

    /// Tries to mount `digest` from repositories known to hold it.
    async fn try_mount(&self, digest: &Digest) -> bool {
        let mut candidates = self.locations.holders(&self.target.host, digest);
        if let Some(s) = &self.source_repo {
            if !candidates.contains(s) {
                candidates.push(s.clone());
            }
        }
        candidates.retain(|r| r != self.repo());
        for from in candidates {
            match self.client.mount_blob(self.repo(), digest, &from).await {
                Ok(true) => {
                    debug!(blob = %digest, from, to = self.repo(), "mounted");
                    return true;
                }
                Ok(false) => debug!(blob = %digest, from, "mount declined (202), will upload"),
                Err(e) => debug!(blob = %digest, from, "mount failed, will upload: {e}"),
            }
        }
        false
    }

    /// Whether the repository holds `digest` (or got it by a mount now);
    /// if not, takes the right to upload it. If another sink of this run held
    /// that right, it has uploaded the blob by now, so look again first.
    /// `layer` says whether a mount counts as a mounted layer.
    async fn find_or_claim(&self, digest: &Digest, layer: bool) -> Result<bool> {
        if self.present_or_mounted(digest, layer).await? {
            return Ok(true);
        }
        let (guard, waited) = self.locations.claim_upload(&self.target.host, digest).await;
        if waited && self.present_or_mounted(digest, layer).await? {
            return Ok(true);
        }
        if let Ok(mut claims) = self.claims.lock() {
            claims.insert(digest.clone(), guard);
        }
        Ok(false)
    }

    /// Whether the repository holds `digest`, or got it by a mount now.
    /// A blob this run put or saw here costs no request; one it knows in
    /// another repository of the host is mounted straight away (a registry
    /// answers a mount of a blob the repository already holds with 201 as
    /// well), which saves the HEAD's round trip; anything else is asked
    /// with a HEAD first.
    async fn present_or_mounted(&self, digest: &Digest, layer: bool) -> Result<bool> {
        let holders = self.locations.holders(&self.target.host, digest);
        if holders.iter().any(|r| r == self.repo()) {
            return Ok(true);
        }
        if !holders.is_empty() && self.try_mount(digest).await {
            if layer {
                self.mounted.fetch_add(1, Ordering::Relaxed);
            }
            self.locations.record(&self.target.host, self.repo(), digest);
            return Ok(true);
        }
        if self.client.head_blob(self.repo(), digest).await?.is_some() {
            self.locations.record(&self.target.host, self.repo(), digest);
            return Ok(true);
        }
        if holders.is_empty() && self.try_mount(digest).await {
            if layer {
                self.mounted.fetch_add(1, Ordering::Relaxed);
            }
            self.locations.record(&self.target.host, self.repo(), digest);
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives up the right to upload `digest` (it is in, or this sink failed).
    fn release(&self, digest: &Digest) {
        if let Ok(mut claims) = self.claims.lock() {
            claims.remove(digest);
        }
    }

    /// Ensures a blob held in memory (a config) is present.
    async fn ensure_small_blob(&self, desc: &Descriptor, bytes: bytes::Bytes) -> Result<()> {
        if !self.find_or_claim(&desc.digest, false).await? {
            let result = self.client.upload_blob_bytes(self.repo(), desc, bytes).await;
            self.release(&desc.digest);
            result?;
        }
        self.locations.record(&self.target.host, self.repo(), &desc.digest);
        Ok(())
    }

    /// Where the top manifest goes: the tag, else its digest (which must be
    /// the one the destination reference pins, if it pins one).
    fn top_reference(&self, digest: &Digest) -> Result<String> {
        if let Some(pinned) = &self.target.digest {
            if pinned != digest {
                return Err(Error::invalid(format!(
                    "the destination {} pins digest {pinned}, but the image to push is {digest}",
                    self.describe()
                )));
            }
        }
        Ok(self.tag.clone().unwrap_or_else(|| digest.to_string()))
    }
}

#[async_trait]
impl Sink for RegistrySink {
    fn describe(&self) -> String {
        format!("registry://{}", self.target)
    }

    fn layer_form(&self) -> LayerForm {
        LayerForm::AsIs
    }

    fn supports_index(&self) -> bool {
        true
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.find_or_claim(digest, true).await
    }

    async fn holds_blob(&self, digest: &Digest) -> Result<bool> {
        self.present_or_mounted(digest, true).await
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        self.client.upload_blob(self.repo(), desc, reader).await?;
        self.uploaded.fetch_add(1, Ordering::Relaxed);
        self.locations.record(&self.target.host, self.repo(), &desc.digest);
        self.release(&desc.digest);
        Ok(())
    }

    async fn put_config_early(&self, image: &ImageData) -> Result<()> {
        self.ensure_small_blob(&image.manifest.config, image.config.bytes.clone())
            .await
    }

    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()> {
        let config = &image.manifest.config;
        self.ensure_small_blob(config, image.config.bytes.clone()).await?;
        let digest = &image.raw_manifest.digest;
        let reference = if tagged {
            self.top_reference(digest)?
        } else {
            digest.to_string()
        };
        self.client
            .put_manifest(self.repo(), &reference, &image.raw_manifest)
            .await?;
        debug!(manifest = %digest, repo = self.repo(), reference, "manifest pushed");
        Ok(())
    }

    async fn put_index(&self, index: &RawManifest, _images: &[ImageData]) -> Result<()> {
        let reference = self.top_reference(&index.digest)?;
        self.client.put_manifest(self.repo(), &reference, index).await?;
        debug!(index = %index.digest, repo = self.repo(), reference, "index pushed");
        Ok(())
    }

    fn layers_mounted(&self) -> usize {
        self.mounted.load(Ordering::Relaxed)
    }

    async fn finish(&self) -> Result<()> {
        let mounted = self.layers_mounted();
        if mounted > 0 {
            debug!(
                "{}: {mounted} layer(s) mounted from other repositories instead of uploaded",
                self.describe()
            );
        }
        Ok(())
    }

    async fn abort(&self) {
        // Nothing to undo: blobs without a manifest are invisible and
        // garbage-collected by the registry; no tag was moved. Let other
        // sinks of the run upload what this one claimed.
        if let Ok(mut claims) = self.claims.lock() {
            claims.clear();
        }
    }
}

//! Sink: a Distribution-API registry. It does what the work graph says for
//! each blob (nothing for a present one, a cross-repository mount, or a
//! streamed upload) and answers "is it there?" with a HEAD, without side
//! effects. Configs and manifests go last, exact bytes kept: a manifest only
//! after every blob it references, an index only after every platform
//! manifest, so a tag never names something incomplete.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use tracing::debug;

use super::kind::{BlobLookup, CurrentDigest, DestinationKind, ReadBack, StoredForm};
use super::store::{Capabilities, Current, Referrers, Store, StoreId, StoreOptions};
use super::{Reuse, Sink};
use crate::error::{Error, Result};
use crate::image::referrers::fallback_tag;
use crate::image::{media_type, Descriptor, Digest, ImageData, ImageName, RawManifest};
use crate::reference::{Reference, RegistryRef};
use crate::registry::{RegistryClient, RegistryOptions};
use crate::source::BlobReader;

/// A registry repository: compressed blobs, indexes kept, its tags say what
/// it holds, read back over the API, referrers beside their subject.
pub const KIND: DestinationKind = DestinationKind {
    scheme: "registry",
    keeps_index: true,
    stored_form: StoredForm::Compressed,
    current: CurrentDigest::Tagged,
    blob_lookup: BlobLookup::Head,
    record: None,
    output: None,
    read_back: ReadBack::AsImage,
    holds_referrers: true,
    one_image: None,
    open_store,
};

/// Writes images to one repository of a registry.
pub struct RegistrySink {
    client: RegistryClient,
    target: RegistryRef,
    /// The tag to push the top manifest under; None pushes by digest only.
    tag: Option<String>,
    /// Blobs this sink knows the repository holds (put, mounted, seen, or
    /// found by the plan), so a commit does not ask again.
    known: Mutex<HashSet<Digest>>,
}

impl RegistrySink {
    /// A sink for `target`. Without a tag or digest in `target`, the image
    /// keeps `default_tag` (the source's tag), as skopeo and crane do.
    /// `source` is the source repository when it is a registry: on the same
    /// host, its blobs are mounted rather than uploaded.
    pub fn new(target: &RegistryRef, default_tag: &str, opts: &RegistryOptions) -> Result<Self> {
        let client = RegistryClient::for_host(&target.host, opts)?;
        let tag = match (&target.tag, &target.digest) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(_)) => None,
            (None, None) => Some(default_tag.to_string()),
        };
        Ok(RegistrySink {
            client,
            target: target.clone(),
            tag,
            known: Mutex::new(HashSet::new()),
        })
    }

    fn repo(&self) -> &str {
        &self.target.repository
    }

    fn knows(&self, digest: &Digest) -> bool {
        self.known.lock().map(|k| k.contains(digest)).unwrap_or(false)
    }

    fn learn(&self, digest: &Digest) {
        if let Ok(mut k) = self.known.lock() {
            k.insert(digest.clone());
        }
    }

    /// Ensures a blob held in memory (a config) is present: one HEAD unless
    /// it is known, an upload if it is missing.
    async fn ensure_small_blob(&self, desc: &Descriptor, bytes: bytes::Bytes) -> Result<()> {
        if self.knows(&desc.digest) {
            return Ok(());
        }
        if self.client.head_blob(self.repo(), &desc.digest).await?.is_none() {
            self.client.upload_blob_bytes(self.repo(), desc, bytes).await?;
        }
        self.learn(&desc.digest);
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

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        if self.knows(digest) {
            return Ok(true);
        }
        let there = self.client.head_blob(self.repo(), digest).await?.is_some();
        if there {
            self.learn(digest);
        }
        Ok(there)
    }

    fn note_present(&self, digest: &Digest) {
        self.learn(digest);
    }

    async fn try_reuse(&self, digest: &Digest, mount_from: Option<&str>) -> Result<Reuse> {
        let Some(from) = mount_from else {
            return Ok(if self.has_blob(digest).await? {
                Reuse::Present
            } else {
                Reuse::No
            });
        };
        if self.client.mount_blob(self.repo(), digest, from).await? {
            debug!(blob = %digest, from, to = self.repo(), "mounted");
            self.learn(digest);
            Ok(Reuse::Mounted)
        } else {
            debug!(blob = %digest, from, "mount declined (202)");
            Ok(Reuse::No)
        }
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        self.client.upload_blob(self.repo(), desc, reader).await?;
        self.learn(&desc.digest);
        Ok(())
    }

    async fn put_blob_bytes(&self, desc: &Descriptor, bytes: bytes::Bytes) -> Result<()> {
        self.client.upload_blob_bytes(self.repo(), desc, bytes).await?;
        self.learn(&desc.digest);
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

    async fn put_referrer(&self, manifest: &RawManifest, _desc: &Descriptor, tag: Option<&str>) -> Result<()> {
        let reference = tag.map(str::to_string).unwrap_or_else(|| manifest.digest.to_string());
        self.client.put_manifest(self.repo(), &reference, manifest).await?;
        debug!(referrer = %manifest.digest, repo = self.repo(), reference, "referrer pushed");
        Ok(())
    }

    async fn list_referrers(&self, subject: &Digest, entries: &[Descriptor]) -> Result<()> {
        let tag = fallback_tag(subject);
        let current = match self.client.get_manifest(self.repo(), &tag).await {
            Ok(raw) => Some(raw),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let merged = merge_referrers_index(current.as_ref(), entries).map_err(|why| {
            Error::invalid(format!(
                "{}:{tag} {why}; occy does not overwrite it (move that tag away, then sync again)",
                self.describe()
            ))
        })?;
        let Some(bytes) = merged else {
            return Ok(());
        };
        let raw = RawManifest::new(bytes::Bytes::from(bytes), Some(media_type::OCI_INDEX))?;
        self.client.put_manifest(self.repo(), &tag, &raw).await?;
        debug!(subject = %subject, repo = self.repo(), tag, "referrers tag updated");
        Ok(())
    }

    async fn finish(&self) -> Result<()> {
        Ok(())
    }

    async fn abort(&self) {
        // Nothing to undo: blobs without a manifest are invisible and
        // garbage-collected by the registry; no tag was moved.
    }
}

/// The referrers tag's index with `entries` added to what `current` lists
/// (every entry there kept, in its order): the new bytes, or None when it
/// lists them all already. Err (why) when `current` is not an index.
pub fn merge_referrers_index(
    current: Option<&RawManifest>,
    entries: &[Descriptor],
) -> std::result::Result<Option<Vec<u8>>, String> {
    use serde_json::{json, Value};
    let mut index: Value = match current {
        Some(raw) => serde_json::from_slice(&raw.bytes).map_err(|e| format!("is not JSON ({e})"))?,
        None => json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": []}),
    };
    let is_index = index
        .get("mediaType")
        .and_then(Value::as_str)
        .is_none_or(|m| m == media_type::OCI_INDEX);
    let Some(list) = index
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .filter(|_| is_index)
    else {
        return Err(format!(
            "holds {}, not an index of referrers",
            current.map(|r| &*r.media_type).unwrap_or("something else")
        ));
    };
    let mut added = false;
    for e in entries {
        let digest = e.digest.as_str();
        if list
            .iter()
            .any(|m| m.get("digest").and_then(Value::as_str) == Some(digest))
        {
            continue;
        }
        let mut entry = e.clone();
        entry.set_platform(None);
        entry.set_urls(None);
        list.push(serde_json::to_value(entry).map_err(|e| e.to_string())?);
        added = true;
    }
    if !added {
        return Ok(None);
    }
    serde_json::to_vec(&index).map(Some).map_err(|e| e.to_string())
}

/// A registry repository as the planner asks it: a HEAD says what a tag
/// names and whether a blob is there; its repositories share blobs
/// through mounts.
pub struct RegistryStore {
    id: StoreId,
    client: RegistryClient,
    target: RegistryRef,
}

fn open_store(dest: &Reference, opts: &StoreOptions) -> Result<Box<dyn Store>> {
    let Some(target) = dest.as_registry() else {
        return Err(super::store::not_a_store(dest));
    };
    Ok(Box::new(RegistryStore {
        id: StoreId::of(dest),
        client: RegistryClient::for_host(&target.host, &opts.registry)?,
        target: target.clone(),
    }))
}

#[async_trait]
impl Store for RegistryStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            wants_compressed: true,
            referrers_tag: true,
            can_mount: true,
            ..Capabilities::of_kind(&KIND)
        }
    }

    fn reference_for(&self, name: &ImageName) -> String {
        self.target
            .digest
            .as_ref()
            .map(|d| d.to_string())
            .or(self.target.tag.clone())
            .unwrap_or_else(|| name.tag.clone())
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        let reference = self.reference_for(name);
        let head = self.client.head_manifest(&self.target.repository, &reference).await?;
        Ok(Current::Tagged(head.map(|d| d.digest)))
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(blobs.len());
        for d in blobs {
            out.push(self.client.head_blob(&self.target.repository, d).await?.is_some());
        }
        Ok(out)
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        match self.client.get_manifest(&self.target.repository, reference).await {
            Ok(m) => Ok(Some(m)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn resolve(&self, reference: &str) -> Result<Option<(Descriptor, Option<RawManifest>)>> {
        self.client.resolve_manifest(&self.target.repository, reference).await
    }

    async fn head(&self, reference: &str) -> Result<Option<Descriptor>> {
        self.client.head_manifest(&self.target.repository, reference).await
    }

    async fn untag(&self, reference: &str, expected: &Digest) -> Result<()> {
        let repo = &self.target.repository;
        match self.client.delete_manifest(repo, reference).await {
            Ok(()) | Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => debug!(
                "{}:{reference}: deleting by tag was refused ({e}); deleting by digest",
                self.id
            ),
        }
        match self.client.head_manifest(repo, reference).await? {
            None => Ok(()),
            Some(now) if now.digest != *expected => Err(Error::invalid(format!(
                "{}:{reference} moved since the plan (it names {}, the plan saw {expected}); not deleted",
                self.id, now.digest
            ))),
            Some(_) => self.client.delete_manifest(repo, expected.as_str()).await,
        }
    }

    fn pull_quota(&self) -> Option<crate::registry::rate_limit::PullQuota> {
        self.client.pull_quota()
    }

    async fn referrers(
        &self,
        subject: &Digest,
        tags: &[String],
        known_tags: Option<&HashSet<String>>,
    ) -> Result<Referrers> {
        let repo = &self.target.repository;
        let listed = self.client.listed_referrers(repo, subject, known_tags).await?;
        let mut out = Referrers {
            listed: listed.descriptors,
            native: listed.by_api,
            tags: Vec::with_capacity(tags.len()),
        };
        for tag in tags {
            let named = if known_tags.is_some_and(|t| !t.contains(tag)) {
                None
            } else {
                self.client.head_manifest(repo, tag).await?
            };
            out.tags.push((tag.clone(), named));
        }
        Ok(out)
    }

    async fn tags(&self) -> Result<Option<Vec<String>>> {
        match self.client.list_tags(&self.target.repository).await {
            Ok(t) => Ok(Some(t)),
            Err(Error::NotFound(_)) => Ok(Some(Vec::new())),
            Err(e) => Err(e),
        }
    }

    async fn small_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        if desc.size > limit {
            return Err(Error::invalid(format!(
                "blob {} is {} bytes, over the {limit}-byte limit for what is read whole",
                desc.digest, desc.size
            )));
        }
        let reader = self.client.get_blob(&self.target.repository, desc).await?;
        let mut buf = Vec::with_capacity(desc.size as usize);
        reader
            .take(limit + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::stream(&format!("blob {}", desc.digest), e))?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_referrers_tag_keeps_every_entry_it_had() {
        let foreign = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"foreign"), 10);
        let ours = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(b"ours"), 20)
            .with_artifact_type(Some("application/spdx+json".into()));
        let first = merge_referrers_index(None, std::slice::from_ref(&foreign))
            .unwrap()
            .unwrap();
        let raw = RawManifest::new(bytes::Bytes::from(first), Some(media_type::OCI_INDEX)).unwrap();
        let merged = merge_referrers_index(Some(&raw), &[ours.clone(), foreign.clone()])
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, [foreign.digest.as_str(), ours.digest.as_str()]);
        assert_eq!(v["manifests"][1]["artifactType"], "application/spdx+json");
        let again = RawManifest::new(bytes::Bytes::from(merged), Some(media_type::OCI_INDEX)).unwrap();
        assert_eq!(merge_referrers_index(Some(&again), &[ours]).unwrap(), None);
        let image = RawManifest::new(
            bytes::Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#),
            None,
        )
        .unwrap();
        assert!(merge_referrers_index(Some(&image), &[foreign]).is_err());
    }
}

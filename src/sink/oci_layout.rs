//! Sink: an OCI image layout directory. Blobs are stored as they come
//! (`blobs/sha256/<hex>`, written to a temp name and renamed), manifests with
//! their exact bytes, and the tag is added to `index.json` (under a file lock)
//! only after everything it references is in place.
//!
//! Nothing is created until there is something to put in the layout (a
//! refused password or an unreachable source leaves no skeleton), and a
//! first write that fails removes the layout it made (see
//! [`DestDir`](super::atomic::DestDir)).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::atomic::{locked_update, stream_chunks_atomic, write_file_atomic, DestDir};
use super::kind::{BlobLookup, CurrentDigest, DestinationKind, ReadBack, StoredForm};
use super::store::{Capabilities, Current, Referrers, Store, StoreId, StoreOptions};
use super::Sink;
use crate::error::{Error, Result};
use crate::image::convert::MediaTypes;
use crate::image::{Descriptor, Digest, ImageData, ImageName, RawManifest};
use crate::reference::Reference;
use crate::source::oci_layout::REF_NAME;
use crate::source::stream::{read_chunks, Chunks, CHUNK};
use crate::source::BlobReader;

/// An OCI image layout: compressed blobs, indexes kept, `index.json` says
/// what each tag names, read back as a layout, referrers in `index.json`.
pub const KIND: DestinationKind = DestinationKind {
    scheme: "oci",
    keeps_index: true,
    stored_form: StoredForm::Compressed,
    current: CurrentDigest::Tagged,
    blob_lookup: BlobLookup::LayoutFile,
    record: None,
    output: None,
    read_back: ReadBack::AsImage,
    holds_referrers: true,
    one_image: None,
    open_store,
};

/// Writes images into an OCI image layout.
pub struct OciLayoutSink {
    root: PathBuf,
    tag: String,
    dest: DestDir,
    /// Set once the layout's directories and `oci-layout` are in place.
    ready: tokio::sync::OnceCell<()>,
}

impl OciLayoutSink {
    /// The layout at `root` (reused when it exists, created with the first
    /// blob when not); the image will be tagged `tag`.
    pub async fn create(root: &Path, tag: &str) -> Result<Self> {
        if let Ok(meta) = tokio::fs::metadata(root).await {
            if !meta.is_dir() {
                return Err(Error::usage(format!(
                    "{} exists and is not a directory",
                    root.display()
                )));
            }
        }
        Ok(OciLayoutSink {
            root: root.to_path_buf(),
            tag: tag.to_string(),
            dest: DestDir::new(root, "index.json")?,
            ready: tokio::sync::OnceCell::new(),
        })
    }

    /// Makes the layout's skeleton, once, before the first thing put in it.
    async fn ensure_layout(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                self.dest.ensure(&["blobs/sha256"])?;
                let marker = self.root.join("oci-layout");
                if DestDir::is_new(&marker) {
                    write_file_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
                    self.dest.made_file(marker);
                }
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_file(&self.root, digest)
    }

    async fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        self.ensure_layout().await?;
        let path = self.blob_path(digest);
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.len() == bytes.len() as u64)
        {
            return Ok(());
        }
        let new = DestDir::is_new(&path);
        write_file_atomic(&path, bytes).await?;
        if new {
            self.dest.made_file(path);
        }
        Ok(())
    }

    async fn tag_manifest(&self, desc: Descriptor) -> Result<()> {
        let tag = self.tag.clone();
        self.edit_index(move |list| {
            list.retain(|m| name_of(m).as_deref() != Some(tag.as_str()));
            let entry = desc.with_platform(None).with_annotations(None);
            let mut entry = serde_json::to_value(entry)?;
            entry["annotations"] = json!({ REF_NAME: tag });
            list.push(entry);
            Ok(())
        })
        .await
    }

    /// Changes the list of `index.json`'s manifests under the layout's
    /// lock (an absent index.json starts empty), then marks the write
    /// committed.
    async fn edit_index(&self, edit: impl FnOnce(&mut Vec<Value>) -> Result<()> + Send + 'static) -> Result<()> {
        let index_path = self.root.join("index.json");
        let shown = index_path.clone();
        locked_update(&index_path, move |current| {
            let mut index: Value = match current {
                Some(b) => serde_json::from_slice(&b)
                    .map_err(|e| Error::invalid(format!("malformed {}: {e}", shown.display())))?,
                None => json!({"schemaVersion": 2, "mediaType": crate::image::media_type::OCI_INDEX, "manifests": []}),
            };
            let Some(list) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
                return Err(Error::invalid(format!("{} has no manifests array", shown.display())));
            };
            edit(list)?;
            Ok(serde_json::to_vec_pretty(&index)?)
        })
        .await?;
        self.dest.committed();
        Ok(())
    }
}

/// The `ref.name` of an index.json entry.
fn name_of(m: &Value) -> Option<String> {
    m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[async_trait]
impl Sink for OciLayoutSink {
    fn describe(&self) -> String {
        format!("oci://{}:{}", self.root.display(), self.tag)
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        // A blob another writer put here is kept for us: claim the layout first.
        self.dest.claim_if_present()?;
        Ok(tokio::fs::metadata(self.blob_path(digest)).await.is_ok())
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        self.put_blob_chunks(desc, read_chunks(reader, CHUNK)).await
    }

    async fn put_blob_chunks(&self, desc: &Descriptor, chunks: Chunks) -> Result<()> {
        self.ensure_layout().await?;
        let path = self.blob_path(&desc.digest);
        let new = DestDir::is_new(&path);
        stream_chunks_atomic(&path, chunks).await?;
        if new {
            self.dest.made_file(path);
        }
        Ok(())
    }

    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()> {
        self.put_bytes(&image.config.digest, &image.config.bytes).await?;
        let raw = &image.raw_manifest;
        self.put_bytes(&raw.digest, &raw.bytes).await?;
        if tagged {
            self.tag_manifest(raw.descriptor()).await?;
        }
        Ok(())
    }

    async fn put_index(&self, index: &RawManifest, _images: &[ImageData]) -> Result<()> {
        self.put_bytes(&index.digest, &index.bytes).await?;
        self.tag_manifest(index.descriptor()).await
    }

    async fn put_referrer(&self, manifest: &RawManifest, desc: &Descriptor, tag: Option<&str>) -> Result<()> {
        self.put_bytes(&manifest.digest, &manifest.bytes).await?;
        let tag = tag.map(str::to_string);
        let mut entry = desc.clone();
        entry.media_type = manifest.media_type.clone();
        entry.digest = manifest.digest.clone();
        entry.size = manifest.bytes.len() as u64;
        entry.set_platform(None);
        entry.set_urls(None);
        // Listed in index.json beside its subject: by its cosign tag, or
        // untagged (as oras keeps referrers), once.
        self.edit_index(move |list| {
            let mut value = serde_json::to_value(&entry)?;
            match &tag {
                Some(t) => {
                    list.retain(|m| name_of(m).as_deref() != Some(t.as_str()));
                    let mut annotations = entry.annotations().cloned().unwrap_or_default();
                    annotations.insert(REF_NAME.to_string(), t.clone());
                    value["annotations"] = serde_json::to_value(annotations)?;
                }
                None => {
                    let digest = entry.digest.as_str();
                    if list
                        .iter()
                        .any(|m| m.get("digest").and_then(Value::as_str) == Some(digest) && name_of(m).is_none())
                    {
                        return Ok(());
                    }
                }
            }
            list.push(value);
            Ok(())
        })
        .await
    }

    async fn finish(&self) -> Result<()> {
        Ok(())
    }

    async fn abort(&self) {
        self.dest.undo();
    }
}

/// Where a layout keeps a blob: `blobs/sha256/HEX` (digests are sha256).
pub fn blob_file(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs").join("sha256").join(digest.hex())
}

/// The digest `index.json` of the layout at `root` names `tag` with (its
/// `org.opencontainers.image.ref.name`); None when it names none or there
/// is no layout.
pub fn tagged(root: &Path, tag: &str) -> Option<Digest> {
    index_manifests(root)
        .into_iter()
        .find(|d| ref_name(d) == Some(tag))
        .map(|d| d.digest)
}

/// The tag (`org.opencontainers.image.ref.name`) an `index.json` entry has.
fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().and_then(|a| a.get(REF_NAME)).map(String::as_str)
}

/// The descriptors the layout's `index.json` lists (none when it has none).
pub fn index_manifests(root: &Path) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    std::fs::read(root.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
        .map(|i| i.manifests)
        .unwrap_or_default()
}

/// What a layout's `index.json` lists that refers to something, by
/// subject: the manifests whose `subject` names it (untagged), and cosign's
/// `sha256-<hex>.sig/.att/.sbom` tags of it (tagged). Entries whose blob is
/// not in the layout are left out.
pub type LayoutReferrers = std::collections::HashMap<Digest, Vec<(Descriptor, Option<String>)>>;

/// Scans the layout at `root` for referrers (see [`LayoutReferrers`]).
pub fn scan_referrers(root: &Path) -> LayoutReferrers {
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
    let mut out = LayoutReferrers::new();
    for d in index_manifests(root) {
        let file = blob_file(root, &d.digest);
        let name = ref_name(&d).map(str::to_string);
        if let Some((s, _)) = name.as_deref().and_then(crate::image::referrers::parse_cosign_tag) {
            if file.is_file() {
                out.entry(s).or_default().push((d.with_annotations(None), name));
            }
            continue;
        }
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<WithSubject>(&bytes) else {
            continue;
        };
        if let Some(subject) = m.subject.map(|s| s.digest) {
            let artifact_type = d
                .artifact_type()
                .map(str::to_string)
                .or(m.artifact_type)
                .or(m.config.map(|c| c.media_type.into_owned()));
            let annotations = d.annotations().filter(|a| !a.contains_key(REF_NAME)).cloned();
            let descriptor = d.with_artifact_type(artifact_type).with_annotations(annotations);
            out.entry(subject).or_default().push((descriptor, None));
        }
    }
    out
}

/// What refers to `subject` in a layout scanned as `all`: the untagged
/// referrers, and what each of `tags` names.
pub fn referrers_in(all: &LayoutReferrers, subject: &Digest, tags: &[String]) -> Referrers {
    let mut out = Referrers {
        native: true,
        ..Referrers::default()
    };
    let found = all.get(subject).map(Vec::as_slice).unwrap_or_default();
    for (d, tag) in found {
        if tag.is_none() {
            out.listed.push(d.clone());
        }
    }
    for tag in tags {
        let named = found
            .iter()
            .find(|(_, t)| t.as_deref() == Some(tag.as_str()))
            .map(|(d, _)| d.clone());
        out.tags.push((tag.clone(), named));
    }
    out
}

/// A small blob of the layout at `root` read whole, checked against its
/// descriptor (`limit`: the most bytes read).
pub async fn read_small_blob(root: &Path, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    if desc.size > limit {
        return Err(Error::invalid(format!(
            "blob {} is {} bytes, over the {limit}-byte limit for what is read whole",
            desc.digest, desc.size
        )));
    }
    let file = blob_file(root, &desc.digest);
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| Error::io("read a blob", &file, e))?;
    if Digest::of(&bytes) != desc.digest || bytes.len() as u64 != desc.size {
        return Err(Error::invalid(format!(
            "{} does not hold blob {} ({} bytes): the layout is damaged",
            file.display(),
            desc.digest,
            desc.size
        )));
    }
    Ok(bytes)
}

/// An OCI layout as the planner asks it: `index.json` says what a tag
/// names, a blob is there when its file is.
pub struct OciLayoutStore {
    id: StoreId,
    root: PathBuf,
    tag: Option<String>,
    oci_format: bool,
    /// What refers to what in it, scanned once.
    referrers: tokio::sync::OnceCell<std::sync::Arc<LayoutReferrers>>,
}

impl OciLayoutStore {
    /// The layout at `root`, known as `id`, as a store.
    pub fn at(id: StoreId, root: &Path) -> OciLayoutStore {
        OciLayoutStore {
            id,
            root: root.to_path_buf(),
            tag: None,
            oci_format: false,
            referrers: tokio::sync::OnceCell::new(),
        }
    }

    /// Its referrers, scanned on the first ask.
    async fn scanned(&self) -> Result<std::sync::Arc<LayoutReferrers>> {
        self.referrers
            .get_or_try_init(|| async {
                let root = self.root.clone();
                tokio::task::spawn_blocking(move || std::sync::Arc::new(scan_referrers(&root)))
                    .await
                    .map_err(|e| Error::invalid(format!("layout scan task failed: {e}")))
            })
            .await
            .cloned()
    }
}

fn open_store(dest: &Reference, _: &StoreOptions) -> Result<Box<dyn Store>> {
    let Reference::Oci { path, tag, oci_format } = dest else {
        return Err(super::store::not_a_store(dest));
    };
    Ok(Box::new(OciLayoutStore {
        id: StoreId::of(dest),
        root: path.clone(),
        tag: tag.clone(),
        oci_format: *oci_format,
        referrers: tokio::sync::OnceCell::new(),
    }))
}

#[async_trait]
impl Store for OciLayoutStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            media_types: if self.oci_format {
                MediaTypes::Oci
            } else {
                MediaTypes::OciWhenSynthesised
            },
            ..Capabilities::of_kind(&KIND)
        }
    }

    fn reference_for(&self, name: &ImageName) -> String {
        self.tag.clone().unwrap_or_else(|| name.tag.clone())
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        Ok(Current::Tagged(tagged(&self.root, &self.reference_for(name))))
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(blobs.len());
        for d in blobs {
            out.push(
                tokio::fs::metadata(blob_file(&self.root, d))
                    .await
                    .is_ok_and(|m| m.is_file()),
            );
        }
        Ok(out)
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        layout_manifest(&self.root, reference).await
    }

    async fn referrers(&self, subject: &Digest, tags: &[String], _: Option<&HashSet<String>>) -> Result<Referrers> {
        Ok(referrers_in(&*self.scanned().await?, subject, tags))
    }

    async fn tags(&self) -> Result<Option<Vec<String>>> {
        Ok(Some(
            index_manifests(&self.root)
                .iter()
                .filter_map(|d| ref_name(d).map(str::to_string))
                .collect(),
        ))
    }

    async fn small_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        read_small_blob(&self.root, desc, limit).await
    }
}

/// The manifest the layout at `root` holds under `reference` (a digest or
/// a tag of `index.json`), verified against its digest; None when absent.
pub async fn layout_manifest(root: &Path, reference: &str) -> Result<Option<RawManifest>> {
    let digest = match Digest::parse(reference) {
        Ok(d) => d,
        Err(_) => match tagged(root, reference) {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let file = blob_file(root, &digest);
    let bytes = match tokio::fs::read(&file).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &file, e)),
    };
    let listed = index_manifests(root).into_iter().find(|d| d.digest == digest);
    RawManifest::verified(
        bytes::Bytes::from(bytes),
        listed.as_ref().map(|d| &*d.media_type),
        &digest,
        &format!("manifest {digest} in {}", root.display()),
    )
    .map(Some)
}

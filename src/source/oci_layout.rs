//! Source: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), choosing the image by its `ref.name` tag.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use super::{BlobReader, Source};
use crate::error::{Error, Result};
use crate::image::manifest::MAX_MANIFEST_SIZE;
use crate::image::{Descriptor, Digest, RawManifest, VerifyingReader};

/// The annotation that names a tag in an OCI layout's index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
    /// Tag → the first entry it names, as written (`ref.name`) and by the
    /// part after its last `:` (`repo:tag` names).
    #[serde(skip)]
    by_tag: HashMap<String, usize>,
}

impl LayoutIndex {
    fn indexed(mut self) -> Self {
        let mut by_tag = HashMap::new();
        for (i, d) in self.manifests.iter().enumerate() {
            if let Some(name) = d.annotations().and_then(|a| a.get(REF_NAME)) {
                by_tag.entry(name.clone()).or_insert(i);
                if let Some((_, t)) = name.rsplit_once(':') {
                    by_tag.entry(t.to_string()).or_insert(i);
                }
            }
        }
        self.by_tag = by_tag;
        self
    }

    /// The first entry whose name is `tag` or ends with `:tag`.
    fn find(&self, tag: &str) -> Option<&Descriptor> {
        self.by_tag.get(tag).and_then(|&i| self.manifests.get(i))
    }
}

/// Layouts' `index.json` as last read, by path, with what identified the
/// file then (size, modification time, inode): a sync of thousands of tags
/// of one layout parses it once, and a changed file is read again.
type IndexMemo = HashMap<PathBuf, ((u64, Option<std::time::SystemTime>, u64), Arc<LayoutIndex>)>;

fn index_memo() -> &'static Mutex<IndexMemo> {
    static MEMO: OnceLock<Mutex<IndexMemo>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// Reads (or recalls) the `index.json` of the layout at `root`.
async fn read_index(root: &Path) -> Result<Arc<LayoutIndex>> {
    use std::os::unix::fs::MetadataExt;
    let index_path = root.join("index.json");
    let meta = tokio::fs::metadata(&index_path)
        .await
        .map_err(|e| Error::io("read", &index_path, e))?;
    let stamp = (meta.len(), meta.modified().ok(), meta.ino());
    if let Some((seen, index)) = index_memo().lock().ok().and_then(|m| m.get(&index_path).cloned()) {
        if seen == stamp {
            return Ok(index);
        }
    }
    let bytes = tokio::fs::read(&index_path)
        .await
        .map_err(|e| Error::io("read", &index_path, e))?;
    let index: LayoutIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("malformed {}: {e}", index_path.display())))?;
    let index = Arc::new(index.indexed());
    // Recorded only when the file did not change while it was read.
    let after = tokio::fs::metadata(&index_path).await.ok();
    if after.is_some_and(|m| (m.len(), m.modified().ok(), m.ino()) == stamp) {
        if let Ok(mut memo) = index_memo().lock() {
            memo.insert(index_path, (stamp, index.clone()));
        }
    }
    Ok(index)
}

/// Reads images from an OCI image layout.
pub struct OciLayoutSource {
    root: PathBuf,
    tag: Option<String>,
    entry: Descriptor,
}

impl OciLayoutSource {
    /// Opens the layout at `root` and finds the entry for `tag` (or the only entry).
    pub async fn open(root: &Path, tag: Option<&str>) -> Result<Self> {
        let marker = root.join("oci-layout");
        match tokio::fs::metadata(&marker).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let what = if tokio::fs::metadata(root).await.is_ok() {
                    "is not an OCI image layout (no oci-layout file): oci:// expects a layout as skopeo or occy write it"
                } else {
                    "does not exist: check the path (oci:///ABSOLUTE/PATH:TAG, or oci://RELATIVE/PATH:TAG)"
                };
                return Err(Error::NotFound(format!("{} {what}", root.display())));
            }
            Err(e) => return Err(Error::io("read", &marker, e)),
        }
        let index = read_index(root).await?;
        let tags = || {
            index
                .manifests
                .iter()
                .filter_map(|d| d.annotations().and_then(|a| a.get(REF_NAME)).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = match tag {
            Some(t) => index.find(t).cloned().ok_or_else(|| {
                Error::NotFound(format!(
                    "tag {t:?} not found in OCI layout {}; it has: {}",
                    root.display(),
                    tags()
                ))
            })?,
            None => match index.manifests.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::NotFound(format!(
                        "OCI layout {} holds no images",
                        root.display()
                    )))
                }
                _ => {
                    return Err(Error::usage(format!(
                        "OCI layout {} holds several images; name one with oci://{}:TAG (tags: {})",
                        root.display(),
                        root.display(),
                        tags()
                    )))
                }
            },
        };
        Ok(OciLayoutSource {
            root: root.to_path_buf(),
            tag: tag.map(str::to_string),
            entry,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    async fn read_manifest(&self, desc_digest: &Digest, media_type: Option<&str>) -> Result<RawManifest> {
        let path = self.blob_path(desc_digest);
        let meta = tokio::fs::metadata(&path).await.map_err(|e| missing(&path, e))?;
        if meta.len() > MAX_MANIFEST_SIZE as u64 {
            return Err(Error::invalid(format!(
                "manifest {} is {} bytes, too large",
                path.display(),
                meta.len()
            )));
        }
        let bytes = tokio::fs::read(&path).await.map_err(|e| missing(&path, e))?;
        RawManifest::verified(
            Bytes::from(bytes),
            media_type,
            desc_digest,
            &format!("manifest {}", path.display()),
        )
    }
}

fn missing(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(format!("blob {} is missing from the OCI layout", path.display()))
    } else {
        Error::io("read", path, e)
    }
}

#[async_trait]
impl Source for OciLayoutSource {
    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci://{}:{t}", self.root.display()),
            None => format!("oci://{}", self.root.display()),
        }
    }

    async fn root_manifest(&self) -> Result<RawManifest> {
        let mt = Some(&*self.entry.media_type).filter(|m| !m.is_empty());
        self.read_manifest(&self.entry.digest, mt).await
    }

    async fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.read_manifest(digest, None).await
    }

    async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
        let path = self.blob_path(&desc.digest);
        let file = tokio::fs::File::open(&path).await.map_err(|e| missing(&path, e))?;
        Ok(Box::pin(VerifyingReader::new(
            tokio::io::BufReader::with_capacity(256 * 1024, file),
            Some(desc.digest.clone()),
            Some(desc.size),
            format!("blob {}", desc.digest),
        )))
    }
}

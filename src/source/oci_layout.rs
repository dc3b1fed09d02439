//! Source: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), choosing the image by its `ref.name` tag.

use std::path::{Path, PathBuf};

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
        let index_path = root.join("index.json");
        let bytes = tokio::fs::read(&index_path)
            .await
            .map_err(|e| Error::io("read", &index_path, e))?;
        let index: LayoutIndex = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("malformed {}: {e}", index_path.display())))?;
        let tags = || {
            index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.as_ref().and_then(|a| a.get(REF_NAME)).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = match tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|d| {
                    d.annotations
                        .as_ref()
                        .and_then(|a| a.get(REF_NAME))
                        .is_some_and(|n| n == t || n.ends_with(&format!(":{t}")))
                })
                .cloned()
                .ok_or_else(|| {
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
        let mt = Some(self.entry.media_type.as_str()).filter(|m| !m.is_empty());
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

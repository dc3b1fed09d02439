//! Sink: an OCI image layout directory. Blobs are stored as they come
//! (`blobs/sha256/<hex>`, written to a temp name and renamed), manifests with
//! their exact bytes, and the tag is added to `index.json` (under a file lock)
//! only after everything it references is in place.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::atomic::{ensure_dir, locked_update, stream_file_atomic, write_file_atomic};
use super::{LayerForm, Sink};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, RawManifest};
use crate::source::oci_layout::REF_NAME;
use crate::source::BlobReader;

/// Writes images into an OCI image layout.
pub struct OciLayoutSink {
    root: PathBuf,
    tag: String,
}

impl OciLayoutSink {
    /// Creates (or reuses) the layout at `root`; the image will be tagged `tag`.
    pub async fn create(root: &Path, tag: &str) -> Result<Self> {
        if let Ok(meta) = tokio::fs::metadata(root).await {
            if !meta.is_dir() {
                return Err(Error::usage(format!(
                    "{} exists and is not a directory",
                    root.display()
                )));
            }
        }
        ensure_dir(&root.join("blobs").join("sha256")).await?;
        let marker = root.join("oci-layout");
        if tokio::fs::metadata(&marker).await.is_err() {
            write_file_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
        }
        Ok(OciLayoutSink {
            root: root.to_path_buf(),
            tag: tag.to_string(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    async fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(digest);
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|m| m.len() == bytes.len() as u64)
        {
            return Ok(());
        }
        write_file_atomic(&path, bytes).await
    }

    async fn tag_manifest(&self, desc: Descriptor) -> Result<()> {
        let tag = self.tag.clone();
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
            list.retain(|m| {
                m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                    .and_then(Value::as_str)
                    != Some(tag.as_str())
            });
            let mut entry = serde_json::to_value(Descriptor {
                platform: None,
                annotations: None,
                ..desc
            })?;
            entry["annotations"] = json!({ REF_NAME: tag });
            list.push(entry);
            Ok(serde_json::to_vec_pretty(&index)?)
        })
        .await
    }
}

#[async_trait]
impl Sink for OciLayoutSink {
    fn describe(&self) -> String {
        format!("oci://{}:{}", self.root.display(), self.tag)
    }

    fn layer_form(&self) -> LayerForm {
        LayerForm::AsIs
    }

    fn supports_index(&self) -> bool {
        true
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(tokio::fs::metadata(self.blob_path(digest)).await.is_ok())
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        stream_file_atomic(&self.blob_path(&desc.digest), reader).await?;
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

    async fn finish(&self) -> Result<()> {
        Ok(())
    }

    async fn abort(&self) {}
}

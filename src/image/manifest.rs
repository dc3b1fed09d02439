//! Manifests and indexes (OCI and Docker v2), descriptors, and
//! [`RawManifest`], which keeps the exact bytes a manifest arrived as so an
//! unmodified copy keeps its digest.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::media_type::{self, MediaType};
use super::platform::Platform;
use crate::error::{Error, Result};

/// A content descriptor: what a manifest says about one blob or child manifest.
///
/// The fields most descriptors lack (platform, annotations, URLs, artifact
/// type) live in one box, read through [`Descriptor::platform`] and its
/// siblings: a plan of 100,000 images holds half a million descriptors, and
/// those four took 80 of a descriptor's 136 bytes. It reads and writes the
/// same JSON as a flat struct would, field for field and in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "WireDescriptor")]
pub struct Descriptor {
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
    /// None when every rare field is unset (kept so: equal descriptors compare equal).
    extra: Option<Box<DescriptorExtra>>,
}

/// The rarely set fields of a [`Descriptor`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DescriptorExtra {
    platform: Option<Platform>,
    annotations: Option<BTreeMap<String, String>>,
    urls: Option<Vec<String>>,
    artifact_type: Option<String>,
}

impl DescriptorExtra {
    fn is_empty(&self) -> bool {
        self.platform.is_none() && self.annotations.is_none() && self.urls.is_none() && self.artifact_type.is_none()
    }
}

/// A descriptor as JSON has it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor {
    #[serde(default, deserialize_with = "media_type::deserialize")]
    media_type: MediaType,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    artifact_type: Option<String>,
}

impl From<WireDescriptor> for Descriptor {
    fn from(w: WireDescriptor) -> Self {
        let extra = DescriptorExtra {
            platform: w.platform,
            annotations: w.annotations,
            urls: w.urls,
            artifact_type: w.artifact_type,
        };
        Descriptor {
            media_type: w.media_type,
            digest: w.digest,
            size: w.size,
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        }
    }
}

impl Serialize for Descriptor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            media_type: &'a str,
            digest: &'a Digest,
            size: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            platform: Option<&'a Platform>,
            #[serde(skip_serializing_if = "Option::is_none")]
            annotations: Option<&'a BTreeMap<String, String>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            urls: Option<&'a [String]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            artifact_type: Option<&'a str>,
        }
        Wire {
            media_type: &self.media_type,
            digest: &self.digest,
            size: self.size,
            platform: self.platform(),
            annotations: self.annotations(),
            urls: self.urls(),
            artifact_type: self.artifact_type(),
        }
        .serialize(serializer)
    }
}

impl Descriptor {
    /// A plain descriptor.
    pub fn new(media_type: impl AsRef<str>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type::intern(media_type.as_ref()),
            digest,
            size,
            extra: None,
        }
    }

    /// The platform an index entry is for.
    pub fn platform(&self) -> Option<&Platform> {
        self.extra.as_ref()?.platform.as_ref()
    }

    /// The descriptor's annotations.
    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        self.extra.as_ref()?.annotations.as_ref()
    }

    /// Where a foreign layer may be fetched from.
    pub fn urls(&self) -> Option<&[String]> {
        self.extra.as_ref()?.urls.as_deref()
    }

    /// The artifact type (OCI 1.1) of a referrer.
    pub fn artifact_type(&self) -> Option<&str> {
        self.extra.as_ref()?.artifact_type.as_deref()
    }

    /// Changes the rare fields through `f`, keeping the box only while one is set.
    fn edit_extra(&mut self, f: impl FnOnce(&mut DescriptorExtra)) {
        let mut extra = self.extra.take().unwrap_or_default();
        f(&mut extra);
        self.extra = (!extra.is_empty()).then_some(extra);
    }

    /// Sets (or clears) the platform.
    pub fn set_platform(&mut self, platform: Option<Platform>) {
        self.edit_extra(|e| e.platform = platform);
    }

    /// Sets (or clears) the annotations.
    pub fn set_annotations(&mut self, annotations: Option<BTreeMap<String, String>>) {
        self.edit_extra(|e| e.annotations = annotations);
    }

    /// Takes the annotations out, leaving none.
    pub fn take_annotations(&mut self) -> Option<BTreeMap<String, String>> {
        let mut taken = None;
        self.edit_extra(|e| taken = e.annotations.take());
        taken
    }

    /// Sets (or clears) the URLs.
    pub fn set_urls(&mut self, urls: Option<Vec<String>>) {
        self.edit_extra(|e| e.urls = urls);
    }

    /// Sets (or clears) the artifact type.
    pub fn set_artifact_type(&mut self, artifact_type: Option<String>) {
        self.edit_extra(|e| e.artifact_type = artifact_type);
    }

    /// This descriptor with a platform.
    pub fn with_platform(mut self, platform: Option<Platform>) -> Self {
        self.set_platform(platform);
        self
    }

    /// This descriptor with annotations.
    pub fn with_annotations(mut self, annotations: Option<BTreeMap<String, String>>) -> Self {
        self.set_annotations(annotations);
        self
    }

    /// This descriptor with an artifact type.
    pub fn with_artifact_type(mut self, artifact_type: Option<String>) -> Self {
        self.set_artifact_type(artifact_type);
        self
    }
}

/// A single-platform image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "media_type::deserialize_option"
    )]
    pub media_type: Option<MediaType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// Whether this manifest uses OCI media types (else Docker v2).
    pub fn is_oci(&self) -> bool {
        match &self.media_type {
            Some(mt) => media_type::is_oci(mt),
            None => media_type::is_oci(&self.config.media_type),
        }
    }

    /// Serialises a manifest we built or changed (never one we only copy).
    pub fn to_bytes(&self) -> Result<Bytes> {
        Ok(Bytes::from(serde_json::to_vec_pretty(self)?))
    }
}

/// A multi-platform index (OCI image index or Docker manifest list).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Box<Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageIndex {
    /// Serialises an index we built or changed (never one we only copy).
    pub fn to_bytes(&self) -> Result<Bytes> {
        Ok(Bytes::from(serde_json::to_vec_pretty(self)?))
    }
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // short-lived, one per parse
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// A manifest exactly as received: its bytes, its media type and its digest.
/// Copies write `bytes` untouched, so digests never change by accident.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: MediaType,
    pub digest: Digest,
    /// The length of `bytes`, kept when a plan that is only shown lets the
    /// bytes go ([`RawManifest::without_bytes`]).
    pub size: u64,
}

/// Upper bound on a manifest's size (the Distribution registry's own limit is 4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

impl RawManifest {
    /// Wraps manifest bytes, computing their digest. When the media type is not
    /// given (or is a generic JSON type) it is taken from the document.
    pub fn new(bytes: Bytes, media_type: Option<&str>) -> Result<Self> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(Error::invalid(format!(
                "manifest is {} bytes, over the {} byte limit",
                bytes.len(),
                MAX_MANIFEST_SIZE
            )));
        }
        let digest = Digest::of(&bytes);
        let declared = media_type
            .map(|m| m.split(';').next().unwrap_or(m).trim().to_string())
            .filter(|m| !m.is_empty() && m != "application/json" && m != "text/plain");
        let media_type = match declared {
            Some(m) => media_type::intern(&m),
            None => media_type::intern(&sniff_media_type(&bytes)?),
        };
        Ok(RawManifest {
            size: bytes.len() as u64,
            bytes,
            media_type,
            digest,
        })
    }

    /// The manifest known by its digest, media type and size alone: what a
    /// plan that is only shown needs of it once its targets are compared
    /// (its bytes are a few hundred per image of a plan of 100,000).
    pub fn without_bytes(&self) -> RawManifest {
        RawManifest {
            bytes: Bytes::new(),
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
        }
    }

    /// Wraps bytes that must hash to `expected`.
    /// The digest is compared first, so corrupted bytes are a mismatch
    /// (which a caller fetches again), never a parse error.
    pub fn verified(bytes: Bytes, media_type: Option<&str>, expected: &Digest, what: &str) -> Result<Self> {
        let actual = Digest::of(&bytes);
        if &actual != expected {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Self::new(bytes, media_type)
    }

    /// Parses the manifest, checking that it is one occy can handle.
    pub fn parse(&self) -> Result<Manifest> {
        if self.media_type == media_type::DOCKER_SCHEMA1
            || self
                .media_type
                .starts_with("application/vnd.docker.distribution.manifest.v1")
        {
            return Err(Error::Unsupported(format!(
                "manifest {} is Docker schema 1, which is deprecated and not supported",
                self.digest
            )));
        }
        if media_type::is_index(&self.media_type) {
            let mut idx: ImageIndex = serde_json::from_slice(&self.bytes)
                .map_err(|e| Error::invalid(format!("malformed index {}: {e}", self.digest)))?;
            // Parsed manifests live through a whole plan: no spare room.
            idx.manifests.shrink_to_fit();
            Ok(Manifest::Index(idx))
        } else if media_type::is_image_manifest(&self.media_type) {
            let mut m: ImageManifest = serde_json::from_slice(&self.bytes)
                .map_err(|e| Error::invalid(format!("malformed manifest {}: {e}", self.digest)))?;
            m.layers.shrink_to_fit();
            Ok(Manifest::Image(m))
        } else {
            Err(Error::Unsupported(format!(
                "manifest {} has media type {:?}, which is not an image manifest or index",
                self.digest, self.media_type
            )))
        }
    }

    /// Descriptor of this manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64)
    }
}

/// Works out a manifest's media type from its content when the transport did
/// not say (OCI layouts may omit `mediaType` in the document itself).
fn sniff_media_type(bytes: &[u8]) -> Result<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
        #[serde(default)]
        fs_layers: Option<serde_json::Value>,
    }
    let p: Probe =
        serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("manifest is not valid JSON: {e}")))?;
    if let Some(mt) = p.media_type {
        return Ok(mt);
    }
    if p.schema_version == Some(1) || p.fs_layers.is_some() {
        return Ok(media_type::DOCKER_SCHEMA1.to_string());
    }
    if p.manifests.is_some() {
        return Ok(media_type::OCI_INDEX.to_string());
    }
    if p.config.is_some() || p.layers.is_some() {
        return Ok(media_type::OCI_MANIFEST.to_string());
    }
    Err(Error::invalid(
        "document is neither an image manifest nor an index (no config, layers or manifests)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor reads and writes JSON as the flat struct it was, field
    /// for field and in order, with its rare fields set or not.
    #[test]
    fn a_descriptor_keeps_its_json_and_its_rare_fields_in_a_box() {
        let plain = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2}"#;
        let full = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2,"platform":{"os":"linux","architecture":"arm64","variant":"v8"},"annotations":{"a":"b"},"urls":["https://example.com/x"],"artifactType":"application/spdx+json"}"#;
        let d: Descriptor = serde_json::from_str(plain).unwrap();
        assert!(d.extra.is_none() && d.platform().is_none() && d.annotations().is_none());
        assert_eq!(serde_json::to_string(&d).unwrap(), plain);
        let mut f: Descriptor = serde_json::from_str(full).unwrap();
        assert_eq!(serde_json::to_string(&f).unwrap(), full);
        assert_eq!(f.platform().map(|p| p.architecture.as_str()), Some("arm64"));
        assert_eq!(f.urls().map(<[String]>::len), Some(1));
        assert_eq!(f.artifact_type(), Some("application/spdx+json"));
        assert_eq!(f.take_annotations().map(|a| a.len()), Some(1));
        f.set_platform(None);
        f.set_urls(None);
        f.set_artifact_type(None);
        // With every rare field cleared it is a plain descriptor again, equal to one read so.
        assert!(f.extra.is_none());
        assert_eq!(
            f,
            Descriptor {
                media_type: media_type::intern(media_type::OCI_MANIFEST),
                ..d.clone()
            }
        );
        assert!(
            std::mem::size_of::<Descriptor>() <= 56,
            "{}",
            std::mem::size_of::<Descriptor>()
        );
    }

    #[test]
    fn raw_manifest_keeps_bytes_and_sniffs() {
        let body = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        let m = RawManifest::new(Bytes::from_static(body), None).unwrap();
        assert_eq!(m.media_type, media_type::OCI_MANIFEST);
        assert_eq!(m.digest, Digest::of(body));
        assert!(matches!(m.parse().unwrap(), Manifest::Image(_)));
        assert!(RawManifest::new(Bytes::from_static(b"[1,2"), None).is_err());
    }

    #[test]
    fn known_media_types_are_shared_and_others_kept_as_written() {
        use std::borrow::Cow;
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[{"mediaType":"application/x-made-up","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3},{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":3}]}"#;
        let m: ImageManifest = serde_json::from_slice(body).unwrap();
        assert!(matches!(m.media_type, Some(Cow::Borrowed(media_type::OCI_MANIFEST))));
        assert!(matches!(m.config.media_type, Cow::Borrowed(media_type::OCI_CONFIG)));
        assert!(matches!(&m.layers[0].media_type, Cow::Owned(s) if s == "application/x-made-up"));
        assert_eq!(m.layers[1].media_type, "");
        // Written back as it was read.
        let again: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(again["layers"][0]["mediaType"], "application/x-made-up");
        assert_eq!(again["config"]["mediaType"], media_type::OCI_CONFIG);
        let none: ImageManifest = serde_json::from_slice(br#"{"schemaVersion":2,"mediaType":null,"config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2}}"#).unwrap();
        assert_eq!(none.media_type, None);
        let raw = RawManifest::new(
            Bytes::from_static(body),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        assert!(matches!(raw.media_type, Cow::Borrowed(media_type::OCI_MANIFEST)));
    }
}

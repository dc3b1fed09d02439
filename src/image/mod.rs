//! The image model: digests, media types, descriptors, manifests, indexes,
//! configs and platforms, plus [`ImageData`], one resolved platform image.

pub mod config;
pub mod convert;
pub mod cosign;
pub mod digest;
pub mod manifest;
pub mod media_type;
pub mod notation;
pub mod platform;
pub mod referrers;
pub mod select;
pub mod sigstore;
pub mod x509;

pub use config::{ConfigBlob, ImageConfig};
pub use digest::{BlobReader, Digest, VerifyingReader};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, Manifest, RawManifest};
pub use media_type::Compression;
pub use platform::Platform;
pub use select::{check_fits, expected_digest, index_to_write, writes_index, PlatformSelection};

use crate::error::{Error, Result};

/// An image's name and tag as recorded by sinks (RepoTags, `ref.name`,
/// catalog entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Repository name with namespaces, e.g. `127.0.0.1:5000/library/busybox`.
    pub repository: String,
    /// Tag, e.g. `latest`.
    pub tag: String,
}

impl ImageName {
    /// Parses `repo[:tag]` (the tag is after the last `/`), defaulting to `latest`.
    pub fn parse(s: &str) -> ImageName {
        let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        match s[slash..].rfind(':') {
            Some(i) => ImageName {
                repository: s[..slash + i].to_string(),
                tag: s[slash + i + 1..].to_string(),
            },
            None => ImageName {
                repository: s.to_string(),
                tag: "latest".to_string(),
            },
        }
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// One single-platform image as read from a source: its manifest (raw and
/// parsed) and its config (raw and parsed).
#[derive(Debug, Clone)]
pub struct ImageData {
    pub raw_manifest: RawManifest,
    pub manifest: ImageManifest,
    pub config: ConfigBlob,
    /// The platform this image was chosen for, when it came from an index.
    pub platform: Option<Box<Platform>>,
}

impl ImageData {
    /// The diff_id the config declares for layer `i`.
    pub fn diff_id(&self, i: usize) -> Result<&Digest> {
        self.config.parsed.rootfs.diff_ids.get(i).ok_or_else(|| {
            Error::invalid(format!(
                "manifest {} has {} layers but its config lists only {} diff_ids",
                self.raw_manifest.digest,
                self.manifest.layers.len(),
                self.config.parsed.rootfs.diff_ids.len()
            ))
        })
    }

    /// Total compressed size of the layers.
    pub fn layers_size(&self) -> u64 {
        self.manifest.layers.iter().map(|l| l.size).sum()
    }
}

/// What a reference resolved to: one image, or an index and the platform
/// images chosen from it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The index (or manifest list) the reference named, if it named one.
    /// (Boxed: most images have none, and a plan of 100,000 holds each.)
    pub index: Option<Box<(RawManifest, ImageIndex)>>,
    /// The chosen platform images (exactly one unless several platforms were asked for).
    pub images: Vec<ImageData>,
    /// Whether occy made the manifests up (from a docker-save archive, a
    /// dir or a daemon): they have no upstream digest to keep.
    pub synthesised: bool,
}

impl ResolvedImage {
    /// Lets the manifests' bytes go, keeping their digests, media types and
    /// sizes (see [`RawManifest::without_bytes`]).
    pub fn drop_manifest_bytes(&mut self) {
        if let Some((raw, _)) = self.index.as_deref_mut() {
            *raw = raw.without_bytes();
        }
        for img in &mut self.images {
            img.raw_manifest = img.raw_manifest.without_bytes();
        }
    }

    /// The manifest the reference names (the index if there is one).
    pub fn root(&self) -> Option<&RawManifest> {
        match self.index.as_deref() {
            Some((raw, _)) => Some(raw),
            None => self.images.first().map(|i| &i.raw_manifest),
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

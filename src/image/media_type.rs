//! Media types of manifests, configs and layers, OCI and Docker v2, and what
//! each says about its content (kind, compression, family).

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layers (deprecated, still met in the wild).
pub const OCI_LAYER_NONDIST_TAR: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDIST_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDIST_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker v2 config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker v2 layer, gzip.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker v2 layer, uncompressed (used by docker-save archives).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker v2 foreign layer (Windows base layers).
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker v2 schema 1 (signed) manifests: refused, as every modern tool does.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header for manifests: everything we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// How a layer blob is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type declares; `None` for unknown types.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        match mt {
            OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => Some(Compression::None),
            OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN => {
                Some(Compression::Gzip)
            }
            OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD => Some(Compression::Zstd),
            _ => {
                if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
                    Some(Compression::Gzip)
                } else if mt.ends_with("+zstd") {
                    Some(Compression::Zstd)
                } else if mt.ends_with(".tar") {
                    Some(Compression::None)
                } else {
                    None
                }
            }
        }
    }

    /// The compression the first bytes of a blob show (gzip `1f 8b`, zstd
    /// `28 b5 2f fd`, otherwise treated as plain tar).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The layer media type for this compression in the given family.
    pub fn layer_media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Compression::None, true) => OCI_LAYER_TAR,
            (Compression::Gzip, true) => OCI_LAYER_GZIP,
            (Compression::Zstd, _) => OCI_LAYER_ZSTD,
            (Compression::None, false) => DOCKER_LAYER_TAR,
            (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Whether a media type names an image index or manifest list.
pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
}

/// Whether a media type names a single-platform image manifest.
pub fn is_image_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// Whether a media type belongs to the OCI family (as opposed to Docker v2).
pub fn is_oci(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.")
}

/// Whether a media type belongs to the Docker v2 family.
pub fn is_docker(mt: &str) -> bool {
    mt.starts_with("application/vnd.docker.")
}

/// A media type as manifests and descriptors hold it: the well-known ones
/// are this module's constants, not a string of their own each (a plan of
/// 100,000 images holds half a million of them).
pub type MediaType = std::borrow::Cow<'static, str>;

/// Every media type constant of this module, for [`intern`].
const KNOWN: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    OCI_CONFIG,
    OCI_LAYER_TAR,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST_TAR,
    OCI_LAYER_NONDIST_GZIP,
    OCI_LAYER_NONDIST_ZSTD,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
];

/// `s` as a [`MediaType`]: one of the known constants when it is one.
pub fn intern(s: &str) -> MediaType {
    match KNOWN.iter().find(|k| **k == s) {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(s.to_string()),
    }
}

/// Reads a media type from JSON as [`intern`] makes it (serde's
/// `deserialize_with`).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MediaType, D::Error> {
    struct Visit;
    impl serde::de::Visitor<'_> for Visit {
        type Value = MediaType;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a media type string")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MediaType, E> {
            Ok(intern(s))
        }
    }
    d.deserialize_str(Visit)
}

/// [`deserialize`] for an optional media type.
pub fn deserialize_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MediaType>, D::Error> {
    struct Visit;
    impl<'de> serde::de::Visitor<'de> for Visit {
        type Value = Option<MediaType>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a media type string or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Visit)
}

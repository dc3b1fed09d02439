//! Conversion of Docker v2 manifests (and manifest lists) to OCI media
//! types, as `skopeo copy --format oci` does: the manifest, config and layer
//! media types change, every other field and every blob stays as it is (so
//! layer and config digests are kept; the manifest's digest changes). Also
//! the rule of which destinations convert which manifests ([`MediaTypes`]):
//! an OCI layout gets OCI manifests for the images occy describes itself,
//! and for every image with `?format=oci`.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;

use super::manifest::{Manifest, RawManifest};
use super::media_type;
use super::{Digest, ImageData, ResolvedImage};
use crate::error::{Error, Result};

/// Which manifests a destination converts to OCI media types (each store
/// kind says which rule it wants: `sink::kind::media_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    /// Every manifest is written as it is.
    Keep,
    /// Manifests occy made up (from `tar://`, `dir://`, `docker://`) are
    /// OCI; copied ones keep their bytes (an OCI layout).
    OciWhenSynthesised,
    /// Every Docker v2 manifest is converted (`oci://…?format=oci`).
    Oci,
}

impl MediaTypes {
    /// Whether the images of `resolved` are converted under this rule.
    pub fn converts(self, resolved: &ResolvedImage) -> bool {
        match self {
            MediaTypes::Keep => false,
            MediaTypes::OciWhenSynthesised => resolved.synthesised,
            MediaTypes::Oci => true,
        }
    }
}

/// The resolved image with the media types a destination wants, or None
/// when it is written as it is. Under [`MediaTypes::OciWhenSynthesised`]
/// (an OCI layout) manifests occy made up become OCI, copied ones keep
/// their bytes; under [`MediaTypes::Oci`] (`?format=oci`) every Docker v2
/// manifest and manifest list is converted. Blobs never change.
pub fn adapt_media_types(resolved: &ResolvedImage, rule: MediaTypes) -> Result<Option<ResolvedImage>> {
    if !rule.converts(resolved) {
        return Ok(None);
    }
    let mut converted = HashMap::new();
    let mut images = Vec::with_capacity(resolved.images.len());
    for img in &resolved.images {
        match image_to_oci(img)? {
            Some(oci) => {
                converted.insert(img.raw_manifest.digest.clone(), oci.raw_manifest.clone());
                images.push(oci);
            }
            None => images.push(img.clone()),
        }
    }
    let index = match resolved.index.as_deref() {
        Some((raw, _)) => match index_to_oci(raw, &converted)? {
            Some(new) => match new.parse()? {
                Manifest::Index(parsed) => Some(Box::new((new, parsed))),
                Manifest::Image(_) => {
                    return Err(Error::invalid(format!(
                        "index {} became an image manifest when converted to OCI",
                        raw.digest
                    )))
                }
            },
            None => resolved.index.clone(),
        },
        None => None,
    };
    if converted.is_empty() && index.as_ref().map(|i| &i.0.digest) == resolved.index.as_ref().map(|i| &i.0.digest) {
        return Ok(None);
    }
    Ok(Some(ResolvedImage {
        index,
        images,
        synthesised: resolved.synthesised,
    }))
}

/// Whether a copy into an OCI layout (without `?format=oci`) keeps Docker v2
/// manifests, which OCI-only tools (skopeo 1.9 by tag, umoci, `podman pull
/// oci:`) refuse.
pub fn keeps_docker_in_oci_layout(resolved: &ResolvedImage, rule: MediaTypes) -> bool {
    rule == MediaTypes::OciWhenSynthesised
        && !resolved.synthesised
        && (resolved.images.iter().any(image_is_docker)
            || resolved
                .index
                .as_deref()
                .is_some_and(|(raw, _)| media_type::is_docker(&raw.media_type)))
}

/// What the plan says (once) when Docker v2 manifests are kept in an OCI layout.
pub fn docker_kept_warning(destination: &str) -> String {
    format!(
        "{destination} will hold Docker v2 manifests, kept byte for byte as the source has them: OCI-only tools (umoci, skopeo 1.9 and podman reading oci:) may refuse them; add ?format=oci to the destination to convert them to OCI media types (the digest changes)"
    )
}

/// The OCI media type of a Docker v2 config or layer type; other types
/// (OCI ones, unknown ones) are kept as they are.
pub fn oci_blob_type(mt: &str) -> &str {
    match mt {
        media_type::DOCKER_CONFIG => media_type::OCI_CONFIG,
        media_type::DOCKER_LAYER_TAR => media_type::OCI_LAYER_TAR,
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        media_type::DOCKER_LAYER_FOREIGN => media_type::OCI_LAYER_NONDIST_GZIP,
        other => other,
    }
}

/// Whether a single-platform image uses Docker v2 media types anywhere
/// (manifest, config or a layer).
pub fn image_is_docker(img: &ImageData) -> bool {
    media_type::is_docker(&img.raw_manifest.media_type)
        || media_type::is_docker(&img.manifest.config.media_type)
        || img.manifest.layers.iter().any(|l| media_type::is_docker(&l.media_type))
}

/// The image with OCI media types, or None when it has them already. The
/// manifest is re-serialised (its digest changes); the config and layers are
/// the same blobs.
pub fn image_to_oci(img: &ImageData) -> Result<Option<ImageData>> {
    if !image_is_docker(img) {
        return Ok(None);
    }
    let what = format!("manifest {}", img.raw_manifest.digest);
    let mut value: Value = serde_json::from_slice(&img.raw_manifest.bytes)
        .map_err(|e| Error::invalid(format!("{what} is not valid JSON: {e}")))?;
    value["mediaType"] = Value::from(media_type::OCI_MANIFEST);
    retype(&mut value["config"]);
    if let Some(layers) = value.get_mut("layers").and_then(Value::as_array_mut) {
        layers.iter_mut().for_each(retype);
    }
    let raw = RawManifest::new(Bytes::from(serde_json::to_vec(&value)?), Some(media_type::OCI_MANIFEST))?;
    let manifest = match raw.parse()? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => return Err(Error::invalid(format!("{what} became an index when converted to OCI"))),
    };
    Ok(Some(ImageData {
        raw_manifest: raw,
        manifest,
        config: img.config.clone(),
        platform: img.platform.clone(),
    }))
}

/// The index with OCI media types, its entries pointing at the converted
/// manifests (`converted` maps old manifest digests to new ones); None when
/// nothing changes.
pub fn index_to_oci(raw: &RawManifest, converted: &HashMap<Digest, RawManifest>) -> Result<Option<RawManifest>> {
    if !media_type::is_docker(&raw.media_type) && converted.is_empty() {
        return Ok(None);
    }
    let mut value: Value = serde_json::from_slice(&raw.bytes)
        .map_err(|e| Error::invalid(format!("index {} is not valid JSON: {e}", raw.digest)))?;
    value["mediaType"] = Value::from(media_type::OCI_INDEX);
    if let Some(entries) = value.get_mut("manifests").and_then(Value::as_array_mut) {
        for e in entries {
            let old = e["digest"].as_str().and_then(|d| Digest::parse(d).ok());
            // Entries of platforms not taken are left as they are: a
            // copy writes them only when it writes every platform.
            if let Some(new) = old.and_then(|d| converted.get(&d)) {
                e["digest"] = Value::from(new.digest.to_string());
                e["size"] = Value::from(new.bytes.len() as u64);
                e["mediaType"] = Value::from(new.media_type.clone());
            }
        }
    }
    Ok(Some(RawManifest::new(
        Bytes::from(serde_json::to_vec(&value)?),
        Some(media_type::OCI_INDEX),
    )?))
}

/// Gives a descriptor the OCI type of its Docker v2 type.
fn retype(desc: &mut Value) {
    if let Some(mt) = desc.get("mediaType").and_then(Value::as_str) {
        let oci = oci_blob_type(mt).to_string();
        desc["mediaType"] = Value::from(oci);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ConfigBlob;

    fn docker_image() -> ImageData {
        let config = ConfigBlob::parse(
            Bytes::from_static(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#),
            "config",
        )
        .unwrap();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"sha256:{}","size":3}},{{"mediaType":"{}","digest":"sha256:{}","size":4}}],"x-extra":1}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG,
            config.digest,
            config.bytes.len(),
            media_type::DOCKER_LAYER_GZIP,
            "a".repeat(64),
            media_type::DOCKER_LAYER_TAR,
            "b".repeat(64),
        );
        let raw = RawManifest::new(Bytes::from(body), None).unwrap();
        let Manifest::Image(manifest) = raw.parse().unwrap() else {
            panic!("not an image")
        };
        ImageData {
            raw_manifest: raw,
            manifest,
            config,
            platform: None,
        }
    }

    #[test]
    fn docker_manifests_get_oci_types_and_keep_their_blobs() {
        let img = docker_image();
        let oci = image_to_oci(&img).unwrap().unwrap();
        assert_eq!(oci.raw_manifest.media_type, media_type::OCI_MANIFEST);
        assert_ne!(oci.raw_manifest.digest, img.raw_manifest.digest);
        assert_eq!(oci.manifest.config.media_type, media_type::OCI_CONFIG);
        assert_eq!(oci.manifest.config.digest, img.manifest.config.digest);
        let types: Vec<&str> = oci.manifest.layers.iter().map(|l| l.media_type.as_ref()).collect();
        assert_eq!(types, [media_type::OCI_LAYER_GZIP, media_type::OCI_LAYER_TAR]);
        for (a, b) in oci.manifest.layers.iter().zip(&img.manifest.layers) {
            assert_eq!((&a.digest, a.size), (&b.digest, b.size));
        }
        let v: Value = serde_json::from_slice(&oci.raw_manifest.bytes).unwrap();
        assert_eq!(v["x-extra"], 1, "unknown fields are kept");
        assert!(image_to_oci(&oci).unwrap().is_none(), "an OCI image is left alone");
    }

    #[test]
    fn a_manifest_list_becomes_an_oci_index_naming_the_new_manifests() {
        let img = docker_image();
        let oci = image_to_oci(&img).unwrap().unwrap();
        let other = format!("sha256:{}", "c".repeat(64));
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{}","digest":"{other}","size":9,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            media_type::DOCKER_MANIFEST_LIST,
            media_type::DOCKER_MANIFEST,
            img.raw_manifest.digest,
            img.raw_manifest.bytes.len(),
            media_type::DOCKER_MANIFEST,
        );
        let raw = RawManifest::new(Bytes::from(list), None).unwrap();
        let converted = HashMap::from([(img.raw_manifest.digest.clone(), oci.raw_manifest.clone())]);
        let index = index_to_oci(&raw, &converted).unwrap().unwrap();
        assert_eq!(index.media_type, media_type::OCI_INDEX);
        let Manifest::Index(parsed) = index.parse().unwrap() else {
            panic!("not an index")
        };
        assert_eq!(parsed.manifests[0].digest, oci.raw_manifest.digest);
        assert_eq!(parsed.manifests[0].size, oci.raw_manifest.bytes.len() as u64);
        assert_eq!(parsed.manifests[0].media_type, media_type::OCI_MANIFEST);
        assert_eq!(parsed.manifests[1].digest.to_string(), other);
    }
}

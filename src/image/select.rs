//! Which platform images a copy takes and what the destination's tag then
//! names: the platform selection, whether an index is written, and its
//! digest (the original bytes when every platform is taken).

use tracing::debug;

use super::{Descriptor, Digest, ImageData, ImageIndex, Platform, RawManifest, ResolvedImage};
use crate::error::{Error, Result};

/// Which platforms of an index to take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlatformSelection {
    /// One platform: the host's (`linux/amd64` on most machines), or the only one.
    #[default]
    Default,
    /// Every platform of the index; the index itself is kept as is.
    All,
    /// The listed platforms, in the index's order.
    List(Vec<Platform>),
}

/// Refuses several platforms for a destination that holds one image.
pub fn check_fits(
    resolved: &ResolvedImage,
    selection: &PlatformSelection,
    supports_index: bool,
    sink: &str,
    source: &str,
) -> Result<()> {
    let keep_index = resolved.index.is_some() && *selection != PlatformSelection::Default;
    if keep_index && !supports_index && resolved.images.len() > 1 {
        return Err(Error::usage(format!(
            "{sink} holds one platform per image, but {} platforms were selected from {source}: choose one with --platform",
            resolved.images.len(),
        )));
    }
    Ok(())
}

/// Whether a copy writes the index: when the destination can hold one and
/// every platform (`--all-platforms`) or two or more listed ones were chosen.
/// One chosen platform is written as that platform's manifest, its upstream
/// digest kept, as skopeo, crane and `docker pull` do.
pub fn writes_index(resolved: &ResolvedImage, selection: &PlatformSelection, supports_index: bool) -> bool {
    resolved.index.is_some()
        && supports_index
        && match selection {
            PlatformSelection::Default => false,
            PlatformSelection::All => true,
            PlatformSelection::List(_) => resolved.images.len() > 1,
        }
}

/// The digest the destination's tag names after an unfiltered copy: the
/// index (rewritten when only some platforms are taken), else the image.
pub fn expected_digest(
    resolved: &ResolvedImage,
    selection: &PlatformSelection,
    supports_index: bool,
) -> Result<Digest> {
    match resolved.index.as_deref() {
        Some((raw, index)) if writes_index(resolved, selection, supports_index) => {
            Ok(index_to_write(raw, index, &resolved.images)?.digest)
        }
        _ => resolved
            .images
            .first()
            .map(|i| i.raw_manifest.digest.clone())
            .ok_or_else(|| Error::invalid("the source resolved to no image")),
    }
}

/// The index to write: the original bytes when every platform image was
/// chosen, otherwise an index rewritten to the chosen entries (its digest
/// changes, which is logged).
pub fn index_to_write(raw: &RawManifest, index: &ImageIndex, images: &[ImageData]) -> Result<RawManifest> {
    let chosen: Vec<&Digest> = images.iter().map(|i| &i.raw_manifest.digest).collect();
    let platform_entries: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform().is_some_and(|p| p.os != "unknown"))
        .collect();
    if platform_entries.iter().all(|d| chosen.contains(&&d.digest)) {
        return Ok(raw.clone());
    }
    let mut sub = index.clone();
    sub.manifests.retain(|d| chosen.contains(&&d.digest));
    let rewritten = RawManifest::new(sub.to_bytes()?, Some(&raw.media_type))?;
    debug!(
        "the index was rewritten to the {} chosen platforms: its digest changes from {} to {}",
        sub.manifests.len(),
        raw.digest,
        rewritten.digest
    );
    Ok(rewritten)
}

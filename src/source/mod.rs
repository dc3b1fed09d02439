//! Sources: things that resolve a reference to manifests, configs and a
//! verified stream per blob. One file per kind; [`open_source`] picks one from
//! a [`Reference`], and [`resolve`] turns a source into the platform images
//! wanted.

pub mod docker_daemon;
pub mod docker_save;
pub mod list;
pub mod oci_layout;
pub mod quay;
pub mod registry;
pub mod stream;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::image::config::MAX_CONFIG_SIZE;
use crate::image::{
    ConfigBlob, Descriptor, Digest, ImageData, ImageName, Manifest, Platform, RawManifest, ResolvedImage,
};
use crate::reference::Reference;
use crate::registry::RegistryOptions;

pub use crate::image::BlobReader;

/// Something that can resolve a reference to a manifest, a config and a
/// stream per blob.
#[async_trait]
pub trait Source: Send + Sync {
    /// A human-readable name for messages (`registry://host/repo:tag`).
    fn describe(&self) -> String;

    /// The manifest the reference names: an image manifest or an index.
    async fn root_manifest(&self) -> Result<RawManifest>;

    /// A child manifest of an index, by digest, verified.
    async fn manifest(&self, digest: &Digest) -> Result<RawManifest>;

    /// A stream of the blob `desc` names, verified against its digest and size
    /// while it streams.
    async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader>;

    /// The size of the blob `desc` names if the source holds it, None if not,
    /// without reading it (registries answer a HEAD). The default opens the
    /// blob and reads nothing.
    async fn blob_size(&self, desc: &Descriptor) -> Result<Option<u64>> {
        match self.open_blob(desc).await {
            Ok(_) => Ok(Some(desc.size)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The image's name and tag as the source records them (a docker-save
    /// archive's RepoTags), when the reference alone does not say.
    /// How many times a read that arrived corrupted is made again (the
    /// registry's `--retries`; 3 for local sources).
    fn retries(&self) -> u32 {
        3
    }

    fn recorded_name(&self) -> Option<ImageName> {
        None
    }

    /// Whether the manifest is made up by occy from something that has none
    /// (a docker-save archive's `manifest.json`, a daemon's export), so it
    /// has no upstream digest to keep and may take any media types.
    fn synthesises_manifests(&self) -> bool {
        false
    }
}

/// The name and tag to record at the destination: what the source's
/// reference says, else what the source records, else the path's last part.
pub fn image_name_for(reference: &Reference, source: &dyn Source) -> ImageName {
    match reference {
        Reference::Registry(r) => ImageName {
            repository: r.name(),
            tag: r.tag_or_latest().to_string(),
        },
        Reference::Docker { name, .. } => ImageName {
            repository: name.clone(),
            tag: reference.tag().unwrap_or("latest").to_string(),
        },
        other => source.recorded_name().unwrap_or_else(|| {
            let base = match other {
                Reference::Oci { path, .. }
                | Reference::Tar { path }
                | Reference::Dir { path, .. }
                | Reference::Bundle { path } => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "image".to_string()),
                _ => "image".to_string(),
            };
            ImageName {
                repository: base,
                tag: other.tag().unwrap_or("latest").to_string(),
            }
        }),
    }
}

pub use crate::image::PlatformSelection;

/// Settings every source may need.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    pub registry: RegistryOptions,
}

/// Opens the source a reference names.
pub async fn open_source(reference: &Reference, opts: &SourceOptions) -> Result<Box<dyn Source>> {
    match reference {
        Reference::Registry(r) => {
            if r.is_glob() {
                return Err(Error::usage(format!(
                    "{reference} has a glob in its repository or tag; single-image commands need one image (globs are expanded by `occy sync`)"
                )));
            }
            Ok(Box::new(registry::RegistrySource::new(r.clone(), &opts.registry)?))
        }
        Reference::Oci { oci_format: true, .. } => Err(Error::usage(format!(
            "{reference}: ?format=oci converts what occy writes into an OCI layout; it applies to a destination, not a source"
        ))),
        Reference::Oci { path, tag, .. } => Ok(Box::new(oci_layout::OciLayoutSource::open(path, tag.as_deref()).await?)),
        Reference::Tar { path } => Ok(Box::new(docker_save::DockerSaveSource::open_tar(path).await?)),
        Reference::Dir { path, image, .. } => Ok(Box::new(
            docker_save::DockerSaveSource::open_dir(path, image.as_deref().map(crate::reference::split_name_tag))
                .await?,
        )),
        Reference::Docker {
            name,
            tag,
            digest,
            socket,
        } => Ok(Box::new(
            docker_daemon::DockerDaemonSource::open(
                &crate::reference::docker_image(name, tag.as_deref(), digest.as_ref()),
                socket.as_deref(),
            )
            .await?,
        )),
        Reference::Archive { .. } => Err(Error::usage(format!(
            "{reference} holds many images: `occy sync` restores every image it records (from: {reference}); a one-image command can read its unpacked OCI layout (oci://DIR:NAME)"
        ))),
        other => Err(Error::usage(format!(
            "{other} cannot be read as a source: supported sources are {}",
            crate::reference::readable_schemes()
        ))),
    }
}

/// Reads a small blob (a config) fully into memory, verified. Bytes that
/// arrive corrupted are read again, at most [`Source::retries`] + 1 reads in
/// all; failed requests were already retried by the transport.
pub async fn read_small_blob(source: &dyn Source, desc: &Descriptor) -> Result<Bytes> {
    if desc.size > MAX_CONFIG_SIZE {
        return Err(Error::invalid(format!(
            "blob {} is {} bytes, over the {MAX_CONFIG_SIZE} byte limit for configs",
            desc.digest, desc.size
        )));
    }
    let mut attempt = 0;
    loop {
        match read_small_blob_once(source, desc).await {
            Err(e) if e.restarts_copy() && attempt < source.retries() => {
                attempt += 1;
                tracing::warn!(blob = %desc.digest, "read {attempt} failed, reading again: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(6))).await;
            }
            result => return result,
        }
    }
}

async fn read_small_blob_once(source: &dyn Source, desc: &Descriptor) -> Result<Bytes> {
    let mut r = source.open_blob(desc).await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| Error::stream(&format!("blob {}", desc.digest), e))?;
    Ok(Bytes::from(buf))
}

/// Reads the config of an image manifest and bundles both.
pub async fn load_image(source: &dyn Source, raw: RawManifest, platform: Option<Box<Platform>>) -> Result<ImageData> {
    let mut img = image_without_config(raw, platform)?;
    let bytes = read_small_blob(source, &img.manifest.config).await?;
    img.config = ConfigBlob::parse(bytes, &img.manifest.config.digest.to_string())?;
    Ok(img)
}

/// Resolves a source to the images wanted: follows an index to the chosen
/// platforms and loads each one's config.
pub async fn resolve(source: &dyn Source, selection: &PlatformSelection) -> Result<ResolvedImage> {
    resolve_with(source, None, selection, Configs::Load).await
}

/// Whether resolving reads each image's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Configs {
    Load,
    /// Only the manifests: each image's config is its descriptor, with an
    /// empty parsed config (for a planner that needs digests and sizes).
    Skip,
}

/// [`resolve`] starting from a root manifest already read (if any).
pub async fn resolve_with(
    source: &dyn Source,
    root: Option<RawManifest>,
    selection: &PlatformSelection,
    configs: Configs,
) -> Result<ResolvedImage> {
    let root = match root {
        Some(r) => r,
        None => source.root_manifest().await?,
    };
    let load = |raw: RawManifest, platform: Option<Box<Platform>>| async move {
        match configs {
            Configs::Load => load_image(source, raw, platform).await,
            Configs::Skip => image_without_config(raw, platform),
        }
    };
    match root.parse()? {
        Manifest::Image(_) => {
            let img = load(root, None).await?;
            Ok(ResolvedImage {
                index: None,
                images: vec![img],
                synthesised: source.synthesises_manifests(),
            })
        }
        Manifest::Index(index) => {
            let chosen = choose_platforms(&index.manifests, selection, &source.describe())?;
            let mut images = Vec::with_capacity(chosen.len());
            for desc in chosen {
                let raw = source.manifest(&desc.digest).await?;
                images.push(load(raw, desc.platform().cloned().map(Box::new)).await?);
            }
            Ok(ResolvedImage {
                index: Some(Box::new((root, index))),
                images,
                synthesised: source.synthesises_manifests(),
            })
        }
    }
}

/// An image known by its manifest alone (see [`Configs::Skip`]): its
/// config is the descriptor, with an empty parsed config.
fn image_without_config(raw: RawManifest, platform: Option<Box<Platform>>) -> Result<ImageData> {
    let manifest = match raw.parse()? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Err(Error::invalid(format!(
                "manifest {} is an index nested inside an index, which occy does not follow",
                raw.digest
            )))
        }
    };
    if manifest.schema_version != 2 {
        return Err(Error::invalid(format!(
            "manifest {} has schemaVersion {}, expected 2",
            raw.digest, manifest.schema_version
        )));
    }
    let config = ConfigBlob::unread(manifest.config.digest.clone());
    Ok(ImageData {
        raw_manifest: raw,
        manifest,
        config,
        platform,
    })
}

/// Picks the index entries a selection wants. Entries without a platform
/// (attestations, artifacts) are never chosen.
pub fn choose_platforms<'a>(
    entries: &'a [Descriptor],
    selection: &PlatformSelection,
    what: &str,
) -> Result<Vec<&'a Descriptor>> {
    let images: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| crate::image::media_type::is_image_manifest(&d.media_type) || d.media_type.is_empty())
        .filter(|d| {
            d.platform()
                .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
        })
        .collect();
    let available = || {
        images
            .iter()
            .filter_map(|d| d.platform().map(|p| p.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selection {
        PlatformSelection::All => {
            if images.is_empty() {
                return Err(Error::invalid(format!("index of {what} lists no platform images")));
            }
            Ok(images)
        }
        PlatformSelection::Default => {
            let host = Platform::host();
            if let Some(d) = images.iter().find(|d| d.platform().is_some_and(|p| host.matches(p))) {
                return Ok(vec![*d]);
            }
            if images.len() == 1 {
                return Ok(images);
            }
            Err(Error::NotFound(format!(
                "{what} has no image for this machine's platform {host}; available: {}; choose one with --platform or take all with --all-platforms",
                available()
            )))
        }
        PlatformSelection::List(wanted) => {
            let mut out = Vec::new();
            for w in wanted {
                match images.iter().find(|d| d.platform().is_some_and(|p| w.matches(p))) {
                    Some(d) => {
                        if !out.iter().any(|o: &&Descriptor| o.digest == d.digest) {
                            out.push(*d);
                        }
                    }
                    None => {
                        return Err(Error::NotFound(format!(
                            "{what} has no image for platform {w}; available: {}",
                            available()
                        )))
                    }
                }
            }
            // Keep the index's order, so a full list reproduces the index.
            out.sort_by_key(|d| images.iter().position(|i| i.digest == d.digest));
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::image::VerifyingReader;

    /// A source whose first `corrupt` reads of a blob come back with a byte flipped.
    struct Flaky {
        bytes: Vec<u8>,
        corrupt: usize,
        opened: AtomicUsize,
    }

    #[async_trait]
    impl Source for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn root_manifest(&self) -> Result<RawManifest> {
            Err(Error::invalid("unused"))
        }
        async fn manifest(&self, _: &Digest) -> Result<RawManifest> {
            Err(Error::invalid("unused"))
        }
        async fn open_blob(&self, desc: &Descriptor) -> Result<BlobReader> {
            let mut bytes = self.bytes.clone();
            if self.opened.fetch_add(1, Ordering::SeqCst) < self.corrupt {
                bytes[0] ^= 1;
            }
            let what = format!("blob {}", desc.digest);
            let reader = std::io::Cursor::new(bytes);
            Ok(Box::pin(VerifyingReader::new(
                reader,
                Some(desc.digest.clone()),
                Some(desc.size),
                what,
            )))
        }
    }

    #[tokio::test]
    async fn a_config_read_corrupted_on_the_way_is_read_again() {
        let bytes = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let desc = Descriptor::new("application/json", Digest::of(&bytes), bytes.len() as u64);
        let once = Flaky {
            bytes: bytes.clone(),
            corrupt: 1,
            opened: AtomicUsize::new(0),
        };
        assert_eq!(read_small_blob(&once, &desc).await.unwrap(), Bytes::from(bytes.clone()));
        assert_eq!(once.opened.load(Ordering::SeqCst), 2);

        let always = Flaky {
            bytes,
            corrupt: usize::MAX,
            opened: AtomicUsize::new(0),
        };
        let err = read_small_blob(&always, &desc).await.unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(always.opened.load(Ordering::SeqCst), always.retries() as usize + 1);
    }
}

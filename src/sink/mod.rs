//! Sinks: things that say which blobs they already hold, accept blobs, and
//! commit an image (config + manifest) or an index. One file per kind;
//! [`open_sink`] picks one from a [`Reference`].

pub mod archive;
pub mod atomic;
pub mod bundle;
pub mod docker_daemon;
pub mod docker_save;
pub mod extract;
pub mod kind;
pub mod oci_layout;
pub mod registry;
pub mod state;
pub mod store;
pub mod sweep;
pub mod tree;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, RawManifest};
use crate::reference::Reference;
use crate::source::BlobReader;

pub use crate::image::ImageName;

/// How a store came to have a blob without being sent it, or that it must
/// be sent ([`Sink::try_reuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The store holds it already.
    Present,
    /// The registry mounted it from another repository.
    Mounted,
    /// Send it.
    No,
}

/// Something that can say which blobs it already has, accept blobs, and
/// commit manifests.
#[async_trait]
pub trait Sink: Send + Sync {
    /// A human-readable name for messages.
    fn describe(&self) -> String;

    /// Whether the sink already holds the blob (keyed by digest for
    /// compressed stores, by diff_id for plain ones: see
    /// [`kind::StoredForm`]). A query: it takes no lock and reserves nothing.
    async fn has_blob(&self, digest: &Digest) -> Result<bool>;

    /// Whether the store can have the blob without being sent it: it holds
    /// it ([`Reuse::Present`]), or, given `mount_from`, a repository of the
    /// same registry, it mounted it from there ([`Reuse::Mounted`]).
    /// [`Reuse::No`] means send it. Only registries mount; other sinks
    /// answer from [`Sink::has_blob`].
    async fn try_reuse(&self, digest: &Digest, mount_from: Option<&str>) -> Result<Reuse> {
        let _ = mount_from;
        Ok(if self.has_blob(digest).await? {
            Reuse::Present
        } else {
            Reuse::No
        })
    }

    /// Stores a small blob held in memory (a config).
    async fn put_blob_bytes(&self, desc: &Descriptor, bytes: bytes::Bytes) -> Result<()> {
        let reader: BlobReader = Box::pin(std::io::Cursor::new(bytes));
        self.put_blob(desc, reader).await
    }

    /// Records that the store holds a blob (the plan saw it there), so a
    /// commit need not ask again.
    fn note_present(&self, _digest: &Digest) {}

    /// Stores a blob. `desc.size` may be 0 when unknown (an uncompressed layer
    /// whose length is learned while it streams). The reader is verified by
    /// its producer; a read error means the blob must not be kept.
    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()>;

    /// Stores an image's config ahead of its commit, while its layers are
    /// still moving, where that saves time (a registry: the config's round
    /// trips overlap the layers'). [`Sink::put_image`] stores it anyway.
    async fn put_config_early(&self, _image: &ImageData) -> Result<()> {
        Ok(())
    }

    /// Commits one platform image (its config, then its manifest) after all
    /// its layers were put. `tagged` says whether this image is what the
    /// destination's tag names (false for the members of an index).
    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()>;

    /// Commits an index after all its images; it gets the tag.
    async fn put_index(&self, index: &RawManifest, images: &[ImageData]) -> Result<()>;

    /// Puts a referrer manifest (a signature, an SBOM…) whose blobs are in
    /// place: under its cosign `tag`, else by digest. An OCI layout lists it
    /// in `index.json`. Only registries and OCI layouts hold referrers.
    async fn put_referrer(&self, manifest: &RawManifest, _desc: &Descriptor, _tag: Option<&str>) -> Result<()> {
        Err(Error::usage(format!(
            "{} cannot hold referrer {}: only registries and OCI layouts can",
            self.describe(),
            manifest.digest
        )))
    }

    /// Adds `entries` to the referrers tag (`sha256-<hex>`) of `subject`,
    /// keeping every entry already there (registries without the
    /// referrers API).
    async fn list_referrers(&self, subject: &Digest, _entries: &[Descriptor]) -> Result<()> {
        Err(Error::usage(format!(
            "{} keeps no referrers tag (for {subject})",
            self.describe()
        )))
    }

    /// Makes everything written visible (renames temp files into place).
    async fn finish(&self) -> Result<()>;

    /// Removes whatever a failed or interrupted write left behind.
    async fn abort(&self);
}

/// What opening a sink may need beyond its reference.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Registry access (credentials, TLS, retries, rate limit).
    pub registry: crate::registry::RegistryOptions,
}

/// The error for a reference that names a part only a source can have:
/// `docker://NAME@DIGEST` (a daemon loads an image under a tag and computes
/// its own digests) and `dir://…?image=` (which picks an image to read; a
/// destination records the source's name).
pub fn source_only_part(reference: &Reference) -> Option<Error> {
    match reference {
        Reference::Docker { digest: Some(d), .. } => Some(Error::usage(format!(
            "{reference} cannot be a destination: a daemon loads an image under a tag, not a digest ({d}); write docker://NAME:TAG"
        ))),
        Reference::Dir { image: Some(i), .. } => Some(Error::usage(format!(
            "{reference} cannot be a destination: ?image={i} picks an image to read; a directory records each image under the source's name"
        ))),
        _ => None,
    }
}

/// Opens the sink a reference names. `name` is the image's name and tag as
/// the source knows it, used where the destination does not give its own.
pub async fn open_sink(reference: &Reference, name: &ImageName, opts: &SinkOptions) -> Result<Box<dyn Sink>> {
    match reference {
        Reference::Registry(target) => {
            if target.is_glob() {
                return Err(Error::usage(format!(
                    "{reference} is a pattern; a destination must name one repository"
                )));
            }
            Ok(Box::new(registry::RegistrySink::new(
                target,
                &name.tag,
                &opts.registry,
            )?))
        }
        Reference::Oci { path, tag, .. } => {
            let tag = tag.clone().unwrap_or_else(|| name.tag.clone());
            Ok(Box::new(oci_layout::OciLayoutSink::create(path, &tag).await?))
        }
        Reference::Tar { path } => Ok(Box::new(
            docker_save::DockerSaveSink::create_tar(path, name.clone()).await?,
        )),
        Reference::Dir { image: Some(_), .. } => {
            Err(source_only_part(reference).unwrap_or_else(|| Error::usage(reference.to_string())))
        }
        Reference::Dir {
            path,
            unique_names,
            expand,
            ..
        } => Ok(Box::new(
            docker_save::DockerSaveSink::create_dir(path, name.clone(), *unique_names, *expand).await?,
        )),
        Reference::Bundle { path } => Ok(Box::new(bundle::BundleSink::create(path).await?)),
        Reference::Archive { path, full, .. } => Ok(Box::new(archive::ArchiveSink::create(path, name, *full).await?)),
        Reference::Docker {
            name,
            tag,
            digest,
            socket,
        } => {
            if digest.is_some() {
                return Err(source_only_part(reference).unwrap_or_else(|| Error::usage(reference.to_string())));
            }
            Ok(Box::new(
                docker_daemon::DockerDaemonSink::create(name, tag.as_deref().unwrap_or("latest"), socket.as_deref())
                    .await?,
            ))
        }
        other => Err(Error::usage(format!(
            "{other} cannot be written as a destination: supported destinations are {}",
            crate::reference::destination_schemes()
        ))),
    }
}

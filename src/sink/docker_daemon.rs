//! Sink: a Docker Engine (or podman) daemon, `docker://name[:tag]`, through
//! `POST /images/load` over the Engine API's unix socket.
//!
//! A docker-save archive needs each layer's length before its bytes, and
//! layers arrive decompressed with lengths learned only at their end, so the
//! archive is first written to a private temporary file (the same writer as
//! `tar://`, memory bounded) and then streamed to the daemon. The load is
//! checked: the daemon must report success and then hold `name:tag` with the
//! image ID (config digest) that was sent. A failure leaves no tag behind,
//! because the daemon tags only after it has loaded everything.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::docker_save::DockerSaveSink;
use super::kind::{BlobLookup, CurrentDigest, DestinationKind, ReadBack, StoredForm};
use super::store::{Capabilities, Current, Store, StoreId, StoreOptions};
use super::Sink;
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, ImageName, RawManifest};
use crate::reference::Reference;
use crate::source::docker_daemon::{describe_error, DaemonConnection};
use crate::source::BlobReader;

/// A Docker Engine (or podman): loaded as a docker-save stream of plain
/// layers, one platform, known by its image ID.
pub const KIND: DestinationKind = DestinationKind {
    scheme: "docker",
    keeps_index: false,
    stored_form: StoredForm::PlainTar,
    current: CurrentDigest::DaemonImageId,
    blob_lookup: BlobLookup::None,
    record: None,
    output: None,
    read_back: ReadBack::Daemon,
    holds_referrers: false,
    one_image: None,
    open_store,
};

pub struct DockerDaemonSink {
    conn: DaemonConnection,
    /// `name:tag` as the daemon will know it.
    image: String,
    describe: String,
    archive: PathBuf,
    inner: DockerSaveSink,
    /// The config digest of the image sent, checked after the load.
    sent_config: Mutex<Option<Digest>>,
    /// Holds the temporary archive; removed on drop.
    _spool: tempfile::TempDir,
}

impl DockerDaemonSink {
    pub async fn create(name: &str, tag: &str, socket: Option<&Path>) -> Result<Self> {
        let conn = DaemonConnection::open(socket).await?;
        let spool = tempfile::Builder::new()
            .prefix("occy-docker-load-")
            .tempdir()
            .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
        let archive = spool.path().join("image.tar");
        let image_name = ImageName {
            repository: name.to_string(),
            tag: tag.to_string(),
        };
        let inner = DockerSaveSink::create_tar(&archive, image_name).await?;
        let image = format!("{name}:{tag}");
        let describe = match socket {
            Some(s) => format!("docker://{image}?socket={}", s.display()),
            None => format!("docker://{image}"),
        };
        Ok(DockerDaemonSink {
            conn,
            image,
            describe,
            archive,
            inner,
            sent_config: Mutex::new(None),
            _spool: spool,
        })
    }

    /// Streams the finished archive to `POST /images/load` and reads the
    /// daemon's messages; any error message fails the load.
    async fn load(&self) -> Result<()> {
        let file = tokio::fs::File::open(&self.archive)
            .await
            .map_err(|e| Error::io("open", &self.archive, e))?;
        let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let options = bollard::query_parameters::ImportImageOptions {
            quiet: true,
            platform: None,
        };
        let mut replies = self.conn.docker.import_image_stream(options, body, None);
        let mut said = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply {
                Ok(info) => {
                    if let Some(text) = info.stream.or(info.status) {
                        let text = text.trim().to_string();
                        if !text.is_empty() {
                            tracing::debug!("{}: {text}", self.describe);
                            said.push(text);
                        }
                    }
                }
                Err(e) => {
                    return Err(Error::Network(format!(
                        "the daemon at {} refused to load {}: {}",
                        self.conn.socket.display(),
                        self.image,
                        describe_error(&e)
                    )))
                }
            }
        }
        tracing::info!("{}: {}", self.describe, said.join("; "));
        Ok(())
    }

    /// Checks that the daemon now holds `name:tag` with the config sent.
    async fn verify(&self) -> Result<()> {
        let inspect = self
            .conn
            .docker
            .inspect_image(&self.image)
            .await
            .map_err(|e| self.conn.error(&format!("image {} after loading it", self.image), e))?;
        let sent = self.sent_config.lock().ok().and_then(|g| g.clone());
        if let (Some(sent), Some(id)) = (sent, inspect.id) {
            if id != sent.to_string() {
                return Err(Error::invalid(format!(
                    "the daemon at {} holds {} as {id}, not the image sent ({sent})",
                    self.conn.socket.display(),
                    self.image
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for DockerDaemonSink {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        self.inner.has_blob(digest).await
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        self.inner.put_blob(desc, reader).await
    }

    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()> {
        if tagged {
            if let Ok(mut sent) = self.sent_config.lock() {
                *sent = Some(image.config.digest.clone());
            }
        }
        self.inner.put_image(image, tagged).await
    }

    async fn put_index(&self, index: &RawManifest, images: &[ImageData]) -> Result<()> {
        self.inner.put_index(index, images).await
    }

    async fn finish(&self) -> Result<()> {
        self.inner.finish().await?;
        self.load().await?;
        self.verify().await
    }

    async fn abort(&self) {
        self.inner.abort().await;
    }
}

/// A daemon as the planner asks it: it knows an image by its ID (the config
/// digest), and no blob can be asked for before a load.
pub struct DaemonStore {
    id: StoreId,
    name: String,
    tag: Option<String>,
    socket: Option<PathBuf>,
}

fn open_store(dest: &Reference, _: &StoreOptions) -> Result<Box<dyn Store>> {
    let Reference::Docker { name, tag, socket, .. } = dest else {
        return Err(super::store::not_a_store(dest));
    };
    Ok(Box::new(DaemonStore {
        id: StoreId::of(dest),
        name: name.clone(),
        tag: tag.clone(),
        socket: socket.clone(),
    }))
}

#[async_trait]
impl Store for DaemonStore {
    fn id(&self) -> &StoreId {
        &self.id
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::of_kind(&KIND)
    }

    fn reference_for(&self, _name: &ImageName) -> String {
        self.tag.clone().unwrap_or_else(|| "latest".to_string())
    }

    async fn current(&self, name: &ImageName) -> Result<Current> {
        let conn = DaemonConnection::open(self.socket.as_deref()).await?;
        Ok(Current::ImageId(
            conn.image_id(&self.name, &self.reference_for(name)).await?,
        ))
    }

    async fn present(&self, blobs: &[Digest]) -> Result<Vec<bool>> {
        Ok(vec![false; blobs.len()])
    }

    async fn manifest(&self, _reference: &str) -> Result<Option<RawManifest>> {
        Ok(None)
    }
}

//! Sink: docker-save archives (`tar://`, loadable by `docker load` and
//! `podman load`) and occystrap's directory format (`dir://`). Both store
//! uncompressed layers as `<diffid-hex>/layer.tar`, the config as
//! `<config-hex>.json` with its exact bytes, and a `manifest.json` whose
//! `RepoTags` keep the full repository name. A tar is written under a temp
//! name and renamed when complete; a directory gets each file atomically and a
//! `catalog.json` updated under a cross-process lock.

use std::collections::{BTreeMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;
use tempfile::NamedTempFile;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::atomic::{
    copy_into, locked_update, make_parent_dirs, persist, stream_file_atomic, temp_beside, write_file_atomic, DestDir,
    MadeDirs,
};
use super::kind::{BlobLookup, CurrentDigest, DestinationKind, OutputMarker, ReadBack, RecordPlace, StoredForm};
use super::{ImageName, Sink};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, RawManifest};
use crate::source::BlobReader;

/// A docker-save tarball: plain layers, one platform, one image per file,
/// known by the record beside it.
pub const TAR_KIND: DestinationKind = DestinationKind {
    scheme: "tar",
    keeps_index: false,
    stored_form: StoredForm::PlainTar,
    current: CurrentDigest::Record,
    blob_lookup: BlobLookup::None,
    record: Some(RecordPlace::Beside),
    output: Some(OutputMarker::File),
    read_back: ReadBack::AsImage,
    holds_referrers: false,
    one_image: Some("one tarball"),
    open_store: |dest, _| super::store::RecordStore::open(dest, &TAR_KIND),
};

/// occystrap's directory: plain layers shared by the images in it, one
/// platform each, a record per image inside it.
pub const DIR_KIND: DestinationKind = DestinationKind {
    scheme: "dir",
    keeps_index: false,
    stored_form: StoredForm::PlainTar,
    current: CurrentDigest::Record,
    blob_lookup: BlobLookup::None,
    record: Some(RecordPlace::PerImageInside),
    output: Some(OutputMarker::Dir),
    read_back: ReadBack::AsImage,
    holds_referrers: false,
    one_image: None,
    open_store: |dest, _| super::store::RecordStore::open(dest, &DIR_KIND),
};

/// One entry of `manifest.json`.
#[derive(Debug, Clone, Serialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn layer_name(diff_id: &Digest) -> String {
    format!("{}/layer.tar", diff_id.hex())
}

fn config_name(digest: &Digest) -> String {
    format!("{}.json", digest.hex())
}

/// The tar archive being written.
struct TarState {
    tmp: Option<NamedTempFile>,
    file: tokio::fs::File,
    written: HashSet<String>,
}

#[allow(clippy::large_enum_variant)] // one per sink, never in collections
enum Target {
    Tar {
        path: PathBuf,
        state: Mutex<TarState>,
        /// Directories above `path` this sink created (after `state`: the
        /// temporary archive goes first when the sink is dropped).
        made_dirs: MadeDirs,
    },
    Dir {
        root: PathBuf,
        unique_names: bool,
        expand: bool,
        /// The directory, created with the first file put in it and removed
        /// again by a failed first write.
        dest: DestDir,
    },
}

/// Writes images as docker-save archives or occystrap directories.
pub struct DockerSaveSink {
    target: Target,
    name: ImageName,
    entries: std::sync::Mutex<Vec<ManifestEntry>>,
}

fn tar_header(name: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name)
        .map_err(|e| Error::invalid(format!("tar entry name {name:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

fn padding(size: u64) -> usize {
    ((512 - (size % 512)) % 512) as usize
}

impl TarState {
    async fn append_bytes(&mut self, name: &str, bytes: &[u8], path: &Path) -> Result<()> {
        let io = |e| Error::io("write", path, e);
        self.file
            .write_all(&tar_header(name, bytes.len() as u64)?)
            .await
            .map_err(io)?;
        self.file.write_all(bytes).await.map_err(io)?;
        self.file
            .write_all(&vec![0u8; padding(bytes.len() as u64)])
            .await
            .map_err(io)?;
        self.written.insert(name.to_string());
        Ok(())
    }

    /// Streams an entry of unknown length: a placeholder header, the data,
    /// then the real header written over the placeholder. On a read error
    /// the archive is cut back to where the entry started.
    async fn append_stream(&mut self, name: &str, mut reader: BlobReader, path: &Path) -> Result<u64> {
        let io = |e| Error::io("write", path, e);
        let start = self.file.stream_position().await.map_err(io)?;
        self.file.write_all(&[0u8; 512]).await.map_err(io)?;
        let copied = {
            let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, &mut self.file);
            match copy_into(&mut reader, &mut w, name, path).await {
                Ok(n) => w.flush().await.map(|()| n).map_err(io),
                Err(e) => Err(e),
            }
        };
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                // Cut back; on a full disk this may fail too, and the
                // archive's temporary file is removed by the abort anyway.
                if self.file.set_len(start).await.is_ok() {
                    self.file.seek(SeekFrom::Start(start)).await.map_err(io)?;
                }
                return Err(e);
            }
        };
        self.file.write_all(&vec![0u8; padding(size)]).await.map_err(io)?;
        let end = self.file.stream_position().await.map_err(io)?;
        self.file.seek(SeekFrom::Start(start)).await.map_err(io)?;
        self.file.write_all(&tar_header(name, size)?).await.map_err(io)?;
        self.file.seek(SeekFrom::Start(end)).await.map_err(io)?;
        self.written.insert(name.to_string());
        Ok(size)
    }

    /// Appends a finished spool file as an entry.
    async fn append_file(&mut self, name: &str, spool: &Path, path: &Path) -> Result<()> {
        let size = tokio::fs::metadata(spool)
            .await
            .map_err(|e| Error::io("stat", spool, e))?
            .len();
        let io = |e| Error::io("write", path, e);
        self.file.write_all(&tar_header(name, size)?).await.map_err(io)?;
        let mut src = tokio::fs::File::open(spool)
            .await
            .map_err(|e| Error::io("open", spool, e))?;
        tokio::io::copy(&mut src, &mut self.file).await.map_err(io)?;
        self.file.write_all(&vec![0u8; padding(size)]).await.map_err(io)?;
        self.written.insert(name.to_string());
        Ok(())
    }
}

impl DockerSaveSink {
    /// A docker-save archive at `path`, written under a temp name until finished.
    /// Missing directories above it are created (and removed again by a
    /// failed first write).
    pub async fn create_tar(path: &Path, name: ImageName) -> Result<Self> {
        if tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()) {
            return Err(Error::usage(format!(
                "{} is a directory; tar:// needs a file path",
                path.display()
            )));
        }
        let made_dirs = make_parent_dirs(path)?;
        let tmp = temp_beside(path)?;
        let file = tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?);
        Ok(DockerSaveSink {
            target: Target::Tar {
                path: path.to_path_buf(),
                state: Mutex::new(TarState {
                    tmp: Some(tmp),
                    file,
                    written: HashSet::new(),
                }),
                made_dirs,
            },
            name,
            entries: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// An occystrap-format directory at `root`.
    /// With `expand`, the merged filesystem is also extracted into a
    /// directory named like the manifest file (without `.json`).
    pub async fn create_dir(root: &Path, name: ImageName, unique_names: bool, expand: bool) -> Result<Self> {
        if tokio::fs::metadata(root).await.is_ok_and(|m| !m.is_dir()) {
            return Err(Error::usage(format!(
                "{} exists and is not a directory",
                root.display()
            )));
        }
        Ok(DockerSaveSink {
            target: Target::Dir {
                root: root.to_path_buf(),
                unique_names,
                expand,
                dest: DestDir::new(root, "catalog.json")?,
            },
            name,
            entries: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn manifest_file_name(&self, unique_names: bool) -> String {
        if unique_names {
            format!(
                "manifest-{}-{}.json",
                self.name.repository.replace(['/', ':'], "_"),
                self.name.tag.replace('/', "_")
            )
        } else {
            "manifest.json".to_string()
        }
    }

    /// Extracts the image's layers, in order, into `root/name` (built under a
    /// temp name, then renamed into place).
    async fn expand_into(&self, root: &Path, name: &str) -> Result<()> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| Error::invalid("manifest list lock poisoned"))?
            .clone();
        let Some(entry) = entries.into_iter().next() else {
            return Ok(());
        };
        let layers: Vec<(String, PathBuf)> = entry.layers.iter().map(|l| (l.clone(), root.join(l))).collect();
        let target = root.join(name);
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let (work, lock) = super::atomic::HeldTempDir::create(&root, "expand")?.keep();
            let r =
                super::bundle::extract_layers(&work, &layers).and_then(|()| super::bundle::replace_dir(&work, &target));
            drop(lock);
            if r.is_err() {
                let _ = super::bundle::make_writable_and_remove(&work);
            }
            r
        })
        .await
        .map_err(|e| Error::invalid(format!("extraction task failed: {e}")))?
    }

    fn manifest_json(&self) -> Result<Vec<u8>> {
        let entries = self
            .entries
            .lock()
            .map_err(|_| Error::invalid("manifest list lock poisoned"))?
            .clone();
        Ok(serde_json::to_vec(&entries)?)
    }
}

#[async_trait]
impl Sink for DockerSaveSink {
    fn describe(&self) -> String {
        match &self.target {
            Target::Tar { path, .. } => format!("tar://{}", path.display()),
            Target::Dir { root, .. } => format!("dir://{}", root.display()),
        }
    }

    async fn has_blob(&self, diff_id: &Digest) -> Result<bool> {
        match &self.target {
            Target::Tar { state, .. } => Ok(state.lock().await.written.contains(&layer_name(diff_id))),
            Target::Dir { root, dest, .. } => {
                dest.claim_if_present()?;
                Ok(tokio::fs::metadata(root.join(layer_name(diff_id))).await.is_ok())
            }
        }
    }

    async fn put_blob(&self, desc: &Descriptor, reader: BlobReader) -> Result<()> {
        let name = layer_name(&desc.digest);
        match &self.target {
            Target::Dir { root, dest, .. } => {
                dest.ensure(&[])?;
                let path = root.join(&name);
                if let Some(dir) = path.parent() {
                    dest.ensure_subdir(dir)?;
                }
                let new = DestDir::is_new(&path);
                stream_file_atomic(&path, reader).await?;
                if new {
                    dest.made_file(path);
                }
                Ok(())
            }
            Target::Tar { path, state, .. } => {
                // Stream straight into the archive when it is free; otherwise
                // spool beside it so concurrent layers keep downloading.
                if let Ok(mut st) = state.try_lock() {
                    if st.written.contains(&name) {
                        return Ok(());
                    }
                    st.append_stream(&name, reader, path).await?;
                    return Ok(());
                }
                let spool = temp_beside(path)?;
                let spool_path = spool.path().to_path_buf();
                stream_file_atomic_into(&spool, reader).await?;
                let mut st = state.lock().await;
                if st.written.contains(&name) {
                    return Ok(());
                }
                st.append_file(&name, &spool_path, path).await
            }
        }
    }

    async fn put_image(&self, image: &ImageData, tagged: bool) -> Result<()> {
        let config = config_name(&image.config.digest);
        match &self.target {
            Target::Tar { path, state, .. } => {
                let mut st = state.lock().await;
                if !st.written.contains(&config) {
                    st.append_bytes(&config, &image.config.bytes, path).await?;
                }
            }
            Target::Dir { root, dest, .. } => {
                dest.ensure(&[])?;
                let path = root.join(&config);
                let new = DestDir::is_new(&path);
                write_file_atomic(&path, &image.config.bytes).await?;
                if new {
                    dest.made_file(path);
                }
            }
        }
        let layers = image.config.parsed.rootfs.diff_ids.iter().map(layer_name).collect();
        let repo_tags = if tagged {
            vec![format!("{}:{}", self.name.repository, self.name.tag)]
        } else {
            Vec::new()
        };
        self.entries
            .lock()
            .map_err(|_| Error::invalid("manifest list lock poisoned"))?
            .push(ManifestEntry {
                config,
                repo_tags,
                layers,
            });
        Ok(())
    }

    async fn put_index(&self, index: &RawManifest, _images: &[ImageData]) -> Result<()> {
        Err(Error::usage(format!(
            "{} holds one platform per image; index {} cannot be stored there: choose one platform with --platform",
            self.describe(),
            index.digest
        )))
    }

    async fn finish(&self) -> Result<()> {
        let manifest = self.manifest_json()?;
        match &self.target {
            Target::Tar { path, state, .. } => {
                let mut st = state.lock().await;
                st.append_bytes("manifest.json", &manifest, path).await?;
                let io = |e| Error::io("write", path, e);
                st.file.write_all(&[0u8; 1024]).await.map_err(io)?;
                st.file.flush().await.map_err(io)?;
                st.file.sync_all().await.map_err(io)?;
                if let Some(tmp) = st.tmp.take() {
                    persist(tmp, path)?;
                }
                Ok(())
            }
            Target::Dir {
                root,
                unique_names,
                expand,
                dest,
            } => {
                dest.ensure(&[])?;
                let file_name = self.manifest_file_name(*unique_names);
                if *expand {
                    self.expand_into(root, file_name.trim_end_matches(".json")).await?;
                }
                let manifest_path = root.join(&file_name);
                let new = DestDir::is_new(&manifest_path);
                write_file_atomic(&manifest_path, &manifest).await?;
                if new {
                    dest.made_file(manifest_path);
                }
                let repo = self.name.repository.clone();
                let tag = self.name.tag.clone();
                let catalog_path = root.join("catalog.json");
                let shown = catalog_path.clone();
                locked_update(&catalog_path, move |current| {
                    let mut catalog: BTreeMap<String, BTreeMap<String, String>> = match current {
                        Some(b) if !b.is_empty() => serde_json::from_slice(&b)
                            .map_err(|e| Error::invalid(format!("malformed {}: {e}", shown.display())))?,
                        _ => BTreeMap::new(),
                    };
                    catalog.entry(repo).or_default().insert(tag, file_name);
                    Ok(serde_json::to_vec_pretty(&catalog)?)
                })
                .await?;
                dest.committed();
                Ok(())
            }
        }
    }

    async fn abort(&self) {
        match &self.target {
            Target::Tar { state, made_dirs, .. } => {
                // Dropping the temp file removes it; then the directories made for it.
                state.lock().await.tmp.take();
                made_dirs.remove_empty();
            }
            Target::Dir { dest, .. } => dest.undo(),
        }
    }
}

/// Streams a reader into an already created temp file.
async fn stream_file_atomic_into(tmp: &NamedTempFile, mut reader: BlobReader) -> Result<u64> {
    let mut f = tokio::io::BufWriter::with_capacity(
        256 * 1024,
        tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?),
    );
    let n = copy_into(&mut reader, &mut f, &tmp.path().display().to_string(), tmp.path()).await?;
    f.flush().await.map_err(|e| Error::io("write", tmp.path(), e))?;
    Ok(n)
}

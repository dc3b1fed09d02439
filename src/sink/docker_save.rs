//! Sink: docker-save archives (`tar://`, loadable by `docker load` and
//! `podman load`) and occystrap's directory format (`dir://`). Both store
//! uncompressed layers as `<diffid-hex>/layer.tar`, the config as
//! `<config-hex>.json` with its exact bytes, and a `manifest.json` whose
//! `RepoTags` keep the full repository name. A tar is written under a temp
//! name and renamed when complete; a directory gets each file atomically and a
//! `catalog.json` updated under a cross-process lock.

use std::collections::{BTreeMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;
use tempfile::NamedTempFile;
use tokio::sync::Mutex;
use tracing::debug;

use super::atomic::{
    locked_update, make_parent_dirs, on_blocking_thread, persist, stream_chunks_atomic, temp_beside, write_chunks,
    write_file_atomic, DestDir, MadeDirs,
};
use super::kind::{BlobLookup, CurrentDigest, DestinationKind, OutputMarker, ReadBack, RecordPlace, StoredForm};
use super::{ImageName, Sink};
use crate::error::{Error, Result};
use crate::image::{Descriptor, Digest, ImageData, RawManifest};
use crate::source::stream::{read_chunks, Chunks, CHUNK};
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
    /// Its temp file: written on blocking threads (see `append_*`).
    file: std::fs::File,
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

/// An entry of `bytes` in memory: header, data and padding in one write.
fn entry_bytes(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut entry = Vec::with_capacity(512 + bytes.len() + 512);
    entry.extend_from_slice(&tar_header(name, bytes.len() as u64)?);
    entry.extend_from_slice(bytes);
    entry.resize(entry.len() + padding(bytes.len() as u64), 0);
    Ok(entry)
}

impl TarState {
    async fn append_bytes(&mut self, name: &str, bytes: &[u8], path: &Path) -> Result<()> {
        let entry = entry_bytes(name, bytes)?;
        on_blocking_thread(&self.file, "write", path, move |f| f.write_all(&entry)).await?;
        self.written.insert(name.to_string());
        Ok(())
    }

    /// Streams an entry of unknown length: a placeholder header, the data
    /// (each chunk written from the buffer it came in), then the real
    /// header written over the placeholder. On a read error the archive is
    /// cut back to where the entry started.
    async fn append_stream(&mut self, name: &str, chunks: Chunks, path: &Path) -> Result<u64> {
        let start = on_blocking_thread(&self.file, "write", path, |f| {
            let start = f.stream_position()?;
            f.write_all(&[0u8; 512])?;
            Ok(start)
        })
        .await?;
        let size = match write_chunks(&self.file, chunks, name, path).await {
            Ok(n) => n,
            Err(e) => {
                // Cut back; on a full disk this may fail too, and the
                // archive's temporary file is removed by the abort anyway.
                let _ = on_blocking_thread(&self.file, "write", path, move |f| {
                    f.set_len(start)?;
                    f.seek(SeekFrom::Start(start)).map(drop)
                })
                .await;
                return Err(e);
            }
        };
        let header = tar_header(name, size)?;
        on_blocking_thread(&self.file, "write", path, move |f| {
            f.write_all(&vec![0u8; padding(size)])?;
            f.write_all_at(&header, start)
        })
        .await?;
        self.written.insert(name.to_string());
        Ok(size)
    }

    /// Appends a finished spool file as an entry (copied by the kernel).
    async fn append_file(&mut self, name: &str, spool: &Path, path: &Path) -> Result<()> {
        let size = tokio::fs::metadata(spool)
            .await
            .map_err(|e| Error::io("stat", spool, e))?
            .len();
        let header = tar_header(name, size)?;
        let mut src = std::fs::File::open(spool).map_err(|e| Error::io("open", spool, e))?;
        on_blocking_thread(&self.file, "write", path, move |f| {
            f.write_all(&header)?;
            let copied = std::io::copy(&mut src, f)?;
            if copied != size {
                return Err(std::io::Error::other(format!(
                    "the spooled layer changed size while it was copied ({size} bytes, then {copied})"
                )));
            }
            f.write_all(&vec![0u8; padding(size)])
        })
        .await?;
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
        let file = tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?;
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
        self.put_blob_chunks(desc, read_chunks(reader, CHUNK)).await
    }

    async fn put_blob_chunks(&self, desc: &Descriptor, chunks: Chunks) -> Result<()> {
        let name = layer_name(&desc.digest);
        match &self.target {
            Target::Dir { root, dest, .. } => {
                dest.ensure(&[])?;
                let path = root.join(&name);
                if let Some(dir) = path.parent() {
                    dest.ensure_subdir(dir)?;
                }
                let new = DestDir::is_new(&path);
                stream_chunks_atomic(&path, chunks).await?;
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
                    st.append_stream(&name, chunks, path).await?;
                    return Ok(());
                }
                let spool = temp_beside(path)?;
                debug!(layer = %desc.digest, archive = %path.display(), "archive busy: spooling the layer beside it");
                write_chunks(spool.as_file(), chunks, &name, spool.path()).await?;
                let mut st = state.lock().await;
                if st.written.contains(&name) {
                    return Ok(());
                }
                st.append_file(&name, spool.path(), path).await
            }
        }
    }

    fn stream_would_wait(&self) -> bool {
        match &self.target {
            Target::Tar { state, .. } => state.try_lock().is_err(),
            Target::Dir { .. } => false,
        }
    }

    async fn put_blob_file(&self, desc: &Descriptor, file: &Path) -> Result<()> {
        match &self.target {
            Target::Tar { path, state, .. } => {
                let name = layer_name(&desc.digest);
                let mut st = state.lock().await;
                if st.written.contains(&name) {
                    return Ok(());
                }
                st.append_file(&name, file, path).await
            }
            Target::Dir { .. } => {
                let f = tokio::fs::File::open(file)
                    .await
                    .map_err(|e| Error::io("open", file, e))?;
                self.put_blob(desc, Box::pin(f)).await
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
                let mut end = entry_bytes("manifest.json", &manifest)?;
                end.extend_from_slice(&[0u8; 1024]);
                on_blocking_thread(&st.file, "write", path, move |f| {
                    f.write_all(&end)?;
                    f.sync_all()
                })
                .await?;
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

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::image::media_type;

    fn layer(data: &[u8]) -> Descriptor {
        Descriptor::new(media_type::DOCKER_LAYER_TAR, Digest::of(data), 0)
    }

    /// The archive's entries, in order: (name, content).
    fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                (name, v)
            })
            .collect()
    }

    fn sink_at(dir: &Path) -> (PathBuf, impl std::future::Future<Output = Result<DockerSaveSink>>) {
        let path = dir.join("out.tar");
        let name = ImageName {
            repository: "example/app".into(),
            tag: "1".into(),
        };
        let p = path.clone();
        (path, async move { DockerSaveSink::create_tar(&p, name).await })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_archive_takes_a_layer_from_a_finished_file_after_the_entry_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sink) = sink_at(dir.path());
        let sink = sink.await.unwrap();
        let a: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = vec![9u8; 1_234_567];
        let spool = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(spool.path(), &b).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
        let stream: Chunks = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (x, rx))
        }));
        let (s, a_ref, b_ref, spooled) = (&sink, &a, &b, spool.path());
        assert!(!sink.stream_would_wait());
        let feed = async move {
            tx.send(Ok(Bytes::copy_from_slice(&a_ref[..1 << 20]))).await.unwrap();
            for _ in 0..200 {
                if s.stream_would_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(s.stream_would_wait(), "the stream holds the archive");
            let desc_b = layer(b_ref);
            let put_b = s.put_blob_file(&desc_b, spooled);
            tokio::pin!(put_b);
            assert!(
                tokio::time::timeout(Duration::from_millis(200), &mut put_b)
                    .await
                    .is_err(),
                "the file waits for the entry being written"
            );
            tx.send(Ok(Bytes::copy_from_slice(&a_ref[1 << 20..]))).await.unwrap();
            drop(tx);
            put_b.await
        };
        let desc_a = layer(&a);
        let (ra, rb) = tokio::join!(sink.put_blob_chunks(&desc_a, stream), feed);
        ra.unwrap();
        rb.unwrap();
        assert!(!sink.stream_would_wait());
        sink.finish().await.unwrap();
        let got = entries(&path);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                layer_name(&Digest::of(&a)).as_str(),
                layer_name(&Digest::of(&b)).as_str(),
                "manifest.json"
            ]
        );
        assert!(got[0].1 == a && got[1].1 == b, "entries hold the layers' bytes");
    }

    #[tokio::test]
    async fn a_stream_that_fails_midway_leaves_no_entry_and_the_archive_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sink) = sink_at(dir.path());
        let sink = sink.await.unwrap();
        let bad: Chunks = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 700_000])),
            Err(Error::Network("connection reset".into()).into_io()),
        ]));
        let e = sink.put_blob_chunks(&layer(b"never"), bad).await.unwrap_err();
        assert!(matches!(e, Error::Network(_)), "a read error stays the source's: {e:?}");
        let good = vec![5u8; 2_500_000];
        let chunks: Chunks = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::copy_from_slice(&good[..1 << 20])),
            Ok(Bytes::copy_from_slice(&good[1 << 20..])),
        ]));
        sink.put_blob_chunks(&layer(&good), chunks).await.unwrap();
        sink.finish().await.unwrap();
        let got = entries(&path);
        assert_eq!(got.len(), 2, "{:?}", got.iter().map(|(n, _)| n).collect::<Vec<_>>());
        assert_eq!(got[0].0, layer_name(&Digest::of(&good)));
        assert!(got[0].1 == good);
    }
}

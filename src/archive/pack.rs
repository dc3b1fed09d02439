//! Sealing: the staging layout of a directory of archives becomes its next
//! archive, `DIR/NNNN`: the layout packed as one tar stream cut into
//! volumes of at most `volume_size` bytes (`NNNN-001.tar`, `NNNN-002.tar`…;
//! concatenated, they are the tar), every blob verified against its digest
//! on the way, the record of what it holds, and `SHA256SUMS`. It is built
//! in a temporary directory and renamed into place, so `DIR/NNNN` is whole
//! or absent.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::record::{hex, render_sums, RecordBlob, RecordFile, RecordImage, RecordReferrer, RECORD_VERSION};
use super::{archive_name, split_registry, staged_images, staging_dir, staging_layout, History, Record, RECORD, SUMS};
use crate::error::{Error, Result};
use crate::image::Digest;

/// What sealing wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sealed {
    /// The archive's directory (`DIR/0002`).
    pub path: PathBuf,
    pub archive: String,
    pub images: usize,
    pub referrers: usize,
    pub blobs: usize,
    /// Bytes of all its volumes.
    pub bytes: u64,
    pub volumes: usize,
    pub depends_on: Vec<String>,
}

/// One entry of a layout's `index.json`.
struct IndexEntry {
    digest: Digest,
    name: Option<String>,
}

fn read_index(layout: &Path) -> Result<Vec<IndexEntry>> {
    let path = layout.join("index.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let index: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("malformed {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for m in index.get("manifests").and_then(Value::as_array).into_iter().flatten() {
        let Some(d) = m.get("digest").and_then(Value::as_str) else {
            continue;
        };
        out.push(IndexEntry {
            digest: Digest::parse(d)?,
            name: m
                .pointer(&format!("/annotations/{}", super::REF_NAME.replace('/', "~1")))
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    Ok(out)
}

/// The blobs of the layout: digest → size (temporaries left out).
fn layout_blobs(layout: &Path) -> Result<HashMap<Digest, u64>> {
    let dir = layout.join("blobs").join("sha256");
    let mut out = HashMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
            continue;
        };
        let size = entry.metadata().map_err(|e| Error::io("stat", entry.path(), e))?.len();
        out.insert(digest, size);
    }
    Ok(out)
}

/// The manifest `digest` of the layout, parsed, if the layout holds it.
fn manifest_json(layout: &Path, digest: &Digest) -> Option<Value> {
    let bytes = std::fs::read(layout.join("blobs").join("sha256").join(digest.hex())).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The digests a manifest's JSON points at: an index's manifests, an
/// image's config and layers.
fn children(m: &Value) -> (Vec<Digest>, Vec<Digest>) {
    let digests = |key: &str| -> Vec<Digest> {
        m.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("digest").and_then(Value::as_str))
            .filter_map(|d| Digest::parse(d).ok())
            .collect()
    };
    let manifests = digests("manifests");
    let mut blobs = digests("layers");
    if let Some(c) = m.pointer("/config/digest").and_then(Value::as_str) {
        if let Ok(d) = Digest::parse(c) {
            blobs.push(d);
        }
    }
    (manifests, blobs)
}

/// Everything the manifest `root` needs (itself included), from the staging
/// layout, else from the history.
fn needs_of(layout: &Path, history: &History, root: &Digest, out: &mut BTreeSet<Digest>) -> Result<()> {
    if !out.insert(root.clone()) {
        return Ok(());
    }
    match manifest_json(layout, root) {
        Some(m) => {
            let (manifests, blobs) = children(&m);
            out.extend(blobs);
            for child in manifests {
                needs_of(layout, history, &child, out)?;
            }
            Ok(())
        }
        None => match history.needs_of(root) {
            Some(needs) => {
                out.extend(needs.iter().cloned());
                Ok(())
            }
            None => Err(Error::invalid(format!(
                "manifest {root} is neither in {} nor recorded by an earlier archive of {}",
                layout.display(),
                history.dir.display()
            ))),
        },
    }
}

/// The subject of a referrer: its manifest's `subject`, else its cosign tag
/// (`sha256-<hex>.sig`).
fn subject_of(layout: &Path, e: &IndexEntry) -> Option<Digest> {
    if let Some(d) = manifest_json(layout, &e.digest)
        .and_then(|m| m.pointer("/subject/digest").and_then(Value::as_str).map(str::to_string))
    {
        return Digest::parse(&d).ok();
    }
    let (subject, _) = crate::image::referrers::parse_cosign_tag(e.name.as_deref()?)?;
    Some(subject)
}

/// Writes one tar stream into numbered volume files of at most `size`
/// bytes each, hashing each as it goes.
struct Volumes {
    dir: PathBuf,
    prefix: String,
    size: Option<u64>,
    current: Option<(File, Sha256, u64, String)>,
    done: Vec<RecordFile>,
}

impl Volumes {
    fn close(&mut self) -> io::Result<()> {
        if let Some((f, h, n, name)) = self.current.take() {
            f.sync_all()?;
            self.done.push(RecordFile {
                name,
                size: n,
                sha256: hex(h.finalize().as_slice()),
            });
        }
        Ok(())
    }
}

impl Write for Volumes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.is_none() {
            let name = format!("{}-{:03}.tar", self.prefix, self.done.len() + 1);
            let f = File::create(self.dir.join(&name))?;
            self.current = Some((f, Sha256::new(), 0, name));
        }
        let size = self.size;
        let Some((f, h, n, _)) = self.current.as_mut() else {
            return Ok(0);
        };
        let room = size.map(|s| s - *n).unwrap_or(u64::MAX);
        let take = (buf.len() as u64).min(room) as usize;
        let wrote = f.write(&buf[..take])?;
        h.update(&buf[..wrote]);
        *n += wrote as u64;
        if size.is_some_and(|s| *n >= s) {
            self.close()?;
        }
        Ok(wrote)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.current.as_mut() {
            Some((f, ..)) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h
}

/// Seals the staging layout of `dir` into its next archive. Nothing staged
/// (every image already carried): no archive, None.
pub fn seal(dir: &Path, volume_size: Option<u64>, full: bool) -> Result<Option<Sealed>> {
    let layout = staging_layout(dir);
    if !layout.join("index.json").is_file() {
        return Ok(None);
    }
    super::lock_next(dir)?;
    let history = History::load(dir)?;
    let index = read_index(&layout)?;
    let blobs = layout_blobs(&layout)?;
    let staged = staged_images(dir)?;
    let tags: HashMap<&str, &Digest> = index
        .iter()
        .filter_map(|e| e.name.as_deref().map(|n| (n, &e.digest)))
        .collect();
    let image_refs: HashSet<&str> = staged.iter().map(|s| s.layout_ref.as_str()).collect();

    let mut referrers: Vec<RecordReferrer> = Vec::new();
    for e in &index {
        if e.name.as_deref().is_some_and(|n| image_refs.contains(n)) {
            continue;
        }
        if let Some(subject) = subject_of(&layout, e) {
            referrers.push(RecordReferrer {
                subject,
                digest: e.digest.clone(),
                tag: e.name.clone(),
            });
        }
    }

    let mut images = Vec::new();
    let mut all_needs: BTreeSet<Digest> = BTreeSet::new();
    for s in &staged {
        // The tag in index.json is the truth (a killed update may have left
        // the staged name's file behind it).
        let Some(digest) = tags.get(s.layout_ref.as_str()).map(|d| (*d).clone()) else {
            continue;
        };
        let mut needs = BTreeSet::new();
        needs_of(&layout, &history, &digest, &mut needs)?;
        let manifests: Vec<Digest> = needs.iter().cloned().collect();
        let mut own = Vec::new();
        for r in referrers.iter().filter(|r| manifests.contains(&r.subject)) {
            own.push(r.digest.clone());
            needs_of(&layout, &history, &r.digest, &mut needs)?;
        }
        for r in manifests.iter().flat_map(|m| history.referrers_of(m)) {
            if !own.contains(&r.digest) {
                own.push(r.digest.clone());
            }
        }
        let (registry, repo) = split_registry(&s.repository);
        all_needs.extend(needs.iter().cloned());
        images.push(RecordImage {
            registry,
            repo,
            tag: s.tag.clone(),
            digest,
            layout_ref: s.layout_ref.clone(),
            needs: needs.into_iter().collect(),
            referrers: own,
        });
    }
    // Referrers whose subject is carried by an earlier archive.
    for r in &referrers {
        needs_of(&layout, &history, &r.digest, &mut all_needs)?;
    }
    let mut depends_on = BTreeSet::new();
    for d in &all_needs {
        if blobs.contains_key(d) {
            continue;
        }
        match history.carried_by(d) {
            Some(a) => {
                depends_on.insert(a.to_string());
            }
            None => {
                return Err(Error::invalid(format!(
                    "blob {d}, needed by an image staged in {}, is neither there nor carried by an earlier archive of {}; run the sync again to fetch it",
                    layout.display(),
                    dir.display()
                )))
            }
        }
    }

    let number = history.next_number();
    let name = archive_name(number);
    let work = staging_dir(dir).join("sealing");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| Error::io("remove", &work, e))?;
    }
    std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
    let mut volumes = Volumes {
        dir: work.clone(),
        prefix: name.clone(),
        size: volume_size,
        current: None,
        done: Vec::new(),
    };
    let mut layout_files = Vec::new();
    {
        let mut tar = tar::Builder::new(&mut volumes);
        let io_err = |e: io::Error| Error::io("write a volume in", &work, e);
        for file in ["oci-layout", "index.json"] {
            let path = layout.join(file);
            let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
            layout_files.push(RecordFile {
                name: file.to_string(),
                size: bytes.len() as u64,
                sha256: hex(Sha256::digest(&bytes).as_slice()),
            });
            tar.append_data(&mut header(bytes.len() as u64, false), file, bytes.as_slice())
                .map_err(io_err)?;
        }
        for d in ["blobs/", "blobs/sha256/"] {
            tar.append_data(&mut header(0, true), d, io::empty()).map_err(io_err)?;
        }
        let mut sorted: Vec<(&Digest, &u64)> = blobs.iter().collect();
        sorted.sort();
        for (digest, size) in sorted {
            let path = layout.join("blobs").join("sha256").join(digest.hex());
            let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let mut reader = Hashing {
                inner: file.take(*size),
                hash: Sha256::new(),
            };
            tar.append_data(
                &mut header(*size, false),
                format!("blobs/sha256/{}", digest.hex()),
                &mut reader,
            )
            .map_err(io_err)?;
            let got = hex(reader.hash.finalize().as_slice());
            if got != digest.hex() {
                // A corrupt staged blob is removed, so the next run fetches it again.
                let _ = std::fs::remove_file(&path);
                return Err(Error::DigestMismatch {
                    what: format!(
                        "staged blob {} (removed: run the sync again to fetch it)",
                        path.display()
                    ),
                    expected: digest.to_string(),
                    actual: format!("sha256:{got}"),
                });
            }
        }
        tar.into_inner().map_err(io_err)?;
    }
    volumes.close().map_err(|e| Error::io("write a volume in", &work, e))?;
    let mut blob_list: Vec<RecordBlob> = blobs
        .iter()
        .map(|(d, s)| RecordBlob {
            digest: d.clone(),
            size: *s,
        })
        .collect();
    blob_list.sort_by(|a, b| a.digest.cmp(&b.digest));
    let record = Record {
        archive_version: RECORD_VERSION,
        archive: name.clone(),
        full,
        depends_on: depends_on.into_iter().collect(),
        images,
        referrers,
        blobs: blob_list,
        layout_files,
        volumes: volumes.done,
        volume_size,
    };
    let record_path = work.join(RECORD);
    let bytes = serde_json::to_vec_pretty(&record)?;
    std::fs::write(&record_path, &bytes).map_err(|e| Error::io("write", &record_path, e))?;
    let mut sums = vec![(hex(Sha256::digest(&bytes).as_slice()), RECORD.to_string())];
    sums.extend(record.volumes.iter().map(|v| (v.sha256.clone(), v.name.clone())));
    let sums_path = work.join(SUMS);
    std::fs::write(&sums_path, render_sums(&sums)).map_err(|e| Error::io("write", &sums_path, e))?;
    let target = dir.join(&name);
    std::fs::rename(&work, &target).map_err(|e| Error::io("move the sealed archive to", &target, e))?;
    // What was staged is in the archive now.
    let staging = staging_dir(dir);
    if let Err(e) = std::fs::remove_dir_all(&staging) {
        tracing::warn!(
            "{}: sealed, but the staging directory could not be removed: {e}",
            target.display()
        );
    }
    Ok(Some(Sealed {
        path: target,
        archive: name,
        images: record.images.len(),
        referrers: record.referrers.len(),
        blobs: record.blobs.len(),
        bytes: record.volumes.iter().map(|v| v.size).sum(),
        volumes: record.volumes.len(),
        depends_on: record.depends_on.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{import, stage_image, StagedImage};

    #[test]
    fn volumes_are_never_larger_than_asked_and_concatenate_to_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Volumes {
            dir: dir.path().to_path_buf(),
            prefix: "0001".into(),
            size: Some(4096),
            current: None,
            done: Vec::new(),
        };
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        v.write_all(&data).unwrap();
        v.close().unwrap();
        let sizes: Vec<u64> = v.done.iter().map(|f| f.size).collect();
        assert_eq!(sizes, [4096, 4096, 1808]);
        let mut joined = Vec::new();
        for f in &v.done {
            let bytes = std::fs::read(dir.path().join(&f.name)).unwrap();
            assert_eq!(hex(Sha256::digest(&bytes).as_slice()), f.sha256);
            joined.extend(bytes);
        }
        assert_eq!(joined, data);
        assert_eq!(v.done[2].name, "0001-003.tar");
    }

    /// Stages a one-layer image named `repo:tag` in the staging layout of `dir`.
    fn stage(dir: &Path, repo: &str, tag: &str, layers: &[&[u8]]) -> Digest {
        let layout = staging_layout(dir);
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let put = |b: &[u8]| {
            let d = Digest::of(b);
            std::fs::write(blobs.join(d.hex()), b).unwrap();
            d
        };
        let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
        let c = put(config.as_bytes());
        let layers: Vec<Value> = layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(l).as_str(), "size": l.len()}))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c.as_str(), "size": config.len()},
            "layers": layers
        });
        let m = put(&serde_json::to_vec(&manifest).unwrap());
        let name = crate::image::ImageName {
            repository: repo.into(),
            tag: tag.into(),
        };
        let layout_ref = crate::archive::layout_ref(&name);
        let index_path = layout.join("index.json");
        let mut index: Value = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
        index["manifests"].as_array_mut().unwrap().push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m.as_str(),
            "size": 1,
            "annotations": {REF_NAME: layout_ref}
        }));
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        stage_image(
            dir,
            &StagedImage {
                repository: repo.into(),
                tag: tag.into(),
                digest: m.clone(),
                layout_ref,
            },
        )
        .unwrap();
        m
    }

    use crate::archive::REF_NAME;

    #[test]
    fn sealed_archives_are_incremental_and_import_back_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let media = dir.path().join("transfer");
        let base = vec![7u8; 9000];
        let d1 = stage(&media, "registry.example.com/team/app", "1.0", &[&base]);
        let a1 = seal(&media, Some(4096), false).unwrap().unwrap();
        assert_eq!((a1.archive.as_str(), a1.images), ("0001", 1));
        assert!(a1.volumes >= 3);
        assert!(!staging_dir(&media).exists());
        assert_eq!(seal(&media, None, false).unwrap().map(|s| s.archive), None);

        // The second archive leaves out the layer the first carried.
        let h = History::load(&media).unwrap();
        assert_eq!(h.carried_by(&Digest::of(&base)), Some("0001"));
        let d2 = stage(&media, "registry.example.com/team/app", "1.1", &[&base, b"new layer"]);
        // What the sink does: a layer an earlier archive carried is not written.
        std::fs::remove_file(
            staging_layout(&media)
                .join("blobs/sha256")
                .join(Digest::of(&base).hex()),
        )
        .unwrap();
        let a2 = seal(&media, Some(4096), false).unwrap().unwrap();
        assert_eq!(a2.depends_on, ["0001"]);
        let r2 = Record::read(&a2.path).unwrap();
        assert!(r2.blobs.iter().all(|b| b.digest != Digest::of(&base)));
        assert!(a2.bytes < 9000);

        // Both read back: each name with its digest; 0002 alone misses 0001's layer.
        let all = import::open(&media).unwrap();
        let got: Vec<(String, Digest)> = all
            .images
            .iter()
            .map(|i| {
                (
                    format!("{}:{}", i.image.repository(), i.image.tag),
                    i.image.digest.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("registry.example.com/team/app:1.0".to_string(), d1),
                ("registry.example.com/team/app:1.1".to_string(), d2)
            ]
        );
        assert!(all.elsewhere.is_empty());
        let only2 = import::open(&a2.path).unwrap();
        assert_eq!(
            only2
                .elsewhere
                .get(&Digest::of(&base))
                .map(|w| w.starts_with("archive 0001")),
            Some(true)
        );
        import::remove_unpacked();
        assert!(!all.layout.exists());

        let names: Vec<String> = import::recorded_images(&media)
            .unwrap()
            .iter()
            .map(|i| format!("{} {}", i.archive, i.image.name()))
            .collect();
        assert_eq!(
            names,
            [
                "0001 registry.example.com/team/app:1.0",
                "0002 registry.example.com/team/app:1.1"
            ]
        );

        // 0001's volumes carried away: the directory reads as 0002 alone.
        for v in &Record::read(&a1.path).unwrap().volumes {
            std::fs::remove_file(a1.path.join(&v.name)).unwrap();
        }
        let rest = import::open(&media).unwrap();
        assert_eq!(
            (rest.archives.clone(), rest.history_only.clone()),
            (vec!["0002".to_string()], vec!["0001".to_string()])
        );
        assert!(rest.elsewhere.contains_key(&Digest::of(&base)));
        // A whole archive on a medium mounted under any name.
        import::remove_unpacked();
        let cdrom = dir.path().join("cdrom");
        std::fs::rename(&a2.path, &cdrom).unwrap();
        assert_eq!(import::open(&cdrom).unwrap().archives, ["0002"]);
        std::fs::rename(&cdrom, &a2.path).unwrap();
        // One archive named on its own must have its volumes.
        import::remove_unpacked();
        let e = import::open(&a1.path).unwrap_err().to_string();
        assert!(e.contains("0001-001.tar") && e.contains("missing"), "{e}");
    }
}

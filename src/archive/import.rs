//! Reading archives on the inside: `archive:///MEDIA/0002` (one archive) or
//! `archive:///MEDIA` (every archive there, in order). Before anything is
//! read from them, each archive's record is checked against its
//! `SHA256SUMS` and every volume against its checksum (a missing or corrupt
//! volume fails naming the file); then the volumes are unpacked, through
//! occy's one tar reader, into one OCI layout in the temporary directory
//! (each blob verified against its digest), which the OCI layout source
//! reads. The record says which images to restore under which source
//! names, and which earlier archive carried what an incremental one left
//! out.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::record::{archive_dirs, file_sha256, hex, RecordImage};
use super::{Record, RECORD, REF_NAME};
use crate::error::{Error, Result};
use crate::filter::tar_stream::{EntryKind, TarReader};
use crate::image::Digest;

/// Archives read and unpacked for import.
#[derive(Debug)]
pub struct Imported {
    /// What was named (`/media/transfer` or `/media/transfer/0002`).
    pub path: PathBuf,
    /// The unpacked OCI layout holding every archive read.
    pub layout: PathBuf,
    /// The images to restore, the newest archive winning for a name.
    pub images: Vec<ImportedImage>,
    /// Blobs the images need that the archives read do not hold, and the
    /// archive that carried each (`archive 0001 (/media/transfer/0001)`).
    pub elsewhere: HashMap<Digest, String>,
    /// The archives read, in order.
    pub archives: Vec<String>,
    /// Archives left out because none of their volumes is there (carried
    /// and imported before, their volumes moved away).
    pub history_only: Vec<String>,
}

/// One image an import restores.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    pub image: RecordImage,
    /// The archive that recorded it.
    pub archive: String,
}

type Opened = Mutex<HashMap<PathBuf, Arc<Imported>>>;

fn opened() -> &'static Opened {
    static OPENED: OnceLock<Opened> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// The import whose unpacked layout is `layout`, if one is.
pub fn imported(layout: &Path) -> Option<Arc<Imported>> {
    let map = opened().lock().ok()?;
    map.values().find(|i| i.layout == layout).cloned()
}

/// Removes every layout unpacked by this process (at the end of a run).
pub fn remove_unpacked() {
    let Ok(mut map) = opened().lock() else { return };
    for (_, i) in map.drain() {
        if let Some(parent) = i.layout.parent() {
            if let Err(e) = std::fs::remove_dir_all(parent) {
                tracing::warn!("could not remove the unpacked archive {}: {e}", parent.display());
            }
        }
    }
}

/// The images the archive or directory of archives at `path` records, the
/// newest archive winning for a name, from the records alone (each checked
/// against its `SHA256SUMS`; volumes are neither read nor needed): what a
/// mirror configuration needs to know of an archive source.
pub fn recorded_images(path: &Path) -> Result<Vec<ImportedImage>> {
    let (dirs, _) = selected(path)?;
    let mut images: Vec<ImportedImage> = Vec::new();
    for dir in &dirs {
        let record = Record::read(dir)?;
        for img in &record.images {
            images.retain(|i| i.image.layout_ref != img.layout_ref);
            images.push(ImportedImage {
                image: img.clone(),
                archive: record.archive.clone(),
            });
        }
    }
    Ok(images)
}

/// Opens the archive or directory of archives at `path` (once per process):
/// checks, unpacks, and says what it restores.
pub fn open(path: &Path) -> Result<Arc<Imported>> {
    if let Some(i) = opened().lock().ok().and_then(|m| m.get(path).cloned()) {
        return Ok(i);
    }
    let imported = Arc::new(open_uncached(path)?);
    if let Ok(mut m) = opened().lock() {
        m.insert(path.to_path_buf(), imported.clone());
    }
    Ok(imported)
}

/// The archives `path` names: itself when it is one, else every archive in it.
fn selected(path: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotFound(format!(
                "archive://{}: no such directory; name a directory of archives (…/transfer) or one archive (…/transfer/0002)",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io("read", path, e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::usage(format!(
                "archive://{}: {} is a file; name a directory of archives (…/transfer) or one archive (…/transfer/0002)",
                path.display(),
                path.display()
            )))
        }
        Ok(_) => {}
    }
    if path.join(RECORD).is_file() {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((vec![path.to_path_buf()], parent));
    }
    let all: Vec<PathBuf> = archive_dirs(path)?.into_iter().map(|(_, p)| p).collect();
    if all.is_empty() {
        return Err(Error::NotFound(format!(
            "archive://{}: holds no archive (directories 0001, 0002, … with a {RECORD})",
            path.display()
        )));
    }
    Ok((all, path.to_path_buf()))
}

fn open_uncached(path: &Path) -> Result<Imported> {
    let (dirs, base) = selected(path)?;
    let single = dirs.len() == 1 && path.join(RECORD).is_file();
    // Every record and volume is checked before anything is unpacked.
    let mut chosen: Vec<(PathBuf, Record)> = Vec::new();
    let mut history_only = Vec::new();
    for dir in &dirs {
        let record = Record::read(dir)?;
        let present = record.volumes.iter().filter(|v| dir.join(&v.name).exists()).count();
        if present == 0 && !single && !record.volumes.is_empty() {
            tracing::info!(
                "archive {}: none of its {} volume(s) is in {}: taken as imported before, left out",
                record.archive,
                record.volumes.len(),
                dir.display()
            );
            history_only.push(record.archive.clone());
            continue;
        }
        check_volumes(dir, &record)?;
        chosen.push((dir.clone(), record));
    }
    if chosen.is_empty() {
        return Err(Error::NotFound(format!(
            "archive://{}: none of its archives ({}) has its volumes there; copy the volumes of the archives to import",
            path.display(),
            history_only.join(", ")
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("occy-archive-")
        .tempdir()
        .map_err(|e| Error::io("create a temporary directory in", std::env::temp_dir(), e))?;
    let layout = work.path().join("layout");
    let blobs_dir = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(|e| Error::io("create", &blobs_dir, e))?;
    let mut entries: Vec<Value> = Vec::new();
    for (dir, record) in &chosen {
        let index = unpack(dir, record, &layout)?;
        for e in index {
            let name = e
                .pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                .cloned();
            let digest = e.get("digest").cloned();
            entries.retain(|old| match &name {
                Some(n) => old.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1"))) != Some(n),
                None => old.get("digest") != digest.as_ref() || old.get("annotations").is_some(),
            });
            entries.push(e);
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::image::media_type::OCI_INDEX,
        "manifests": entries,
    });
    let index_path = layout.join("index.json");
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index)?).map_err(|e| Error::io("write", &index_path, e))?;

    // The images, the newest archive winning for a name.
    let mut images: Vec<ImportedImage> = Vec::new();
    for (_, record) in &chosen {
        for img in &record.images {
            images.retain(|i| i.image.layout_ref != img.layout_ref);
            images.push(ImportedImage {
                image: img.clone(),
                archive: record.archive.clone(),
            });
        }
    }
    // What the images need that is not here, and who carried it.
    let mut carried: HashMap<Digest, String> = HashMap::new();
    for (_, p) in archive_dirs(&base).unwrap_or_default() {
        if let Ok(r) = Record::read(&p) {
            for b in &r.blobs {
                carried
                    .entry(b.digest.clone())
                    .or_insert_with(|| format!("archive {} ({})", r.archive, p.display()));
            }
        }
    }
    let mut elsewhere = HashMap::new();
    for i in &images {
        for d in &i.image.needs {
            if blobs_dir.join(d.hex()).is_file() {
                continue;
            }
            let who = carried.get(d).cloned().unwrap_or_else(|| {
                let deps = chosen
                    .iter()
                    .find(|(_, r)| r.archive == i.archive)
                    .map(|(_, r)| r.depends_on.join(", "))
                    .unwrap_or_default();
                format!("an earlier archive (archive {} depends on {deps})", i.archive)
            });
            elsewhere.insert(d.clone(), who);
        }
    }
    let kept = work.keep();
    Ok(Imported {
        path: path.to_path_buf(),
        layout: kept.join("layout"),
        images,
        elsewhere,
        archives: chosen.iter().map(|(_, r)| r.archive.clone()).collect(),
        history_only,
    })
}

/// Checks that every volume of the archive at `dir` is there, whole, with
/// the checksum its record gives.
fn check_volumes(dir: &Path, record: &Record) -> Result<()> {
    let names: Vec<&str> = record.volumes.iter().map(|v| v.name.as_str()).collect();
    for v in &record.volumes {
        let file = dir.join(&v.name);
        if !file.is_file() {
            return Err(Error::NotFound(format!(
                "volume {} of archive {} is missing: {} lists {} volume(s) ({}); copy it from the outside and run again",
                file.display(),
                record.archive,
                dir.join(RECORD).display(),
                names.len(),
                names.join(", ")
            )));
        }
        let (sum, size) = file_sha256(&file)?;
        if size != v.size || sum != v.sha256 {
            return Err(Error::DigestMismatch {
                what: format!(
                    "volume {} of archive {} (corrupt: copy it again from the outside; nothing was imported)",
                    file.display(),
                    record.archive
                ),
                expected: format!("sha256:{} ({} bytes)", v.sha256, v.size),
                actual: format!("sha256:{sum} ({size} bytes)"),
            });
        }
    }
    Ok(())
}

/// The volumes of an archive read one after the other.
struct Concat {
    files: Vec<PathBuf>,
    current: Option<File>,
    next: usize,
}

impl Read for Concat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next) else {
                    return Ok(0);
                };
                self.current = Some(File::open(path)?);
                self.next += 1;
            }
            if let Some(f) = self.current.as_mut() {
                let n = f.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
            }
            self.current = None;
        }
    }
}

/// Unpacks the archive at `dir` into `layout` (blobs verified against
/// their digests, its `index.json` against the record) and returns its
/// `index.json` entries.
fn unpack(dir: &Path, record: &Record, layout: &Path) -> Result<Vec<Value>> {
    let what = format!("archive {} ({})", record.archive, dir.display());
    let reader = Concat {
        files: record.volumes.iter().map(|v| dir.join(&v.name)).collect(),
        current: None,
        next: 0,
    };
    let mut tar = TarReader::new(reader, what.clone());
    let mut index: Option<Vec<u8>> = None;
    let mut found: HashSet<Digest> = HashSet::new();
    let blobs_dir = layout.join("blobs").join("sha256");
    let mut buf = vec![0u8; 256 * 1024];
    while let Some(entry) = tar.next_entry()? {
        let path = entry.path.trim_end_matches('/').to_string();
        match (entry.kind, path.as_str()) {
            (EntryKind::Directory, "blobs" | "blobs/sha256") => {}
            (EntryKind::File, "oci-layout" | "index.json") => {
                if entry.data_len > 64 * 1024 * 1024 {
                    return Err(Error::invalid(format!("{what}: {path} is {} bytes", entry.data_len)));
                }
                let mut bytes = Vec::with_capacity(entry.data_len as usize);
                loop {
                    let n = tar.read_data(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                }
                let sum = hex(Sha256::digest(&bytes).as_slice());
                let recorded = record.layout_files.iter().find(|f| f.name == path);
                if recorded.is_none_or(|f| f.sha256 != sum) {
                    return Err(Error::invalid(format!(
                        "{what}: its {path} does not match the checksum in its record"
                    )));
                }
                if path == "index.json" {
                    index = Some(bytes);
                } else {
                    let p = layout.join("oci-layout");
                    std::fs::write(&p, &bytes).map_err(|e| Error::io("write", &p, e))?;
                }
            }
            (EntryKind::File, p) if p.starts_with("blobs/sha256/") => {
                let hex_name = &p["blobs/sha256/".len()..];
                let digest = Digest::parse(&format!("sha256:{hex_name}"))
                    .map_err(|_| Error::invalid(format!("{what}: entry {p} is not named by a sha256 digest")))?;
                let target = blobs_dir.join(digest.hex());
                if target.is_file() {
                    tar.skip_data()?;
                } else {
                    let tmp = blobs_dir.join(format!(".{}.part", digest.hex()));
                    let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
                    let mut h = Sha256::new();
                    loop {
                        let n = tar.read_data(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                        out.write_all(&buf[..n]).map_err(|e| Error::io("write", &tmp, e))?;
                    }
                    let got = hex(h.finalize().as_slice());
                    if got != digest.hex() {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(Error::DigestMismatch {
                            what: format!("blob {p} of {what}"),
                            expected: digest.to_string(),
                            actual: format!("sha256:{got}"),
                        });
                    }
                    std::fs::rename(&tmp, &target).map_err(|e| Error::io("rename into place", &target, e))?;
                }
                found.insert(digest);
            }
            _ => {
                return Err(Error::invalid(format!(
                "{what}: unexpected entry {:?}; an archive holds only oci-layout, index.json and blobs/sha256/<digest>",
                entry.written_path()
            )))
            }
        }
    }
    for b in &record.blobs {
        if !found.contains(&b.digest) {
            return Err(Error::invalid(format!(
                "{}: the record names blob {}, which is not in the archive's volumes",
                dir.join(RECORD).display(),
                b.digest
            )));
        }
    }
    let index = index.ok_or_else(|| Error::invalid(format!("{what}: its volumes hold no index.json")))?;
    let index: Value =
        serde_json::from_slice(&index).map_err(|e| Error::invalid(format!("{what}: malformed index.json: {e}")))?;
    let entries: Vec<Value> = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tags: HashMap<String, String> = entries
        .iter()
        .filter_map(|e| {
            let n = e
                .pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))?
                .as_str()?;
            Some((n.to_string(), e.get("digest")?.as_str()?.to_string()))
        })
        .collect();
    for img in &record.images {
        match tags.get(&img.layout_ref) {
            Some(d) if d == img.digest.as_str() => {}
            other => {
                return Err(Error::invalid(format!(
                    "{}: the record says {}:{} is {}, but the archive's index.json says {}",
                    dir.join(RECORD).display(),
                    img.repository(),
                    img.tag,
                    img.digest,
                    other.map(String::as_str).unwrap_or("nothing")
                )))
            }
        }
    }
    Ok(entries)
}

//! An archive's record (`record.json`) and checksum list (`SHA256SUMS`),
//! and the history they make: which archive of a directory carried each
//! blob, what each source name was last recorded as, and each subject's
//! referrers.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{archive_name, archive_number, layout_ref, RECORD, SUMS};
use crate::error::{Error, Result};
use crate::image::{Digest, ImageName};

/// The version of the record this occy writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// What one archive holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub archive_version: u32,
    /// Its number, as its directory is named (`0002`).
    pub archive: String,
    /// A whole archive (`?full=true`), not only what earlier ones lacked.
    pub full: bool,
    /// The earlier archives that carried blobs or manifests its images
    /// need: they must be imported first.
    pub depends_on: Vec<String>,
    pub images: Vec<RecordImage>,
    /// Referrers (signatures, SBOMs…) it carries, by subject.
    pub referrers: Vec<RecordReferrer>,
    /// Every blob and manifest in its layout.
    pub blobs: Vec<RecordBlob>,
    /// The layout's other files (`index.json`, `oci-layout`).
    pub layout_files: Vec<RecordFile>,
    /// The tar volumes, in order: concatenated, they are the layout.
    pub volumes: Vec<RecordFile>,
    /// The volume size asked for (None: one volume).
    pub volume_size: Option<u64>,
}

/// One image an archive records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordImage {
    /// The source registry (`{registry}`), empty for file sources.
    pub registry: String,
    /// The repository without the registry (`{repo}`).
    pub repo: String,
    pub tag: String,
    /// The manifest (or index) digest its tag names.
    pub digest: Digest,
    /// Its `ref.name` in the layout.
    pub layout_ref: String,
    /// Every blob and manifest it needs (its own manifests, configs,
    /// layers), carried by this archive or an earlier one.
    pub needs: Vec<Digest>,
    /// The digests of its referrers.
    pub referrers: Vec<Digest>,
}

impl RecordImage {
    /// `registry/repo` as the source named it.
    pub fn repository(&self) -> String {
        if self.registry.is_empty() {
            self.repo.clone()
        } else {
            format!("{}/{}", self.registry, self.repo)
        }
    }

    pub fn name(&self) -> ImageName {
        ImageName {
            repository: self.repository(),
            tag: self.tag.clone(),
        }
    }
}

/// One referrer an archive carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordReferrer {
    pub subject: Digest,
    pub digest: Digest,
    /// Its cosign tag (`sha256-<hex>.sig`), if it is kept under one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// One blob an archive carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordBlob {
    pub digest: Digest,
    pub size: u64,
}

/// One file with its size and sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// The sha256 (hex) and length of a file, read through a fixed buffer.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex(h.finalize().as_slice()), n))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SHA256SUMS`: `<hex>  <name>` lines, as `sha256sum` writes and checks them.
pub fn render_sums(files: &[(String, String)]) -> String {
    files.iter().map(|(hex, name)| format!("{hex}  {name}\n")).collect()
}

/// Reads `SHA256SUMS` of the archive at `dir`: name → sha256.
pub fn read_sums(dir: &Path) -> Result<HashMap<String, String>> {
    let path = dir.join(SUMS);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::invalid(format!(
            "{} cannot be read ({e}): every archive has a checksum list; is {} an archive occy wrote?",
            path.display(),
            dir.display()
        ))
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((sum, name)) = line.split_once("  ") else {
            return Err(Error::invalid(format!(
                "{}:{}: expected \"<sha256>  <file>\", found {line:?}",
                path.display(),
                i + 1
            )));
        };
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{}:{}: {sum:?} is not a sha256",
                path.display(),
                i + 1
            )));
        }
        out.insert(name.to_string(), sum.to_ascii_lowercase());
    }
    Ok(out)
}

impl Record {
    /// Reads the record of the archive at `dir`, checked against its
    /// `SHA256SUMS` (an edited record is refused). The directory may have
    /// any name (a medium's mount point): the record says which archive it is.
    pub fn read(dir: &Path) -> Result<Record> {
        let sums = read_sums(dir)?;
        let path = dir.join(RECORD);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read the archive record", &path, e))?;
        let sum = hex(Sha256::digest(&bytes).as_slice());
        match sums.get(RECORD) {
            Some(want) if *want == sum => {}
            Some(want) => {
                return Err(Error::invalid(format!(
                    "{} does not match its checksum in {}: sha256 {sum}, the list says {want}; the record was changed after the archive was written (copy it again from the outside)",
                    path.display(),
                    dir.join(SUMS).display()
                )))
            }
            None => {
                return Err(Error::invalid(format!(
                    "{} does not list {RECORD}",
                    dir.join(SUMS).display()
                )))
            }
        }
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("{} is not an archive record: {e}", path.display())))?;
        if record.archive_version != RECORD_VERSION {
            return Err(Error::invalid(format!(
                "{} is a version-{} archive record; this occy reads version {RECORD_VERSION}",
                path.display(),
                record.archive_version
            )));
        }
        if archive_number(&record.archive).is_none() {
            return Err(Error::invalid(format!(
                "{} names archive {:?}; archives are numbered 0001, 0002, …",
                path.display(),
                record.archive
            )));
        }
        for v in &record.volumes {
            let plain = !v.name.is_empty()
                && v.name.ends_with(".tar")
                && !v.name.starts_with('.')
                && !v.name.contains(['/', '\\']);
            if !plain {
                return Err(Error::invalid(format!(
                    "{} names volume {:?}; a volume is a file beside the record (NNNN-NNN.tar)",
                    path.display(),
                    v.name
                )));
            }
            if sums.get(&v.name) != Some(&v.sha256) {
                return Err(Error::invalid(format!(
                    "{} and {} disagree on the checksum of volume {}",
                    path.display(),
                    dir.join(SUMS).display(),
                    v.name
                )));
            }
        }
        Ok(record)
    }

    /// The record's number.
    pub fn number(&self) -> u32 {
        archive_number(&self.archive).unwrap_or(0)
    }
}

/// The archives of a directory and what they carried.
#[derive(Debug, Default)]
pub struct History {
    pub dir: PathBuf,
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Blob → the index of the first record that carried it.
    carried: HashMap<Digest, usize>,
    /// `layout_ref` → (record index, digest), the newest record winning.
    tags: HashMap<String, (usize, Digest)>,
    /// Subject → (record index, referrer).
    referrers: HashMap<Digest, Vec<(usize, RecordReferrer)>>,
    /// An image digest → what it needs, as the record that carried it says.
    needs: HashMap<Digest, Vec<Digest>>,
}

/// The archive directories (`0001`…) under `dir`, in order.
pub fn archive_dirs(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the archives in", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list the archives in", dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = archive_number(&name) {
            if entry.path().is_dir() {
                out.push((n, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

impl History {
    /// Reads every record of `dir` (a directory that does not exist has no
    /// history). Volumes need not be there: records are enough.
    pub fn load(dir: &Path) -> Result<History> {
        super::check_dir(dir)?;
        let mut h = History {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for (_, path) in archive_dirs(dir)? {
            h.add(Record::read(&path)?);
        }
        Ok(h)
    }

    /// Adds a record (the newest so far).
    pub fn add(&mut self, record: Record) {
        let i = self.records.len();
        for b in &record.blobs {
            self.carried.entry(b.digest.clone()).or_insert(i);
        }
        for img in &record.images {
            self.tags.insert(img.layout_ref.clone(), (i, img.digest.clone()));
            self.needs
                .entry(img.digest.clone())
                .or_insert_with(|| img.needs.clone());
        }
        for r in &record.referrers {
            self.referrers
                .entry(r.subject.clone())
                .or_default()
                .push((i, r.clone()));
        }
        self.records.push(record);
    }

    /// The archive (`0001`) that carried the blob, if one did.
    pub fn carried_by(&self, digest: &Digest) -> Option<&str> {
        self.carried.get(digest).map(|&i| self.records[i].archive.as_str())
    }

    /// The newest archive recording `name`, and the digest it recorded.
    pub fn current(&self, name: &ImageName) -> Option<(&str, &Digest)> {
        self.tags
            .get(&layout_ref(name))
            .map(|(i, d)| (self.records[*i].archive.as_str(), d))
    }

    /// The referrers earlier archives carried for `subject`.
    pub fn referrers_of(&self, subject: &Digest) -> impl Iterator<Item = &RecordReferrer> {
        self.referrers.get(subject).into_iter().flatten().map(|(_, r)| r)
    }

    /// What the image `digest` needs, as an earlier record says.
    pub fn needs_of(&self, digest: &Digest) -> Option<&[Digest]> {
        self.needs.get(digest).map(Vec::as_slice)
    }

    /// The number the next archive gets.
    pub fn next_number(&self) -> u32 {
        let dirs = archive_dirs(&self.dir).unwrap_or_default();
        let by_dir = dirs.iter().map(|(n, _)| *n).max().unwrap_or(0);
        self.records.iter().map(Record::number).max().unwrap_or(0).max(by_dir) + 1
    }

    /// The next archive's directory.
    pub fn next_dir(&self) -> PathBuf {
        self.dir.join(archive_name(self.next_number()))
    }
}

//! Transfer archives for disconnected sites (`archive:///DIR`). A directory
//! of archives holds the numbered archives `DIR/0001`, `DIR/0002`…, each an
//! OCI layout packed into checksummed tar volumes, with `record.json` (what
//! it carries: each image's source name and digest, its referrers, every
//! blob, the earlier archives it depends on) and `SHA256SUMS` (the record's
//! and each volume's checksum). The records of a directory are its history:
//! a new archive carries only the blobs and manifests no earlier one did.
//!
//! This module sits below the sinks and sources and knows nothing of them:
//! the archive sink writes into the [staging layout](staging_layout) through
//! the OCI layout sink and [`pack::seal`]s it into the next archive; an
//! import [`import::open`]s archives, checks every volume and unpacks them
//! into an OCI layout the OCI layout source reads.

pub mod import;
pub mod pack;
pub mod record;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::{Digest, ImageName};
pub use record::{History, Record};

/// The name of an archive's record.
pub const RECORD: &str = "record.json";
/// The name of an archive's checksum list (`sha256sum -c` reads it).
pub const SUMS: &str = "SHA256SUMS";
/// The annotation that names an image in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Where an archive being written is kept until it is sealed.
const STAGING: &str = ".occy-partial";

/// `0002` for 2.
pub fn archive_name(number: u32) -> String {
    format!("{number:04}")
}

/// The number of an archive directory's name (`0002`), if it is one.
pub fn archive_number(name: &str) -> Option<u32> {
    (name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
        .filter(|n| *n > 0)
}

/// Where the archive being written to `dir` is staged.
pub fn staging_dir(dir: &Path) -> PathBuf {
    dir.join(STAGING)
}

/// The OCI layout the next archive of `dir` is written into before it is
/// packed (blobs already there survive a killed run).
pub fn staging_layout(dir: &Path) -> PathBuf {
    staging_dir(dir).join("layout")
}

/// Where the staged images' source names are kept, one file each.
fn staging_images(dir: &Path) -> PathBuf {
    staging_dir(dir).join("images")
}

/// Refuses, as a destination, one archive of a directory (`DIR/0002`) or
/// a path that is a file.
pub fn check_destination(dir: &Path) -> Result<()> {
    check_dir(dir)?;
    if dir.join(RECORD).is_file() {
        return Err(Error::usage(format!(
            "archive://{}: is one archive (it holds {RECORD}); a destination names the directory of archives{}",
            dir.display(),
            dir.parent()
                .map(|p| format!(" (archive://{})", p.display()))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Takes, for the rest of this process, the exclusive lock of the next
/// archive of `dir` (`DIR/.occy-partial.lock`): one run at a time stages
/// and seals a directory's next archive. Taken again by the same process,
/// it is already held.
pub fn lock_next(dir: &Path) -> Result<()> {
    use fs4::fs_std::FileExt;
    static HELD: OnceLock<Mutex<HashMap<PathBuf, std::fs::File>>> = OnceLock::new();
    let held = HELD.get_or_init(Default::default);
    let mut held = held
        .lock()
        .map_err(|_| Error::invalid("the archive lock table is poisoned"))?;
    if held.contains_key(dir) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let path = dir.join(format!("{STAGING}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    if !matches!(FileExt::try_lock_exclusive(&file), Ok(true)) {
        return Err(Error::invalid(format!(
            "another occy run is writing the next archive of archive://{} (it holds {}); let it finish, then run again",
            dir.display(),
            path.display()
        )));
    }
    held.insert(dir.to_path_buf(), file);
    Ok(())
}

/// Refuses an archive directory that is a file.
pub fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::usage(format!(
            "archive://{}: {} is a file; an archive destination is a directory that holds the numbered archives 0001, 0002, …",
            dir.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The name an image has inside an archive's OCI layout (its `ref.name`):
/// the source's `REPOSITORY:TAG` with every character a tag cannot hold
/// made `_` (`127.0.0.1_5000_team_app_1.0`). The record keeps the real
/// name beside it.
pub fn layout_ref(name: &ImageName) -> String {
    let full = format!("{}:{}", name.repository, name.tag);
    let mut out: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.starts_with(['.', '-']) {
        out.remove(0);
    }
    if out.len() > 128 || out.is_empty() {
        let hash = Digest::of(full.as_bytes());
        out.truncate(110);
        out = format!("{out}-{}", &hash.hex()[..16]);
    }
    out
}

/// Splits a repository name the way Docker does: the first component is a
/// registry when it holds a `.` or a `:` or is `localhost`.
pub fn split_registry(repository: &str) -> (String, String) {
    match repository.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (String::new(), repository.to_string()),
    }
}

/// One image staged for the next archive: its source name and digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StagedImage {
    /// The source's repository, registry included (`127.0.0.1:5000/team/app`).
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    /// Its `ref.name` in the layout.
    pub layout_ref: String,
}

/// Records that `image` is staged in `dir`'s next archive (after its
/// manifests and tag are in the staging layout). Written to a temporary
/// name and renamed.
pub fn stage_image(dir: &Path, image: &StagedImage) -> Result<()> {
    let images = staging_images(dir);
    std::fs::create_dir_all(&images).map_err(|e| Error::io("create", &images, e))?;
    let path = images.join(format!("{}.json", image.layout_ref));
    let tmp = images.join(format!(".{}.json.tmp-{}", image.layout_ref, std::process::id()));
    let bytes = serde_json::to_vec_pretty(image)?;
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename into place", &path, e))
}

/// Whether a run before this one began staging the next archive of `dir`
/// (its staging layout has an `index.json`).
pub fn staging_started(dir: &Path) -> bool {
    staging_layout(dir).join("index.json").is_file()
}

/// The images staged in `dir`'s next archive.
pub fn staged_images(dir: &Path) -> Result<Vec<StagedImage>> {
    let images = staging_images(dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&images) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", &images, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", &images, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let image: StagedImage = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("{} is not a staged image record: {e}", path.display())))?;
        out.push(image);
    }
    out.sort_by(|a, b| a.layout_ref.cmp(&b.layout_ref));
    Ok(out)
}

/// Whether the staging layout of `dir` holds the blob.
pub fn staged_blob(dir: &Path, digest: &Digest) -> bool {
    staging_layout(dir)
        .join("blobs")
        .join("sha256")
        .join(digest.hex())
        .is_file()
}

/// The history of `dir`, read once per process (the records do not change
/// while a run plans and writes; the staging layout is asked directly).
pub fn history(dir: &Path) -> Result<Arc<History>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<History>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().ok().and_then(|c| c.get(dir).cloned()) {
        return Ok(h);
    }
    let h = Arc::new(History::load(dir)?);
    if let Ok(mut c) = cache.lock() {
        c.insert(dir.to_path_buf(), h.clone());
    }
    Ok(h)
}

/// The digest `name` has in `dir` now: staged for the next archive, else
/// as the newest archive recording it says (unless `full`: a whole archive
/// ignores the history).
pub fn current_digest(dir: &Path, name: &ImageName, full: bool) -> Result<Option<Digest>> {
    check_destination(dir)?;
    let key = layout_ref(name);
    if let Some(staged) = staged_images(dir)?.into_iter().find(|s| s.layout_ref == key) {
        if staged_blob(dir, &staged.digest) {
            return Ok(Some(staged.digest));
        }
    }
    if full {
        return Ok(None);
    }
    Ok(history(dir)?.current(name).map(|(_, d)| d.clone()))
}

/// Whether `dir` holds the blob for the next archive: staged, or carried by
/// an earlier archive (unless `full`).
pub fn holds_blob(dir: &Path, digest: &Digest, full: bool) -> Result<bool> {
    if staged_blob(dir, digest) {
        return Ok(true);
    }
    if full {
        return Ok(false);
    }
    Ok(history(dir)?.carried_by(digest).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_refs_are_tags_and_keep_names_apart() {
        let n = |r: &str, t: &str| ImageName {
            repository: r.into(),
            tag: t.into(),
        };
        assert_eq!(
            layout_ref(&n("127.0.0.1:5000/team/app", "1.0")),
            "127.0.0.1_5000_team_app_1.0"
        );
        let long = layout_ref(&n(&"a".repeat(200), "x"));
        assert!(long.len() <= 128, "{long}");
        assert_ne!(long, layout_ref(&n(&"a".repeat(201), "x")));
        assert_eq!(
            split_registry("127.0.0.1:5000/team/app"),
            ("127.0.0.1:5000".into(), "team/app".into())
        );
        assert_eq!(split_registry("team/app"), (String::new(), "team/app".into()));
        assert_eq!(archive_number("0002"), Some(2));
        assert_eq!(archive_number("0000"), None);
        assert_eq!(archive_number("002"), None);
        assert_eq!(archive_name(12), "0012");
    }
}

//! What occy last wrote to a file destination (docker-save tarball, dir://,
//! bundle): the source digest, chain and platforms, kept in a small JSON file
//! beside the output. A file destination is unchanged when that record
//! matches what the plan would write and the output is still there.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::image::{Digest, ImageName};
use crate::reference::Reference;
use crate::sink::kind;

/// The record of one write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenState {
    /// The source as written in the plan.
    pub source: String,
    pub source_digest: Digest,
    /// The chain's hash (empty without filters).
    pub chain: String,
    /// The platforms taken, as the plan spells them.
    pub platforms: String,
    /// The digest the output holds (image or index manifest).
    pub output: Digest,
}

/// Where the record of a file destination lives, or None for destinations
/// that are compared directly (registries, OCI layouts, the daemon).
pub fn state_path(dest: &Reference, name: &ImageName) -> Option<PathBuf> {
    let place = kind::of(dest).record?;
    let key = hex::encode(Sha256::digest(name.to_string().as_bytes()));
    place.path(kind::path_of(dest)?, &key[..32])
}

/// The output a record speaks for exists (the tarball, the bundle's config).
pub fn output_exists(dest: &Reference) -> bool {
    match (kind::of(dest).output, kind::path_of(dest)) {
        (Some(marker), Some(path)) => marker.present(path),
        _ => false,
    }
}

/// Reads a record; a missing or unreadable one is None (the target is rewritten).
pub fn read(path: &Path) -> Option<WrittenState> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes a record atomically.
pub fn write(path: &Path, state: &WrittenState) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let mut tmp = crate::sink::atomic::temp_beside(path)?;
    serde_json::to_writer_pretty(&mut tmp, state)?;
    tmp.persist(path).map_err(|e| Error::io("rename into", path, e.error))?;
    Ok(())
}

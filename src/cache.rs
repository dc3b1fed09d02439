//! The layer cache: remembers what a filter chain made of a layer, keyed by
//! (input layer digest, chain hash, output compression and form), so that a
//! second run with the same chain can skip fetching and rewriting any layer
//! the destination already holds. It stores descriptors, not blobs: a
//! layer the destination lacks is rewritten again.
//!
//! Entries are small JSON files written under a temporary name and renamed,
//! so a reader never sees half an entry. A file that cannot be read or
//! parsed, or that does not describe the key it is stored under, is ignored
//! with a warning and never trusted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use crate::blob_locations::BlobLocations;
use crate::error::{Error, Result};
use crate::image::{Compression, Digest};

/// The version of what the rewriter makes of a layer, part of every key:
/// raised when the same chain starts giving different bytes, so entries
/// written by an older occy do not answer. 2: a chain that changes no entry
/// keeps the tar's padding (and so its diff_id).
const REWRITER_VERSION: &str = "2";

/// What a chain made of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The cache key this entry answers (checked on read).
    pub key: String,
    pub input: Digest,
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub compression: Compression,
}

/// A directory of cache entries.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// The cache under `dir`, or the user's cache directory
    /// (`$XDG_CACHE_HOME/occy`, else `~/.cache/occy`).
    pub fn open(dir: Option<&Path>) -> Option<Self> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
                base.join("occy")
            }
        };
        Some(LayerCache {
            dir: dir.join("layers"),
        })
    }

    /// Where what each insecure host speaks is remembered (`hosts/`
    /// beside `layers/`).
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join("hosts")
    }

    /// The blob locations remembered in the same cache directory (beside
    /// `layers/`; off with the cache, `--no-cache`).
    pub fn blob_locations(&self) -> BlobLocations {
        BlobLocations::in_dir(self.dir.parent().unwrap_or(&self.dir))
    }

    /// The key for `input` through the chain `chain_hash`, written as
    /// `compression` (with `level`) in the given form.
    pub fn key(input: &Digest, chain_hash: &str, compression: Compression, level: Option<i32>, form: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            REWRITER_VERSION,
            input.as_str(),
            chain_hash,
            compression.as_str(),
            &format!("{level:?}"),
            form,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.json"))
    }

    /// The key of a layer rewritten by a chain (hash `chain_hash`) and
    /// compressed as given: plain-tar output (`Compression::None`) and
    /// compressed output are separate entries.
    pub fn rewrite_key(input: &Digest, chain_hash: &str, compression: Compression, level: Option<i32>) -> String {
        let form = if compression == Compression::None {
            "uncompressed"
        } else {
            "as-is"
        };
        LayerCache::key(input, chain_hash, compression, level, form)
    }

    /// The entry for `key`, if there is a sound one.
    pub fn get(&self, key: &str) -> Option<CachedLayer> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!("layer cache entry {} cannot be read, ignoring it: {e}", path.display());
                return None;
            }
        };
        match serde_json::from_slice::<CachedLayer>(&bytes) {
            Ok(entry) if entry.key == key => Some(entry),
            Ok(_) => {
                warn!(
                    "layer cache entry {} belongs to another key, ignoring it",
                    path.display()
                );
                None
            }
            Err(e) => {
                warn!("layer cache entry {} is corrupt, ignoring it: {e}", path.display());
                None
            }
        }
    }

    /// Stores an entry atomically. Failing to write the cache never fails a copy.
    pub fn put(&self, entry: &CachedLayer) {
        if let Err(e) = self.try_put(entry) {
            warn!("could not write the layer cache: {e}");
        }
    }

    fn try_put(&self, entry: &CachedLayer) -> Result<()> {
        let path = self.path(&entry.key);
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create a file in", dir, e))?;
        serde_json::to_writer(&mut tmp, entry)?;
        tmp.persist(&path)
            .map_err(|e| Error::io("rename into", &path, e.error))?;
        Ok(())
    }
}

/// What a filter chain made of a whole image: the digest its destination
/// tag ends up naming, so a later plan can tell "unchanged" without
/// rewriting anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OutputEntry {
    key: String,
    output: Digest,
}

impl LayerCache {
    /// The key of an image's filtered output: the source manifest digest,
    /// the chain, the platforms taken and whether an index is written.
    pub fn output_key(source: &Digest, chain_hash: &str, platforms: &str, with_index: bool) -> String {
        let mut h = Sha256::new();
        for part in [
            source.as_str(),
            chain_hash,
            platforms,
            if with_index { "index" } else { "image" },
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    fn output_path(&self, key: &str) -> PathBuf {
        let base = self.dir.parent().unwrap_or(&self.dir);
        base.join("outputs").join(&key[..2]).join(format!("{key}.json"))
    }

    /// The recorded output digest for `key`, if any.
    pub fn output(&self, key: &str) -> Option<Digest> {
        let bytes = std::fs::read(self.output_path(key)).ok()?;
        match serde_json::from_slice::<OutputEntry>(&bytes) {
            Ok(e) if e.key == key => Some(e.output),
            _ => None,
        }
    }

    /// Records the output digest for `key` (failures are only logged).
    pub fn record_output(&self, key: &str, output: &Digest) {
        let path = self.output_path(key);
        let entry = OutputEntry {
            key: key.to_string(),
            output: output.clone(),
        };
        let result = (|| -> Result<()> {
            let dir = path.parent().unwrap_or(&self.dir);
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io("create a file in", dir, e))?;
            serde_json::to_writer(&mut tmp, &entry)?;
            tmp.persist(&path)
                .map_err(|e| Error::io("rename into", &path, e.error))?;
            Ok(())
        })();
        if let Err(e) = result {
            warn!("could not record a filtered output in the cache: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> CachedLayer {
        CachedLayer {
            key: key.to_string(),
            input: Digest::of(b"in"),
            digest: Digest::of(b"out"),
            size: 3,
            diff_id: Digest::of(b"plain"),
            compression: Compression::Gzip,
        }
    }

    #[test]
    fn round_trip_and_keys_differ_by_every_part() {
        let t = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(Some(t.path())).unwrap();
        let d = Digest::of(b"in");
        let key = LayerCache::key(&d, "chain", Compression::Gzip, None, "as-is");
        assert_eq!(cache.get(&key), None);
        cache.put(&entry(&key));
        assert_eq!(cache.get(&key), Some(entry(&key)));
        for other in [
            LayerCache::key(&Digest::of(b"x"), "chain", Compression::Gzip, None, "as-is"),
            LayerCache::key(&d, "chain2", Compression::Gzip, None, "as-is"),
            LayerCache::key(&d, "chain", Compression::Zstd, None, "as-is"),
            LayerCache::key(&d, "chain", Compression::Gzip, Some(9), "as-is"),
            LayerCache::key(&d, "chain", Compression::Gzip, None, "uncompressed"),
        ] {
            assert_ne!(other, key);
        }
    }

    #[test]
    fn corrupt_or_misplaced_entries_are_ignored() {
        let t = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(Some(t.path())).unwrap();
        let key = LayerCache::key(&Digest::of(b"in"), "c", Compression::Gzip, None, "as-is");
        std::fs::create_dir_all(cache.path(&key).parent().unwrap()).unwrap();
        std::fs::write(cache.path(&key), b"{half an entr").unwrap();
        assert_eq!(cache.get(&key), None);
        // A sound entry stored under another key's name.
        let other = LayerCache::key(&Digest::of(b"other"), "c", Compression::Gzip, None, "as-is");
        std::fs::write(cache.path(&key), serde_json::to_vec(&entry(&other)).unwrap()).unwrap();
        assert_eq!(cache.get(&key), None);
    }
}

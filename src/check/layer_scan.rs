//! The full check of one layer, in one pass: the compressed bytes are
//! verified against the descriptor by the source, the compression is read
//! from the magic bytes and compared with the media type, the plain tar is
//! hashed against the diff_id and scanned entry by entry for malformed
//! whiteouts, negative times, paths and links that leave the root,
//! world-writable files, and each regular file's content hash (for the
//! duplicate-file rule across layers).

use std::collections::HashMap;
use std::io::Write;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::Findings;
use crate::error::{Error, Result};
use crate::filter::layer::HashWriter;
use crate::filter::tar_stream::{EntryKind, TarEntry, TarReader};
use crate::image::{Compression, Descriptor, Digest, VerifyingReader};
use crate::source::{BlobReader, Source};

/// What a layer scan remembers for rules across layers.
#[derive(Debug, Default)]
pub struct LayerScan {
    /// Regular files: path → content digest.
    pub files: HashMap<String, Digest>,
}

/// Directories where world-writable entries are expected.
const TMP_DIRS: [&str; 4] = ["tmp", "var/tmp", "dev/shm", "run/lock"];

/// What one entry breaks, if anything. `files` collects regular files.
fn entry_findings(e: &TarEntry, at: &str, f: &mut Findings) {
    let name = e.path.trim_end_matches('/');
    let base = name.rsplit('/').next().unwrap_or(name);
    // path-escape: the entry itself, then where a link points.
    if e.absolute {
        f.error("path-escape", format!("{at}: entry /{name} has an absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        f.error("path-escape", format!("{at}: entry {name} has a '..' component"));
    }
    if let Some(link) = &e.link {
        let escapes = match e.kind {
            EntryKind::HardLink => link.starts_with('/') || climbs_out("", link),
            EntryKind::Symlink => !link.starts_with('/') && climbs_out(parent(name), link),
            _ => false,
        };
        if escapes {
            f.error(
                "path-escape",
                format!("{at}: link {name} -> {link} points outside the root"),
            );
        }
    }
    // whiteout: `.wh.NAME` as an empty file; `.wh..wh..opq` only as a plain empty file.
    if let Some(rest) = base.strip_prefix(".wh.") {
        if base == ".wh..wh..opq" {
            if e.kind != EntryKind::File {
                f.error("whiteout", format!("{at}: opaque marker {name} is not a plain file"));
            }
        } else if rest.is_empty() {
            f.error("whiteout", format!("{at}: whiteout {name} names nothing"));
        } else if rest.starts_with(".wh.") {
            f.error("whiteout", format!("{at}: {name} is an unknown .wh..wh. marker"));
        }
        if e.data_len > 0 {
            f.error(
                "whiteout",
                format!("{at}: whiteout {name} has {} bytes of content", e.data_len),
            );
        }
    }
    if e.negative_mtime() {
        f.error("tar-timestamp", format!("{at}: entry {name} has a time before 1970"));
    }
    let mode = e.mode();
    let in_tmp = TMP_DIRS
        .iter()
        .any(|d| name == *d || name.starts_with(&format!("{d}/")));
    let world_writable = mode & 0o002 != 0 && matches!(e.kind, EntryKind::File | EntryKind::Directory);
    let sticky_dir = e.kind == EntryKind::Directory && mode & 0o1000 != 0;
    if world_writable && !in_tmp && !sticky_dir {
        f.warning(
            "tar-permissions",
            format!("{at}: {name} is world-writable (mode {mode:04o})"),
        );
    }
    // setuid/setgid programs belong in the system's binary directories; one
    // anywhere else is what a careless filter or a hostile layer leaves.
    let in_bin = BIN_DIRS.iter().any(|d| name.starts_with(&format!("{d}/")));
    if e.kind == EntryKind::File && mode & 0o6000 != 0 && !in_bin {
        f.warning(
            "tar-permissions",
            format!("{at}: {name} is setuid/setgid (mode {mode:04o}) outside the system binary directories"),
        );
    }
}

/// Where setuid and setgid programs are expected.
const BIN_DIRS: [&str; 9] = [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib64",
    "usr/libexec",
    "usr/local/bin",
    "usr/local/sbin",
];

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// Whether `link`, followed from directory `from`, climbs above the root.
fn climbs_out(from: &str, link: &str) -> bool {
    let mut depth: i64 = from.split('/').filter(|c| !c.is_empty()).count() as i64;
    for c in link.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Maps an error that ended a layer read onto its rule.
fn record_stream_error(f: &mut Findings, at: &str, desc: &Descriptor, e: Error) {
    match &e {
        Error::DigestMismatch { what, .. } if what.contains("diff_id") => f.error("diff-id", format!("{at}: {e}")),
        Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => {
            f.error("layer-digest", format!("{at} ({}): {e}", desc.digest))
        }
        Error::NotFound(_) => f.error("blob-exists", format!("{at} ({}) is missing: {e}", desc.digest)),
        _ => f.error("tar-format", format!("{at} ({}): {e}", desc.digest)),
    }
}

/// Reads one layer once and records what its bytes and entries break.
pub async fn scan_layer(
    source: &dyn Source,
    desc: &Descriptor,
    diff_id: Option<&Digest>,
    at: &str,
    f: &mut Findings,
) -> Result<LayerScan> {
    let raw = match source.open_blob(desc).await {
        Ok(r) => r,
        Err(e) => {
            record_stream_error(f, at, desc, e);
            return Ok(LayerScan::default());
        }
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let head = match buffered.fill_buf().await {
        Ok(h) => h.to_vec(),
        Err(e) => {
            record_stream_error(f, at, desc, Error::stream(&format!("layer {}", desc.digest), e));
            return Ok(LayerScan::default());
        }
    };
    let actual = Compression::sniff(&head);
    if let Some(declared) = Compression::from_media_type(&desc.media_type) {
        if declared != actual {
            f.error(
                "compression-mismatch",
                format!(
                    "{at} ({}): declared {} ({}) but the bytes are {}",
                    desc.digest,
                    declared.as_str(),
                    desc.media_type,
                    actual.as_str()
                ),
            );
        }
    }
    let plain = crate::source::stream::decompressor(buffered, actual);
    let verified: BlobReader = Box::pin(VerifyingReader::new(
        plain,
        diff_id.cloned(),
        None,
        format!("uncompressed {at} (diff_id)"),
    ));
    let what = format!("{at} ({})", desc.digest);
    let outcome = tokio::task::spawn_blocking(move || {
        let mut local = Findings::default();
        let mut scan = LayerScan::default();
        let bridge = crate::interrupt::Bridge::new(verified);
        let mut reader = TarReader::new(bridge, what.clone());
        let result: Result<()> = (|| {
            while let Some(e) = reader.next_entry()? {
                entry_findings(&e, &what, &mut local);
                if e.kind == EntryKind::File && !e.path.rsplit('/').next().unwrap_or("").starts_with(".wh.") {
                    let mut h = HashWriter::new(std::io::sink());
                    let mut limited = Limited {
                        inner: &mut h,
                        left: e.data_len,
                    };
                    reader.copy_data(&mut limited)?;
                    let (_, digest, _) = h.finish();
                    scan.files.insert(e.path.trim_end_matches('/').to_string(), digest);
                } else {
                    reader.skip_data()?;
                }
            }
            reader.drain()
        })();
        (local, scan, result)
    })
    .await
    .map_err(|e| Error::invalid(format!("the scan of {at} failed: {e}")))?;
    let (local, scan, result) = outcome;
    f.results.extend(local.results);
    if let Err(e) = result {
        // A corrupt blob usually breaks decompression before its digest can
        // be checked at the end: read it again to say what is really wrong.
        let e = match e {
            e @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) => e,
            other => crate::source::stream::blob_integrity_error(source, desc)
                .await
                .unwrap_or(other),
        };
        record_stream_error(f, at, desc, e);
    }
    Ok(scan)
}

/// Passes on only the first `left` bytes (the entry's data, not its padding).
struct Limited<'a, W: Write> {
    inner: &'a mut W,
    left: u64,
}

impl<W: Write> Write for Limited<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        if n > 0 {
            self.inner.write_all(&buf[..n])?;
            self.left -= n as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The same path with the same content in more than one layer: a copy the
/// upper layer did not need.
pub fn duplicates_across_layers(scans: &[LayerScan], at: &str, f: &mut Findings) {
    let mut first_seen: HashMap<(&str, &Digest), usize> = HashMap::new();
    for (i, scan) in scans.iter().enumerate() {
        let mut paths: Vec<(&String, &Digest)> = scan.files.iter().collect();
        paths.sort();
        for (path, digest) in paths {
            if let Some(first) = first_seen.get(&(path.as_str(), digest)) {
                f.warning(
                    "duplicate-file",
                    format!("{at}: {path} in layer {i} repeats layer {first} byte for byte"),
                );
            } else {
                first_seen.insert((path.as_str(), digest), i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_climb_out() {
        assert!(!climbs_out("usr/bin", "../lib/x"));
        assert!(!climbs_out("usr/bin", "../../etc"));
        assert!(climbs_out("usr/bin", "../../../etc"));
        assert!(climbs_out("", "../x"));
        assert!(!climbs_out("a", "./b/../c"));
    }
}

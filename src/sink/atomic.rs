//! Nothing half-written: helpers that write files under a temporary name in
//! the destination directory and rename them into place only when complete,
//! plus a cross-process file lock for read-modify-write of shared files
//! (`index.json`, `catalog.json`).

use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::source::BlobReader;

/// Creates a temp file beside `final_path` (same file system, so the rename is atomic).
pub fn temp_beside(final_path: &Path) -> Result<NamedTempFile> {
    let dir = final_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{base}.occy-tmp-"))
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))
}

/// Writes `bytes` to `path` atomically.
pub async fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path)?;
    let mut f = tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?);
    f.write_all(bytes)
        .await
        .map_err(|e| Error::io("write", tmp.path(), e))?;
    f.flush().await.map_err(|e| Error::io("write", tmp.path(), e))?;
    drop(f);
    persist(tmp, path)
}

/// Streams `reader` into `path` atomically; returns the number of bytes written.
/// A read error (a digest mismatch, say) leaves nothing at `path`.
pub async fn stream_file_atomic(path: &Path, mut reader: BlobReader) -> Result<u64> {
    let tmp = temp_beside(path)?;
    let mut f = tokio::io::BufWriter::with_capacity(
        256 * 1024,
        tokio::fs::File::from_std(tmp.reopen().map_err(|e| Error::io("open", tmp.path(), e))?),
    );
    let n = copy_into(&mut reader, &mut f, &path.display().to_string(), path).await?;
    f.flush().await.map_err(|e| Error::io("write", path, e))?;
    drop(f);
    persist(tmp, path)?;
    Ok(n)
}

/// Copies `reader` into `writer`, telling the two sides' failures apart: a
/// read error is the source's (a network error, a digest mismatch: `what`
/// names the blob; retried if transient), a write error is `path`'s (a full
/// disk: never retried, the place named).
pub async fn copy_into<W: tokio::io::AsyncWrite + Unpin>(
    reader: &mut BlobReader,
    writer: &mut W,
    what: &str,
    path: &Path,
) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| Error::stream(what, e))?;
        if n == 0 {
            return Ok(total);
        }
        writer
            .write_all(&buf[..n])
            .await
            .map_err(|e| Error::io("write", path, e))?;
        total += n as u64;
    }
}

/// Renames a finished temp file to its final name.
pub fn persist(tmp: NamedTempFile, path: &Path) -> Result<()> {
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

/// Creates the missing directories above a file destination (`tar://`,
/// `bundle://`), as `mkdir -p` would; returns those it created, outermost
/// first, so a failed first write can remove them again
/// ([`remove_made_dirs`]). `process` and `sync` both go through this.
pub fn make_parent_dirs(destination: &Path) -> Result<Vec<PathBuf>> {
    let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut missing = Vec::new();
    let mut cur = Some(parent);
    while let Some(dir) = cur.filter(|d| !d.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir.to_path_buf());
        cur = dir.parent();
    }
    missing.reverse();
    std::fs::create_dir_all(parent).map_err(|e| {
        Error::invalid(format!(
            "cannot write {}: cannot create its directory {}: {e}",
            destination.display(),
            parent.display()
        ))
    })?;
    Ok(missing)
}

/// Removes directories [`make_parent_dirs`] created, innermost first, each
/// only while it is empty (another writer's files keep it).
pub fn remove_made_dirs(made: &[PathBuf]) {
    for dir in made.iter().rev() {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

/// Creates a directory and its parents.
pub async fn ensure_dir(path: &Path) -> Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| Error::io("create directory", path, e))
}

/// Runs `update` on the content of `path` (None when absent) while holding an
/// exclusive lock on `path.lock`, writing the result atomically. Safe against
/// other threads and other processes doing the same.
pub async fn locked_update<F>(path: &Path, update: F) -> Result<()>
where
    F: FnOnce(Option<Vec<u8>>) -> Result<Vec<u8>> + Send + 'static,
{
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use fs4::fs_std::FileExt;
        let lock_path = {
            let mut s = path.as_os_str().to_owned();
            s.push(".lock");
            PathBuf::from(s)
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        lock.lock_exclusive().map_err(|e| Error::io("lock", &lock_path, e))?;
        let current = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let next = update(current)?;
        let tmp = temp_beside(&path)?;
        std::fs::write(tmp.path(), &next).map_err(|e| Error::io("write", tmp.path(), e))?;
        persist(tmp, &path)?;
        FileExt::unlock(&lock).map_err(|e| Error::io("unlock", &lock_path, e))?;
        Ok(())
    })
    .await
    .map_err(|e| Error::invalid(format!("lock task failed: {e}")))?
}

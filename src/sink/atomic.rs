//! Nothing half-written: helpers that write files under a temporary name in
//! the destination directory and rename them into place only when complete,
//! plus a cross-process file lock for read-modify-write of shared files
//! (`index.json`, `catalog.json`).
//!
//! Every temporary file or directory (`.NAME.occy-tmp-XXXXXX`) is held under
//! an exclusive `flock` by its writer for as long as it lives, so a later
//! run can tell one a crash left (nobody holds it) from one being written
//! (see `sweep.rs`). A destination directory a sink creates is a
//! [`DestDir`]: its writers hold a shared lock on it, and a writer that made
//! it and fails before committing anything removes what it made once no
//! other writer holds it.

use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use tempfile::{NamedTempFile, TempDir};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::source::stream::{read_chunks, Chunks, CHUNK};
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
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{base}.occy-tmp-"))
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, e))?;
    hold(tmp.as_file(), tmp.path());
    Ok(tmp)
}

/// Takes the writer's exclusive lock on a fresh temporary file or directory:
/// it tells a later sweep that the temporary is alive. The lock goes with
/// the descriptor (closed when the temporary is renamed or dropped).
fn hold(file: &std::fs::File, path: &Path) {
    if !matches!(FileExt::try_lock_exclusive(file), Ok(true)) {
        tracing::debug!("cannot lock {}; a sweep may take it for stale", path.display());
    }
}

/// A temporary directory beside a destination (`.BASE.occy-tmp-XXXXXX` in
/// `parent`), held under its writer's lock while it lives; dropping it
/// removes it (read-only directories an extraction made included).
pub struct HeldTempDir {
    dir: Option<TempDir>,
    lock: Option<std::fs::File>,
}

impl Drop for HeldTempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = super::bundle::make_writable_and_remove(&dir.keep());
        }
    }
}

impl HeldTempDir {
    pub fn create(parent: &Path, base: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{base}.occy-tmp-"))
            .tempdir_in(parent)
            .map_err(|e| Error::io("create a temporary directory in", parent, e))?;
        let lock = std::fs::File::open(dir.path()).map_err(|e| Error::io("open", dir.path(), e))?;
        hold(&lock, dir.path());
        Ok(HeldTempDir {
            dir: Some(dir),
            lock: Some(lock),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// Gives the directory up to the caller, who renames or removes it
    /// while holding the returned lock (dropping it releases the lock).
    pub fn keep(mut self) -> (PathBuf, Option<std::fs::File>) {
        (self.dir.take().map(|d| d.keep()).unwrap_or_default(), self.lock.take())
    }
}

/// A destination directory (an OCI layout, a `dir://` root) and what this
/// writer made in it. Writers hold a shared lock on the directory while they
/// use it; [`DestDir::undo`] removes what this writer made — only when it
/// created the directory, committed nothing, no commit of anyone else is
/// there (`committed_marker`) and no other writer holds the directory.
pub struct DestDir {
    root: PathBuf,
    /// A file whose presence says some writer committed an image here
    /// (`index.json`, `catalog.json`): then nothing is removed.
    committed_marker: PathBuf,
    state: std::sync::Mutex<DestState>,
}

#[derive(Default)]
struct DestState {
    /// The shared lock on `root`, once it exists.
    claim: Option<std::fs::File>,
    /// Whether this writer created `root`.
    created_root: bool,
    /// Directories it created, outermost first (`root` included).
    dirs: Vec<PathBuf>,
    /// Files it created (only while `created_root`).
    files: Vec<PathBuf>,
    /// Whether it committed an image (then nothing is ever removed).
    committed: bool,
}

impl DestDir {
    /// A destination at `root`; nothing is created yet. An existing root is
    /// claimed at once, so its blobs cannot be taken away under this writer.
    pub fn new(root: &Path, committed_marker: &str) -> Result<Self> {
        let d = DestDir {
            root: root.to_path_buf(),
            committed_marker: root.join(committed_marker),
            state: std::sync::Mutex::new(DestState::default()),
        };
        d.claim_if_present()?;
        Ok(d)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, DestState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the shared lock on the root if it exists and is not held yet.
    /// Before a look at what the root holds (a blob another writer wrote).
    pub fn claim_if_present(&self) -> Result<()> {
        let mut st = self.lock_state();
        if st.claim.is_none() {
            st.claim = claim(&self.root)?;
        }
        Ok(())
    }

    /// Creates the root and `subdirs` under it where missing, remembering
    /// what it made, and claims the root.
    pub fn ensure(&self, subdirs: &[&str]) -> Result<()> {
        let mut st = self.lock_state();
        for _ in 0..3 {
            if std::fs::symlink_metadata(&self.root).is_err() {
                let made = make_dirs(&self.root)?;
                st.created_root |= !made.is_empty();
                st.dirs.extend(made);
            }
            if st.claim.is_none() {
                st.claim = claim(&self.root)?;
            }
            if st.claim.is_some() {
                break;
            }
        }
        for sub in subdirs {
            let made = make_dirs(&self.root.join(sub))?;
            if st.created_root {
                st.dirs.extend(made);
            }
        }
        Ok(())
    }

    /// Creates `dir` (under the root) and remembers it when the root is ours.
    pub fn ensure_subdir(&self, dir: &Path) -> Result<()> {
        let made = make_dirs(dir)?;
        let mut st = self.lock_state();
        if st.created_root {
            st.dirs.extend(made);
        }
        Ok(())
    }

    /// Whether `path` is missing now (call before writing it, then
    /// [`DestDir::made_file`] once written).
    pub fn is_new(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_err()
    }

    /// Remembers a file this writer created, when the root is ours.
    pub fn made_file(&self, path: PathBuf) {
        let mut st = self.lock_state();
        if st.created_root {
            st.files.push(path);
        }
    }

    /// An image was committed: nothing will be removed.
    pub fn committed(&self) {
        self.lock_state().committed = true;
    }

    /// Removes what a failed first write made (see [`DestDir`]); keeps
    /// everything when that cannot be done safely.
    pub fn undo(&self) {
        let mut st = self.lock_state();
        let claim = st.claim.take();
        if !st.created_root || st.committed || self.committed_marker.exists() {
            return;
        }
        drop(claim);
        // Only alone: another writer holds a shared lock while it works.
        let Ok(lock) = std::fs::File::open(&self.root) else {
            return;
        };
        if !matches!(FileExt::try_lock_exclusive(&lock), Ok(true)) || self.committed_marker.exists() {
            tracing::debug!("{}: another writer is using it; leaving it", self.root.display());
            return;
        }
        for f in st.files.drain(..).rev() {
            let _ = std::fs::remove_file(&f);
        }
        let mut dirs = std::mem::take(&mut st.dirs);
        // Innermost first; a directory that is not empty stays.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
        tracing::debug!("{}: removed what the failed first write made", self.root.display());
    }
}

impl Drop for DestDir {
    /// A writer dropped without committing (a failure, Ctrl-C) takes back
    /// what it made, as [`DestDir::undo`] does.
    fn drop(&mut self) {
        self.undo();
    }
}

/// Opens `root` and takes a shared lock on it; None when it does not exist
/// (or was removed while the lock was awaited).
fn claim(root: &Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let f = match std::fs::File::open(root) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", root, e)),
    };
    FileExt::lock_shared(&f).map_err(|e| Error::io("lock", root, e))?;
    // A writer undoing its first write held the root exclusively and may
    // have removed it meanwhile: the lock is then on a directory that is gone.
    let same = match (f.metadata(), std::fs::metadata(root)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    Ok(same.then_some(f))
}

/// `mkdir -p dir`; returns the directories it created, outermost first.
fn make_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
        if std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    Ok(missing)
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
pub async fn stream_file_atomic(path: &Path, reader: BlobReader) -> Result<u64> {
    stream_chunks_atomic(path, read_chunks(reader, CHUNK)).await
}

/// Writes `chunks` into `path` atomically (see [`write_chunks`]); returns
/// the number of bytes written. A read error leaves nothing at `path`.
pub async fn stream_chunks_atomic(path: &Path, chunks: Chunks) -> Result<u64> {
    let tmp = temp_beside(path)?;
    let n = write_chunks(tmp.as_file(), chunks, &path.display().to_string(), path).await?;
    persist(tmp, path)?;
    Ok(n)
}

/// Writes `chunks` into `file` at its offset, on a blocking thread of its
/// own: each chunk is handed over once and written from the buffer it came
/// in (no copy, one wake-up a chunk at most), with one more chunk waiting,
/// so memory is two chunks whatever the blob's size. Returns the bytes
/// written. The two sides' failures are told apart: a read error is the
/// source's (a network error, a digest mismatch: `what` names the blob;
/// retried if transient), a write error is `path`'s (a full disk: never
/// retried, the place named). On an error the file holds part of the
/// stream: the caller cuts it back or drops it.
pub async fn write_chunks(file: &std::fs::File, mut chunks: Chunks, what: &str, path: &Path) -> Result<u64> {
    use futures_util::StreamExt;
    use std::io::Write;
    let mut out = file.try_clone().map_err(|e| Error::io("write", path, e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk)?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut total = 0u64;
    let mut read_error = None;
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => {
                total += chunk.len() as u64;
                // A closed channel: the writer stopped on an error, told below.
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                read_error = Some(Error::stream(what, e));
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Error::invalid(format!("the writer of {} stopped: {e}", path.display())))?;
    if let Some(e) = read_error {
        return Err(e);
    }
    written.map_err(|e| Error::io("write", path, e))?;
    Ok(total)
}

/// Runs `op` (small writes, a seek, an fsync) on `file` on a blocking
/// thread, so no async worker waits on the disk; an error is `action` on
/// `path`.
pub async fn on_blocking_thread<T, F>(file: &std::fs::File, action: &'static str, path: &Path, op: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut std::fs::File) -> std::io::Result<T> + Send + 'static,
{
    let mut f = file.try_clone().map_err(|e| Error::io(action, path, e))?;
    tokio::task::spawn_blocking(move || op(&mut f))
        .await
        .map_err(|e| Error::invalid(format!("{action} {} stopped: {e}", path.display())))?
        .map_err(|e| Error::io(action, path, e))
}

/// Renames a finished temp file to its final name.
pub fn persist(tmp: NamedTempFile, path: &Path) -> Result<()> {
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path, e.error))?;
    Ok(())
}

/// Directories made above a file destination, outermost first. Dropped,
/// it removes those that are empty (the output was never written into
/// them: a failed or interrupted first write); a written output keeps them.
#[derive(Debug, Default)]
pub struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    /// Removes the directories made, innermost first, each only while it is
    /// empty (another writer's files keep it).
    pub fn remove_empty(&self) {
        for dir in self.0.iter().rev() {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        self.remove_empty();
    }
}

/// Creates the missing directories above a file destination (`tar://`,
/// `bundle://`), as `mkdir -p` would; returns those it created, so a failed
/// first write removes them again. `process` and `sync` both go through this.
pub fn make_parent_dirs(destination: &Path) -> Result<MadeDirs> {
    let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(MadeDirs::default());
    };
    make_dirs(parent)
        .map_err(|e| {
            let why = match &e {
                Error::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            Error::invalid(format!(
                "cannot write {}: cannot create its directory {}: {why}",
                destination.display(),
                parent.display()
            ))
        })
        .map(MadeDirs)
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

//! Safe layer extraction: applies uncompressed layer tars, in order, onto a
//! root directory the way a container runtime does — whiteouts (`.wh.name`)
//! and opaque directories (`.wh..wh..opq`) at every depth, modes, symlinks,
//! hardlinks, ownership when root, xattrs where the file system allows.
//!
//! Layers come from strangers, so nothing may land outside the root:
//! - an entry with a `..` component or an absolute path is refused (error
//!   naming the entry);
//! - parent directories are resolved with every symlink interpreted inside
//!   the root (as Docker's `FollowSymlinkInScope` does), so a symlink planted
//!   by an earlier entry or layer cannot redirect a write outside;
//! - the final component is never followed: an existing symlink there is
//!   replaced, not written through;
//! - hardlink targets must resolve inside the root (error otherwise);
//! - device nodes are created only when running as root, otherwise skipped
//!   with a warning (what rootless runtimes do);
//! - the tar is read by [`crate::filter::tar_stream`], occy's one tar
//!   reader, so a truncated or corrupt header, a sparse file or a malformed
//!   PAX record is refused exactly as `check`, `search` and filters refuse it.
//!
//! The last layer wins for every attribute, as `umoci unpack` and `docker
//! export` show: a directory re-declared by a later layer (`RUN chmod 750
//! dir`) takes that layer's mode (setuid, setgid and sticky bits included),
//! owner, xattrs (the earlier set is cleared first) and mtime. Owners and
//! xattrs are applied as each entry lands; directory modes and mtimes are
//! remembered per path (the latest declaration replaces the earlier one, a
//! whiteout forgets it) and applied by [`Extractor::finish`] after the last
//! layer, deepest directory first, because writing into a directory changes
//! its mtime and a read-only mode would stop later entries landing.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::filter::tar_stream::{EntryKind, TarReader};

/// Most symlinks followed while resolving one path (Linux uses 40).
const MAX_LINKS: usize = 40;

/// Extracts layers onto a root directory, remembering deferred directory
/// metadata.
pub struct Extractor {
    root: PathBuf,
    is_root_user: bool,
    /// The latest declaration of every directory's mode and mtime, applied at
    /// the end (a read-only directory must stay writable while later entries
    /// land in it, and every entry landing in a directory changes its mtime).
    /// Keyed by path, so a later layer's declaration replaces an earlier
    /// one; ordered by components, so a subtree is one contiguous range.
    dirs: BTreeMap<PathBuf, DirMeta>,
}

/// What a directory entry declares that can only be applied at the end.
#[derive(Clone, Copy, Debug)]
struct DirMeta {
    mode: u32,
    mtime: filetime::FileTime,
}

/// Why an entry name is unacceptable.
fn entry_error(layer: &str, name: &str, why: &str) -> Error {
    Error::invalid(format!("layer {layer}: entry {name:?} {why}; refusing to extract it"))
}

/// Splits an archive entry name into clean relative components; refuses
/// `..` and absolute paths.
fn entry_components(layer: &str, name: &Path) -> Result<Vec<std::ffi::OsString>> {
    let shown = name.to_string_lossy();
    let mut out = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(s) => out.push(s.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(entry_error(layer, &shown, "is an absolute path"));
            }
            Component::ParentDir => return Err(entry_error(layer, &shown, "contains '..'")),
        }
    }
    Ok(out)
}

impl Extractor {
    /// An extractor writing into `root` (which must exist).
    pub fn new(root: &Path) -> Self {
        Extractor {
            root: root.to_path_buf(),
            is_root_user: unsafe_is_root(),
            dirs: BTreeMap::new(),
        }
    }

    /// Resolves `components` (parent directories of an entry) inside the
    /// root, following symlinks within the root's scope; returns the real
    /// path, which is always under the root.
    fn resolve_in_scope(&self, components: &[std::ffi::OsString]) -> Result<PathBuf> {
        let mut stack: Vec<std::ffi::OsString> = Vec::new();
        let mut pending: Vec<std::ffi::OsString> = components.iter().rev().cloned().collect();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == OsStr::new("..") {
                stack.pop();
                continue;
            }
            if c == OsStr::new(".") || c.is_empty() {
                continue;
            }
            let candidate: PathBuf = stack.iter().fold(self.root.clone(), |p, s| p.join(s)).join(&c);
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Error::invalid(format!(
                            "too many symlinks resolving {} inside the image",
                            candidate.display()
                        )));
                    }
                    let target = fs::read_link(&candidate).map_err(|e| Error::io("read link", &candidate, e))?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for t in target.components().rev() {
                        match t {
                            Component::Normal(s) => pending.push(s.to_os_string()),
                            Component::ParentDir => pending.push("..".into()),
                            _ => {}
                        }
                    }
                }
                _ => stack.push(c),
            }
        }
        Ok(stack.iter().fold(self.root.clone(), |p, s| p.join(s)))
    }

    /// Makes sure `dir` (already resolved in scope) exists as a directory.
    fn ensure_parent(&self, dir: &Path) -> Result<()> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => {
                fs::remove_file(dir).map_err(|e| Error::io("replace", dir, e))?;
                fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
            }
            Err(_) => fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e)),
        }
    }

    /// Removes whatever is at `path` (never following a symlink) and forgets
    /// the deferred metadata of every directory that was there, so a
    /// directory re-created later does not get a removed one's mode.
    fn remove_entry(&mut self, path: &Path) -> Result<()> {
        let gone: Vec<PathBuf> = self
            .dirs
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.dirs.remove(&p);
        }
        Self::remove_any(path)
    }

    /// Removes whatever is at `path` (never following a symlink).
    fn remove_any(path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| Error::io("remove", path, e)),
            Ok(_) => fs::remove_file(path).map_err(|e| Error::io("remove", path, e)),
            Err(_) => Ok(()),
        }
    }

    /// Applies one uncompressed layer tar. `layer` names it in errors. The
    /// tar is read by occy's one reader ([`TarReader`]), as filters,
    /// `check` and `search` read it.
    pub fn apply_layer<R: Read>(&mut self, layer: &str, reader: R) -> Result<()> {
        let mut archive = TarReader::new(reader, format!("layer {layer}"));
        // Paths this layer wrote: an opaque marker must not delete them.
        let mut written: HashSet<PathBuf> = HashSet::new();
        let mut opaque_dirs: Vec<PathBuf> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(entry) = archive.next_entry()? {
            let shown = entry.written_path();
            if entry.absolute {
                return Err(entry_error(layer, &shown, "is an absolute path"));
            }
            let name = Path::new(OsStr::from_bytes(entry.path_bytes()));
            let comps = entry_components(layer, name)?;
            let Some((last, parents)) = comps.split_last() else {
                continue;
            };
            let parent = self.resolve_in_scope(parents)?;
            let last_bytes = last.as_bytes();

            if last_bytes == b".wh..wh..opq" {
                opaque_dirs.push(parent.clone());
                continue;
            }
            if let Some(hidden) = last_bytes.strip_prefix(b".wh.") {
                if hidden.is_empty() {
                    return Err(entry_error(layer, &shown, "is a whiteout without a name"));
                }
                let victim = parent.join(OsStr::from_bytes(hidden));
                self.remove_entry(&victim)?;
                continue;
            }

            self.ensure_parent(&parent)?;
            let target = parent.join(last);
            let mode = entry.mode();
            let kind = entry.kind;
            // PAX records: xattrs, a precise mtime.
            let xattrs = entry.xattrs();
            let (secs, nanos) = entry.mtime_precise();
            let mtime = filetime::FileTime::from_unix_time(secs, nanos);
            let link = entry
                .link_bytes()
                .filter(|l| !l.is_empty())
                .map(|l| PathBuf::from(OsStr::from_bytes(l)));
            match kind {
                EntryKind::Directory => {
                    match fs::symlink_metadata(&target) {
                        Ok(m) if m.is_dir() => {
                            // Re-declared: this layer's xattrs replace the earlier set.
                            clear_xattrs(&target);
                        }
                        Ok(_) => {
                            self.remove_entry(&target)?;
                            fs::create_dir(&target).map_err(|e| Error::io("create directory", &target, e))?;
                        }
                        Err(_) => fs::create_dir(&target).map_err(|e| Error::io("create directory", &target, e))?,
                    }
                    self.dirs.insert(target.clone(), DirMeta { mode, mtime });
                }
                EntryKind::File => {
                    self.remove_entry(&target)?;
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)
                        .map_err(|e| Error::io("create", &target, e))?;
                    loop {
                        let n = archive.read_data(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        f.write_all(&buf[..n]).map_err(|e| Error::io("write", &target, e))?;
                    }
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| Error::io("chmod", &target, e))?;
                }
                EntryKind::Symlink => {
                    let link = link.ok_or_else(|| entry_error(layer, &shown, "is a symlink without a target"))?;
                    self.remove_entry(&target)?;
                    symlink(&link, &target).map_err(|e| Error::io("create symlink", &target, e))?;
                }
                EntryKind::HardLink => {
                    let link = link.ok_or_else(|| entry_error(layer, &shown, "is a hardlink without a target"))?;
                    let link_comps = entry_components(layer, &link).map_err(|_| {
                        entry_error(layer, &shown, &format!("is a hardlink to {link:?}, outside the image"))
                    })?;
                    let Some((link_last, link_parents)) = link_comps.split_last() else {
                        return Err(entry_error(layer, &shown, "is a hardlink to the root"));
                    };
                    let source = self.resolve_in_scope(link_parents)?.join(link_last);
                    if !source.starts_with(&self.root) {
                        return Err(entry_error(layer, &shown, "is a hardlink outside the image"));
                    }
                    if fs::symlink_metadata(&source).is_err() {
                        return Err(entry_error(
                            layer,
                            &shown,
                            &format!("is a hardlink to {link:?}, which does not exist"),
                        ));
                    }
                    if source != target {
                        self.remove_entry(&target)?;
                        fs::hard_link(&source, &target).map_err(|e| Error::io("create hardlink", &target, e))?;
                    }
                    // A hardlink shares its source's inode: owner, mode,
                    // xattrs and mtime are the source entry's (as umoci
                    // keeps them); a chown here would clear a setuid bit
                    // the source set.
                    written.insert(target);
                    continue;
                }
                EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                    if kind != EntryKind::Fifo && !self.is_root_user {
                        warn!("layer {layer}: skipping device node {shown} (creating devices needs root)");
                        continue;
                    }
                    self.remove_entry(&target)?;
                    let (major, minor) = entry.device();
                    let dev = libc::makedev(major, minor);
                    let type_bits = match kind {
                        EntryKind::CharDevice => libc::S_IFCHR,
                        EntryKind::BlockDevice => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                    mknod(&target, type_bits | mode, dev)?;
                }
                EntryKind::Other(flag) => {
                    debug!("layer {layer}: skipping entry {shown} of type {:?}", char::from(flag));
                    continue;
                }
            }
            if self.is_root_user {
                let uid = u32::try_from(entry.uid()).unwrap_or(u32::MAX);
                let gid = u32::try_from(entry.gid()).unwrap_or(u32::MAX);
                if let Err(e) = std::os::unix::fs::lchown(&target, Some(uid), Some(gid)) {
                    debug!("cannot chown {}: {e}", target.display());
                }
                if kind == EntryKind::File && mode & 0o6000 != 0 {
                    // chown clears setuid/setgid: apply the mode again.
                    let _ = fs::set_permissions(&target, fs::Permissions::from_mode(mode));
                }
            }
            for (attr, value) in &xattrs {
                set_xattr(&target, attr, value);
            }
            // A directory's mtime waits for `finish`.
            if kind != EntryKind::Directory {
                let _ = filetime::set_symlink_file_times(&target, mtime, mtime);
            }
            written.insert(target);
        }
        for dir in opaque_dirs {
            if let Ok(children) = fs::read_dir(&dir) {
                for child in children.flatten() {
                    let p = child.path();
                    if !written.iter().any(|w| w == &p || w.starts_with(&p)) {
                        self.remove_entry(&p)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies every directory's last declared mode and mtime. Call once
    /// after the last layer. Deepest directories first: a parent made
    /// read-only or unsearchable last cannot block its children's updates,
    /// and setting a child's mtime does not touch its parent's.
    pub fn finish(self) -> Result<()> {
        let mut dirs: Vec<(PathBuf, DirMeta)> = self.dirs.into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (dir, meta) in dirs {
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&dir, fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| Error::io("chmod", &dir, e))?;
                filetime::set_symlink_file_times(&dir, meta.mtime, meta.mtime)
                    .map_err(|e| Error::io("set the modification time of", &dir, e))?;
            }
        }
        Ok(())
    }
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn c_path(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", path.display())))
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<()> {
    let c = c_path(path)?;
    // SAFETY: c is a valid NUL-terminated path; mknod does not retain it.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    if rc != 0 {
        return Err(Error::io("create device node", path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes every xattr of `path` that can be removed (never following a
/// symlink); what the file system refuses (e.g. `security.selinux` set by
/// policy) stays, as with umoci.
fn clear_xattrs(path: &Path) {
    let Ok(p) = c_path(path) else {
        return;
    };
    // SAFETY: p is a valid NUL-terminated path; a null buffer asks for the size.
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size <= 0 {
        return;
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: names is a writable buffer of the length passed.
    let got = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if got <= 0 {
        return;
    }
    names.truncate(got as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(n) = std::ffi::CString::new(name) else {
            continue;
        };
        // SAFETY: both strings are valid and NUL-terminated.
        if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } != 0 {
            debug!(
                "cannot remove xattr {} from {}: {}",
                String::from_utf8_lossy(name),
                path.display(),
                io::Error::last_os_error()
            );
        }
    }
}

fn set_xattr(path: &Path, name: &[u8], value: &[u8]) {
    let (Ok(p), Ok(n)) = (c_path(path), std::ffi::CString::new(name)) else {
        return;
    };
    // SAFETY: both strings are valid and NUL-terminated; value is a valid slice.
    let rc = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc != 0 {
        debug!(
            "cannot set xattr {} on {}: {}",
            String::from_utf8_lossy(name),
            path.display(),
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_are_extracted_as_written() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..5].copy_from_slice(b"caf\xe9x");
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        let layer = b.into_inner().unwrap();
        let t = tempfile::tempdir().unwrap();
        let mut ex = Extractor::new(t.path());
        ex.apply_layer("t", &layer[..]).unwrap();
        ex.finish().unwrap();
        let want = t.path().join(OsStr::from_bytes(b"caf\xe9x"));
        assert_eq!(fs::read(want).unwrap(), b"hi");
    }
}

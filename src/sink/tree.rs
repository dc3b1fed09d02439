//! The check of an unpacked image (a `bundle://` rootfs, an expanded
//! `dir://` tree): the merged view of the image's layers — what a runtime
//! sees after applying them in order, whiteouts and opaque directories at
//! every depth, the last layer winning for every attribute — is compared,
//! mtree-style, with the tree on disk. Each path is compared by type, mode,
//! owner (when extraction could set it: running as root), size and link
//! target, and in `full` mode by the sha256 of every regular file. Modification
//! times are not compared. Device nodes are compared by type only (their mode
//! went through the umask) and only where extraction could create them.
//!
//! The view mirrors [`crate::sink::extract`]: parents are resolved through
//! the view's own symlinks inside the root, a hardlink is a copy of what it
//! names, and an opaque marker removes what lower layers put in its
//! directory but not what its own layer wrote there. A bundle keeps the view
//! computed from its layers at write time ([`VIEW_FILE`]), since its layers
//! are not kept; an expanded directory keeps its layers, so its view is
//! computed from them when checked.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The file in a bundle holding the view of its rootfs (beside `config.json`).
pub const VIEW_FILE: &str = "occy-rootfs.mtree.json";

/// Most symlinks followed while resolving one path (as extraction does).
const MAX_LINKS: usize = 40;

/// Most differences listed by name; the rest are counted.
const MAX_LISTED: usize = 20;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Char => "a character device",
            Kind::Block => "a block device",
            Kind::Fifo => "a fifo",
        }
    }
}

/// One path of the merged view. Attributes left `None` are not compared
/// (a directory extraction made implicitly, a device's mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub uid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
}

impl Entry {
    fn implicit_dir() -> Self {
        Entry {
            kind: Kind::Dir,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            link: None,
            sha256: None,
        }
    }
}

/// The merged view of an image's layers: relative path (components joined
/// by `/`, as bytes) → entry.
#[derive(Debug, Clone, Default)]
pub struct MergedView {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Whether ownership is part of the view (extraction sets it as root).
    owners: bool,
    /// Whether device nodes are (extraction creates them as root).
    devices: bool,
}

/// The view as stored in a bundle.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    owners: bool,
    devices: bool,
    /// Path (UTF-8, or `\0hex:` and the bytes in hex) → entry.
    entries: BTreeMap<String, Entry>,
}

fn path_key(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!("\0hex:{}", hex::encode(bytes)),
    }
}

fn key_path(s: &str) -> Result<Vec<u8>> {
    match s.strip_prefix("\0hex:") {
        Some(h) => hex::decode(h).map_err(|e| Error::invalid(format!("malformed path {s:?} in {VIEW_FILE}: {e}"))),
        None => Ok(s.as_bytes().to_vec()),
    }
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = parent.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// Whether `path` is `dir` or below it.
fn within(path: &[u8], dir: &[u8]) -> bool {
    path == dir || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/'))
}

/// Whether `path` is directly inside `dir` (the root when `dir` is empty).
fn child_of(path: &[u8], dir: &[u8]) -> bool {
    let rest = if dir.is_empty() {
        path
    } else if within(path, dir) && path.len() > dir.len() {
        &path[dir.len() + 1..]
    } else {
        return false;
    };
    !rest.is_empty() && !rest.contains(&b'/')
}

fn is_root_user() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl MergedView {
    /// An empty view, with ownership and devices as extraction by this
    /// process would apply them.
    pub fn new() -> Self {
        let root = is_root_user();
        MergedView {
            entries: BTreeMap::new(),
            owners: root,
            devices: root,
        }
    }

    /// How many paths the view holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the view holds no path.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The view of uncompressed layer tars applied in order.
    pub fn of_layers<R: Read>(layers: impl IntoIterator<Item = (String, R)>) -> Result<Self> {
        let mut view = MergedView::new();
        for (name, reader) in layers {
            view.apply_layer(&name, reader)?;
        }
        Ok(view)
    }

    /// Resolves parent components inside the root through the view's
    /// symlinks, as extraction resolves them on disk.
    fn resolve(&self, components: &[Vec<u8>]) -> Result<Vec<u8>> {
        let mut stack: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Vec<u8>> = components.iter().rev().cloned().collect();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == b".." {
                stack.pop();
                continue;
            }
            if c == b"." || c.is_empty() {
                continue;
            }
            let mut candidate = stack.concat_path();
            candidate = join(&candidate, &c);
            match self.entries.get(&candidate) {
                Some(Entry {
                    kind: Kind::Symlink,
                    link: Some(target),
                    ..
                }) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Error::invalid(format!(
                            "too many symlinks resolving {} inside the image",
                            shown(&candidate)
                        )));
                    }
                    let target = Path::new(target);
                    if target.is_absolute() {
                        stack.clear();
                    }
                    for t in target.components().rev() {
                        match t {
                            Component::Normal(s) => pending.push(s.as_bytes().to_vec()),
                            Component::ParentDir => pending.push(b"..".to_vec()),
                            _ => {}
                        }
                    }
                }
                _ => stack.push(c),
            }
        }
        Ok(stack.concat_path())
    }

    /// Removes `path` and everything below it.
    fn remove(&mut self, path: &[u8]) {
        let doomed: Vec<Vec<u8>> = self
            .entries
            .range(path.to_vec()..)
            .take_while(|(k, _)| k.starts_with(path))
            .filter(|(k, _)| within(k, path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// Makes `dir` and its ancestors directories (implicit where missing).
    fn ensure_dir(&mut self, dir: &[u8]) {
        if dir.is_empty() {
            return;
        }
        let mut at = Vec::new();
        for part in dir.split(|b| *b == b'/') {
            at = join(&at, part);
            match self.entries.get(&at) {
                Some(e) if e.kind == Kind::Dir => {}
                Some(_) => {
                    self.remove(&at);
                    self.entries.insert(at.clone(), Entry::implicit_dir());
                }
                None => {
                    self.entries.insert(at.clone(), Entry::implicit_dir());
                }
            }
        }
    }

    /// Applies one uncompressed layer tar. `layer` names it in errors.
    pub fn apply_layer<R: Read>(&mut self, layer: &str, reader: R) -> Result<()> {
        let bad = |e: io::Error| Error::invalid(format!("layer {layer} is not a readable tar: {e}"));
        let refuse = |name: &str, why: &str| Error::invalid(format!("layer {layer}: entry {name:?} {why}"));
        let mut archive = tar::Archive::new(reader);
        let mut written: HashSet<Vec<u8>> = HashSet::new();
        let mut opaque: Vec<Vec<u8>> = Vec::new();
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = entry.path().map_err(bad)?.into_owned();
            let name_shown = name.to_string_lossy().into_owned();
            let mut comps: Vec<Vec<u8>> = Vec::new();
            for c in name.components() {
                match c {
                    Component::Normal(s) => comps.push(s.as_bytes().to_vec()),
                    Component::CurDir => {}
                    Component::ParentDir => return Err(refuse(&name_shown, "contains '..'")),
                    Component::RootDir | Component::Prefix(_) => {
                        return Err(refuse(&name_shown, "is an absolute path"))
                    }
                }
            }
            let Some((last, parents)) = comps.split_last() else {
                continue;
            };
            let parent = self.resolve(parents)?;
            if last.as_slice() == b".wh..wh..opq" {
                opaque.push(parent);
                continue;
            }
            if let Some(hidden) = last.strip_prefix(b".wh.") {
                if hidden.is_empty() {
                    return Err(refuse(&name_shown, "is a whiteout without a name"));
                }
                self.remove(&join(&parent, hidden));
                continue;
            }
            let header = entry.header().clone();
            let kind = header.entry_type();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let target = join(&parent, last);
            let new = match kind {
                tar::EntryType::Directory => {
                    self.ensure_dir(&parent);
                    if self.entries.get(&target).is_some_and(|e| e.kind != Kind::Dir) {
                        self.remove(&target);
                    }
                    Some(Entry {
                        mode: Some(mode),
                        ..Entry::implicit_dir()
                    })
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    self.ensure_dir(&parent);
                    let mut h = Sha256::new();
                    let size = io::copy(&mut entry, &mut h).map_err(bad)?;
                    Some(Entry {
                        kind: Kind::File,
                        mode: Some(mode),
                        uid: None,
                        gid: None,
                        size: Some(size),
                        link: None,
                        sha256: Some(hex::encode(h.finalize())),
                    })
                }
                tar::EntryType::Symlink => {
                    self.ensure_dir(&parent);
                    let link = entry
                        .link_name()
                        .map_err(bad)?
                        .ok_or_else(|| refuse(&name_shown, "is a symlink without a target"))?;
                    Some(Entry {
                        kind: Kind::Symlink,
                        link: Some(link.to_string_lossy().into_owned()),
                        ..Entry::implicit_dir()
                    })
                }
                tar::EntryType::Link => {
                    self.ensure_dir(&parent);
                    let link = entry
                        .link_name()
                        .map_err(bad)?
                        .ok_or_else(|| refuse(&name_shown, "is a hardlink without a target"))?
                        .into_owned();
                    let mut lc: Vec<Vec<u8>> = Vec::new();
                    for c in link.components() {
                        match c {
                            Component::Normal(s) => lc.push(s.as_bytes().to_vec()),
                            Component::CurDir => {}
                            _ => return Err(refuse(&name_shown, "is a hardlink outside the image")),
                        }
                    }
                    let Some((link_last, link_parents)) = lc.split_last() else {
                        return Err(refuse(&name_shown, "is a hardlink to the root"));
                    };
                    let source = join(&self.resolve(link_parents)?, link_last);
                    let Some(linked) = self.entries.get(&source).cloned() else {
                        return Err(refuse(
                            &name_shown,
                            &format!("is a hardlink to {}, which does not exist", link.display()),
                        ));
                    };
                    (source != target).then_some(linked)
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    if kind != tar::EntryType::Fifo && !self.devices {
                        continue;
                    }
                    self.ensure_dir(&parent);
                    let kind = match kind {
                        tar::EntryType::Char => Kind::Char,
                        tar::EntryType::Block => Kind::Block,
                        _ => Kind::Fifo,
                    };
                    Some(Entry {
                        kind,
                        ..Entry::implicit_dir()
                    })
                }
                _ => continue,
            };
            if let Some(new) = new {
                // A directory keeps its contents and takes this (later)
                // declaration's attributes; anything else replaces what was there.
                if new.kind != Kind::Dir {
                    self.remove(&target);
                }
                self.entries.insert(target.clone(), new);
            }
            // A hardlink shares its source's inode: its owner and mode are
            // the source's (extraction does not chown it).
            if self.owners && kind != tar::EntryType::Link {
                if let Some(e) = self.entries.get_mut(&target) {
                    (e.uid, e.gid) = (Some(header.uid().unwrap_or(0)), Some(header.gid().unwrap_or(0)));
                }
            }
            written.insert(target);
        }
        for dir in opaque {
            let children: Vec<Vec<u8>> = self.entries.keys().filter(|k| child_of(k, &dir)).cloned().collect();
            for child in children {
                if !written.iter().any(|w| within(w, &child)) {
                    self.remove(&child);
                }
            }
        }
        Ok(())
    }

    /// Writes the view to `path` (JSON).
    pub fn save(&self, path: &Path) -> Result<()> {
        let stored = Stored {
            version: 1,
            owners: self.owners,
            devices: self.devices,
            entries: self.entries.iter().map(|(k, v)| (path_key(k), v.clone())).collect(),
        };
        let bytes = serde_json::to_vec(&stored)?;
        fs::write(path, bytes).map_err(|e| Error::io("write", path, e))
    }

    /// Reads a view written by [`Self::save`]; None when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path, e)),
        };
        let stored: Stored = serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(format!("{} is not a view occy wrote: {e}", path.display())))?;
        if stored.version != 1 {
            return Err(Error::invalid(format!(
                "{} has version {}, this occy reads version 1",
                path.display(),
                stored.version
            )));
        }
        let mut entries = BTreeMap::new();
        for (k, v) in stored.entries {
            entries.insert(key_path(&k)?, v);
        }
        Ok(Some(MergedView {
            entries,
            owners: stored.owners,
            devices: stored.devices,
        }))
    }

    /// Compares the view with the tree at `root`; returns one message per
    /// differing path (the first [`MAX_LISTED`], then a count). `full`
    /// also hashes every regular file.
    pub fn compare(&self, root: &Path, full: bool) -> Result<Vec<String>> {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io("read", root, e))?;
        if !meta.is_dir() {
            return Err(Error::invalid(format!("{} is not a directory", root.display())));
        }
        let on_disk = walk(root)?;
        // Ownership is compared when both the writer and this check could
        // see it set: extraction as root, checked as root.
        let owners = self.owners && is_root_user();
        let mut diffs: Vec<String> = Vec::new();
        for (path, want) in &self.entries {
            let p = shown(path);
            let Some(got) = on_disk.get(path) else {
                diffs.push(format!("/{p}: missing (the image has {} there)", want.kind.as_str()));
                continue;
            };
            let disk_path = root.join(OsStr::from_bytes(path));
            let kind = kind_of(got);
            if kind != Some(want.kind) {
                diffs.push(format!(
                    "/{p}: is {} on disk, the image has {}",
                    kind.map(Kind::as_str).unwrap_or("a socket or unknown file"),
                    want.kind.as_str()
                ));
                continue;
            }
            if let Some(mode) = want.mode {
                let have = got.mode() & 0o7777;
                if have != mode && want.kind != Kind::Symlink {
                    diffs.push(format!("/{p}: mode {have:04o} on disk, {mode:04o} in the image"));
                }
            }
            if owners {
                if let (Some(uid), Some(gid)) = (want.uid, want.gid) {
                    if (u64::from(got.uid()), u64::from(got.gid())) != (uid, gid) {
                        diffs.push(format!(
                            "/{p}: owner {}:{} on disk, {uid}:{gid} in the image",
                            got.uid(),
                            got.gid()
                        ));
                    }
                }
            }
            if let (Some(size), Kind::File) = (want.size, want.kind) {
                if got.len() != size {
                    diffs.push(format!("/{p}: {} bytes on disk, {size} in the image", got.len()));
                    continue;
                }
            }
            if let Some(link) = &want.link {
                let have = fs::read_link(&disk_path).map_err(|e| Error::io("read link", &disk_path, e))?;
                if have.as_os_str().as_bytes() != link.as_bytes() {
                    diffs.push(format!(
                        "/{p}: links to {} on disk, to {link} in the image",
                        have.display()
                    ));
                }
            }
            if let (true, Some(sha)) = (full, &want.sha256) {
                let have = sha256_file(&disk_path)?;
                if &have != sha {
                    diffs.push(format!(
                        "/{p}: content differs from the image (sha256 {have} on disk, {sha} in the image)"
                    ));
                }
            }
        }
        for path in on_disk.keys() {
            if !self.entries.contains_key(path) {
                diffs.push(format!("/{}: on disk but not in the image", shown(path)));
            }
        }
        let total = diffs.len();
        if total > MAX_LISTED {
            diffs.truncate(MAX_LISTED);
            diffs.push(format!("… and {} more differences", total - MAX_LISTED));
        }
        Ok(diffs)
    }
}

/// A helper for joining a component stack into a path key.
trait ConcatPath {
    fn concat_path(&self) -> Vec<u8>;
}

impl ConcatPath for Vec<Vec<u8>> {
    fn concat_path(&self) -> Vec<u8> {
        self.join(&b'/')
    }
}

fn kind_of(meta: &fs::Metadata) -> Option<Kind> {
    let t = meta.file_type();
    if t.is_file() {
        Some(Kind::File)
    } else if t.is_dir() {
        Some(Kind::Dir)
    } else if t.is_symlink() {
        Some(Kind::Symlink)
    } else if t.is_char_device() {
        Some(Kind::Char)
    } else if t.is_block_device() {
        Some(Kind::Block)
    } else if t.is_fifo() {
        Some(Kind::Fifo)
    } else {
        None
    }
}

/// Every path under `root` (not followed through symlinks), by relative path.
fn walk(root: &Path) -> Result<BTreeMap<Vec<u8>, fs::Metadata>> {
    let mut out = BTreeMap::new();
    let mut pending: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(OsStr::from_bytes(&rel));
        let rd = fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let path = join(&rel, entry.file_name().as_bytes());
            let meta = fs::symlink_metadata(entry.path()).map_err(|e| Error::io("read", entry.path(), e))?;
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.insert(path, meta);
        }
    }
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| Error::io("read", path, e))?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, u32, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};

    fn view_of(layers: &[Vec<u8>]) -> MergedView {
        MergedView::of_layers(layers.iter().enumerate().map(|(i, l)| (format!("l{i}"), &l[..]))).unwrap()
    }

    #[test]
    fn whiteouts_opaque_dirs_links_and_the_last_declaration_win() {
        let l0 = layer(&[
            ("etc/", D, 0o755, "", b""),
            ("etc/a", F, 0o644, "", b"a"),
            ("etc/b", F, 0o644, "", b"b"),
            ("data/", D, 0o755, "", b""),
            ("data/old", F, 0o600, "", b"old"),
            ("lib", S, 0o777, "usr/lib", b""),
            ("usr/lib/", D, 0o755, "", b""),
        ]);
        let l1 = layer(&[
            ("etc/", D, 0o750, "", b""),
            ("etc/.wh.a", F, 0o644, "", b""),
            ("data/.wh..wh..opq", F, 0o644, "", b""),
            ("data/new", F, 0o644, "", b"new"),
            ("lib/x", F, 0o755, "", b"x"),
            ("etc/hard", L, 0o644, "etc/b", b""),
        ]);
        let v = view_of(&[l0, l1]);
        let keys: Vec<String> = v.entries.keys().map(|k| shown(k)).collect();
        assert_eq!(
            keys,
            [
                "data",
                "data/new",
                "etc",
                "etc/b",
                "etc/hard",
                "lib",
                "usr",
                "usr/lib",
                "usr/lib/x"
            ]
        );
        assert_eq!(v.entries[&b"etc".to_vec()].mode, Some(0o750), "the last layer wins");
        assert_eq!(
            v.entries[&b"etc/hard".to_vec()].sha256,
            v.entries[&b"etc/b".to_vec()].sha256
        );
        assert_eq!(v.entries[&b"usr".to_vec()].mode, None, "implicit");
    }

    #[test]
    fn a_tree_differing_from_the_view_is_named_by_path() {
        let l0 = layer(&[
            ("bin/", D, 0o755, "", b""),
            ("bin/sh", F, 0o755, "", b"#!shell"),
            ("etc/", D, 0o755, "", b""),
            ("etc/motd", F, 0o644, "", b"hello"),
            ("etc/link", S, 0o777, "motd", b""),
        ]);
        let view = view_of(std::slice::from_ref(&l0));
        let t = tempfile::tempdir().unwrap();
        let mut ex = crate::sink::extract::Extractor::new(t.path());
        ex.apply_layer("l0", &l0[..]).unwrap();
        ex.finish().unwrap();
        assert_eq!(view.compare(t.path(), true).unwrap(), Vec::<String>::new());

        // Saved and loaded, the view is the same.
        let file = t.path().with_extension("view.json");
        view.save(&file).unwrap();
        let loaded = MergedView::load(&file).unwrap().unwrap();
        assert_eq!(loaded.entries, view.entries);
        fs::remove_file(&file).unwrap();

        // Same size, other bytes: only the full check sees it.
        fs::write(t.path().join("etc/motd"), b"HELLO").unwrap();
        assert!(view.compare(t.path(), false).unwrap().is_empty());
        let d = view.compare(t.path(), true).unwrap();
        assert!(d.len() == 1 && d[0].starts_with("/etc/motd: content differs"), "{d:?}");
        fs::remove_file(t.path().join("bin/sh")).unwrap();
        fs::set_permissions(t.path().join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(t.path().join("extra"), b"").unwrap();
        fs::remove_file(t.path().join("etc/link")).unwrap();
        std::os::unix::fs::symlink("elsewhere", t.path().join("etc/link")).unwrap();
        let d = view.compare(t.path(), false).unwrap();
        assert!(
            d.contains(&"/bin/sh: missing (the image has a regular file there)".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"/etc: mode 0700 on disk, 0755 in the image".to_string()),
            "{d:?}"
        );
        assert!(d.contains(&"/extra: on disk but not in the image".to_string()), "{d:?}");
        assert!(
            d.contains(&"/etc/link: links to elsewhere on disk, to motd in the image".to_string()),
            "{d:?}"
        );
    }

    use std::os::unix::fs::PermissionsExt;
}

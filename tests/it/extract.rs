//! Extraction into `bundle://` and `dir://?expand=true`: whiteouts at every
//! depth, opaque directories, modes, links — compared with `umoci unpack` —
//! and hostile layers that try to write outside the target. Images built by
//! the real Docker Engine (`docker build`, `docker save`) are extracted by
//! occy and by `umoci unpack` and compared entry by entry, and checked
//! against `docker export` of a container made from them.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use sha2::{Digest as _, Sha256};

fn occy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_occy"))
        .args(args)
        .output()
        .expect("run occy")
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A raw tar entry; names are written into the header unchecked, so hostile
/// names (`..`, absolute) can be built.
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn raw_tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, size, mode, kind, link) = match e {
            E::File(n, d, m) => (*n, d.len(), *m, tar::EntryType::Regular, ""),
            E::Dir(n, m) => (*n, 0, *m, tar::EntryType::Directory, ""),
            E::Symlink(n, l) => (*n, 0, 0o777, tar::EntryType::Symlink, *l),
            E::Hardlink(n, l) => (*n, 0, 0o644, tar::EntryType::Link, *l),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_size(size as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if let E::File(_, d, _) = e {
            out.extend_from_slice(d);
            out.extend(std::iter::repeat_n(0u8, (512 - d.len() % 512) % 512));
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn blob(dir: &Path, b: &[u8]) -> String {
    let d = sha(b);
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), b).unwrap();
    d
}

/// An OCI layout (tag `t`) with these layers (plain tar, gzip-compressed).
fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(sha(l));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(l).unwrap();
        let gz = gz.finish().unwrap();
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(dir, &gz), "size": gz.len()}));
    }
    let cfg = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(dir, &cfg), "size": cfg.len()},
        "layers": descs})).unwrap();
    let md = blob(dir, &m);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(),
         "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
        .unwrap(),
    )
    .unwrap();
    format!("oci://{}:t", dir.display())
}

fn good_layers() -> Vec<Vec<u8>> {
    vec![
        raw_tar(&[
            E::Dir("a/", 0o755),
            E::Dir("a/b/", 0o755),
            E::File("a/b/c", b"deleted later", 0o644),
            E::File("a/b/keep", b"kept", 0o644),
            E::Dir("opq/", 0o755),
            E::File("opq/old", b"hidden by opaque", 0o644),
            E::File("bin/run", b"#!/bin/sh\n", 0o755),
            E::Symlink("bin/link", "run"),
            E::Hardlink("bin/hard", "bin/run"),
            E::File("gone", b"x", 0o600),
        ]),
        raw_tar(&[
            E::File("a/b/.wh.c", b"", 0o644),
            E::File(".wh.gone", b"", 0o644),
            E::File("opq/.wh..wh..opq", b"", 0o644),
            E::File("opq/new", b"from the upper layer", 0o644),
        ]),
    ]
}

/// (relative path, kind, mode, content or link target) of every entry.
fn listing(root: &Path) -> Vec<(String, String, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.push((
                    rel,
                    "link".into(),
                    0,
                    std::fs::read_link(&p).unwrap().to_string_lossy().into_owned(),
                ));
            } else if m.is_dir() {
                out.push((rel, "dir".into(), mode, String::new()));
                stack.push(p);
            } else {
                out.push((
                    rel,
                    "file".into(),
                    mode,
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn whiteouts_opaque_dirs_modes_and_links_match_umoci() {
    let t = tempfile::tempdir().unwrap();
    let src = layout(&t.path().join("img"), &good_layers());
    let bundle = t.path().join("bundle");
    let out = occy(&["process", &src, &format!("bundle://{}", bundle.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = bundle.join("rootfs");
    assert!(!root.join("a/b/c").exists(), "nested whiteout applied");
    assert_eq!(std::fs::read(root.join("a/b/keep")).unwrap(), b"kept");
    assert!(!root.join("gone").exists());
    assert!(!root.join("opq/old").exists(), "opaque dir hides the lower layer");
    assert_eq!(std::fs::read(root.join("opq/new")).unwrap(), b"from the upper layer");
    assert_eq!(
        std::fs::metadata(root.join("bin/run")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(std::fs::read_link(root.join("bin/link")).unwrap(), PathBuf::from("run"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("bin/hard")).unwrap().ino(),
        std::fs::metadata(root.join("bin/run")).unwrap().ino()
    );

    // The same through dir://?expand=true.
    let d = t.path().join("dir");
    let out = occy(&["process", &src, &format!("dir://{}?expand=true", d.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&d.join("manifest")), listing(&root));

    // umoci unpacks the same image to the same tree.
    if Command::new("umoci").arg("--version").output().is_ok() {
        let u = t.path().join("umoci");
        let st = Command::new("umoci")
            .args([
                "unpack",
                "--image",
                &format!("{}:t", t.path().join("img").display()),
                &u.display().to_string(),
            ])
            .output()
            .unwrap();
        assert!(st.status.success(), "umoci: {}", String::from_utf8_lossy(&st.stderr));
        assert_eq!(listing(&u.join("rootfs")), listing(&root));
    } else {
        panic!("umoci is not installed: apt-get install umoci (test.sh does it)");
    }
}

/// Runs a hostile image into a bundle; returns (exit ok?, stderr).
fn hostile(name: &str, layers: Vec<Vec<u8>>) -> (bool, String, tempfile::TempDir) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("outside")).unwrap();
    let src = layout(&t.path().join(name), &layers);
    let bundle = t.path().join("bundle");
    let out = occy(&["process", &src, &format!("bundle://{}", bundle.display())]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let outside: Vec<_> = std::fs::read_dir(t.path().join("outside")).unwrap().collect();
    assert!(outside.is_empty(), "{name}: something was written outside the target");
    for f in ["evil", "passwd", "escaped"] {
        assert!(!t.path().join(f).exists(), "{name}: {f} written beside the target");
    }
    (out.status.success(), stderr, t)
}

#[test]
fn hostile_layers_never_write_outside_the_target() {
    // 1. A `..` entry.
    let (ok, err, _t) = hostile("dotdot", vec![raw_tar(&[E::File("../escaped", b"x", 0o644)])]);
    assert!(!ok && err.contains("../escaped") && err.contains(".."), "{err}");
    // 2. An absolute path.
    let (ok, err, _t) = hostile("abs", vec![raw_tar(&[E::File("/evil", b"x", 0o644)])]);
    assert!(!ok && err.contains("/evil"), "{err}");
    // 3. A symlink to outside, then a write through it in the same layer.
    let (ok, err, t) = hostile(
        "symlink-same-layer",
        vec![raw_tar(&[
            E::Symlink("up", "../../outside"),
            E::File("up/evil", b"x", 0o644),
        ])],
    );
    assert!(ok, "resolved inside the root: {err}");
    assert!(t.path().join("bundle/rootfs/outside/evil").exists() || t.path().join("bundle/rootfs/evil").exists());
    // 4. A symlink planted by a lower layer, written through by an upper one.
    let (ok, err, _t) = hostile(
        "symlink-across-layers",
        vec![
            raw_tar(&[E::Symlink("etc", "/../../outside")]),
            raw_tar(&[E::File("etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)]),
        ],
    );
    assert!(ok, "{err}");
    // 5. A hardlink to a file outside the root.
    let (ok, err, _t) = hostile(
        "hardlink-out",
        vec![raw_tar(&[E::Hardlink("pw", "../../../etc/passwd")])],
    );
    assert!(!ok && err.contains("pw"), "{err}");
    // 6. A hardlink to an absolute path.
    let (ok, err, _t) = hostile("hardlink-abs", vec![raw_tar(&[E::Hardlink("pw", "/etc/passwd")])]);
    assert!(!ok && err.contains("pw"), "{err}");
    // 7. A symlink as the final component is replaced, not written through.
    let (ok, err, t) = hostile(
        "final-symlink",
        vec![
            raw_tar(&[E::Symlink("f", "/../outside/target")]),
            raw_tar(&[E::File("f", b"replaced", 0o644)]),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(t.path().join("bundle/rootfs/f")).unwrap(), b"replaced");
    // 8. A hardlink through a planted symlink directory.
    let (ok, err, _t) = hostile(
        "hardlink-via-symlink",
        vec![raw_tar(&[E::Symlink("d", "../.."), E::Hardlink("x", "d/etc/hostname")])],
    );
    assert!(!ok, "the link target does not exist inside the root: {err}");
    // 9. A whiteout that tries to delete outside.
    let (ok, err, _t) = hostile("whiteout-out", vec![raw_tar(&[E::File("../.wh.outside", b"", 0o644)])]);
    assert!(!ok, "{err}");
}

/// What one extracted entry is, as compared between extractors.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: &'static str,
    /// Permission bits with setuid, setgid and sticky, in octal (none for symlinks).
    mode: String,
    uid: u32,
    gid: u32,
    /// Whole seconds.
    mtime: i64,
    /// Regular files only.
    size: u64,
    /// A symlink's target, or for a hardlink in a tar its source.
    link: String,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Regular files with several links: the first path sharing the inode.
    hardlink_group: String,
}

fn xattrs_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: c is NUL-terminated; names is writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated; value is writable for its length.
        let got = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if got >= 0 {
            value.truncate(got as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), value));
        }
    }
    out.sort();
    out
}

/// Every entry under `root` (the root itself excluded), by relative path.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Meta> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut inodes: std::collections::BTreeMap<u64, String> = std::collections::BTreeMap::new();
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    for p in paths {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let kind = if ft.is_symlink() {
            "symlink"
        } else if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let hardlink_group = if ft.is_file() && m.nlink() > 1 {
            inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone()
        } else {
            String::new()
        };
        out.insert(
            rel,
            Meta {
                kind,
                mode: if ft.is_symlink() {
                    String::new()
                } else {
                    format!("{:04o}", m.mode() & 0o7777)
                },
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                size: if ft.is_file() { m.size() } else { 0 },
                link: if ft.is_symlink() {
                    std::fs::read_link(&p).unwrap().to_string_lossy().into_owned()
                } else {
                    String::new()
                },
                xattrs: xattrs_of(&p),
                hardlink_group,
            },
        );
    }
    out
}

/// Every difference between two trees, one line each.
fn differences(
    a_name: &str,
    a: &std::collections::BTreeMap<String, Meta>,
    b_name: &str,
    b: &std::collections::BTreeMap<String, Meta>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, ma) in a {
        match b.get(path) {
            None => out.push(format!("{path}: only in {a_name}")),
            Some(mb) if mb != ma => out.push(format!("{path}: {a_name} {ma:?}\n    {b_name} {mb:?}")),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("{path}: only in {b_name}"));
    }
    out
}

/// The entries of a tar (a `docker export`), by relative path.
fn tar_tree(path: &Path) -> std::collections::BTreeMap<String, Meta> {
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let rel = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let rel = rel.strip_prefix("./").unwrap_or(&rel).to_string();
        if rel.is_empty() || rel == "." {
            continue;
        }
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(k) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    xattrs.push((k.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            _ => "special",
        };
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.insert(
            rel,
            Meta {
                kind,
                mode: if kind == "symlink" {
                    String::new()
                } else {
                    format!("{:04o}", h.mode().unwrap() & 0o7777)
                },
                uid: h.uid().unwrap() as u32,
                gid: h.gid().unwrap() as u32,
                mtime: h.mtime().unwrap() as i64,
                size: if kind == "file" { h.size().unwrap() } else { 0 },
                link,
                xattrs,
                hardlink_group: String::new(),
            },
        );
    }
    out
}

/// What `docker export` adds from the container's init layer, not the
/// image's: `/.dockerenv`, the files Docker bind-mounts over (`/etc/hostname`,
/// `/etc/hosts`, `/etc/resolv.conf`), the `/etc/mtab` link, the mount points
/// `/dev` (with `console`, `pts`, `shm`), `/proc` and `/sys`, and `/etc`
/// itself (the init layer re-creates it, so its mode and mtime are the init
/// layer's). Those are not compared.
fn docker_export_only(path: &str) -> bool {
    matches!(
        path,
        ".dockerenv" | "etc" | "etc/hostname" | "etc/hosts" | "etc/resolv.conf" | "etc/mtab" | "proc" | "sys" | "dev"
    ) || path.starts_with("dev/")
}

/// Differences between an extracted tree and a `docker export` of the same
/// image: every entry the image holds, by type, mode, owner, mtime, size,
/// link target and xattrs; a hardlink in the export must share its source's
/// inode in the tree.
fn export_differences(
    tree: &std::collections::BTreeMap<String, Meta>,
    export: &std::collections::BTreeMap<String, Meta>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, e) in export.iter().filter(|(p, _)| !docker_export_only(p)) {
        let Some(t) = tree.get(path) else {
            out.push(format!("{path}: only in docker export"));
            continue;
        };
        if e.kind == "hardlink" {
            let source = tree.get(e.link.trim_start_matches('/'));
            if t.kind != "file"
                || source.is_none_or(|s| s.hardlink_group != t.hardlink_group || t.hardlink_group.is_empty())
            {
                out.push(format!(
                    "{path}: docker export has a hardlink to {}, occy has {t:?}",
                    e.link
                ));
            }
            continue;
        }
        let t = Meta {
            hardlink_group: String::new(),
            ..t.clone()
        };
        if &t != e {
            out.push(format!("{path}: docker export {e:?}\n    occy {t:?}"));
        }
    }
    for path in tree
        .keys()
        .filter(|p| !export.contains_key(*p) && !docker_export_only(p))
    {
        out.push(format!("{path}: only in occy's tree"));
    }
    out
}

/// Runs a command; panics with its output when it fails.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Images and containers made by the test, removed when it ends (also when it fails).
struct DockerLeftovers {
    images: Vec<String>,
    containers: Vec<String>,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        // Newest first: a base cannot go while images built on it stay.
        for i in self.images.iter().rev() {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// A tar entry for a hand-made layer: (name, type, mode, uid, gid, mtime, data or link target).
type TarEntry<'a> = (&'a str, tar::EntryType, u32, u64, u64, u64, &'a [u8]);

/// A PAX tar of `entries`; `pax` adds records before the entry of that name.
fn pax_tar(entries: &[TarEntry], pax: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, uid, gid, mtime, data) in entries {
        for (on, key, value) in pax.iter().filter(|(on, _, _)| on == name) {
            let _ = on;
            b.append_pax_extensions([(*key, *value)]).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(*mtime);
        match *kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                h.set_size(0);
                b.append_link(&mut h, name, std::str::from_utf8(data).unwrap()).unwrap();
            }
            _ => {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The Docker Engine, umoci and skopeo, or why the test cannot run.
fn docker_umoci_skopeo() -> Result<(), String> {
    for (tool, package) in [("docker", "docker.io"), ("umoci", "umoci"), ("skopeo", "skopeo")] {
        if !crate::support::have(tool) {
            return Err(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match info {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "the Docker Engine does not answer: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("docker info: {e}")),
    }
}

/// Builds the three test images (and their base) with `docker build`;
/// returns their names, the base first.
fn build_images(dir: &Path, tag: &str, left: &mut DockerLeftovers) -> Vec<String> {
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as L};
    let name = |n: &str| format!("127.0.0.1:5000/occy-test/extract-{n}:{tag}");
    // A base from `docker import` of a busybox-static rootfs, with a file
    // carrying a file capability (the one xattr `docker save` keeps).
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
    let cap: &[u8] = &[1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let base_tar = pax_tar(
        &[
            ("bin", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("bin/busybox", F, 0o755, 0, 0, 1_100_000_000, &busybox),
            ("bin/sh", L, 0o777, 0, 0, 1_100_000_000, b"busybox"),
            ("etc", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("tmp", D, 0o1777, 0, 0, 1_000_000_000, b""),
            ("usr", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("usr/local", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("usr/local/bin", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("usr/local/bin/ping", F, 0o755, 0, 0, 1_200_000_000, b"ping\n"),
        ],
        &[("usr/local/bin/ping", "SCHILY.xattr.security.capability", cap)],
    );
    std::fs::write(dir.join("base.tar"), base_tar).unwrap();
    left.images.push(name("base"));
    run(
        "docker",
        &["import", &dir.join("base.tar").display().to_string(), &name("base")],
    );

    let build = |n: &str, context: &Path, dockerfile: &str, left: &mut DockerLeftovers| {
        std::fs::create_dir_all(context).unwrap();
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        left.images.push(name(n));
        run(
            "docker",
            &["build", "-q", "-t", &name(n), &context.display().to_string()],
        );
    };
    // A: RUN layers on the base — a directory made 0755 then chmod 750 and
    // chowned by later layers, setuid, setgid and sticky, explicit mtimes,
    // a directory re-declared by a later layer, symlink, hardlink.
    build(
        "a",
        &dir.join("ctx-a"),
        &format!(
            "FROM {base}
RUN /bin/busybox --install -s /bin
RUN mkdir -p /opt/app/data /srv/shared /etc/app/conf.d /var/old && echo secret > /opt/app/data/key \\
 && chmod 755 /opt/app/data && echo one > /etc/app/conf.d/one && echo gone > /var/old/gone \\
 && echo stay > /var/old/stay && touch -d '2001-02-03 04:05:06' /opt/app/data/key
RUN chmod 750 /opt/app/data && chown 1000:1000 /opt/app/data && chown 123:456 /opt/app/data/key \\
 && chmod 640 /opt/app/data/key
RUN chmod 1777 /srv/shared && cp /bin/busybox /usr/local/bin/tool && chmod 4755 /usr/local/bin/tool \\
 && mkdir /srv/group && chown 0:50 /srv/group && chmod 2775 /srv/group
RUN echo two > /etc/app/conf.d/two && chmod 700 /etc/app && ln -s ../app/data/key /opt/app/keylink \\
 && ln /etc/app/conf.d/two /etc/app/two-hard && touch -d '2005-06-07 08:09:10' /etc/app/conf.d/two /etc/app/conf.d \\
 && touch -d '2006-01-01 00:00:00' /srv/shared
",
            base = name("base")
        ),
        left,
    );
    // B: FROM scratch, layers ADDed from tars whose metadata is exact: the
    // second re-declares `data/private` 0755 → 0750 with a new owner and
    // mtime and makes `data/sticky` sticky; a setuid file with a hardlink.
    let ctx_b = dir.join("ctx-b");
    std::fs::create_dir_all(&ctx_b).unwrap();
    let l1 = pax_tar(
        &[
            ("data", D, 0o755, 0, 0, 1_000_000_000, b""),
            ("data/private", D, 0o755, 0, 0, 1_000_000_001, b""),
            ("data/private/secret", F, 0o600, 10, 20, 1_000_000_002, b"s3cret"),
            ("data/sticky", D, 0o777, 0, 0, 1_000_000_003, b""),
            ("data/su", F, 0o4755, 0, 0, 1_000_000_004, b"#!/bin/sh\n"),
            ("data/link", L, 0o777, 0, 0, 1_000_000_005, b"private/secret"),
            ("data/hard", H, 0o4755, 0, 0, 1_000_000_004, b"data/su"),
        ],
        &[],
    );
    let l2 = pax_tar(
        &[
            ("data/private", D, 0o750, 1000, 1000, 1_500_000_000, b""),
            ("data/sticky", D, 0o1777, 0, 0, 1_600_000_000, b""),
            ("data/private/more", F, 0o640, 1000, 1000, 1_500_000_001, b"more"),
        ],
        &[],
    );
    std::fs::write(ctx_b.join("l1.tar"), l1).unwrap();
    std::fs::write(ctx_b.join("l2.tar"), l2).unwrap();
    std::fs::write(ctx_b.join("note.txt"), b"note\n").unwrap();
    let t = filetime::FileTime::from_unix_time(1_080_000_000, 0);
    filetime::set_file_times(ctx_b.join("note.txt"), t, t).unwrap();
    build(
        "b",
        &ctx_b,
        "FROM scratch\nADD l1.tar /\nADD l2.tar /\nCOPY note.txt /data/note.txt\n",
        left,
    );
    // C: multi-stage on A — a chowned COPY --from, whiteouts (rm) and an
    // opaque directory (removed and made again). The first stage is built
    // and tagged on its own first (the full build reuses it), so that it is
    // removed with the others instead of staying as an untagged image.
    let c_file = format!(
        "FROM {base} AS build
RUN /bin/busybox mkdir -p /out/sub && echo built > /out/sub/file \\
 && /bin/busybox touch -d '2003-03-03 03:03:03' /out/sub/file /out/sub && /bin/busybox chmod 711 /out/sub
FROM {a}
COPY --from=build --chown=42:43 /out /opt/out
RUN rm -rf /var/old/gone /opt/app/keylink
RUN rm -rf /etc/app/conf.d && mkdir /etc/app/conf.d && echo three > /etc/app/conf.d/three
",
        base = name("base"),
        a = name("a")
    );
    let ctx_c = dir.join("ctx-c");
    std::fs::create_dir_all(&ctx_c).unwrap();
    std::fs::write(ctx_c.join("Dockerfile"), &c_file).unwrap();
    left.images.push(name("c-stage"));
    run(
        "docker",
        &[
            "build",
            "-q",
            "--target",
            "build",
            "-t",
            &name("c-stage"),
            &ctx_c.display().to_string(),
        ],
    );
    build("c", &ctx_c, &c_file, left);
    vec![name("base"), name("a"), name("b"), name("c")]
}

#[test]
fn docker_built_images_extract_like_umoci_and_docker_export() {
    if let Err(why) = docker_umoci_skopeo() {
        crate::support::unavailable(
            "docker, umoci or skopeo",
            &format!("comparing extraction with them: {why}"),
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tag = format!("p{}", std::process::id());
    let mut left = DockerLeftovers {
        images: Vec::new(),
        containers: Vec::new(),
    };
    let names = build_images(t.path(), &tag, &mut left);
    let mut failures = Vec::new();
    for (i, name) in names.iter().enumerate().skip(1) {
        let work = t.path().join(format!("img{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let saved = work.join("saved.tar");
        run("docker", &["save", "-o", &saved.display().to_string(), name]);
        // umoci unpack of the same image, through an OCI layout from skopeo.
        let layout = work.join("oci");
        run(
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("docker-archive:{}", saved.display()),
                &format!("oci:{}:t", layout.display()),
            ],
        );
        let umoci = work.join("umoci");
        run(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:t", layout.display()),
                &umoci.display().to_string(),
            ],
        );
        let want = tree(&umoci.join("rootfs"));
        assert!(want.len() > 5, "umoci unpacked {name} to almost nothing: {want:?}");

        let bundle = work.join("bundle");
        let src = format!("tar://{}", saved.display());
        let out = occy(&["process", &src, &format!("bundle://{}", bundle.display())]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got = tree(&bundle.join("rootfs"));
        failures.extend(
            differences("umoci", &want, "occy bundle://", &got)
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );

        let dir = work.join("dir");
        let out = occy(&["process", &src, &format!("dir://{}?expand=true", dir.display())]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got_dir = tree(&dir.join("manifest"));
        failures.extend(
            differences("umoci", &want, "occy dir://?expand=true", &got_dir)
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );

        // docker export of a container made from the image.
        let container = format!("occy-test-extract-{tag}-{i}");
        left.containers.push(container.clone());
        run("docker", &["create", "--name", &container, name, "/bin/true"]);
        let exported = work.join("export.tar");
        run("docker", &["export", "-o", &exported.display().to_string(), &container]);
        failures.extend(
            export_differences(&got, &tar_tree(&exported))
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );
    }

    // The defects this guards against, spelled out.
    let c = t.path().join("img3/bundle/rootfs");
    let mode = |p: &str| std::fs::symlink_metadata(c.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("opt/app/data"), 0o750, "a later layer's chmod 750 must win");
    assert_eq!(mode("srv/shared"), 0o1777);
    assert_eq!(mode("srv/group"), 0o2775);
    assert_eq!(mode("usr/local/bin/tool"), 0o4755);
    assert_eq!(mode("etc/app"), 0o700);
    assert!(!c.join("var/old/gone").exists() && c.join("var/old/stay").exists());
    assert!(!c.join("etc/app/conf.d/one").exists() && c.join("etc/app/conf.d/three").exists());
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn a_later_layer_declaring_a_directory_wins_and_a_whiteout_forgets_it() {
    let t = tempfile::tempdir().unwrap();
    let src = layout(
        &t.path().join("img"),
        &[
            raw_tar(&[E::Dir("d/", 0o755), E::File("d/f", b"x", 0o644), E::Dir("gone/", 0o700)]),
            raw_tar(&[E::Dir("d/", 0o750), E::File(".wh.gone", b"", 0o644)]),
            raw_tar(&[E::File("gone/again", b"y", 0o644)]),
        ],
    );
    let bundle = t.path().join("bundle");
    let out = occy(&["process", &src, &format!("bundle://{}", bundle.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &str| {
        std::fs::metadata(bundle.join("rootfs").join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("d"), 0o750, "the last declaration wins");
    assert_ne!(
        mode("gone"),
        0o700,
        "a directory whited out and made again implicitly does not keep the removed one's mode"
    );
}

#[test]
fn dir_expand_puts_the_merged_tree_in_manifest_beside_the_layer_tarballs() {
    let t = tempfile::tempdir().unwrap();
    let src = layout(&t.path().join("img"), &good_layers());
    for unique_names in [false, true] {
        let d = t.path().join(format!("dir-{unique_names}"));
        let query = if unique_names {
            "expand=true&unique_names=true"
        } else {
            "expand=true"
        };
        let out = occy(&["process", &src, &format!("dir://{}?{query}", d.display())]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // catalog.json names the manifest file; the tree is beside it, named
        // like it without `.json` (occystrap's layout).
        let catalog: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("catalog.json")).unwrap()).unwrap();
        let manifest_file = catalog["img"]["t"].as_str().unwrap().to_string();
        let tree_name = manifest_file.strip_suffix(".json").unwrap();
        if unique_names {
            assert_eq!(tree_name, "manifest-img-t");
        } else {
            assert_eq!(tree_name, "manifest");
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(&manifest_file)).unwrap()).unwrap();
        let layers = manifest[0]["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for l in layers {
            let l = l.as_str().unwrap();
            assert!(l.ends_with("/layer.tar"), "{l}");
            assert!(d.join(l).is_file(), "layer tarball {l} beside the tree");
        }
        assert!(
            d.join(manifest[0]["Config"].as_str().unwrap()).is_file(),
            "the config beside the tree"
        );
        let root = d.join(tree_name);
        assert_eq!(std::fs::read(root.join("a/b/keep")).unwrap(), b"kept");
        assert_eq!(std::fs::read(root.join("opq/new")).unwrap(), b"from the upper layer");
        assert!(!root.join("a/b/c").exists() && !root.join("opq/old").exists());
        // Nothing else is a tree: every other entry of DIR is the image's files.
        for e in std::fs::read_dir(&d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let known = name == tree_name
                || name == manifest_file
                || name.starts_with("catalog.json")
                || layers
                    .iter()
                    .any(|l| l.as_str().unwrap().starts_with(&format!("{name}/")))
                || Some(name.as_str()) == manifest[0]["Config"].as_str();
            assert!(known, "{name} in {}", d.display());
        }
    }
}

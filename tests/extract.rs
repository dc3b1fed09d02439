//! Extraction into `bundle://` and `dir://?expand=true`: whiteouts at every
//! depth, opaque directories, modes, links — compared with `umoci unpack` —
//! and hostile layers that try to write outside the target.

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

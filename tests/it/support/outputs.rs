//! For the reliability tests: a source registry holding ten images of the
//! generated mirror set, and what a destination holds, read straight from
//! its files (a Distribution registry's storage, a docker-save tarball, an
//! occystrap directory) so a test can tell a complete image from a torn one
//! and compare the result of two runs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{reap_after_exit, scratch_dir, Mode, Registry};

/// The generated mirror images (an OCI layout, `NAME_TAG` entries).
pub fn mirror_layout() -> &'static PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = scratch_dir("mirror-layout");
        occy_testkit::generate::write_layout(&dir, &occy_testkit::generate::mirror_set()).unwrap();
        dir
    })
}

/// The ten images of [`source`], as (mirror-set name, repository, tag).
pub const TEN: [(&str, &str, &str); 10] = [
    ("alpine_3.17", "lib/alpine", "3.17"),
    ("alpine_3.18", "lib/alpine", "3.18"),
    ("alpine_3.18.1", "lib/alpine", "3.18.1"),
    ("alpine_3.19", "lib/alpine", "3.19"),
    ("alpine_3.19.1", "lib/alpine", "3.19.1"),
    ("alpine_3.20", "lib/alpine", "3.20"),
    ("web_v1.0", "apps/web", "v1.0"),
    ("web_v1.1", "apps/web", "v1.1"),
    ("web_v2.0", "apps/web", "v2.0"),
    ("api_1.0", "apps/api", "1.0"),
];

/// A plain registry shared by the tests of this binary, holding [`TEN`]
/// (every image the shared base layer and one layer of its own).
pub fn source() -> &'static Registry {
    static SRC: OnceLock<Registry> = OnceLock::new();
    SRC.get_or_init(|| {
        let reg = Registry::start(Mode::Plain);
        // A static is never dropped: stop the registry when the tests end.
        if let Some(child) = &reg.child {
            reap_after_exit(&reg.dir, Some(child.id()));
        }
        for (name, repo, tag) in TEN {
            reg.push_layout(mirror_layout(), name, &format!("{repo}:{tag}"));
        }
        reg
    })
}

/// A sync file selecting the ten images of [`source`] (as `SRC`) with a
/// semver range, a glob and a plain tag, each written to every destination
/// of `to`, where `{repo}` stands for the repository's last part and `{tag}`
/// for the tag (`registry://DST/mirror/{repo}`, `tar://OUT/{repo}-{tag}.tar`).
pub fn ten_image_sync_file(src: &str, insecure: &[&str], to: &[&str]) -> String {
    let mut text = String::from("version: 1\ndefaults:\n  image_parallel: 3\n  parallel: 4\nregistries:\n");
    for h in insecure {
        text.push_str(&format!("  \"{h}\": {{ insecure: true }}\n"));
    }
    text.push_str("sync:\n");
    let entries = [
        (
            "lib/alpine",
            "    tags: { semver: \">=3.17\", exclude: [\"*-rc*\"] }\n",
            "alpine",
        ),
        ("apps/web:v*", "", "web"),
        ("apps/api", "    tags: [\"1.0\"]\n", "api"),
    ];
    for (from, tags, short) in entries {
        text.push_str(&format!("  - from: registry://{src}/{from}\n{tags}    to:\n"));
        for t in to {
            text.push_str(&format!("      - \"{}\"\n", t.replace("{repo}", short)));
        }
    }
    text
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// Every file under `dir`, recursively (symlinks not followed).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn registry_root(reg: &Registry) -> PathBuf {
    reg.dir.join("data/docker/registry/v2")
}

/// Asserts that every blob a registry stores hashes to its name; returns how many.
pub fn registry_blobs_match_names(reg: &Registry) -> usize {
    let mut n = 0;
    for p in walk(&registry_root(reg).join("blobs")) {
        if p.file_name().is_some_and(|f| f == "data") {
            let name = p.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(
                sha256_file(&p),
                name,
                "a stored blob does not hash to its name: {}",
                p.display()
            );
            n += 1;
        }
    }
    n
}

/// The bytes of blob `sha256:HEX` a registry stores, if it does.
fn registry_blob(reg: &Registry, hex: &str) -> Option<Vec<u8>> {
    let p = registry_root(reg).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
    std::fs::read(p).ok()
}

/// Every tag of every repository a registry holds: `repo:tag` → manifest digest.
pub fn registry_tags(reg: &Registry) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let repos = registry_root(reg).join("repositories");
    for p in walk(&repos) {
        let s = p.strip_prefix(&repos).unwrap().to_string_lossy().to_string();
        if let Some((repo, rest)) = s.split_once("/_manifests/tags/") {
            if let Some(tag) = rest.strip_suffix("/current/link") {
                // The registry may be writing the link as we look (a PUT it
                // is still serving when occy was killed): wait for its bytes.
                let mut link = std::fs::read_to_string(&p).unwrap_or_default();
                for _ in 0..50 {
                    if !link.trim().is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    link = std::fs::read_to_string(&p).unwrap_or_default();
                }
                out.insert(format!("{repo}:{tag}"), link.trim().to_string());
            }
        }
    }
    out
}

/// Asserts that the image `digest` names in `repo` is whole: its manifest,
/// its config and every layer are stored, linked into `repo` and hash to
/// their names.
pub fn assert_registry_image_complete(reg: &Registry, repo: &str, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let bytes = registry_blob(reg, hex).unwrap_or_else(|| panic!("{repo}@{digest}: manifest not stored"));
    assert_eq!(sha256_hex(&bytes), hex);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    for b in blobs {
        let h = b.trim_start_matches("sha256:");
        let data = registry_blob(reg, h).unwrap_or_else(|| panic!("{repo}@{digest}: blob {b} missing"));
        assert_eq!(sha256_hex(&data), h, "{repo}: blob {b} torn");
        let link = registry_root(reg).join(format!("repositories/{repo}/_layers/sha256/{h}/link"));
        assert!(
            link.is_file(),
            "{repo}@{digest}: blob {b} not linked into the repository"
        );
    }
}

/// What a docker-save tarball holds: its `manifest.json` (parsed), after
/// asserting that the archive is whole: every entry present, configs and
/// layers hashing to their names.
pub fn tar_image(path: &Path) -> Value {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap_or_else(|err| panic!("{}: torn archive: {err}", path.display()));
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)
            .unwrap_or_else(|err| panic!("{}: torn entry {name}: {err}", path.display()));
        files.insert(name, bytes);
    }
    let manifest: Value = serde_json::from_slice(
        files
            .get("manifest.json")
            .unwrap_or_else(|| panic!("{}: no manifest.json", path.display())),
    )
    .unwrap();
    for entry in manifest.as_array().unwrap() {
        let config = entry["Config"].as_str().unwrap();
        let bytes = files
            .get(config)
            .unwrap_or_else(|| panic!("{}: no {config}", path.display()));
        assert_eq!(format!("{}.json", sha256_hex(bytes)), config);
        for l in entry["Layers"].as_array().unwrap() {
            let l = l.as_str().unwrap();
            let bytes = files.get(l).unwrap_or_else(|| panic!("{}: no {l}", path.display()));
            assert_eq!(format!("{}/layer.tar", sha256_hex(bytes)), l);
        }
    }
    manifest
}

/// What an occystrap directory (`dir://…?unique_names=true`) holds, after
/// asserting that every file is whole: layers and configs hash to their
/// names, manifests and `catalog.json` parse and name files that exist.
/// Returns `catalog.json` with each manifest file name replaced by the
/// manifest's content.
pub fn dir_image_set(root: &Path) -> Value {
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "layer.tar" {
            let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(sha256_file(&p), dir, "torn layer {rel}");
        } else if !rel.contains('/') && name.len() == 69 && name.ends_with(".json") {
            assert_eq!(format!("{}.json", sha256_file(&p)), name, "torn config {rel}");
        }
    }
    let catalog_path = root.join("catalog.json");
    let Ok(bytes) = std::fs::read(&catalog_path) else {
        return Value::Null;
    };
    let mut catalog: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("torn {}: {e}", catalog_path.display()));
    for tags in catalog.as_object_mut().unwrap().values_mut() {
        for file in tags.as_object_mut().unwrap().values_mut() {
            let f = root.join(file.as_str().unwrap());
            let m: Value = serde_json::from_slice(&std::fs::read(&f).unwrap())
                .unwrap_or_else(|e| panic!("torn {}: {e}", f.display()));
            for entry in m.as_array().unwrap() {
                let config = entry["Config"].as_str().unwrap();
                assert!(root.join(config).is_file(), "{}: {config} missing", f.display());
                for l in entry["Layers"].as_array().unwrap() {
                    let l = l.as_str().unwrap();
                    assert!(root.join(l).is_file(), "{}: {l} missing", f.display());
                }
            }
            *file = m;
        }
    }
    catalog
}

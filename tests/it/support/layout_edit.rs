//! Editing OCI image layouts in tests: private copies of generated images,
//! blobs read and written by digest, a tag re-pointed at new manifest bytes,
//! a manifest and config rewritten together, layers added from raw tars —
//! how the tests build broken and hostile images from good ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::scratch_dir;

pub fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A private copy of one generated image as an OCI layout, tagged `NAME`.
pub fn layout_of(name: &str) -> PathBuf {
    let dir = scratch_dir(&format!("check-{name}"));
    let specs: Vec<_> = occy_testkit::generate::standard_set()
        .into_iter()
        .filter(|s| s.name == name)
        .collect();
    occy_testkit::generate::write_layout(&dir, &specs).unwrap();
    dir
}

pub fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

pub fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha_hex(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// The tag's top descriptor in index.json.
pub fn top(dir: &Path, tag: &str) -> Value {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone()
}

/// Points the tag at new top-manifest bytes.
pub fn retag(dir: &Path, tag: &str, bytes: &[u8]) {
    let digest = write_blob(dir, bytes);
    let mut index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag {
            m["digest"] = Value::from(digest.clone());
            m["size"] = Value::from(bytes.len());
        }
    }
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Rewrites a single-image tag's manifest and config through `edit`.
pub fn mutate(dir: &Path, tag: &str, edit: impl FnOnce(&Path, &mut Value, &mut Value)) {
    let t = top(dir, tag);
    let mut manifest: Value = serde_json::from_slice(&read_blob(dir, t["digest"].as_str().unwrap())).unwrap();
    let mut config: Value =
        serde_json::from_slice(&read_blob(dir, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    edit(dir, &mut manifest, &mut config);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = Value::from(write_blob(dir, &config_bytes));
    manifest["config"]["size"] = Value::from(config_bytes.len());
    retag(dir, tag, &serde_json::to_vec(&manifest).unwrap());
}

/// Adds a gzip layer made of `entries` (raw tar bytes) to a manifest and config.
pub fn add_layer(dir: &Path, manifest: &mut Value, config: &mut Value, tar: &[u8]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(tar).unwrap();
    let gz = gz.finish().unwrap();
    let digest = write_blob(dir, &gz);
    manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": digest,
        "size": gz.len(),
    }));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(Value::from(format!("sha256:{}", sha_hex(tar))));
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"created": "2030-01-01T00:00:00Z", "created_by": "test"}));
}

/// A tar with one entry, its name written raw (so `..` survives).
pub fn raw_tar(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if !link.is_empty() {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

//! The one place that reads an OCI layout written by a test with the tools
//! users read OCI layouts with: `skopeo inspect oci:DIR:TAG` (the bytes it
//! returns hash to the tag's digest), and for OCI-typed images `umoci ls` and
//! `umoci unpack` (one image without zstd layers, which umoci 0.4 cannot
//! unpack). A layout that keeps Docker v2 manifests (a registry image
//! copied byte for byte) is checked as its warning advises: converted with
//! `?format=oci`, the result is read by the same tools.
//!
//! A tool that is missing makes the check skip with a message, or fail when
//! `OCCY_REQUIRE_ALL=1` (CI), never pass silently.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{have, occy, scratch_dir, unavailable};

/// Whether `tool` can be used; when it cannot, says so and returns false, or
/// fails under `OCCY_REQUIRE_ALL=1` (through [`unavailable`]).
pub fn tool_or_skip(tool: &str, package: &str, what: &str) -> bool {
    if have(tool) {
        return true;
    }
    unavailable(
        tool,
        &format!("it is not installed (apt-get install {package}), so {what} is not checked"),
    );
    false
}

/// The `index.json` entry of `tag` in the layout `dir` (exactly one).
pub fn tag_entry(dir: &Path, tag: &str) -> Value {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}/index.json has no manifests", dir.display()))
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .collect();
    assert_eq!(entries.len(), 1, "tag {tag} in {}/index.json: {index:#}", dir.display());
    entries[0].clone()
}

fn blob_json(dir: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn is_oci(mt: &Value) -> bool {
    mt.as_str().is_some_and(|m| m.starts_with("application/vnd.oci."))
}

/// Asserts that every media type of an image manifest is OCI (`oci`) or
/// that some is Docker v2 (`!oci`).
fn assert_image_family(dir: &Path, digest: &str, oci: bool) {
    let m = blob_json(dir, digest);
    let mut types = vec![m["mediaType"].clone(), m["config"]["mediaType"].clone()];
    types.extend(
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["mediaType"].clone()),
    );
    if oci {
        assert!(types.iter().all(is_oci), "manifest {digest} is not all OCI: {m:#}");
    } else {
        assert!(
            !types.iter().all(is_oci),
            "manifest {digest} has no Docker v2 type: {m:#}"
        );
    }
}

/// Reads the image `tag` of the OCI layout `dir` with skopeo (and umoci when
/// `oci_typed`), as users would. `oci_typed` says what the test expects the
/// layout to hold: OCI media types throughout, or Docker v2 manifests kept as
/// a registry had them. The second kind is refused by OCI-only tools (skopeo
/// 1.9 finds no descriptor for it), as the plan warns; it is checked
/// converted with `?format=oci`, which must keep every blob.
pub fn assert_oci_layout_readable(dir: &Path, tag: &str, oci_typed: bool) {
    let entry = tag_entry(dir, tag);
    let digest = entry["digest"].as_str().unwrap().to_string();
    let mt = entry["mediaType"].as_str().unwrap_or_default().to_string();
    let is_index = mt.ends_with("index.v1+json") || mt.ends_with("manifest.list.v2+json");
    let children: Vec<String> = if is_index {
        blob_json(dir, &digest)["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["digest"].as_str().map(String::from))
            .filter(|d| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:")).exists())
            .collect()
    } else {
        vec![digest.clone()]
    };
    if !oci_typed {
        assert!(
            !is_oci(&entry["mediaType"]) || children.iter().any(|c| !is_oci(&blob_json(dir, c)["mediaType"])),
            "{}:{tag} was expected to keep Docker v2 manifests: {entry}",
            dir.display()
        );
        let converted = scratch_dir("converted");
        let args = [
            "process",
            "--all-platforms",
            &format!("oci://{}:{tag}", dir.display()),
            &format!("oci://{}:{tag}?format=oci", converted.display()),
        ];
        let args: Vec<&str> = if is_index {
            args.to_vec()
        } else {
            [&args[..1], &args[2..]].concat()
        };
        let out = occy(&args);
        assert!(
            out.status.success(),
            "occy {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The blobs are the same: every layer and config of the original.
        for c in &children {
            let m = blob_json(dir, c);
            let config = m["config"]["digest"].as_str().unwrap();
            assert!(converted.join("blobs/sha256").join(&config[7..]).exists(), "{config}");
            for l in m["layers"].as_array().unwrap() {
                let d = l["digest"].as_str().unwrap();
                assert!(converted.join("blobs/sha256").join(&d[7..]).exists(), "layer {d}");
            }
        }
        return assert_oci_layout_readable(&converted, tag, true);
    }

    assert!(
        is_oci(&entry["mediaType"]),
        "{}:{tag} is not OCI: {entry}",
        dir.display()
    );
    for c in &children {
        assert_image_family(dir, c, true);
    }
    let target = format!("oci:{}:{tag}", dir.display());
    if tool_or_skip("skopeo", "skopeo", &format!("reading {target}")) {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", &target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect --raw {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            format!("sha256:{}", super::outputs::sha256_hex(&out.stdout)),
            digest,
            "skopeo reads {target} as other bytes than the tag names"
        );
        let out = Command::new("skopeo").args(["inspect", &target]).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if tool_or_skip("umoci", "umoci", &format!("unpacking {target}")) {
        let out = Command::new("umoci")
            .args(["ls", "--layout"])
            .arg(dir)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && listed.lines().any(|l| l == tag),
            "umoci ls --layout {}: {listed}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // umoci unpacks one image manifest (an index of several is ambiguous
        // to it), and umoci 0.4 knows no zstd layer type.
        let zstd = children.iter().any(|c| {
            blob_json(dir, c)["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["mediaType"].as_str().is_some_and(|m| m.ends_with("+zstd")))
        });
        if zstd {
            eprintln!("note: umoci unpack not tried on {target}: umoci 0.4 cannot unpack zstd layers");
        }
        if children.len() == 1 && !zstd {
            let bundle = scratch_dir("umoci-bundle").join("b");
            let mut c = Command::new("umoci");
            c.arg("unpack");
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                c.arg("--rootless");
            }
            let out = c
                .arg("--image")
                .arg(format!("{}:{tag}", dir.display()))
                .arg(&bundle)
                .output()
                .unwrap();
            assert!(
                out.status.success() && bundle.join("rootfs").is_dir(),
                "umoci unpack --image {}:{tag}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(bundle.parent().unwrap());
        }
    }
}

/// Pulls `oci:DIR:TAG` with podman (as root, vfs storage, in a private
/// store), when podman is there; returns the image ID podman reports.
pub fn podman_pull_oci(dir: &Path, tag: &str) -> Option<String> {
    if !tool_or_skip("podman", "podman", &format!("podman pull oci:{}:{tag}", dir.display())) {
        return None;
    }
    let store = scratch_dir("podman-store");
    // podman names the image after the directory, which must be lowercase.
    let link = std::env::temp_dir().join(format!("occy-podman-{}-{}", std::process::id(), tag.to_lowercase()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(dir, &link).unwrap();
    let out = Command::new("podman")
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "pull",
            "-q",
        ])
        .arg(format!("oci:{}:{tag}", link.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&link);
    assert!(
        out.status.success(),
        "podman pull oci:{}:{tag}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&store);
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

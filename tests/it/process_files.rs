//! `occy process` and `occy info` between file formats (OCI layout,
//! docker-save tar, occystrap dir, bundle), and the bad-input cases that need
//! no registry: each names the offending thing, exits with the documented
//! code, and leaves nothing under the destination's name.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    assert_ok, default_diff_ids, default_image, fails, generated, json_of, layer_field, occy_bin, ok, require,
    scratch_dir, skopeo_inspect_local, standard_images, standard_ref, strings, unavailable,
};
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A small deterministic OCI layout: `layers` are lists of (path, content).
struct Layout {
    dir: PathBuf,
    manifest_digest: String,
    diff_ids: Vec<String>,
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

fn build_layout(dir: &Path, tag: &str, layers: &[Vec<(&str, &[u8])>]) -> Layout {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for files in layers {
        let tar = layer_tar(files);
        diff_ids.push(sha(&tar));
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let d = write_blob(dir, &gz);
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}));
    }
    let history: Vec<Value> = (0..layers.len())
        .map(|i| json!({"created_by": format!("step {i}")}))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/srv"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history
    }))
    .unwrap();
    let cd = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs
    }))
    .unwrap();
    let md = write_blob(dir, &manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index_path = dir.join("index.json");
    let mut index: Value = std::fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "manifests": []}));
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    Layout {
        dir: dir.to_path_buf(),
        manifest_digest: md,
        diff_ids,
    }
}

fn sample(dir: &Path) -> Layout {
    build_layout(
        dir,
        "v1",
        &[
            vec![("etc/os-release", b"ID=occy\n"), ("bin/tool", b"#!/bin/sh\necho hi\n")],
            vec![("srv/app/data.txt", &[7u8; 5000][..])],
        ],
    )
}

fn info_json(reference: &str) -> Value {
    let out = ok(&["-O", "json", "info", reference]);
    serde_json::from_slice(&out.stdout).expect("info prints one JSON document")
}

fn uri(scheme: &str, p: &Path, suffix: &str) -> String {
    format!("{scheme}://{}{suffix}", p.display())
}

#[test]
fn oci_to_oci_keeps_the_manifest_digest() {
    let t = tempfile::tempdir().unwrap();
    let src = sample(&t.path().join("src"));
    let dst = t.path().join("dst");
    ok(&["process", &uri("oci", &src.dir, ":v1"), &uri("oci", &dst, ":copy")]);
    let info = info_json(&uri("oci", &dst, ":copy"));
    assert_eq!(info["manifest_digest"], src.manifest_digest);
    // skopeo reads our layout and reports the same digest.
    let v = skopeo_inspect_local(&format!("oci:{}:copy", dst.display()), false);
    assert_eq!(v["Digest"], src.manifest_digest);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    // Every blob file hashes to its name.
    for e in std::fs::read_dir(dst.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(sha(&std::fs::read(e.path()).unwrap())[7..], name);
    }
}

#[test]
fn oci_tar_oci_round_trip_keeps_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let src = sample(&t.path().join("src"));
    let tar = t.path().join("image.tar");
    let back = t.path().join("back");
    ok(&["process", &uri("oci", &src.dir, ":v1"), &uri("tar", &tar, "")]);
    ok(&["process", &uri("tar", &tar, ""), &uri("oci", &back, ":v1")]);
    let tar_info = info_json(&uri("tar", &tar, ""));
    let back_info = info_json(&uri("oci", &back, ":v1"));
    for info in [&tar_info, &back_info] {
        assert_eq!(layer_field(info, "diff_id"), src.diff_ids);
    }
    // The archive holds plain layer tars named by diff_id, and a manifest.json
    // whose RepoTags keep the name.
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    for e in archive.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        names.contains(&format!("{}/layer.tar", &src.diff_ids[0][7..])),
        "{names:?}"
    );
    assert!(names.contains(&"manifest.json".to_string()));
    // And back again to tar: same diff_ids.
    let tar2 = t.path().join("again.tar");
    ok(&["process", &uri("oci", &back, ":v1"), &uri("tar", &tar2, "")]);
    assert_eq!(info_json(&uri("tar", &tar2, ""))["layers"], tar_info["layers"]);
}

#[test]
fn dir_with_unique_names_shares_layers_and_catalogs_every_image() {
    let t = tempfile::tempdir().unwrap();
    let base: Vec<(&str, &[u8])> = vec![("etc/base", b"shared base\n")];
    let a = build_layout(&t.path().join("a"), "1", &[base.clone(), vec![("a", b"a")]]);
    let b = build_layout(&t.path().join("b"), "2", &[base, vec![("b", b"b")]]);
    let out = t.path().join("out");
    let dst = uri("dir", &out, "?unique_names=true");
    ok(&["process", &uri("oci", &a.dir, ":1"), &dst]);
    ok(&["process", &uri("oci", &b.dir, ":2"), &dst]);
    let catalog: Value = serde_json::from_slice(&std::fs::read(out.join("catalog.json")).unwrap()).unwrap();
    assert_eq!(catalog["a"]["1"], "manifest-a-1.json", "{catalog}");
    assert_eq!(catalog["b"]["2"], "manifest-b-2.json", "{catalog}");
    let layer_dirs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("layer.tar").exists())
        .count();
    assert_eq!(layer_dirs, 3, "the shared base layer is stored once");
    assert_eq!(a.diff_ids[0], b.diff_ids[0]);
    // Every layer file hashes to its diff_id.
    let p = out.join(&a.diff_ids[1][7..]).join("layer.tar");
    assert_eq!(sha(&std::fs::read(p).unwrap()), a.diff_ids[1]);
}

/// A shared `dir://…?unique_names=true` is readable again: `?image=NAME:TAG`
/// picks one of its images (each read back to an OCI layout keeps its
/// config and layers), and a missing or ambiguous choice lists what the
/// directory holds.
#[test]
fn a_shared_dir_is_read_back_one_image_at_a_time() {
    let out = scratch_dir("shared-dir").join("shared");
    let dst = uri("dir", &out, "?unique_names=true");
    let names = ["app-a", "base"];
    for name in names {
        ok(&["process", &standard_ref(name), &dst]);
    }
    let catalog: Value = serde_json::from_slice(&std::fs::read(out.join("catalog.json")).unwrap()).unwrap();
    let held: Vec<String> = catalog
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(repo, tags)| tags.as_object().unwrap().keys().map(move |t| format!("{repo}:{t}")))
        .collect();
    assert_eq!(held.len(), 2, "{catalog}");
    let layout = out.with_file_name("back");
    for name in names {
        let image = held.iter().find(|h| h.ends_with(&format!(":{name}"))).unwrap();
        let src = format!("{dst}&image={image}");
        let back = format!("oci://{}:{name}", layout.display());
        ok(&["process", &src, &back]);
        crate::support::assert_oci_layout_readable(&layout, name, true);
        let info = json_of(&ok(&["-O", "json", "info", &back]));
        let want = default_image(generated(name));
        assert_eq!(info["config_digest"], want.config.digest.to_string(), "{name}");
        assert_eq!(
            layer_field(&info, "diff_id"),
            default_diff_ids(generated(name)),
            "{name}"
        );
        // The same image through `info` on the dir itself.
        let direct = json_of(&ok(&["-O", "json", "info", &src]));
        assert_eq!(direct["config_digest"], info["config_digest"]);
    }

    // No choice, a choice it lacks, a name with several tags: each lists
    // what the directory holds and how to choose.
    let listed = |stderr: &str| {
        for h in &held {
            assert!(stderr.contains(h.as_str()), "{h} not listed: {stderr}");
        }
        assert!(stderr.contains("?image=NAME:TAG"), "{stderr}");
    };
    listed(&fails(&["info", &dst], 2, "holds several images"));
    listed(&fails(
        &["info", &format!("{dst}&image=nope:1")],
        1,
        "holds no image nope:1",
    ));
    let repo = held[0].rsplit_once(':').unwrap().0;
    fails(
        &["info", &format!("{dst}&image={repo}")],
        2,
        &format!("holds several tags of {repo}"),
    );
    // A name with one tag needs no tag.
    let single = uri("dir", &out.with_file_name("single"), "?unique_names=true");
    ok(&["process", &standard_ref("base"), &single]);
    ok(&["info", &format!("{single}&image={repo}")]);
    // ?image= only reads.
    fails(
        &["process", &standard_ref("base"), &format!("{single}&image={repo}:x")],
        2,
        "picks an image to read",
    );
}

#[test]
fn bundle_holds_the_merged_rootfs_and_a_runtime_config() {
    let t = tempfile::tempdir().unwrap();
    let src = sample(&t.path().join("src"));
    let bundle = t.path().join("bundle");
    ok(&["process", &uri("oci", &src.dir, ":v1"), &uri("bundle", &bundle, "")]);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/os-release")).unwrap(),
        b"ID=occy\n"
    );
    let cfg: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"], json!(["/bin/sh"]));
    assert_eq!(cfg["process"]["cwd"], "/srv");
    assert_eq!(cfg["root"]["path"], "rootfs");
}

#[test]
fn search_reports_the_layer_holding_a_file() {
    let t = tempfile::tempdir().unwrap();
    let src = sample(&t.path().join("src"));
    let out = ok(&["-O", "json", "search", &uri("oci", &src.dir, ":v1"), "**/data.txt"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["layer"], 1);
    assert_eq!(v[0]["path"], "srv/app/data.txt");
    let out = ok(&["search", &uri("oci", &src.dir, ":v1"), "os-release"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("etc/os-release"));
}

#[test]
fn usage_errors_exit_2_and_quote_the_offending_part() {
    fails(&["info", "ftp://host/x"], 2, "\"ftp\"");
    fails(&["info", "dir:///tmp/x?uniq=1"], 2, "\"uniq\"");
    fails(&["info", "registry://host/UPPER:tag"], 2, "\"UPPER\"");
    fails(&["process", "oci:///a:v1"], 2, "DESTINATION");
    fails(
        &["process", "oci:///a:v1", "oci:///b", "--platform", "linux"],
        2,
        "\"linux\"",
    );
}

#[test]
fn missing_and_malformed_inputs_fail_clearly_without_partial_output() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope.tar");
    fails(&["info", &uri("tar", &missing, "")], 1, &missing.display().to_string());
    fails(
        &["info", &uri("oci", &t.path().join("nolayout"), ":v1")],
        1,
        "does not exist",
    );

    // A file that is not a tar archive.
    let junk = t.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    fails(&["info", &uri("tar", &junk, "")], 1, "junk.tar");

    // A layout whose manifest is not JSON.
    let src = sample(&t.path().join("bad-manifest"));
    std::fs::write(
        src.dir.join("blobs/sha256").join(&src.manifest_digest[7..]),
        b"{not json",
    )
    .unwrap();
    fails(&["info", &uri("oci", &src.dir, ":v1")], 1, "digest mismatch");

    // A manifest that matches its digest but is not a manifest: named, exit 1.
    for (i, body) in [&b"{not json"[..], &br#"{"schemaVersion":2,"layers":"x"}"#[..]]
        .into_iter()
        .enumerate()
    {
        let dir = t.path().join(format!("malformed-{i}"));
        let d = write_blob(&dir, body);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": body.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let stderr = fails(&["info", &uri("oci", &dir, ":v1")], 1, &d[7..19]);
        assert!(stderr.contains("manifest"), "{stderr}");
        let out_tar = t.path().join(format!("malformed-{i}.tar"));
        fails(
            &["process", &uri("oci", &dir, ":v1"), &uri("tar", &out_tar, "")],
            1,
            "manifest",
        );
        assert!(!out_tar.exists());
    }

    // An unknown tag names the tags that exist.
    let src = sample(&t.path().join("tags"));
    fails(&["info", &uri("oci", &src.dir, ":v9")], 1, "v1");

    // A corrupted layer byte: digest mismatch, and no tar left behind.
    let src = sample(&t.path().join("corrupt"));
    let layer = &info_json(&uri("oci", &src.dir, ":v1"))["layers"][1]["digest"];
    let path = src.dir.join("blobs/sha256").join(&layer.as_str().unwrap()[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let out_tar = t.path().join("out.tar");
    fails(
        &["process", &uri("oci", &src.dir, ":v1"), &uri("tar", &out_tar, "")],
        1,
        "digest mismatch",
    );
    assert!(!out_tar.exists(), "no archive under the final name");
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("occy-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let out_oci = t.path().join("out-oci");
    fails(
        &["process", &uri("oci", &src.dir, ":v1"), &uri("oci", &out_oci, ":v1")],
        1,
        "digest mismatch",
    );
    assert!(!out_oci.join("index.json").exists(), "no tag written for a failed copy");

    // A destination directory that cannot be made (its parent is a file).
    let src = sample(&t.path().join("ok"));
    let stderr = fails(
        &[
            "process",
            &uri("oci", &src.dir, ":v1"),
            &uri("tar", &junk.join("dir/x.tar"), ""),
        ],
        1,
        "cannot create its directory",
    );
    assert!(stderr.contains(&junk.join("dir").display().to_string()), "{stderr}");
}

/// `process` and `sync` agree: both create the missing directories above a
/// `tar://` or `bundle://` destination, as `mkdir -p` would
/// (docs/references.md says so).
#[test]
fn process_and_sync_create_missing_parent_directories() {
    let t = tempfile::tempdir().unwrap();
    let src = sample(&t.path().join("src"));
    let from = uri("oci", &src.dir, ":v1");
    let tar = t.path().join("p/new/dir/a.tar");
    ok(&["process", &from, &uri("tar", &tar, "")]);
    let bundle = t.path().join("p/other/b");
    ok(&["process", &from, &uri("bundle", &bundle, "")]);
    assert!(bundle.join("config.json").is_file());
    // Relative to the working directory, too.
    let rel = Command::new(occy_bin())
        .current_dir(t.path())
        .args(["process", &from, "tar://rel/dir/r.tar"])
        .output()
        .unwrap();
    assert_ok(&["process", "tar://rel/dir/r.tar"], rel);

    let file = t.path().join("sync.yaml");
    std::fs::write(
        &file,
        format!("version: 1\nsync:\n  - from: {from}\n    to: [tar://s/new/dir/a.tar, bundle://s/other/b]\n"),
    )
    .unwrap();
    ok(&["sync", file.to_str().unwrap()]);
    for archive in [tar, t.path().join("rel/dir/r.tar"), t.path().join("s/new/dir/a.tar")] {
        let sk = skopeo_inspect_local(&format!("docker-archive:{}", archive.display()), false);
        assert_eq!(sk["Layers"].as_array().map(Vec::len), Some(2), "{}", archive.display());
    }
    assert!(t.path().join("s/other/b/config.json").is_file());
}

#[test]
fn the_quickstart_example_image_copies_with_its_digest() {
    let t = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/image");
    let src = uri("oci", &example, ":1.0");
    let info = info_json(&src);
    assert_eq!(info["layer_count"], 2);
    assert_eq!(info["history"]["empty_layers"], 1);
    let dst = t.path().join("copy");
    ok(&["process", &src, &uri("oci", &dst, ":1.0")]);
    assert_eq!(
        info_json(&uri("oci", &dst, ":1.0"))["manifest_digest"],
        info["manifest_digest"]
    );
    // try.sh prints these; keep them working.
    ok(&["search", &src, "**/*"]);
    ok(&["check", &src]);
    ok(&["process", &src, &uri("bundle", &t.path().join("b"), "")]);
    assert!(t.path().join("b/rootfs/bin/hello").exists());
    // The shipped image is exactly what the generator's quickstart set writes.
    let regen = t.path().join("regen");
    occy_testkit::generate::write_layout(&regen, &occy_testkit::generate::quickstart()).unwrap();
    let files = |root: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .chain([root.join("index.json"), root.join("oci-layout")])
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        files(&example) == files(&regen),
        "examples/quickstart/image is stale: regenerate it with `cargo run -p occy-testkit -- generate examples/quickstart/image --set quickstart`"
    );
}

#[test]
fn every_standard_image_round_trips_oci_tar_oci_tar_with_its_diff_ids() {
    let out = scratch_dir("round-trip");
    for g in &standard_images().1 {
        let want = default_diff_ids(g);
        let tar = out.join(format!("{}.tar", g.name));
        let back = out.join("back");
        let tar2 = out.join(format!("{}-again.tar", g.name));
        ok(&["process", &standard_ref(&g.name), &uri("tar", &tar, "")]);
        // skopeo reads our archive: its layers are the diff_ids.
        let sk = skopeo_inspect_local(&format!("docker-archive:{}", tar.display()), false);
        assert_eq!(strings(&sk["Layers"]), want, "{}: skopeo reads other layers", g.name);
        ok(&[
            "process",
            &uri("tar", &tar, ""),
            &uri("oci", &back, &format!(":{}", g.name)),
        ]);
        ok(&[
            "process",
            &uri("oci", &back, &format!(":{}", g.name)),
            &uri("tar", &tar2, ""),
        ]);
        for r in [
            uri("tar", &tar, ""),
            uri("oci", &back, &format!(":{}", g.name)),
            uri("tar", &tar2, ""),
        ] {
            assert_eq!(layer_field(&info_json(&r), "diff_id"), want, "{}: {r}", g.name);
        }
        // The config survives byte for byte, so the image ID does too.
        assert_eq!(
            info_json(&uri("tar", &tar2, ""))["config_digest"],
            default_image(g).config.digest.to_string()
        );
    }
    crate::support::assert_blobs_match_names(&out.join("back"));
}

/// `podman` with a private store under `root` (vfs: works without overlay
/// or fuse, as root or not).
fn podman(root: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]);
    c
}

#[test]
fn podman_loads_our_docker_save_archives() {
    require("podman", "podman");
    let out = scratch_dir("podman-load");
    let probe = podman(&out).arg("images").output().unwrap();
    if !probe.status.success() {
        unavailable(
            "podman",
            &format!("it cannot run here: {}", String::from_utf8_lossy(&probe.stderr)),
        );
        return;
    }
    for name in ["app-a", "multiarch", "dockerv2", "zstd", "whiteouts"] {
        let g = generated(name);
        let tar = out.join(format!("{name}.tar"));
        ok(&["process", &standard_ref(name), &uri("tar", &tar, "")]);
        let load = podman(&out).arg("load").arg("-i").arg(&tar).output().unwrap();
        assert!(
            load.status.success(),
            "podman load {name}: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        let image = format!("standard-images:{name}");
        let inspect = podman(&out).args(["image", "inspect", &image]).output().unwrap();
        assert!(
            inspect.status.success(),
            "podman image inspect {image}: {}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
        let layers: Vec<String> = v[0]["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let want = default_diff_ids(g);
        assert_eq!(layers, want, "{name}: podman's layers");
        assert_eq!(
            format!("sha256:{}", v[0]["Id"].as_str().unwrap()),
            default_image(g).config.digest.to_string(),
            "{name}: image ID is the config digest"
        );
    }
}

#[test]
fn an_unreadable_input_is_named() {
    let out = scratch_dir("unreadable");
    let tar = out.join("secret.tar");
    ok(&["process", &standard_ref("base"), &uri("tar", &tar, "")]);
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o000)).unwrap();
    let args = ["info".to_string(), uri("tar", &tar, "")];
    let output = if nix_is_root() {
        // root reads anything: run a copy of occy as nobody, from a
        // directory nobody can enter.
        require("setpriv", "util-linux");
        let bin_dir = tempfile::Builder::new().prefix("occy-bin-").tempdir().unwrap();
        std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = bin_dir.path().join("occy");
        std::fs::copy(crate::support::occy_bin(), &bin).unwrap();
        for dir in [out.as_path(), out.parent().unwrap()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Another test thread forking while the copy was open for writing
        // keeps it "busy" for a moment (ETXTBSY): try again then.
        let mut attempt = 0;
        loop {
            let o = Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&bin)
                .args(&args)
                .env("HOME", bin_dir.path())
                .output()
                .unwrap();
            attempt += 1;
            if attempt < 50 && String::from_utf8_lossy(&o.stderr).contains("Text file busy") {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            break o;
        }
    } else {
        Command::new(crate::support::occy_bin()).args(&args).output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("secret.tar"), "{stderr}");
    assert!(stderr.to_lowercase().contains("permission denied"), "{stderr}");
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

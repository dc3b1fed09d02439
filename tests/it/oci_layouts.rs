//! OCI layouts that every OCI tool reads (issue 23, points 2 and 3), read
//! back with skopeo, umoci and podman:
//! - a manifest occy makes up (from a docker-save archive, a `dir://`, a
//!   Docker daemon) is written to `oci://` with OCI media types;
//! - a registry image with Docker v2 manifests keeps its bytes (the plan says
//!   once that OCI-only tools may refuse it), and `?format=oci` converts it;
//! - one chosen platform is written as that platform's manifest, its
//!   upstream digest kept; a second run is a no-op.

use std::path::Path;
use std::process::Command;

use crate::support::oci_tools::{podman_pull_oci, tag_entry, tool_or_skip};
use crate::support::*;
use serde_json::Value;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `skopeo copy oci:DIR:TAG docker-archive:OUT` works and the archive holds
/// the layers `want` (diff_ids).
fn skopeo_copies_to_docker_archive(dir: &Path, tag: &str, want: &[String]) {
    if !tool_or_skip("skopeo", "skopeo", "skopeo copy oci: docker-archive:") {
        return;
    }
    let archive = scratch_dir("skopeo-archive").join("x.tar");
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{tag}", dir.display()))
        .arg(format!("docker-archive:{}:occy-test/x:1", archive.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy oci:{}:{tag} docker-archive: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let sk = skopeo_inspect_local(&format!("docker-archive:{}", archive.display()), false);
    assert_eq!(sk["Layers"], serde_json::json!(want));
}

/// A sync file copying `from` to `to`, written in `dir`.
fn sync_file(dir: &Path, entries: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("version: 1\nsync:\n");
    for (from, platforms, to) in entries {
        text.push_str(&format!("  - from: \"{from}\"\n"));
        if !platforms.is_empty() {
            text.push_str(&format!("    platforms: [{platforms}]\n"));
        }
        text.push_str(&format!("    to: \"{to}\"\n"));
    }
    let path = dir.join("sync.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Applies `file`, then checks that a second plan has nothing to do.
fn sync_then_nothing_to_do(file: &str) -> String {
    let out = ok(&["sync", file]);
    let plan = occy(&["sync", file, "--plan", "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "a second run has work to do:\n{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn manifests_made_up_from_archives_dirs_and_daemons_are_oci_in_an_oci_layout() {
    let work = scratch_dir("synthesised");
    let out = work.join("layout");
    // Docker v2 (uncompressed layers in the archive) and OCI sources alike.
    let mut written: Vec<(String, Vec<String>)> = Vec::new();
    for name in ["dockerv2", "app-a", "whiteouts"] {
        let g = generated(name);
        let tar = work.join(format!("{name}.tar"));
        ok(&["process", &standard_ref(name), &format!("tar://{}", tar.display())]);
        let dir = work.join(format!("{name}-dir"));
        ok(&["process", &standard_ref(name), &format!("dir://{}", dir.display())]);
        for (kind, src) in [
            ("tar", format!("tar://{}", tar.display())),
            ("dir", format!("dir://{}", dir.display())),
        ] {
            let tag = format!("{name}-{kind}");
            written.push((tag.clone(), default_diff_ids(g)));
            let file = sync_file(&work, &[(&src, "", &format!("oci://{}:{tag}", out.display()))]);
            let stderr = sync_then_nothing_to_do(&file);
            assert!(
                !stderr.contains("Docker v2"),
                "no warning for a made-up manifest: {stderr}"
            );
        }
    }
    // From the Docker Engine, when it is there.
    let daemon = Path::new("/var/run/docker.sock");
    if daemon.exists() {
        let docker = "docker://occy-test/ocilayout-app-a:1.0";
        ok(&["process", &standard_ref("app-a"), docker]);
        ok(&["process", docker, &format!("oci://{}:daemon", out.display())]);
        written.push(("daemon".into(), default_diff_ids(generated("app-a"))));
        let _ = Command::new("docker")
            .args(["rmi", "occy-test/ocilayout-app-a:1.0"])
            .output();
    } else {
        unavailable(
            "the Docker Engine",
            "/var/run/docker.sock does not exist, so docker:// → oci:// is not checked",
        );
    }

    for (tag, diff_ids) in &written {
        let entry = tag_entry(&out, tag);
        assert_eq!(entry["mediaType"], OCI_MANIFEST, "{tag}: {entry}");
        assert_oci_layout_readable(&out, tag, true);
        skopeo_copies_to_docker_archive(&out, tag, diff_ids);
        // occy reads it back with the same layers.
        let info = json_of(&ok(&["-O", "json", "info", &format!("oci://{}:{tag}", out.display())]));
        assert_eq!(&layer_field(&info, "diff_id"), diff_ids, "{tag}");
    }
    assert_blobs_match_names(&out);
    if let Some(id) = podman_pull_oci(&out, "dockerv2-tar") {
        let config = default_image(generated("dockerv2")).config.digest.to_string();
        assert_eq!(format!("sha256:{id}"), config, "podman's image ID is the config digest");
    }
}

#[test]
fn a_docker_v2_registry_image_keeps_its_bytes_and_format_oci_converts_it() {
    let reg = Registry::shared(Mode::Plain);
    let out = scratch_dir("docker-v2").join("layout");
    // occy pushes the generated Docker v2 images byte for byte.
    for name in ["dockerv2", "dockerlist"] {
        reg.ok(&[
            "process",
            "--all-platforms",
            &standard_ref(name),
            &reg.url(&format!("test/{name}:1.0")),
        ]);
    }
    let g = generated("dockerv2");
    let src = reg.url("test/dockerv2:1.0");

    // Kept: the upstream digest, and one warning that OCI-only tools may refuse it.
    let kept = format!("oci://{}:kept", out.display());
    let o = reg.ok(&["process", &src, &kept]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.matches("OCI-only tools").count(), 1, "{stderr}");
    assert!(stderr.contains("?format=oci"), "{stderr}");
    assert_eq!(tag_entry(&out, "kept")["digest"], g.descriptor.digest.to_string());
    assert_oci_layout_readable(&out, "kept", false);

    // Converted: OCI media types, the same blobs, a new digest (warned).
    let conv = format!("oci://{}:conv?format=oci", out.display());
    let o = reg.ok(&["process", &src, &conv]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("converts its Docker v2 manifests to OCI media types"),
        "{stderr}"
    );
    let entry = tag_entry(&out, "conv");
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_ne!(entry["digest"], g.descriptor.digest.to_string());
    assert_oci_layout_readable(&out, "conv", true);
    skopeo_copies_to_docker_archive(&out, "conv", &default_diff_ids(g));

    // A manifest list, every platform: an OCI index of OCI manifests.
    let list = reg.url("test/dockerlist:1.0");
    let dst = format!("oci://{}:list?format=oci", out.display());
    reg.ok(&["process", "--all-platforms", &list, &dst]);
    let entry = tag_entry(&out, "list");
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_oci_layout_readable(&out, "list", true);

    // The plan of a sync file says it once for all, and a second run is a no-op.
    let work = scratch_dir("docker-v2-sync");
    let file = sync_file(
        &work,
        &[
            (&src, "", &format!("oci://{}/a", work.display())),
            (&src, "", &format!("oci://{}/b", work.display())),
            (&src, "", &format!("oci://{}/c?format=oci", work.display())),
        ],
    );
    let flags = reg.occy_flags();
    let plan = occy_with(&flags, &["sync", &file, "--plan"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert_eq!(text.matches("OCI-only tools").count(), 1, "{text}");
    assert!(text.contains("and 1 more OCI-layout destinations"), "{text}");
    assert!(text.contains("converts its Docker v2 manifests"), "{text}");
    assert_ok(&["sync"], occy_with(&flags, &["sync", &file]));
    let again = occy_with(&flags, &["sync", &file, "--plan", "--detailed-exitcode"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_oci_layout_readable(&work.join("c"), "1.0", true);
    assert_oci_layout_readable(&work.join("a"), "1.0", false);
}

#[test]
fn a_format_other_than_oci_and_format_on_a_source_are_refused() {
    let out = scratch_dir("format-errors");
    fails(
        &[
            "process",
            &standard_ref("app-a"),
            &format!("oci://{}:x?format=v2s2", out.display()),
        ],
        2,
        "expected oci",
    );
    fails(
        &[
            "process",
            &format!("{}?format=oci", standard_ref("app-a")),
            &format!("oci://{}:x", out.display()),
        ],
        2,
        "applies to a destination",
    );
}

#[test]
fn one_platform_is_written_as_its_manifest() {
    let g = generated("multiarch");
    let arm64 = g.images.iter().find(|i| i.platform.architecture == "arm64").unwrap();
    let work = scratch_dir("one-platform");
    let out = work.join("layout");

    // process --platform: the tag names the arm64 manifest, upstream digest kept.
    ok(&[
        "process",
        "--platform",
        "linux/arm64",
        &standard_ref("multiarch"),
        &format!("oci://{}:arm", out.display()),
    ]);
    let entry = tag_entry(&out, "arm");
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["digest"], arm64.manifest.digest.to_string());
    assert_oci_layout_readable(&out, "arm", true);
    let sk = skopeo_inspect_local(&format!("oci:{}:arm", out.display()), false);
    assert_eq!(sk["Architecture"], "arm64");

    // A sync entry with one platform: the same, and a second run is a no-op.
    let file = sync_file(
        &work,
        &[(
            &standard_ref("multiarch"),
            "linux/arm64",
            &format!("oci://{}:synced", out.display()),
        )],
    );
    let stderr = sync_then_nothing_to_do(&file);
    assert!(!stderr.contains("not the upstream"), "no digest is made up: {stderr}");
    assert_eq!(tag_entry(&out, "synced")["digest"], arm64.manifest.digest.to_string());
    assert_oci_layout_readable(&out, "synced", true);

    // Every platform: the index itself, its digest kept.
    ok(&[
        "process",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64/v8",
        &standard_ref("multiarch"),
        &format!("oci://{}:both", out.display()),
    ]);
    let entry = tag_entry(&out, "both");
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_eq!(entry["digest"], g.descriptor.digest.to_string());
    assert_oci_layout_readable(&out, "both", true);
}

#[test]
fn two_of_three_platforms_write_a_rewritten_index_and_say_so() {
    // A three-platform index made from the generated images: amd64, arm64
    // and the app-a image labelled s390x.
    let g = generated("multiarch");
    let work = scratch_dir("three-platforms");
    let layout = work.join("src");
    ok(&[
        "process",
        "--all-platforms",
        &standard_ref("multiarch"),
        &format!("oci://{}:m", layout.display()),
    ]);
    ok(&[
        "process",
        &standard_ref("app-a"),
        &format!("oci://{}:a", layout.display()),
    ]);
    let mut extra = tag_entry(&layout, "a");
    extra.as_object_mut().unwrap().remove("annotations");
    extra["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let mut index: Value = serde_json::from_slice(&crate::support::layout_edit::read_blob(
        &layout,
        &g.descriptor.digest.to_string(),
    ))
    .unwrap();
    index["manifests"].as_array_mut().unwrap().push(extra);
    let bytes = serde_json::to_vec(&index).unwrap();
    crate::support::layout_edit::write_blob(&layout, &bytes);
    crate::support::layout_edit::retag(&layout, "m", &bytes);
    let upstream = format!("sha256:{}", crate::support::outputs::sha256_hex(&bytes));

    let out = work.join("out");
    let run = ok(&[
        "process",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        &format!("oci://{}:m", layout.display()),
        &format!("oci://{}:two", out.display()),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("rewritten"), "{stderr}");
    let entry = tag_entry(&out, "two");
    assert_eq!(entry["mediaType"], OCI_INDEX);
    assert_ne!(entry["digest"], upstream);
    let raw = skopeo_inspect_local(&format!("oci:{}:two", out.display()), true);
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    assert_oci_layout_readable(&out, "two", true);
}

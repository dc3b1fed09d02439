//! `registry://` as a destination, against real Distribution registries:
//! registry → registry copies keep manifest bytes and digests (checked with
//! `skopeo inspect --raw` and sha256 on both sides), shared blobs are sent
//! once, same-registry copies mount instead of uploading, an index goes with
//! all or some of its platforms, pushes by tag and by digest, and refused
//! pushes (no credentials, a read-only registry) fail clearly with nothing
//! left under the tag.

use std::sync::OnceLock;

use crate::support::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The source registry: every standard image as `test/NAME:1.0`, pushed by
/// skopeo (not occy) so the destination side is the only occy under test.
fn source() -> &'static Registry {
    static DONE: OnceLock<()> = OnceLock::new();
    let reg = Registry::shared(Mode::Plain);
    DONE.get_or_init(|| {
        for g in &standard_images().1 {
            // skopeo cannot read Docker media types out of an OCI layout, so
            // those go in through occy's own OCI-layout source.
            if g.descriptor.media_type.starts_with("application/vnd.oci.") {
                reg.push_layout(&standard_images().0, &g.name, &format!("test/{}:1.0", g.name));
            } else {
                reg.ok(&[
                    "process",
                    "--all-platforms",
                    &standard_ref(&g.name),
                    &reg.url(&format!("test/{}:1.0", g.name)),
                ]);
            }
        }
    });
    reg
}

/// sha256 of the manifest bytes `repo_ref` names, as skopeo reads them.
fn raw_digest(reg: &Registry, repo_ref: &str) -> String {
    let out = reg.skopeo(
        &["inspect", "--raw", &format!("docker://{}/{repo_ref}", reg.host)],
        false,
    );
    assert!(
        out.status.success(),
        "skopeo inspect --raw {repo_ref}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("sha256:{}", hex::encode(Sha256::digest(&out.stdout)))
}

/// Runs occy with the flags of both registries.
fn occy2(a: &Registry, b: &Registry, args: &[&str]) -> std::process::Output {
    let mut flags = a.occy_flags();
    flags.extend(b.occy_flags());
    occy_with(&flags, args)
}

fn report(a: &Registry, b: &Registry, args: &[&str]) -> Value {
    let mut full = vec!["-O", "json"];
    full.extend_from_slice(args);
    json_of(&assert_ok(&full, occy2(a, b, &full)))
}

#[test]
fn registry_to_registry_keeps_every_digest_and_sends_each_blob_once() {
    let src = source();
    let dst = Registry::start(Mode::Basic);
    let set = [
        "base",
        "app-a",
        "app-b",
        "multiarch",
        "zstd",
        "dockerv2",
        "dockerlist",
        "plain",
        "whiteouts",
    ];
    let mut copied = 0;
    let mut skipped = 0;
    for name in set {
        let g = generated(name);
        assert_eq!(
            raw_digest(src, &format!("test/{name}:1.0")),
            g.descriptor.digest.to_string()
        );
        // One repository for the whole set: a layer already there is not sent again.
        let r = report(
            src,
            &dst,
            &[
                "process",
                "--all-platforms",
                &src.url(&format!("test/{name}:1.0")),
                &dst.url(&format!("mirror/set:{name}")),
            ],
        );
        assert_eq!(r["digest"], g.descriptor.digest.to_string(), "{name}");
        assert_eq!(r["layers_mounted"], 0, "different registries: nothing to mount from");
        copied += r["layers_copied"].as_u64().unwrap();
        skipped += r["layers_skipped"].as_u64().unwrap();
        assert_eq!(
            raw_digest(&dst, &format!("mirror/set:{name}")),
            g.descriptor.digest.to_string(),
            "{name}: the destination holds other manifest bytes"
        );
    }
    let distinct: std::collections::BTreeSet<String> = set
        .iter()
        .flat_map(|n| generated(n).images.iter().flat_map(|i| i.layers.iter()))
        .map(|l| l.digest.to_string())
        .collect();
    assert_eq!(
        copied as usize,
        distinct.len(),
        "each distinct layer uploaded exactly once"
    );
    assert!(
        skipped >= 2,
        "the shared base layer was found in place ({skipped} skipped)"
    );

    // Again: nothing moves.
    let r = report(
        src,
        &dst,
        &["process", &src.url("test/app-b:1.0"), &dst.url("mirror/set:app-b")],
    );
    assert_eq!(r["layers_copied"], 0);
    assert_eq!(r["bytes"], 0);
}

#[test]
fn same_registry_copies_mount_every_layer() {
    let src = source();
    for name in ["base", "app-a", "app-b", "multiarch"] {
        let g = generated(name);
        let layers: std::collections::BTreeSet<String> = g
            .images
            .iter()
            .flat_map(|i| i.layers.iter())
            .map(|l| l.digest.to_string())
            .collect();
        let args = [
            "-O",
            "json",
            "process",
            "--all-platforms",
            &src.url(&format!("test/{name}:1.0")),
            &src.url(&format!("mounted/{name}:2.0")),
        ];
        let r = json_of(&src.ok(&args));
        assert_eq!(r["layers_mounted"], layers.len() as u64, "{name}: {r}");
        assert_eq!(r["layers_copied"], 0, "{name}: {r}");
        assert_eq!(r["bytes"], 0, "{name}: {r}");
        assert_eq!(
            raw_digest(src, &format!("mounted/{name}:2.0")),
            g.descriptor.digest.to_string()
        );
    }
}

#[test]
fn an_index_goes_whole_and_one_chosen_platform_goes_as_its_manifest() {
    let src = source();
    let g = generated("multiarch");
    // Default: one platform, as skopeo does: the tag names that manifest.
    src.ok(&["process", &src.url("test/multiarch:1.0"), &src.url("one/multiarch:1.0")]);
    let amd64 = g.images.iter().find(|i| i.platform.architecture == "amd64").unwrap();
    assert_eq!(raw_digest(src, "one/multiarch:1.0"), amd64.manifest.digest.to_string());

    // One platform named: that platform's manifest, its upstream digest
    // kept, as skopeo and crane do (no one-entry index whose digest exists
    // nowhere upstream). Two of three platforms: see tests/it/oci_layouts.rs.
    let args = [
        "process",
        "--platform",
        "linux/arm64",
        &src.url("test/multiarch:1.0"),
        &src.url("sub/multiarch:1.0"),
    ];
    src.ok(&args);
    let arm64 = g.images.iter().find(|i| i.platform.architecture == "arm64").unwrap();
    assert_eq!(raw_digest(src, "sub/multiarch:1.0"), arm64.manifest.digest.to_string());
    assert_eq!(src.inspect("sub/multiarch:1.0", false)["Architecture"], "arm64");
    // Both platforms named: the index is kept as is.
    src.ok(&[
        "process",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64/v8",
        &src.url("test/multiarch:1.0"),
        &src.url("both/multiarch:1.0"),
    ]);
    assert_eq!(raw_digest(src, "both/multiarch:1.0"), g.descriptor.digest.to_string());
}

#[test]
fn push_by_digest_checks_the_digest_and_tags_nothing() {
    let src = source();
    let g = generated("app-a");
    let digest = g.descriptor.digest.to_string();
    src.ok(&[
        "process",
        &src.url("test/app-a:1.0"),
        &src.url(&format!("bydigest/app-a@{digest}")),
    ]);
    assert_eq!(raw_digest(src, &format!("bydigest/app-a@{digest}")), digest);
    let tags = src.skopeo(&["list-tags", &format!("docker://{}/bydigest/app-a", src.host)], false);
    let tags: Value = serde_json::from_slice(&tags.stdout).unwrap_or(Value::Null);
    assert!(
        tags["Tags"].as_array().is_none_or(|t| t.is_empty()),
        "a push by digest made a tag: {tags}"
    );
    // A digest that is not the image's: refused, no manifest pushed.
    let wrong = generated("base").descriptor.digest.to_string();
    let args = [
        "process",
        &src.url("test/app-a:1.0"),
        &src.url(&format!("wrongdigest/app-a@{wrong}")),
    ];
    assert_fails(&args, src.occy(&args), 1, &wrong);
    let pinned = src.skopeo(
        &[
            "inspect",
            "--raw",
            &format!("docker://{}/wrongdigest/app-a@{digest}", src.host),
        ],
        false,
    );
    assert!(
        !pinned.status.success(),
        "the manifest was pushed under a wrong pinned digest"
    );
}

#[test]
fn refused_pushes_fail_clearly_and_leave_no_tag() {
    let src = source();
    // No credentials for a basic-auth registry.
    let locked = Registry::shared(Mode::Basic);
    let args = [
        "--insecure-registry",
        &src.host,
        "--insecure-registry",
        &locked.host,
        "process",
        &src.url("test/app-a:1.0"),
        &locked.url("refused/app-a:1.0"),
    ];
    let stderr = assert_fails(&args, occy(&args), 1, "credentials");
    assert!(stderr.contains("refused/app-a"), "{stderr}");
    let tags = locked.skopeo(
        &["list-tags", &format!("docker://{}/refused/app-a", locked.host)],
        false,
    );
    assert!(!tags.status.success(), "the repository exists after a refused push");

    // A read-only registry refuses every write.
    let ro = Registry::start_with(Mode::Plain, "  maintenance:\n    readonly:\n      enabled: true\n");
    let args = [
        "--insecure-registry",
        &src.host,
        "--insecure-registry",
        &ro.host,
        "--retries",
        "0",
        "process",
        &src.url("test/app-a:1.0"),
        &ro.url("ro/app-a:1.0"),
    ];
    let out = occy(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&ro.host) && !stderr.contains("panicked"), "{stderr}");
    let manifest = ro.skopeo(
        &["inspect", "--raw", &format!("docker://{}/ro/app-a:1.0", ro.host)],
        false,
    );
    assert!(!manifest.status.success(), "a read-only registry got a tag");
}

/// The layers of a manifest a registry holds: (media type, digest, size).
fn layers_of(reg: &Registry, repo_tag: &str) -> Vec<(String, String, u64)> {
    reg.inspect(repo_tag, true)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn layers_that_arrive_uncompressed_are_compressed_for_a_registry_once() {
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir("compress-push");
    let tar = dir.join("app.tar");
    let tar_ref = format!("tar://{}", tar.display());
    // A docker-save archive: its layers are plain tar.
    reg.ok(&["process", &standard_ref("app-a"), &tar_ref]);
    let config_of = |r: &str| -> Value {
        let out = reg.skopeo(&["inspect", "--config", r], false);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let diff_ids = config_of(&format!("docker-archive:{}", tar.display()))["rootfs"]["diff_ids"].clone();

    // process: gzip by default, as skopeo pushes it.
    reg.ok(&["process", &tar_ref, &reg.url("compressed/app:gz")]);
    let layers = layers_of(reg, "compressed/app:gz");
    assert!(!layers.is_empty());
    for (mt, digest, _) in &layers {
        assert_eq!(mt, "application/vnd.docker.image.rootfs.diff.tar.gzip", "{layers:?}");
        assert!(
            !diff_ids.as_array().unwrap().iter().any(|d| d == digest),
            "a layer went up uncompressed: {layers:?}"
        );
    }
    let pushed = config_of(&format!("docker://{}/compressed/app:gz", reg.host));
    assert_eq!(pushed["rootfs"]["diff_ids"], diff_ids, "compression keeps the diff_ids");

    // --compression zstd chooses zstd (and OCI media types, which have one).
    reg.ok(&[
        "--compression",
        "zstd",
        "process",
        &tar_ref,
        &reg.url("compressed/app:zstd"),
    ]);
    for (mt, _, _) in layers_of(reg, "compressed/app:zstd") {
        assert_eq!(mt, "application/vnd.oci.image.layer.v1.tar+zstd");
    }

    // A sync: the plan says so; a second run finds the output in the layer
    // cache and the registry, and compresses nothing again.
    let file = dir.join("sync.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nregistries:\n  {h}: {{ insecure: true }}\nsync:\n  - from: {tar_ref}\n    to: registry://{h}/compressed/synced:1.0\n",
            h = reg.host
        ),
    )
    .unwrap();
    let cache = dir.join("cache");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-O",
            "json",
            "sync",
            file.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        serde_json::from_slice::<Value>(&reg.ok(&args).stdout).unwrap()
    };
    let plan = run(&["--plan"]);
    let target = &plan["targets"][0];
    assert_eq!(target["action"], "rebuild", "{target}");
    assert!(
        target["reason"].as_str().unwrap().contains("compressed (gzip)"),
        "{target}"
    );
    let first = run(&[]);
    assert_eq!(first["written"], 1, "{first}");
    assert!(first["layers_rewritten"].as_u64().unwrap() >= 1, "{first}");
    let plan = run(&["--plan"]);
    assert_eq!(plan["totals"]["unchanged"], 1, "{}", plan["totals"]);
    let second = run(&[]);
    assert_eq!(second["written"], 0, "{second}");
    assert_eq!(second["layers_rewritten"], 0, "{second}");
    assert_eq!(
        layers_of(reg, "compressed/synced:1.0"),
        layers_of(reg, "compressed/app:gz")
    );
}

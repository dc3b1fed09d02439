//! `occy check` on deliberately broken images, built here from the
//! generated ones: each defect makes exactly the expected rule ids fire,
//! and every good image (and every filter's output) passes with no error,
//! in fast and full mode, in text and JSON, from an OCI layout, a tar, a dir
//! and a registry.

use std::path::Path;

use crate::support::layout_edit::*;
use crate::support::*;
use serde_json::Value;

/// Runs `occy -O json check [--fast] REF` and returns (exit code, report).
fn check(reference: &str, fast: bool) -> (i32, Value) {
    let mut args = vec!["-O", "json", "check", reference];
    if fast {
        args.push("--fast");
    }
    let out = occy(&args);
    let code = out.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "occy check {reference}: exit {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, json_of(&out))
}

fn ids(report: &Value, severity: &str) -> Vec<String> {
    let mut v: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["severity"] == severity)
        .map(|r| r["check"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Asserts that a full check finds exactly the error ids `want`.
fn expect_errors(dir: &Path, tag: &str, want: &[&str]) -> Value {
    let (code, report) = check(&format!("oci://{}:{tag}", dir.display()), false);
    assert_eq!(ids(&report, "error"), want, "{report:#}");
    assert_eq!(code, if want.is_empty() { 0 } else { 1 });
    report
}

#[test]
fn good_images_pass_in_every_mode_and_format() {
    for g in &standard_images().1 {
        let r = standard_ref(&g.name);
        for fast in [true, false] {
            let (code, report) = check(&r, fast);
            assert_eq!(code, 0, "{}: {report:#}", g.name);
            assert_eq!(report["errors"], 0);
            assert_eq!(report["mode"], if fast { "fast" } else { "full" });
        }
    }
    // Text output ends with the counts.
    let out = ok(&["check", &standard_ref("zstd")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[zstd-compat]"), "{text}");
    assert!(text.trim_end().ends_with("0 error(s), 1 warning(s)"), "{text}");
    // Other sources: tar, dir, registry.
    let out = scratch_dir("check-sources");
    let tar = format!("tar://{}", out.join("a.tar").display());
    let dir = format!("dir://{}", out.join("d").display());
    ok(&["process", &standard_ref("app-a"), &tar]);
    ok(&["process", &standard_ref("app-a"), &dir]);
    for r in [&tar, &dir] {
        assert_eq!(check(r, false).0, 0, "{r}");
        assert_eq!(check(r, true).0, 0, "{r}");
    }
    let reg = Registry::shared(Mode::Plain);
    reg.ok(&[
        "process",
        "--all-platforms",
        &standard_ref("multiarch"),
        &reg.url("check/multi:1"),
    ]);
    // A blob the registry lacks, found by HEAD in the fast mode.
    let g = generated("multiarch");
    let amd64 = default_image(g);
    let victim = amd64.layers.last().unwrap().digest.to_string();
    let own = Registry::start(Mode::Plain);
    own.ok(&[
        "process",
        "--all-platforms",
        &standard_ref("multiarch"),
        &own.url("check/multi:1"),
    ]);
    std::fs::remove_file(own.blob_path(&victim)).unwrap();
    let args = ["-O", "json", "check", "--fast", &own.url("check/multi:1")];
    let out = own.occy(&args);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ids(&json_of(&out), "error"), ["blob-exists"]);
    for fast in [true, false] {
        let args = ["-O", "json", "check", &reg.url("check/multi:1")];
        let mut args = args.to_vec();
        if fast {
            args.push("--fast");
        }
        let report = json_of(&reg.ok(&args));
        assert_eq!(report["errors"], 0, "{report:#}");
    }
}

#[test]
fn filter_outputs_pass() {
    let out = scratch_dir("check-filtered");
    for (i, f) in [
        "normalize-timestamps:config=true",
        "exclude:pattern=usr/share/doc/*,pattern=**/os-release",
        "recompress:format=zstd",
        "search:pattern=*.txt",
    ]
    .iter()
    .enumerate()
    {
        let dst = format!("oci://{}:f{i}", out.display());
        ok(&["process", &standard_ref("whiteouts"), &dst, "-f", f]);
        let (code, report) = check(&dst, false);
        assert_eq!(code, 0, "{f}: {report:#}");
        assert_oci_layout_readable(&out, &format!("f{i}"), true);
    }
}

#[test]
fn each_defect_fires_exactly_its_rule() {
    // More layers than diff_ids.
    let d = layout_of("app-a");
    mutate(&d, "app-a", |_, _, c| {
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    });
    expect_errors(&d, "app-a", &["layer-count"]);

    // A diff_id that is not the layer's (a rewrite that forgot the config).
    let d = layout_of("app-a");
    mutate(&d, "app-a", |_, _, c| {
        c["rootfs"]["diff_ids"][1] = Value::from(format!("sha256:{}", "ab".repeat(32)));
    });
    expect_errors(&d, "app-a", &["diff-id"]);

    // A corrupted layer byte.
    let d = layout_of("base");
    let layer = read_json_layer(&d, "base", 0);
    let path = d.join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    expect_errors(&d, "base", &["layer-digest"]);
    // The fast mode reads no layer, so it does not see it.
    assert_eq!(check(&format!("oci://{}:base", d.display()), true).0, 0);

    // A stale config digest: the config changed after the manifest was written.
    let d = layout_of("base");
    let t = top(&d, "base");
    let manifest: Value = serde_json::from_slice(&read_blob(&d, t["digest"].as_str().unwrap())).unwrap();
    let cpath = d.join("blobs/sha256").join(
        manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let mut c = std::fs::read(&cpath).unwrap();
    let n = c.len();
    c[n - 2] = b' ';
    std::fs::write(&cpath, c).unwrap();
    expect_errors(&d, "base", &["config-digest"]);

    // History misaligned: one layer-making entry too many.
    let d = layout_of("app-a");
    mutate(&d, "app-a", |_, _, c| {
        c["history"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"created": "2030-01-01T00:00:00Z", "created_by": "extra"}));
    });
    expect_errors(&d, "app-a", &["history-count"]);

    // History out of order.
    let d = layout_of("app-a");
    mutate(&d, "app-a", |_, _, c| {
        let h = c["history"].as_array_mut().unwrap();
        h[0]["created"] = Value::from("2031-01-01T00:00:00Z");
    });
    expect_errors(&d, "app-a", &["history-order"]);

    // A gzip blob declared as zstd (OCI, so the type itself is allowed).
    let d = layout_of("app-a");
    mutate(&d, "app-a", |_, m, _| {
        m["layers"][1]["mediaType"] = Value::from("application/vnd.oci.image.layer.v1.tar+zstd");
    });
    let r = expect_errors(&d, "app-a", &["compression-mismatch"]);
    assert_eq!(ids(&r, "warning"), ["zstd-compat"]);

    // An OCI layer type inside a Docker v2 manifest.
    let d = layout_of("dockerv2");
    mutate(&d, "dockerv2", |_, m, _| {
        m["layers"][0]["mediaType"] = Value::from("application/vnd.oci.image.layer.v1.tar+gzip");
    });
    expect_errors(&d, "dockerv2", &["media-type"]);

    // A whiteout with content.
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        add_layer(
            dir,
            m,
            c,
            &raw_tar("etc/.wh.passwd", tar::EntryType::Regular, "", b"oops"),
        );
    });
    expect_errors(&d, "base", &["whiteout"]);

    // A path that escapes the root, and a hardlink that does.
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        add_layer(dir, m, c, &raw_tar("../escape", tar::EntryType::Regular, "", b"x"));
    });
    expect_errors(&d, "base", &["path-escape"]);
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        add_layer(
            dir,
            m,
            c,
            &raw_tar("usr/link", tar::EntryType::Symlink, "../../../etc/shadow", b""),
        );
    });
    expect_errors(&d, "base", &["path-escape"]);

    // The schema version and the rootfs type.
    let d = layout_of("base");
    mutate(&d, "base", |_, m, c| {
        m["schemaVersion"] = Value::from(3);
        c["rootfs"]["type"] = Value::from("squashfs");
    });
    expect_errors(&d, "base", &["rootfs-type", "schema-version"]);

    // A missing blob: found by the fast mode too.
    let d = layout_of("base");
    let layer = read_json_layer(&d, "base", 0);
    std::fs::remove_file(d.join("blobs/sha256").join(layer.trim_start_matches("sha256:"))).unwrap();
    let (code, r) = check(&format!("oci://{}:base", d.display()), true);
    assert_eq!(code, 1);
    assert_eq!(ids(&r, "error"), ["blob-exists"]);

    // A world-writable file and ArgsEscaped: warnings, exit 0.
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        let mut t = raw_tar("srv/open", tar::EntryType::Regular, "", b"x");
        // mode 0666 (octal field at 100..108), then a fresh checksum.
        t[100..108].copy_from_slice(b"0000666\0");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&t[..512]);
        h.set_cksum();
        t[..512].copy_from_slice(h.as_bytes());
        add_layer(dir, m, c, &t);
        c["config"]["ArgsEscaped"] = Value::from(true);
    });
    let r = expect_errors(&d, "base", &[]);
    assert_eq!(ids(&r, "warning"), ["args-escaped", "tar-permissions"]);
}

#[test]
fn index_defects_are_named() {
    // The arm64 entry points at the amd64 manifest (and so its config).
    let d = layout_of("multiarch");
    let t = top(&d, "multiarch");
    let mut index: Value = serde_json::from_slice(&read_blob(&d, t["digest"].as_str().unwrap())).unwrap();
    let entries = index["manifests"].as_array_mut().unwrap();
    let amd64 = entries
        .iter()
        .find(|e| e["platform"]["architecture"] == "amd64")
        .unwrap()
        .clone();
    for e in entries.iter_mut() {
        if e["platform"]["architecture"] == "arm64" {
            e["digest"] = amd64["digest"].clone();
            e["size"] = amd64["size"].clone();
        }
    }
    retag(&d, "multiarch", &serde_json::to_vec(&index).unwrap());
    expect_errors(&d, "multiarch", &["index-platform"]);

    // The same platform twice, and an entry that is not there.
    let d = layout_of("multiarch");
    let t = top(&d, "multiarch");
    let mut index: Value = serde_json::from_slice(&read_blob(&d, t["digest"].as_str().unwrap())).unwrap();
    let first = index["manifests"][0].clone();
    let mut missing = first.clone();
    missing["digest"] = Value::from(format!("sha256:{}", "0".repeat(64)));
    missing["platform"]["architecture"] = Value::from("s390x");
    index["manifests"].as_array_mut().unwrap().push(first);
    index["manifests"].as_array_mut().unwrap().push(missing);
    retag(&d, "multiarch", &serde_json::to_vec(&index).unwrap());
    let r = expect_errors(&d, "multiarch", &["index-entry"]);
    assert_eq!(ids(&r, "warning"), ["index-duplicate-platform"]);
}

/// The digest of layer `i` of a single-image tag.
fn read_json_layer(dir: &Path, tag: &str, i: usize) -> String {
    let t = top(dir, tag);
    let manifest: Value = serde_json::from_slice(&read_blob(dir, t["digest"].as_str().unwrap())).unwrap();
    manifest["layers"][i]["digest"].as_str().unwrap().to_string()
}

#[test]
fn process_verifies_what_it_wrote() {
    let out = scratch_dir("verify");
    let layout = out.join("layout");
    let dst = |tag: &str| format!("oci://{}:{tag}", layout.display());
    // Every route passes the full check of what it wrote.
    ok(&[
        "process",
        "--verify-full",
        "--all-platforms",
        &standard_ref("multiarch"),
        &dst("m"),
    ]);
    assert_oci_layout_readable(&layout, "m", true);
    ok(&[
        "process",
        "--verify-full",
        &standard_ref("app-a"),
        &format!("tar://{}", out.join("a.tar").display()),
    ]);
    ok(&[
        "process",
        "--verify-full",
        &standard_ref("app-b"),
        &format!("dir://{}?unique_names=true", out.join("dir").display()),
    ]);
    ok(&[
        "process",
        "--verify-full",
        &standard_ref("app-a"),
        &format!("dir://{}?unique_names=true", out.join("dir").display()),
    ]);
    let reg = Registry::shared(Mode::Plain);
    reg.ok(&[
        "process",
        "--verify-full",
        &standard_ref("zstd"),
        &reg.url("verify/zstd:1"),
    ]);

    // A destination blob that is present but corrupt is skipped by the copy
    // (it has that name) — and caught by the full verification.
    ok(&["process", &standard_ref("app-a"), &dst("a1")]);
    assert_oci_layout_readable(&layout, "a1", true);
    let layer = read_json_layer(&layout, "a1", 1);
    let path = layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let args = ["process", "--verify-full", &standard_ref("app-a"), &dst("a2")];
    let stderr = assert_fails(&args, occy(&args), 1, "layer-digest");
    assert!(stderr.contains("verification of"), "{stderr}");
    // The fast check cannot see it; --no-verify does not look at all.
    ok(&["process", &standard_ref("app-a"), &dst("a3")]);
    ok(&["process", "--no-verify", &standard_ref("app-a"), &dst("a4")]);
}

#[test]
fn the_remaining_rules_fire_too() {
    // A time before 1970 (negative base-256 mtime).
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        let mut t = raw_tar("srv/old", tar::EntryType::Regular, "", b"x");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&t[..512]);
        // -1 in base-256: all bits set.
        h.as_mut_bytes()[136..148].copy_from_slice(&[0xff; 12]);
        h.set_cksum();
        t[..512].copy_from_slice(h.as_bytes());
        add_layer(dir, m, c, &t);
    });
    expect_errors(&d, "base", &["tar-timestamp"]);

    // Bytes that are not a tar (but hash right): tar-format.
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        add_layer(dir, m, c, &vec![b'x'; 2048]);
    });
    expect_errors(&d, "base", &["tar-format"]);

    // A config of another size than declared (same digest cannot be faked,
    // so both rules may fire; the size one must).
    let d = layout_of("base");
    let t = top(&d, "base");
    let mut manifest: Value = serde_json::from_slice(&read_blob(&d, t["digest"].as_str().unwrap())).unwrap();
    let size = manifest["config"]["size"].as_u64().unwrap();
    manifest["config"]["size"] = Value::from(size + 7);
    retag(&d, "base", &serde_json::to_vec(&manifest).unwrap());
    let (code, r) = check(&format!("oci://{}:base", d.display()), true);
    assert_eq!(code, 1);
    assert!(ids(&r, "error").contains(&"config-size".to_string()), "{r:#}");

    // The same file, same content, in two layers: a warning only.
    let d = layout_of("base");
    mutate(&d, "base", |dir, m, c| {
        add_layer(dir, m, c, &raw_tar("srv/same", tar::EntryType::Regular, "", b"same"));
        add_layer(dir, m, c, &raw_tar("srv/same", tar::EntryType::Regular, "", b"same"));
    });
    let r = expect_errors(&d, "base", &[]);
    assert_eq!(ids(&r, "warning"), ["duplicate-file"]);

    // A layer declared over 1 GiB: a warning from the metadata alone.
    let d = layout_of("base");
    mutate(&d, "base", |_, m, _| {
        m["layers"][0]["size"] = Value::from(2u64 << 30);
    });
    let (code, r) = check(&format!("oci://{}:base", d.display()), true);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(ids(&r, "warning"), ["large-layer"]);

    // setuid outside the binary directories: a warning; inside: nothing.
    for (path, warned) in [("srv/tool", true), ("usr/bin/tool", false)] {
        let d = layout_of("base");
        mutate(&d, "base", |dir, m, c| {
            let mut t = raw_tar(path, tar::EntryType::Regular, "", b"x");
            let mut h = tar::Header::new_old();
            h.as_mut_bytes().copy_from_slice(&t[..512]);
            h.set_mode(0o4755);
            h.set_cksum();
            t[..512].copy_from_slice(h.as_bytes());
            add_layer(dir, m, c, &t);
        });
        let r = expect_errors(&d, "base", &[]);
        assert_eq!(
            ids(&r, "warning").contains(&"tar-permissions".to_string()),
            warned,
            "{path}: {r:#}"
        );
    }

    // Media-type notes name the family.
    let (_, r) = check(&standard_ref("dockerv2"), true);
    assert_eq!(ids(&r, "info"), ["docker-media-type"]);
    let (_, r) = check(&standard_ref("app-a"), true);
    assert_eq!(ids(&r, "info"), ["oci-media-type"]);
}

/// `occy -O json sync` of `src` to `to` with the full post-run check; the
/// target's outcome.
fn sync_checked(name: &str, src: &str, to: &str) -> Value {
    let dir = scratch_dir(name);
    let file = dir.join("sync.yaml");
    std::fs::write(
        &file,
        format!("version: 1\nsync:\n  - from: \"{src}\"\n    to: \"{to}\"\n"),
    )
    .unwrap();
    let cache = dir.join("cache");
    let args = [
        "-O",
        "json",
        "sync",
        file.to_str().unwrap(),
        "--check",
        "full",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let report = json_of(&ok(&args));
    assert_eq!(report["written"], 1, "{report:#}");
    report["targets"][0].clone()
}

/// Runs `occy check [--fast] REF` and returns (exit code, stdout).
fn check_text(reference: &str, fast: bool) -> (i32, String) {
    let mut args = vec!["check", reference];
    if fast {
        args.push("--fast");
    }
    let out = occy(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The regular files under `root`, relative, sorted.
fn regular_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                pending.push(e.path());
            } else if t.is_file() {
                out.push(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Corrupts the unpacked tree `tree` (shown as `shown/…` in findings) in
/// turn — a file's bytes changed at the same size, a file removed, a mode
/// changed — and asserts each time that `occy check REF` exits 1 naming
/// the target and the path, fast where the change shows without reading
/// content, full where only the sha256 shows it.
fn assert_tree_corruptions_caught(reference: &str, tree: &Path, shown: &str) {
    let files = regular_files(tree);
    assert!(files.len() >= 2, "{files:?}");
    let (code, text) = check_text(reference, false);
    assert_eq!(code, 0, "{text}");

    // Same size, other bytes: only the full check reads content.
    let changed = &files[0];
    let path = tree.join(changed);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.is_empty(), "{changed}");
    bytes[0] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let (code, text) = check_text(reference, true);
    assert_eq!(code, 0, "the fast check does not read content: {text}");
    let (code, text) = check_text(reference, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with(reference), "names the target: {text}");
    assert!(
        text.contains(&format!("[tree] {shown}/{changed}: content differs from the image")),
        "{text}"
    );

    // A file removed, and a mode changed: the fast check sees them.
    let removed = &files[1];
    std::fs::remove_file(tree.join(removed)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, text) = check_text(reference, true);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!(
            "[tree] {shown}/{removed}: missing (the image has a regular file there)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("[tree] {shown}/{changed}: mode 0777 on disk")),
        "{text}"
    );
}

#[test]
fn an_oci_layout_blob_with_a_flipped_byte_fails_the_check_naming_it() {
    let out = scratch_dir("check-oci");
    let layout = out.join("layout");
    let dst = format!("oci://{}:a", layout.display());
    let outcome = sync_checked("check-oci-sync", &standard_ref("app-a"), &dst);
    assert_eq!(outcome["check"], "full: ok", "{outcome:#}");
    assert_oci_layout_readable(&layout, "a", true);
    let layer = read_json_layer(&layout, "a", 1);
    let path = layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let (code, text) = check_text(&dst, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with(&dst), "{text}");
    assert!(text.contains("[layer-digest]") && text.contains(&layer), "{text}");
}

#[test]
fn a_bundle_with_a_changed_or_removed_file_fails_the_check_naming_the_path() {
    let bundle = scratch_dir("check-bundle").join("b");
    let dst = format!("bundle://{}", bundle.display());
    let outcome = sync_checked("check-bundle-sync", &standard_ref("whiteouts"), &dst);
    assert_eq!(outcome["check"], "full: ok", "{outcome:#}");
    assert!(bundle.join("occy-rootfs.mtree.json").is_file());
    assert_tree_corruptions_caught(&dst, &bundle.join("rootfs"), "rootfs");

    // Without the view of its layers, the check cannot run: it says so
    // and why, and never reports the bundle as checked.
    std::fs::remove_file(bundle.join("occy-rootfs.mtree.json")).unwrap();
    let (code, report) = check(&dst, false);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("occy-rootfs.mtree.json")),
        "{report:#}"
    );
    let (_, text) = check_text(&dst, false);
    assert!(text.contains("check skipped ("), "{text}");
}

#[test]
fn an_expanded_dir_with_a_changed_or_removed_file_fails_the_check_naming_the_path() {
    let dir = scratch_dir("check-expand").join("d");
    let dst = format!("dir://{}?expand=true", dir.display());
    let outcome = sync_checked("check-expand-sync", &standard_ref("whiteouts"), &dst);
    assert_eq!(outcome["check"], "full: ok", "{outcome:#}");
    assert_tree_corruptions_caught(&dst, &dir.join("manifest"), "manifest");
}

//! Compression of pushes from archives (issue 23, point 5), the two routes
//! the first tests did not cover: `defaults.compression` in a sync file
//! whose entry has no filters, and a filtered push of an archive, whose
//! rewritten layers must not go to the registry as plain tar. What the
//! registry holds is read back by skopeo with the same diff_ids, and a
//! second run has nothing to do.

use std::path::Path;

use crate::support::*;

/// The media types of the layers `repo_tag` holds.
fn layer_types(reg: &Registry, repo_tag: &str) -> (String, Vec<String>) {
    let raw = reg.inspect(repo_tag, true);
    let types = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect();
    (raw["mediaType"].as_str().unwrap_or_default().to_string(), types)
}

/// skopeo copies the pushed image into a docker-archive with the layers `want`.
fn skopeo_reads_back(reg: &Registry, repo_tag: &str, want: &[String]) {
    let archive = scratch_dir("read-back").join("x.tar");
    let out = reg.skopeo(
        &[
            "copy",
            &format!("docker://{}/{repo_tag}", reg.host),
            &format!("docker-archive:{}:occy-test/x:1", archive.display()),
        ],
        false,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sk = skopeo_inspect_local(&format!("docker-archive:{}", archive.display()), false);
    assert_eq!(strings(&sk["Layers"]), want, "{repo_tag}: diff_ids");
}

/// Applies the sync file, then checks that its plan has nothing to do.
fn sync_twice(file: &Path, cache: &Path) {
    let (file, cache) = (file.to_str().unwrap(), cache.to_str().unwrap());
    ok(&["--cache-dir", cache, "sync", file]);
    let again = occy(&["--cache-dir", cache, "sync", file, "--plan", "--detailed-exitcode"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "a second run has work to do: {}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn defaults_compression_and_filtered_pushes_compress_archive_layers() {
    let reg = Registry::shared(Mode::Plain);
    let work = scratch_dir("push-defaults");
    let tar = work.join("app-a.tar");
    ok(&["process", &standard_ref("app-a"), &format!("tar://{}", tar.display())]);
    let diff_ids = default_diff_ids(generated("app-a"));

    // defaults.compression: zstd on an entry without filters.
    let file = work.join("zstd.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\ndefaults:\n  compression: zstd\nregistries:\n  {h}: {{ insecure: true }}\nsync:\n  - from: \"tar://{t}\"\n    to: \"{d}\"\n",
            h = reg.host,
            t = tar.display(),
            d = reg.url("defaults/zstd:1.0")
        ),
    )
    .unwrap();
    sync_twice(&file, &work.join("cache"));
    let (manifest, types) = layer_types(reg, "defaults/zstd:1.0");
    assert_eq!(manifest, "application/vnd.oci.image.manifest.v1+json");
    assert!(
        types.iter().all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    let back = json_of(&reg.ok(&["-O", "json", "info", &reg.url("defaults/zstd:1.0")]));
    assert_eq!(layer_field(&back, "diff_id"), diff_ids);

    // A filtered push of the archive: its rewritten layers are gzip.
    reg.ok(&[
        "process",
        &format!("tar://{}", tar.display()),
        &reg.url("defaults/filtered:1.0"),
        "-f",
        "exclude:pattern=nothing-matches-this",
    ]);
    let (_, types) = layer_types(reg, "defaults/filtered:1.0");
    assert!(
        types
            .iter()
            .all(|t| t == "application/vnd.docker.image.rootfs.diff.tar.gzip"),
        "{types:?}"
    );
    let pushed = json_of(&reg.ok(&["-O", "json", "info", &reg.url("defaults/filtered:1.0")]));
    skopeo_reads_back(reg, "defaults/filtered:1.0", &layer_field(&pushed, "diff_id"));
}

//! `occy process -f …` on the generated images: the content of every output
//! layer is read back and checked (mtimes, excluded paths, whiteouts,
//! hardlinks, symlinks, xattrs), the config's diff_ids match the layers and
//! its history stays aligned, skopeo reads the result, the same chain twice
//! gives the same digest, and registry → registry works through a chain.

use std::io::Read;
use std::path::Path;

use crate::support::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// One tar entry as a test looks at it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    mtime: u64,
    kind: tar::EntryType,
    link: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

/// The image manifest a tag names in an OCI layout (following an index to
/// its amd64 entry).
fn manifest_of(layout: &Path, tag: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    let top = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag}"));
    let mut m: Value = serde_json::from_slice(&blob(layout, top["digest"].as_str().unwrap())).unwrap();
    if m.get("manifests").is_some() {
        let entry = m["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["platform"]["architecture"] == "amd64")
            .unwrap()
            .clone();
        m = serde_json::from_slice(&blob(layout, entry["digest"].as_str().unwrap())).unwrap();
    }
    m
}

fn decompress(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if b.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(b).read_to_end(&mut out).unwrap();
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(b)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    } else {
        out = b.to_vec();
    }
    out
}

fn entries(plain: &[u8]) -> Vec<Seen> {
    let mut a = tar::Archive::new(plain);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(ext) = e.pax_extensions().unwrap() {
            for r in ext {
                let r = r.unwrap();
                if let Some(k) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((k.to_string(), r.value_bytes().to_vec()));
                }
            }
        }
        out.push(Seen {
            path: e.path().unwrap().to_string_lossy().trim_end_matches('/').to_string(),
            mtime: e.header().mtime().unwrap(),
            kind: e.header().entry_type(),
            link: e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
            xattrs,
        });
    }
    out
}

/// Every layer of `tag` as (media type, entries), after checking that the
/// config's diff_ids are the layers' and the history has one non-empty
/// entry per layer.
fn layers_of(layout: &Path, tag: &str) -> (Value, Vec<(String, Vec<Seen>)>) {
    let m = manifest_of(layout, tag);
    let config: Value = serde_json::from_slice(&blob(layout, m["config"]["digest"].as_str().unwrap())).unwrap();
    let diff_ids = strings(&config["rootfs"]["diff_ids"]);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    let non_empty = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!(non_empty, layers.len(), "history aligned with layers");
    let mut out = Vec::new();
    for (l, diff_id) in layers.iter().zip(&diff_ids) {
        let b = blob(layout, l["digest"].as_str().unwrap());
        assert_eq!(b.len() as u64, l["size"].as_u64().unwrap());
        let plain = decompress(&b);
        assert_eq!(&sha(&plain), diff_id, "diff_id of {}", l["digest"]);
        out.push((l["mediaType"].as_str().unwrap().to_string(), entries(&plain)));
    }
    (config, out)
}

fn filtered(name: &str, dst: &Path, tag: &str, filters: &[&str]) -> Value {
    let src = standard_ref(name);
    let dst_ref = format!("oci://{}:{tag}", dst.display());
    let mut args = vec!["-O", "json", "process", &src, &dst_ref];
    for f in filters {
        args.push("-f");
        args.push(f);
    }
    let report = json_of(&ok(&args));
    assert_oci_layout_readable(dst, tag, true);
    report
}

fn skopeo_reads(layout: &Path, tag: &str) -> Value {
    skopeo_inspect_local(&format!("oci:{}:{tag}", layout.display()), false)
}

#[test]
fn normalize_timestamps_zeroes_every_time_and_is_reproducible() {
    let out = scratch_dir("normalize");
    for name in ["base", "app-a", "whiteouts", "zstd", "plain"] {
        let r1 = filtered(name, &out, name, &["normalize-timestamps:config=true"]);
        let (config, layers) = layers_of(&out, name);
        for (_, es) in &layers {
            assert!(!es.is_empty());
            for e in es {
                assert_eq!(e.mtime, 0, "{name}: {} keeps its mtime", e.path);
            }
        }
        assert_eq!(config["created"], "1970-01-01T00:00:00Z");
        for h in config["history"].as_array().unwrap() {
            assert_eq!(h["created"], "1970-01-01T00:00:00Z");
        }
        assert_eq!(skopeo_reads(&out, name)["Created"], "1970-01-01T00:00:00Z");
        // The same chain again, elsewhere: the same digest.
        let again = scratch_dir("normalize-again");
        let r2 = filtered(name, &again, name, &["normalize-timestamps:config=true"]);
        assert_eq!(r1["digest"], r2["digest"], "{name}: not reproducible");
        assert_ne!(r1["digest"], generated(name).descriptor.digest.to_string());
    }
    // A chosen time.
    filtered("app-a", &out, "ts", &["normalize-timestamps:ts=1700000000"]);
    let (config, layers) = layers_of(&out, "ts");
    assert!(layers.iter().all(|(_, es)| es.iter().all(|e| e.mtime == 1_700_000_000)));
    assert_ne!(
        config["created"], "1970-01-01T00:00:00Z",
        "config=false leaves the config's times"
    );
    assert_blobs_match_names(&out);
}

#[test]
fn exclude_with_two_patterns_keeps_links_whiteouts_and_xattrs() {
    let out = scratch_dir("exclude");
    let (_, before) = layers_of(&standard_images().0, "whiteouts");
    filtered(
        "whiteouts",
        &out,
        "x",
        &["exclude:pattern=usr/share/doc/*,pattern=**/os-release"],
    );
    let (_, after) = layers_of(&out, "x");
    let all_before: Vec<&Seen> = before.iter().flat_map(|(_, e)| e).collect();
    let all_after: Vec<&Seen> = after.iter().flat_map(|(_, e)| e).collect();
    let gone = |p: &str| p.starts_with("usr/share/doc/") || p.ends_with("os-release");
    for e in &all_before {
        let kept = all_after.iter().any(|a| a.path == e.path);
        if gone(&e.path) && !e.path.rsplit('/').next().unwrap().starts_with(".wh.") {
            assert!(!kept, "{} should be excluded", e.path);
        } else {
            assert!(kept, "{} should stay", e.path);
        }
    }
    // Whiteouts stay (even under an excluded directory), links keep targets,
    // xattrs survive.
    assert!(all_after.iter().any(|e| e.path == "etc/.wh.hosts"));
    assert!(all_after.iter().any(|e| e.path == "usr/share/doc/.wh..wh..opq"));
    let hard = all_after
        .iter()
        .find(|e| e.kind == tar::EntryType::Link)
        .expect("a hardlink");
    assert_eq!(hard.link.as_deref(), Some("bin/hello"));
    let sym = all_after
        .iter()
        .find(|e| e.kind == tar::EntryType::Symlink)
        .expect("a symlink");
    assert_eq!(sym.link.as_deref(), Some("hello"));
    let ping = all_after.iter().find(|e| e.path == "srv/ping").expect("srv/ping");
    assert_eq!(ping.xattrs.len(), 1);
    assert_eq!(ping.xattrs[0].0, "security.capability");
    assert_eq!(ping.xattrs[0].1[0], 1);
    skopeo_reads(&out, "x");
    // The extracted result has no excluded file and honours the whiteouts.
    let bundle = out.join("bundle");
    ok(&[
        "process",
        &format!("oci://{}:x", out.display()),
        &format!("bundle://{}", bundle.display()),
    ]);
    assert!(!bundle.join("rootfs/etc/os-release").exists());
    assert!(!bundle.join("rootfs/etc/hosts").exists());
    assert!(bundle.join("rootfs/srv/ping").exists());
}

#[test]
fn recompress_sets_media_types_and_turns_docker_into_oci_when_zstd() {
    let out = scratch_dir("recompress");
    filtered("app-a", &out, "z", &["recompress:format=zstd,level=5"]);
    let (_, layers) = layers_of(&out, "z");
    assert!(layers
        .iter()
        .all(|(mt, _)| mt == "application/vnd.oci.image.layer.v1.tar+zstd"));
    skopeo_reads(&out, "z");

    // Docker v2 has no zstd layer type: the manifest becomes OCI.
    let ran = ok(&[
        "process",
        &standard_ref("dockerv2"),
        &format!("oci://{}:d", out.display()),
        "-f",
        "recompress:format=zstd",
    ]);
    assert!(String::from_utf8_lossy(&ran.stderr).contains("OCI manifest"));
    let m = manifest_of(&out, "d");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    layers_of(&out, "d");
    skopeo_reads(&out, "d");
    assert_oci_layout_readable(&out, "d", true);

    // And back to gzip with the global flag; same diff_ids as the source.
    let back = json_of(&ok(&[
        "-O",
        "json",
        "--compression",
        "gzip",
        "process",
        &format!("oci://{}:z", out.display()),
        &format!("oci://{}:g", out.display()),
        "-f",
        "normalize-timestamps:ts=0",
    ]));
    assert_eq!(back["layers_copied"], 2);
    let (config, layers) = layers_of(&out, "g");
    assert!(layers
        .iter()
        .all(|(mt, _)| mt == "application/vnd.oci.image.layer.v1.tar+gzip"));
    assert_eq!(strings(&config["rootfs"]["diff_ids"]).len(), 2);
    assert_oci_layout_readable(&out, "g", true);

    // A multi-arch index: every platform rewritten, the index follows.
    let r = json_of(&ok(&[
        "-O",
        "json",
        "process",
        "--all-platforms",
        &standard_ref("multiarch"),
        &format!("oci://{}:m", out.display()),
        "-f",
        "recompress:format=zstd",
    ]));
    let index: Value = serde_json::from_slice(&blob(&out, r["digest"].as_str().unwrap())).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    for e in index["manifests"].as_array().unwrap() {
        let m: Value = serde_json::from_slice(&blob(&out, e["digest"].as_str().unwrap())).unwrap();
        assert!(m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
    }
    assert_blobs_match_names(&out);
    assert_oci_layout_readable(&out, "m", true);
}

#[test]
fn search_and_inspect_observe_without_changing_a_digest() {
    let out = scratch_dir("observe");
    let log = out.join("inspect.jsonl");
    let inspect = format!("inspect:file={}", log.display());
    let r = filtered("app-a", &out, "o", &["search:pattern=os-release", &inspect]);
    assert_eq!(
        r["digest"],
        generated("app-a").descriptor.digest.to_string(),
        "observers changed the image"
    );
    let matches = r["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0]["path"], "etc/os-release");
    assert_eq!(matches[0]["layer"], 0);
    // inspect before and after a filter shows its effect.
    let before = format!("inspect:file={}", log.display());
    filtered("app-a", &out, "e", &[&before, "exclude:pattern=etc", &before]);
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert!(l["name"].as_str().unwrap().ends_with("app-a"), "{l}");
        for layer in l["layers"].as_array().unwrap() {
            for key in ["Id", "Size", "Created", "CreatedBy", "Comment", "digest", "diff_id"] {
                assert!(layer.get(key).is_some(), "{key} missing in {layer}");
            }
        }
    }
    let g = generated("app-a");
    assert_eq!(lines[0]["layers"][0]["diff_id"], g.images[0].diff_ids[0].to_string());
    assert_eq!(lines[1]["layers"][0]["diff_id"], g.images[0].diff_ids[0].to_string());
    assert!(
        lines[1]["layers"][0]["digest"].is_null(),
        "rewritten later: no digest yet"
    );
    assert_ne!(lines[2]["layers"][0]["diff_id"], lines[1]["layers"][0]["diff_id"]);
    assert!(lines[2]["layers"][0]["Size"].as_u64() < lines[1]["layers"][0]["Size"].as_u64());
    let (config, _) = layers_of(&out, "e");
    assert_eq!(
        strings(&config["rootfs"]["diff_ids"])[0],
        lines[2]["layers"][0]["diff_id"].as_str().unwrap()
    );
}

#[test]
fn filters_work_between_registries_and_into_archives() {
    let reg = Registry::shared(Mode::Plain);
    reg.ok(&["process", &standard_ref("app-b"), &reg.url("src/app-b:1.0")]);
    let args = [
        "-O",
        "json",
        "process",
        &reg.url("src/app-b:1.0"),
        &reg.url("filtered/app-b:1.0"),
        "-f",
        "normalize-timestamps",
        "-f",
        "exclude:pattern=srv/**/*.txt",
    ];
    let first = json_of(&reg.ok(&args));
    let raw = reg.skopeo(
        &["inspect", "--raw", &format!("docker://{}/filtered/app-b:1.0", reg.host)],
        false,
    );
    assert!(raw.status.success());
    assert_eq!(sha(&raw.stdout), first["digest"].as_str().unwrap());
    let second = json_of(&reg.ok(&args));
    assert_eq!(first["digest"], second["digest"]);
    assert_eq!(second["layers_copied"], 0, "a second run re-uploads nothing");

    // Into a docker-save archive: skopeo reads it, diff_ids are the new ones.
    let tar = scratch_dir("filtered-tar").join("x.tar");
    reg.ok(&[
        "process",
        &reg.url("src/app-b:1.0"),
        &format!("tar://{}", tar.display()),
        "-f",
        "normalize-timestamps",
    ]);
    let sk = skopeo_inspect_local(&format!("docker-archive:{}", tar.display()), false);
    let info = json_of(&ok(&["-O", "json", "info", &format!("tar://{}", tar.display())]));
    assert_eq!(strings(&sk["Layers"]), layer_field(&info, "diff_id"));
    assert_ne!(layer_field(&info, "diff_id"), default_diff_ids(generated("app-b")));
}

#[test]
fn a_rewritten_layer_is_uploaded_once_per_registry_and_mounted_into_the_other_repositories() {
    // The rewrite's output is known only once it runs, so the plan sends
    // it to each repository; the walk uploads it once and mounts it into
    // the others.
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir("rewritten-mounts");
    let spec = dir.join("sync.yaml");
    let repos = ["rw-mounts/a", "rw-mounts/b", "rw-mounts/c"];
    let to: Vec<String> = repos.iter().map(|r| format!("      - {}\n", reg.url(r))).collect();
    std::fs::write(
        &spec,
        format!(
            "version: 1\nsync:\n  - from: {}\n    filters: [normalize-timestamps]\n    to:\n{}",
            standard_ref("app-b"),
            to.concat()
        ),
    )
    .unwrap();
    let spec = spec.display().to_string();
    let run = json_of(&reg.ok(&["-O", "json", "--no-cache", "sync", &spec]));
    let targets = run["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{run}");
    let sum = |field: &str| -> u64 { targets.iter().map(|t| t["report"][field].as_u64().unwrap_or(0)).sum() };
    let layers = default_image(generated("app-b"))
        .layers
        .iter()
        .map(|l| &l.digest)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert_eq!(
        sum("layers_copied"),
        layers,
        "each rewritten layer uploaded once: {run}"
    );
    assert_eq!(
        sum("layers_mounted"),
        2 * layers,
        "and mounted into the two other repositories: {run}"
    );
    // Each repository holds the same image, readable by skopeo.
    let digests: Vec<String> = targets
        .iter()
        .map(|t| {
            let dest = t["destination"].as_str().unwrap();
            let name = dest.strip_prefix("registry://").unwrap_or(dest);
            let raw = reg.skopeo(&["inspect", "--raw", &format!("docker://{name}")], false);
            assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
            sha(&raw.stdout)
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

#[test]
fn bad_filters_are_usage_errors_and_write_nothing() {
    let out = scratch_dir("bad-filters");
    let dst = format!("oci://{}:x", out.join("layout").display());
    let src = standard_ref("base");
    for (f, needle) in [
        ("frobnicate", "\"frobnicate\""),
        ("exclude", "pattern=GLOB"),
        ("exclude:pattern=a[", "a["),
        ("normalize-timestamps:ts=soon", "\"soon\""),
        ("recompress:format=lz4", "\"lz4\""),
    ] {
        fails(&["process", &src, &dst, "-f", f], 2, needle);
    }
    fails(
        &[
            "--compression",
            "brotli",
            "process",
            &src,
            &dst,
            "-f",
            "normalize-timestamps",
        ],
        2,
        "\"brotli\"",
    );
    assert!(!out.join("layout").exists());
}

#[test]
fn a_warm_layer_cache_fetches_no_layer_the_destination_holds() {
    let reg = Registry::shared(Mode::Plain);
    reg.ok(&["process", &standard_ref("app-a"), &reg.url("cachesrc/app-a:1.0")]);
    let cache = scratch_dir("layer-cache");
    let cache_flag = cache.display().to_string();
    let src = reg.url("cachesrc/app-a:1.0");
    let dst = reg.url("cachedst/app-a:1.0");
    let run = |extra: &[&str]| {
        let mut args = vec!["-O", "json"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["process", &src, &dst, "-f", "normalize-timestamps:ts=0"]);
        json_of(&reg.ok(&args))
    };
    let cold = run(&["--cache-dir", &cache_flag]);
    assert_eq!(cold["layers_from_cache"], 0);
    assert_eq!(cold["layers_copied"], 2);
    assert!(cold["bytes"].as_u64().unwrap() > 0);

    // Warm: both layers known and present, so nothing is fetched or sent.
    let warm = run(&["--cache-dir", &cache_flag]);
    assert_eq!(warm["layers_from_cache"], 2, "{warm}");
    assert_eq!(warm["bytes"], 0, "a layer was sent: {warm}");
    assert_eq!(warm["layers_copied"], 0);
    assert_eq!(warm["digest"], cold["digest"]);

    // A corrupt entry is ignored (with a warning) and that layer redone.
    let entries: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.starts_with(cache.join("layers")))
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    std::fs::write(&entries[0], b"{\"key\": 12").unwrap();
    let mut args = vec!["--cache-dir", &cache_flag, "-O", "json"];
    args.extend_from_slice(&["process", &src, &dst, "-f", "normalize-timestamps:ts=0"]);
    let out = reg.ok(&args);
    let healed = json_of(&out);
    assert_eq!(healed["layers_from_cache"], 1, "{healed}");
    // That layer was fetched and rewritten again (its output, already in the
    // destination, was not sent: `bytes` counts what a destination received).
    assert_eq!(healed["layers_rewritten"], 1, "{healed}");
    assert_eq!(healed["digest"], cold["digest"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"));

    // Another chain does not use these entries.
    let other = json_of(&reg.ok(&[
        "--cache-dir",
        &cache_flag,
        "-O",
        "json",
        "process",
        &src,
        &dst,
        "-f",
        "normalize-timestamps:ts=1",
    ]));
    assert_eq!(other["layers_from_cache"], 0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A layer tar padded to a 10240-byte record, written by `tool` (Python's
/// `tarfile` or GNU tar) from a small tree.
fn padded_layer(work: &Path, tool: &str) -> Vec<u8> {
    let tree = work.join(format!("tree-{tool}"));
    std::fs::create_dir_all(tree.join("etc/app")).unwrap();
    std::fs::write(tree.join("etc/app/conf"), format!("written by {tool}\n")).unwrap();
    std::fs::write(tree.join("hello"), b"hello\n").unwrap();
    let out = work.join(format!("{tool}.tar"));
    let ran = match tool {
        "python3" => std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, tarfile\nwith tarfile.open(sys.argv[1], 'w') as t:\n    t.add(sys.argv[2], arcname='.')\n",
            ])
            .arg(&out)
            .arg(&tree)
            .output()
            .unwrap(),
        _ => std::process::Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(&out)
            .arg(".")
            .output()
            .unwrap(),
    };
    assert!(ran.status.success(), "{tool}: {}", String::from_utf8_lossy(&ran.stderr));
    let tar = std::fs::read(&out).unwrap();
    assert_eq!(tar.len() % 10240, 0, "{tool} pads to a 10240-byte record");
    let end = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            e.raw_file_position() + e.size().div_ceil(512) * 512
        })
        .max()
        .unwrap();
    assert!(
        tar.len() as u64 > end + 1024,
        "{tool} wrote padding after the end-of-archive blocks"
    );
    tar
}

/// The config's diff_ids as skopeo reads them.
fn skopeo_diff_ids(target: &str) -> Vec<String> {
    require("skopeo", "skopeo");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--config", target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect --config {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    strings(&config["rootfs"]["diff_ids"])
}

#[test]
fn recompress_keeps_the_diff_ids_of_layers_padded_to_a_record() {
    for tool in ["python3", "tar"] {
        if !have(tool) {
            unavailable(
                tool,
                "it is not installed: a record-padded layer cannot be written with it",
            );
            return;
        }
    }
    let src = crate::support::layout_edit::layout_of("app-a");
    let work = scratch_dir("padded");
    let tars = [padded_layer(&work, "python3"), padded_layer(&work, "tar")];
    crate::support::layout_edit::mutate(&src, "app-a", |dir, manifest, config| {
        manifest["layers"] = Value::Array(Vec::new());
        config["rootfs"]["diff_ids"] = Value::Array(Vec::new());
        config["history"] = Value::Array(Vec::new());
        for t in &tars {
            crate::support::layout_edit::add_layer(dir, manifest, config, t);
        }
    });
    let src_ref = format!("oci://{}:app-a", src.display());
    let before = skopeo_diff_ids(&format!("oci:{}:app-a", src.display()));
    assert_eq!(before, tars.iter().map(|t| sha(t)).collect::<Vec<_>>());

    let out = scratch_dir("padded-out");
    for (tag, filters) in [
        ("zstd", vec!["recompress:format=zstd"]),
        ("gzip", vec!["recompress:format=gzip,level=9"]),
        (
            "observed",
            vec![
                "search:pattern=**/conf",
                "recompress:format=zstd",
                "inspect:file=/dev/null",
            ],
        ),
    ] {
        let dst = format!("oci://{}:{tag}", out.display());
        let mut args = vec!["process", &src_ref, &dst];
        for f in &filters {
            args.push("-f");
            args.push(f);
        }
        ok(&args);
        let after = skopeo_diff_ids(&format!("oci:{}:{tag}", out.display()));
        assert_eq!(after, before, "{filters:?} kept the diff_ids");
        assert_oci_layout_readable(&out, tag, true);
        let m = manifest_of(&out, tag);
        assert_eq!(
            m["config"]["digest"],
            manifest_of(&src, "app-a")["config"]["digest"],
            "{filters:?}: the config keeps its bytes"
        );
        for (layer, want) in m["layers"].as_array().unwrap().iter().zip(&tars) {
            let b = blob(&out, layer["digest"].as_str().unwrap());
            let plain = decompress(&b);
            assert_ne!(b, plain, "{filters:?} compressed the layer");
            assert!(
                plain == *want,
                "{filters:?}: the layer decompresses to its bytes, padding included"
            );
        }
    }
    // Into a docker-save archive, whose layers are stored uncompressed.
    let tar_out = out.join("padded.tar");
    ok(&[
        "process",
        &src_ref,
        &format!("tar://{}", tar_out.display()),
        "-f",
        "recompress:format=zstd",
    ]);
    assert_eq!(
        skopeo_diff_ids(&format!("docker-archive:{}", tar_out.display())),
        before
    );
}

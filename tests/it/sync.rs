//! `occy sync` against two real Distribution registries: the plan's counts
//! against what the destination registry then stores, make semantics (a
//! second run writes nothing), a moved tag, `--detailed-exitcode`, pinned
//! `--apply`, YAML and TOML giving one plan, and sync-file errors with their
//! line and column; and the one-shot commands over many images (`occy
//! process` and `occy info` of registry globs and `quay://` organisations).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use crate::support::*;
use serde_json::Value;

/// The repository a mirror-set name (`alpine_3.18`) is pushed to.
fn repo_of(short: &str) -> &'static str {
    match short {
        "alpine" => "lib/alpine",
        "web" => "apps/web",
        "api" => "apps/api",
        other => panic!("unknown mirror image {other}"),
    }
}

/// The generated mirror images (an OCI layout, NAME_TAG entries).
fn mirror_layout() -> &'static PathBuf {
    static LAYOUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = scratch_dir("mirror-layout");
        occy_testkit::generate::write_layout(&dir, &occy_testkit::generate::mirror_set()).unwrap();
        dir
    })
}

fn mirror_names() -> Vec<String> {
    layout_tags(mirror_layout())
}

/// A source registry holding the 14 mirror images.
fn source_registry() -> Registry {
    let reg = Registry::start(Mode::Plain);
    for name in mirror_names() {
        let (short, tag) = name.split_once('_').unwrap();
        reg.push_layout(mirror_layout(), &name, &format!("{}:{tag}", repo_of(short)));
    }
    reg
}

/// Pushes mirror image `name` to `repo_tag` of `reg` (to move a tag).
fn push_as(reg: &Registry, name: &str, repo_tag: &str) {
    reg.push_layout(mirror_layout(), name, repo_tag);
}

const MIRROR: &str = r#"version: 1
defaults:
  image_parallel: 3
  parallel: 4
registries:
  SRC: { insecure: true }
  DST: { insecure: true }
filters:
  repro:
    - normalize-timestamps: { ts: 0, config: true }
sync:
  - from: registry://SRC/lib/alpine
    tags: { semver: ">=3.18", exclude: ["*-rc*"] }
    to:
      - registry://DST/mirror/alpine
      - "tar://OUT/alpine-{tag}.tar"
  - from: registry://SRC/apps/*:v*
    to: "registry://DST/mirror/{name}"
  - from: registry://SRC/apps/api
    tags: ["1.0", "1.1"]
    filters: repro
    to: "tar://OUT/api-{tag}-repro.tar"
"#;

const MIRROR_TOML: &str = r#"version = 1

[defaults]
image_parallel = 3
parallel = 4

[registries]
"SRC" = { insecure = true }
"DST" = { insecure = true }

[filters]
repro = [{ normalize-timestamps = { ts = 0, config = true } }]

[[sync]]
from = "registry://SRC/lib/alpine"
tags = { semver = ">=3.18", exclude = ["*-rc*"] }
to = ["registry://DST/mirror/alpine", "tar://OUT/alpine-{tag}.tar"]

[[sync]]
from = "registry://SRC/apps/*:v*"
to = "registry://DST/mirror/{name}"

[[sync]]
from = "registry://SRC/apps/api"
tags = ["1.0", "1.1"]
filters = "repro"
to = "tar://OUT/api-{tag}-repro.tar"
"#;

struct Setup {
    src: Registry,
    dst: Registry,
    dir: PathBuf,
    file: PathBuf,
}

impl Setup {
    fn new(name: &str, template: &str, file_name: &str) -> Setup {
        let src = source_registry();
        let dst = Registry::start(Mode::Plain);
        let dir = scratch_dir(name);
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let text = template
            .replace("SRC", &src.host)
            .replace("DST", &dst.host)
            .replace("OUT", out.to_str().unwrap());
        let file = dir.join(file_name);
        std::fs::write(&file, text).unwrap();
        Setup { src, dst, dir, file }
    }

    /// occy sync FILE ARGS… with this setup's cache.
    fn sync(&self, args: &[&str]) -> Output {
        let cache = self.dir.join("cache");
        let mut all = vec![
            "sync",
            self.file.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        occy(&all)
    }

    fn plan(&self) -> (i32, Value) {
        let out = self.sync(&["--plan", "--detailed-exitcode", "-O", "json"]);
        let code = out.status.code().unwrap();
        assert!(
            [0, 1, 3].contains(&code),
            "plan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (code, json_of(&out))
    }
}

/// Blob files the registry stores, minus manifests: (count, bytes).
fn stored_blobs(reg: &Registry) -> (HashSet<String>, u64) {
    let root = reg.dir.join("data/docker/registry/v2");
    let mut manifests = HashSet::new();
    if let Ok(repos) = walk(&root.join("repositories")) {
        for p in repos {
            let s = p.to_string_lossy().to_string();
            if let Some(i) = s.find("/_manifests/revisions/sha256/") {
                let hex = s[i + "/_manifests/revisions/sha256/".len()..]
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string();
                manifests.insert(hex);
            }
        }
    }
    let mut blobs = HashSet::new();
    let mut bytes = 0;
    for p in walk(&root.join("blobs")).unwrap_or_default() {
        if p.file_name().is_some_and(|n| n == "data") {
            let hex = p.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
            if !manifests.contains(&hex) {
                bytes += std::fs::metadata(&p).unwrap().len();
                blobs.insert(hex);
            }
        }
    }
    (blobs, bytes)
}

fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// The newest modification time under `dir`.
fn newest(dir: &Path) -> SystemTime {
    walk(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok()?.modified().ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn registry_totals(plan: &Value, host: &str) -> Value {
    plan["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == format!("registry://{host}"))
        .cloned()
        .unwrap_or_else(|| panic!("no registry destination in {plan}"))
}

#[test]
fn plan_counts_match_apply_then_nothing_to_do_then_one_moved_tag() {
    let s = Setup::new("sync-main", MIRROR, "mirror.yaml");

    // The plan: 10 source images (5 alpine by semver, 3 web by glob, 2 api),
    // 15 targets; nothing exists yet.
    let (code, plan) = s.plan();
    assert_eq!(code, 3, "changes are pending: {plan}");
    let totals = &plan["totals"];
    assert_eq!(totals["targets"], 15, "{plan}");
    assert_eq!(totals["create"], 13);
    assert_eq!(totals["rebuild"], 2, "the filtered tarballs: {plan}");
    let sources: HashSet<&str> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 10, "{sources:?}");
    assert!(!sources
        .iter()
        .any(|s| s.ends_with(":3.17") || s.ends_with("-rc1") || s.ends_with(":latest")));
    let reg = registry_totals(&plan, &s.dst.host);
    let planned_uploads = reg["upload"].as_u64().unwrap();
    let planned_bytes = reg["bytes"].as_u64().unwrap();
    assert_eq!(reg["targets"], 8);
    // One shared base layer: uploaded once, present or mounted for the others.
    assert_eq!(
        planned_uploads,
        1 + 8 + 8,
        "base + one layer and one config per image: {reg}"
    );

    // Apply, with the full check of every written target.
    let (before, before_bytes) = stored_blobs(&s.dst);
    assert!(before.is_empty());
    let out = s.sync(&["--check", "full", "-O", "json"]);
    let report = json_of(&assert_ok(&["sync"], out));
    assert_eq!(report["written"], 15, "{report}");
    assert_eq!(report["failed"], 0);
    for t in report["targets"].as_array().unwrap() {
        assert_eq!(t["check"], "full: ok", "{t}");
    }
    // Measured on the registry's side: exactly the planned blobs and bytes.
    let (after, after_bytes) = stored_blobs(&s.dst);
    assert_eq!(after.len() as u64, planned_uploads, "blobs stored vs planned");
    assert_eq!(after_bytes - before_bytes, planned_bytes, "bytes stored vs planned");
    // Every destination passes occy check on its own too.
    for t in report["targets"].as_array().unwrap() {
        let dst = t["destination"].as_str().unwrap();
        let args = ["--insecure-registry", &s.dst.host, "check", dst];
        assert_ok(&args, occy(&args));
    }

    // Second run: the plan is empty and applying writes nothing at all.
    let (code, plan) = s.plan();
    assert_eq!(code, 0, "nothing to do: {plan}");
    assert_eq!(plan["totals"]["unchanged"], 15, "{plan}");
    let stamp_reg = newest(&s.dst.dir.join("data"));
    let stamp_out = newest(&s.dir.join("out"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = json_of(&assert_ok(&["sync"], s.sync(&["-O", "json"])));
    assert_eq!(report["written"], 0, "{report}");
    assert_eq!(report["bytes"], 0);
    assert_eq!(
        newest(&s.dst.dir.join("data")),
        stamp_reg,
        "the registry was written to"
    );
    assert_eq!(newest(&s.dir.join("out")), stamp_out, "a tarball was rewritten");

    // Move one source tag: exactly its targets (registry and tarball) update.
    push_as(&s.src, "alpine_3.17", "lib/alpine:3.19");
    let (code, plan) = s.plan();
    assert_eq!(code, 3);
    for t in plan["targets"].as_array().unwrap() {
        let moved = t["source"].as_str().unwrap().ends_with("lib/alpine:3.19");
        let want = if moved { "update" } else { "unchanged" };
        assert_eq!(t["action"], want, "{t}");
    }
    assert_eq!(plan["totals"]["update"], 2);
    let reg = registry_totals(&plan, &s.dst.host);
    assert_eq!(reg["present"], 1, "the shared base is there: {plan}");
    assert_eq!(reg["upload"], 2, "the new image's own layer and config: {plan}");
}

#[test]
fn apply_of_a_saved_plan_is_pinned_and_refuses_a_changed_file() {
    let s = Setup::new("sync-pinned", MIRROR, "mirror.yaml");
    let plan_file = s.dir.join("plan.json");
    let out = s.sync(&["--plan", "--out", plan_file.to_str().unwrap()]);
    assert_ok(&["sync", "--plan"], out);
    let saved: Value = serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    let planned = saved["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["destination"].as_str().unwrap().ends_with("mirror/alpine:3.19"))
        .unwrap()["expected"]
        .as_str()
        .unwrap()
        .to_string();

    // The tag moves after the review; applying the plan still writes what was reviewed.
    push_as(&s.src, "alpine_3.17", "lib/alpine:3.19");
    let cache = s.dir.join("cache");
    let args = [
        "sync",
        "--apply",
        plan_file.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    assert_ok(&args, occy(&args));
    let d = s.dst.inspect("mirror/alpine:3.19", false);
    assert_eq!(d["Digest"].as_str().unwrap(), planned, "the pinned digest was written");

    // The sync file changes: the plan is refused, naming both hashes.
    let mut text = std::fs::read_to_string(&s.file).unwrap();
    text.push_str("# edited after review\n");
    std::fs::write(&s.file, text).unwrap();
    let err = fails(&args, 2, "changed since the plan");
    assert!(err.contains(saved["sync_file_sha256"].as_str().unwrap()), "{err}");

    // A plan saved by an occy before the work graph is refused with what to do.
    let mut old = saved.clone();
    old["plan_version"] = 1.into();
    std::fs::write(&plan_file, serde_json::to_vec(&old).unwrap()).unwrap();
    let err = fails(&args, 2, "version-1 plan");
    assert!(err.contains("plan again"), "{err}");
}

#[test]
fn apply_of_a_saved_plan_does_its_nodes_or_nothing() {
    let s = Setup::new("sync-stale", MIRROR, "mirror.yaml");
    let plan_file = s.dir.join("plan.json");
    assert_ok(
        &["sync", "--plan"],
        s.sync(&["--plan", "--out", plan_file.to_str().unwrap()]),
    );
    let args = ["sync", "--apply", plan_file.to_str().unwrap(), "--no-cache"];

    // Someone pushes one of the planned images to the destination after the
    // review: its upload and commit nodes are no longer the work to do.
    push_as(&s.dst, "alpine_3.19", "mirror/alpine:3.19");
    let err = fails(&args, 2, "no longer matches the destinations");
    assert!(
        err.contains("mirror/alpine") && err.contains("no longer needed"),
        "{err}"
    );
    assert!(err.contains("--plan --out"), "{err}");
    // Nothing was written: the refusal comes before the first node.
    let out = s.dir.join("out");
    let written: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "{written:?}");

    // A new plan of the same file applies, node for node.
    assert_ok(
        &["sync", "--plan"],
        s.sync(&["--plan", "--out", plan_file.to_str().unwrap()]),
    );
    assert_ok(&args, occy(&args));
}

#[test]
fn detailed_exitcode_is_1_when_a_source_is_missing_and_the_rest_still_syncs() {
    let text = "version: 1\nregistries:\n  SRC: {insecure: true}\n  DST: {insecure: true}\nsync:\n  - from: registry://SRC/no/such-repo:1.0\n    to: registry://DST/x/missing\n  - from: registry://SRC/apps/web:v1.0\n    to: registry://DST/x/web\n";
    let s = Setup::new("sync-missing", text, "missing.yaml");
    let (code, plan) = s.plan();
    assert_eq!(code, 1, "{plan}");
    assert_eq!(plan["totals"]["failed"], 1);
    assert_eq!(plan["totals"]["create"], 1);
    let out = s.sync(&[]);
    let stderr = assert_fails(&["sync"], out, 1, "no/such-repo");
    assert!(stderr.contains("x/web:v1.0 complete"), "{stderr}");
}

#[test]
fn yaml_and_toml_files_give_the_same_plan() {
    let s = Setup::new("sync-formats", MIRROR, "mirror.yaml");
    let toml = MIRROR_TOML
        .replace("SRC", &s.src.host)
        .replace("DST", &s.dst.host)
        .replace("OUT", s.dir.join("out").to_str().unwrap());
    let toml_file = s.dir.join("mirror.toml");
    std::fs::write(&toml_file, toml).unwrap();
    let (_, yaml_plan) = s.plan();
    let args = ["sync", toml_file.to_str().unwrap(), "--plan", "-O", "json"];
    let toml_plan = json_of(&occy(&args));
    for key in ["targets", "destinations", "totals", "requests", "warnings"] {
        assert_eq!(yaml_plan[key], toml_plan[key], "{key} differs");
    }
}

#[test]
fn markdown_plan_is_a_table_for_a_pull_request() {
    let s = Setup::new("sync-markdown", MIRROR, "mirror.yaml");
    let out = assert_ok(&["sync"], s.sync(&["--plan", "-O", "markdown"]));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.starts_with("### occy sync plan"), "{md}");
    assert!(md.contains("| | source | destination | change | blobs |"), "{md}");
    assert_eq!(md.lines().filter(|l| l.starts_with("| + |")).count(), 13, "{md}");
}

/// A sync file that must be refused with exit 2 at `place`.
fn refused(name: &str, text: &str, place: &str, needle: &str) {
    let dir = scratch_dir("sync-errors");
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let args = ["sync", file.to_str().unwrap(), "--plan"];
    let err = fails(&args, 2, needle);
    let at = format!("{}:{place}", file.display());
    assert!(err.contains(&at), "expected {at} in: {err}");
}

#[test]
fn sync_file_errors_name_the_line_and_column() {
    let layout = mirror_layout().display().to_string();
    refused(
        "key.yaml",
        "version: 1\nsync:\n  - from: oci:///a\n    too: oci:///b\n",
        "4:5",
        "unknown key `too`",
    );
    refused(
        "type.yaml",
        "version: 1\ndefaults:\n  image_parallel: many\nsync:\n  - from: oci:///a\n    to: oci:///b\n",
        "3:19",
        "expected u16",
    );
    refused(
        "glob.yaml",
        "version: 1\nsync:\n  - from: registry://h/a\n    tags: {glob: \"3.[\"}\n    to: oci:///b\n",
        "4:18",
        "invalid glob",
    );
    refused(
        "regex.yaml",
        "version: 1\nsync:\n  - from: registry://h/a\n    tags:\n      regex: \"v(\"\n    to: oci:///b\n",
        "5:14",
        "invalid regex",
    );
    refused(
        "semver.yaml",
        "version: 1\nsync:\n  - from: registry://h/a\n    tags: {semver: \"=>3\"}\n    to: oci:///b\n",
        "4:20",
        "invalid semver range",
    );
    refused(
        "filter.toml",
        "version = 1\n[[sync]]\nfrom = \"oci:///a\"\nfilters = [\"normalise-timestamps\"]\nto = \"oci:///b\"\n",
        "4:12",
        "did you mean `normalize-timestamps`",
    );
    refused(
        "option.yaml",
        "version: 1\nfilters:\n  r:\n    - exclude: {pattern: x, deep: true}\nsync:\n  - from: oci:///a\n    filters: r\n    to: oci:///b\n",
        "4:7",
        "unknown option \"deep\"",
    );
    refused(
        "template.yaml",
        "version: 1\nsync:\n  - from: registry://h/a\n    to: \"tar:///t/{tagg}.tar\"\n",
        "4:19",
        "unknown template field {tagg}",
    );
    refused(
        "credentials.yaml",
        "version: 1\nregistries:\n  quay.io: {token_env: OCCY_TEST_NO_SUCH_TOKEN}\nsync:\n  - from: oci:///a\n    to: oci:///b\n",
        "3:24",
        "OCCY_TEST_NO_SUCH_TOKEN is not set",
    );
    // Two entries writing one tarball: found after expansion, shown at both.
    let clash = format!(
        "version: 1\nsync:\n  - from: oci://{layout}:alpine_3.18\n    to: tar:///tmp/occy-clash.tar\n  - from: oci://{layout}:alpine_3.19\n    to: tar:///tmp/occy-clash.tar\n"
    );
    refused(
        "clash.yaml",
        &clash,
        "6:9",
        "two targets write tar:///tmp/occy-clash.tar",
    );
}

#[test]
fn the_schema_file_is_current() {
    let out = ok(&["schema"]);
    let checked_in =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/occy-sync.schema.json"))
            .expect("schemas/occy-sync.schema.json exists");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        checked_in,
        "schemas/occy-sync.schema.json is stale: run `occy schema > schemas/occy-sync.schema.json`"
    );
}

/// occy with extra environment variables.
fn occy_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = std::process::Command::new(occy_bin());
    c.args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OCCY_CACHE_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Whether `path` is a sync file: one document with a top-level `sync` key.
fn is_sync_file(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "toml") {
        return text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("sync"));
    }
    match serde_saphyr::from_multiple::<Value>(&text) {
        Ok(docs) => docs.len() == 1 && docs[0].get("sync").is_some(),
        Err(_) => false,
    }
}

#[test]
fn every_example_sync_file_runs_against_the_test_registries() {
    let src = source_registry();
    for (image, repo) in [("web_v1.0", "web"), ("api_1.0", "api")] {
        push_as(&src, image, &format!("projectquay/{repo}:latest"));
    }
    let dst = Registry::start(Mode::Plain);
    let quay = fake_quay_api();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".toml")) {
            continue;
        }
        if name.starts_with("airgap-inside") || name.starts_with("airgap-outside") {
            // A pair run in order across two registries (tests/it/airgap.rs).
            skipped.push(name);
            continue;
        }
        if !is_sync_file(&path) {
            // Kubernetes and CI manifests that run occy (tested in tests/it/shard.rs).
            skipped.push(name);
            continue;
        }
        let dir = scratch_dir(&format!("example-{name}"));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("registry.example.com", &src.host)
            .replace("mirror.example.com", &dst.host)
            .replace("/srv/airgap", dir.join("airgap").to_str().unwrap())
            .replace(
                "oci://quickstart/image",
                &format!("oci://{}/quickstart/image", examples.display()),
            )
            .replace("../quickstart-out", dir.join("quickstart-out").to_str().unwrap());
        let file = dir.join(&name);
        std::fs::write(&file, text).unwrap();
        let cache = dir.join("cache");
        let env = [
            ("MIRROR_USER", "mirror"),
            ("MIRROR_PASSWORD", "unused-by-the-test-registry"),
            ("QUAY_TOKEN", "test-token"),
            ("OCCY_QUAY_API", quay.as_str()),
            ("OCCY_QUAY_REGISTRY", src.host.as_str()),
        ];
        let base = [
            "--insecure-registry",
            &src.host,
            "--insecure-registry",
            &dst.host,
            "--cache-dir",
            cache.to_str().unwrap(),
            "sync",
            file.to_str().unwrap(),
        ];
        let with = |extra: &[&str]| {
            let mut a: Vec<&str> = base.to_vec();
            a.extend_from_slice(extra);
            occy_env(&env, &a)
        };
        let plan = with(&["--plan", "--detailed-exitcode", "-O", "json"]);
        assert_eq!(
            plan.status.code(),
            Some(3),
            "{name}: plan: {}",
            String::from_utf8_lossy(&plan.stderr)
        );
        let p = json_of(&plan);
        assert!(p["totals"]["targets"].as_u64().unwrap() >= 2, "{name}: {p}");
        assert_eq!(p["totals"]["failed"], 0, "{name}: {p}");
        let apply = with(&[]);
        assert!(
            apply.status.success(),
            "{name}: apply: {}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let again = with(&["--plan", "--detailed-exitcode"]);
        assert_eq!(
            again.status.code(),
            Some(0),
            "{name}: not idempotent: {}",
            String::from_utf8_lossy(&again.stdout)
        );
        // Every OCI layout an example writes is read by skopeo and umoci.
        for layout in [dir.join("airgap/layout"), dir.join("quickstart-out/layout")] {
            if let Ok(bytes) = std::fs::read(layout.join("index.json")) {
                let index: Value = serde_json::from_slice(&bytes).unwrap();
                for m in index["manifests"].as_array().unwrap() {
                    let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap();
                    assert_oci_layout_readable(&layout, tag, true);
                }
            }
        }
        ran.push(name);
    }
    ran.sort();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "airgap-inside.yaml",
            "airgap-outside.yaml",
            "github-actions-matrix.yml",
            "k8s-indexed-job.yaml"
        ]
    );
    assert_eq!(
        ran,
        [
            "airgap-export.yaml",
            "quay-org.yaml",
            "quickstart.yaml",
            "registry-mirror.yaml",
            "reproducible.yaml"
        ]
    );
}

/// `occy --insecure-registry A --insecure-registry B ARGS…`.
fn occy_between(src: &Registry, dst: &Registry, args: &[&str]) -> Output {
    let mut all = vec!["--insecure-registry", &src.host, "--insecure-registry", &dst.host];
    all.extend_from_slice(args);
    occy(&all)
}

#[test]
fn process_of_a_registry_glob_copies_every_image_it_names() {
    let src = source_registry();
    let dst = Registry::start(Mode::Plain);
    let from = format!("registry://{}/apps/*:v*", src.host);

    // Registry destination with a template: three images, -J 2, a progress line each.
    let to = format!("registry://{}/copy/{{name}}", dst.host);
    let out = occy_between(&src, &dst, &["process", &from, &to, "-J", "2"]);
    let stderr = assert_ok(&["process", &from, &to], out).stderr;
    let stderr = String::from_utf8_lossy(&stderr);
    for n in 1..=3 {
        assert!(stderr.contains(&format!("[{n}/3] registry://")), "{stderr}");
    }
    assert_eq!(stderr.matches(" complete (").count(), 3, "{stderr}");
    for tag in ["v1.0", "v1.1", "v2.0"] {
        let want = src.inspect(&format!("apps/web:{tag}"), false)["Digest"].clone();
        assert_eq!(dst.inspect(&format!("copy/web:{tag}"), false)["Digest"], want, "{tag}");
    }

    // JSON: an array, one report per image.
    let out = occy_between(&src, &dst, &["-O", "json", "process", &from, &to]);
    let reports = json_of(&assert_ok(&["process", &from, &to, "-O", "json"], out));
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 3);
    assert!(reports
        .iter()
        .all(|r| r["digest"].as_str().unwrap().starts_with("sha256:")));

    // One tarball for every image is refused (exit 2), pointing at it.
    let dir = scratch_dir("process-glob");
    let single = format!("tar://{}/all.tar", dir.display());
    let stderr = assert_fails(
        &["process", &from, &single],
        occy_between(&src, &dst, &["process", &from, &single]),
        2,
        "every one of them would overwrite one tarball",
    );
    assert!(stderr.contains("{name}-{tag}.tar"), "{stderr}");
    assert!(!dir.join("all.tar").exists());

    // With a template each image gets its own tarball, and nothing else is left beside them.
    let each = format!("tar://{}/{{name}}-{{tag}}.tar", dir.display());
    assert_ok(
        &["process", &from, &each],
        occy_between(&src, &dst, &["process", &from, &each]),
    );
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["web-v1.0.tar", "web-v1.1.tar", "web-v2.0.tar"]);

    // A dir:// shared by many images without unique_names is warned about.
    let shared_dir = format!("dir://{}/shared", dir.display());
    let out = occy_between(&src, &dst, &["process", &from, &shared_dir]);
    let stderr = String::from_utf8_lossy(&assert_ok(&["process", &from, &shared_dir], out).stderr).into_owned();
    assert!(stderr.contains("without unique_names=true"), "{stderr}");

    // A pattern that matches nothing is not an error.
    let none = format!("registry://{}/apps/*:nothing-*", src.host);
    let out = occy_between(&src, &dst, &["process", &none, &to]);
    let out = assert_ok(&["process", &none, &to], out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No images found matching"));
}

#[test]
fn info_of_a_glob_is_a_json_array_or_separated_text() {
    let src = source_registry();
    let pattern = format!("registry://{}/apps/web:v1.*", src.host);
    let args = ["--insecure-registry", &src.host, "-O", "json", "info", pattern.as_str()];
    let out = assert_ok(&args, occy(&args));
    let infos = json_of(&out);
    let tags: Vec<&str> = infos
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["v1.0", "v1.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[2/2] registry://"), "{stderr}");

    let text_args = ["--insecure-registry", &src.host, "info", pattern.as_str()];
    let out = assert_ok(&text_args, occy(&text_args));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches("---\n").count(), 1);
}

#[test]
fn a_quay_org_one_shot_names_the_image_that_failed_and_does_the_rest() {
    let src = source_registry();
    // The fake API lists web:latest, web:v1.0 and api:latest; web:v1.0 is not pushed.
    for (image, repo) in [("web_v1.0", "web"), ("api_1.0", "api")] {
        push_as(&src, image, &format!("projectquay/{repo}:latest"));
    }
    let dst = Registry::start(Mode::Plain);
    let quay = fake_quay_api();
    let env = [
        ("OCCY_QUAY_API", quay.as_str()),
        ("OCCY_QUAY_REGISTRY", src.host.as_str()),
    ];
    let to = format!("registry://{}/quay/{{repo}}:{{tag}}", dst.host);
    let base = ["--insecure-registry", &src.host, "--insecure-registry", &dst.host];
    let run = |args: &[&str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(args);
        occy_env(&env, &all)
    };

    let out = run(&["process", "quay://projectquay/*", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED") && stderr.contains("projectquay/web:v1.0"),
        "{stderr}"
    );
    for repo_tag in ["quay/projectquay/web:latest", "quay/projectquay/api:latest"] {
        assert!(dst.inspect(repo_tag, false)["Digest"].is_string(), "{repo_tag}");
    }

    let out = run(&["-O", "json", "info", "quay://projectquay/*"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_of(&out).as_array().unwrap().len(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("projectquay/web:v1.0"));

    let out = run(&["info", "quay://projectquay/nothing*"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No images found matching"));
}

const PRUNED: &str = r#"version: 1
registries:
  SRC: { insecure: true }
  DST: { insecure: true }
sync:
  - from: registry://SRC/lib/alpine
    tags: { semver: ">=3.19", exclude: ["*-rc*"] }
    to: registry://DST/mirror/alpine
"#;

/// The tags of `repo` on `reg`, sorted.
fn tags_of(reg: &Registry, repo: &str) -> Vec<String> {
    let target = format!("docker://{}/{repo}", reg.host);
    let out = reg.skopeo(&["list-tags", &target], false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut tags = strings(&serde_json::from_slice::<Value>(&out.stdout).unwrap()["Tags"]);
    tags.sort();
    tags
}

#[test]
fn prune_deletes_only_the_tags_the_file_no_longer_selects() {
    let s = Setup::new("sync-prune", PRUNED, "mirror.yaml");
    assert_ok(&["sync"], s.sync(&[]));
    // Tags the file does not select: 3.17 (its own manifest), stable (the
    // same manifest as the selected 3.19), and a repository it does not sync.
    let (dst_layout_push, dst) = (mirror_layout(), &s.dst);
    dst.push_layout(dst_layout_push, "alpine_3.17", "mirror/alpine:3.17");
    dst.push_layout(dst_layout_push, "alpine_3.19", "mirror/alpine:stable");
    dst.push_layout(dst_layout_push, "alpine_3.17", "elsewhere/alpine:3.17");

    // Without --prune nothing is to do.
    assert_eq!(s.plan().0, 0);
    let out = s.sync(&["--plan", "--prune", "--detailed-exitcode", "-O", "json"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = json_of(&out);
    let pruned: Vec<&str> = plan["prune"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["destination"].as_str().unwrap())
        .collect();
    assert_eq!(pruned, [format!("registry://{}/mirror/alpine:3.17", dst.host)]);
    assert_eq!(plan["totals"]["prune"], 1);
    let warnings = plan["warnings"].to_string();
    assert!(warnings.contains("mirror/alpine:stable is kept"), "{warnings}");
    let text = s.sync(&["--plan", "--prune"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("mirror/alpine:3.17: delete"), "{text}");

    // Apply deletes exactly that tag; the rest stays.
    let before = tags_of(dst, "mirror/alpine");
    assert!(before.contains(&"3.17".to_string()));
    let out = assert_ok(&["sync", "--prune"], s.sync(&["--prune"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pruned"));
    let after = tags_of(dst, "mirror/alpine");
    let want: Vec<String> = before.into_iter().filter(|t| t != "3.17").collect();
    assert_eq!(after, want);
    assert!(after.contains(&"stable".to_string()) && after.contains(&"3.19".to_string()));
    assert_eq!(tags_of(dst, "elsewhere/alpine"), ["3.17"]);
    assert_eq!(
        s.sync(&["--plan", "--prune", "--detailed-exitcode"]).status.code(),
        Some(0)
    );

    // --prune with --only would see a partial selection: refused.
    let out = s.sync(&["--prune", "--only", "*alpine:3.19"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Requests in an access log (lines naming an HTTP method).
fn requests_in(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            ["\"GET ", "\"HEAD ", "\"PUT ", "\"POST ", "\"PATCH ", "\"DELETE "]
                .iter()
                .any(|m| l.contains(m))
        })
        .map(String::from)
        .collect()
}

#[test]
fn a_plan_costs_one_request_per_tag_on_each_side_cold_or_warm() {
    let src = Registry::start_logged(Mode::Plain);
    for name in mirror_names().iter().filter(|n| n.starts_with("alpine_")) {
        let (_, tag) = name.split_once('_').unwrap();
        src.push_layout(mirror_layout(), name, &format!("lib/alpine:{tag}"));
    }
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("warm-plan");
    let file = dir.join("mirror.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nregistries:\n  {s}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\nsync:\n  - from: registry://{s}/lib/alpine\n    to: registry://{d}/mirror/alpine\n",
            s = src.host,
            d = dst.host
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["sync", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        assert_ok(&args, occy(&args))
    };
    // Cold: the destination repository is listed once and nothing else is
    // asked there (no HEAD per tag, no HEAD per blob); the source gives its
    // tag listing, one HEAD (does it announce a pull quota?) and one
    // manifest per tag, and no config; plus one referrers-API probe
    // (Distribution answers 404 once; the tag listing shows no referrers
    // tags, so nothing else is asked).
    let seeded = requests_in(&src.access_log()).len();
    let out = run(&["--plan", "-O", "json"]);
    let plan = json_of(&out);
    let tags = plan["totals"]["targets"].as_u64().unwrap() as usize;
    assert_eq!(plan["totals"]["create"].as_u64().unwrap() as usize, tags, "{plan}");
    let src_cold = requests_in(&src.access_log())[seeded..].to_vec();
    let dst_cold = requests_in(&dst.access_log());
    assert_plan_requests(&src_cold, tags + 3, &dst_cold, 1);

    run(&[]);
    let (src_before, dst_before) = (
        requests_in(&src.access_log()).len(),
        requests_in(&dst.access_log()).len(),
    );
    let out = run(&["--plan", "-O", "json"]);
    let plan = json_of(&out);
    assert_eq!(plan["totals"]["unchanged"].as_u64().unwrap() as usize, tags, "{plan}");
    assert!(tags >= 9, "{plan}");
    let src_log = requests_in(&src.access_log());
    let dst_log = requests_in(&dst.access_log());
    // Warm: source: the tag listing, one HEAD per tag (no manifest GET,
    // which pull quotas count); destination: the tag listing, one HEAD per
    // tag; each side one referrers-API probe.
    assert_plan_requests(&src_log[src_before..], tags + 2, &dst_log[dst_before..], tags + 2);
    let gets: Vec<&String> = src_log[src_before..]
        .iter()
        .filter(|l| l.contains("\"GET ") && l.contains("/manifests/"))
        .collect();
    assert!(gets.is_empty(), "a warm plan GETs manifests:\n{gets:?}");
}

/// A plan sent at most `src_max` and `dst_max` requests, and read no blob
/// (no config) at the source.
fn assert_plan_requests(src: &[String], src_max: usize, dst: &[String], dst_max: usize) {
    for (side, lines, max) in [("source", src, src_max), ("destination", dst, dst_max)] {
        assert!(
            lines.len() <= max,
            "{} {side} requests (at most {max}):\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
    assert!(
        !src.iter().any(|l| l.contains("/blobs/")),
        "configs were fetched:\n{}",
        src.join("\n")
    );
}

/// `"PUT /v2/REPO/…"` requests of an access log, as (method, path, status).
fn served(log: &str) -> Vec<(String, String, u16)> {
    requests_in(log)
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once('"')?;
            let (request, after) = rest.split_once('"')?;
            let mut parts = request.split(' ');
            let method = parts.next()?.to_string();
            let path = parts.next()?.to_string();
            let status = after.split_whitespace().next()?.parse().ok()?;
            Some((method, path, status))
        })
        .collect()
}

/// What a registry's access log shows per repository: blob uploads (the
/// PUT that completes one), mounts that took (201), manifest PUTs.
#[derive(Debug, Default, PartialEq)]
struct Writes {
    uploads: u64,
    mounts: u64,
    manifests: u64,
}

fn writes_by_repo(log: &[(String, String, u16)]) -> std::collections::BTreeMap<String, Writes> {
    let mut out: std::collections::BTreeMap<String, Writes> = Default::default();
    for (method, path, status) in log {
        let Some(rest) = path.strip_prefix("/v2/") else {
            continue;
        };
        let (repo, what) = match (rest.find("/blobs/"), rest.find("/manifests/")) {
            (Some(i), _) => (&rest[..i], &rest[i..]),
            (None, Some(i)) => (&rest[..i], &rest[i..]),
            _ => continue,
        };
        let w = out.entry(repo.to_string()).or_default();
        if method == "PUT" && what.starts_with("/blobs/uploads/") && what.contains("digest=") && *status == 201 {
            w.uploads += 1;
        } else if method == "POST" && what.contains("mount=") && *status == 201 {
            w.mounts += 1;
        } else if method == "PUT" && what.starts_with("/manifests/") && *status == 201 {
            w.manifests += 1;
        }
    }
    out.retain(|_, w| *w != Writes::default());
    out
}

/// The plan's numbers for the stores of `host`, keyed by repository.
fn planned_writes(plan: &Value, host: &str) -> std::collections::BTreeMap<String, Writes> {
    let prefix = format!("registry://{host}/");
    plan["stores"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            let repo = k.strip_prefix(&prefix)?;
            let w = Writes {
                uploads: v["uploads"].as_u64().unwrap(),
                mounts: v["mounts"].as_u64().unwrap(),
                manifests: v["manifests"].as_u64().unwrap(),
            };
            (w != Writes::default()).then(|| (repo.to_string(), w))
        })
        .collect()
}

#[test]
fn a_graph_run_reads_each_blob_once_and_its_plan_matches_the_access_logs() {
    // Seven images sharing a base layer, each to a registry, an OCI layout
    // and a tarball; one more through a filter chain to a registry and a
    // tarball.
    let src = Registry::start_logged(Mode::Plain);
    for name in [
        "alpine_3.18",
        "alpine_3.18.1",
        "alpine_3.19",
        "alpine_3.19.1",
        "alpine_3.20",
        "web_v1.0",
        "web_v1.1",
        "web_v2.0",
    ] {
        let (short, tag) = name.split_once('_').unwrap();
        src.push_layout(mirror_layout(), name, &format!("{}:{tag}", repo_of(short)));
    }
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("graph-run");
    let out = dir.join("out");
    let file = dir.join("fanout.yaml");
    let text = format!(
        "version: 1\ndefaults:\n  image_parallel: 4\n  parallel: 4\nregistries:\n  {s}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\n\
         filters:\n  repro:\n    - normalize-timestamps: {{ ts: 0, config: true }}\nsync:\n\
         \x20 - from: registry://{s}/lib/alpine\n    tags: [\"3.18\", \"3.18.1\", \"3.19\", \"3.19.1\", \"3.20\"]\n    to:\n      - registry://{d}/mirror/alpine\n      - oci://{o}/layout\n      - \"tar://{o}/tars/alpine-{{tag}}.tar\"\n\
         \x20 - from: registry://{s}/apps/web\n    tags: [\"v1.0\", \"v1.1\"]\n    to:\n      - registry://{d}/mirror/web\n      - oci://{o}/layout\n      - \"tar://{o}/tars/web-{{tag}}.tar\"\n\
         \x20 - from: registry://{s}/apps/web:v2.0\n    filters: repro\n    to:\n      - registry://{d}/filtered/web\n      - \"tar://{o}/filtered/web-{{tag}}.tar\"\n",
        s = src.host,
        d = dst.host,
        o = out.display()
    );
    std::fs::write(&file, text).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["-O", "json", "sync", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        json_of(&assert_ok(&args, occy(&args)))
    };
    // The registry logs a request just after answering it: read the logs
    // once they stop growing.
    let logs = || {
        let mut last = (String::new(), String::new());
        loop {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let now = (src.access_log(), dst.access_log());
            if now == last {
                return (served(&now.0), served(&now.1));
            }
            last = now;
        }
    };

    // Cold.
    assert_dot_draws_each_blob_once_per_store(&file);
    let (src0, dst0) = logs();
    let plan = run(&["--plan"]);
    assert_eq!(plan["plan_version"], 2);
    assert_eq!(plan["totals"]["create"], 21, "{}", plan["totals"]);
    assert_eq!(plan["totals"]["rebuild"], 2, "{}", plan["totals"]);
    let nodes = plan["nodes"].as_array().unwrap();
    let edges = plan["edges"].as_array().unwrap();
    assert!(!edges.is_empty());
    let kind = |k: &str| nodes.iter().filter(|n| n["kind"] == k).count();
    let rewrites = kind("rewrite");
    assert_eq!(
        rewrites, 2,
        "web:v2.0's two layers, rewritten once for both destinations"
    );
    let (src1, dst1) = logs();
    let report = run(&[]);
    assert_eq!(report["written"], 23, "{}", report["targets"]);
    assert_eq!(report["layers_rewritten"].as_u64().unwrap() as usize, rewrites);
    let (src2, dst2) = logs();

    // The source served each blob it was asked for once in the whole run
    // (planning reads the configs archives need; the walk, the layers and
    // nothing twice), and exactly the fetches the plan counted.
    let blob_gets = |log: &[(String, String, u16)]| -> Vec<String> {
        log.iter()
            .filter(|(m, p, _)| m == "GET" && p.contains("/blobs/"))
            .map(|(_, p, _)| p.clone())
            .collect()
    };
    let planning_gets = blob_gets(&src1[src0.len()..]);
    let run_gets = blob_gets(&src2[src1.len()..]);
    let digests: HashSet<&str> = run_gets.iter().map(|p| p.rsplit('/').next().unwrap()).collect();
    assert_eq!(run_gets.len(), digests.len(), "a blob read twice: {run_gets:#?}");
    let planned_fetches: u64 = plan["stores"][format!("registry://{}", src.host)]["fetches"]
        .as_u64()
        .unwrap();
    assert_eq!(
        run_gets.len() as u64,
        planning_gets.len() as u64 + planned_fetches,
        "{run_gets:#?}\n{}",
        plan["stores"]
    );

    // Each destination repository got what the plan said: one upload per
    // blob it lacked, mounts for the rest of the registry's, one PUT per
    // manifest; no blob uploaded twice to the registry.
    let dst_applied = &dst2[dst1.len()..];
    assert_eq!(
        writes_by_repo(dst_applied),
        planned_writes(&plan, &dst.host),
        "{}",
        plan["stores"]
    );
    let mut uploaded = HashSet::new();
    for (m, p, s) in dst_applied {
        if m == "PUT" && p.contains("/blobs/uploads/") && *s == 201 {
            let d = p
                .split("digest=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .to_string();
            assert!(uploaded.insert(d.clone()), "{d} uploaded twice to the registry");
        }
    }
    // Planning itself wrote nothing, and read configs only (one per image
    // an archive or a chain needs).
    assert!(dst1[dst0.len()..].iter().all(|(m, _, _)| m == "GET" || m == "HEAD"));
    assert!(planning_gets.len() <= 8, "{planning_gets:#?}");
    // Every output is there and read back by the tools users use.
    let layout = out.join("layout");
    for tag in ["3.18", "3.20", "v1.1"] {
        let o = std::process::Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:{tag}", layout.display())])
            .output();
        if let Ok(o) = o {
            assert!(
                o.status.success(),
                "skopeo inspect oci:{tag}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    assert!(out.join("tars/alpine-3.19.1.tar").is_file() && out.join("filtered/web-v2.0.tar").is_file());

    // Warm: nothing to do, nothing written.
    let plan = run(&["--plan"]);
    assert_eq!(plan["totals"]["unchanged"], 23, "{}", plan["totals"]);
    assert!(planned_writes(&plan, &dst.host).is_empty(), "{}", plan["stores"]);
    let (_, dst3) = logs();
    run(&[]);
    let (_, dst4) = logs();
    assert_eq!(writes_by_repo(&dst4[dst3.len()..]), Default::default());

    // A moved tag: one update, and the plan's numbers are again the log's.
    push_as(&src, "alpine_3.21-rc1", "lib/alpine:3.20");
    let (src4, _) = logs();
    let plan = run(&["--plan"]);
    assert_eq!(
        plan["totals"]["update"], 3,
        "registry, layout and tarball of alpine:3.20: {}",
        plan["totals"]
    );
    let (src5, dst5) = logs();
    let planning = blob_gets(&src5[src4.len()..]).len() as u64;
    run(&[]);
    let (src6, dst6) = logs();
    assert_eq!(
        writes_by_repo(&dst6[dst5.len()..]),
        planned_writes(&plan, &dst.host),
        "{}",
        plan["stores"]
    );
    let gets = blob_gets(&src6[src5.len()..]).len() as u64;
    let fetches = plan["stores"][format!("registry://{}", src.host)]["fetches"]
        .as_u64()
        .unwrap();
    assert_eq!(gets, planning + fetches);
}

/// `occy sync F --plan -O dot` renders with Graphviz, and draws one node per
/// distinct blob per store (as the JSON plan's nodes have them).
fn assert_dot_draws_each_blob_once_per_store(file: &Path) {
    let args = ["-O", "json", "sync", file.to_str().unwrap(), "--plan"];
    let plan = json_of(&assert_ok(&args, occy(&args)));
    let args = ["sync", file.to_str().unwrap(), "--plan", "-O", "dot"];
    let dot = String::from_utf8(assert_ok(&args, occy(&args)).stdout).unwrap();
    assert!(dot.starts_with("digraph occy_plan {"), "{dot}");
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("Graphviz `dot` runs (test.sh installs graphviz)");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
    let svg = child.wait_with_output().unwrap();
    assert!(svg.status.success(), "dot -Tsvg failed");
    assert!(String::from_utf8_lossy(&svg.stdout).contains("<svg"), "no SVG");

    // (store, blob) of each drawn blob node: its label's last line is the
    // store; no pair twice.
    let mut drawn: std::collections::BTreeMap<String, usize> = Default::default();
    let mut seen = HashSet::new();
    for line in dot.lines().filter(|l| l.contains("[label=\"blob ")) {
        let label = line.split("[label=\"").nth(1).unwrap().split("\", ").next().unwrap();
        let parts: Vec<&str> = label.split("\\n").collect();
        let store = parts.last().unwrap().to_string();
        assert!(
            seen.insert((store.clone(), parts[0].to_string())),
            "drawn twice: {line}"
        );
        *drawn.entry(store).or_default() += 1;
    }
    let mut distinct: std::collections::BTreeMap<String, HashSet<String>> = Default::default();
    for n in plan["nodes"].as_array().unwrap().iter().filter(|n| n["kind"] == "blob") {
        distinct
            .entry(n["store"].as_str().unwrap().to_string())
            .or_default()
            .insert(n["blob"].as_str().unwrap().to_string());
    }
    let distinct: std::collections::BTreeMap<String, usize> = distinct.into_iter().map(|(k, v)| (k, v.len())).collect();
    assert_eq!(drawn, distinct);
    assert!(distinct.len() >= 10, "{distinct:?}");
}

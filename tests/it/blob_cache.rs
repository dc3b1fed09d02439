//! Blob locations remembered across runs (`blob-locations.json` in the cache
//! directory), measured on a real Distribution registry's access log:
//! separate `occy process` runs of images sharing base layers into new
//! repositories mount what earlier runs wrote and upload each distinct blob
//! once, and without the cache they upload everything; `occy sync` plans
//! and makes the same mounts; a stale remembered location costs a declined
//! mount and an upload, never a failure; concurrent runs sharing the cache
//! leave it whole; and a sync to a registry, an OCI layout and tarballs at
//! once, run again after the destination was wiped with the first run's
//! cache, asks its stale remembered mounts before the one read of each
//! blob and uploads the declined ones from it: the source's access log
//! shows each distinct blob read once, with a filter chain or without.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use occy_testkit::generate::{Entry, ImageSpec, LayerCompression, LayerSpec, MediaTypes, NamedSpec, Spec};
use serde_json::Value;

use crate::support::*;

/// The images: `svc-a` … `svc-d`, each three shared base layers (an OS, a
/// runtime, a framework) and one layer of its own.
const IMAGES: [&str; 4] = ["svc-a", "svc-b", "svc-c", "svc-d"];
const SHARED_LAYERS: usize = 3;

fn data_layer(dir: &str, size: u64, seed: u64) -> LayerSpec {
    LayerSpec {
        entries: vec![
            Entry::Dir(dir.to_string()),
            Entry::Big(format!("{dir}/data.bin"), size, seed),
        ],
        compression: LayerCompression::Gzip,
        created_by: format!("/bin/sh -c #(nop) ADD {dir}.tar /{dir}"),
    }
}

/// An OCI layout and, per image, its name and blobs (layers and config) as
/// hex digests.
type ImageSet = (PathBuf, Vec<(String, Vec<String>)>);

/// The images as an OCI layout, written once.
fn images() -> &'static ImageSet {
    static SET: OnceLock<ImageSet> = OnceLock::new();
    SET.get_or_init(|| {
        let bases = [
            data_layer("os", 96 * 1024, 7001),
            data_layer("runtime", 64 * 1024, 7002),
            data_layer("framework", 48 * 1024, 7003),
        ];
        let specs: Vec<NamedSpec> = IMAGES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut layers = bases.to_vec();
                layers.push(data_layer(&format!("srv/{name}"), 32 * 1024, 7100 + i as u64));
                NamedSpec {
                    name: name.to_string(),
                    spec: Spec::Image(ImageSpec {
                        platform: occy::image::Platform {
                            os: "linux".into(),
                            architecture: "amd64".into(),
                            ..Default::default()
                        },
                        layers,
                        media_types: MediaTypes::Oci,
                        env: vec!["PATH=/usr/bin:/bin".into()],
                        cmd: vec![format!("/srv/{name}/data.bin")],
                        working_dir: "/".into(),
                        labels: vec![("name".into(), name.to_string())],
                        empty_history: Vec::new(),
                    }),
                }
            })
            .collect();
        let dir = scratch_dir("blob-cache-images");
        let generated = occy_testkit::generate::write_layout(&dir, &specs).unwrap();
        let blobs = generated
            .iter()
            .map(|g| {
                let img = &g.images[0];
                let mut b: Vec<String> = img.layers.iter().map(|l| l.digest.hex().to_string()).collect();
                b.push(img.config.digest.hex().to_string());
                (g.name.clone(), b)
            })
            .collect();
        (dir, blobs)
    })
}

fn source(name: &str) -> String {
    format!("oci://{}:{name}", images().0.display())
}

fn blobs_of(name: &str) -> &'static [String] {
    &images().1.iter().find(|(n, _)| n == name).unwrap().1
}

/// Distinct blobs of the four images.
fn distinct_blobs() -> BTreeSet<String> {
    images().1.iter().flat_map(|(_, b)| b.iter().cloned()).collect()
}

/// Blob writes the registry completed (201), per repository and blob, and
/// mounts it declined (202).
#[derive(Debug, Default)]
struct Writes {
    /// (repository, hex digest) per completed upload (PUT, or a one-request
    /// POST, with `?digest=`).
    uploads: Vec<(String, String)>,
    /// (repository, hex digest, from) per mount made (POST ?mount= 201).
    mounts: Vec<(String, String, String)>,
    /// The same, for mounts declined (POST ?mount= 202).
    declined: Vec<(String, String, String)>,
}

impl Writes {
    fn of(log: &str, repos_under: &str) -> Writes {
        let mut w = Writes::default();
        for line in log.lines() {
            let Some((_, rest)) = line.split_once('"') else {
                continue;
            };
            let Some((request, after)) = rest.split_once('"') else {
                continue;
            };
            let status = after.split_whitespace().next().unwrap_or("");
            let mut parts = request.split_whitespace();
            let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(path) = path.strip_prefix("/v2/") else {
                continue;
            };
            let Some((repo, upload)) = path.split_once("/blobs/uploads/") else {
                continue;
            };
            if !repo.starts_with(repos_under) {
                continue;
            }
            let param = |name: &str| {
                upload.split(['?', '&']).find_map(|kv| {
                    let v = kv.strip_prefix(name)?;
                    Some(
                        v.trim_start_matches("sha256%3A")
                            .trim_start_matches("sha256:")
                            .replace("%2F", "/"),
                    )
                })
            };
            let repo = repo.to_string();
            match (method, status, param("mount="), param("digest=")) {
                ("POST", "201", Some(d), _) => w.mounts.push((repo, d, param("from=").unwrap_or_default())),
                ("POST", "202", Some(d), _) => w.declined.push((repo, d, param("from=").unwrap_or_default())),
                ("PUT" | "POST", "201", None, Some(d)) => w.uploads.push((repo, d)),
                _ => {}
            }
        }
        w
    }

    fn uploaded(&self) -> BTreeSet<String> {
        self.uploads.iter().map(|u| u.1.clone()).collect()
    }
}

/// `occy [flags] -O json process SRC DST` against `reg`, with `cache`
/// (`--cache-dir DIR`) or none (`--no-cache`); the JSON report.
fn process(reg: &Registry, cache: Option<&Path>, name: &str, dst_repo: &str) -> Value {
    let cache_flag = cache.map(|c| c.display().to_string());
    let mut args: Vec<&str> = match &cache_flag {
        Some(c) => vec!["--cache-dir", c],
        None => vec!["--no-cache"],
    };
    let src = source(name);
    let dst = reg.url(&format!("{dst_repo}:1.0"));
    args.extend(["-O", "json", "process", &src, &dst]);
    json_of(&reg.ok(&args))
}

#[test]
fn separate_runs_mount_what_earlier_runs_wrote_and_without_the_cache_upload_it_all() {
    let reg = Registry::start_logged(Mode::Plain);
    let cache = scratch_dir("blob-cache-separate");
    let distinct = distinct_blobs();
    let all: usize = IMAGES.iter().map(|n| blobs_of(n).len()).sum();
    assert_eq!(
        distinct.len(),
        SHARED_LAYERS + 2 * IMAGES.len(),
        "the fixture: 3 bases, own layers, configs"
    );

    // Four separate runs, each into a new repository, one cache.
    for (i, name) in IMAGES.iter().enumerate() {
        let r = process(&reg, Some(&cache), name, &format!("sep/{name}"));
        let want = if i == 0 { 0 } else { SHARED_LAYERS };
        assert_eq!(r["layers_mounted"], want, "{name}: {r}");
        assert_eq!(r["mounts_declined"], 0, "{name}: {r}");
    }
    let w = Writes::of(&reg.access_log(), "sep/");
    assert_eq!(w.uploads.len(), distinct.len(), "uploads = distinct blobs: {w:?}");
    assert_eq!(w.uploaded(), distinct, "each distinct blob uploaded once");
    assert_eq!(w.mounts.len(), all - distinct.len(), "the rest mounted: {w:?}");
    assert_eq!(w.mounts.len(), (IMAGES.len() - 1) * SHARED_LAYERS);
    assert!(w.declined.is_empty(), "{w:?}");
    for (repo, _, from) in &w.mounts {
        assert!(
            from.starts_with("sep/svc-") && from != repo,
            "mounted {repo} from {from}"
        );
    }
    // Every image is complete where it was written.
    for name in IMAGES {
        let m = reg.inspect(&format!("sep/{name}:1.0"), true);
        assert_eq!(m["layers"].as_array().unwrap().len(), SHARED_LAYERS + 1);
    }

    // The same four runs without the cache: every blob uploaded, no mount,
    // though the registry holds every blob already.
    for name in IMAGES {
        let r = process(&reg, None, name, &format!("nocache/{name}"));
        assert_eq!(r["layers_mounted"], 0, "{name}: {r}");
        assert_eq!(r["layers_copied"], SHARED_LAYERS + 1, "{name}: {r}");
    }
    let w = Writes::of(&reg.access_log(), "nocache/");
    assert_eq!(
        w.uploads.len(),
        all,
        "without the cache, every blob of every image: {w:?}"
    );
    assert!(w.mounts.is_empty() && w.declined.is_empty(), "{w:?}");

    // occy sync reads the same cache: the plan says where it mounts from
    // and why, and the apply mounts the shared layers.
    let dir = scratch_dir("blob-cache-sync");
    let file = dir.join("sync.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nregistries:\n  \"{host}\": {{ insecure: true }}\nsync:\n  - from: {src}\n    to: registry://{host}/synced/svc-d:1.0\n",
            host = reg.host,
            src = source("svc-d"),
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let cache_flag = cache.display().to_string();
    let plan = reg.ok(&["--cache-dir", &cache_flag, "sync", file, "--plan"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    // svc-d's every blob was last seen in sep/svc-d (the latest run).
    assert!(
        text.contains("mount from remembered sep/svc-d, may upload: 5 blobs"),
        "the plan names the remembered repository: {text}"
    );
    let report = json_of(&reg.ok(&["--cache-dir", &cache_flag, "-O", "json", "sync", file]));
    assert_eq!(report["written"], 1, "{report}");
    assert_eq!(report["layers_mounted"], SHARED_LAYERS + 1, "{report}");
    let w = Writes::of(&reg.access_log(), "synced/");
    assert_eq!(w.uploads.len(), 0, "everything was there to mount: {w:?}");
    assert_eq!(w.mounts.len(), blobs_of("svc-d").len(), "{w:?}");
}

#[test]
fn a_stale_remembered_location_costs_a_declined_mount_and_an_upload() {
    let reg = Registry::start_logged(Mode::Plain);
    let cache = scratch_dir("blob-cache-stale");
    process(&reg, Some(&cache), "svc-a", "stale/svc-a");
    // The repository is deleted behind occy's back (its links removed from
    // the registry's storage, as an administrator's cleanup would).
    let repo_dir = reg.dir.join("data/docker/registry/v2/repositories/stale/svc-a");
    assert!(repo_dir.is_dir(), "{}", repo_dir.display());
    std::fs::remove_dir_all(&repo_dir).unwrap();
    // A location remembered for a repository that exists but never held
    // the blob: svc-b's own layer "in" stale/elsewhere.
    process(&reg, Some(&cache), "svc-c", "stale/elsewhere");
    let own_b = blobs_of("svc-b")[SHARED_LAYERS].clone();
    let path = cache.join("blob-locations.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["locations"].as_array_mut().unwrap().push(serde_json::json!({
        "host": reg.host,
        "repository": "stale/elsewhere",
        "digest": format!("sha256:{own_b}"),
        "seen": 1u64,
    }));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let before = Writes::of(&reg.access_log(), "stale/svc-b");
    assert!(before.uploads.is_empty());
    let r = process(&reg, Some(&cache), "svc-b", "stale/svc-b");
    let w = Writes::of(&reg.access_log(), "stale/svc-b");
    // The bases are remembered in stale/elsewhere too (written just now,
    // tried first): mounted from there. The deleted stale/svc-a is never
    // needed for them; svc-b's own layer is remembered only where it is not.
    assert_eq!(r["layers_mounted"], SHARED_LAYERS, "{r}");
    assert_eq!(r["mounts_declined"], 1, "{r}");
    assert_eq!(w.declined.len(), 1, "{w:?}");
    assert_eq!(w.declined[0].1, own_b);
    assert_eq!(w.declined[0].2, "stale/elsewhere");
    assert!(w.uploaded().contains(&own_b), "declined, so uploaded: {w:?}");

    // Only the deleted repository remembered for svc-d's bases and config:
    // every mount declined, every blob uploaded, and the run succeeds.
    let fresh = scratch_dir("blob-cache-stale-only");
    let config_d = blobs_of("svc-d")[SHARED_LAYERS + 1].clone();
    let locations: Vec<Value> = blobs_of("svc-a")[..SHARED_LAYERS]
        .iter()
        .chain(std::iter::once(&config_d))
        .map(|d| {
            serde_json::json!({"host": reg.host, "repository": "stale/svc-a", "digest": format!("sha256:{d}"), "seen": 5u64})
        })
        .collect();
    std::fs::write(
        fresh.join("blob-locations.json"),
        serde_json::to_vec(&serde_json::json!({"version": 1, "locations": locations})).unwrap(),
    )
    .unwrap();
    let r = process(&reg, Some(&fresh), "svc-d", "stale/svc-d");
    assert_eq!(r["layers_mounted"], 0, "{r}");
    assert_eq!(r["mounts_declined"], SHARED_LAYERS + 1, "{r}");
    assert_eq!(r["layers_copied"], SHARED_LAYERS + 1, "{r}");
    let w = Writes::of(&reg.access_log(), "stale/svc-d");
    assert_eq!(w.declined.len(), SHARED_LAYERS + 1, "{w:?}");
    assert!(
        w.declined.iter().any(|(_, d, _)| *d == config_d),
        "the config too: {w:?}"
    );
    assert!(w.declined.iter().all(|(_, _, from)| from == "stale/svc-a"));
    assert_eq!(w.uploaded(), blobs_of("svc-d").iter().cloned().collect::<BTreeSet<_>>());
    let m = reg.inspect("stale/svc-d:1.0", true);
    assert_eq!(m["layers"].as_array().unwrap().len(), SHARED_LAYERS + 1);
}

#[test]
fn concurrent_runs_sharing_the_cache_leave_it_whole() {
    let reg = Registry::start_logged(Mode::Plain);
    let cache = scratch_dir("blob-cache-concurrent");
    let cache_flag = cache.display().to_string();
    let spawn = |name: &str| {
        let src = source(name);
        let dst = reg.url(&format!("conc/{name}:1.0"));
        Command::new(occy_bin())
            .args(reg.occy_flags())
            .args(["--cache-dir", &cache_flag, "-O", "json", "process", &src, &dst])
            .env("HOME", scratch())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("OCCY_CACHE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn("svc-a"), spawn("svc-b"), spawn("svc-c")];
    for c in children {
        let out: Output = c.wait_with_output().unwrap();
        assert_ok(&["process"], out);
    }
    // The file is whole JSON and holds what every run wrote.
    let doc: Value =
        serde_json::from_slice(&std::fs::read(cache.join("blob-locations.json")).unwrap()).expect("readable cache");
    let held: BTreeSet<(String, String)> = doc["locations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["host"] == reg.host.as_str())
        .map(|l| {
            (
                l["repository"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string(),
            )
        })
        .collect();
    for name in ["svc-a", "svc-b", "svc-c"] {
        for b in blobs_of(name) {
            assert!(
                held.contains(&(format!("conc/{name}"), b.clone())),
                "{name} {b} lost: {doc}"
            );
        }
    }
    // And occy reads it: the next run mounts the shared layers.
    let r = process(&reg, Some(&cache), "svc-d", "conc/svc-d");
    assert_eq!(r["layers_mounted"], SHARED_LAYERS, "{r}");
}

/// `GET /v2/…/blobs/sha256:HEX` requests a registry served, per hex digest.
fn blob_gets(log: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once('"') else {
            continue;
        };
        let Some((request, _)) = rest.split_once('"') else {
            continue;
        };
        let mut parts = request.split_whitespace();
        let (Some("GET"), Some(path)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some((_, d)) = path.split_once("/blobs/sha256:") {
            *out.entry(d.to_string()).or_default() += 1;
        }
    }
    out
}

/// The access log of `reg` once it stops growing (the registry logs a
/// request just after answering it).
fn settled_log(reg: &Registry) -> String {
    let mut last = reg.access_log();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let now = reg.access_log();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The four images in a logged source registry, each synced to a
/// repository of a destination registry, an OCI layout and a tarball in
/// one run; then the destination is wiped (its storage removed under the
/// running registry, as a re-created registry or a cleanup leaves it: every
/// repository the cache remembers is gone) and the file outputs removed,
/// and the same sync runs again with the first run's cache. Its stale
/// remembered mounts are declined, and each blob is still read from the
/// source once: the declined mounts are uploaded from the read that feeds
/// the layout and the tarball (before, each was read a second time).
fn wiped_destination_reads_each_blob_once(filters: Option<&str>) {
    let src = Registry::start_logged(Mode::Plain);
    for name in IMAGES {
        src.push_layout(&images().0, name, &format!("src/{name}:1.0"));
    }
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("blob-cache-wiped");
    let out = dir.join("out");
    let cache = dir.join("cache");
    let file = dir.join("fan.yaml");
    let mut text = format!(
        "version: 1\nregistries:\n  \"{s}\": {{ insecure: true }}\n  \"{d}\": {{ insecure: true }}\nsync:\n",
        s = src.host,
        d = dst.host
    );
    for name in IMAGES {
        let from = format!("  - from: registry://{}/src/{name}:1.0\n", src.host);
        let registry = format!("      - registry://{}/fan/{name}\n", dst.host);
        let files = format!(
            "      - \"oci://{o}/layout:{{name}}-{{tag}}\"\n      - \"tar://{o}/tars/{{name}}-{{tag}}.tar\"\n",
            o = out.display()
        );
        match filters {
            None => text.push_str(&format!("{from}    to:\n{registry}{files}")),
            // The registry gets the image as it is, the files through the
            // chain: one fetch feeds the rewrite and the registry.
            Some(f) => text.push_str(&format!(
                "{from}    to:\n{registry}{from}    filters: [{f}]\n    to:\n{files}"
            )),
        }
    }
    std::fs::write(&file, text).unwrap();
    let (file, cache_flag) = (file.to_str().unwrap(), cache.display().to_string());
    let sync = |extra: &[&str]| {
        let mut args = vec!["--cache-dir", &cache_flag, "-O", "json", "sync", file];
        args.extend_from_slice(extra);
        json_of(&assert_ok(&args, occy(&args)))
    };

    let first = sync(&[]);
    assert_eq!(first["written"], 3 * IMAGES.len(), "{first}");
    let first_gets = blob_gets(&settled_log(&src));
    let distinct: BTreeSet<String> = first_gets.keys().cloned().collect();
    assert!(
        first_gets.values().all(|&n| n == 1),
        "the first run (an empty cache) reads each blob once: {first_gets:?}"
    );
    assert_eq!(distinct, distinct_blobs(), "every blob of the four images");

    // The destination is wiped: every repository, every blob.
    std::fs::remove_dir_all(dst.dir.join("data/docker")).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    let plan_text = {
        let args = ["--cache-dir", &cache_flag, "sync", file, "--plan"];
        String::from_utf8_lossy(&assert_ok(&args, occy(&args)).stdout).to_string()
    };
    let before_json = settled_log(&src).len();
    let plan = sync(&["--plan"]);
    let after_plans = settled_log(&src).len();

    let second = sync(&[]);
    assert_eq!(second["written"], 3 * IMAGES.len(), "{second}");
    // svc-a's shared bases are remembered in the three other images'
    // repositories, all gone (each asked, each declined); the later images
    // mount them from svc-a's, which this run writes first.
    assert_eq!(
        second["mounts_declined"],
        SHARED_LAYERS * (IMAGES.len() - 1),
        "the stale mounts were asked: {second}"
    );
    assert_eq!(second["layers_mounted"], SHARED_LAYERS * (IMAGES.len() - 1), "{second}");
    let log = settled_log(&src);
    let planning = blob_gets(&log[before_json..after_plans]);
    let gets = blob_gets(&log[after_plans..]);
    let reads: usize = gets.values().sum();
    assert!(
        gets.values().all(|&n| n == 1),
        "a blob read twice from the source ({reads} blob GETs for {} distinct blobs): {gets:?}",
        gets.len()
    );
    // Its planning reads the configs the tarballs need; its walk reads the
    // rest (nothing twice).
    assert_eq!(
        gets.keys().cloned().collect::<BTreeSet<_>>(),
        distinct,
        "the run needs every blob again"
    );

    // The plan said which mounts were remembered ones that may upload, and
    // counted them apart from the mounts the run made sure of (from svc-a's
    // repository, which this run writes first).
    assert!(
        plan_text.contains(", may upload: "),
        "the plan names the remembered repositories: {plan_text}"
    );
    assert!(
        plan_text.contains("mount from remembered repositories (may upload"),
        "{plan_text}"
    );
    assert_eq!(plan["totals"]["remembered"], SHARED_LAYERS, "{}", plan["totals"]);
    assert_eq!(
        plan["totals"]["mount"],
        (IMAGES.len() - 1) * SHARED_LAYERS,
        "{}",
        plan["totals"]
    );
    let source = &plan["stores"][format!("registry://{}", src.host)];
    assert_eq!(
        planning.len() as u64
            + source["fetches"].as_u64().unwrap()
            + source["fetches_if_declined"].as_u64().unwrap_or(0),
        gets.len() as u64,
        "the fetches the plan counted: {source}"
    );

    // What the destination registry, the layout and the tarballs hold is
    // whole and read back by skopeo.
    for name in IMAGES {
        let pulled = scratch_dir("blob-cache-wiped-pull");
        let o = dst.skopeo(
            &[
                "copy",
                &format!("docker://{}/fan/{name}:1.0", dst.host),
                &format!("oci:{}:x", pulled.display()),
            ],
            false,
        );
        assert!(
            o.status.success(),
            "skopeo copy fan/{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_blobs_match_names(&pulled);
        assert_oci_layout_readable(&out.join("layout"), &format!("{name}-1.0"), true);
        let tar = out.join(format!("tars/{name}-1.0.tar"));
        let sk = skopeo_inspect_local(&format!("docker-archive:{}", tar.display()), false);
        assert_eq!(sk["Layers"].as_array().unwrap().len(), SHARED_LAYERS + 1, "{sk}");
    }
    assert_blobs_match_names(&out.join("layout"));
}

#[test]
fn a_wiped_destination_with_a_stale_cache_reads_each_source_blob_once() {
    wiped_destination_reads_each_blob_once(None);
}

#[test]
fn a_wiped_destination_with_a_stale_cache_reads_each_source_blob_once_through_a_filter_chain() {
    wiped_destination_reads_each_blob_once(Some("normalize-timestamps"));
}

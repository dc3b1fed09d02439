//! Two `occy sync` processes writing overlapping image sets into one
//! `dir://…?unique_names=true`, one OCI layout and one registry at the same
//! time: no `catalog.json` or `index.json` entry is lost, no file is torn,
//! every registry tag names a whole image. The shared indexes are updated
//! under a file lock (`catalog.json.lock`, `index.json.lock`) that other
//! processes honour: while the test itself holds those locks, neither occy
//! writes them, and both finish once they are released.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::outputs::*;
use crate::support::*;
use fs4::fs_std::FileExt;
use serde_json::Value;

/// The images each of the two runs syncs: (mirror-set name, repository, tag).
/// Three are in both.
fn halves() -> [Vec<(&'static str, &'static str, &'static str)>; 2] {
    let first = TEN[..4].iter().chain(&TEN[6..8]).copied().collect();
    let second = TEN[2..6].iter().chain(&TEN[7..10]).copied().collect();
    [first, second]
}

struct Bed {
    dst: Registry,
    dir: PathBuf,
    out: PathBuf,
}

impl Bed {
    fn new(name: &str) -> Bed {
        let dir = scratch_dir(name);
        let out = dir.join("out");
        std::fs::create_dir_all(out.join("dir")).unwrap();
        std::fs::create_dir_all(out.join("layout")).unwrap();
        Bed {
            dst: Registry::start(Mode::Plain),
            dir,
            out,
        }
    }

    /// Starts `occy sync` of `images` into the shared destinations.
    fn spawn(&self, n: usize, images: &[(&str, &str, &str)]) -> Child {
        let (s, d, o) = (&source().host, &self.dst.host, self.out.display());
        let mut text = format!(
            "version: 1\ndefaults:\n  image_parallel: 4\nregistries:\n  \"{s}\": {{ insecure: true }}\n  \"{d}\": {{ insecure: true }}\nsync:\n"
        );
        for (_, repo, tag) in images {
            let short = repo.rsplit('/').next().unwrap();
            text.push_str(&format!(
                "  - from: registry://{s}/{repo}:{tag}\n    to:\n      - registry://{d}/shared/{short}\n      - \"dir://{o}/dir?unique_names=true\"\n      - oci://{o}/layout\n"
            ));
        }
        let file = self.dir.join(format!("sync-{n}.yaml"));
        std::fs::write(&file, text).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("sync-{n}.log"))).unwrap();
        Command::new(occy_bin())
            .args(["--insecure-registry", s, "--insecure-registry", d, "sync"])
            .arg(&file)
            .arg("--cache-dir")
            .arg(self.dir.join(format!("cache-{n}")))
            .env("HOME", scratch())
            .env("NO_COLOR", "1")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("OCCY_CACHE_DIR")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_ok(&self, n: usize, child: &mut Child) {
        let status = child.wait().unwrap();
        let log = std::fs::read_to_string(self.dir.join(format!("sync-{n}.log"))).unwrap();
        assert!(status.success(), "run {n}: {status}\n{log}");
    }

    /// Asserts that the destinations hold every image of both runs, whole.
    fn assert_all_there(&self) {
        let want: BTreeSet<(String, String)> = halves()
            .iter()
            .flatten()
            .map(|(_, repo, tag)| (repo.to_string(), tag.to_string()))
            .collect();
        assert_eq!(want.len(), 10);

        // dir://: every catalog entry, every file whole.
        let catalog = dir_image_set(&self.out.join("dir"));
        let mut in_catalog = BTreeSet::new();
        for (repo, tags) in catalog.as_object().unwrap() {
            if repo.starts_with("hammer/") {
                continue;
            }
            let repo = repo.split_once('/').unwrap().1.to_string();
            for tag in tags.as_object().unwrap().keys() {
                in_catalog.insert((repo.clone(), tag.clone()));
            }
        }
        assert_eq!(in_catalog, want, "catalog.json lost entries");

        // The OCI layout: every tag in index.json, every blob hashing to its name.
        let layout = self.out.join("layout");
        assert_blobs_match_names(&layout);
        let tags: BTreeSet<String> = layout_tags(&layout)
            .into_iter()
            .filter(|t| !t.starts_with("hammer-"))
            .collect();
        let want_tags: BTreeSet<String> = want.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(tags, want_tags, "index.json lost entries");
        for (_, _, tag) in halves().iter().flatten() {
            assert_oci_layout_readable(&layout, tag, true);
        }

        // The registry: every tag, naming a whole image.
        let in_registry = registry_tags(&self.dst);
        assert_eq!(in_registry.len(), 10, "{in_registry:?}");
        for (repo_tag, digest) in &in_registry {
            assert_registry_image_complete(&self.dst, repo_tag.rsplit_once(':').unwrap().0, digest);
        }
        registry_blobs_match_names(&self.dst);

        // No temporary file is left.
        let temps: Vec<PathBuf> = walk(&self.out)
            .into_iter()
            .filter(|p| p.strip_prefix(&self.out).unwrap().to_string_lossy().contains("tmp"))
            .collect();
        assert!(temps.is_empty(), "{temps:?}");
    }
}

/// Takes the exclusive lock occy takes to update `path`.
fn lock(path: &Path) -> std::fs::File {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(s))
        .unwrap();
    f.lock_exclusive().unwrap();
    f
}

/// A third writer honouring the lock: adds `hammer/N` to `catalog.json`
/// and `hammer-N` to `index.json`, one after the other, until `stop`;
/// returns how many it added to each.
fn hammer(out: &Path, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use std::sync::atomic::Ordering;
    let catalog = out.join("dir/catalog.json");
    let index = out.join("layout/index.json");
    std::fs::write(out.join("dir/hammer.json"), "[]").unwrap();
    let update = |path: &Path, change: &dyn Fn(Option<Value>) -> Value| {
        let held = lock(path);
        let current = std::fs::read(path).ok().map(|b| serde_json::from_slice(&b).unwrap());
        let tmp = path.with_extension("hammer-tmp");
        std::fs::write(&tmp, serde_json::to_vec(&change(current)).unwrap()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
        FileExt::unlock(&held).unwrap();
    };
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        update(&catalog, &|c| {
            let mut c = c.unwrap_or_else(|| serde_json::json!({}));
            c[format!("hammer/{n}")] = serde_json::json!({"1": "hammer.json"});
            c
        });
        update(&index, &|i| {
            let mut i = i.unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
            i["manifests"].as_array_mut().unwrap().push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "size": 0,
                "annotations": {"org.opencontainers.image.ref.name": format!("hammer-{n}")}
            }));
            i
        });
        n += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    n
}

#[test]
fn two_syncs_writing_one_dir_one_layout_and_one_registry_lose_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    for round in 0..2 {
        let bed = Bed::new(&format!("concurrent-{round}"));
        let [first, second] = halves();
        let stop = AtomicBool::new(false);
        let (hammered, runs) = std::thread::scope(|scope| {
            let hammer = scope.spawn(|| hammer(&bed.out, &stop));
            let mut a = bed.spawn(1, &first);
            let mut b = bed.spawn(2, &second);
            let runs = [a.wait().unwrap(), b.wait().unwrap()];
            stop.store(true, Ordering::SeqCst);
            (hammer.join().unwrap(), runs)
        });
        for (n, status) in runs.iter().enumerate() {
            let log = std::fs::read_to_string(bed.dir.join(format!("sync-{}.log", n + 1))).unwrap();
            assert!(status.success(), "run {}: {status}\n{log}", n + 1);
        }
        // The third writer's entries are all there too.
        let catalog: Value = serde_json::from_slice(&std::fs::read(bed.out.join("dir/catalog.json")).unwrap()).unwrap();
        let index: Value = serde_json::from_slice(&std::fs::read(bed.out.join("layout/index.json")).unwrap()).unwrap();
        for n in 0..hammered {
            assert!(
                catalog[format!("hammer/{n}")].is_object(),
                "catalog.json lost hammer/{n}"
            );
            let name = format!("hammer-{n}");
            assert!(
                index["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name.as_str()),
                "index.json lost {name}"
            );
        }
        eprintln!("round {round}: two occy runs and {hammered} locked updates by a third writer, nothing lost");
        assert!(hammered > 50, "{hammered}");
        bed.assert_all_there();
    }
}

#[test]
fn the_shared_indexes_are_updated_under_a_lock_other_processes_honour() {
    let bed = Bed::new("concurrent-locked");
    let catalog = bed.out.join("dir/catalog.json");
    let index = bed.out.join("layout/index.json");
    let held = [lock(&catalog), lock(&index)];
    let [first, second] = halves();
    let mut a = bed.spawn(1, &first);
    let mut b = bed.spawn(2, &second);

    // With the locks held by another process (this test), both runs copy
    // layers and configs, and then wait: neither index is written. (A run
    // takes about a second on its own.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walk(&bed.out.join("dir")).iter().any(|p| p.ends_with("layer.tar")) {
        assert!(Instant::now() < deadline, "nothing was written to dir://");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        a.try_wait().unwrap().is_none() && b.try_wait().unwrap().is_none(),
        "a run ended while the locks were held"
    );
    assert!(!catalog.exists(), "catalog.json was written while its lock was held");
    assert!(!index.exists(), "index.json was written while its lock was held");

    for f in held {
        FileExt::unlock(&f).unwrap();
    }
    bed.wait_ok(1, &mut a);
    bed.wait_ok(2, &mut b);
    bed.assert_all_there();
}

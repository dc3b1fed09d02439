//! `occy sync --shard I/N` against real Distribution registries, with the 23
//! images of `occy_testkit::generate::shard_set` (4 families sharing layers and 3
//! loners): three shard processes at once (without a saved plan: split by
//! repository, families together) do what one full sync does, upload each
//! blob once (counted in the destination registry's access log) and do what
//! their plans said; a shard run again is a no-op; the assignment does not
//! depend on the order of the entries; a family too big for its shard is split
//! and the duplicated bytes add up; usage errors name the value; and the two
//! scale-out examples (Kubernetes Indexed Job, GitHub Actions matrix) parse
//! and, run the way Kubernetes and GitHub would run them, complete the mirror.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::support::*;
use serde_json::Value;

/// The families of the set, by repository prefix.
const FAMILIES: [&str; 4] = ["debian", "alpine", "python", "node"];

/// The generated images: an OCI layout and what was written.
fn images() -> &'static (PathBuf, Vec<Generated>) {
    static SET: OnceLock<(PathBuf, Vec<Generated>)> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = scratch().join("shard-images");
        let generated = occy_testkit::generate::write_layout(&dir, &occy_testkit::generate::shard_set()).unwrap();
        (dir, generated)
    })
}

/// `debian-nginx_1.24` → `debian/nginx:1.24`.
fn repo_tag(name: &str) -> String {
    let (repo, tag) = name.split_once('_').unwrap();
    format!("{}:{tag}", repo.replacen('-', "/", 1))
}

/// The registry holding every image of the set (shared by the tests here).
pub(crate) fn source() -> &'static Registry {
    static PUSHED: OnceLock<()> = OnceLock::new();
    let reg = Registry::shared(Mode::Plain);
    PUSHED.get_or_init(|| {
        let (layout, generated) = images();
        for g in generated {
            reg.push_layout(layout, &g.name, &repo_tag(&g.name));
        }
    });
    reg
}

const ENTRIES: [&str; 5] = [
    "  - from: registry://SRC/debian/*\n    to: \"registry://DST/mirror/debian/{name}\"\n",
    "  - from: registry://SRC/alpine/*\n    to: \"registry://DST/mirror/alpine/{name}\"\n",
    "  - from: registry://SRC/python/*\n    to: \"registry://DST/mirror/python/{name}\"\n",
    "  - from: registry://SRC/node/*\n    to: \"registry://DST/mirror/node/{name}\"\n",
    "  - from: registry://SRC/tools/*\n    to: \"registry://DST/mirror/tools/{name}\"\n",
];

/// A sync file mirroring the whole set from `src` to `dst` (entries reversed if asked).
fn write_sync(dir: &Path, name: &str, src: &str, dst: &str, reversed: bool) -> PathBuf {
    let mut entries: Vec<&str> = ENTRIES.to_vec();
    if reversed {
        entries.reverse();
    }
    let mut registries = format!("  {src}: {{ insecure: true }}\n");
    if dst != src {
        registries.push_str(&format!("  {dst}: {{ insecure: true }}\n"));
    }
    let text = format!(
        "version: 1\ndefaults:\n  image_parallel: 3\nregistries:\n{registries}sync:\n{}",
        entries.concat().replace("SRC", src).replace("DST", dst)
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// occy with `args`, `env` added, in an environment without the user's settings.
fn occy_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(occy_bin());
    c.args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OCCY_CACHE_DIR")
        .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    occy_cmd(args, env).output().unwrap()
}

fn run_ok(args: &[&str], env: &[(&str, &str)]) -> Output {
    assert_ok(args, run(args, env))
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    occy_cmd(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("not a string: {x}")))
        .collect()
}

/// The destinations of an assignment's shard, sorted.
fn assigned(a: &Value, shard: usize) -> BTreeSet<String> {
    a["assignment"][shard]["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no shard {shard} in {a}"))
        .iter()
        .map(|t| t["destination"].as_str().unwrap().to_string())
        .collect()
}

/// `(destination, action)` of a plan's targets.
fn plan_targets(plan: &Value) -> BTreeMap<String, String> {
    plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["destination"].as_str().unwrap().to_string(),
                t["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `registry://HOST/mirror/debian/nginx:1.24` → `mirror/debian/nginx`.
fn repo_of(destination: &str) -> String {
    let path = destination.trim_start_matches("registry://");
    let path = path.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0.to_string()
}

/// What the registry's access log says was written.
#[derive(Default, Debug)]
pub(crate) struct Writes {
    /// Completed blob uploads: (repository, digest hex).
    pub(crate) uploads: Vec<(String, String)>,
    /// Completed cross-repository mounts.
    mounts: Vec<(String, String)>,
    /// Manifests put.
    manifests: usize,
}

/// Reads a Distribution access log (`"METHOD PATH HTTP/1.1" STATUS …` lines).
pub(crate) fn writes(log: &str) -> Writes {
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
        if status != "201" {
            continue;
        }
        let Some(path) = path.strip_prefix("/v2/") else {
            continue;
        };
        if method == "PUT" && path.contains("/manifests/") {
            w.manifests += 1;
            continue;
        }
        let Some((repo, upload)) = path.split_once("/blobs/uploads/") else {
            continue;
        };
        let param = |name: &str| {
            upload.split(['?', '&']).find_map(|kv| {
                let v = kv.strip_prefix(name)?;
                Some(
                    v.trim_start_matches("sha256%3A")
                        .trim_start_matches("sha256:")
                        .to_string(),
                )
            })
        };
        match (method, param("mount="), param("digest=")) {
            ("POST", Some(d), _) => w.mounts.push((repo.to_string(), d)),
            ("PUT" | "POST", None, Some(d)) => w.uploads.push((repo.to_string(), d)),
            _ => {}
        }
    }
    w
}

/// Every blob file a registry stores (layers, configs and manifests), by hex digest.
fn stored(reg: &Registry) -> BTreeSet<String> {
    let root = reg.dir.join("data/docker/registry/v2/blobs/sha256");
    let mut out = BTreeSet::new();
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
            if blob.path().join("data").is_file() {
                out.insert(blob.file_name().to_string_lossy().to_string());
            }
        }
    }
    out
}

fn blob_size(reg: &Registry, hex: &str) -> u64 {
    std::fs::metadata(reg.blob_path(hex)).unwrap().len()
}

/// Destination (without host) → written digest, from apply reports.
pub(crate) fn written_digests(reports: &[Value]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in reports {
        for t in r["targets"].as_array().unwrap() {
            let d = t["destination"].as_str().unwrap();
            let path = d.trim_start_matches("registry://").split_once('/').unwrap().1;
            let digest = t["digest"].as_str().unwrap_or_else(|| panic!("no digest: {t}"));
            assert!(out.insert(path.to_string(), digest.to_string()).is_none(), "{d} twice");
        }
    }
    out
}

#[test]
fn three_concurrent_shards_do_what_one_full_sync_does_and_upload_each_blob_once() {
    let src = source();
    let dst = Registry::start_logged(Mode::Plain);
    let full = Registry::start(Mode::Plain);
    let dir = scratch_dir("shards-main");
    let file = write_sync(&dir, "mirror.yaml", &src.host, &dst.host, false);
    let file = file.to_str().unwrap();
    let full_file = write_sync(&dir, "full.yaml", &src.host, &full.host, false);

    // The assignment: 4 families and 3 loners, no family split, nothing shared.
    let a = json_of(&run_ok(&["sync", file, "--plan", "--shards", "3", "-O", "json"], &[]));
    assert_eq!(a["targets"], 23, "{a}");
    assert_eq!(a["groups"], 7, "{a}");
    assert_eq!(a["split_groups"], 0, "{a}");
    assert_eq!(a["duplicated_bytes"], 0, "{a}");
    let shards: Vec<BTreeSet<String>> = (0..3).map(|i| assigned(&a, i)).collect();
    let all: BTreeSet<String> = shards.iter().flatten().cloned().collect();
    assert_eq!(all.len(), 23, "every target in exactly one shard: {a}");
    assert_eq!(shards.iter().map(|s| s.len()).sum::<usize>(), 23);
    for family in FAMILIES {
        let holding: Vec<usize> = (0..3)
            .filter(|&i| shards[i].iter().any(|d| d.contains(&format!("/mirror/{family}/"))))
            .collect();
        assert_eq!(holding.len(), 1, "{family} is split over shards {holding:?}: {a}");
    }
    let matrix: Vec<&str> = a["matrix"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["shard"].as_str().unwrap())
        .collect();
    assert_eq!(matrix, ["0/3", "1/3", "2/3"]);
    let total: u64 = (0..3).map(|i| a["assignment"][i]["bytes"].as_u64().unwrap()).sum();
    assert_eq!(total, a["bytes"].as_u64().unwrap());
    for i in 0..3 {
        assert_eq!(a["assignment"][i]["shared_bytes"], 0);
        // Balanced: no shard over its fair share by more than the quarter margin.
        let fair = a["bytes"].as_u64().unwrap() / 3;
        assert!(
            a["assignment"][i]["bytes"].as_u64().unwrap() <= fair + fair / 4 + 1,
            "{a}"
        );
    }

    // Each pod's plan without a saved plan (by repository, families
    // together: no family is bigger than a fair share); shard 2 the
    // Kubernetes way.
    let plans: Vec<Value> = (0..3)
        .map(|i| {
            let out = if i == 2 {
                run_ok(
                    &["sync", file, "--plan", "--shard", "auto/3", "-O", "json"],
                    &[("JOB_COMPLETION_INDEX", "2")],
                )
            } else {
                let s = format!("{i}/3");
                run_ok(&["sync", file, "--plan", "--shard", &s, "-O", "json"], &[])
            };
            let plan = json_of(&out);
            assert_eq!(plan["shard"]["shard"], format!("{i}/3"), "{plan}");
            assert_eq!(plan["shard"]["all_targets"], 23);
            assert_eq!(plan["shard"]["duplicated_bytes"], 0, "{plan}");
            let targets = plan_targets(&plan);
            assert_eq!(plan["shard"]["targets"], targets.len(), "{plan}");
            assert!(targets.values().all(|a| a == "create"), "{plan}");
            plan
        })
        .collect();
    // The pods' plans cover every target once and keep each family whole.
    let shards: Vec<BTreeSet<String>> = plans.iter().map(|p| plan_targets(p).into_keys().collect()).collect();
    assert_eq!(shards.iter().map(|s| s.len()).sum::<usize>(), 23);
    assert_eq!(shards.iter().flatten().collect::<BTreeSet<_>>().len(), 23, "{shards:?}");
    for family in FAMILIES {
        let holding: Vec<usize> = (0..3)
            .filter(|&i| shards[i].iter().any(|d| d.contains(&format!("/mirror/{family}/"))))
            .collect();
        assert_eq!(holding.len(), 1, "{family} is split over pods {holding:?}: {shards:?}");
    }

    // The three shards at once, as separate processes.
    let children: Vec<Child> = (0..3)
        .map(|i| {
            let s = format!("{i}/3");
            spawn(&["sync", file, "--shard", &s, "-O", "json"], &[])
        })
        .collect();
    let reports: Vec<Value> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            json_of(&assert_ok(&["sync", "--shard", &format!("{i}/3")], out))
        })
        .collect();

    // No blob was uploaded twice, and each shard did what its plan said.
    let log = writes(&dst.access_log());
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (_, d) in &log.uploads {
        *times.entry(d.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "uploaded more than once: {twice:?}");
    // Everything the registry stores is an upload counted here or a manifest.
    let mut accounted: BTreeSet<String> = log.uploads.iter().map(|u| u.1.clone()).collect();
    for r in &reports {
        for t in r["targets"].as_array().unwrap() {
            accounted.insert(t["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string());
        }
    }
    assert_eq!(
        stored(&dst),
        accounted,
        "blobs stored vs uploads seen in the access log"
    );
    for (i, (plan, report)) in plans.iter().zip(&reports).enumerate() {
        let targets = plan_targets(plan);
        let repos: BTreeSet<String> = targets.keys().map(|d| repo_of(d)).collect();
        let mine = |list: &[(String, String)]| {
            list.iter()
                .filter(|(r, _)| repos.contains(r))
                .cloned()
                .collect::<Vec<_>>()
        };
        let uploads = mine(&log.uploads);
        let mounts = mine(&log.mounts);
        let totals = &plan["totals"];
        assert_eq!(
            uploads.len() as u64,
            totals["upload"].as_u64().unwrap(),
            "shard {i} uploads: {plan}"
        );
        // Two tags of one repository run at once (-J 3): the blob the plan
        // counts present for the second (the first brings it) may be mounted
        // into it while the first is still pushing. Never more than that.
        let (planned, present) = (totals["mount"].as_u64().unwrap(), totals["present"].as_u64().unwrap());
        let n = mounts.len() as u64;
        assert!(
            planned <= n && n <= planned + present,
            "shard {i}: {n} mounts, planned {planned} (+ up to {present} present): {mounts:?}"
        );
        let bytes: u64 = uploads.iter().map(|(_, d)| blob_size(&dst, d)).sum();
        assert_eq!(bytes, totals["bytes"].as_u64().unwrap(), "shard {i} bytes");
        assert_eq!(report["written"], targets.len(), "shard {i}: {report}");
        assert_eq!(report["failed"], 0);
        let written: BTreeSet<String> = report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["destination"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(written, shards[i], "shard {i} wrote other targets");
    }

    // The union is what one full sync into another registry gives.
    let full_report = json_of(&run_ok(&["sync", full_file.to_str().unwrap(), "-O", "json"], &[]));
    assert_eq!(full_report["written"], 23);
    let sharded = written_digests(&reports);
    assert_eq!(sharded, written_digests(std::slice::from_ref(&full_report)));
    assert_eq!(stored(&dst), stored(&full), "the registries hold different blobs");
    // Unfiltered: every digest is the source's.
    for g in &images().1 {
        let dest = format!("mirror/{}", repo_tag(&g.name));
        assert_eq!(sharded[&dest], g.descriptor.digest.to_string(), "{dest}");
    }

    // A shard run again writes nothing.
    let before = writes(&dst.access_log());
    let again = json_of(&run_ok(&["sync", file, "--shard", "1/3", "-O", "json"], &[]));
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["unchanged"], shards[1].len());
    assert_eq!(again["bytes"], 0);
    let after = writes(&dst.access_log());
    assert_eq!(after.uploads.len(), before.uploads.len(), "a second run uploaded");
    assert_eq!(after.mounts.len(), before.mounts.len(), "a second run mounted");
    assert_eq!(after.manifests, before.manifests, "a second run put a manifest");
    let args = ["sync", file, "--plan", "--shard", "0/3", "--detailed-exitcode"];
    assert_eq!(run(&args, &[]).status.code(), Some(0), "shard 0 has nothing left to do");
}

#[test]
fn the_assignment_does_not_depend_on_the_order_of_the_entries() {
    let src = source();
    let dir = scratch_dir("shards-order");
    // Plans only: the source registry doubles as the (untouched) destination.
    let file = write_sync(&dir, "mirror.yaml", &src.host, &src.host, false);
    let reversed = write_sync(&dir, "reversed.yaml", &src.host, &src.host, true);
    let shards_of = |f: &Path| {
        let a = json_of(&run_ok(
            &["sync", f.to_str().unwrap(), "--plan", "--shards", "3", "-O", "json"],
            &[],
        ));
        (0..3)
            .map(|i| {
                (
                    assigned(&a, i),
                    a["assignment"][i]["bytes"].clone(),
                    a["assignment"][i]["shared_bytes"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let first = shards_of(&file);
    assert_eq!(shards_of(&reversed), first, "reversing the entries moved targets");
    assert_eq!(shards_of(&file), first, "a second run moved targets");

    // Ties: every image to two stores (the registry as 127.0.0.1 and as
    // localhost) makes every group one of two twins of equal bytes, which
    // only the target names can order.
    let port = src.host.rsplit_once(':').unwrap().1;
    let twins = |name: &str, reversed: bool| {
        let (a, b) = (src.host.clone(), format!("localhost:{port}"));
        let mut entries: Vec<String> = ENTRIES
            .iter()
            .map(|e| {
                let (from, to) = e.split_once("    to: ").unwrap();
                let to = to.trim();
                let (first, second) = if reversed { (&b, &a) } else { (&a, &b) };
                format!(
                    "{from}    to: [{}, {}]\n",
                    to.replace("DST", first),
                    to.replace("DST", second)
                )
                .replace("SRC", &a)
            })
            .collect();
        if reversed {
            entries.reverse();
        }
        let text = format!(
            "version: 1\nregistries:\n  {a}: {{ insecure: true }}\n  {b}: {{ insecure: true }}\nsync:\n{}",
            entries.concat()
        );
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    };
    let twins_first = shards_of(&twins("twins.yaml", false));
    assert_eq!(twins_first.iter().map(|s| s.0.len()).sum::<usize>(), 46);
    assert_eq!(
        shards_of(&twins("twins-reversed.yaml", true)),
        twins_first,
        "reversing entries and destinations moved targets between shards of equal bytes"
    );

    // The readable form lists the same shards.
    let text =
        String::from_utf8(run_ok(&["sync", file.to_str().unwrap(), "--plan", "--shards", "3"], &[]).stdout).unwrap();
    assert!(text.contains("23 targets in 7 groups sharing layers"), "{text}");
    for (i, (dests, _, _)) in first.iter().enumerate() {
        assert!(
            text.contains(&format!(
                "shard {i}/3: {} targets ({} to write)",
                dests.len(),
                dests.len()
            )),
            "{text}"
        );
        for d in dests {
            assert!(text.contains(d.as_str()), "{d} missing from {text}");
        }
    }
    assert!(text.contains("No group was split"), "{text}");
}

#[test]
fn a_family_too_big_for_its_shard_is_split_and_the_duplicated_bytes_add_up() {
    let src = source();
    let dir = scratch_dir("shards-split");
    let file = write_sync(&dir, "mirror.yaml", &src.host, &src.host, false);
    let file = file.to_str().unwrap();
    let a = json_of(&run_ok(&["sync", file, "--plan", "--shards", "6", "-O", "json"], &[]));
    assert!(a["split_groups"].as_u64().unwrap() >= 1, "{a}");
    let duplicated = a["duplicated_bytes"].as_u64().unwrap();
    assert!(duplicated > 0, "{a}");

    // Recompute from the generated images: each target's blobs, each blob's shards.
    let by_dest: HashMap<String, &Generated> = images()
        .1
        .iter()
        .map(|g| (format!("mirror/{}", repo_tag(&g.name)), g))
        .collect();
    let mut holders: BTreeMap<String, (u64, BTreeSet<usize>, BTreeSet<String>)> = BTreeMap::new();
    let mut shard_blobs: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 6];
    for (i, blobs) in shard_blobs.iter_mut().enumerate() {
        for dest in assigned(&a, i) {
            let path = dest
                .trim_start_matches("registry://")
                .split_once('/')
                .unwrap()
                .1
                .to_string();
            let image = &by_dest[&path].images[0];
            for b in image.layers.iter().chain([&image.config]) {
                let h = holders
                    .entry(b.digest.to_string())
                    .or_insert((b.size, BTreeSet::new(), BTreeSet::new()));
                h.1.insert(i);
                h.2.insert(path.clone());
                blobs.insert(b.digest.to_string());
            }
        }
    }
    let expected: u64 = holders.values().map(|(size, s, _)| size * (s.len() as u64 - 1)).sum();
    assert_eq!(duplicated, expected, "{a}");
    for (i, blobs) in shard_blobs.iter().enumerate() {
        let bytes: u64 = blobs.iter().map(|b| holders[b].0).sum();
        let shared: u64 = blobs
            .iter()
            .filter(|b| holders[*b].1.len() > 1)
            .map(|b| holders[b].0)
            .sum();
        assert_eq!(a["assignment"][i]["bytes"], bytes, "shard {i}");
        assert_eq!(a["assignment"][i]["shared_bytes"], shared, "shard {i}");
    }
    // Only layers a family shares cross shards, never an image's own layer.
    for (digest, (_, shards, users)) in &holders {
        if shards.len() > 1 {
            assert!(users.len() > 1, "{digest} of {users:?} is in shards {shards:?}");
        }
    }
    let text = String::from_utf8(run_ok(&["sync", file, "--plan", "--shards", "6"], &[]).stdout).unwrap();
    assert!(text.contains("were split"), "{text}");

    // The pods' own plans without a saved plan (split by repository) cover
    // every target once, and agree on what their partition duplicates: the
    // debian family, a third of the bytes, is split by repository.
    let mut seen = BTreeSet::new();
    let mut pod_duplicated = BTreeSet::new();
    for i in 0..6 {
        let s = format!("{i}/6");
        let plan = json_of(&run_ok(&["sync", file, "--plan", "--shard", &s, "-O", "json"], &[]));
        let targets: BTreeSet<String> = plan_targets(&plan).into_keys().collect();
        pod_duplicated.insert(plan["shard"]["duplicated_bytes"].as_u64().unwrap());
        for t in targets {
            assert!(seen.insert(t.clone()), "{t} in two shards");
            // A repository is never split.
            let repo = repo_of(&t);
            assert!(
                seen.iter()
                    .filter(|d| repo_of(d) == repo)
                    .all(|d| d == &t || plan_targets(&plan).contains_key(d)),
                "{repo} is split over pods"
            );
        }
    }
    assert_eq!(seen.len(), 23);
    assert_eq!(pod_duplicated.len(), 1, "the pods disagree: {pod_duplicated:?}");
    assert!(pod_duplicated.iter().all(|&d| d > 0), "{pod_duplicated:?}");
}

#[test]
fn a_source_that_does_not_resolve_fails_its_shard_and_keeps_the_others_from_reporting_success() {
    let src = source();
    let dst = Registry::start(Mode::Plain);
    let dir = scratch_dir("shards-missing");
    let file = write_sync(&dir, "mirror.yaml", &src.host, &dst.host, false);
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "  - from: registry://{}/no/such-repo:1.0\n    to: registry://{}/mirror/missing\n",
        src.host, dst.host
    ));
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let plans: Vec<(Option<i32>, Value, String)> = (0..2)
        .map(|i| {
            let s = format!("{i}/2");
            let out = run(&["sync", file, "--plan", "--shard", &s, "-O", "json"], &[]);
            (
                out.status.code(),
                json_of(&out),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect();
    let owner = plans
        .iter()
        .position(|(_, p, _)| p["totals"]["failed"] == 1)
        .expect("one shard has the failed target");
    let other = 1 - owner;
    assert_eq!(plans[other].1["totals"]["failed"], 0, "{}", plans[other].1);
    for (code, plan, _) in &plans {
        assert_eq!(*code, Some(1), "{plan}");
    }
    let elsewhere = strs(&plans[other].1["shard"]["failed_elsewhere"]);
    assert_eq!(elsewhere.len(), 1, "{}", plans[other].1);
    assert!(elsewhere[0].contains("no/such-repo:1.0"), "{elsewhere:?}");
    assert!(elsewhere[0].contains(&format!("(shard {owner}/2)")), "{elsewhere:?}");
    assert!(
        plans[other].2.contains("cannot be sure of its targets"),
        "{}",
        plans[other].2
    );
    assert!(strs(&plans[owner].1["shard"]["failed_elsewhere"]).is_empty());

    // The other shard still does its part, but does not report success.
    let s = format!("{other}/2");
    let out = run(&["sync", file, "--shard", &s, "-O", "json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["written"], plan_targets(&plans[other].1).len(), "{report}");
}

#[test]
fn shard_usage_errors_name_the_value_and_exit_2() {
    let file = "/nonexistent/mirror.yaml";
    let check = |args: &[&str], env: &[(&str, &str)], needle: &str| {
        let mut all = vec!["sync", file];
        all.extend_from_slice(args);
        assert_fails(&all, run(&all, env), 2, needle);
    };
    check(
        &["--shard", "3/3"],
        &[],
        "shard index 3 is out of range for 3 shards (0..=2)",
    );
    check(&["--shard", "1/0"], &[], "the shard count must be 1 to 10000, not 0");
    check(&["--shard", "one/3"], &[], "\"one\"");
    check(&["--shard", "2"], &[], "expected I/N");
    check(&["--shard", "auto/3"], &[], "JOB_COMPLETION_INDEX");
    check(
        &["--shard", "auto/3"],
        &[("JOB_COMPLETION_INDEX", "5")],
        "JOB_COMPLETION_INDEX=5 (for --shard auto/3): shard index 5 is out of range for 3 shards (0..=2)",
    );
    check(&["--shard", "auto/3"], &[("JOB_COMPLETION_INDEX", "x")], "\"x\"");
    check(&["--shards", "3"], &[], "--plan");
    check(
        &["--plan", "--shards", "2", "--shard", "0/2"],
        &[],
        "cannot be used with",
    );
    // A shard does not see every tag the file keeps: pruning would delete the others'.
    check(&["--shard", "0/2", "--prune"], &[], "cannot be used with");
    check(&["--plan", "--shards", "2", "--prune"], &[], "cannot be used with");
}

/// The YAML documents of an example.
fn example_docs(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

/// The sync file of the Kubernetes example's ConfigMap, for `src` and `dst`.
fn configmap_sync_file(docs: &[Value], src: &str, dst: &str) -> String {
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    cm["data"]["mirror.yaml"]
        .as_str()
        .expect("the ConfigMap holds mirror.yaml")
        .replace("registry.example.com", src)
        .replace("mirror.example.com", dst)
}

const CREDENTIALS: [(&str, &str); 2] = [
    ("MIRROR_USER", "robot"),
    ("MIRROR_PASSWORD", "unused-by-the-test-registry"),
];

/// Asserts that nothing is left to do for the sync file in `dir`.
fn assert_complete(dir: &Path, hosts: &str) {
    let file = dir.join("mirror.yaml");
    let mut env = CREDENTIALS.to_vec();
    env.push(("OCCY_INSECURE_REGISTRY", hosts));
    let args = [
        "sync",
        file.to_str().unwrap(),
        "--plan",
        "--detailed-exitcode",
        "-O",
        "json",
    ];
    let out = run(&args, &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "not complete: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let plan = json_of(&out);
    assert_eq!(plan["totals"]["unchanged"], 23, "{plan}");
}

#[test]
fn the_kubernetes_indexed_job_example_is_valid_and_its_pods_complete_the_mirror() {
    let docs = example_docs("k8s-indexed-job.yaml");
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("a Job");
    assert_eq!(job["apiVersion"], "batch/v1");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed", "{spec}");
    let completions = spec["completions"].as_u64().expect("completions");
    assert!(completions >= 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never", "backoffLimitPerIndex needs it");
    let container = &pod["containers"][0];
    let command = strs(&container["command"]);
    assert_eq!(&command[..2], ["occy", "sync"], "{command:?}");
    let at = command.iter().position(|a| *a == "--shard").expect("--shard");
    assert_eq!(
        command[at + 1],
        format!("auto/{completions}"),
        "completions is the N of --shard auto/N"
    );
    // The sync file comes from the ConfigMap, mounted where the command reads it.
    let file = command[2];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("{file} is not on a mounted volume"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("a ConfigMap");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let key = Path::new(file).file_name().unwrap().to_str().unwrap();
    assert!(cm["data"][key].is_string(), "the ConfigMap has no {key}");
    // Credentials from a Secret, never from the manifest.
    let secret = container["envFrom"]
        .as_array()
        .and_then(|l| l.iter().find_map(|e| e["secretRef"]["name"].as_str()))
        .expect("envFrom a Secret");
    assert!(!secret.is_empty());
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "credentials belong in a Secret made apart"
    );

    // Run the pods the way Kubernetes would: the same command, one
    // JOB_COMPLETION_INDEX each, all at once, the ConfigMap at `file`.
    let src = source();
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("k8s-example");
    std::fs::write(dir.join(key), configmap_sync_file(&docs, &src.host, &dst.host)).unwrap();
    let local = dir.join(key);
    let hosts = format!("{},{}", src.host, dst.host);
    // The pods' reports volume; Kubernetes expands $(JOB_COMPLETION_INDEX).
    let reports = dir.join("reports");
    std::fs::create_dir(&reports).unwrap();
    let pods: Vec<Child> = (0..completions)
        .map(|i| {
            let index = i.to_string();
            let args: Vec<String> = command[1..]
                .iter()
                .map(|a| {
                    if *a == file {
                        local.to_str().unwrap().to_string()
                    } else {
                        a.replace("$(JOB_COMPLETION_INDEX)", &index)
                            .replace("/reports/", &format!("{}/", reports.display()))
                    }
                })
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut env = CREDENTIALS.to_vec();
            env.push(("JOB_COMPLETION_INDEX", &index));
            env.push(("OCCY_INSECURE_REGISTRY", &hosts));
            spawn(&args, &env)
        })
        .collect();
    for (i, pod) in pods.into_iter().enumerate() {
        let out = pod.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pod {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("Shard {i}/{completions}")), "{stderr}");
    }
    assert_complete(&dir, &hosts);
    let log = writes(&dst.access_log());
    let distinct: BTreeSet<&String> = log.uploads.iter().map(|u| &u.1).collect();
    assert_eq!(distinct.len(), log.uploads.len(), "a blob was uploaded by two pods");
    // Their reports, as `occy report /reports/shard-*.json` adds them up.
    let mut files: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.sort();
    assert_eq!(files.len() as u64, completions, "{files:?}");
    let mut args = vec!["-O", "json", "report"];
    args.extend(files.iter().map(String::as_str));
    let merged = json_of(&run_ok(&args, &[]));
    assert_eq!(merged["shards"], completions, "{merged}");
    assert_eq!(merged["failed"], 0, "{merged}");
    assert_eq!(merged["written"], 23, "{merged}");
}

/// The `run:` script of the step of `job` whose script contains `needle`.
fn step_script<'a>(workflow: &'a Value, job: &str, needle: &str) -> (&'a Value, &'a str) {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no job {job}"))
        .iter()
        .find_map(|s| s["run"].as_str().filter(|r| r.contains(needle)).map(|r| (s, r)))
        .unwrap_or_else(|| panic!("no step of {job} runs {needle:?}"))
}

/// Runs a step's script with sh in `dir`, occy on PATH, GitHub's files set.
fn run_step(script: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let bin = Path::new(occy_bin()).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("sh");
    c.args(["-ec", script])
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env("GITHUB_OUTPUT", dir.join("github-output"))
        .env("GITHUB_STEP_SUMMARY", dir.join("step-summary.md"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("OCCY_CACHE_DIR")
        .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn the_github_actions_example_builds_its_matrix_from_the_plan_and_its_shards_complete_the_mirror() {
    let docs = example_docs("github-actions-matrix.yml");
    assert_eq!(docs.len(), 1);
    let wf = &docs[0];
    let jobs = wf["jobs"].as_object().expect("jobs");
    assert!(jobs.contains_key("plan") && jobs.contains_key("shard"), "{jobs:?}");

    // The plan job: `--plan --shards N -O json`, the matrix to its outputs.
    let (step, plan_script) = step_script(wf, "plan", "--shards");
    let words: Vec<&str> = plan_script.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "--shards").unwrap();
    let n: usize = words[at + 1].parse().expect("a literal N after --shards");
    assert!(n >= 2);
    assert!(
        plan_script.contains("--plan") && plan_script.contains("-O json"),
        "{plan_script}"
    );
    assert!(plan_script.contains("GITHUB_OUTPUT"), "{plan_script}");
    let id = step["id"].as_str().expect("the plan step has an id");
    assert_eq!(
        wf["jobs"]["plan"]["outputs"]["matrix"],
        format!("${{{{ steps.{id}.outputs.matrix }}}}")
    );

    // The shard job: a matrix from the plan's output, one shard each.
    let shard_job = &wf["jobs"]["shard"];
    assert!(
        shard_job["needs"] == "plan" || strs(&shard_job["needs"]).contains(&"plan"),
        "{shard_job}"
    );
    assert_eq!(
        shard_job["strategy"]["matrix"],
        "${{ fromJSON(needs.plan.outputs.matrix) }}"
    );
    assert_eq!(
        shard_job["strategy"]["fail-fast"], false,
        "a failed shard must not cancel the others"
    );
    let (_, shard_script) = step_script(wf, "shard", "--shard");
    assert!(shard_script.contains("occy sync"), "{shard_script}");
    assert!(shard_script.contains("--shard ${{ matrix.shard }}"), "{shard_script}");

    // Run the steps the way GitHub would: the plan, then every matrix entry.
    let src = source();
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("gha-example");
    let k8s = example_docs("k8s-indexed-job.yaml");
    std::fs::write(dir.join("mirror.yaml"), configmap_sync_file(&k8s, &src.host, &dst.host)).unwrap();
    let hosts = format!("{},{}", src.host, dst.host);
    let mut env = CREDENTIALS.to_vec();
    env.push(("OCCY_INSECURE_REGISTRY", &hosts));
    let out = run_step(plan_script, &dir, &env);
    assert!(
        out.status.success(),
        "plan step: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs = std::fs::read_to_string(dir.join("github-output")).unwrap();
    let matrix: Value = serde_json::from_str(
        outputs
            .lines()
            .find_map(|l| l.strip_prefix("matrix="))
            .expect("matrix= in GITHUB_OUTPUT"),
    )
    .unwrap();
    let entries: Vec<String> = matrix["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["shard"].as_str().unwrap().to_string())
        .collect();
    assert!(!entries.is_empty() && entries.len() <= n, "{matrix}");
    for e in &entries {
        assert!(e.ends_with(&format!("/{n}")), "{e}");
    }
    let summary = std::fs::read_to_string(dir.join("step-summary.md")).unwrap();
    assert_eq!(
        summary.lines().filter(|l| l.starts_with("- shard ")).count(),
        n,
        "{summary}"
    );
    let shards: Vec<Child> = entries
        .iter()
        .map(|e| {
            let script = shard_script.replace("${{ matrix.shard }}", e);
            let bin = Path::new(occy_bin()).parent().unwrap();
            let mut c = Command::new("sh");
            c.args(["-ec", &script])
                .current_dir(&dir)
                .env(
                    "PATH",
                    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
                )
                .env("HOME", scratch())
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in &env {
                c.env(k, v);
            }
            c.spawn().unwrap()
        })
        .collect();
    for (e, child) in entries.iter().zip(shards) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shard {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_complete(&dir, &hosts);
    let log = writes(&dst.access_log());
    let distinct: BTreeSet<&String> = log.uploads.iter().map(|u| &u.1).collect();
    assert_eq!(
        distinct.len(),
        log.uploads.len(),
        "a blob was uploaded by two shard jobs"
    );
}

#[test]
fn the_scale_out_guide_shows_the_commands_and_the_sync_guide_points_to_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/scale-out.md")).unwrap();
    for needle in [
        "--shard auto/",
        "--plan --shards",
        "-O json",
        "--apply plan.json --shard",
        "JOB_COMPLETION_INDEX",
        "examples/k8s-indexed-job.yaml",
        "examples/github-actions-matrix.yml",
        "duplicated_bytes",
    ] {
        assert!(guide.contains(needle), "docs/scale-out.md does not show {needle:?}");
    }
    let sync = std::fs::read_to_string(root.join("docs/sync.md")).unwrap();
    assert!(
        sync.contains("scale-out.md"),
        "docs/sync.md does not point to docs/scale-out.md"
    );
}

/// A saved plan into 6 shards (the debian family split, its shared layers
/// cut between shards), saved to `dir/plan.json`; its assignment.
fn cut_plan(dir: &Path, dst: &Registry) -> (PathBuf, PathBuf, Value) {
    let src = source();
    let file = write_sync(dir, "mirror.yaml", &src.host, &dst.host, false);
    let plan = dir.join("plan.json");
    let args = [
        "sync",
        file.to_str().unwrap(),
        "--plan",
        "--shards",
        "6",
        "--out",
        plan.to_str().unwrap(),
        "-O",
        "json",
    ];
    let a = json_of(&run_ok(&args, &[]));
    assert!(a["split_groups"].as_u64().unwrap() >= 1, "{a}");
    let cut = a["cut_blobs"].as_array().unwrap_or_else(|| panic!("no cut_blobs: {a}"));
    assert!(!cut.is_empty(), "{a}");
    for c in cut {
        let shards: Vec<u64> = c["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert!(shards.len() > 1, "{c}");
        assert_eq!(c["owner"], shards[0], "the owner is the lowest shard: {c}");
        assert_eq!(c["store"], format!("registry://{}", dst.host), "{c}");
        let from = c["mount_from"].as_str().unwrap_or_else(|| panic!("no mount_from: {c}"));
        // The owner writes the blob to that repository.
        let owner = shards[0] as usize;
        assert!(
            assigned(&a, owner).iter().any(|d| repo_of(d) == from),
            "{from} is no repository of shard {owner}: {a}"
        );
    }
    (file, plan, a)
}

/// The cut blobs shard `k` waits for (another shard uploads them), by hex digest.
fn awaited_by(a: &Value, k: u64) -> BTreeSet<String> {
    a["cut_blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["owner"] != k && c["shards"].as_array().unwrap().contains(&Value::from(k)))
        .map(|c| c["blob"].as_str().unwrap().trim_start_matches("sha256:").to_string())
        .collect()
}

#[test]
fn shards_of_a_saved_plan_applied_at_once_upload_each_cut_blob_once_and_mount_it_elsewhere() {
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("shards-cut");
    let (file, plan, a) = cut_plan(&dir, &dst);
    let (file, plan) = (file.to_str().unwrap(), plan.to_str().unwrap());

    // Each shard's part of the assignment says what it does with its cut blobs.
    let text = String::from_utf8(run_ok(&["sync", file, "--plan", "--shards", "6"], &[]).stdout).unwrap();
    let owner = &a["cut_blobs"][0]["owner"];
    assert!(text.contains(&format!("once shard {owner} uploads it")), "{text}");
    assert!(text.contains("first: shard(s)"), "{text}");
    assert!((0..6).any(|k| !awaited_by(&a, k).is_empty()), "no shard waits: {a}");

    // The 6 pods at once.
    let children: Vec<Child> = (0..6)
        .map(|i| {
            let s = format!("{i}/6");
            spawn(&["sync", "--apply", plan, "--shard", &s, "-O", "json"], &[])
        })
        .collect();
    let reports: Vec<Value> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            let r = json_of(&assert_ok(
                &["sync", "--apply", plan, "--shard", &format!("{i}/6")],
                out,
            ));
            assert!(!stderr.contains("duplicated upload"), "shard {i}: {stderr}");
            // A shard that waits for another says so before it starts. One
            // that writes other tags of the owner's repository itself may
            // find the blob there already (a HEAD), and then waits for nothing.
            let writes_repo = |repo: &str| assigned(&a, i).iter().any(|d| repo_of(d) == repo);
            for c in a["cut_blobs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["owner"] != i && c["shards"].as_array().unwrap().contains(&Value::from(i)))
                .filter(|c| !writes_repo(c["mount_from"].as_str().unwrap()))
            {
                let line = format!(
                    "from {} once shard {} uploads",
                    c["mount_from"].as_str().unwrap(),
                    c["owner"]
                );
                assert!(stderr.contains(&line), "shard {i}: no {line:?} in {stderr}");
            }
            assert!(r["uploads_duplicated"].is_null(), "shard {i}: {r}");
            assert_eq!(r["failed"], 0, "shard {i}: {r}");
            r
        })
        .collect();
    assert_eq!(
        reports.iter().map(|r| r["written"].as_u64().unwrap()).sum::<u64>(),
        23,
        "{reports:?}"
    );

    // Every blob was uploaded exactly once (the access log's completed
    // uploads), the cut ones into the repository the plan named.
    let log = writes(&dst.access_log());
    let mut times: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (repo, d) in &log.uploads {
        times.entry(d.as_str()).or_default().push(repo.as_str());
    }
    let twice: Vec<_> = times.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(twice.is_empty(), "uploaded more than once: {twice:?}");
    let mut accounted: BTreeSet<String> = times.keys().map(|d| d.to_string()).collect();
    for r in &reports {
        for t in r["targets"].as_array().unwrap() {
            accounted.insert(t["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string());
        }
    }
    assert_eq!(
        stored(&dst),
        accounted,
        "blobs stored vs uploads seen in the access log"
    );
    for c in a["cut_blobs"].as_array().unwrap() {
        let hex = c["blob"].as_str().unwrap().trim_start_matches("sha256:");
        let from = c["mount_from"].as_str().unwrap();
        assert_eq!(times.get(hex), Some(&vec![from]), "{c}");
        // Each other shard holding it mounted it into its repositories (or
        // found it in the owner's, when it writes other tags of that one).
        for k in c["shards"].as_array().unwrap().iter().skip(1) {
            let repos: BTreeSet<String> = assigned(&a, k.as_u64().unwrap() as usize)
                .iter()
                .map(|d| repo_of(d))
                .filter(|r| r != from)
                .collect();
            let mounted: BTreeSet<&String> = log
                .mounts
                .iter()
                .filter(|(r, d)| d == hex && repos.contains(r))
                .map(|(r, _)| r)
                .collect();
            assert!(
                repos.is_empty() || !mounted.is_empty(),
                "shard {k} did not mount {hex} into any of {repos:?}: {:?}",
                log.mounts
            );
        }
    }

    // The whole sync is done: a full plan finds every target unchanged.
    let after = json_of(&run_ok(&["sync", file, "--plan", "-O", "json"], &[]));
    let targets = plan_targets(&after);
    assert_eq!(targets.len(), 23);
    assert!(targets.values().all(|a| a == "unchanged"), "{after}");
    // And the images are the source's.
    let sharded = written_digests(&reports);
    for g in &images().1 {
        let dest = format!("mirror/{}", repo_tag(&g.name));
        assert_eq!(sharded[&dest], g.descriptor.digest.to_string(), "{dest}");
    }
}

#[test]
fn a_shard_whose_owner_never_runs_uploads_the_cut_blob_itself_after_the_wait() {
    // Ctrl-C while it waits (into a registry of its own: an interrupted
    // apply leaves its saved plan behind the destination) (it said it would, then started) ends it
    // cleanly: exit 130, one line, no panic.
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("shards-cut-interrupted");
    let (_, plan, a) = cut_plan(&dir, &dst);
    let plan = plan.to_str().unwrap();
    let k = (0..6)
        .find(|&k| !awaited_by(&a, k).is_empty())
        .expect("a shard waiting");
    let awaited = awaited_by(&a, k);
    let s = format!("{k}/6");
    let args = ["sync", "--apply", plan, "--shard", &s, "-O", "json"];
    let err_file = dir.join("waiting.err");
    let mut child = occy_cmd(&args, &[("OCCY_SHARD_WAIT", "600")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&err_file).unwrap().contains(" uploads ") {
        assert!(std::time::Instant::now() < deadline, "it did not say it waits");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the shard ended instead of waiting"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the shard ended instead of waiting"
    );
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&err_file).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        writes(&dst.access_log())
            .uploads
            .iter()
            .all(|(_, d)| !awaited.contains(d)),
        "a waited-for blob was uploaded before the wait ran out"
    );

    // Its owner never runs: after the (shortened) wait it uploads the blobs
    // itself, says so, and counts them; its targets are complete.
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("shards-cut-alone");
    let (_, plan, a) = cut_plan(&dir, &dst);
    let plan = plan.to_str().unwrap();
    let args = ["sync", "--apply", plan, "--shard", &s, "-O", "json"];
    assert_eq!(awaited_by(&a, k), awaited, "the same plan twice");
    let started = std::time::Instant::now();
    let out = run(&args, &[("OCCY_SHARD_WAIT", "2")]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let r = json_of(&assert_ok(&args, out));
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    for hex in &awaited {
        let c = a["cut_blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["blob"].as_str().unwrap().ends_with(hex.as_str()))
            .unwrap();
        let owner = c["owner"].as_u64().unwrap();
        assert!(
            stderr.lines().any(|l| l.contains(hex.as_str())
                && l.contains(&format!("shard {owner} did not upload it"))
                && l.contains("2s wait")),
            "no warning for {hex}: {stderr}"
        );
    }
    assert_eq!(r["uploads_duplicated"], awaited.len(), "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let mine = assigned(&a, k as usize);
    assert_eq!(r["written"], mine.len(), "{r}");
    let log = writes(&dst.access_log());
    for hex in &awaited {
        assert_eq!(log.uploads.iter().filter(|(_, d)| d == hex).count(), 1, "{hex}");
    }
    // Run again: nothing left to do.
    let again = json_of(&run_ok(&args, &[("OCCY_SHARD_WAIT", "2")]));
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["unchanged"], mine.len(), "{again}");
}

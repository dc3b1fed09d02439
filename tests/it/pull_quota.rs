//! Docker Hub's pull quota (issue 21): Docker Hub counts every manifest GET
//! against a quota, not HEADs. A warm `occy sync` resolves the source tags
//! with HEADs and GETs no manifest there (a plain mirror, a multi-arch index
//! mirrored whole, one platform taken from an index), checked on the source
//! registry's access log. In front of a real registry, the fault proxy adds
//! Docker Hub's `RateLimit-*` headers and counts manifest GETs against them:
//! the plan shows the quota, and a run that needs more pulls than remain
//! stops before the first (exit 1) with the figures, and GETs nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::support::fault_proxy::{docker_hub_quota, FaultProxy};
use crate::support::{assert_fails, assert_ok, json_of, occy, scratch_dir, standard_images, Mode, Registry};

/// Manifest requests with `method` on repositories under `repo_prefix` in an access log.
fn manifest_requests(log: &str, method: &str, repo_prefix: &str) -> usize {
    let needle = format!("\"{method} /v2/{repo_prefix}");
    log.lines()
        .filter(|l| l.contains(&needle) && l.contains("/manifests/"))
        .count()
}

/// The access log after its first `skip` bytes.
fn since(reg: &Registry, skip: usize) -> String {
    reg.access_log()[skip..].to_string()
}

/// `occy sync FILE ARGS…` with a cache of the test's own.
fn sync(file: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sync", file.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    occy(&args)
}

fn args_of<'a>(file: &'a Path, cache: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["sync", file.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(extra);
    args
}

fn write_file(dir: &Path, text: String) -> PathBuf {
    let file = dir.join("mirror.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_warm_sync_asks_the_source_only_heads() {
    let src = Registry::start_logged(Mode::Plain);
    let layout = &standard_images().0;
    let plain = ["base", "app-a", "app-b", "zstd"];
    for name in plain {
        src.push_layout(layout, name, &format!("lib/plain:{name}"));
    }
    src.push_layout(layout, "multiarch", "lib/multi:1.0");
    let dst = Registry::shared(Mode::Plain);
    let dir = scratch_dir("quota-warm");
    let cache = dir.join("cache");
    let file = write_file(
        &dir,
        format!(
            "version: 1\nregistries:\n  {s}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\n\
             filters:\n  repro:\n    - normalize-timestamps: {{ ts: 0, config: true }}\nsync:\n\
             \x20 - from: registry://{s}/lib/plain\n    to: registry://{d}/quota-warm/plain\n\
             \x20 - from: registry://{s}/lib/multi\n    to: registry://{d}/quota-warm/multi\n    platforms: all\n\
             \x20 - from: registry://{s}/lib/multi:1.0\n    to: registry://{d}/quota-warm/one\n\
             \x20 - from: registry://{s}/lib/plain:app-a\n    filters: repro\n    to: registry://{d}/quota-warm/repro\n",
            s = src.host,
            d = dst.host
        ),
    );
    // Distinct source tags: four plain images (one also read through
    // filters, whose output the layer cache remembers) and an index (read
    // by two entries); each asked once.
    let source_tags = plain.len() + 1;
    let targets = plain.len() + 3;

    let seeded = src.access_log().len();
    assert_ok(&args_of(&file, &cache, &[]), sync(&file, &cache, &[]));
    let cold = since(&src, seeded);
    // The cold run fetched the manifests: each plain image, the index and
    // its two platform manifests.
    let cold_gets = manifest_requests(&cold, "GET", "lib/");
    assert!(
        cold_gets >= source_tags + 2,
        "cold run: {cold_gets} manifest GETs:\n{cold}"
    );

    // Warm, applied: nothing to do, and only HEADs on the source's manifests.
    let before = src.access_log().len();
    let out = assert_ok(&args_of(&file, &cache, &[]), sync(&file, &cache, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Nothing to do: {targets} targets up to date")),
        "{stderr}"
    );
    let warm = since(&src, before);
    assert_eq!(
        manifest_requests(&warm, "GET", "lib/"),
        0,
        "warm run GET manifests:\n{warm}"
    );
    assert_eq!(
        manifest_requests(&warm, "HEAD", "lib/"),
        source_tags,
        "one HEAD per source tag:\n{warm}"
    );
    assert!(!warm.contains("/blobs/"), "warm run read blobs:\n{warm}");

    // Warm plan, the same: every target unchanged, no manifest GET.
    let before = src.access_log().len();
    let out = assert_ok(
        &args_of(&file, &cache, &["--plan", "-O", "json"]),
        sync(&file, &cache, &["--plan", "-O", "json"]),
    );
    let plan = json_of(&out);
    assert_eq!(plan["totals"]["unchanged"], targets as u64, "{plan}");
    // A registry without a quota shows none.
    assert!(plan.get("pull_quotas").is_none(), "{plan}");
    let multi = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["destination"].as_str().unwrap().ends_with("quota-warm/multi:1.0"))
        .unwrap();
    assert_eq!(multi["platforms"], 2, "{multi}");
    let warm_plan = since(&src, before);
    assert_eq!(manifest_requests(&warm_plan, "GET", "lib/"), 0, "{warm_plan}");
    assert_eq!(
        manifest_requests(&warm_plan, "HEAD", "lib/"),
        source_tags,
        "{warm_plan}"
    );

    // A moved tag is fetched again: one GET for it, none for the others.
    src.push_layout(layout, "base", "lib/plain:app-b");
    let before = src.access_log().len();
    let out = assert_ok(&args_of(&file, &cache, &[]), sync(&file, &cache, &[]));
    let moved = since(&src, before);
    assert_eq!(
        manifest_requests(&moved, "GET", "lib/plain/manifests/app-b"),
        1,
        "{moved}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(manifest_requests(&moved, "GET", "lib/"), 1, "{moved}");
}

#[test]
fn a_pull_quota_is_shown_and_a_run_it_cannot_cover_stops_before_pulling() {
    let src = Registry::start_logged(Mode::Plain);
    let layout = &standard_images().0;
    let names = ["base", "app-a", "app-b"];
    for name in names {
        src.push_layout(layout, name, &format!("hub/app:{name}"));
    }
    let proxy = FaultProxy::start(&src.host);
    let remaining = Arc::new(AtomicU64::new(100));
    proxy.add_headers(docker_hub_quota(100, remaining.clone(), 21600));
    let dst = Registry::shared(Mode::Plain);
    let dir = scratch_dir("quota-stop");
    let cache = dir.join("cache");
    let file = write_file(
        &dir,
        format!(
            "version: 1\nregistries:\n  {s}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\nsync:\n\
             \x20 - from: registry://{s}/hub/app\n    to: registry://{d}/quota-stop/app\n",
            s = proxy.host,
            d = dst.host
        ),
    );

    // The plan shows the quota and what the run needs: one manifest per tag.
    let out = assert_ok(&args_of(&file, &cache, &["--plan"]), sync(&file, &cache, &["--plan"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Pull quota: {}: 100 of 100 pulls left in this 6 h window; this run needs 3",
            proxy.host
        )),
        "{text}"
    );
    assert_eq!(
        remaining.load(Ordering::SeqCst),
        97,
        "planning pulled the three manifests"
    );
    remaining.store(100, Ordering::SeqCst);
    let out = assert_ok(
        &args_of(&file, &cache, &["--plan", "-O", "json"]),
        sync(&file, &cache, &["--plan", "-O", "json"]),
    );
    let plan = json_of(&out);
    let q = &plan["pull_quotas"][0];
    assert_eq!(q["host"], proxy.host.as_str(), "{plan}");
    assert_eq!(
        (&q["limit"], &q["remaining"], &q["window_seconds"], &q["needed"]),
        (&100.into(), &100.into(), &21600.into(), &3.into()),
        "{plan}"
    );
    let out = assert_ok(
        &args_of(&file, &cache, &["--plan", "-O", "markdown"]),
        sync(&file, &cache, &["--plan", "-O", "markdown"]),
    );
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("Pull quota: ") && md.contains("; this run needs 3"), "{md}");

    // Two pulls left, three needed: stopped before the first, nothing pulled.
    remaining.store(2, Ordering::SeqCst);
    let before = src.access_log().len();
    let args = args_of(&file, &cache, &[]);
    let stderr = assert_fails(
        &args,
        sync(&file, &cache, &[]),
        1,
        "has 2 of 100 pulls left in this 6 h window and this run needs 3 manifest pulls",
    );
    assert!(stderr.contains("stopped before pulling any"), "{stderr}");
    assert!(stderr.contains("6 h long"), "{stderr}");
    let stopped = since(&src, before);
    assert_eq!(manifest_requests(&stopped, "GET", "hub/"), 0, "{stopped}");
    assert!(!stopped.contains("/blobs/"), "{stopped}");
    assert_eq!(remaining.load(Ordering::SeqCst), 2);
    let info = dst.occy(&["info", &dst.url("quota-stop/app:base")]);
    assert!(!info.status.success(), "nothing was written");

    // Enough left, but few (a tenth of the limit): the run goes through,
    // says the quota, and slows down: its three manifest GETs one at a
    // time, a second apart.
    remaining.store(10, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let out = assert_ok(&args, sync(&file, &cache, &[]));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Pull quota: ") && stderr.contains("10 of 100 pulls left in this 6 h window; this run needs 3"),
        "{stderr}"
    );
    assert_eq!(remaining.load(Ordering::SeqCst), 7);
    assert!(
        took >= std::time::Duration::from_millis(1900),
        "not slowed down: {took:?}"
    );

    // Warm with the quota spent: HEADs only, nothing to do, exit 0.
    remaining.store(0, Ordering::SeqCst);
    let before = src.access_log().len();
    let out = assert_ok(&args, sync(&file, &cache, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 of 100 pulls left") && stderr.contains("this run needs 0"),
        "{stderr}"
    );
    assert!(stderr.contains("Nothing to do: 3 targets up to date"), "{stderr}");
    let warm = since(&src, before);
    assert_eq!(manifest_requests(&warm, "GET", "hub/"), 0, "{warm}");
    assert_eq!(manifest_requests(&warm, "HEAD", "hub/"), names.len(), "{warm}");
}

//! `occy sync` of ten images through a fault-injecting proxy in front of
//! real registries (tests/it/support/fault_proxy.rs): 5xx answers, 429s with
//! `Retry-After`, connections reset mid-body, bodies cut short after correct
//! headers, slow trickles and flipped bytes. What must hold: the sync
//! completes and every destination passes `occy check` (full) and `skopeo
//! inspect`; a blob with a flipped byte is refused (digest mismatch), fetched
//! again, and never stored corrupted; a manifest fetched by tag with a
//! flipped byte is caught against the registry's `Docker-Content-Digest`, so
//! every target either holds the source's exact digest or fails, never
//! another digest reported as written; an image whose every request fails is
//! named, exit code 1, and the other images are complete.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use crate::support::fault_proxy::{every_nth, manifest_by_tag, seeded, Class, Fault, FaultProxy, Request};
use crate::support::outputs::*;
use crate::support::*;

/// `occy -v sync FILE ARGS…` with its own cache beside the file.
fn sync(file: &Path, insecure: &[&str], args: &[&str]) -> Output {
    let cache = file.with_file_name("cache");
    let mut all: Vec<&str> = Vec::new();
    for h in insecure {
        all.extend(["--insecure-registry", h]);
    }
    all.extend([
        "-v",
        "sync",
        file.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    all.extend_from_slice(args);
    occy(&all)
}

/// Writes `text` as `NAME/sync.yaml` in a fresh scratch directory.
fn sync_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    let file = dir.join("sync.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The ten images' destination `repo:tag`s under `mirror/` on the destination registry.
fn mirrored() -> Vec<String> {
    TEN.iter()
        .map(|(_, repo, tag)| format!("mirror/{}:{tag}", repo.rsplit('/').next().unwrap()))
        .collect()
}

/// Asserts that `dst` holds `repo_tag` with the source's digest, that occy's
/// full check passes and that skopeo can inspect it (read directly, not
/// through any proxy).
fn assert_mirrored(dst: &Registry, repo_tag: &str, src_repo_tag: &str) {
    let src_digest = source().inspect(src_repo_tag, false)["Digest"].clone();
    let got = dst.inspect(repo_tag, false);
    assert_eq!(got["Digest"], src_digest, "{repo_tag}");
    let url = dst.url(repo_tag);
    let args = ["--insecure-registry", &dst.host, "check", &url];
    let out = assert_ok(&args, occy(&args));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 error(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_ten_image_sync_through_ten_percent_faults_completes_and_checks_full() {
    let src = source();
    let dst = Registry::start(Mode::Plain);
    // About one request in ten fails, on both sides, each kind in turn.
    let src_proxy = FaultProxy::with_plan(
        &src.host,
        every_nth(
            10,
            vec![
                Fault::FlipByte,
                Fault::Reset,
                Fault::Truncate,
                Fault::Status(503),
                Fault::Trickle,
                Fault::TooMany(1),
            ],
        ),
    );
    let dst_proxy = FaultProxy::with_plan(
        &dst.host,
        every_nth(
            10,
            vec![
                Fault::Status(503),
                Fault::TooMany(1),
                Fault::Reset,
                Fault::Truncate,
                Fault::Trickle,
                Fault::Status(500),
            ],
        ),
    );
    let hosts = [src_proxy.host.as_str(), dst_proxy.host.as_str()];
    let text = ten_image_sync_file(
        &src_proxy.host,
        &hosts,
        &[&format!("registry://{}/mirror/{{repo}}", dst_proxy.host)],
    );
    let file = sync_file("faults-ten", &text);
    let started = std::time::Instant::now();
    let out = sync(&file, &hosts, &["--check", "full", "-O", "json"]);
    let seconds = started.elapsed().as_secs_f64();
    let stderr = stderr_of(&out);
    let report = json_of(&assert_ok(&["sync"], out));
    assert_eq!(report["written"], 10, "{report}\n{stderr}");
    for t in report["targets"].as_array().unwrap() {
        assert_eq!(t["check"], "full: ok", "{t}");
    }

    // The faults really happened, every kind of them.
    let (src_events, dst_events) = (src_proxy.events(), dst_proxy.events());
    let mut kinds = HashSet::new();
    let mut injected = 0;
    for e in src_events.iter().chain(&dst_events) {
        if let Some(f) = e.fault {
            injected += 1;
            kinds.insert(std::mem::discriminant(&f));
        }
    }
    let requests = src_events.len() + dst_events.len();
    let retries = stderr.matches("retrying").count() + stderr.matches("resuming").count();
    eprintln!(
        "faults: {injected} injected in {requests} requests ({:?} at the source, {:?} at the destination); \
         {retries} retries or resumes logged; {seconds:.1}s",
        src_proxy.faults(),
        dst_proxy.faults()
    );
    assert!(injected >= 10, "{injected} faults in {requests} requests");
    assert_eq!(
        kinds.len(),
        6,
        "every kind of fault injected: {:?}, {:?}",
        src_proxy.faults(),
        dst_proxy.faults()
    );
    assert!(
        retries >= injected / 2,
        "{retries} retries logged for {injected} faults:\n{stderr}"
    );
    assert!(
        stderr.contains("digest mismatch"),
        "the flipped byte was caught:\n{stderr}"
    );

    // Read directly: each image is whole, with the source's digest.
    for (dest, (_, repo, tag)) in mirrored().iter().zip(TEN) {
        assert_mirrored(&dst, dest, &format!("{repo}:{tag}"));
    }
    assert!(registry_blobs_match_names(&dst) > 10);

    // A second run through the same faults has nothing to do.
    let out = sync(&file, &hosts, &["-O", "json"]);
    let report = json_of(&assert_ok(&["sync"], out));
    assert_eq!(report["unchanged"], 10, "{report}");
}

#[test]
fn a_flipped_byte_is_refused_fetched_again_and_never_stored() {
    let src = source();
    let dst = Registry::start(Mode::Plain);
    // The first GET of every blob, and of every manifest asked for by
    // digest, gets one bit flipped in the middle.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let flips = seen.clone();
    let proxy = FaultProxy::with_plan(
        &src.host,
        Box::new(move |r| {
            let by_digest = r.class == Class::BlobGet || (r.class == Class::Manifest && r.path.contains("/sha256:"));
            (r.method == "GET" && by_digest && flips.lock().unwrap().insert(r.path.clone())).then_some(Fault::FlipByte)
        }),
    );
    let out_dir = scratch_dir("faults-flip-out");
    let hosts = [proxy.host.as_str(), dst.host.as_str()];
    let text = format!(
        "version: 1\nregistries:\n  \"{p}\": {{ insecure: true }}\n  \"{d}\": {{ insecure: true }}\nsync:\n\
         \x20 - from: registry://{p}/apps/web:v*\n    to: registry://{d}/flip/web\n\
         \x20 - from: registry://{p}/lib/alpine:3.18\n    to: \"tar://{o}/alpine-{{tag}}.tar\"\n\
         \x20 - from: registry://{p}/apps/api:1.0\n    to: \"dir://{o}/dir?unique_names=true\"\n",
        p = proxy.host,
        d = dst.host,
        o = out_dir.display()
    );
    let file = sync_file("faults-flip", &text);
    let out = sync(&file, &hosts, &["--check", "full", "-O", "json"]);
    let stderr = stderr_of(&out);
    let report = json_of(&assert_ok(&["sync"], out));
    assert_eq!(report["written"], 5, "{report}\n{stderr}");

    let flipped = seen.lock().unwrap().len();
    let caught = stderr.matches("digest mismatch").count();
    eprintln!("flipped bytes: {flipped} blobs and manifests flipped once each; {caught} digest mismatches logged");
    // Each distinct blob and manifest is read once (then again after its flip).
    assert!(flipped >= 10, "{flipped}");
    assert!(caught >= 1, "{stderr}");
    // Everything the proxy served corrupted was asked for again.
    let gets: Vec<String> = proxy
        .events()
        .into_iter()
        .filter(|e| e.request.method == "GET")
        .map(|e| e.request.path)
        .collect();
    for path in seen.lock().unwrap().iter() {
        assert!(
            gets.iter().filter(|p| *p == path).count() >= 2,
            "{path} never fetched again"
        );
    }

    // Nothing corrupted was stored, and every image is whole.
    registry_blobs_match_names(&dst);
    for tag in ["v1.0", "v1.1", "v2.0"] {
        assert_mirrored(&dst, &format!("flip/web:{tag}"), &format!("apps/web:{tag}"));
    }
    let tar = out_dir.join("alpine-3.18.tar");
    tar_image(&tar);
    skopeo_inspect_local(&format!("docker-archive:{}", tar.display()), false);
    let catalog = dir_image_set(&out_dir.join("dir"));
    let api = format!("{}/apps/api", proxy.host);
    assert!(catalog[&api]["1.0"].is_array(), "{catalog}");
}

/// Which requests a plan refuses.
type Selector = fn(&Request) -> bool;

#[test]
fn an_image_whose_every_request_fails_is_named_and_the_others_complete() {
    let src = source();
    // Every request for apps/api (one image of the ten) fails, so it fails
    // while planning; then only its blob GETs fail, so it fails while copying.
    let plans: [(&str, Selector); 2] = [
        ("every request", |r| r.repo.as_deref() == Some("apps/api")),
        ("every blob GET", |r| {
            r.repo.as_deref() == Some("apps/api") && r.class == Class::BlobGet
        }),
    ];
    for (what, fails) in plans {
        let dst = Registry::start(Mode::Plain);
        let proxy = FaultProxy::with_plan(&src.host, Box::new(move |r| fails(r).then_some(Fault::Status(503))));
        let hosts = [proxy.host.as_str(), dst.host.as_str()];
        let text = ten_image_sync_file(
            &proxy.host,
            &hosts,
            &[&format!("registry://{}/mirror/{{repo}}", dst.host)],
        );
        let file = sync_file("faults-one-down", &text);
        let out = sync(&file, &hosts, &["--retries", "2"]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("failed")).collect();
        assert_eq!(failed_lines.len(), 1, "{what}: {stdout}");
        assert!(failed_lines[0].contains("mirror/api:1.0"), "{what}: {stdout}");
        assert!(
            failed_lines[0].contains("503"),
            "{what}: the registry's answer is shown: {stdout}"
        );
        assert!(stdout.contains("9 written, 0 unchanged, 1 failed"), "{what}: {stdout}");

        let refused = proxy.events().iter().filter(|e| e.fault.is_some()).count();
        eprintln!("one image down ({what}): {refused} requests for apps/api refused");
        // Nothing of it is tagged; the other nine are whole.
        let tags = registry_tags(&dst);
        assert!(!tags.keys().any(|k| k.starts_with("mirror/api")), "{what}: {tags:?}");
        assert_eq!(tags.len(), 9, "{tags:?}");
        for (dest, (_, repo, tag)) in mirrored().iter().zip(TEN) {
            if repo != "apps/api" {
                assert_mirrored(&dst, dest, &format!("{repo}:{tag}"));
            }
        }
    }
}

#[test]
fn answers_lost_after_the_registry_acted_are_survived() {
    let src = source();
    let dst = Registry::start(Mode::Plain);
    // The first time each upload step (session, PUT of a blob) and each
    // manifest PUT is made, the registry does it but its answer never
    // reaches occy.
    let mut seen = HashSet::new();
    let proxy = FaultProxy::with_plan(
        &dst.host,
        Box::new(move |r| {
            let key = match (r.method.as_str(), r.class) {
                ("POST", Class::BlobUpload) => format!("POST {}", r.path),
                ("PUT", Class::BlobUpload) => format!("PUT {}", r.path.rsplit("digest=").next().unwrap_or("")),
                ("PUT", Class::Manifest) => format!("PUT {}", r.path),
                _ => return None,
            };
            seen.insert(key).then_some(Fault::DropAnswer)
        }),
    );
    let hosts = [src.host.as_str(), proxy.host.as_str()];
    let text = ten_image_sync_file(
        &src.host,
        &hosts,
        &[&format!("registry://{}/mirror/{{repo}}", proxy.host)],
    );
    let file = sync_file("faults-lost-answers", &text);
    let out = sync(&file, &hosts, &["-O", "json"]);
    let stderr = stderr_of(&out);
    let report = json_of(&assert_ok(&["sync"], out));
    assert_eq!(report["written"], 10, "{report}\n{stderr}");
    let lost = proxy.events().iter().filter(|e| e.fault.is_some()).count();
    eprintln!(
        "lost answers: {lost} of {} writes",
        proxy
            .events()
            .iter()
            .filter(|e| e.request.method != "GET" && e.request.method != "HEAD")
            .count()
    );
    for (dest, (_, repo, tag)) in mirrored().iter().zip(TEN) {
        assert_mirrored(&dst, dest, &format!("{repo}:{tag}"));
    }
    registry_blobs_match_names(&dst);
}

/// The digest index.json of the OCI layout `dir` gives `tag`, if any.
fn layout_tag(dir: &Path, tag: &str) -> Option<String> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
}

#[test]
fn manifests_corrupted_by_tag_never_write_another_digest() {
    let src = source();
    // The source's own digest of every tag, read from its storage.
    let truth = registry_tags(src);
    let seeds: Vec<u64> = std::env::var("OCCY_FAULT_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3]);
    let (mut total_written, mut total_failed, mut total_tag_flips, mut total_caught) = (0, 0, 0, 0);
    for seed in seeds {
        let dst = Registry::start(Mode::Plain);
        let out = scratch_dir(&format!("faults-tag-flip-{seed}"));
        // The first GET of every manifest by tag gets a flipped byte; on top,
        // 30 % of all requests get a fault drawn by the seed.
        let mut random = seeded(
            seed,
            30,
            vec![
                Fault::FlipByte,
                Fault::Reset,
                Fault::Truncate,
                Fault::Status(503),
                Fault::TooMany(0),
            ],
        );
        let mut first_by_tag = HashSet::new();
        let proxy = FaultProxy::with_plan(
            &src.host,
            Box::new(move |r| {
                if manifest_by_tag(r) && first_by_tag.insert(r.path.clone()) {
                    return Some(Fault::FlipByte);
                }
                random(r)
            }),
        );
        let hosts = [proxy.host.as_str(), dst.host.as_str()];
        let layout = out.join("layout");
        let text = ten_image_sync_file(
            &proxy.host,
            &hosts,
            &[
                &format!("registry://{}/mirror/{{repo}}", dst.host),
                &format!("oci://{}", layout.display()),
            ],
        );
        let file = sync_file(&format!("faults-tag-flip-{seed}"), &text);
        let out = sync(&file, &hosts, &["-O", "json"]);
        let stderr = stderr_of(&out);
        assert!(matches!(out.status.code(), Some(0 | 1)), "seed {seed}: {stderr}");
        let report = json_of(&out);
        let targets = report["targets"].as_array().unwrap();
        assert_eq!(targets.len(), 20, "seed {seed}: {report}");

        let tags = registry_tags(&dst);
        for t in targets {
            let dest = t["destination"].as_str().unwrap();
            let tag = dest.rsplit(':').next().unwrap();
            let (_, repo, _) = TEN.iter().find(|(_, _, tg)| *tg == tag).unwrap();
            let want = &truth[&format!("{repo}:{tag}")];
            // What the destination holds for this tag now (read directly).
            let held = if dest.starts_with("oci://") {
                layout_tag(&layout, tag)
            } else {
                let short = repo.rsplit('/').next().unwrap();
                tags.get(&format!("mirror/{short}:{tag}")).cloned()
            };
            match t["status"].as_str().unwrap() {
                "written" => {
                    assert_eq!(t["digest"].as_str(), Some(want.as_str()), "seed {seed}: {t}");
                    assert_eq!(held.as_deref(), Some(want.as_str()), "seed {seed}: {dest}");
                    if dest.starts_with("oci://") {
                        assert_oci_layout_readable(&layout, tag, true);
                    }
                }
                "failed" => {
                    let error = t["error"].as_str().unwrap_or_default();
                    assert!(!error.is_empty(), "seed {seed}: {t}");
                    // A corrupted manifest names the digest the registry sent.
                    if error.contains("digest mismatch") && error.contains("Docker-Content-Digest") {
                        assert!(error.contains(want.as_str()), "seed {seed}: {t}");
                    }
                    assert!(
                        held.is_none() || held.as_deref() == Some(want.as_str()),
                        "seed {seed}: {dest} failed but holds {held:?}, the source has {want}"
                    );
                }
                other => panic!("seed {seed}: {other}: {t}"),
            }
        }
        // Everything written is whole at the registry.
        for (repo_tag, digest) in &tags {
            assert_registry_image_complete(&dst, repo_tag.rsplit_once(':').unwrap().0, digest);
        }

        let tag_flips = proxy
            .events()
            .iter()
            .filter(|e| e.fault == Some(Fault::FlipByte) && manifest_by_tag(&e.request))
            .count();
        let caught = stderr
            .matches("checked against the registry's Docker-Content-Digest")
            .count();
        let written = report["written"].as_u64().unwrap();
        let failed = report["failed"].as_u64().unwrap();
        eprintln!(
            "seed {seed}: {written} written, {failed} failed; {tag_flips} manifests flipped by tag, \
             {caught} caught by Docker-Content-Digest; faults {:?}",
            proxy.faults()
        );
        assert!(tag_flips >= 3, "seed {seed}: {tag_flips}");
        assert!(caught >= 1, "seed {seed}: no flipped manifest caught:\n{stderr}");
        total_written += written;
        total_failed += failed;
        total_tag_flips += tag_flips;
        total_caught += caught;
    }
    eprintln!(
        "all seeds: {total_written} written, {total_failed} failed, {total_tag_flips} manifests flipped by tag, \
         {total_caught} caught"
    );
    assert!(total_written > 0, "nothing was ever written: the test proves nothing");
}

/// What a request is, for counting attempts: its method and path, except
/// that a blob upload's PUT is known by the digest it stores (each session
/// has its own path).
fn request_key(r: &Request) -> String {
    let bare = r.path.split('?').next().unwrap_or("");
    match (r.class, r.path.split_once("digest=")) {
        (Class::BlobUpload, Some((_, digest))) => format!("{} upload of {digest}", r.method),
        _ => format!("{} {bare}", r.method),
    }
}

#[test]
fn a_failing_request_is_sent_at_most_retries_plus_one_times_plain_or_filtered() {
    let src = source();
    let dst = Registry::start(Mode::Plain);
    let retries = 2usize;
    // The config is read while planning, the layers while copying.
    let manifest = src.inspect("apps/api:1.0", true);
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config_get = move |r: &Request| r.class == Class::BlobGet && r.path.ends_with(&config);
    let config_get2 = config_get.clone();
    let layer_get = move |r: &Request| r.class == Class::BlobGet && !config_get2(r);
    let upload_put = |r: &Request| r.class == Class::BlobUpload && r.method == "PUT";
    let manifest_put = |r: &Request| r.class == Class::Manifest && r.method == "PUT";
    type Sel = std::sync::Arc<dyn Fn(&Request) -> bool + Send + Sync>;
    let layer: Sel = std::sync::Arc::new(layer_get);
    // (what, fault, which requests, at the source?)
    let cases: Vec<(&str, Fault, Sel, bool)> = vec![
        ("source layer GET, 503", Fault::Status(503), layer.clone(), true),
        ("source layer GET, 429", Fault::TooMany(0), layer.clone(), true),
        ("source layer GET, reset mid-body", Fault::Reset, layer.clone(), true),
        ("source layer GET, cut short", Fault::Truncate, layer.clone(), true),
        ("source layer GET, flipped byte", Fault::FlipByte, layer.clone(), true),
        (
            "source config GET, 503",
            Fault::Status(503),
            std::sync::Arc::new(config_get),
            true,
        ),
        (
            "source manifest GET by tag, 503",
            Fault::Status(503),
            std::sync::Arc::new(manifest_by_tag),
            true,
        ),
        (
            "source manifest GET by tag, flipped byte",
            Fault::FlipByte,
            std::sync::Arc::new(manifest_by_tag),
            true,
        ),
        (
            "destination blob upload, 503",
            Fault::Status(503),
            std::sync::Arc::new(upload_put),
            false,
        ),
        (
            "destination blob upload, reset",
            Fault::Reset,
            std::sync::Arc::new(upload_put),
            false,
        ),
        (
            "destination manifest PUT, 503",
            Fault::Status(503),
            std::sync::Arc::new(manifest_put),
            false,
        ),
    ];
    let mut table = Vec::new();
    for filtered in [false, true] {
        for (i, (what, fault, selects, at_source)) in cases.iter().enumerate() {
            let fault = *fault;
            let selects = selects.clone();
            let proxy = FaultProxy::with_plan(
                if *at_source { &src.host } else { &dst.host },
                Box::new(move |r| selects(r).then_some(fault)),
            );
            let (s, d) = if *at_source {
                (proxy.host.clone(), dst.host.clone())
            } else {
                (src.host.clone(), proxy.host.clone())
            };
            let from = format!("registry://{s}/apps/api:1.0");
            let to = format!("registry://{d}/count/c{i}-{filtered}:1.0");
            let mut args = vec![
                "--insecure-registry",
                &s,
                "--insecure-registry",
                &d,
                "--retries",
                "2",
                "process",
                &from,
                &to,
            ];
            if filtered {
                args.extend(["-f", "normalize-timestamps"]);
            }
            let out = occy(&args);
            let stderr = stderr_of(&out);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what} (filtered: {filtered}) must fail:\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for e in proxy.events().iter().filter(|e| e.fault.is_some()) {
                *counts.entry(request_key(&e.request)).or_default() += 1;
            }
            let (worst, most) = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(k, n)| (k.clone(), *n))
                .unwrap_or_default();
            table.push(format!(
                "{what}{}: {} faulted requests, at most {most} of one ({worst})",
                if filtered { " (filtered)" } else { "" },
                counts.values().sum::<usize>()
            ));
            assert!(most >= 1, "{what}: the fault was never hit: {stderr}");
            assert!(
                most <= retries + 1,
                "{what} (filtered: {filtered}): {worst} sent {most} times, over --retries 2 + 1: {counts:?}\n{stderr}"
            );
            // Every one of these faults is worth another attempt.
            assert!(
                most >= 2,
                "{what} (filtered: {filtered}): never retried: {counts:?}\n{stderr}"
            );
        }
    }
    eprintln!("attempts per request with --retries 2:\n  {}", table.join("\n  "));
}

//! occy paces itself: a default `occy sync` of twelve images between two
//! real registries, each behind a proxy that throttles at 30 requests a
//! second (429 with `Retry-After: 1` past that; tests/it/support/fault_proxy.rs),
//! finishes with no failed target and no more than 5 % of its requests
//! answered 429 (and no more than a tenth of either registry's), and `-v`
//! says what each registry settled at and the rate it learned; a second
//! run with the same cache starts from there and meets no 429 (or one).

use crate::support::fault_proxy::{throttled, FaultProxy};
use crate::support::outputs::mirror_layout;
use crate::support::*;

/// Twelve images of the generated mirror set, as (name, repository, tag).
const TWELVE: [(&str, &str, &str); 12] = [
    ("alpine_3.17", "lib/alpine", "3.17"),
    ("alpine_3.18", "lib/alpine", "3.18"),
    ("alpine_3.18.1", "lib/alpine", "3.18.1"),
    ("alpine_3.19", "lib/alpine", "3.19"),
    ("alpine_3.19.1", "lib/alpine", "3.19.1"),
    ("alpine_3.20", "lib/alpine", "3.20"),
    ("alpine_latest", "lib/alpine", "latest"),
    ("web_v1.0", "apps/web", "v1.0"),
    ("web_v1.1", "apps/web", "v1.1"),
    ("web_v2.0", "apps/web", "v2.0"),
    ("api_1.0", "apps/api", "1.0"),
    ("api_1.1", "apps/api", "1.1"),
];

/// (requests, answered 429) of a proxy's events.
fn tally(p: &FaultProxy) -> (usize, usize) {
    let events = p.events();
    let refused = events.iter().filter(|e| e.status == Some(429)).count();
    (events.len(), refused)
}

#[test]
fn a_default_sync_behind_registries_throttling_at_30_per_second_meets_few_429s() {
    let src = Registry::start(Mode::Plain);
    for (name, repo, tag) in TWELVE {
        src.push_layout(mirror_layout(), name, &format!("{repo}:{tag}"));
    }
    let dst = Registry::start(Mode::Plain);
    let src_proxy = FaultProxy::with_plan(&src.host, throttled(30));
    let dst_proxy = FaultProxy::with_plan(&dst.host, throttled(30));
    let (s, d) = (&src_proxy.host, &dst_proxy.host);
    // Default flags: no -J, -j or rate in the file or on the command line.
    let mut text =
        format!("version: 1\nregistries:\n  \"{s}\": {{ insecure: true }}\n  \"{d}\": {{ insecure: true }}\nsync:\n");
    for repo in ["lib/alpine", "apps/web", "apps/api"] {
        let tags: Vec<&str> = TWELVE
            .iter()
            .filter(|(_, r, _)| *r == repo)
            .map(|(_, _, t)| *t)
            .collect();
        text.push_str(&format!(
            "  - from: registry://{s}/{repo}\n    tags: [{}]\n    to: [\"registry://{d}/mirror/{repo}\"]\n",
            tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    let dir = scratch_dir("pacing-throttled");
    let file = dir.join("sync.yaml");
    std::fs::write(&file, text).unwrap();
    let cache = dir.join("cache");
    let args = [
        "-v",
        "sync",
        file.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "-O",
        "json",
    ];
    let started = std::time::Instant::now();
    let out = occy(&args);
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = json_of(&assert_ok(&args, out));
    assert_eq!(report["written"], 12, "{report}\n{stderr}");
    assert_eq!(report["failed"], 0, "{report}\n{stderr}");
    // The run's requests, to both registries: at most 5 % answered 429.
    // (Those that meet one are the requests already in flight when the
    // first 429 of a registry arrives; after it, requests keep to the rate
    // it taught.)
    let (mut all, mut all_refused) = (0, 0);
    for (name, proxy) in [("source", &src_proxy), ("destination", &dst_proxy)] {
        let (requests, refused) = tally(proxy);
        eprintln!(
            "{name}: {requests} requests, {refused} answered 429 ({:.1} %), {seconds:.1} s",
            refused as f64 * 100.0 / requests as f64
        );
        all += requests;
        all_refused += refused;
        // Never more than the few in flight at the first 429, nor a tenth.
        assert!(
            refused <= 8 && refused * 10 <= requests,
            "{name}: {refused} of {requests} requests answered 429\n{stderr}"
        );
    }
    let share = all_refused as f64 / all as f64;
    assert!(
        share <= 0.05,
        "{all_refused} of {all} requests answered 429 ({:.1} %, more than 5 %)\n{stderr}",
        share * 100.0
    );
    // The run learned from the 429s it met, and said what it settled at.
    assert!(stderr.contains(&format!("{d}: settled at")), "{stderr}");
    assert!(stderr.contains(&format!("{s}: settled at")), "{stderr}");
    // The throttle was met (else this test tests nothing), and taught a rate.
    let (_, dst_refused) = tally(&dst_proxy);
    let (_, src_refused) = tally(&src_proxy);
    assert!(dst_refused + src_refused > 0, "no request met the throttle");
    assert!(stderr.contains("requests/s learned from the registry"), "{stderr}");
    // The next run starts from what this one settled at (remembered in
    // the cache): into a fresh repository, it meets no 429, or one.
    src_proxy.clear_events();
    dst_proxy.clear_events();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&format!("registry://{d}/mirror/"), &format!("registry://{d}/again/"));
    std::fs::write(&file, again).unwrap();
    let out = occy(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = json_of(&assert_ok(&args, out));
    assert_eq!(report["written"], 12, "{report}\n{stderr}");
    let (src_again, dst_again) = (tally(&src_proxy), tally(&dst_proxy));
    eprintln!("second run: {src_again:?} at the source, {dst_again:?} at the destination (requests, 429s)");
    assert!(src_again.1 + dst_again.1 <= 1, "{src_again:?} {dst_again:?}\n{stderr}");
    // Every image arrived whole.
    for (_, repo, tag) in TWELVE {
        let want = src.inspect(&format!("{repo}:{tag}"), false)["Digest"].clone();
        let got = dst.inspect(&format!("mirror/{repo}:{tag}"), false)["Digest"].clone();
        assert_eq!(got, want, "{repo}:{tag}");
    }
}

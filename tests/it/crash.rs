//! Crash safety of `occy sync`: killed with SIGKILL at many points of a run
//! (held by the fault-injecting proxy at a chosen request: planning, a blob
//! half-downloaded while a tarball or `dir://` file is being written, an
//! upload half-sent or done but unacknowledged, a manifest PUT before or
//! after the registry took it; and at fractions of a clean run's time), no
//! file under a final name is partial and no registry tag names an
//! incomplete image; the re-run completes and gives exactly what a clean
//! run gives. Temporary files a SIGKILL leaves (`.NAME.occy-tmp-*`,
//! `.tmp*`) are never read and never renamed into place, and the next run
//! sweeps them while a live writer's stay. Ctrl-C (SIGINT) stops a run
//! with exit code 130 and removes its temporary files.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Class, Fault, FaultProxy, Plan};
use crate::support::outputs::*;
use crate::support::*;
use serde_json::{json, Value};
use Class::{BlobGet, BlobUpload, Manifest};
use Fault::{StallAfter, StallBefore, StallMidBody};
use Side::{Destination as Dst, Source as Src};

/// One run's world: a fresh destination registry behind its own proxy, an
/// output directory and the sync file, with the source behind `src_proxy`.
struct Bed {
    dst: Registry,
    dst_proxy: FaultProxy,
    dir: PathBuf,
    out: PathBuf,
    file: PathBuf,
}

impl Bed {
    fn new(name: &str, src_proxy: &FaultProxy) -> Bed {
        let dst = Registry::start(Mode::Plain);
        let dst_proxy = FaultProxy::start(&dst.host);
        let dir = scratch_dir(name);
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let (s, d, o) = (&src_proxy.host, &dst_proxy.host, out.display());
        let to = |repo: &str| {
            format!("    to:\n      - registry://{d}/crash/{repo}\n      - \"tar://{o}/{repo}-{{tag}}.tar\"\n      - \"dir://{o}/dir?unique_names=true\"\n")
        };
        let text = format!(
            "version: 1\ndefaults:\n  image_parallel: 3\n  parallel: 4\nregistries:\n  \"{s}\": {{ insecure: true }}\n  \"{d}\": {{ insecure: true }}\nsync:\n\
             \x20 - from: registry://{s}/lib/alpine\n    tags: [\"3.18\", \"3.19\"]\n{}\
             \x20 - from: registry://{s}/apps/web:v1.0\n{}\
             \x20 - from: registry://{s}/apps/api:1.0\n{}",
            to("alpine"),
            to("web"),
            to("api")
        );
        let file = dir.join("sync.yaml");
        std::fs::write(&file, text).unwrap();
        Bed {
            dst,
            dst_proxy,
            dir,
            out,
            file,
        }
    }

    fn command(&self, src_proxy: &FaultProxy) -> Command {
        let mut c = Command::new(occy_bin());
        c.args([
            "--insecure-registry",
            &src_proxy.host,
            "--insecure-registry",
            &self.dst_proxy.host,
        ])
        .arg("sync")
        .arg(&self.file)
        .arg("--cache-dir")
        .arg(self.dir.join("cache"))
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OCCY_CACHE_DIR");
        c
    }

    fn spawn(&self, src_proxy: &FaultProxy, log: &str) -> Child {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        self.command(src_proxy)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Runs the sync to its end; asserts it succeeds.
    fn complete(&self, src_proxy: &FaultProxy) -> f64 {
        let started = Instant::now();
        let out = self.command(src_proxy).output().unwrap();
        assert_ok(&["sync"], out);
        started.elapsed().as_secs_f64()
    }

    /// What the destinations hold, asserting on the way that nothing is
    /// torn; and the temporary files lying about.
    fn state(&self) -> (Value, Vec<PathBuf>) {
        let tags = registry_tags(&self.dst);
        for (repo_tag, digest) in &tags {
            let repo = repo_tag.rsplit_once(':').unwrap().0;
            assert_registry_image_complete(&self.dst, repo, digest);
        }
        let mut temps = Vec::new();
        let mut tars = serde_json::Map::new();
        for p in walk(&self.out) {
            let rel = p.strip_prefix(&self.out).unwrap().to_string_lossy().to_string();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if rel
                .split('/')
                .any(|part| part.starts_with('.') && (part.contains(".occy-tmp-") || part.starts_with(".tmp")))
            {
                temps.push(p);
            } else if !rel.contains('/') && name.ends_with(".tar") {
                tars.insert(name, tar_image(&p));
            } else if name.ends_with(".occy-state.json") || rel.starts_with("dir/.occy-state/") {
                let bytes = std::fs::read(&p).unwrap();
                serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| panic!("torn state record {rel}: {e}"));
            } else if name.starts_with("manifest-") && name.ends_with(".json") {
                let bytes = std::fs::read(&p).unwrap();
                serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| panic!("torn {rel}: {e}"));
            } else if rel.starts_with("dir/") {
                // Layers, configs, catalog.json and its lock: checked by dir_image_set.
            } else {
                panic!("unexpected file {rel}");
            }
        }
        let state = json!({
            "registry": tags,
            "tars": tars,
            "dir": dir_image_set(&self.out.join("dir")),
        });
        (state, temps)
    }
}

/// A plan that stalls the `k`-th (from 0) request of `class` (and `method`, if given) with `fault`.
fn stall(class: Class, method: Option<&'static str>, k: u64, fault: Fault) -> Plan {
    let mut seen = 0;
    Box::new(move |r| {
        if r.class != class || method.is_some_and(|m| r.method != m) {
            return None;
        }
        seen += 1;
        (seen == k + 1).then_some(fault)
    })
}

/// The layer digests of mirror image `name`, in order.
fn layers_of(name: &str) -> Vec<String> {
    let layout = mirror_layout();
    let blob = |d: &str| -> Value {
        let path = layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap();
    let manifest = blob(entry["digest"].as_str().unwrap());
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn none() -> Plan {
    Box::new(|_| None)
}

#[derive(Clone, Copy)]
enum Side {
    Source,
    Destination,
}

/// A kill point held by a proxy: the `k`-th (from 0) request of `class`
/// (and `method`, if given) on `side` gets `fault`.
struct Held {
    what: &'static str,
    side: Side,
    class: Class,
    method: Option<&'static str>,
    k: u64,
    fault: Fault,
}

const fn held(
    what: &'static str,
    side: Side,
    class: Class,
    method: Option<&'static str>,
    k: u64,
    fault: Fault,
) -> Held {
    Held {
        what,
        side,
        class,
        method,
        k,
        fault,
    }
}

const HELD: [Held; 12] = [
    held(
        "planning: first source manifest request",
        Src,
        Manifest,
        None,
        0,
        StallBefore,
    ),
    held(
        "planning: first destination manifest HEAD",
        Dst,
        Manifest,
        Some("HEAD"),
        0,
        StallBefore,
    ),
    held("first source blob half-read", Src, BlobGet, None, 0, StallMidBody),
    held("3rd source blob half-read", Src, BlobGet, None, 2, StallMidBody),
    held("5th source blob half-read", Src, BlobGet, None, 4, StallMidBody),
    held("6th source blob half-read", Src, BlobGet, None, 5, StallMidBody),
    held(
        "first upload session opened",
        Dst,
        BlobUpload,
        Some("POST"),
        0,
        StallBefore,
    ),
    held(
        "2nd blob upload half-sent",
        Dst,
        BlobUpload,
        Some("PUT"),
        1,
        StallMidBody,
    ),
    held(
        "4th blob upload stored, unacknowledged",
        Dst,
        BlobUpload,
        Some("PUT"),
        3,
        StallAfter,
    ),
    held("first manifest PUT", Dst, Manifest, Some("PUT"), 0, StallBefore),
    held(
        "first manifest stored, unacknowledged",
        Dst,
        Manifest,
        Some("PUT"),
        0,
        StallAfter,
    ),
    held(
        "3rd manifest stored, unacknowledged",
        Dst,
        Manifest,
        Some("PUT"),
        2,
        StallAfter,
    ),
];

/// Waits (up to 30 s) until what the source sent of a stalled layer of
/// alpine:3.18 has reached two of its outputs at once: its tarball's
/// temporary file and a `dir://` layer's temporary file exist, and the
/// layer's bytes are in the latter (the writers are mid-write, not merely
/// opened). Panics naming what was there.
fn wait_until_both_are_mid_write(bed: &Bed, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let temps: Vec<(String, u64)> = walk(&bed.out)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".occy-tmp-"))
            .map(|p| {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p.strip_prefix(&bed.out).unwrap().to_string_lossy().to_string(), len)
            })
            .collect();
        let tarball = temps.iter().any(|(p, _)| p.starts_with(".alpine-3.18.tar.occy-tmp-"));
        let dir_layer = temps
            .iter()
            .any(|(p, len)| p.starts_with("dir/") && p.contains("/.layer.tar.occy-tmp-") && *len > 0);
        if tarball && dir_layer {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the tarball and a dir:// layer are not both being written: {temps:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Holds every read of blob `digest` from `proxy` half-way through its body.
fn stall_reads_of(proxy: &FaultProxy, digest: &str) {
    let digest = digest.to_string();
    proxy.set_plan(Box::new(move |r| {
        (r.class == Class::BlobGet && r.path.ends_with(&digest)).then_some(Fault::StallMidBody)
    }));
}

#[test]
fn sigkill_at_a_dozen_points_then_the_rerun_converges_to_a_clean_run() {
    let src_proxy = FaultProxy::start(&source().host);
    let clean = Bed::new("crash-clean", &src_proxy);
    let seconds = clean.complete(&src_proxy);
    let (want, temps) = clean.state();
    assert!(temps.is_empty(), "a clean run left {temps:?}");
    assert_eq!(want["registry"].as_object().unwrap().len(), 4, "{want}");
    assert_eq!(want["tars"].as_object().unwrap().len(), 4, "{want}");
    assert_eq!(want["dir"].as_object().unwrap().len(), 3, "{want}");

    let mut kills = Vec::new();
    let mut leftovers = 0;
    for (
        i,
        Held {
            what,
            side,
            class,
            method,
            k,
            fault,
        },
    ) in HELD.into_iter().enumerate()
    {
        let bed = Bed::new(&format!("crash-{i}"), &src_proxy);
        let proxy = match side {
            Side::Source => &src_proxy,
            Side::Destination => &bed.dst_proxy,
        };
        proxy.set_plan(stall(class, method, k, fault));
        let mut child = bed.spawn(&src_proxy, "killed.log");
        let held = proxy.wait_for_stall(Duration::from_secs(30));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        src_proxy.release();
        bed.dst_proxy.release();
        src_proxy.set_plan(none());
        bed.dst_proxy.set_plan(none());
        let held = held.unwrap_or_else(|| panic!("kill point {what}: never reached"));
        assert!(running, "kill point {what}: occy had already exited");

        // Nothing torn; then the re-run gives what a clean run gives.
        let (_, temps) = bed.state();
        leftovers += temps.len();
        bed.complete(&src_proxy);
        let (got, temps_after) = bed.state();
        assert_eq!(got, want, "kill point {what} ({} {})", held.method, held.path);
        // The re-run ignores what the killed run left and adds nothing.
        assert!(temps_after.iter().all(|t| temps.contains(t)), "{what}: {temps_after:?}");
        kills.push(format!("{what} ({} temporary files left)", temps.len()));
    }

    // Every target of alpine:3.18 (registry, tarball, dir://) half-way
    // through the same layer at once, for each of its two layers: the
    // layer is read once and feeds all three.
    for (i, layer) in layers_of("alpine_3.18").into_iter().enumerate() {
        let what = format!("every target half-way through layer {i} of alpine:3.18");
        let bed = Bed::new(&format!("crash-layer-{i}"), &src_proxy);
        stall_reads_of(&src_proxy, &layer);
        let mut child = bed.spawn(&src_proxy, "killed.log");
        let held = src_proxy.wait_for_stalls(1, Duration::from_secs(30));
        // The half that was sent reaches the sinks although the rest never
        // comes (a chunk the source stops filling is handed over short).
        wait_until_both_are_mid_write(&bed, &what);
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        src_proxy.release();
        src_proxy.set_plan(none());
        assert_eq!(held.len(), 1, "{what}: {held:?}");
        assert!(running, "{what}: occy had already exited");
        let (_, temps) = bed.state();
        assert!(
            temps.len() >= 2,
            "{what}: a tarball and a dir:// layer were being written: {temps:?}"
        );
        leftovers += temps.len();
        bed.complete(&src_proxy);
        let (got, temps_after) = bed.state();
        assert_eq!(got, want, "{what}");
        assert!(temps_after.iter().all(|t| temps.contains(t)), "{what}: {temps_after:?}");
        kills.push(format!("{what} ({} temporary files left)", temps.len()));
    }

    // Kills at fractions of a clean run's time, wherever the run is then.
    for (i, fraction) in [0.2, 0.4, 0.6, 0.8].into_iter().enumerate() {
        let bed = Bed::new(&format!("crash-timed-{i}"), &src_proxy);
        let mut child = bed.spawn(&src_proxy, "killed.log");
        std::thread::sleep(Duration::from_secs_f64(seconds * fraction));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, temps) = bed.state();
        leftovers += temps.len();
        bed.complete(&src_proxy);
        assert_eq!(bed.state().0, want, "killed at {fraction} of {seconds:.2}s");
        if running {
            kills.push(format!("{:.0} ms into the run", seconds * fraction * 1000.0));
        }
    }
    eprintln!(
        "clean run {seconds:.2}s; {} kill points: {kills:#?}; {leftovers} temporary files left by SIGKILL, all ignored",
        kills.len()
    );
    assert!(kills.len() >= 14, "{kills:?}");
}

#[test]
fn ctrl_c_stops_with_exit_130_and_removes_temporary_files() {
    let src_proxy = FaultProxy::start(&source().host);
    let clean = Bed::new("sigint-clean", &src_proxy);
    clean.complete(&src_proxy);
    let (want, _) = clean.state();

    // alpine:3.18's base layer read once, half-way, for all three of its
    // targets: a tarball and a dir:// layer are being written from it.
    let bed = Bed::new("sigint", &src_proxy);
    let base = layers_of("alpine_3.18").remove(0);
    stall_reads_of(&src_proxy, &base);
    let mut child = bed.spawn(&src_proxy, "interrupted.log");
    assert_eq!(src_proxy.wait_for_stalls(1, Duration::from_secs(30)).len(), 1);
    wait_until_both_are_mid_write(&bed, "SIGINT half-way through the base layer");
    let (_, temps) = bed.state();
    assert!(temps.len() >= 2, "temporary files are being written: {temps:?}");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "occy did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    src_proxy.release();
    src_proxy.set_plan(none());
    let stderr = std::fs::read_to_string(bed.dir.join("interrupted.log")).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (_, temps_after) = bed.state();
    assert!(
        temps_after.is_empty(),
        "{} temporary files were being written, {temps_after:?} are left",
        temps.len()
    );
    bed.complete(&src_proxy);
    assert_eq!(bed.state().0, want);
    eprintln!(
        "SIGINT: {} temporary files in flight, all removed; exit 130",
        temps.len()
    );
}

/// After a crash nothing piles up: the temporaries a `kill -9` left beside
/// a sync's tarballs and in its `dir://` are swept by the next run (which
/// says at `-v` how much it reclaimed), while a live writer's temporary of
/// the same tarball — older than the sweep's minimum age, but locked by
/// its writer — is left alone, and that writer then completes.
#[test]
fn the_next_run_sweeps_what_a_kill_left_but_not_a_live_writers_files() {
    let src_proxy = FaultProxy::start(&source().host);
    let clean = Bed::new("sweep-clean", &src_proxy);
    clean.complete(&src_proxy);
    let (want, _) = clean.state();

    // A: killed while alpine:3.18's base layer, read once for all three of
    // its targets, is half-way (a tarball and a dir:// layer being written).
    let bed = Bed::new("sweep", &src_proxy);
    let base = layers_of("alpine_3.18").remove(0);
    stall_reads_of(&src_proxy, &base);
    let mut killed = bed.spawn(&src_proxy, "killed.log");
    assert_eq!(src_proxy.wait_for_stalls(1, Duration::from_secs(30)).len(), 1);
    wait_until_both_are_mid_write(&bed, "killed half-way through the base layer");
    killed.kill().unwrap();
    killed.wait().unwrap();
    src_proxy.release();
    let (_, left) = bed.state();
    assert!(
        left.len() >= 2,
        "a tarball and a dir:// layer were being written: {left:?}"
    );
    let left_bytes: u64 = left
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();

    // B: a live writer of the same tarball, held half-way through the same layer.
    let mut first = true;
    let digest = base.clone();
    src_proxy.set_plan(Box::new(move |r| {
        let hit = first && r.class == Class::BlobGet && r.path.ends_with(&digest);
        first &= !hit;
        hit.then_some(Fault::StallMidBody)
    }));
    let tarball = bed.out.join("alpine-3.18.tar");
    let b_log = bed.dir.join("live.log");
    let mut live = Command::new(occy_bin())
        .args(["-v", "--insecure-registry", &src_proxy.host, "process"])
        .arg(format!("registry://{}/lib/alpine:3.18", src_proxy.host))
        .arg(format!("tar://{}", tarball.display()))
        .env("HOME", scratch())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&b_log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        src_proxy.wait_for_stall(Duration::from_secs(30)).is_some(),
        "the live writer never reached the layer"
    );
    let (_, now) = bed.state();
    let live_temps: Vec<PathBuf> = now
        .iter()
        .filter(|p| {
            !left.contains(p)
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".alpine-3.18.tar.occy-tmp-")
        })
        .cloned()
        .collect();
    // The archive being written, and a layer spooled beside it.
    assert!(
        !live_temps.is_empty(),
        "the live writer's temporaries: {now:?} (left by the kill: {left:?})"
    );
    // Older than the sweep's minimum age: only its lock protects it now.
    std::thread::sleep(Duration::from_millis(2500));

    // C: the next sync run sweeps and completes.
    let out = bed.command(&src_proxy).arg("-v").output().unwrap();
    let c_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ok(&["sync", "-v"], out);
    for t in &live_temps {
        assert!(
            t.exists(),
            "the live writer's temporary {} was swept: {c_err}",
            t.display()
        );
    }
    let (_, after) = bed.state();
    let remaining: Vec<&PathBuf> = after.iter().filter(|p| left.contains(p)).collect();
    assert!(remaining.is_empty(), "left by the kill and not swept: {remaining:?}");
    let b_err_so_far = std::fs::read_to_string(&b_log).unwrap_or_default();
    assert!(
        format!("{c_err}{b_err_so_far}").contains("stale temporary"),
        "-v says what was reclaimed: {c_err}"
    );

    // B goes on and completes: its temporary was intact.
    src_proxy.release();
    src_proxy.set_plan(none());
    let status = live.wait().unwrap();
    let b_err = std::fs::read_to_string(&b_log).unwrap_or_default();
    assert!(status.success(), "the live writer failed: {b_err}");
    let (got, temps) = bed.state();
    assert!(temps.is_empty(), "{temps:?}");
    assert_eq!(got, want);
    eprintln!(
        "a kill left {} temporaries ({left_bytes} bytes); the next run swept them, the live writer's stayed",
        left.len()
    );
}

/// Sends SIGINT to `child` and waits for it to end (10 s at most).
fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "occy did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Files under `dir` whose names say they are temporaries (occy's beside
/// outputs, its spools in TMPDIR).
fn temporaries(dir: &std::path::Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            rel.split('/').any(|part| {
                part.contains(".occy-tmp-")
                    || part.starts_with(".tmp")
                    || part.starts_with("occy-layer-")
                    || part.starts_with("occy-")
            })
        })
        .collect()
}

/// Ctrl-C at any point of any command prints one line and exits 130, with
/// no panic and no temporary left: a filtered copy whose layer rewrite is
/// reading a stalled blob in a blocking thread (where the runtime's
/// shutdown used to panic), a sync of a filtered entry, and a full check
/// scanning a layer.
#[test]
fn ctrl_c_during_a_filtered_copy_a_sync_and_a_check_exits_130_cleanly() {
    let src_proxy = FaultProxy::start(&source().host);
    let base = layers_of("alpine_3.18").remove(0);
    let src = format!("registry://{}/lib/alpine:3.18", src_proxy.host);
    let dir = scratch_dir("sigint-commands");
    let out = dir.join("out");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let sync_file = dir.join("filtered.yaml");
    std::fs::write(
        &sync_file,
        format!(
            "version: 1\nregistries:\n  \"{h}\": {{ insecure: true }}\nsync:\n  - from: {src}\n    filters: [normalize-timestamps]\n    to: [\"tar://{o}/synced.tar\", \"oci://{o}/layout\", \"dir://{o}/dir?unique_names=true\"]\n",
            h = src_proxy.host,
            o = out.display()
        ),
    )
    .unwrap();
    let tar = format!("tar://{}/filtered.tar", out.display());
    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "a filtered copy",
            vec![
                "process".into(),
                src.clone(),
                tar,
                "-f".into(),
                "normalize-timestamps".into(),
            ],
        ),
        ("a sync", vec!["sync".into(), sync_file.display().to_string()]),
        ("a check", vec!["check".into(), src.clone()]),
    ];
    for (what, args) in runs {
        stall_reads_of(&src_proxy, &base);
        let log = dir.join(format!("{}.log", what.replace(' ', "-")));
        let mut child = Command::new(occy_bin())
            .args(["--insecure-registry", &src_proxy.host, "--cache-dir"])
            .arg(dir.join("cache"))
            .args(&args)
            .env("HOME", scratch())
            .env("TMPDIR", &tmp)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        assert!(
            src_proxy.wait_for_stall(Duration::from_secs(30)).is_some(),
            "{what}: never reached the layer"
        );
        // Let the blocking rewrite or scan start reading the stalled stream.
        std::thread::sleep(Duration::from_millis(300));
        let status = interrupt(&mut child);
        src_proxy.release();
        src_proxy.set_plan(none());
        let stderr = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(130), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(!stderr.contains("backtrace"), "{what}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors, ["error: interrupted"], "{what}: one line: {stderr}");
        let left = temporaries(&out)
            .into_iter()
            .chain(temporaries(&tmp))
            .collect::<Vec<_>>();
        assert!(left.is_empty(), "{what}: temporaries left: {left:?}");
        let made: Vec<PathBuf> = walk(&out);
        assert!(made.is_empty(), "{what}: an interrupted first write left {made:?}");
    }
}

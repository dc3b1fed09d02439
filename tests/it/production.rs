//! occy in production, against the real components: the image `./image.sh`
//! builds into the Docker Engine (without a network, twice to the same ID,
//! running as a non-root user); three containers of it, run as the pods of a
//! Kubernetes Indexed Job (`--network host`, `JOB_COMPLETION_INDEX`,
//! `--shard auto/3`), doing one sync between registries on 127.0.0.1, and
//! `occy report` of their reports; the service loop (`--every`, `--listen`)
//! scraped by a real Prometheus and read back through its query API, through
//! a moved tag, an invalid sync file and SIGTERM in the middle of a blob;
//! `promtool check metrics` on `/metrics` and on a `--metrics-file`.
//!
//! The image is built by `./image.sh` around the occy binary of this test
//! build (`OCCY_IMAGE_BINARY`, see docs/operations.md): the documented
//! default compiles a release build first, which CI would pay for again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fault_proxy::{docker_hub_quota, Class, Fault, FaultProxy};
use crate::support::*;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Docker Engine answers, or why not.
fn docker() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| format!("docker cannot be run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker version failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What `./image.sh` printed and did.
#[derive(Debug, Clone)]
struct Built {
    /// `sha256:…` of occy:latest.
    id: String,
    /// The image's size in bytes, as the Docker Engine counts it.
    size: u64,
    /// Whether the build ran without a network (`unshare --net`).
    offline: bool,
}

/// Runs `./image.sh` around this build's occy, without a network when
/// `unshare --net` is allowed here.
fn build_image() -> Built {
    let offline = Command::new("unshare")
        .args(["--net", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if offline {
        let mut c = Command::new("unshare");
        c.args(["--net", "./image.sh"]);
        c
    } else {
        Command::new("./image.sh")
    };
    let out = cmd
        .current_dir(repo_root())
        .env("OCCY_IMAGE_BINARY", occy_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "./image.sh failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = docker_out(&["image", "inspect", "--format", "{{.Id}} {{.Size}}", "occy:latest"]);
    let (id, size) = inspect.trim().split_once(' ').unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(id), "image.sh printed {printed}, the engine has {id}");
    Built {
        id: id.to_string(),
        size: size.parse().unwrap(),
        offline,
    }
}

/// The image, built once for the tests that run it.
fn image() -> Result<&'static Built, String> {
    docker()?;
    static BUILT: OnceLock<Built> = OnceLock::new();
    Ok(BUILT.get_or_init(build_image))
}

fn docker_out(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_image_builds_offline_to_the_same_id_and_runs_as_a_non_root_user() {
    let built = match image() {
        Ok(b) => b.clone(),
        Err(why) => return unavailable("the Docker Engine", &why),
    };
    if !built.offline {
        eprintln!("network isolation of ./image.sh: skipped (unshare --net is not permitted here)");
    }
    // Built again from the same source: the same image.
    let again = build_image();
    assert_eq!(again.id, built.id, "a second build gave another image ID");
    eprintln!(
        "occy image {} ({:.1} MiB, {} bytes)",
        built.id,
        built.size as f64 / 1048576.0,
        built.size
    );
    assert!(built.size < 40 * 1024 * 1024, "the image is {} bytes", built.size);
    assert_eq!(
        docker_out(&["image", "inspect", "--format", "{{.Id}}", &format!("occy:{VERSION}")]).trim(),
        built.id,
        "occy:{VERSION} is not occy:latest"
    );

    // What the config says: a non-root user, occy as the entrypoint, the labels.
    let config: Value = serde_json::from_str(&docker_out(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        "occy:latest",
    ]))
    .unwrap();
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/occy", "{config}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], VERSION, "{config}");
    for l in ["source", "revision"] {
        assert!(
            labels[format!("org.opencontainers.image.{l}")].is_string(),
            "no {l} label: {config}"
        );
    }

    // It runs: --version, and a copy whose output belongs to the image's user.
    let out = Command::new("docker")
        .args(["run", "--rm", "occy:latest", "--version"])
        .output()
        .unwrap();
    let host = ok(&["--version"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&host.stdout)
    );
    let dir = scratch_dir("image-run");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let quickstart = repo_root().join("examples/quickstart/image");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("{}:/src:ro", quickstart.display()),
            "-v",
            &format!("{}:/out", dir.display()),
            "occy:latest",
            "process",
            "oci:///src:1.0",
            "oci:///out/copy:1.0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join("copy/index.json")).unwrap());
    assert_eq!(owner, 65532, "the container wrote as uid {owner}, not occy's 65532");
}

/// The 12 images of the shard set in three families: alpine (5 sharing a
/// base), node (4 sharing a base) and tools (3 loners).
const SHARD_ENTRIES: [&str; 3] = [
    "  - from: registry://SRC/alpine/*\n    to: \"registry://DST/mirror/alpine/{name}\"\n",
    "  - from: registry://SRC/node/*\n    to: \"registry://DST/mirror/node/{name}\"\n",
    "  - from: registry://SRC/tools/*\n    to: \"registry://DST/mirror/tools/{name}\"\n",
];

fn shard_sync_file(dir: &Path, name: &str, src: &str, dst: &str) -> PathBuf {
    let text = format!(
        "version: 1\ndefaults:\n  image_parallel: 3\nregistries:\n  {src}: {{ insecure: true }}\n  {dst}: {{ insecure: true }}\nsync:\n{}",
        SHARD_ENTRIES.concat().replace("SRC", src).replace("DST", dst)
    );
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn totals(v: &Value) -> Vec<(&'static str, Value)> {
    [
        "written",
        "unchanged",
        "failed",
        "bytes",
        "layers_copied",
        "layers_mounted",
    ]
    .into_iter()
    .map(|k| (k, v[k].clone()))
    .collect()
}

#[test]
fn three_containers_of_the_image_sync_as_an_indexed_job_and_one_report_adds_them_up() {
    if let Err(why) = image() {
        return unavailable("the Docker Engine", &why);
    }
    let src = crate::shard::source();
    let dst = Registry::start_logged(Mode::Plain);
    let full = Registry::start(Mode::Plain);
    let dir = scratch_dir("indexed-job");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    shard_sync_file(&dir, "mirror.yaml", &src.host, &dst.host);
    let full_file = shard_sync_file(&dir, "full.yaml", &src.host, &full.host);

    // The pods: one container per index, at once, each writing its report
    // to a volume (and on stdout).
    let reports_dir = dir.join("reports");
    std::fs::create_dir(&reports_dir).unwrap();
    std::fs::set_permissions(&reports_dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pods: Vec<Child> = (0..3)
        .map(|i| {
            Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "host",
                    "-e",
                    &format!("JOB_COMPLETION_INDEX={i}"),
                    "-v",
                    &format!("{}:/config:ro", dir.display()),
                    "-v",
                    &format!("{}:/reports", reports_dir.display()),
                    "occy:latest",
                    "-O",
                    "json",
                    "--no-progress",
                    "sync",
                    "/config/mirror.yaml",
                    "--shard",
                    "auto/3",
                    "--report",
                    &format!("/reports/report-{i}.json"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut files = Vec::new();
    let mut reports = Vec::new();
    for (i, pod) in pods.into_iter().enumerate() {
        let out = pod.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "pod {i} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json_of(&out);
        assert_eq!(report["shard"]["index"], i, "{report}");
        assert_eq!(report["shard"]["count"], 3, "{report}");
        assert_eq!(report["failed"], 0, "{report}");
        // Every target that copied layers says how many bytes went to it.
        for t in report["targets"].as_array().unwrap() {
            let r = &t["report"];
            if r["layers_copied"].as_u64().unwrap_or(0) > 0 {
                assert!(r["bytes"].as_u64().unwrap() > 0, "copied layers, 0 bytes: {t}");
            }
        }
        let file = reports_dir.join(format!("report-{i}.json"));
        let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(written, report, "--report and stdout differ");
        files.push(file);
        reports.push(report);
    }

    // No blob went up twice; together they wrote what one process writes.
    let log = crate::shard::writes(&dst.access_log());
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (_, d) in &log.uploads {
        *times.entry(d.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "uploaded more than once: {twice:?}");
    assert!(!log.uploads.is_empty(), "no upload in the access log");
    let one = json_of(&assert_ok(
        &["sync", "full.yaml"],
        occy(&["-O", "json", "--no-progress", "sync", full_file.to_str().unwrap()]),
    ));
    assert_eq!(one["written"], 12, "{one}");
    let union = crate::shard::written_digests(&reports);
    assert_eq!(union.len(), 12);
    assert_eq!(union, crate::shard::written_digests(std::slice::from_ref(&one)));

    // One report of the three: the one process's totals.
    let names: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let mut args = vec!["-O", "json", "report"];
    args.extend(&names);
    let merged = json_of(&assert_ok(&args, occy(&args)));
    assert_eq!(merged["shards"], 3, "{merged}");
    assert_eq!(merged["missing"], serde_json::json!([]), "{merged}");
    assert_eq!(totals(&merged), totals(&one), "merged {merged}\none process {one}");
    let per_target: BTreeMap<String, u64> = merged["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["destination"].as_str().unwrap().to_string(),
                t["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_target.values().sum::<u64>(), one["bytes"].as_u64().unwrap());
    let mut text_args = vec!["report"];
    text_args.extend(&names);
    let text = String::from_utf8(assert_ok(&text_args, occy(&text_args)).stdout).unwrap();
    assert!(text.contains("12 written, 0 unchanged, 0 failed"), "{text}");
    assert!(text.contains("3 of 3 shards reported"), "{text}");

    // A pod that left no report: exit 1, naming its shard.
    std::fs::remove_file(&files[1]).unwrap();
    let args = ["report", names[0], names[2]];
    let stderr = assert_fails(&args, occy(&args), 1, "shard 1 of 3 has no report");
    assert!(stderr.contains("report-0.json"), "{stderr}");
    let args = ["report", names[0], names[1], names[2]];
    assert_fails(&args, occy(&args), 1, "report-1.json: cannot read this report");
}

/// A Prometheus server of the test's own, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: occy\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        reap_after_exit(&dir, Some(child.id()));
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The value of an instant query with one series, if it has one now.
    fn query(&self, expr: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-s", "-G", &format!("{}/api/v1/query", self.url), "--data-urlencode"])
            .arg(format!("query={expr}"))
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until the query's value satisfies `ok`; returns it.
    fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool, what: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(expr);
            if let Some(v) = last.filter(|v| ok(*v)) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus: {expr} never became {what} (last: {last:?})");
    }
}

/// `curl` status of a GET.
fn http_status(url: &str) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn http_body(url: &str) -> String {
    let out = Command::new("curl").args(["-s", "-f", url]).output().unwrap();
    assert!(out.status.success(), "GET {url} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen within {limit:?}");
}

/// `promtool check metrics` accepts `text`.
fn promtool_accepts(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused {what}:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// occy started as a service, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_occy(args: &[&str], cache: &Path) -> Child {
    Command::new(occy_bin())
        .args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env("OCCY_CACHE_DIR", cache)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits at most `limit` for the child to exit; its status and the time it took.
fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, start.elapsed())
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = std::io::Read::read_to_string(e, &mut s);
    }
    s
}

#[test]
fn the_service_loop_is_scraped_by_prometheus_through_a_moved_tag_and_a_broken_sync_file() {
    require("prometheus", "prometheus");
    require("promtool", "prometheus");
    require("curl", "curl");
    let src = Registry::start(Mode::Plain);
    let dst = Registry::start(Mode::Plain);
    let standard = &standard_images().0;
    src.push_layout(standard, "app-a", "svc/app:stable");
    src.push_layout(standard, "app-a", "svc/app:pinned");
    // The source announces a Docker Hub-style pull quota.
    let proxy = FaultProxy::start(&src.host);
    let remaining = Arc::new(AtomicU64::new(90));
    proxy.add_headers(docker_hub_quota(100, remaining.clone(), 21600));
    let dir = scratch_dir("service");
    let file = dir.join("mirror.yaml");
    let good = format!(
        "version: 1\nregistries:\n  {s}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\nsync:\n  - from: registry://{s}/svc/app:stable\n    to: registry://{d}/mirror/app:stable\n  - from: registry://{s}/svc/app:pinned\n    to: registry://{d}/mirror/app:pinned\n",
        s = proxy.host,
        d = dst.host
    );
    std::fs::write(&file, &good).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let prometheus = Prometheus::start(&listen);
    let mut service = Service(spawn_occy(
        &[
            "sync",
            file.to_str().unwrap(),
            "--every",
            "2s",
            "--listen",
            &listen,
            "--no-progress",
        ],
        &dir.join("cache"),
    ));

    // Round 1 writes both targets; Prometheus reads that back.
    wait_until("/readyz answering 200", Duration::from_secs(30), || {
        http_status(&format!("{base}/readyz")) == 200
    });
    assert_eq!(http_status(&format!("{base}/healthz")), 200);
    prometheus.wait_for("occy_targets_written_total", |v| v == 2.0, "2");
    let first_success = prometheus.wait_for("occy_last_success_timestamp_seconds", |v| v > 1.6e9, "a time");
    let digest = |tag: &str| dst.inspect(&format!("mirror/app:{tag}"), false)["Digest"].clone();
    assert_eq!(digest("stable"), generated("app-a").descriptor.digest.to_string());

    // The tag moves: the next round updates exactly that target.
    src.push_layout(standard, "app-b", "svc/app:stable");
    prometheus.wait_for("occy_targets_written_total", |v| v >= 3.0, "3");
    prometheus.wait_for(
        "occy_last_success_timestamp_seconds",
        |v| v > first_success,
        "later than the first round's",
    );
    assert_eq!(digest("stable"), generated("app-b").descriptor.digest.to_string());
    assert_eq!(digest("pinned"), generated("app-a").descriptor.digest.to_string());
    // Two more rounds: nothing else was, or is, written.
    let rounds = prometheus.wait_for("sum(occy_rounds_total)", |v| v >= 1.0, "counted");
    prometheus.wait_for("sum(occy_rounds_total)", |v| v >= rounds + 2.0, "two rounds more");
    assert_eq!(prometheus.query("occy_targets_written_total"), Some(3.0));
    assert_eq!(prometheus.query("occy_targets_failed_total"), Some(0.0));

    let metrics = http_body(&format!("{base}/metrics"));
    promtool_accepts(&metrics, "/metrics");
    for host in [&proxy.host, &dst.host] {
        assert!(
            metrics.contains(&format!(
                "occy_registry_requests_total{{host=\"{host}\",class=\"2xx\"}}"
            )),
            "{metrics}"
        );
    }
    // The quota as the source announced it last, through Prometheus.
    let quota = format!("occy_registry_pull_quota_remaining{{host=\"{}\"}}", proxy.host);
    let left = prometheus.wait_for(&quota, |v| v < 90.0, "below 90");
    assert!(left >= remaining.load(Ordering::SeqCst) as f64, "{left}");
    assert_eq!(
        prometheus.query(&format!("occy_registry_pull_quota_limit{{host=\"{}\"}}", proxy.host)),
        Some(100.0)
    );

    // An invalid sync file: not ready, counted, and the loop goes on serving.
    std::fs::write(&file, "version: 1\nsync: [\n").unwrap();
    wait_until("/readyz answering 503", Duration::from_secs(15), || {
        http_status(&format!("{base}/readyz")) == 503
    });
    assert_eq!(http_status(&format!("{base}/healthz")), 200);
    prometheus.wait_for("occy_sync_file_load_errors_total", |v| v >= 1.0, "1 or more");
    prometheus.wait_for("occy_sync_file_valid", |v| v == 0.0, "0");
    let successes = prometheus.wait_for("occy_rounds_total{result=\"success\"}", |v| v >= 1.0, "counted");

    // Fixed again: the next round succeeds.
    std::fs::write(&file, &good).unwrap();
    wait_until("/readyz answering 200 again", Duration::from_secs(15), || {
        http_status(&format!("{base}/readyz")) == 200
    });
    prometheus.wait_for("occy_rounds_total{result=\"success\"}", |v| v > successes, "one more");
    assert_eq!(prometheus.query("occy_sync_file_valid"), Some(1.0));

    // SIGTERM between rounds: exit 0 at once.
    sigterm(&service.0);
    let (code, took) = wait_exit(&mut service.0, Duration::from_secs(10));
    assert_eq!(code, Some(0), "after {took:?}: {}", stderr_of(&mut service.0));

    // A one-shot run's metrics file, for node_exporter.
    let prom = dir.join("textfile/occy.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let args = ["sync", file.to_str().unwrap(), "--metrics-file", prom.to_str().unwrap()];
    assert_ok(&args, occy(&args));
    let text = std::fs::read_to_string(&prom).unwrap();
    promtool_accepts(&text, "the --metrics-file output");
    assert!(text.contains("occy_targets{status=\"unchanged\"} 2"), "{text}");
    assert_eq!(std::fs::read_dir(prom.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn sigterm_in_the_middle_of_a_large_blob_exits_0_and_commits_no_tag() {
    let src = Registry::start(Mode::Plain);
    let dst = Registry::start(Mode::Plain);
    let dir = scratch_dir("sigterm");
    let layout = dir.join("layout");
    let big = occy_testkit::generate::big_image(
        24 * 1024 * 1024,
        occy_testkit::generate::LayerCompression::Gzip,
        occy_testkit::generate::Content::Random,
    );
    let written = occy_testkit::generate::write_layout(&layout, &big).unwrap();
    src.push_layout(&layout, &written[0].name, "big/app:1.0");
    // The big layer: the largest blob of the manifest.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(written[0].descriptor.digest.to_string().trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy = FaultProxy::with_plan(
        &src.host,
        Box::new(move |r| (r.class == Class::BlobGet && r.path.contains(&layer)).then_some(Fault::StallMidBody)),
    );
    let file = dir.join("mirror.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nregistries:\n  {p}: {{ insecure: true }}\n  {d}: {{ insecure: true }}\nsync:\n  - from: registry://{p}/big/app:1.0\n    to: registry://{d}/mirror/big:1.0\n",
            p = proxy.host,
            d = dst.host
        ),
    )
    .unwrap();
    let mut service = Service(spawn_occy(
        &["sync", file.to_str().unwrap(), "--every", "1h", "--no-progress"],
        &dir.join("cache"),
    ));
    let held = proxy.wait_for_stall(Duration::from_secs(60));
    assert!(held.is_some(), "the big layer was never fetched");

    sigterm(&service.0);
    let (code, took) = wait_exit(&mut service.0, Duration::from_secs(10));
    let stderr = stderr_of(&mut service.0);
    assert_eq!(code, Some(0), "exit after {took:?}: {stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("SIGTERM in the middle of a 24 MiB layer: exit 0 after {took:?}");
    proxy.release();

    // No tag, and no manifest, in the destination.
    let tags = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/mirror/big/manifests/1.0", dst.host))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tags.stdout), "404", "{stderr}");
}

#[test]
fn each_target_counts_the_bytes_that_went_to_its_own_destination() {
    // One source, two destinations: one fetch of each layer feeds both.
    let dir = scratch_dir("per-target-bytes");
    let file = dir.join("two.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nsync:\n  - from: {}\n    to:\n      - oci://{}/layout:app\n      - tar://{}/app.tar\n",
            standard_ref("app-a"),
            dir.display(),
            dir.display()
        ),
    )
    .unwrap();
    let args = ["-O", "json", "--no-cache", "sync", file.to_str().unwrap()];
    let report = json_of(&assert_ok(&args, occy(&args)));
    assert_eq!(report["written"], 2, "{report}");
    let targets = report["targets"].as_array().unwrap();
    let bytes: Vec<u64> = targets.iter().map(|t| t["report"]["bytes"].as_u64().unwrap()).collect();
    for t in targets {
        assert!(t["report"]["layers_copied"].as_u64().unwrap() > 0, "{t}");
    }
    assert!(
        bytes.iter().all(|b| *b > 0),
        "a target that got layers shows 0 bytes: {report}"
    );
    assert_eq!(bytes[0], bytes[1], "the same layers went to both: {report}");
    assert_eq!(report["bytes"].as_u64().unwrap(), bytes[0] + bytes[1], "{report}");
}

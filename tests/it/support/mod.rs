//! What the integration tests share: running the built `occy`, a scratch
//! directory and real Distribution registries (one per mode per test binary,
//! plain HTTP, htpasswd basic auth, or TLS with a private CA) that outlive no
//! test run, skopeo against them, and the deterministic images of
//! `occy_testkit::generate` written once per test binary.
//!
//! Processes and directories started here for the whole test binary are
//! reaped by a small watchdog shell that waits for the test process to exit.
#![allow(dead_code)]

pub mod containerd;
pub mod cosign;
pub mod fault_proxy;
pub mod layout_edit;
pub mod oci_tools;
pub mod outputs;
pub mod referrers_proxy;
pub mod sigstore;
pub mod token_service;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use occy_testkit::generate::Generated;
#[allow(unused_imports)] // not every test binary writes an OCI layout
pub use oci_tools::assert_oci_layout_readable;

pub const USER: &str = "occy";
pub const PASS: &str = "s3cret-pa55";

/// The built binary.
pub fn occy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_occy")
}

/// Panics with the install hint when `tool` is not on PATH (./test.sh installs all).
pub fn require(tool: &str, package: &str) {
    assert!(
        have(tool),
        "{tool} is missing: apt-get install {package} (./test.sh installs it)"
    );
}

/// Whether a missing component must fail the test: `OCCY_REQUIRE_ALL=1`,
/// which CI (`.ci/run`) sets.
pub fn require_all() -> bool {
    std::env::var("OCCY_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// A component a test needs (the Docker Engine, podman, umoci, skopeo,
/// docker-registry, a tool) is missing or cannot run here, for `why`. With
/// [`require_all`] the test fails saying so; otherwise it prints `SKIPPED`
/// and the caller returns. Never a silent pass.
pub fn unavailable(component: &str, why: &str) {
    if require_all() {
        panic!("{component} is required (OCCY_REQUIRE_ALL=1) but unavailable: {why}");
    }
    eprintln!("SKIPPED: {component} is unavailable: {why} (with OCCY_REQUIRE_ALL=1 this fails)");
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The ports of 127.0.0.1 this test binary has handed out.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Whether `port` was not handed out before (it is now).
fn claim(port: u16) -> bool {
    let mut given = GIVEN.lock().unwrap();
    if given.contains(&port) {
        return false;
    }
    given.push(port);
    true
}

/// A free port of 127.0.0.1 that no earlier call of this test binary
/// returned, nor any [`local_listener`]: a registry started later never
/// takes the address of one stopped before (or of a proxy occy wrote
/// through), so the blob locations occy remembers (in the cache shared by
/// the tests that pass no `--cache-dir`) never name a registry that is not
/// the one they were seen on.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if claim(port) {
            return port;
        }
    }
}

/// A listener on a port of 127.0.0.1 of its own, which [`free_port`] will
/// never hand out (for the proxies and stand-ins in front of registries:
/// a registry given a port a proxy had, that occy wrote through, would
/// inherit the blob locations remembered for it, and a test counting
/// uploads would see remembered mounts declined and uploaded instead).
pub fn local_listener() -> std::net::TcpListener {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        if claim(listener.local_addr().unwrap().port()) {
            return listener;
        }
    }
}

/// Removes `path` (and kills `pid`, if any) once this test process has exited.
pub fn reap_after_exit(path: &Path, pid: Option<u32>) {
    let kill = pid.map(|p| format!("kill {p} 2>/dev/null; ")).unwrap_or_default();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; {kill}sleep 1; rm -rf '{}'",
        path.display(),
        me = std::process::id()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// A directory for this test binary, removed after it exits.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("occy-test-").tempdir().unwrap().keep();
        reap_after_exit(&dir, None);
        dir
    })
}

/// A fresh subdirectory of [`scratch`].
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(scratch())
        .unwrap()
        .keep();
    d
}

/// The standard generated images, as one OCI layout written once per test binary.
pub fn standard_images() -> &'static (PathBuf, Vec<Generated>) {
    static SET: OnceLock<(PathBuf, Vec<Generated>)> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = scratch().join("standard-images");
        let generated = occy_testkit::generate::write_layout(&dir, &occy_testkit::generate::standard_set()).unwrap();
        (dir, generated)
    })
}

/// One generated image by name.
pub fn generated(name: &str) -> &'static Generated {
    standard_images()
        .1
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no generated image {name}"))
}

/// The tags (`org.opencontainers.image.ref.name`) of an OCI layout's
/// `index.json`, in its order.
pub fn layout_tags(layout: &Path) -> Vec<String> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(String::from)
        .collect()
}

/// `oci://LAYOUT:NAME` of a standard image.
pub fn standard_ref(name: &str) -> String {
    format!("oci://{}:{name}", standard_images().0.display())
}

/// Runs occy with `args`, in an environment without the user's credentials.
pub fn occy_with(flags: &[String], args: &[&str]) -> Output {
    Command::new(occy_bin())
        .args(flags)
        .args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .env_remove("OCCY_USERNAME")
        .env_remove("OCCY_PASSWORD")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OCCY_CACHE_DIR")
        .output()
        .unwrap()
}

pub fn occy(args: &[&str]) -> Output {
    occy_with(&[], args)
}

/// Asserts success and returns the output.
pub fn assert_ok(args: &[&str], out: Output) -> Output {
    assert!(
        out.status.success(),
        "occy {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn ok(args: &[&str]) -> Output {
    assert_ok(args, occy(args))
}

/// Runs and parses stdout as JSON (pass `-O json` in `args`).
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Asserts failure with `code` and a stderr mentioning `needle`; returns stderr.
pub fn assert_fails(args: &[&str], out: Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "occy {args:?}: expected exit {code}, stderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "occy {args:?}: stderr should mention {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    stderr
}

pub fn fails(args: &[&str], code: i32, needle: &str) -> String {
    assert_fails(args, occy(args), code, needle)
}

/// How a test registry is protected.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Plain,
    Basic,
    Tls,
}

/// A running Distribution registry.
pub struct Registry {
    child: Option<Child>,
    pub host: String,
    pub dir: PathBuf,
    pub mode: Mode,
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Registry {
    /// The registry of `mode` shared by every test of this binary.
    pub fn shared(mode: Mode) -> &'static Registry {
        static PLAIN: OnceLock<Registry> = OnceLock::new();
        static BASIC: OnceLock<Registry> = OnceLock::new();
        static TLS: OnceLock<Registry> = OnceLock::new();
        let cell = match mode {
            Mode::Plain => &PLAIN,
            Mode::Basic => &BASIC,
            Mode::Tls => &TLS,
        };
        cell.get_or_init(|| {
            let reg = Registry::start(mode);
            if let Some(child) = &reg.child {
                reap_after_exit(&reg.dir, Some(child.id()));
            }
            reg
        })
    }

    /// A registry of its own, stopped when dropped.
    pub fn start(mode: Mode) -> Registry {
        Registry::start_with(mode, "")
    }

    /// A registry of its own with extra lines for its `storage:` section
    /// (indented by two spaces), e.g. read-only maintenance mode.
    pub fn start_with(mode: Mode, storage_extra: &str) -> Registry {
        Registry::launch(mode, storage_extra, false)
    }

    /// A registry of its own that logs every request to [`Registry::access_log`].
    pub fn start_logged(mode: Mode) -> Registry {
        Registry::launch(mode, "", true)
    }

    /// The requests a registry from [`Registry::start_logged`] served so far,
    /// one line each (`"METHOD /v2/… HTTP/1.1" STATUS …`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    fn launch(mode: Mode, storage_extra: &str, access_log: bool) -> Registry {
        Registry::launch_auth(mode, storage_extra, access_log, String::new())
    }

    /// A logged plain-HTTP registry whose `auth:` section is `auth` (token
    /// auth, see [`token_service::TokenRegistry`]).
    fn launch_token(auth: &str) -> Registry {
        Registry::launch_auth(Mode::Plain, "", true, auth.to_string())
    }

    fn launch_auth(mode: Mode, storage_extra: &str, access_log: bool, mut auth: String) -> Registry {
        require("docker-registry", "docker-registry");
        let dir = scratch_dir(&format!("registry-{mode:?}").to_lowercase());
        let port = free_port();
        if mode == Mode::Basic {
            require("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd").args(["-Bbn", USER, PASS]).output().unwrap();
            std::fs::write(dir.join("htpasswd"), out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let mut tls = String::new();
        if mode == Mode::Tls {
            make_certs(&dir);
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("leaf.crt").display(),
                dir.join("key.pem").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n{storage_extra}http:\n  addr: 127.0.0.1:{port}\n{tls}{auth}",
            !access_log,
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        // The access log goes to stdout.
        let stdout = if access_log {
            Stdio::from(std::fs::File::create(dir.join("access.log")).unwrap())
        } else {
            Stdio::null()
        };
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry {
            child: Some(child),
            host: format!("127.0.0.1:{port}"),
            dir,
            mode,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            assert!(Instant::now() < deadline, "registry did not start on {}", reg.host);
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// `registry://HOST/repo`.
    pub fn url(&self, repo: &str) -> String {
        format!("registry://{}/{repo}", self.host)
    }

    /// Where the registry stores the blob `digest` (to corrupt it on purpose).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The global flags occy needs for this registry.
    pub fn occy_flags(&self) -> Vec<String> {
        match self.mode {
            Mode::Plain => vec!["--insecure-registry".into(), self.host.clone()],
            Mode::Basic => vec![
                "--insecure-registry".into(),
                self.host.clone(),
                "--username".into(),
                USER.into(),
                "--password".into(),
                PASS.into(),
            ],
            Mode::Tls => vec!["--cert-dir".into(), self.cert_dir().display().to_string()],
        }
    }

    /// Runs occy with this registry's flags.
    pub fn occy(&self, args: &[&str]) -> Output {
        occy_with(&self.occy_flags(), args)
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        assert_ok(args, self.occy(args))
    }

    /// Runs `skopeo SUBCOMMAND` with this registry's TLS and credential flags
    /// for the source (`dest == false`) or destination side.
    pub fn skopeo(&self, args: &[&str], dest: bool) -> Output {
        require("skopeo", "skopeo");
        let mut c = Command::new("skopeo");
        c.env("HOME", &self.dir)
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"));
        c.arg(args[0]);
        let side = if dest { "dest-" } else { "" };
        match self.mode {
            Mode::Plain => {
                c.arg(format!("--{side}tls-verify=false"));
            }
            Mode::Basic => {
                c.arg(format!("--{side}tls-verify=false"));
                c.arg(format!("--{side}creds={USER}:{PASS}"));
            }
            Mode::Tls => {
                c.arg(format!("--{side}cert-dir={}", self.cert_dir().display()));
            }
        }
        c.args(&args[1..]);
        c.output().unwrap()
    }

    /// Pushes `oci:LAYOUT:NAME` to `repo_tag` with skopeo, keeping digests and every platform.
    pub fn push_layout(&self, layout: &Path, name: &str, repo_tag: &str) {
        let out = self.skopeo(
            &[
                "copy",
                "--all",
                "--preserve-digests",
                &format!("oci:{}:{name}", layout.display()),
                &format!("docker://{}/{repo_tag}", self.host),
            ],
            true,
        );
        assert!(
            out.status.success(),
            "skopeo copy {name} -> {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes a standard generated image as `test/NAME:1.0`; returns its registry URL.
    pub fn push_standard(&self, name: &str) -> String {
        self.push_layout(&standard_images().0, name, &format!("test/{name}:1.0"));
        self.url(&format!("test/{name}:1.0"))
    }

    /// `skopeo inspect` (`--raw` when `raw`) of `repo_tag` on this registry.
    pub fn inspect(&self, repo_tag: &str, raw: bool) -> Value {
        let target = format!("docker://{}/{repo_tag}", self.host);
        let mut args = vec!["inspect"];
        if raw {
            args.push("--raw");
        }
        args.push(&target);
        let out = self.skopeo(&args, false);
        assert!(
            out.status.success(),
            "skopeo inspect {repo_tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A private CA and a leaf certificate for 127.0.0.1 signed by it (rustls
/// refuses a self-signed CA used as the server certificate); the CA goes to
/// `dir/certs/ca.crt` for `--cert-dir`.
/// Runs `openssl ARGS` in `dir`, failing the test with its stderr.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) {
    require("openssl", "openssl");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=occy-test-ca",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "certs/ca.crt",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "certs/ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "leaf.crt",
    ]);
}

/// `skopeo inspect` of a local transport (`oci:DIR:TAG`, `docker-archive:PATH`).
pub fn skopeo_inspect_local(target: &str, raw: bool) -> Value {
    require("skopeo", "skopeo");
    let mut c = Command::new("skopeo");
    c.arg("inspect");
    if raw {
        c.arg("--raw");
    }
    let out = c.arg(target).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts that every file under `blobs/sha256` of `dir` hashes to its name.
pub fn assert_blobs_match_names(dir: &Path) {
    use sha2::{Digest as _, Sha256};
    let blobs = dir.join("blobs/sha256");
    let mut n = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let entry = entry.unwrap();
        let mut f = std::fs::File::open(entry.path()).unwrap();
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).unwrap();
        assert_eq!(
            hex::encode(h.finalize()),
            entry.file_name().to_string_lossy(),
            "{}",
            entry.path().display()
        );
        n += 1;
    }
    assert!(n > 0, "no blobs in {}", blobs.display());
}

/// The platform image occy and skopeo pick by default on this host (amd64).
pub fn default_image(g: &Generated) -> &occy_testkit::generate::GeneratedImage {
    g.images
        .iter()
        .find(|i| i.platform.architecture == "amd64")
        .unwrap_or(&g.images[0])
}

/// The diff_ids of the image occy picks by default, as strings.
pub fn default_diff_ids(g: &Generated) -> Vec<String> {
    default_image(g).diff_ids.iter().map(|d| d.to_string()).collect()
}

/// `field` of every layer in `occy -O json info` output.
pub fn layer_field(info: &Value, field: &str) -> Vec<String> {
    info["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {info}"))
        .iter()
        .map(|l| {
            l[field]
                .as_str()
                .unwrap_or_else(|| panic!("layer without {field}: {l}"))
                .to_string()
        })
        .collect()
}

/// A JSON array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_else(|| panic!("not a string: {x}")).to_string())
        .collect()
}

/// A stand-in for quay.io's REST API: organisation `projectquay` with the
/// repositories `web` (tags latest, v1.0), `api` (latest) and `empty`.
pub fn fake_quay_api() -> String {
    let listener = local_listener();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
            let tag = |name: &str| format!(r#"{{"name":"{name}","start_ts":1700000000}}"#);
            let (status, body) = if path.starts_with("/api/v1/repository?namespace=projectquay") {
                (
                    "200 OK",
                    r#"{"repositories":[{"name":"web"},{"name":"api"},{"name":"empty"}]}"#.to_string(),
                )
            } else if path.starts_with("/api/v1/repository/projectquay/web/tag/") {
                (
                    "200 OK",
                    format!(
                        r#"{{"tags":[{},{}],"has_additional":false}}"#,
                        tag("latest"),
                        tag("v1.0")
                    ),
                )
            } else if path.starts_with("/api/v1/repository/projectquay/api/tag/") {
                (
                    "200 OK",
                    format!(r#"{{"tags":[{}],"has_additional":false}}"#, tag("latest")),
                )
            } else if path.starts_with("/api/v1/repository/projectquay/empty/tag/") {
                ("200 OK", r#"{"tags":[],"has_additional":false}"#.to_string())
            } else {
                ("404 Not Found", "{}".to_string())
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/api/v1")
}

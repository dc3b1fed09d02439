//! `occy process` and `occy info` from a real Distribution registry
//! (Debian's `docker-registry`, started here on a free 127.0.0.1 port) with
//! no auth, with htpasswd basic auth and with TLS: outputs keep digests and
//! agree with `skopeo inspect`; bad credentials, unknown tags and unreachable
//! hosts fail clearly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Basic,
    Tls,
}

const USER: &str = "occy";
const PASS: &str = "s3cret-pa55";

/// A registry process, killed on drop.
struct Registry {
    child: Child,
    host: String,
    dir: tempfile::TempDir,
    mode: Mode,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str, package: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        "{tool} is missing: apt-get install {package} (./test.sh installs it)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Registry {
    fn start(mode: Mode) -> Registry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut extra = String::new();
        if mode == Mode::Basic {
            require("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd").args(["-Bbn", USER, PASS]).output().unwrap();
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            extra = format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let mut tls = String::new();
        if mode == Mode::Tls {
            require("openssl", "openssl");
            let certs = dir.path().join("certs");
            std::fs::create_dir(&certs).unwrap();
            // A private CA and a leaf certificate for 127.0.0.1 signed by it
            // (rustls refuses a self-signed CA used as the server certificate).
            let d = dir.path();
            let run = |args: &[&str]| {
                let st = Command::new("openssl").current_dir(d).args(args).output().unwrap();
                assert!(
                    st.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
            };
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
                d.join("ext.cnf"),
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
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("leaf.crt").display(),
                dir.path().join("key.pem").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            host: format!("127.0.0.1:{port}"),
            dir,
            mode,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Flags occy needs for this registry.
    fn occy_flags(&self) -> Vec<String> {
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

    fn skopeo(&self, args: &[&str], dest: bool) -> Output {
        require("skopeo", "skopeo");
        let mut c = Command::new("skopeo");
        c.env("HOME", self.dir.path())
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
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

    fn push_example(&self, repo: &str) {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/image");
        let out = self.skopeo(
            &[
                "copy",
                "--all",
                "--preserve-digests",
                &format!("oci:{}:1.0", example.display()),
                &format!("docker://{}/{repo}", self.host),
            ],
            true,
        );
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn inspect(&self, repo: &str) -> Value {
        let out = self.skopeo(&["inspect", &format!("docker://{}/{repo}", self.host)], false);
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn occy(reg: &Registry, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_occy"))
        .args(reg.occy_flags())
        .args(args)
        .env("HOME", reg.dir.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn ok(reg: &Registry, args: &[&str]) -> Output {
    let out = occy(reg, args);
    assert!(
        out.status.success(),
        "occy {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn check_registry_to_files(mode: Mode) {
    let reg = Registry::start(mode);
    reg.push_example("library/quick:1.0");
    let src = format!("registry://{}/library/quick:1.0", reg.host);

    // info agrees with skopeo.
    let info: Value = serde_json::from_slice(&ok(&reg, &["-O", "json", "info", &src]).stdout).unwrap();
    let sk = reg.inspect("library/quick:1.0");
    assert_eq!(info["manifest_digest"], sk["Digest"]);
    let ours: Vec<&Value> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let theirs: Vec<&Value> = sk["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(ours, theirs);

    let t = tempfile::tempdir().unwrap();
    // → OCI layout keeps the digest.
    let oci = t.path().join("oci");
    ok(&reg, &["process", &src, &format!("oci://{}:1.0", oci.display())]);
    let copy: Value =
        serde_json::from_slice(&ok(&reg, &["-O", "json", "info", &format!("oci://{}:1.0", oci.display())]).stdout)
            .unwrap();
    assert_eq!(copy["manifest_digest"], sk["Digest"]);
    // → tar: loadable layout with the full repository name.
    let tar = t.path().join("img.tar");
    ok(&reg, &["process", &src, &format!("tar://{}", tar.display())]);
    let tinfo: Value =
        serde_json::from_slice(&ok(&reg, &["-O", "json", "info", &format!("tar://{}", tar.display())]).stdout).unwrap();
    assert_eq!(tinfo["image"], format!("{}/library/quick", reg.host));
    assert_eq!(tinfo["layers"].as_array().unwrap().len(), 2);
    // → dir.
    let dir = t.path().join("dir");
    ok(
        &reg,
        &["process", &src, &format!("dir://{}?unique_names=true", dir.display())],
    );
    assert!(dir.join("catalog.json").exists());
    // A second copy to the OCI layout moves no layer.
    let out = ok(
        &reg,
        &["-O", "json", "process", &src, &format!("oci://{}:1.0", oci.display())],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["layers_copied"], 0);
    assert_eq!(report["bytes"], 0);

    // Unknown tag: exit 1 naming it.
    let out = occy(&reg, &["info", &format!("registry://{}/library/quick:nope", reg.host)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn registry_without_auth() {
    check_registry_to_files(Mode::Plain);
}

#[test]
fn registry_with_basic_auth() {
    check_registry_to_files(Mode::Basic);
    // Wrong password: 401 named, password never printed.
    let reg = Registry::start(Mode::Basic);
    reg.push_example("x:1.0");
    let out = Command::new(env!("CARGO_BIN_EXE_occy"))
        .args([
            "--insecure-registry",
            &reg.host,
            "--username",
            USER,
            "--password",
            "wrong-password-xyz",
            "-vv",
            "info",
        ])
        .arg(format!("registry://{}/x:1.0", reg.host))
        .env("HOME", reg.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("wrong-password-xyz"), "password leaked: {stderr}");
    assert!(
        stderr.to_lowercase().contains("401") || stderr.to_lowercase().contains("credentials"),
        "{stderr}"
    );
}

#[test]
fn registry_with_tls() {
    check_registry_to_files(Mode::Tls);
    // Without the CA the certificate is refused.
    let reg = Registry::start(Mode::Tls);
    let out = Command::new(env!("CARGO_BIN_EXE_occy"))
        .args(["info", &format!("registry://{}/x:1.0", reg.host)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unreachable_registry_names_the_host() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_occy"))
        .args(["--retries", "0", "info", &format!("registry://127.0.0.1:{port}/x:1.0")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("127.0.0.1:{port}")));
}

//! `occy mirror-config` read by the real clients: podman pulls an upstream
//! name (`registry.example.test/team/app`, which does not resolve) through
//! the generated `registries.conf`, containerd (an instance of its own)
//! through the generated `hosts.toml` with `ctr image pull --hosts-dir`,
//! both getting it from the inside registry; the ImageDigestMirrorSet and
//! ImageTagMirrorSet parse back into the shape OpenShift documents; bad
//! input gets an error and nothing written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::containerd::Containerd;
use crate::support::*;

const UPSTREAM: &str = "registry.example.test/team/app";

/// The inside registry holding the standard multi-arch image as the mirror
/// of `registry.example.test/team/app:1.0` (under `mirrorcfg/team/app`),
/// and the sync file that says so; returns (sync file, index digest).
fn inside() -> &'static (PathBuf, String) {
    static SET: OnceLock<(PathBuf, String)> = OnceLock::new();
    SET.get_or_init(|| {
        let reg = Registry::shared(Mode::Plain);
        reg.push_layout(&standard_images().0, "multiarch", "mirrorcfg/team/app:1.0");
        let digest = generated("multiarch").descriptor.digest.to_string();
        let dir = scratch_dir("mirror-config");
        let file = dir.join("inside.yaml");
        std::fs::write(
            &file,
            format!(
                "version: 1\n\
                 defaults:\n  platforms: all\n\
                 registries:\n  \"{host}\": {{ insecure: true }}\n\
                 sync:\n\
                 \x20 - from: registry://{UPSTREAM}\n\
                 \x20   tags: [\"1.0\"]\n\
                 \x20   to: \"registry://{host}/mirrorcfg/{{repo}}\"\n\
                 \x20 - from: registry://other.example.test/team/renamed\n\
                 \x20   to: \"registry://{host}/mirrorcfg/{{repo}}:{{tag}}-inside\"\n",
                host = reg.host
            ),
        )
        .unwrap();
        (file, digest)
    })
}

fn generate(format: &str, out: &Path) -> String {
    let (file, _) = inside();
    let args = [
        "mirror-config",
        file.to_str().unwrap(),
        "--format",
        format,
        "-o",
        out.to_str().unwrap(),
    ];
    let o = assert_ok(&args, occy(&args));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn podman(root: &Path, conf: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("HOME", root)
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(short_runroot())
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// podman refuses a runroot longer than 50 characters: a short one in /tmp,
/// removed after the test binary exits.
fn short_runroot() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(format!("/tmp/occy-pm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        reap_after_exit(&dir, None);
        dir
    })
}

fn assert_success(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn podman_pulls_the_upstream_name_through_the_generated_registries_conf() {
    if !have("podman") {
        return unavailable("podman", "not installed (apt-get install podman)");
    }
    let (_, digest) = inside();
    let dir = scratch_dir("mirror-config-podman");
    let stderr = generate("registries.conf", &dir.join("conf.d"));
    let conf = dir.join("conf.d/occy-inside.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains(&format!("prefix = \"{UPSTREAM}\"")), "{text}");
    // The renamed tags are mirrored for digests only.
    assert!(text.contains("mirror-by-digest-only = true"), "{text}");
    assert!(!stderr.contains("left out"), "{stderr}");

    // The upstream is unreachable: podman gets the image from the mirror.
    let pulled = podman(&dir, &conf, &["pull", "-q", &format!("{UPSTREAM}@{digest}")]);
    assert_success("podman pull by digest", &pulled);
    let by_tag = podman(&dir, &conf, &["pull", "-q", &format!("{UPSTREAM}:1.0")]);
    assert_success("podman pull by tag", &by_tag);
    let inspect = podman(&dir, &conf, &["image", "inspect", &format!("{UPSTREAM}:1.0")]);
    assert_success("podman image inspect", &inspect);
    let info: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let digests = strings(&info[0]["RepoDigests"]);
    assert!(
        digests.iter().any(|d| d == &format!("{UPSTREAM}@{digest}")),
        "{digests:?}"
    );
    // Without the mirror configuration the same pull fails: the upstream is down.
    let plain = dir.join("empty.conf");
    std::fs::write(&plain, "").unwrap();
    let direct = podman(&dir, &plain, &["pull", "-q", &format!("{UPSTREAM}@{digest}")]);
    assert!(
        !direct.status.success(),
        "the upstream answered: the test proves nothing"
    );
}

#[test]
fn containerd_pulls_the_upstream_name_through_the_generated_hosts_toml() {
    let ctrd = match Containerd::shared() {
        Ok(c) => c,
        Err(why) => return unavailable("containerd", why),
    };
    let (_, digest) = inside();
    let dir = scratch_dir("mirror-config-containerd");
    let hosts = dir.join("certs.d");
    let stderr = generate("containerd", &hosts);
    let toml_text = std::fs::read_to_string(hosts.join("registry.example.test/hosts.toml")).unwrap();
    let parsed: toml::Table = toml_text.parse().unwrap();
    assert_eq!(parsed["server"].as_str(), Some("https://registry.example.test"));
    assert!(toml_text.contains("override_path = true"), "{toml_text}");
    assert!(!stderr.contains("left out"), "{stderr}");

    let hosts_dir = hosts.to_str().unwrap();
    let pull = |reference: &str| {
        ctrd.ctr(&[
            "image",
            "pull",
            "--hosts-dir",
            hosts_dir,
            "--snapshotter",
            "native",
            reference,
        ])
    };
    let by_digest = pull(&format!("{UPSTREAM}@{digest}"));
    assert_success("ctr image pull by digest", &by_digest);
    let by_tag = pull(&format!("{UPSTREAM}:1.0"));
    assert_success("ctr image pull by tag", &by_tag);
    let listed = ctrd.ctr(&["image", "ls"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.starts_with(&format!("{UPSTREAM}:1.0 ")))
        .unwrap_or_else(|| panic!("no {UPSTREAM}:1.0 in {listed}"));
    assert!(line.contains(digest.as_str()), "{line}");
    // The same pull without the hosts directory reaches for the upstream and fails.
    let direct = ctrd.ctr(&[
        "image",
        "pull",
        "--snapshotter",
        "native",
        &format!("{UPSTREAM}@{digest}"),
    ]);
    assert!(
        !direct.status.success(),
        "the upstream answered: the test proves nothing"
    );
}

#[test]
fn image_digest_and_tag_mirror_sets_have_the_documented_shape() {
    let dir = scratch_dir("mirror-config-openshift");
    let reg = Registry::shared(Mode::Plain);
    // OpenShift's pattern for a source or a mirror: host[:port]/repository.
    let name = regex::Regex::new(
        r"^((?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?/)?[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)$",
    )
    .unwrap();
    for (format, kind, list, file, sources) in [
        (
            "idms",
            "ImageDigestMirrorSet",
            "imageDigestMirrors",
            "occy-inside-idms.yaml",
            vec![UPSTREAM, "other.example.test/team/renamed"],
        ),
        // The renamed tags cannot be mirrored by tag.
        (
            "itms",
            "ImageTagMirrorSet",
            "imageTagMirrors",
            "occy-inside-itms.yaml",
            vec![UPSTREAM],
        ),
    ] {
        let stderr = generate(format, &dir);
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}\n{text}"));
        assert_eq!(doc["apiVersion"], "config.openshift.io/v1");
        assert_eq!(doc["kind"], kind);
        assert_eq!(doc["metadata"]["name"], "occy-inside");
        let keys: Vec<&String> = doc["spec"].as_object().unwrap().keys().collect();
        assert_eq!(keys, [list], "{text}");
        let entries = doc["spec"][list].as_array().unwrap();
        let got: Vec<&str> = entries.iter().map(|e| e["source"].as_str().unwrap()).collect();
        assert_eq!(got, sources, "{text}");
        for e in entries {
            for k in e.as_object().unwrap().keys() {
                assert!(
                    ["source", "mirrors", "mirrorSourcePolicy"].contains(&k.as_str()),
                    "{k} in {text}"
                );
            }
            let source = e["source"].as_str().unwrap();
            assert!(name.is_match(source), "{source}");
            let mirrors = strings(&e["mirrors"]);
            assert_eq!(mirrors.len(), 1, "{text}");
            assert!(name.is_match(&mirrors[0]), "{}", mirrors[0]);
            assert!(mirrors[0].starts_with(&format!("{}/mirrorcfg/", reg.host)), "{text}");
        }
        // The insecure mirror is named, since the set cannot say so.
        assert!(stderr.contains("insecureRegistries"), "{stderr}");
        if format == "itms" {
            assert!(
                stderr.contains("left out") && stderr.contains("renames tags"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn printing_matches_writing_and_bad_input_writes_nothing() {
    let (file, _) = inside();
    let file = file.to_str().unwrap();
    let dir = scratch_dir("mirror-config-cli");
    // Printed, the one file is the same as written.
    let printed = assert_ok(&[], occy(&["mirror-config", file, "--format", "registries.conf"]));
    generate("registries.conf", &dir);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        std::fs::read_to_string(dir.join("occy-inside.conf")).unwrap()
    );
    // -O json lists the files and what was left out.
    let json = json_of(&occy(&["-O", "json", "mirror-config", file, "--format", "itms"]));
    assert_eq!(json["files"][0]["path"], "occy-inside-itms.yaml");
    assert!(
        json["left_out"][0]["why"].as_str().unwrap().contains("renames tags"),
        "{json}"
    );

    let a_file = dir.join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    fails(
        &[
            "mirror-config",
            file,
            "--format",
            "containerd",
            "-o",
            a_file.to_str().unwrap(),
        ],
        2,
        "not a directory",
    );
    fails(&["mirror-config", file, "--format", "docker"], 2, "registries.conf");
    let missing = dir.join("missing.yaml");
    fails(
        &["mirror-config", missing.to_str().unwrap(), "--format", "idms"],
        2,
        "does not exist",
    );
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nsync:\n  - from: registry://a.test/x\n    to: \"registry://m.test/{rpeo}\"\n",
    )
    .unwrap();
    let err = fails(
        &[
            "mirror-config",
            bad.to_str().unwrap(),
            "--format",
            "idms",
            "-o",
            dir.join("bad-out").to_str().unwrap(),
        ],
        2,
        "{rpeo}",
    );
    assert!(err.contains("bad.yaml:4"), "{err}");
    assert!(!dir.join("bad-out").exists());
    // Nothing a runtime could use: exit 1, every entry named, nothing written.
    let files_only = dir.join("files.yaml");
    std::fs::write(
        &files_only,
        "version: 1\nsync:\n  - from: registry://a.test/x:1\n    filters: [normalize-timestamps]\n    to: \"registry://m.test/{repo}\"\n  - from: registry://a.test/y:1\n    to: oci:///srv/y\n",
    )
    .unwrap();
    let out_dir = dir.join("none");
    let err = fails(
        &[
            "mirror-config",
            files_only.to_str().unwrap(),
            "--format",
            "registries.conf",
            "-o",
            out_dir.to_str().unwrap(),
        ],
        1,
        "no mapping",
    );
    assert!(
        err.contains("sync[0]") && err.contains("filters rewrite layers"),
        "{err}"
    );
    assert!(err.contains("sync[1]") && err.contains("not a registry"), "{err}");
    assert!(!out_dir.exists());
}

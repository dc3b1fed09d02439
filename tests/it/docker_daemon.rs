//! `docker://` as a destination and a source, against the machine's Docker
//! Engine (`/var/run/docker.sock`) and against podman's Docker-compatible
//! service started here with a private store. Generated images go in with
//! `POST /images/load` and come back out with `GET /images/{name}/get`,
//! keeping their layers (diff_ids) and image IDs (config digests). A daemon
//! that is not there makes its test skip with a message, never pass silently.
//! Missing sockets, files that are not sockets, servers that are not a
//! Docker API and images the daemon lacks fail clearly. The check after
//! writing asks the daemon again: a tag moved to another image between the
//! write and the check fails it, naming the target and both image IDs.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{read_body, read_head};
use crate::support::*;

/// The images that go through each daemon: OCI and Docker v2 media types, a
/// multi-arch index (one platform is loaded), zstd and whiteout layers.
const IMAGES: [&str; 5] = ["app-a", "multiarch", "dockerv2", "zstd", "whiteouts"];

/// Whether a daemon answers on `socket` (a GET /_ping over the socket).
fn answers(socket: &Path) -> Result<(), String> {
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    if reply.starts_with("HTTP/1.") && reply.contains(" 200 ") {
        Ok(())
    } else {
        Err(format!("/_ping answered {:?}", reply.lines().next().unwrap_or("")))
    }
}

/// podman's Docker-compatible service with a private vfs store, started once
/// for this test binary, or why it could not start.
fn podman_service() -> &'static Result<PathBuf, String> {
    static SOCK: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SOCK.get_or_init(|| {
        if !have("podman") {
            return Err("podman is not installed (apt-get install podman)".into());
        }
        let dir = scratch_dir("podman-service");
        let sock = dir.join("podman.sock");
        let log = std::fs::File::create(dir.join("service.log")).map_err(|e| e.to_string())?;
        let child = Command::new("podman")
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
                "system",
                "service",
                "--time=0",
            ])
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run podman: {e}"))?;
        reap_after_exit(&dir, Some(child.id()));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if sock.exists() && answers(&sock).is_ok() {
                return Ok(sock);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
                return Err(format!("podman system service did not answer within 30 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// The machine's Docker Engine, or why it cannot be used.
fn docker_engine() -> Result<PathBuf, String> {
    let sock = PathBuf::from("/var/run/docker.sock");
    if !sock.exists() {
        return Err("/var/run/docker.sock does not exist (no Docker Engine on this machine)".into());
    }
    answers(&sock).map(|()| sock)
}

/// Every image in and out of the daemon on `socket`.
fn round_trip_through(socket: &Path, label: &str) {
    let out = scratch_dir(&format!("daemon-{label}"));
    for name in IMAGES {
        let g = generated(name);
        let want = default_diff_ids(g);
        let config = default_image(g).config.digest.to_string();
        let docker = format!("docker://occy-test/{label}-{name}:1.0?socket={}", socket.display());

        // In: the daemon holds the tag with our layers and image ID.
        ok(&["process", &standard_ref(name), &docker]);
        let info = json_of(&ok(&["-O", "json", "info", &docker]));
        assert_eq!(
            layer_field(&info, "diff_id"),
            want,
            "{label} {name}: layers in the daemon"
        );
        assert_eq!(info["config_digest"], config, "{label} {name}: image ID");
        assert_eq!(info["tag"], "1.0");
        // occy check reads the daemon's export like any other source.
        let report = json_of(&ok(&["-O", "json", "check", &docker]));
        assert_eq!(report["errors"], 0, "{label} {name}: {report:#}");

        // Out: to an OCI layout and a tar, same layers and config.
        let oci = format!("oci://{}:{name}", out.join("layout").display());
        ok(&["process", &docker, &oci]);
        // A manifest made up from the daemon's export: OCI, read by skopeo and umoci.
        assert_oci_layout_readable(&out.join("layout"), name, true);
        let back = json_of(&ok(&["-O", "json", "info", &oci]));
        assert_eq!(layer_field(&back, "diff_id"), want, "{label} {name}: layers exported");
        assert_eq!(back["config_digest"], config);
        let tar = out.join(format!("{name}.tar"));
        ok(&["process", &docker, &format!("tar://{}", tar.display())]);
        let sk = skopeo_inspect_local(&format!("docker-archive:{}", tar.display()), false);
        assert_eq!(
            sk["Layers"],
            serde_json::json!(want),
            "{label} {name}: skopeo reads the export"
        );
    }
    assert_blobs_match_names(&out.join("layout"));

    // The spools (export directory, load archive) are removed afterwards.
    let tmp = out.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let docker = format!("docker://occy-test/{label}-spool:1.0?socket={}", socket.display());
    for (src, dst) in [
        (standard_ref("app-a"), docker.clone()),
        (docker.clone(), format!("oci://{}:spool", out.join("layout").display())),
    ] {
        let run = Command::new(occy_bin())
            .args(["process", &src, &dst])
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert_ok(&["process", &src, &dst], run);
        if dst.starts_with("oci://") {
            assert_oci_layout_readable(&out.join("layout"), "spool", true);
        }
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

/// Removes the test's images from the machine's daemon.
fn forget_images(label: &str) {
    if have("docker") {
        let names: Vec<String> = IMAGES
            .iter()
            .chain(["spool"].iter())
            .map(|n| format!("occy-test/{label}-{n}:1.0"))
            .collect();
        let _ = Command::new("docker").arg("rmi").args(&names).output();
    }
}

#[test]
fn images_round_trip_through_the_docker_engine() {
    match docker_engine() {
        Ok(sock) => {
            round_trip_through(&sock, "docker");
            forget_images("docker");
        }
        Err(why) => unavailable("the Docker Engine", &why),
    }
}

#[test]
fn images_round_trip_through_podman_service() {
    match podman_service() {
        Ok(sock) => round_trip_through(sock, "podman"),
        Err(why) => unavailable("podman's Docker API service", why),
    }
}

/// podman's service, else the machine's Engine; None (the test skips, saying
/// why) when neither answers.
fn any_daemon() -> Option<PathBuf> {
    match (podman_service(), docker_engine()) {
        (Ok(s), _) => Some(s.clone()),
        (_, Ok(s)) => Some(s),
        (Err(a), Err(b)) => {
            unavailable("a daemon (podman or the Docker Engine)", &format!("{a}; {b}"));
            None
        }
    }
}

#[test]
fn an_image_the_daemon_lacks_is_named() {
    let Some(sock) = any_daemon() else { return };
    let out = scratch_dir("lacks");
    let args = [
        "process",
        &format!("docker://occy-test/never-loaded:9.9?socket={}", sock.display()),
        &format!("tar://{}", out.join("x.tar").display()),
    ];
    assert_fails(&args, occy(&args), 1, "occy-test/never-loaded:9.9");
    assert!(!out.join("x.tar").exists());
}

#[test]
fn sockets_that_are_missing_or_not_a_docker_api_fail_clearly() {
    let dir = scratch_dir("sockets");
    let missing = dir.join("missing.sock");
    let src = standard_ref("base");
    let args = ["process", &src, &format!("docker://x:1?socket={}", missing.display())];
    assert_fails(&args, occy(&args), 1, &missing.display().to_string());

    let file = dir.join("file.sock");
    std::fs::write(&file, b"").unwrap();
    let args = ["info", &format!("docker://x:1?socket={}", file.display())];
    assert_fails(&args, occy(&args), 1, "not a unix socket");

    // A socket whose server speaks HTTP but is no Docker API.
    let fake = dir.join("fake.sock");
    let listener = UnixListener::bind(&fake).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ =
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n");
        }
    });
    let args = ["info", &format!("docker://x:1?socket={}", fake.display())];
    assert_fails(&args, occy(&args), 1, "does not answer as a Docker Engine API");

    // DOCKER_HOST that is not a unix socket: a usage error.
    let out = Command::new(occy_bin())
        .args(["info", "docker://x:1"])
        .env("DOCKER_HOST", "tcp://127.0.0.1:2375")
        .output()
        .unwrap();
    assert_fails(&["info", "docker://x:1"], out, 2, "DOCKER_HOST");
}

#[test]
fn a_sync_to_a_daemon_is_unchanged_once_the_daemon_holds_the_image() {
    let Some(sock) = any_daemon() else { return };
    let dir = scratch_dir("daemon-sync");
    let file = dir.join("to-daemon.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nsync:\n  - from: {}\n    to: docker://occy-test/synced:1.0?socket={}\n",
            standard_ref("app-a"),
            sock.display()
        ),
    )
    .unwrap();
    let plan = |name: &str| {
        let args = [
            "sync",
            file.to_str().unwrap(),
            "--plan",
            "--detailed-exitcode",
            "-O",
            "json",
        ];
        let out = occy(&args);
        let p = json_of(&out);
        (
            out.status.code(),
            p["targets"][0]["action"].as_str().unwrap_or(name).to_string(),
            p,
        )
    };
    if sock == Path::new("/var/run/docker.sock") {
        // The machine's daemon is shared: start from its not holding the image.
        let _ = Command::new("docker").args(["rmi", "occy-test/synced:1.0"]).output();
    }
    let (code, action, p) = plan("?");
    assert_eq!((code, action.as_str()), (Some(3), "create"), "{p}");
    let args = ["sync", file.to_str().unwrap()];
    assert_ok(&args, occy(&args));
    let (code, action, p) = plan("?");
    assert_eq!((code, action.as_str()), (Some(0), "unchanged"), "{p}");
    assert_eq!(
        p["targets"][0]["current"],
        default_image(generated("app-a")).config.digest.to_string(),
        "compared by image ID: {p}"
    );
}

/// `docker image inspect NAME`'s `Id` and `RepoTags`.
fn docker_inspect(name: &str) -> (String, Vec<String>) {
    let out = Command::new("docker")
        .args(["image", "inspect", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker image inspect {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v[0]["Id"].as_str().unwrap_or_default().to_string(),
        strings(&v[0]["RepoTags"]),
    )
}

/// Docker names with a registry host and port, as users name images pulled
/// from a private registry: `docker://127.0.0.1:5000/team/app:1.0` read
/// (an image `docker build` made under that name; no registry involved) and
/// written (then `docker image inspect` finds it), `localhost:5000/…`
/// without a tag meaning `latest`, and `…@sha256:…` as a source once the
/// daemon knows the image by its registry digest. A digest as a daemon
/// destination is refused: `docker load` tags, it cannot pin.
#[test]
fn docker_names_with_a_registry_host_and_port() {
    if let Err(why) = docker_engine() {
        return unavailable("the Docker Engine", &why);
    }
    let dir = scratch_dir("docker-ports");
    let src_name = "127.0.0.1:5000/team/occy-port-src:1.0";
    let dst_name = "127.0.0.1:5000/team/occy-port-dst:1.0";
    let latest_name = "localhost:5000/occy-port-latest";
    let _ = Command::new("docker")
        .args(["rmi", "-f", src_name, dst_name, &format!("{latest_name}:latest")])
        .output();

    // A source that `docker build` named with a host and port.
    std::fs::write(dir.join("hello.txt"), "hello from a port-named image\n").unwrap();
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY hello.txt /hello.txt\n").unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", src_name])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let (src_id, _) = docker_inspect(src_name);
    let src = format!("docker://{src_name}");
    let layout = format!("oci://{}:port", dir.join("layout").display());
    ok(&["process", &src, &layout]);
    assert_oci_layout_readable(&dir.join("layout"), "port", true);
    let back = json_of(&ok(&["-O", "json", "info", &layout]));
    assert_eq!(back["config_digest"], src_id, "the image read is the one built");
    let info = json_of(&ok(&["-O", "json", "info", &src]));
    assert_eq!(info["config_digest"], src_id);

    // A destination with a host and port: the daemon holds it under that name.
    let app = generated("app-a");
    let config = default_image(app).config.digest.to_string();
    ok(&["process", &standard_ref("app-a"), &format!("docker://{dst_name}")]);
    let (id, tags) = docker_inspect(dst_name);
    assert_eq!(id, config, "image ID of {dst_name}");
    assert!(tags.iter().any(|t| t == dst_name), "{tags:?}");
    ok(&["process", &standard_ref("app-a"), &format!("docker://{latest_name}")]);
    let (id, tags) = docker_inspect(&format!("{latest_name}:latest"));
    assert_eq!(id, config);
    assert!(tags.iter().any(|t| t == &format!("{latest_name}:latest")), "{tags:?}");

    // By digest: push the built image to a registry on 127.0.0.1 (which
    // Docker trusts over plain HTTP), pull it back by digest, read it so.
    let reg = Registry::shared(Mode::Plain);
    let pushed = format!("{}/team/occy-port-digest", reg.host);
    reg.ok(&["process", &src, &format!("registry://{pushed}:1.0")]);
    let manifest = reg.inspect("team/occy-port-digest:1.0", false);
    let digest = manifest["Digest"].as_str().unwrap().to_string();
    let by_digest = format!("{pushed}@{digest}");
    let pulled = Command::new("docker")
        .args(["pull", "-q", &by_digest])
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "docker pull {by_digest}: {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let from_digest = format!("oci://{}:by-digest", dir.join("layout").display());
    ok(&["process", &format!("docker://{by_digest}"), &from_digest]);
    assert_oci_layout_readable(&dir.join("layout"), "by-digest", true);
    let back = json_of(&ok(&["-O", "json", "info", &from_digest]));
    assert_eq!(back["config_digest"], src_id, "read by digest");

    // A digest cannot name what a daemon loads.
    let args = [
        "process",
        &standard_ref("app-a"),
        &format!("docker://{dst_name}@{digest}"),
    ];
    assert_fails(&args, occy(&args), 2, "write docker://NAME:TAG");

    let _ = Command::new("docker")
        .args([
            "rmi",
            "-f",
            src_name,
            dst_name,
            &format!("{latest_name}:latest"),
            &by_digest,
        ])
        .output();
}

/// A unix socket in `dir` in front of the daemon at `upstream`, passing each
/// request on (one per connection). After the first inspect of `image` that
/// follows an image load (the sink's own check that the load took), it tags
/// `other` as `image` in the daemon and only then answers: what occy checks
/// next, after writing, is another image under the same tag.
fn retagging_proxy(upstream: &Path, dir: &Path, other: &str, image: &str) -> PathBuf {
    let sock = dir.join("retag.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (upstream, other, image) = (upstream.to_path_buf(), other.to_string(), image.to_string());
    std::thread::spawn(move || {
        let mut loaded = false;
        let mut retagged = false;
        for conn in listener.incoming().flatten() {
            let Ok(reader_side) = conn.try_clone() else { continue };
            let mut reader = std::io::BufReader::new(reader_side);
            let Some(head) = read_head(&mut reader) else { continue };
            let Some(body) = read_body(&mut reader, &head, false) else {
                continue;
            };
            let mut parts = head.first_line.split(' ');
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let Ok(mut up) = std::os::unix::net::UnixStream::connect(&upstream) else {
                continue;
            };
            let len = (!body.is_empty() || method == "POST" || method == "PUT").then_some(body.len());
            if up.write_all(&head.render(len)).is_err() || up.write_all(&body).is_err() {
                continue;
            }
            let mut up_reader = std::io::BufReader::new(up);
            let Some(resp) = read_head(&mut up_reader) else {
                continue;
            };
            let status = resp.first_line.split(' ').nth(1).unwrap_or("");
            let no_body = method == "HEAD" || status == "204" || status == "304";
            let resp_body = if no_body {
                Vec::new()
            } else {
                read_body(&mut up_reader, &resp, true).unwrap_or_default()
            };
            if path.contains("/images/load") {
                loaded = true;
            } else if loaded && !retagged && method == "GET" && path.ends_with(&format!("/images/{image}/json")) {
                retagged = true;
                let tag = Command::new("docker").args(["tag", &other, &image]).output().unwrap();
                assert!(tag.status.success(), "{}", String::from_utf8_lossy(&tag.stderr));
            }
            let mut conn = conn;
            let _ = conn.write_all(&resp.render(if no_body { None } else { Some(resp_body.len()) }));
            let _ = conn.write_all(&resp_body);
        }
    });
    sock
}

#[test]
fn a_daemon_tag_moved_to_another_image_after_writing_fails_the_check() {
    let sock = match docker_engine() {
        Ok(s) => s,
        Err(why) => return unavailable("the Docker Engine", &why),
    };
    let dir = scratch_dir("daemon-retag");
    let (image, other) = ("occy-test/retag:1.0", "occy-test/retag-other:1.0");
    let _ = Command::new("docker").args(["rmi", image, other]).output();
    ok(&[
        "process",
        &standard_ref("app-b"),
        &format!("docker://{other}?socket={}", sock.display()),
    ]);
    let written = default_image(generated("app-a")).config.digest.to_string();
    let moved_to = default_image(generated("app-b")).config.digest.to_string();

    // Written and checked with nothing in between: the check passes.
    let direct = format!("docker://{image}?socket={}", sock.display());
    let report = json_of(&ok(&[
        "-O",
        "json",
        "process",
        &standard_ref("app-a"),
        &direct,
        "--verify-full",
    ]));
    assert_eq!(report["check"], "full: ok", "{report:#}");

    // The tag moves to another image between the write and the check.
    let _ = Command::new("docker").args(["rmi", image]).output();
    let proxy = retagging_proxy(&sock, &dir, other, image);
    let dst = format!("docker://{image}?socket={}", proxy.display());
    let args = ["process", &standard_ref("app-a"), &dst];
    let stderr = assert_fails(&args, occy(&args), 1, "[daemon-image]");
    assert!(stderr.contains(image), "names the target: {stderr}");
    assert!(
        stderr.contains(&moved_to) && stderr.contains(&written),
        "names both image IDs: {stderr}"
    );
    let _ = Command::new("docker").args(["rmi", image, other]).output();
}

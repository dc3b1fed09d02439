//! Across the air gap (issue 31): transfer archives (`archive:///DIR`)
//! written from a real Distribution registry outside and restored into
//! another inside. Export of three images (one signed, one multi-arch) into
//! checksummed volumes, read back by skopeo and umoci once unpacked, and
//! restored by name with their signatures; an incremental second archive
//! that leaves out what the first carried (and says so in the plan); an
//! incremental archive refused where its base was never imported; a
//! flipped byte, a missing volume, edited records; a killed export and a
//! killed import run again; the examples/airgap-*.yaml pair.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cosign::{http_get, http_manifest_digest, keypair, sig_tag, sign_image};
use crate::support::oci_tools::assert_oci_layout_readable;
use crate::support::*;

/// occy with `--insecure-registry` for each registry.
fn occy_regs(regs: &[&Registry], args: &[&str]) -> Output {
    let mut all: Vec<String> = Vec::new();
    for r in regs {
        all.push("--insecure-registry".into());
        all.push(r.host.clone());
    }
    occy_with(&all, args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok_regs(regs: &[&Registry], args: &[&str]) -> Output {
    let out = occy_regs(regs, args);
    assert!(out.status.success(), "occy {args:?} failed:\n{}", text(&out));
    out
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// The volumes of an archive, in order.
fn volumes(archive: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    v.sort();
    v
}

/// The digest of `repo:tag` on `reg`, read back with skopeo (the sha256
/// of the manifest bytes `skopeo inspect --raw` returns).
fn skopeo_digest(reg: &Registry, repo_tag: &str) -> String {
    let out = reg.skopeo(
        &["inspect", "--raw", &format!("docker://{}/{repo_tag}", reg.host)],
        false,
    );
    assert!(
        out.status.success(),
        "{repo_tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    crate::support::cosign::sha256(&out.stdout)
}

fn record(archive: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(archive.join("record.json")).unwrap()).unwrap()
}

fn catalog(reg: &Registry) -> Value {
    serde_json::from_slice(&http_get(&reg.host, "_catalog")).unwrap()
}

/// The tags of `repo` on `reg` (none when the repository does not exist).
fn tags(reg: &Registry, repo: &str) -> Vec<String> {
    require("curl", "curl");
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/v2/{repo}/tags/list", reg.host)])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["tags"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Unpacks the volumes of `archive` (concatenated) into `into` with tar.
fn unpack(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let cat: Vec<String> = volumes(archive).iter().map(|p| p.display().to_string()).collect();
    let st = Command::new("sh")
        .args(["-c", &format!("cat {} | tar -x -C {}", cat.join(" "), into.display())])
        .status()
        .unwrap();
    assert!(st.success());
}

fn outside_file(dir: &Path, outside: &Registry, media: &Path, volume: &str) -> String {
    write(
        dir,
        "outside.yaml",
        &format!(
            "version: 1\ndefaults:\n  platforms: all\nsync:\n  - from: registry://{}/team/*\n    to: archive://{}?volume_size={volume}\n",
            outside.host,
            media.display()
        ),
    )
}

fn inside_file(dir: &Path, name: &str, from: &Path, inside: &Registry) -> String {
    write(
        dir,
        name,
        &format!(
            "version: 1\ndefaults:\n  platforms: all\nsync:\n  - from: archive://{}\n    to: registry://{}/{{repo}}\n",
            from.display(),
            inside.host
        ),
    )
}

#[test]
fn an_export_in_volumes_restores_every_name_and_the_next_one_carries_only_what_is_new() {
    let dir = scratch_dir("airgap-main");
    let outside = Registry::start(Mode::Plain);
    let inside = Registry::start(Mode::Plain);
    let standard = &standard_images().0;
    outside.push_layout(standard, "app-a", "team/app:1.0");
    outside.push_layout(standard, "multiarch", "team/multi:1.0");
    outside.push_layout(standard, "zstd", "team/zstd:1.0");
    let app10 = http_manifest_digest(&outside.host, "team/app", "1.0");
    // An OCI 1.1 SBOM of the multi-arch index, listed under its referrers tag.
    let multi10 = http_manifest_digest(&outside.host, "team/multi", "1.0");
    let c = crate::referrers::client(&outside.host);
    let rt = crate::referrers::rt();
    let index = rt.block_on(c.get_manifest("team/multi", &multi10)).unwrap();
    let sbom = rt.block_on(crate::referrers::push_sbom(
        &c,
        "team/multi",
        &index.descriptor(),
        "multi",
    ));
    rt.block_on(crate::referrers::push_referrers_tag(
        &c,
        "team/multi",
        &index.digest,
        &[&sbom],
    ));
    let key = keypair(&dir, "cosign");
    sign_image(&outside, "team/app", &app10, &key);
    let sig = sig_tag(&app10);

    let media = dir.join("media");
    let out_file = outside_file(&dir, &outside, &media, "16KiB");
    let plan = ok_regs(&[&outside], &["sync", &out_file, "--plan"]);
    let plan = text(&plan);
    assert!(
        plan.contains(&format!("writes archive {}/0001", media.display()))
            && plan.contains("volume(s) of at most 16.0 KiB"),
        "{plan}"
    );
    ok_regs(&[&outside], &["sync", &out_file]);
    let a1 = media.join("0001");
    let vols = volumes(&a1);
    assert!(vols.len() >= 3, "{vols:?}");
    for v in &vols {
        assert!(std::fs::metadata(v).unwrap().len() <= 16 * 1024, "{}", v.display());
    }
    // sha256sum checks the archive as occy does.
    let st = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&a1)
        .status()
        .unwrap();
    assert!(st.success());
    let r1 = record(&a1);
    assert_eq!(r1["images"].as_array().unwrap().len(), 3, "{r1:#}");
    assert!(
        r1["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tag"] == sig.as_str() && r["subject"] == app10.as_str()),
        "{r1:#}"
    );
    assert!(
        r1["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["digest"] == sbom.digest.as_str() && r["subject"] == multi10.as_str()),
        "{r1:#}"
    );
    let app = r1["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repo"] == "team/app")
        .unwrap();
    assert_eq!(
        (app["registry"].as_str(), app["tag"].as_str()),
        (Some(outside.host.as_str()), Some("1.0"))
    );

    // skopeo and umoci read the OCI layout inside the unpacked volumes.
    require("skopeo", "skopeo");
    let un = dir.join("unpacked");
    unpack(&a1, &un);
    for (repo, image) in [("app", "app-a"), ("multi", "multiarch"), ("zstd", "zstd")] {
        let tag = format!("{}_team_{repo}_1.0", outside.host.replace(':', "_"));
        let raw = Command::new("skopeo")
            .args(["inspect", "--raw", &format!("oci:{}:{tag}", un.display())])
            .output()
            .unwrap();
        assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
        assert_eq!(
            crate::support::cosign::sha256(&raw.stdout),
            http_manifest_digest(&outside.host, &format!("team/{repo}"), "1.0"),
            "{image}"
        );
        if repo != "zstd" {
            assert_oci_layout_readable(&un, &tag, true);
        }
    }

    // Inside: every name, digest and signature restored, no tag listed.
    let in_file = inside_file(&dir, "inside.yaml", &media, &inside);
    ok_regs(&[&inside], &["sync", &in_file]);
    for repo in ["app", "multi", "zstd"] {
        let repo_tag = format!("team/{repo}:1.0");
        assert_eq!(
            skopeo_digest(&inside, &repo_tag),
            skopeo_digest(&outside, &repo_tag),
            "{repo_tag}"
        );
    }
    assert_eq!(
        skopeo_digest(&inside, &format!("team/app:{sig}")),
        skopeo_digest(&outside, &format!("team/app:{sig}"))
    );
    // The SBOM arrived with its bytes, listed under the index's referrers tag.
    let ic = crate::referrers::client(&inside.host);
    let got = rt
        .block_on(ic.get_manifest("team/multi", sbom.digest.as_str()))
        .unwrap();
    assert_eq!(got.bytes, sbom.bytes);
    let listed = rt
        .block_on(ic.get_manifest("team/multi", &occy::image::referrers::fallback_tag(&index.digest)))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.bytes).contains(sbom.digest.as_str()),
        "{}",
        String::from_utf8_lossy(&listed.bytes)
    );

    // A new tag sharing the base layer: the next archive carries only it.
    outside.push_layout(standard, "app-b", "team/app:1.1");
    let plan = text(&ok_regs(&[&outside], &["sync", &out_file, "--plan"]));
    assert!(
        plan.contains("already carried by archive 0001, left out")
            && plan.contains(&format!("writes archive {}/0002", media.display())),
        "{plan}"
    );
    ok_regs(&[&outside], &["sync", &out_file]);
    let a2 = media.join("0002");
    let r2 = record(&a2);
    assert_eq!(r2["depends_on"], serde_json::json!(["0001"]));
    let carried: Vec<&str> = r1["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    let manifest: Value = serde_json::from_slice(&http_get(&outside.host, "team/app/manifests/1.1")).unwrap();
    let manifest_len = http_get(&outside.host, "team/app/manifests/1.1").len() as u64;
    let mut new_bytes = manifest_len;
    for b in manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&manifest["config"]])
    {
        if !carried.contains(&b["digest"].as_str().unwrap()) {
            new_bytes += b["size"].as_u64().unwrap();
        }
    }
    let a2_bytes: u64 = volumes(&a2).iter().map(|v| std::fs::metadata(v).unwrap().len()).sum();
    eprintln!(
        "archive 0001: {} volumes; archive 0002: {a2_bytes} bytes in {} volumes for {new_bytes} bytes of new blobs and manifest",
        vols.len(),
        volumes(&a2).len()
    );
    assert!(
        a2_bytes <= new_bytes + 64 * 1024,
        "archive 0002 is {a2_bytes} bytes; the new tag's new blobs and manifest are {new_bytes}"
    );
    // Run again: nothing new, no archive.
    let again = text(&ok_regs(&[&outside], &["sync", &out_file]));
    assert!(again.contains("nothing new to carry"), "{again}");
    assert!(!media.join("0003").exists());

    // 0002 alone, into a registry that never got 0001: refused before any write.
    let fresh = Registry::start(Mode::Plain);
    let only2 = inside_file(&dir, "only2.yaml", &a2, &fresh);
    let out = occy_regs(&[&fresh], &["sync", &only2]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("archive 0001"), "{}", text(&out));
    assert_eq!(catalog(&fresh)["repositories"], serde_json::json!([]));

    // --only picks images of an archive by their source names.
    let only = json_of(&occy_regs(
        &[&inside],
        &["sync", &in_file, "--plan", "-O", "json", "--only", "*team/app:1.1*"],
    ));
    let sources: Vec<&str> = only["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert!(
        sources[0].starts_with(&format!("archive://{} (0002: ", media.display())),
        "{sources:?}"
    );

    // `tags:` and `verify:` work as on any source: only the signed 1.0 of
    // team/app is taken; the unsigned images are refused (exit 1).
    let filtered = write(
        &dir,
        "filtered.yaml",
        &format!(
            "version: 1\ndefaults:\n  platforms: all\nsync:\n  - from: archive://{}\n    tags: [\"1.0\"]\n    verify: {{cosign_key: {}}}\n    to: registry://{}/{{repo}}\n",
            media.display(),
            key.public.display(),
            fresh.host
        ),
    );
    let out = occy_regs(&[&fresh], &["sync", &filtered]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut got = tags(&fresh, "team/app");
    got.sort();
    assert_eq!(got, ["1.0".to_string(), sig.clone()]);
    assert!(tags(&fresh, "team/multi").is_empty() && tags(&fresh, "team/zstd").is_empty());

    // A flipped byte in a volume of 0002: refused naming it, no new tag.
    let bad = dir.join("bad");
    std::fs::create_dir_all(bad.join("0002")).unwrap();
    for f in std::fs::read_dir(&a2).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bad.join("0002").join(f.file_name().unwrap())).unwrap();
    }
    let victim = volumes(&bad.join("0002"))[1].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let flipped = inside_file(&dir, "flipped.yaml", &bad.join("0002"), &inside);
    let out = occy_regs(&[&inside], &["sync", &flipped]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(text(&out).contains(&name), "{}", text(&out));
    assert!(!tags(&inside, "team/app").contains(&"1.1".to_string()));

    // One archive is not a destination.
    let into_one = write(
        &dir,
        "into-one.yaml",
        &format!(
            "version: 1\nsync:\n  - from: registry://{}/team/app:1.0\n    to: archive://{}\n",
            outside.host,
            a1.display()
        ),
    );
    let out = occy_regs(&[&outside], &["sync", &into_one]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("is one archive"), "{}", text(&out));

    // After 0001, the whole directory again: the new tag gets its source digest.
    ok_regs(&[&inside], &["sync", &in_file]);
    assert_eq!(
        skopeo_digest(&inside, "team/app:1.1"),
        skopeo_digest(&outside, "team/app:1.1")
    );

    // full=true writes a whole archive whatever the history carried.
    let full_file = outside_file(&dir, &outside, &media, "16KiB&full=true");
    let plan = text(&ok_regs(&[&outside], &["sync", &full_file, "--plan"]));
    assert!(
        plan.contains("writes whole archive") && !plan.contains("left out"),
        "{plan}"
    );
    ok_regs(&[&outside], &["sync", &full_file]);
    let r3 = record(&media.join("0003"));
    assert_eq!(
        (r3["full"].as_bool(), r3["depends_on"].as_array().map(Vec::len)),
        (Some(true), Some(0))
    );
    assert_eq!(r3["images"].as_array().unwrap().len(), 4);
    assert!(r3["blobs"].as_array().unwrap().len() >= r1["blobs"].as_array().unwrap().len());
}

/// A one-image archive of `test/app-a:1.0` on the shared registry, made once.
fn small_archive() -> &'static PathBuf {
    static ONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let reg = Registry::shared(Mode::Plain);
        reg.push_standard("app-a");
        let dir = scratch_dir("airgap-small");
        let media = dir.join("media");
        let file = write(
            &dir,
            "out.yaml",
            &format!(
                "version: 1\nsync:\n  - from: registry://{}/test/app-a:1.0\n    to: archive://{}?volume_size=8KiB\n",
                reg.host,
                media.display()
            ),
        );
        ok_regs(&[reg], &["sync", &file]);
        assert!(volumes(&media.join("0001")).len() >= 3);
        media.join("0001")
    })
}

/// A copy of the small archive as `DIR/0001`, for one test to break.
fn copy_of_small(name: &str) -> PathBuf {
    let dir = scratch_dir(name).join("0001");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(small_archive()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

/// Imports `from` into `registry://SHARED/PREFIX/{repo}`: must fail with
/// `code` and `needle`, and write no tag there.
fn import_fails(from: &str, prefix: &str, code: i32, needle: &str) {
    let reg = Registry::shared(Mode::Plain);
    let dir = scratch_dir(prefix);
    let file = write(
        &dir,
        "in.yaml",
        &format!(
            "version: 1\nsync:\n  - from: {from}\n    to: registry://{}/{prefix}/{{repo}}\n",
            reg.host
        ),
    );
    let out = occy_regs(&[reg], &["sync", &file]);
    assert_eq!(out.status.code(), Some(code), "{from}: {}", text(&out));
    assert!(
        text(&out).contains(needle),
        "{from}: expected {needle:?} in:\n{}",
        text(&out)
    );
    assert!(
        tags(reg, &format!("{prefix}/test/app-a")).is_empty(),
        "{from} wrote a tag"
    );
}

#[test]
fn bad_archives_and_options_are_refused_before_anything_is_written() {
    let reg = Registry::shared(Mode::Plain);
    small_archive();
    let dir = scratch_dir("airgap-bad");

    // An archive path that is a file, as a destination and as a source.
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    let sync = write(
        &dir,
        "to-file.yaml",
        &format!(
            "version: 1\nsync:\n  - from: registry://{}/test/app-a:1.0\n    to: archive://{}\n",
            reg.host,
            file.display()
        ),
    );
    let out = occy_regs(&[reg], &["sync", &sync]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("is a file"), "{}", text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    import_fails(&format!("archive://{}", file.display()), "airgap-file", 1, "is a file");

    // volume_size 0 and 12XB: usage errors naming the value.
    for bad in ["0", "12XB"] {
        let sync = write(
            &dir,
            "size.yaml",
            &format!(
                "version: 1\nsync:\n  - from: registry://{}/test/app-a:1.0\n    to: archive://{}/m?volume_size={bad}\n",
                reg.host,
                dir.display()
            ),
        );
        let out = occy_regs(&[reg], &["sync", &sync]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("\"{bad}\"")) && text(&out).contains("volume_size"),
            "{}",
            text(&out)
        );
        assert!(!dir.join("m").exists());
    }

    // A volume missing from the middle.
    let missing = copy_of_small("airgap-missing");
    let middle = volumes(&missing)[1].clone();
    std::fs::remove_file(&middle).unwrap();
    let name = middle.file_name().unwrap().to_string_lossy().to_string();
    import_fails(&format!("archive://{}", missing.display()), "airgap-missing", 1, &name);

    // A record edited to point the tag elsewhere: its checksum catches it.
    let edited = copy_of_small("airgap-edited");
    let text_of = std::fs::read_to_string(edited.join("record.json")).unwrap();
    let mut r: Value = serde_json::from_str(&text_of).unwrap();
    let other = r["blobs"][0]["digest"].clone();
    r["images"][0]["digest"] = other;
    std::fs::write(edited.join("record.json"), serde_json::to_vec_pretty(&r).unwrap()).unwrap();
    import_fails(
        &format!("archive://{}", edited.display()),
        "airgap-edited",
        1,
        "does not match its checksum",
    );

    // A record naming a blob the volumes lack (its checksum list made to agree).
    let extra = copy_of_small("airgap-extra");
    let mut r: Value = serde_json::from_slice(&std::fs::read(extra.join("record.json")).unwrap()).unwrap();
    let ghost = format!("sha256:{}", "ab".repeat(32));
    r["blobs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"digest": ghost, "size": 10}));
    let bytes = serde_json::to_vec_pretty(&r).unwrap();
    std::fs::write(extra.join("record.json"), &bytes).unwrap();
    let sums = std::fs::read_to_string(extra.join("SHA256SUMS")).unwrap();
    let new_sum = crate::support::cosign::sha256(&bytes);
    let sums: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  record.json") {
                format!("{}  record.json\n", new_sum.trim_start_matches("sha256:"))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(extra.join("SHA256SUMS"), sums).unwrap();
    import_fails(&format!("archive://{}", extra.display()), "airgap-extra", 1, &ghost);
}

/// The blob files staged for the next archive of `media`.
fn staged(media: &Path) -> Vec<String> {
    std::fs::read_dir(media.join(".occy-partial/layout/blobs/sha256"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts occy in the background with `--insecure-registry` for `regs`.
fn spawn_occy(regs: &[&Registry], args: &[&str]) -> std::process::Child {
    let mut c = Command::new(occy_bin());
    for r in regs {
        c.args(["--insecure-registry", &r.host]);
    }
    c.args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("OCCY_CACHE_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds (or 60 s), then SIGKILLs the child.
fn kill_when(mut child: std::process::Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "the run never got half way");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Completed blob uploads per digest in a registry's access log.
fn uploads(log: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for line in log.lines() {
        if !line.contains("\"PUT /v2/") || !line.contains("/blobs/uploads/") || !line.contains("\" 201 ") {
            continue;
        }
        if let Some(i) = line.find("digest=sha256%3A") {
            let hex: String = line[i + 16..].chars().take(64).collect();
            *out.entry(hex).or_default() += 1;
        }
    }
    out
}

#[test]
fn a_killed_export_and_a_killed_import_resume_without_writing_twice() {
    let dir = scratch_dir("airgap-kill");
    let outside = Registry::start(Mode::Plain);
    let standard = &standard_images().0;
    for (image, repo) in [
        ("app-a", "a"),
        ("app-b", "b"),
        ("multiarch", "multi"),
        ("zstd", "z"),
        ("plain", "plain"),
        ("whiteouts", "w"),
    ] {
        outside.push_layout(standard, image, &format!("team/{repo}:1.0"));
    }
    let media = dir.join("media");
    let out_file = outside_file(&dir, &outside, &media, "64KiB");
    // Slowed down (-J 1 -j 1, 4 requests a second) so it can be killed half way.
    let child = spawn_occy(
        &[&outside],
        &["--rate-limit", "4", "sync", &out_file, "-J", "1", "-j", "1"],
    );
    kill_when(child, || staged(&media).len() >= 4);
    let before: Vec<String> = staged(&media);
    assert!(!media.join("0001").exists());

    let out = ok_regs(&[&outside], &["-O", "json", "sync", &out_file]);
    let report = json_of(&out);
    let copied: u64 = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["report"]["layers_copied"].as_u64())
        .sum();
    let r = record(&media.join("0001"));
    let all: Vec<String> = r["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string())
        .collect();
    let remaining = all.iter().filter(|d| !before.contains(d)).count() as u64;
    assert!(
        copied <= remaining + 1,
        "the second run copied {copied} layers; {remaining} of {} blobs were not staged by the killed run",
        all.len()
    );
    eprintln!(
        "killed export: {} of {} blobs staged before the kill; the run again copied {copied} layers ({remaining} blobs remained)",
        before.len(),
        all.len()
    );
    assert!(before.iter().all(|d| all.contains(d)), "{before:?} {all:?}");
    assert!(copied < all.len() as u64);

    // A killed import, run again, uploads no blob twice.
    let inside = Registry::start_logged(Mode::Plain);
    let in_file = inside_file(&dir, "inside.yaml", &media, &inside);
    let child = spawn_occy(
        &[&inside],
        &["--rate-limit", "4", "sync", &in_file, "-J", "1", "-j", "1"],
    );
    kill_when(child, || uploads(&inside.access_log()).len() >= 3);
    let first = uploads(&inside.access_log()).len();
    ok_regs(&[&inside], &["sync", &in_file]);
    let counts = uploads(&inside.access_log());
    eprintln!(
        "killed import: {first} blobs uploaded before the kill, {} in all, none twice",
        counts.len()
    );
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "uploaded twice: {twice:?}");
    for repo in ["a", "b", "multi", "z", "plain", "w"] {
        let repo = format!("team/{repo}");
        assert_eq!(
            http_manifest_digest(&inside.host, &repo, "1.0"),
            http_manifest_digest(&outside.host, &repo, "1.0")
        );
    }
}

#[test]
fn the_airgap_examples_run_outside_then_inside() {
    let outside = Registry::start(Mode::Plain);
    let inside = Registry::start(Mode::Plain);
    let standard = &standard_images().0;
    outside.push_layout(standard, "app-a", "team/app:1.4.2");
    outside.push_layout(standard, "app-b", "team/app:1.5.0");
    outside.push_layout(standard, "multiarch", "base/runtime:2024");
    let dir = scratch_dir("airgap-examples");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let adapt = |name: &str| {
        let t = std::fs::read_to_string(examples.join(name))
            .unwrap()
            .replace("registry.example.com", &outside.host)
            .replace("registry.internal", &inside.host)
            .replace("/media/transfer", dir.join("transfer").to_str().unwrap());
        write(&dir, name, &t)
    };
    let out_file = adapt("airgap-outside.yaml");
    let in_file = adapt("airgap-inside.yaml");
    let plan = text(&ok_regs(&[&outside], &["sync", &out_file, "--plan"]));
    assert!(plan.contains("writes archive"), "{plan}");
    ok_regs(&[&outside], &["sync", &out_file]);
    assert!(dir.join("transfer/0001/record.json").is_file());
    ok_regs(&[&inside], &["sync", &in_file]);
    for (repo, tag) in [("team/app", "1.4.2"), ("team/app", "1.5.0"), ("base/runtime", "2024")] {
        assert_eq!(
            http_manifest_digest(&inside.host, repo, tag),
            http_manifest_digest(&outside.host, repo, tag),
            "{repo}:{tag}"
        );
    }
    // The runtimes inside pull the outside names from the inside registry:
    // the archive source counts with the names its records hold.
    let conf = text(&ok_regs(
        &[&inside],
        &["mirror-config", &in_file, "--format", "registries.conf"],
    ));
    for repo in ["team/app", "base/runtime"] {
        assert!(
            conf.contains(&format!("prefix = \"{}/{repo}\"", outside.host))
                && conf.contains(&format!("location = \"{}/{repo}\"", inside.host)),
            "{repo}: {conf}"
        );
    }
    // Both are idempotent.
    let again = occy_regs(&[&outside], &["sync", &out_file, "--plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let again = occy_regs(&[&inside], &["sync", &in_file, "--plan", "--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

#[test]
fn an_oci_source_without_a_tag_takes_every_tag_of_the_layout() {
    let dir = scratch_dir("airgap-oci-all");
    let layout = &standard_images().0;
    let out = dir.join("out");
    let file = write(
        &dir,
        "all.yaml",
        &format!(
            "version: 1\nsync:\n  - from: oci://{}\n    tags: {{ glob: \"app-*\" }}\n    to: oci://{}\n",
            layout.display(),
            out.display()
        ),
    );
    ok(&["sync", &file]);
    let mut got = layout_tags(&out);
    got.sort();
    assert_eq!(got, ["app-a", "app-b"]);
    for tag in ["app-a", "app-b"] {
        assert_eq!(
            crate::support::oci_tools::tag_entry(&out, tag)["digest"],
            crate::support::oci_tools::tag_entry(layout, tag)["digest"]
        );
    }
    // Without `tags:`, every tag (the plan lists one target each).
    let every = write(
        &dir,
        "every.yaml",
        &format!(
            "version: 1\nsync:\n  - from: oci://{}\n    to: oci://{}\n",
            layout.display(),
            dir.join("every").display()
        ),
    );
    let plan = json_of(&ok(&["sync", &every, "--plan", "-O", "json"]));
    assert_eq!(
        plan["totals"]["targets"].as_u64().unwrap() as usize,
        layout_tags(layout).len(),
        "{plan}"
    );
}

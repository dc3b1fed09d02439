//! Hostile input: malformed sync files, references, manifests, configs and
//! archives, and decompression bombs, each ending in a clear error (or a
//! documented success) with no panic, bounded memory and nothing written
//! outside the targets; a full disk; and credentials that never appear in
//! output or written files, even at `-vv` and `RUST_LOG=trace`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::layout_edit::*;
use crate::support::*;
use serde_json::Value;

/// Runs occy; asserts it failed with `code`, did not panic, and said
/// something short that mentions `needle`.
fn refused(args: &[&str], code: i32, needle: &str) -> String {
    let stderr = fails(args, code, needle);
    assert!(stderr.len() < 8_000, "occy {args:?}: {} bytes of error", stderr.len());
    stderr
}

#[test]
fn malformed_sync_files_are_errors_at_a_place() {
    let dir = scratch_dir("hostile-sync");
    let deep = format!("version: 1\nsync: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let deep_toml = format!("version = 1\nsync = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let nested: String = (0..2_000).map(|i| format!("{}- \n", "  ".repeat(i))).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("deep.yaml", deep.into_bytes(), "deep.yaml:2:"),
        ("deep.toml", deep_toml.into_bytes(), "deep.toml:2:"),
        ("nested.yaml", format!("version: 1\nsync:\n{nested}").into_bytes(), "nested.yaml:"),
        ("binary.yaml", (0..=255u8).cycle().take(4096).collect(), "binary.yaml"),
        ("types.yaml", b"version: [1]\nsync: {from: 3}\n".to_vec(), "types.yaml:1:"),
        ("anchors.yaml", b"a: &a [x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nd: [*c, *c, *c, *c]\nversion: 1\nsync: []\n".to_vec(), "anchors.yaml"),
        ("empty.yaml", Vec::new(), "empty.yaml"),
        ("huge-key.yaml", format!("version: 1\n{}: 1\nsync: []\n", "k".repeat(1 << 20)).into_bytes(), "huge-key.yaml:2:1"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        refused(&["sync", path.to_str().unwrap(), "--plan"], 2, needle);
    }
}

#[test]
fn malformed_references_are_usage_errors() {
    for r in [
        "",
        "://",
        "registry://",
        "registry:///repo",
        "registry://host/",
        "registry://host/Repo:tag",
        "registry://host/repo:ta g",
        "registry://host/repo@sha256:xyz",
        "registry://host/repo@md5:0000",
        "tar://",
        "oci://:tag",
        "docker://",
        "dir:///x?unique_names=maybe",
        "quay://",
        &format!("registry://host/{}", "a/".repeat(10_000)),
        "registry://host/repo:\u{202e}evil",
    ] {
        let out = occy(&["info", r]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{r:?}: {stderr}");
        assert!(!stderr.contains("panicked") && stderr.len() < 8_000, "{r:?}: {stderr}");
    }
}

/// A copy of the small generated image with its top manifest replaced.
fn with_manifest(tag: &str, bytes: &[u8]) -> PathBuf {
    let dir = layout_of("app-a");
    retag(&dir, "app-a", bytes);
    let _ = tag;
    dir
}

#[test]
fn hostile_manifests_and_configs_are_refused_and_write_nothing() {
    let huge = format!("{{\"schemaVersion\":2,\"x\":\"{}\"}}", "a".repeat(5 << 20));
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("huge", huge.into_bytes(), "too large"),
        ("deep", deep.into_bytes(), "manifest"),
        ("types", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":"x","layers":"y"}"#.to_vec(), "manifest"),
        ("not-json", b"\x00\x01\x02".to_vec(), "manifest"),
        ("negative", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":-1},"layers":[]}"#.to_vec(), "manifest"),
    ];
    for (name, bytes, needle) in cases {
        let dir = with_manifest(name, &bytes);
        let src = format!("oci://{}:app-a", dir.display());
        refused(&["info", &src], 1, needle);
        let out = scratch_dir(&format!("hostile-out-{name}"));
        let tar = out.join("x.tar");
        refused(&["process", &src, &format!("tar://{}", tar.display())], 1, needle);
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{name}: output left behind"
        );
    }

    // Configs: deeply nested, wrong types, and over the size limit.
    let configs: Vec<(&str, Vec<u8>)> = vec![
        (
            "deep-config",
            format!("{{\"a\":{}{}}}", "[".repeat(50_000), "]".repeat(50_000)).into_bytes(),
        ),
        (
            "deep-known",
            format!(
                "{{\"config\":{{\"Env\":{}{}}}}}",
                "[".repeat(50_000),
                "]".repeat(50_000)
            )
            .into_bytes(),
        ),
        ("typed-config", br#"{"architecture":7,"os":[],"rootfs":"x"}"#.to_vec()),
        (
            "huge-config",
            format!("{{\"x\":\"{}\"}}", "a".repeat(17 << 20)).into_bytes(),
        ),
    ];
    for (name, bytes) in configs {
        let dir = layout_of("app-a");
        mutate(&dir, "app-a", |_, _, _| {});
        let t = top(&dir, "app-a");
        let mut manifest: Value = serde_json::from_slice(&read_blob(&dir, t["digest"].as_str().unwrap())).unwrap();
        manifest["config"]["digest"] = Value::from(write_blob(&dir, &bytes));
        manifest["config"]["size"] = Value::from(bytes.len());
        retag(&dir, "app-a", &serde_json::to_vec(&manifest).unwrap());
        let src = format!("oci://{}:app-a", dir.display());
        if name == "deep-config" {
            // Deep nesting under a key occy does not read is skipped, not
            // recursed into: either outcome is fine, a crash is not.
            let out = occy(&["info", &src]);
            assert!(matches!(out.status.code(), Some(0 | 1)), "{name}: {out:?}");
            continue;
        }
        let stderr = refused(&["info", &src], 1, "config");
        assert!(
            !stderr.contains(&"a".repeat(100)),
            "{name}: the config is quoted: {stderr}"
        );
    }
}

/// A docker-save archive of the small generated image.
fn docker_save_of(name: &str) -> PathBuf {
    let dir = scratch_dir(&format!("hostile-tar-{name}"));
    let tar = dir.join("good.tar");
    ok(&["process", &standard_ref("app-a"), &format!("tar://{}", tar.display())]);
    tar
}

/// A tar archive of `entries` (name, data), names written raw.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let one = raw_tar(name, tar::EntryType::Regular, "", data);
        out.extend_from_slice(&one[..one.len() - 1024]);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn hostile_archives_are_refused() {
    let good = docker_save_of("base");
    let bytes = std::fs::read(&good).unwrap();
    let dir = good.parent().unwrap().to_path_buf();
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        format!("tar://{}", p.display())
    };

    // Truncated in the middle of a layer.
    let truncated = write("truncated.tar", &bytes[..bytes.len() / 2]);
    let out = occy(&["check", &truncated]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // A manifest.json naming files outside the archive.
    let escape = tar_of(&[(
        "manifest.json",
        br#"[{"Config":"../../../etc/passwd","RepoTags":["x:1"],"Layers":["../../../etc/shadow"]}]"#,
    )]);
    refused(&["info", &write("escape.tar", &escape)], 1, "manifest.json");

    // A header claiming 8 GiB of data in a small file.
    let mut absurd = raw_tar("manifest.json", tar::EntryType::Regular, "", b"[]");
    absurd[124..136].copy_from_slice(b"77777777777\0");
    let mut h = tar::Header::from_byte_slice(&absurd[..512]).clone();
    h.set_cksum();
    absurd[..512].copy_from_slice(h.as_bytes());
    let started = std::time::Instant::now();
    let out = occy(&["info", &write("absurd.tar", &absurd)]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed().as_secs() < 20);

    // Not a tar at all, and an empty file.
    refused(&["info", &write("text.tar", &b"hello\n".repeat(200))], 1, "text.tar");
    refused(&["info", &write("empty.tar", b"")], 1, "empty.tar");
}

/// An OCI layout whose one layer is `mib` MiB of zeros, gzip'd (a 1000:1
/// decompression bomb), with a correct diff_id.
fn bomb_layout(mib: usize) -> PathBuf {
    one_file_layout(mib, false)
}

/// An OCI layout with one layer holding one file of `mib` MiB: zeros, or
/// bytes that do not compress.
fn one_file_layout(mib: usize, random: bool) -> PathBuf {
    let dir = layout_of("app-a");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar_hash = sha2::Sha256::default();
    let mut header = tar::Header::new_ustar();
    header.set_path("zeros").unwrap();
    header.set_size((mib as u64) << 20);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut fill = vec![0u8; 1 << 20];
    if random {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for b in fill.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    let mut feed = |b: &[u8]| {
        sha2::Digest::update(&mut tar_hash, b);
        gz.write_all(b).unwrap();
    };
    feed(header.as_bytes());
    for _ in 0..mib {
        feed(&fill);
    }
    feed(&[0u8; 1024]);
    let gz = gz.finish().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Digest::finalize(tar_hash)));
    mutate(&dir, "app-a", |dir, manifest, config| {
        let digest = write_blob(dir, &gz);
        manifest["layers"] = serde_json::json!([{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": gz.len(),
        }]);
        config["rootfs"]["diff_ids"] = serde_json::json!([diff_id]);
        config["history"] = serde_json::json!([{"created": "2030-01-01T00:00:00Z", "created_by": "zeros"}]);
    });
    dir
}

/// Peak RSS in KiB of `occy ARGS` (GNU time), with its output.
fn peak_rss(args: &[&str]) -> (u64, Output) {
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("PEAK_RSS_KIB=%M")
        .arg(occy_bin())
        .args(args)
        .env("HOME", scratch())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KIB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS in {stderr}"));
    (kib, out)
}

#[test]
fn a_decompression_bomb_is_streamed_in_bounded_memory() {
    if !Path::new("/usr/bin/time").exists() {
        unavailable("/usr/bin/time", "it is not installed (apt-get install time)");
        return;
    }
    let dir = bomb_layout(512);
    let src = format!("oci://{}:app-a", dir.display());
    let (kib, out) = peak_rss(&["check", &src]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(kib < 64 * 1024, "check of a 512 MiB layer peaked at {kib} KiB");
    eprintln!("check of a 512 MiB zero layer (gzip 1000:1): peak RSS {kib} KiB");
    // Filtering it also streams.
    let dst = scratch_dir("bomb-out").join("layout");
    let (kib, out) = peak_rss(&[
        "process",
        &src,
        &format!("oci://{}:out", dst.display()),
        "-f",
        "normalize-timestamps",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(kib < 96 * 1024, "filtering a 512 MiB layer peaked at {kib} KiB");
    assert_oci_layout_readable(&dst, "out", true);
    eprintln!("normalize-timestamps over it: peak RSS {kib} KiB");
}

#[test]
fn a_full_disk_gives_a_clear_error_and_no_partial_output() {
    let mnt = scratch_dir("tmpfs");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            unavailable(
                "a tmpfs mount",
                &format!("mount failed (needs root): {}", String::from_utf8_lossy(&o.stderr)),
            );
            return;
        }
        Err(e) => {
            unavailable("mount", &format!("it cannot run: {e}"));
            return;
        }
    }
    let src = format!("oci://{}:app-a", one_file_layout(1, true).display());
    let result = std::panic::catch_unwind(|| {
        for (name, dst) in [
            ("tar", format!("tar://{}/x.tar", mnt.display())),
            ("oci", format!("oci://{}/layout:x", mnt.display())),
            ("dir", format!("dir://{}/dir", mnt.display())),
        ] {
            let stderr = refused(&["process", &src, &dst], 1, "No space left on device");
            assert!(
                stderr.contains(&mnt.display().to_string()),
                "{name}: the place is not named: {stderr}"
            );
            let mut left = Vec::new();
            walk(&mnt, &mut left);
            // Nothing under a final name: no archive, no tag in an index,
            // no blob whose bytes do not match its name.
            for p in &left {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                assert_ne!(name, "x.tar", "{name}: a partial archive was left");
                if p.parent().is_some_and(|d| d.ends_with("sha256")) {
                    assert_eq!(sha_hex(&std::fs::read(p).unwrap()), name, "a torn blob {}", p.display());
                }
                if name == "index.json" {
                    let text = std::fs::read_to_string(p).unwrap();
                    assert!(!text.contains("\"x\""), "{name}: a tag was written: {text}");
                }
                assert!(!name.contains(".occy-tmp"), "temporary file left: {}", p.display());
            }
        }
    });
    let _ = Command::new("umount").arg(&mnt).output();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        }
        out.push(p);
    }
}

#[test]
fn credentials_never_appear_in_output_or_written_files() {
    use base64::Engine as _;
    let reg = Registry::shared(Mode::Basic);
    let src = reg.push_standard("app-a");
    let dir = scratch_dir("creds");
    let file = dir.join("mirror.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nregistries:\n  {h}: {{ insecure: true, username_env: T_USER, password_env: T_PASS }}\nsync:\n  - from: {src}\n    to:\n      - registry://{h}/copies/app\n      - \"tar://{out}/app.tar\"\n      - \"oci://{out}/layout\"\n",
            h = reg.host,
            src = src,
            out = dir.join("out").display()
        ),
    )
    .unwrap();
    let cache = dir.join("cache");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    for (verbosity, rust_log) in [("-vv", None), ("-v", Some("trace"))] {
        let mut c = Command::new(occy_bin());
        c.args([
            verbosity,
            "--cache-dir",
            cache.to_str().unwrap(),
            "sync",
            file.to_str().unwrap(),
        ])
        .env("HOME", scratch())
        .env("T_USER", USER)
        .env("T_PASS", PASS)
        .env_remove("REGISTRY_AUTH_FILE");
        if let Some(l) = rust_log {
            c.env("RUST_LOG", l);
        }
        let out = c.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{all}");
        assert!(!all.contains(PASS), "{verbosity}: the password is printed");
        assert!(!all.contains(&basic), "{verbosity}: the basic credentials are printed");
    }
    let mut files = Vec::new();
    walk(&dir, &mut files);
    for p in files.iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(p).unwrap();
        for secret in [PASS.as_bytes(), basic.as_bytes()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds a credential",
                p.display()
            );
        }
    }
    assert_oci_layout_readable(&dir.join("out/layout"), "1.0", true);
}

#[test]
fn insecure_registry_applies_only_to_the_hosts_named() {
    let reg = Registry::shared(Mode::Plain);
    let url = reg.push_standard("app-a");
    let out = occy(&["--insecure-registry", "127.0.0.1:1", "info", &url]);
    assert_eq!(out.status.code(), Some(1), "plain HTTP allowed for another host");
    let ok = occy(&["--insecure-registry", &reg.host, "info", &url]);
    assert!(ok.status.success());
}

/// One 512-byte ustar header block with a fresh checksum.
fn header_block(name: &str, flag: u8, link: &str, size: usize) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// `data` padded to whole blocks.
fn padded(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(data.len().div_ceil(512) * 512, 0);
    v
}

/// A PAX `x` record block plus its data, for `records`.
fn pax_block(records: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in records {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}={v}\n").as_bytes());
    }
    let mut out = header_block("PaxHeaders/x", b'x', "", data.len());
    out.extend(padded(&data));
    out
}

/// The hostile layers (name, uncompressed tar bytes), and what every reader
/// must make of each: the path (and link) it parses, or the reason it refuses.
fn hostile_layers() -> Vec<(&'static str, Vec<u8>)> {
    let end = [0u8; 1024];
    let long_link = format!("{}etc/passwd", "../".repeat(40));

    // A PAX path with '..' behind an innocent ustar name.
    let mut pax_dotdot = pax_block(&[("path", "../../pax-escape")]);
    pax_dotdot.extend(header_block("innocent", b'0', "", 1));
    pax_dotdot.extend(padded(b"x"));
    pax_dotdot.extend(end);

    // A GNU long link (`K`) taking a hardlink out of the root.
    let mut gnu_link = header_block("././@LongLink", b'K', "", long_link.len() + 1);
    gnu_link.extend(padded(format!("{long_link}\0").as_bytes()));
    gnu_link.extend(header_block("usr/bin/evil", b'1', "harmless", 0));
    gnu_link.extend(end);

    // A good entry, then a header cut short.
    let mut truncated = header_block("etc/ok", b'0', "", 2);
    truncated.extend(padded(b"ok"));
    truncated.extend(&header_block("etc/cut", b'0', "", 0)[..300]);

    // A header whose checksum does not add up.
    let mut bad_sum = header_block("etc/sum", b'0', "", 1);
    bad_sum[148] = if bad_sum[148] == b'1' { b'2' } else { b'1' };
    bad_sum.extend(padded(b"x"));
    bad_sum.extend(end);

    // A GNU sparse file, whose data is not the file's bytes.
    let mut sparse = header_block("var/sparse", b'S', "", 1);
    sparse.extend(padded(b"x"));
    sparse.extend(end);

    vec![
        ("pax-dotdot", pax_dotdot),
        ("gnu-long-link", gnu_link),
        ("truncated-header", truncated),
        ("bad-checksum", bad_sum),
        ("sparse", sparse),
    ]
}

/// Everything an occy run said, stdout and stderr.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Filters, `check`, `search` and extraction (bundle:// and expanded dir://)
/// read layers with one tar reader: each hostile layer is parsed to the same
/// path and link by all of them, or refused by all of them for the same
/// reason, and extraction writes nothing outside its root.
#[test]
fn every_command_reads_a_hostile_layer_the_same_way() {
    let long_link = format!("{}etc/passwd", "../".repeat(40));
    for (name, layer) in hostile_layers() {
        let dir = layout_of("base");
        mutate(&dir, "base", |d, m, c| add_layer(d, m, c, &layer));
        let src = format!("oci://{}:base", dir.display());
        let out = scratch_dir(&format!("one-reader-{name}"));
        let check = occy(&["-O", "json", "check", &src]);
        let search_pattern = match name {
            "pax-dotdot" => "pax-escape",
            "gnu-long-link" => "evil",
            _ => "**",
        };
        let search = occy(&["-O", "json", "search", &src, search_pattern]);
        let filter_search = format!("search:pattern={search_pattern}");
        let filter_dst = format!("oci://{}:f", out.join("filtered").display());
        let filter = occy(&["-O", "json", "process", &src, &filter_dst, "-f", &filter_search]);
        let bundle_dst = format!("bundle://{}", out.join("bundle").display());
        let bundle = occy(&["process", &src, &bundle_dst]);
        let expand_dst = format!("dir://{}?expand=true", out.join("tree").display());
        let expand = occy(&["process", &src, &expand_dst]);

        for (what, o) in [("check", &check), ("bundle", &bundle), ("expanded dir", &expand)] {
            assert_eq!(o.status.code(), Some(1), "{name}: {what}: {}", said(o));
            assert!(!said(o).contains("panicked"), "{name}: {what}: {}", said(o));
        }
        let (reason, parsed): (&str, Option<&str>) = match name {
            "pax-dotdot" => ("../../pax-escape", Some("../../pax-escape")),
            "gnu-long-link" => (long_link.as_str(), Some("usr/bin/evil")),
            "truncated-header" => ("ends inside a header", None),
            "bad-checksum" => ("bad checksum", None),
            _ => ("sparse", None),
        };
        for (what, o) in [("check", &check), ("bundle", &bundle), ("expanded dir", &expand)] {
            assert!(
                said(o).contains(reason),
                "{name}: {what} does not say {reason:?}: {}",
                said(o)
            );
        }
        match parsed {
            // Parsed alike: search and the search filter list the path check
            // and extraction name; the filter passes the layer through.
            Some(path) => {
                assert!(search.status.success(), "{name}: search: {}", said(&search));
                let found = json_of(&search);
                let paths: Vec<&str> = found
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["path"].as_str().unwrap())
                    .collect();
                assert_eq!(paths, [path], "{name}: search");
                assert!(filter.status.success(), "{name}: filter: {}", said(&filter));
                let r = json_of(&filter);
                let fpaths: Vec<&str> = r["matches"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["path"].as_str().unwrap())
                    .collect();
                assert_eq!(fpaths, [path], "{name}: the search filter");
                for (what, o) in [("check", &check), ("bundle", &bundle), ("expanded dir", &expand)] {
                    assert!(
                        said(o).contains(path),
                        "{name}: {what} does not name {path}: {}",
                        said(o)
                    );
                }
            }
            // Refused alike: the same reason from every command.
            None => {
                for (what, o) in [("search", &search), ("filter", &filter)] {
                    assert_eq!(o.status.code(), Some(1), "{name}: {what}: {}", said(o));
                    assert!(
                        said(o).contains(reason),
                        "{name}: {what} does not say {reason:?}: {}",
                        said(o)
                    );
                }
            }
        }
        // Nothing escaped the extraction roots (bundle/rootfs, tree), and the
        // hostile entry itself was not written.
        let parent = out.parent().unwrap();
        for p in [out.join("pax-escape"), parent.join("pax-escape")] {
            assert!(!p.exists(), "{name}: {} was written", p.display());
        }
        let mut files = Vec::new();
        walk(&out, &mut files);
        assert!(
            !files
                .iter()
                .any(|p| p.ends_with("usr/bin/evil") || p.ends_with("pax-escape")),
            "{name}: a hostile entry was extracted: {files:?}"
        );
    }
}

/// The docker-save index reads `tar://` archives with the same reader: a
/// member header with a bad checksum or a sparse member is refused with the
/// reason layers give.
#[test]
fn a_docker_save_archive_is_read_by_the_same_reader() {
    let good = docker_save_of("one-reader");
    let bytes = std::fs::read(&good).unwrap();
    let dir = good.parent().unwrap().to_path_buf();
    let mut bad_sum = bytes.clone();
    bad_sum[148] = if bad_sum[148] == b'1' { b'2' } else { b'1' };
    let p = dir.join("bad-sum.tar");
    std::fs::write(&p, &bad_sum).unwrap();
    refused(&["info", &format!("tar://{}", p.display())], 1, "bad checksum");
    let mut sparse = header_block("manifest.json", b'S', "", 2);
    sparse.extend(padded(b"[]"));
    sparse.extend([0u8; 1024]);
    let p = dir.join("sparse.tar");
    std::fs::write(&p, &sparse).unwrap();
    refused(&["info", &format!("tar://{}", p.display())], 1, "sparse");
}

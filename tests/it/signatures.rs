//! Cosign signatures (issue 20): images signed the way cosign signs them
//! (support/cosign.rs: openssl keys and signatures, simple-signing payloads,
//! `sha256-<hex>.sig` tags on the real Distribution registry), mirrored by
//! `occy sync` and verified back independently with `openssl dgst`; the
//! `verify:` gate lets a signed image through and fails a tampered one
//! (re-tagged unsigned, a signature copied from another image, another
//! key) while the rest of the sync goes on; `occy info` lists signatures
//! and whether each verifies.

use std::path::Path;

use serde_json::Value;

use crate::support::cosign;
use crate::support::{self, generated, json_of, occy, require, scratch_dir, standard_images, Mode, Registry};

/// Pushes standard image `name` to `repo_tag` on `reg`; returns its manifest digest.
fn push(reg: &Registry, name: &str, repo_tag: &str) -> String {
    reg.push_layout(&standard_images().0, name, repo_tag);
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap();
    let digest = cosign::http_manifest_digest(&reg.host, repo, tag);
    assert_eq!(digest, generated(name).descriptor.digest.to_string());
    digest
}

fn write_sync_file(dir: &Path, text: &str) -> String {
    let path = dir.join("mirror.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The manifest an OCI layout's index.json names `tag`, and its digest.
fn layout_manifest(layout: &Path, tag: &str) -> Option<(String, Vec<u8>)> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)?["digest"]
        .as_str()?
        .to_string();
    Some((d.clone(), layout_blob(layout, &d)))
}

fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap()
}

/// The mirrored `.sig` verifies with openssl alone: the payload and the
/// DER signature read back from the mirror registry (curl) and from the OCI
/// layout (its files), and the payload names the mirrored manifest's digest.
#[test]
fn a_mirrored_signature_verifies_with_openssl() {
    require("openssl", "openssl");
    let src = Registry::shared(Mode::Plain);
    let mirror = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("cosign-mirror");
    let key = cosign::keypair(&dir.join("keys"), "release");
    let digest = push(src, "app-a", "cosign-mirror/app:1.0");
    let (payload, sig) = cosign::sign_image(src, "cosign-mirror/app", &digest, &key);
    // The signature as pushed verifies: the helper signs as cosign does.
    let (said, ok) = cosign::openssl_verify(&key.public, &payload, &sig);
    assert!(ok && said == "Verified OK", "{said}");
    let layout = dir.join("layout");
    let file = write_sync_file(
        &dir,
        &format!(
            "version: 1\ndefaults:\n  verify: {{cosign_key: keys/release.pub}}\nregistries:\n  \"{src}\": {{insecure: true}}\n  \"{dst}\": {{insecure: true}}\nsync:\n  - from: registry://{src}/cosign-mirror/app:1.0\n    to:\n      - registry://{dst}/mirrored/app\n      - oci://{layout}\n",
            src = src.host,
            dst = mirror.host,
            layout = layout.display()
        ),
    );
    let out = occy(&["sync", &file]);
    assert!(out.status.success(), "{}", text_of(&out));

    // From the mirror registry, over HTTP.
    let mirrored = cosign::http_manifest_digest(&mirror.host, "mirrored/app", "1.0");
    assert_eq!(mirrored, digest, "the image keeps its digest");
    let tag = cosign::sig_tag(&mirrored);
    let log = mirror.access_log();
    let puts = log
        .lines()
        .filter(|l| l.contains(&format!("\"PUT /v2/mirrored/app/manifests/{tag} ")))
        .count();
    assert_eq!(puts, 1, "one PUT of {tag} on the mirror; access log:\n{log}");
    // A warm re-run, verified again, writes nothing.
    let writes = |log: &str| {
        log.lines()
            .filter(|l| {
                ["\"PUT ", "\"POST ", "\"PATCH ", "\"DELETE "]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .count()
    };
    let before = writes(&mirror.access_log());
    let out = occy(&["sync", &file]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(writes(&mirror.access_log()), before, "{}", mirror.access_log());
    let manifest = cosign::http_get(&mirror.host, &format!("mirrored/app/manifests/{tag}"));
    let found = cosign::signatures_in(&manifest, |d| {
        cosign::http_get(&mirror.host, &format!("mirrored/app/blobs/{d}"))
    });
    assert_eq!(found.len(), 1);
    let (payload_back, sig_back) = &found[0];
    let (said, ok) = cosign::openssl_verify(&key.public, payload_back, sig_back);
    assert!(ok, "openssl on the registry mirror's signature: {said}");
    assert_eq!(said, "Verified OK");
    assert_eq!(cosign::signed_digest(payload_back), mirrored);

    // From the OCI layout, by its files.
    let (layout_digest, _) = layout_manifest(&layout, "1.0").expect("the image's tag in the layout");
    assert_eq!(layout_digest, digest);
    let (_, sig_manifest) = layout_manifest(&layout, &cosign::sig_tag(&layout_digest)).unwrap_or_else(|| {
        panic!(
            "no {} tag in {}/index.json",
            cosign::sig_tag(&layout_digest),
            layout.display()
        )
    });
    let found = cosign::signatures_in(&sig_manifest, |d| layout_blob(&layout, d));
    assert_eq!(found.len(), 1);
    let (said, ok) = cosign::openssl_verify(&key.public, &found[0].0, &found[0].1);
    assert!(ok && said == "Verified OK", "openssl on the layout's signature: {said}");
    assert_eq!(cosign::signed_digest(&found[0].0), layout_digest);

    // occy info reads it there too.
    let release_pub = key.public.display().to_string();
    let out = support::ok(&[
        "info",
        &format!("oci://{}:1.0", layout.display()),
        "--verify-key",
        &release_pub,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("#1 signs {digest}: verified by {release_pub}")),
        "{text}"
    );

    // verify: reads the signature from the OCI layout too: the release key
    // passes, another key does not.
    let other = cosign::keypair(&dir.join("keys"), "other");
    assert!(other.public.exists());
    for (key_file, code) in [("keys/release.pub", 0), ("keys/other.pub", 1)] {
        let from_layout = write_sync_file(
            &dir,
            &format!(
                "version: 1\nsync:\n  - from: oci://{layout}:1.0\n    verify: {{cosign_key: {key_file}}}\n    to: oci://{out}:1.0\n",
                layout = layout.display(),
                out = dir.join("from-layout").display()
            ),
        );
        let out = occy(&["sync", &from_layout]);
        assert_eq!(out.status.code(), Some(code), "{key_file}: {}", text_of(&out));
        if code == 1 {
            assert!(
                text_of(&out).contains(&format!("no signature by {key_file} for {digest}")),
                "{}",
                text_of(&out)
            );
            assert!(text_of(&out).contains("#1 signed by another key"), "{}", text_of(&out));
        }
    }

    // Across the air gap (the recipe of docs/sync.md): from the OCI layout
    // into the inside registry, verified again, signature and all.
    let across = write_sync_file(
        &dir,
        &format!(
            "version: 1\ndefaults:\n  platforms: all\n  verify: {{cosign_key: keys/release.pub}}\nregistries:\n  \"{dst}\": {{insecure: true}}\nsync:\n  - from: oci://{layout}:1.0\n    to: registry://{dst}/across/app\n",
            dst = mirror.host,
            layout = layout.display()
        ),
    );
    let out = occy(&["sync", &across]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(cosign::http_manifest_digest(&mirror.host, "across/app", "1.0"), digest);
    let manifest = cosign::http_get(&mirror.host, &format!("across/app/manifests/{tag}"));
    let found = cosign::signatures_in(&manifest, |d| {
        cosign::http_get(&mirror.host, &format!("across/app/blobs/{d}"))
    });
    assert_eq!(found.len(), 1);
    let (said, ok) = cosign::openssl_verify(&key.public, &found[0].0, &found[0].1);
    assert!(ok && said == "Verified OK", "openssl after the OCI-layout hop: {said}");
    assert_eq!(cosign::signed_digest(&found[0].0), digest);

    // Registry to registry again (a transfer registry into the inside one).
    let inside = write_sync_file(
        &dir,
        &format!(
            "version: 1\ndefaults:\n  platforms: all\n  verify: {{cosign_key: keys/release.pub}}\nregistries:\n  \"{dst}\": {{insecure: true}}\nsync:\n  - from: registry://{dst}/mirrored/app\n    to: registry://{dst}/inside/app\n",
            dst = mirror.host,
        ),
    );
    let out = occy(&["sync", &inside]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert_eq!(cosign::http_manifest_digest(&mirror.host, "inside/app", "1.0"), digest);
    let manifest = cosign::http_get(&mirror.host, &format!("inside/app/manifests/{tag}"));
    let found = cosign::signatures_in(&manifest, |d| {
        cosign::http_get(&mirror.host, &format!("inside/app/blobs/{d}"))
    });
    assert_eq!(found.len(), 1);
    let (said, ok) = cosign::openssl_verify(&key.public, &found[0].0, &found[0].1);
    assert!(ok && said == "Verified OK", "openssl inside the air gap: {said}");
    assert_eq!(cosign::signed_digest(&found[0].0), digest);
}

/// `verify:` passes the signed image and fails, by name, a re-tagged
/// unsigned image, one carrying a signature copied from another image, and
/// one signed by another key; the signed one still syncs.
#[test]
fn verify_passes_the_signed_image_and_fails_tampered_ones() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("cosign-gate");
    let release = cosign::keypair(&dir.join("keys"), "release");
    let other = cosign::keypair(&dir.join("keys"), "other");

    let signed = push(src, "app-a", "cosign-gate/signed:1.0");
    cosign::sign_image(src, "cosign-gate/signed", &signed, &release);

    // Signed, then the tag moved to another (unsigned) image.
    let first = push(src, "app-a", "cosign-gate/retagged:1.0");
    cosign::sign_image(src, "cosign-gate/retagged", &first, &release);
    let retagged = push(src, "app-b", "cosign-gate/retagged:1.0");
    assert_ne!(first, retagged);

    // The release signature of app-a copied under app-b's signature tag.
    let copied = push(src, "app-b", "cosign-gate/copied:1.0");
    let p = cosign::payload(&format!("{}/cosign-gate/copied", src.host), &signed);
    let s = cosign::sign_payload(&release, &p);
    cosign::push_signatures(src, "cosign-gate/copied", &copied, &[(p, s)]);

    // Signed by a key the mirror does not trust.
    let foreign = push(src, "base", "cosign-gate/foreign:1.0");
    cosign::sign_image(src, "cosign-gate/foreign", &foreign, &other);

    let layout = dir.join("out");
    let entry = |name: &str| {
        format!(
            "  - from: registry://{}/cosign-gate/{name}:1.0\n    to: oci://{}:{name}\n",
            src.host,
            layout.display()
        )
    };
    let file = write_sync_file(
        &dir,
        &format!(
            "version: 1\ndefaults:\n  verify: {{cosign_key: keys/release.pub}}\nregistries:\n  \"{}\": {{insecure: true}}\nsync:\n{}{}{}{}",
            src.host,
            entry("signed"),
            entry("retagged"),
            entry("copied"),
            entry("foreign")
        ),
    );

    // The plan says which targets fail and why, before anything is written.
    let plan = occy(&["sync", &file, "--plan", "-O", "json"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text_of(&plan));
    let plan = json_of(&plan);
    let actions: Vec<(String, String)> = plan["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["destination"].as_str().unwrap().to_string(),
                t["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let action = |tag: &str| {
        actions
            .iter()
            .find(|(d, _)| d.ends_with(&format!(":{tag}")))
            .map(|(_, a)| a.clone())
            .unwrap()
    };
    assert_eq!(action("signed"), "create", "{actions:?}");
    for t in ["retagged", "copied", "foreign"] {
        assert_eq!(action(t), "failed", "{t}: {actions:?}");
    }

    let out = occy(&["sync", &file]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let no = |d: &str| format!("no signature by keys/release.pub for {d}");
    assert!(text.contains(&no(&retagged)), "{text}");
    assert!(
        text.contains(&format!(
            "there is no signature tag registry://{}/cosign-gate/retagged:{}",
            src.host,
            cosign::sig_tag(&retagged)
        )),
        "{text}"
    );
    assert!(text.contains(&no(&copied)), "{text}");
    assert!(
        text.contains(&format!("#1 signs {signed}, not this image")),
        "the copied signature names the digest it signs: {text}"
    );
    assert!(text.contains(&no(&foreign)), "{text}");
    assert!(text.contains("#1 signed by another key"), "{text}");
    assert!(!text.contains(&no(&signed)), "{text}");

    // Only the signed image reached the mirror.
    let tags = support::layout_tags(&layout);
    assert!(tags.contains(&"signed".to_string()), "{tags:?}");
    for t in ["retagged", "copied", "foreign"] {
        assert!(!tags.contains(&t.to_string()), "{t} was mirrored: {tags:?}");
    }
    let (d, _) = layout_manifest(&layout, "signed").unwrap();
    assert_eq!(d, signed);

    // Trusting both keys lets the foreign-signed image through too.
    let both = write_sync_file(
        &dir,
        &format!(
            "version: 1\nregistries:\n  \"{}\": {{insecure: true}}\nsync:\n{}    verify: {{cosign_keys: [keys/release.pub, keys/other.pub]}}\n",
            src.host,
            entry("foreign")
        ),
    );
    let out = occy(&["sync", &both]);
    assert!(out.status.success(), "{}", text_of(&out));
    assert!(support::layout_tags(&layout).contains(&"foreign".to_string()));
}

/// An Ed25519 key (cosign's other kind) signs the payload itself; its
/// signature passes `verify:` with that key and not with a P-256 one.
#[test]
fn an_ed25519_signature_passes_verify_with_its_key() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("cosign-ed25519");
    let ed = cosign::ed25519_keypair(&dir.join("keys"), "ed");
    cosign::keypair(&dir.join("keys"), "release");
    let digest = push(src, "app-b", "cosign-ed25519/app:1.0");
    let (_, sig) = cosign::sign_image(src, "cosign-ed25519/app", &digest, &ed);
    assert_eq!(sig.len(), 64, "a raw Ed25519 signature");
    for (key, code) in [("keys/ed.pub", 0), ("keys/release.pub", 1)] {
        let file = write_sync_file(
            &dir,
            &format!(
                "version: 1\nregistries:\n  \"{}\": {{insecure: true}}\nsync:\n  - from: registry://{}/cosign-ed25519/app:1.0\n    verify: {{cosign_key: {key}}}\n    to: oci://{}:1.0\n",
                src.host,
                src.host,
                dir.join("out").display()
            ),
        );
        let out = occy(&["sync", &file]);
        assert_eq!(out.status.code(), Some(code), "{key}: {}", text_of(&out));
        if code == 1 {
            assert!(text_of(&out).contains("#1 signed by another key"), "{}", text_of(&out));
        }
    }
    assert!(support::layout_tags(&dir.join("out")).contains(&"1.0".to_string()));
}

/// `occy process --verify-key` copies a signed image and refuses (exit 1,
/// named) one signed by another key; a source without tags is a usage error.
#[test]
fn process_verify_key_copies_only_a_signed_image() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("cosign-process");
    let release = cosign::keypair(&dir, "release");
    let other = cosign::keypair(&dir, "other");
    let digest = push(src, "app-a", "cosign-process/app:1.0");
    cosign::sign_image(src, "cosign-process/app", &digest, &release);
    let image = src.url("cosign-process/app:1.0");
    let release_pub = release.public.display().to_string();
    let other_pub = other.public.display().to_string();

    let good = format!("oci://{}:1.0", dir.join("good").display());
    src.ok(&[
        "process",
        &image,
        &good,
        "--verify-key",
        &other_pub,
        "--verify-key",
        &release_pub,
    ]);
    assert_eq!(support::layout_tags(&dir.join("good")), ["1.0"]);

    let bad = format!("oci://{}:1.0", dir.join("bad").display());
    let args = ["process", &image, &bad, "--verify-key", &other_pub];
    let out = src.occy(&args);
    assert_eq!(out.status.code(), Some(1), "{}", text_of(&out));
    assert!(
        text_of(&out).contains(&format!("no signature by {other_pub} for {digest}")),
        "{}",
        text_of(&out)
    );
    assert!(
        !dir.join("bad/index.json").exists(),
        "nothing written for a refused image"
    );

    let tar = format!("tar://{}", dir.join("x.tar").display());
    support::fails(
        &["process", &tar, &bad, "--verify-key", &release_pub],
        2,
        "--verify-key needs a registry://",
    );
}

/// Keys that cannot be read or are not public keys, and `verify:` on a
/// source without a registry, are sync-file errors at their place (exit 2).
#[test]
fn bad_keys_are_sync_file_errors_at_their_place() {
    let dir = scratch_dir("cosign-badkeys");
    let key = cosign::keypair(&dir.join("keys"), "release");
    let cases: [(&str, &str, &str); 4] = [
        (
            "version: 1\nsync:\n  - from: registry://127.0.0.1:1/a:1\n    verify: {cosign_key: keys/missing.pub}\n    to: oci:///tmp/x\n",
            "mirror.yaml:4:26: cannot read the cosign key keys/missing.pub",
            "no such file",
        ),
        (
            "version: 1\ndefaults:\n  verify:\n    cosign_keys: [keys/release.pub, keys/release.key]\nsync:\n  - from: registry://127.0.0.1:1/a:1\n    to: oci:///tmp/x\n",
            "mirror.yaml:4:37: keys/release.key is a private key",
            "-----BEGIN PUBLIC KEY-----",
        ),
        (
            "version: 1\nsync:\n  - from: tar:///tmp/image.tar\n    verify: {cosign_key: keys/release.pub}\n    to: oci:///tmp/x\n",
            "mirror.yaml:3:11: `verify` needs a registry://, quay:// or oci:// source, not tar",
            "verify here",
        ),
        (
            "version: 1\nsync:\n  - from: registry://127.0.0.1:1/a:1\n    verify: {}\n    to: oci:///tmp/x\n",
            "mirror.yaml:4:13: `verify` names no key",
            "cosign_key",
        ),
    ];
    assert!(key.public.exists());
    for (text, first, also) in cases {
        let file = write_sync_file(&dir, text);
        // Relative to the sync file's directory, from anywhere.
        let out = occy(&["sync", &file, "--plan"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(first), "{first:?} in:\n{stderr}");
        assert!(stderr.contains(also), "{also:?} in:\n{stderr}");
    }
}

/// `occy info` lists the `.sig` tag and says whether each signature is
/// verified by the key given, not verified, or not checked.
#[test]
fn info_lists_signatures_and_whether_they_verify() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("cosign-info");
    let release = cosign::keypair(&dir, "release");
    let other = cosign::keypair(&dir, "other");
    let digest = push(src, "app-b", "cosign-info/app:1.0");
    cosign::sign_image(src, "cosign-info/app", &digest, &release);
    let image = src.url("cosign-info/app:1.0");
    let tag = cosign::sig_tag(&digest);
    let release_pub = release.public.display().to_string();
    let other_pub = other.public.display().to_string();

    let out = src.ok(&["info", &image, "--verify-key", &release_pub]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&tag), "{text}");
    assert!(
        text.contains(&format!("#1 signs {digest}: verified by {release_pub}")),
        "{text}"
    );

    let out = src.ok(&["info", &image, "--verify-key", &other_pub]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("not verified: signed by another key"), "{text}");

    let out = src.ok(&["info", &image, "-O", "json"]);
    let info = json_of(&out);
    let referrers = info["referrers"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{referrers:?}");
    assert_eq!(referrers[0]["kind"], "signature");
    assert_eq!(referrers[0]["tag"], tag.as_str());
    assert_eq!(referrers[0]["signatures"][0]["status"], "not checked");
    assert_eq!(referrers[0]["signatures"][0]["signs"], digest.as_str());

    push(src, "base", "cosign-info/unsigned:1.0");
    let unsigned = src.url("cosign-info/unsigned:1.0");
    let out = src.ok(&["info", &unsigned]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("Referrers:         none"), "{text}");
}

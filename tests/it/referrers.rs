//! Referrers travel with their images (issue 20, part A): an OCI 1.1 SBOM
//! artifact (`subject`, `artifactType`) and a cosign-shaped signature
//! (`sha256-<hex>.sig`) pushed beside a real image on the real Distribution
//! registry (which keeps the referrers tag schema: no referrers API), and
//! through tests/it/support/referrers_proxy.rs (which adds the API), mirrored
//! by `occy sync` to another registry and to an OCI layout; warm re-runs,
//! re-signing, `referrers: none`, filtered entries and `occy check`.

use std::path::Path;

use bytes::Bytes;

use crate::support::oci_tools::assert_oci_layout_readable;
use crate::support::referrers_proxy::ReferrersProxy;
use crate::support::*;
use occy::image::media_type::{OCI_INDEX, OCI_MANIFEST};
use occy::image::referrers::{cosign_tag, fallback_tag, CosignKind};
use occy::image::{Descriptor, Digest, RawManifest};
use occy::registry::{RegistryClient, RegistryOptions};

const SPDX: &str = "application/spdx+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

pub(crate) fn client(host: &str) -> RegistryClient {
    let opts = RegistryOptions {
        insecure_hosts: vec![host.to_string()],
        retries: 2,
        ..Default::default()
    };
    RegistryClient::for_host(host, &opts).unwrap()
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn blob(c: &RegistryClient, repo: &str, media_type: &str, bytes: &[u8]) -> Descriptor {
    let d = Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64);
    c.upload_blob_bytes(repo, &d, Bytes::copy_from_slice(bytes))
        .await
        .unwrap();
    d
}

async fn put(
    c: &RegistryClient,
    repo: &str,
    reference: Option<&str>,
    value: serde_json::Value,
    mt: &str,
) -> RawManifest {
    let raw = RawManifest::new(Bytes::from(serde_json::to_vec(&value).unwrap()), Some(mt)).unwrap();
    let r = reference.map(str::to_string).unwrap_or_else(|| raw.digest.to_string());
    c.put_manifest(repo, &r, &raw).await.unwrap();
    raw
}

/// An OCI 1.1 SBOM artifact of `subject`, pushed by digest.
pub(crate) async fn push_sbom(c: &RegistryClient, repo: &str, subject: &Descriptor, text: &str) -> RawManifest {
    let config = blob(c, repo, EMPTY, b"{}").await;
    let doc = format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{text}"}}"#);
    let layer = blob(c, repo, SPDX, doc.as_bytes()).await;
    let subject = Descriptor::new(subject.media_type.clone(), subject.digest.clone(), subject.size);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SPDX,
        "config": config,
        "layers": [layer],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    });
    put(c, repo, None, m, OCI_MANIFEST).await
}

/// The referrers tag of `subject` listing `entries`.
pub(crate) async fn push_referrers_tag(c: &RegistryClient, repo: &str, subject: &Digest, entries: &[&RawManifest]) {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|r| {
            let mut d = serde_json::to_value(r.descriptor()).unwrap();
            d["artifactType"] = SPDX.into();
            d
        })
        .collect();
    let ix = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list});
    put(c, repo, Some(&fallback_tag(subject)), ix, OCI_INDEX).await;
}

/// A cosign-shaped signature of `subject` under `sha256-<hex>.sig` (the
/// signature itself is not a real one: this test is about copying).
async fn push_signature(c: &RegistryClient, repo: &str, subject: &Digest, seed: &str) -> RawManifest {
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{repo}"}},"image":{{"docker-manifest-digest":"{subject}"}},"type":"cosign container image signature"}},"optional":{{"seed":"{seed}"}}}}"#
    );
    let layer = blob(c, repo, SIMPLESIGNING, payload.as_bytes()).await;
    let config = format!(
        r#"{{"architecture":"","config":{{}},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer.digest
    );
    let config = blob(c, repo, "application/vnd.oci.image.config.v1+json", config.as_bytes()).await;
    let mut layer = serde_json::to_value(&layer).unwrap();
    layer["annotations"] = serde_json::json!({"dev.cosignproject.cosign/signature": format!("MEUC-{seed}")});
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    });
    put(
        c,
        repo,
        Some(&cosign_tag(subject, CosignKind::Signature)),
        m,
        OCI_MANIFEST,
    )
    .await
}

fn write_spec(dir: &Path, body: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("sync.yaml");
    std::fs::write(&path, format!("version: 1\n{body}")).unwrap();
    path.display().to_string()
}

fn flags(hosts: &[&str]) -> Vec<String> {
    hosts
        .iter()
        .flat_map(|h| ["--insecure-registry".to_string(), h.to_string()])
        .collect()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Writes (PUT, POST, PATCH, DELETE) in access-log lines.
fn writes(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            ["\"PUT ", "\"POST ", "\"PATCH ", "\"DELETE "]
                .iter()
                .any(|m| l.contains(m))
        })
        .collect()
}

fn requests(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("\"GET ")
                || l.contains("\"HEAD ")
                || l.contains("\"PUT ")
                || l.contains("\"POST ")
                || l.contains("\"PATCH ")
        })
        .count()
}

/// The manifest a layout's index.json lists under `name`, or untagged with `digest`.
fn layout_entry(layout: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
    let ix: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    ix["manifests"].as_array().unwrap().iter().find(|m| pick(m)).cloned()
}

fn ref_name(m: &serde_json::Value) -> Option<&str> {
    m["annotations"]["org.opencontainers.image.ref.name"].as_str()
}

#[test]
fn referrers_travel_by_the_referrers_tag_to_a_registry_and_an_oci_layout() {
    let src = Registry::shared(Mode::Plain);
    let dst = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("referrers-tag");
    let layout = dir.join("layout");
    src.push_layout(&standard_images().0, "app-a", "refs/app:1.0");
    let rt = rt();
    let (sc, dc) = (client(&src.host), client(&dst.host));
    let subject = rt.block_on(sc.head_manifest("refs/app", "1.0")).unwrap().unwrap();
    let sbom = rt.block_on(push_sbom(&sc, "refs/app", &subject, "app"));
    rt.block_on(push_referrers_tag(&sc, "refs/app", &subject.digest, &[&sbom]));
    let sig = rt.block_on(push_signature(&sc, "refs/app", &subject.digest, "first"));
    // The destination's referrers tag already lists a foreign referrer.
    let foreign = rt.block_on(push_sbom(&dc, "mirror/app", &subject, "foreign"));
    rt.block_on(push_referrers_tag(&dc, "mirror/app", &subject.digest, &[&foreign]));

    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{}/refs/app:1.0\n    to: [registry://{}/mirror/app, oci://{}]\n",
            src.host,
            dst.host,
            layout.display()
        ),
    );
    let f = flags(&[&src.host, &dst.host]);
    let plan = assert_ok(&["sync", &spec, "--plan"], occy_with(&f, &["sync", &spec, "--plan"]));
    let text = stdout(&plan);
    assert!(text.contains("+ 2 referrers: 1 signature, 1 SBOM"), "{text}");
    let md = assert_ok(
        &["sync", &spec, "--plan", "-O", "markdown"],
        occy_with(&f, &["sync", &spec, "--plan", "-O", "markdown"]),
    );
    let md = stdout(&md);
    assert!(md.contains("<br>+ 2 referrers: 1 signature, 1 SBOM"), "{md}");
    let run = json_of(&assert_ok(
        &["sync", &spec],
        occy_with(&f, &["-O", "json", "sync", &spec]),
    ));
    for t in run["targets"].as_array().unwrap() {
        assert_eq!(t["report"]["referrers"], 2, "{t}");
    }

    // The registry: the SBOM by digest with its blobs, the merged referrers
    // tag (the foreign entry kept), the signature's tag.
    let got = rt
        .block_on(dc.get_manifest("mirror/app", &sbom.digest.to_string()))
        .unwrap();
    assert_eq!(got.bytes, sbom.bytes);
    let parsed: serde_json::Value = serde_json::from_slice(&sbom.bytes).unwrap();
    for d in std::iter::once(&parsed["config"]).chain(parsed["layers"].as_array().unwrap()) {
        let digest = Digest::parse(d["digest"].as_str().unwrap()).unwrap();
        assert!(
            rt.block_on(dc.head_blob("mirror/app", &digest)).unwrap().is_some(),
            "blob {digest}"
        );
    }
    let tag = rt
        .block_on(dc.get_manifest("mirror/app", &fallback_tag(&subject.digest)))
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&tag.bytes).unwrap();
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [foreign.digest.as_str(), sbom.digest.as_str()], "{listed}");
    assert_eq!(listed["manifests"][1]["artifactType"], SPDX);
    let sig_there = rt
        .block_on(dc.head_manifest("mirror/app", &cosign_tag(&subject.digest, CosignKind::Signature)))
        .unwrap()
        .unwrap();
    assert_eq!(sig_there.digest, sig.digest);
    let image = rt.block_on(dc.head_manifest("mirror/app", "1.0")).unwrap().unwrap();
    assert_eq!(image.digest, subject.digest);

    // The layout: the SBOM untagged in index.json, the signature under its
    // cosign tag, the image readable by skopeo.
    let entry = layout_entry(&layout, |m| m["digest"] == sbom.digest.as_str()).expect("the SBOM in index.json");
    assert_eq!(entry["artifactType"], SPDX);
    assert!(ref_name(&entry).is_none());
    let sig_entry = layout_entry(&layout, |m| {
        ref_name(m) == Some(cosign_tag(&subject.digest, CosignKind::Signature).as_str())
    })
    .unwrap();
    assert_eq!(sig_entry["digest"], sig.digest.as_str());
    for d in [&sbom.digest, &sig.digest] {
        assert!(layout.join("blobs/sha256").join(d.hex()).is_file());
    }
    assert_oci_layout_readable(&layout, "1.0", subject.media_type == OCI_MANIFEST);

    // The air-gap hop: from the layout on to another registry, the
    // referrers still travel (found in index.json by their subject and tag).
    let hop = write_spec(
        &dir.join("hop"),
        &format!(
            "sync:\n  - from: oci://{}:1.0\n    to: registry://{}/airgap/app\n",
            layout.display(),
            dst.host
        ),
    );
    let plan = stdout(&assert_ok(
        &["sync", &hop, "--plan"],
        occy_with(&f, &["sync", &hop, "--plan"]),
    ));
    assert!(plan.contains("+ 2 referrers: 1 signature, 1 SBOM"), "{plan}");
    assert_ok(&["sync", &hop], occy_with(&f, &["sync", &hop]));
    let got = rt
        .block_on(dc.get_manifest("airgap/app", &sbom.digest.to_string()))
        .unwrap();
    assert_eq!(got.bytes, sbom.bytes);
    let tag = rt
        .block_on(dc.get_manifest("airgap/app", &fallback_tag(&subject.digest)))
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&tag.bytes).unwrap();
    assert_eq!(listed["manifests"][0]["digest"], sbom.digest.as_str(), "{listed}");
    let sig_hop = rt
        .block_on(dc.head_manifest("airgap/app", &cosign_tag(&subject.digest, CosignKind::Signature)))
        .unwrap()
        .unwrap();
    assert_eq!(sig_hop.digest, sig.digest);

    // Warm: the plan is one line, the run writes nothing.
    let before = dst.access_log().len();
    let plan = assert_ok(&["sync", &spec, "--plan"], occy_with(&f, &["sync", &spec, "--plan"]));
    assert!(stdout(&plan).contains("Nothing to do"), "{}", stdout(&plan));
    // The one warning: the foreign referrer the source never had.
    let warned: Vec<&str> = std::str::from_utf8(&plan.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(foreign.digest.short()) && warned[0].contains("no longer has"),
        "{warned:?}"
    );
    let plan_log = dst.access_log()[before..].to_string();
    let plan_requests = requests(&plan_log);
    // One HEAD of the tag, one referrers-API probe, one referrers tag, one HEAD of the .sig.
    assert!(
        plan_requests <= 4,
        "warm plan asked the destination {plan_requests} times:\n{plan_log}"
    );
    let before = dst.access_log().len();
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    let log = dst.access_log()[before..].to_string();
    assert!(writes(&log).is_empty(), "a warm run wrote:\n{log}");

    // Re-signed: one update, the new signature copied.
    let resigned = rt.block_on(push_signature(&sc, "refs/app", &subject.digest, "second"));
    let out = occy_with(&f, &["sync", &spec, "--plan", "-O", "json"]);
    let plan = json_of(&assert_ok(&["sync", &spec, "--plan", "-O", "json"], out));
    assert_eq!(plan["totals"]["update"], 2, "{plan}");
    for t in plan["targets"].as_array().unwrap() {
        let copy = t["referrers"]["copy"].as_array().unwrap();
        assert_eq!(copy.len(), 1, "{t}");
        assert_eq!(copy[0]["change"], "update");
        assert_eq!(copy[0]["descriptor"]["digest"], resigned.digest.as_str());
    }
    let before = dst.access_log().len();
    let run = json_of(&assert_ok(
        &["sync", &spec],
        occy_with(&f, &["-O", "json", "sync", &spec]),
    ));
    for t in run["targets"].as_array().unwrap() {
        assert_eq!(t["report"]["referrers"], 1, "{t}");
        assert_eq!(t["report"]["layers_copied"], 0, "the image's layers are in place: {t}");
    }
    let log = dst.access_log()[before..].to_string();
    let sig_there = rt
        .block_on(dc.head_manifest("mirror/app", &cosign_tag(&subject.digest, CosignKind::Signature)))
        .unwrap()
        .unwrap();
    assert_eq!(sig_there.digest, resigned.digest);
    let sig_entry = layout_entry(&layout, |m| {
        ref_name(m) == Some(cosign_tag(&subject.digest, CosignKind::Signature).as_str())
    })
    .unwrap();
    assert_eq!(sig_entry["digest"], resigned.digest.as_str());
    // The new signature's two blobs (POST + PUT each) and its manifest; the
    // image itself is not put again.
    let w = writes(&log);
    assert!(!w.iter().any(|l| l.contains("/manifests/1.0 ")), "{log}");
    assert_eq!(w.len(), 5, "{log}");
    eprintln!(
        "referrers tag: warm plan {plan_requests} destination requests; re-sign run {} writes",
        writes(&log).len()
    );
}

#[test]
fn referrers_travel_by_the_referrers_api() {
    let reg = Registry::shared(Mode::Plain);
    let proxy = ReferrersProxy::start(&reg.host);
    let dir = scratch_dir("referrers-api");
    let layout = dir.join("layout");
    reg.push_layout(&standard_images().0, "app-a", "refs-api/app:1.0");
    let rt = rt();
    // Pushed through the proxy: it lists the SBOM; no referrers tag exists.
    let pc = client(&proxy.host);
    let subject = rt.block_on(pc.head_manifest("refs-api/app", "1.0")).unwrap().unwrap();
    let sbom = rt.block_on(push_sbom(&pc, "refs-api/app", &subject, "api"));
    assert_eq!(
        proxy.listed("refs-api/app", subject.digest.as_str()),
        [sbom.digest.to_string()]
    );

    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{p}/refs-api/app:1.0\n    to: [registry://{p}/mirror-api/app, oci://{}]\n",
            layout.display(),
            p = proxy.host
        ),
    );
    let f = flags(&[&proxy.host]);
    let plan = stdout(&assert_ok(
        &["sync", &spec, "--plan"],
        occy_with(&f, &["sync", &spec, "--plan"]),
    ));
    assert!(plan.contains("+ 1 referrer: 1 SBOM"), "{plan}");
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));

    // Found through the API, copied by digest; the destination offers the
    // API, so no referrers tag is written there.
    let reqs = proxy.requests();
    assert!(
        reqs.iter()
            .any(|r| r == &format!("GET /v2/refs-api/app/referrers/{}", subject.digest)),
        "{reqs:?}"
    );
    assert_eq!(
        proxy.listed("mirror-api/app", subject.digest.as_str()),
        [sbom.digest.to_string()]
    );
    let rc = client(&reg.host);
    let got = rt
        .block_on(rc.get_manifest("mirror-api/app", &sbom.digest.to_string()))
        .unwrap();
    assert_eq!(got.bytes, sbom.bytes);
    let tags = rt.block_on(rc.list_tags("mirror-api/app")).unwrap();
    assert_eq!(tags, ["1.0"], "no referrers tag on a registry with the API");
    assert!(!rt
        .block_on(rc.list_tags("refs-api/app"))
        .unwrap()
        .contains(&fallback_tag(&subject.digest)));
    let entry = layout_entry(&layout, |m| m["digest"] == sbom.digest.as_str()).expect("the SBOM in index.json");
    assert_eq!(entry["artifactType"], SPDX);
    assert_oci_layout_readable(&layout, "1.0", subject.media_type == OCI_MANIFEST);

    // Warm: nothing to do, nothing written.
    let n = proxy.requests().len();
    let plan = stdout(&assert_ok(
        &["sync", &spec, "--plan"],
        occy_with(&f, &["sync", &spec, "--plan"]),
    ));
    assert!(plan.contains("Nothing to do") && !plan.contains("warning"), "{plan}");
    let warm: Vec<String> = proxy.requests()[n..].to_vec();
    assert!(
        warm.iter().all(|r| r.starts_with("GET ") || r.starts_with("HEAD ")),
        "{warm:?}"
    );
    eprintln!(
        "referrers API: warm plan {} requests through the proxy: {warm:?}",
        warm.len()
    );
}

#[test]
fn referrers_none_filters_and_lost_referrers() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("referrers-none");
    src.push_layout(&standard_images().0, "app-a", "refs-none/app:1.0");
    let rt = rt();
    let sc = client(&src.host);
    let subject = rt.block_on(sc.head_manifest("refs-none/app", "1.0")).unwrap().unwrap();
    rt.block_on(push_signature(&sc, "refs-none/app", &subject.digest, "only"));
    let sig_tag = cosign_tag(&subject.digest, CosignKind::Signature);
    let f = flags(&[&src.host]);

    // referrers: none — the image alone; and the whole repository expanded
    // (tags listed) does not take the .sig tag as an image of its own.
    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/refs-none/app:1.0\n    referrers: none\n    to: registry://{h}/mirror-none/app\n  - from: registry://{h}/refs-none/app\n    to: registry://{h}/mirror-all/app\n",
            h = src.host
        ),
    );
    let plan = json_of(&assert_ok(
        &["sync", &spec, "--plan", "-O", "json"],
        occy_with(&f, &["sync", &spec, "--plan", "-O", "json"]),
    ));
    assert_eq!(plan["totals"]["targets"], 2, "the .sig tag is not a target: {plan}");
    assert!(plan["targets"][0].get("referrers").is_none(), "{plan}");
    assert_eq!(plan["targets"][1]["referrers"]["copy"].as_array().unwrap().len(), 1);
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    assert_eq!(rt.block_on(sc.list_tags("mirror-none/app")).unwrap(), ["1.0"]);
    let mut all = rt.block_on(sc.list_tags("mirror-all/app")).unwrap();
    all.sort();
    assert_eq!(all, ["1.0".to_string(), sig_tag.clone()]);

    // A list of types: a signature is not an SBOM.
    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/refs-none/app:1.0\n    referrers: [sbom, application/spdx+json]\n    to: registry://{h}/mirror-typed/app\n",
            h = src.host
        ),
    );
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    assert_eq!(rt.block_on(sc.list_tags("mirror-typed/app")).unwrap(), ["1.0"]);
    // A misspelt type is a sync-file error, pointed at.
    let bad = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/refs-none/app:1.0\n    referrers: [signatures]\n    to: registry://{h}/mirror-typed/app\n",
            h = src.host
        ),
    );
    let err = assert_fails(
        &["sync", &bad, "--plan"],
        occy_with(&f, &["sync", &bad, "--plan"]),
        2,
        "\"signatures\" is not an artifact type",
    );
    assert!(err.contains("sync.yaml:4:"), "{err}");

    // A filtered entry: not copied, and the plan says why.
    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/refs-none/app:1.0\n    filters: [normalize-timestamps]\n    to: registry://{h}/mirror-filtered/app\n",
            h = src.host
        ),
    );
    let plan = stdout(&assert_ok(
        &["sync", &spec, "--plan"],
        occy_with(&f, &["sync", &spec, "--plan"]),
    ));
    assert!(
        plan.contains("referrers: 1 not copied: filters rewrite the image"),
        "{plan}"
    );

    // The source loses a referrer the mirror has: the plan warns.
    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/refs-none/app:1.0\n    to: registry://{h}/mirror-lost/app\n",
            h = src.host
        ),
    );
    let sbom = rt.block_on(push_sbom(&sc, "mirror-lost/app", &subject, "stale"));
    rt.block_on(push_referrers_tag(&sc, "mirror-lost/app", &subject.digest, &[&sbom]));
    let plan = stdout(&assert_ok(
        &["sync", &spec, "--plan"],
        occy_with(&f, &["sync", &spec, "--plan"]),
    ));
    assert!(
        plan.contains("that the source") && plan.contains("no longer has"),
        "{plan}"
    );
    assert!(plan.contains(sbom.digest.short()), "{plan}");
}

/// The access-log lines of `repo` after `from`.
fn lines_of(log: &str, from: usize, repo: &str) -> String {
    let needle = format!("/v2/{repo}/");
    log[from..]
        .lines()
        .filter(|l| l.contains(&needle))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn a_warm_plan_asks_a_destination_about_referrers_only_when_the_source_or_the_cache_has_some() {
    // Logged: the test counts what the plans ask.
    let src = Registry::start_logged(Mode::Plain);
    let dir = scratch_dir("referrers-warm-unsigned");
    src.push_layout(&standard_images().0, "app-a", "refs-unsigned/app:1.0");
    src.push_layout(&standard_images().0, "app-a", "refs-signed/app:1.0");
    let rt = rt();
    let sc = client(&src.host);
    let subject = rt
        .block_on(sc.head_manifest("refs-signed/app", "1.0"))
        .unwrap()
        .unwrap();
    let unsigned = rt
        .block_on(sc.head_manifest("refs-unsigned/app", "1.0"))
        .unwrap()
        .unwrap();
    assert_eq!(subject.digest, unsigned.digest, "one image in both repositories");
    let sbom = rt.block_on(push_sbom(&sc, "refs-signed/app", &subject, "kept"));
    rt.block_on(push_referrers_tag(&sc, "refs-signed/app", &subject.digest, &[&sbom]));
    let cache = dir.join("cache").display().to_string();
    let mut f = flags(&[&src.host]);
    f.extend(["--cache-dir".to_string(), cache.clone()]);
    let spec_of = |from: &str, to: &str, name: &str| {
        let d = dir.join(name);
        write_spec(
            &d,
            &format!(
                "sync:\n  - from: registry://{h}/{from}:1.0\n    to: registry://{h}/{to}\n",
                h = src.host
            ),
        )
    };

    // An unsigned image: once synced, a warm plan asks its destination for
    // the tag alone (no referrers tag, no referrers API probe).
    let unsigned_spec = spec_of("refs-unsigned/app", "mirror-unsigned/app", "unsigned");
    assert_ok(&["sync", &unsigned_spec], occy_with(&f, &["sync", &unsigned_spec]));
    let before = src.access_log().len();
    let plan = assert_ok(
        &["sync", &unsigned_spec, "--plan"],
        occy_with(&f, &["sync", &unsigned_spec, "--plan"]),
    );
    assert!(stdout(&plan).contains("Nothing to do"), "{}", stdout(&plan));
    let asked = lines_of(&src.access_log(), before, "mirror-unsigned/app");
    assert_eq!(requests(&asked), 1, "the warm plan asked the destination:\n{asked}");
    assert!(!asked.contains(&fallback_tag(&subject.digest)), "{asked}");
    // The source had no referrers of it when the sync looked, a moment ago:
    // it is asked for the tag alone (no tag listing, no referrers API probe).
    let asked = lines_of(&src.access_log(), before, "refs-unsigned/app");
    assert_eq!(requests(&asked), 1, "the warm plan asked the source:\n{asked}");
    assert!(!asked.contains("/tags/list"), "{asked}");
    // Without a cache nothing is remembered: the destination is asked.
    let before = src.access_log().len();
    let mut no_cache = flags(&[&src.host]);
    no_cache.push("--no-cache".to_string());
    assert_ok(
        &["sync", &unsigned_spec, "--plan"],
        occy_with(&no_cache, &["sync", &unsigned_spec, "--plan"]),
    );
    let asked = lines_of(&src.access_log(), before, "mirror-unsigned/app");
    assert!(
        asked.contains(&fallback_tag(&subject.digest)) || asked.contains("/referrers/"),
        "without a cache the referrers are looked up:\n{asked}"
    );

    // Referrers occy copied are remembered: when the source loses them, the
    // destination is asked and the plan warns.
    let signed_spec = spec_of("refs-signed/app", "mirror-refs/app", "signed");
    assert_ok(&["sync", &signed_spec], occy_with(&f, &["sync", &signed_spec]));
    let lost_spec = spec_of("refs-unsigned/app", "mirror-refs/app", "lost");
    let plan = stdout(&assert_ok(
        &["sync", &lost_spec, "--plan"],
        occy_with(&f, &["sync", &lost_spec, "--plan"]),
    ));
    assert!(
        plan.contains("that the source") && plan.contains("no longer has") && plan.contains(sbom.digest.short()),
        "{plan}"
    );
    // With a cache that never saw them, they are not occy's to warn about,
    // and nothing is asked.
    let mut fresh = flags(&[&src.host]);
    fresh.extend(["--cache-dir".to_string(), dir.join("fresh-cache").display().to_string()]);
    let before = src.access_log().len();
    let plan = stdout(&assert_ok(
        &["sync", &lost_spec, "--plan"],
        occy_with(&fresh, &["sync", &lost_spec, "--plan"]),
    ));
    assert!(!plan.contains("no longer has"), "{plan}");
    let asked = lines_of(&src.access_log(), before, "mirror-refs/app");
    assert!(!asked.contains(&fallback_tag(&subject.digest)), "{asked}");

    an_image_signed_after_it_was_mirrored_gets_its_signature_once_the_while_is_over(&src, &dir, &rt, &sc);
}

/// Ages every "no referrers at the source" the cache directory remembers
/// past the while it stands (as if the run were that much later).
fn age_unreferred(cache: &str) {
    let path = Path::new(cache).join("blob-locations.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entries = file["unreferred"]
        .as_array_mut()
        .expect("remembered source images without referrers");
    assert!(!entries.is_empty());
    for e in entries {
        let seen = e["seen"].as_u64().unwrap();
        e["seen"] = (seen - occy::blob_locations::UNREFERRED_FRESH_MILLIS).into();
    }
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
}

/// (Part of the test above, on its logged registry.)
/// (The caller's runtime and client: a client's connections belong to
/// the runtime that made them.)
fn an_image_signed_after_it_was_mirrored_gets_its_signature_once_the_while_is_over(
    src: &Registry,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    sc: &RegistryClient,
) {
    let dir = dir.join("signed-later");
    src.push_layout(&standard_images().0, "app-a", "later/app:1.0");
    let subject = rt.block_on(sc.head_manifest("later/app", "1.0")).unwrap().unwrap();
    let cache = dir.join("cache").display().to_string();
    let mut f = flags(&[&src.host]);
    f.extend(["--cache-dir".to_string(), cache.clone()]);
    let spec = write_spec(
        &dir,
        &format!(
            "sync:\n  - from: registry://{h}/later/app:1.0\n    to: registry://{h}/later-mirror/app\n",
            h = src.host
        ),
    );
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));

    // Signed after it was mirrored: within the while, the warm run does not
    // look again (the tag alone is asked on each side)...
    rt.block_on(push_signature(sc, "later/app", &subject.digest, "later"));
    let before = src.access_log().len();
    let out = assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("Nothing to do"), "{said}");
    let asked = lines_of(&src.access_log(), before, "later/app");
    assert_eq!(requests(&asked), 1, "{asked}");
    // ...a run without the cache does, and so does the first run after the while.
    let mut no_cache = flags(&[&src.host]);
    no_cache.push("--no-cache".to_string());
    let plan = json_of(&assert_ok(
        &["sync", &spec, "--plan", "-O", "json"],
        occy_with(&no_cache, &["-O", "json", "sync", &spec, "--plan"]),
    ));
    assert_eq!(plan["totals"]["update"], 1, "{plan}");
    age_unreferred(&cache);
    let run = json_of(&assert_ok(
        &["sync", &spec],
        occy_with(&f, &["-O", "json", "sync", &spec]),
    ));
    assert_eq!(run["targets"][0]["report"]["referrers"], 1, "{run}");
    let sig = cosign_tag(&subject.digest, CosignKind::Signature);
    let copied = rt
        .block_on(sc.head_manifest("later-mirror/app", &sig))
        .unwrap()
        .expect("the signature reached the mirror");
    // Signed images are looked up every run: the next warm run asks the
    // source again (a re-signed image gets its new signature at once).
    let before = src.access_log().len();
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    let asked = lines_of(&src.access_log(), before, "later/app");
    assert!(asked.contains("/tags/list") || asked.contains(&sig), "{asked}");
    assert_eq!(
        rt.block_on(sc.head_manifest("later-mirror/app", &sig))
            .unwrap()
            .map(|d| d.digest),
        Some(copied.digest)
    );
}

#[test]
fn check_warns_about_a_referrer_whose_subject_is_gone() {
    let reg = Registry::shared(Mode::Plain);
    reg.push_layout(&standard_images().0, "app-a", "refs-orphan/app:1.0");
    let rt = rt();
    let c = client(&reg.host);
    let subject = rt.block_on(c.head_manifest("refs-orphan/app", "1.0")).unwrap().unwrap();
    rt.block_on(push_signature(&c, "refs-orphan/app", &subject.digest, "kept"));
    let gone = Digest::of(b"an image deleted long ago");
    rt.block_on(push_signature(&c, "refs-orphan/app", &gone, "orphan"));
    let url = reg.url("refs-orphan/app:1.0");
    let out = reg.occy(&["-O", "json", "check", &url, "--fast"]);
    let r = json_of(&out);
    let warned: Vec<&serde_json::Value> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["check"] == "referrer-subject")
        .collect();
    assert_eq!(warned.len(), 1, "{r}");
    let msg = warned[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&cosign_tag(&gone, CosignKind::Signature)) && msg.contains(gone.as_str()),
        "{msg}"
    );
    assert_eq!(warned[0]["severity"], "warning");
}

#[test]
fn referrers_of_each_platform_manifest_travel_with_an_index() {
    let src = Registry::shared(Mode::Plain);
    let dir = scratch_dir("referrers-index");
    src.push_layout(&standard_images().0, "multiarch", "refs-multi/app:1.0");
    let rt = rt();
    let c = client(&src.host);
    let index = rt.block_on(c.get_manifest("refs-multi/app", "1.0")).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&index.bytes).unwrap();
    let child = &parsed["manifests"][1];
    let child = Descriptor::new(
        child["mediaType"].as_str().unwrap(),
        Digest::parse(child["digest"].as_str().unwrap()).unwrap(),
        child["size"].as_u64().unwrap(),
    );
    // An SBOM of one platform's manifest, a signature of the index.
    let sbom = rt.block_on(push_sbom(&c, "refs-multi/app", &child, "arm64"));
    rt.block_on(push_referrers_tag(&c, "refs-multi/app", &child.digest, &[&sbom]));
    let sig = rt.block_on(push_signature(&c, "refs-multi/app", &index.digest, "index"));
    let first = format!(
        "{}/{}",
        parsed["manifests"][0]["platform"]["os"].as_str().unwrap(),
        parsed["manifests"][0]["platform"]["architecture"].as_str().unwrap()
    );
    let spec = write_spec(
        &dir,
        &format!(
            "defaults:\n  platforms: all\nsync:\n  - from: registry://{h}/refs-multi/app:1.0\n    to: registry://{h}/mirror-multi/app\n  - from: registry://{h}/refs-multi/app:1.0\n    platforms: [{first}]\n    to: registry://{h}/mirror-subset/app\n",
            h = src.host,
        ),
    );
    let f = flags(&[&src.host]);
    let plan = stdout(&assert_ok(
        &["sync", &spec, "--plan"],
        occy_with(&f, &["sync", &spec, "--plan"]),
    ));
    assert!(plan.contains("+ 2 referrers: 1 signature, 1 SBOM"), "{plan}");
    assert!(
        plan.contains("referrers: 1 not copied: a subset of its platforms is taken"),
        "{plan}"
    );
    assert_ok(&["sync", &spec], occy_with(&f, &["sync", &spec]));
    let got = rt
        .block_on(c.get_manifest("mirror-multi/app", &sbom.digest.to_string()))
        .unwrap();
    assert_eq!(got.bytes, sbom.bytes);
    let listed = rt
        .block_on(c.get_manifest("mirror-multi/app", &fallback_tag(&child.digest)))
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.bytes).contains(sbom.digest.as_str()));
    let sig_there = rt
        .block_on(c.head_manifest("mirror-multi/app", &cosign_tag(&index.digest, CosignKind::Signature)))
        .unwrap()
        .unwrap();
    assert_eq!(sig_there.digest, sig.digest);
    assert_eq!(rt.block_on(c.list_tags("mirror-subset/app")).unwrap(), ["1.0"]);
}

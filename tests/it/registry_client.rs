//! The registry client against the real CNCF Distribution registry
//! (`/usr/bin/docker-registry` from Debian's `docker-registry` package):
//! plain HTTP, htpasswd basic auth and TLS with a private CA. Each test starts
//! its own registry (tests/it/support) and pushes its own tiny image with the
//! client's push primitives, then reads it back, pages tags and the
//! catalog, mounts across repositories and deletes.

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::support::{Mode, Registry, PASS, USER};
use occy::error::Error;
use occy::image::media_type::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use occy::image::{Descriptor, Digest, RawManifest};
use occy::reference::RegistryRef;
use occy::registry::{RegistryClient, RegistryOptions};
use occy::source::registry::RegistrySource;
use occy::source::Source;

/// Options that reach a plain-HTTP (or unverified TLS) test registry.
fn insecure_opts(reg: &Registry) -> RegistryOptions {
    RegistryOptions {
        insecure_hosts: vec![reg.host.clone()],
        retries: 2,
        ..Default::default()
    }
}

/// A tiny image: config, one layer, OCI manifest.
struct TestImage {
    config: (Descriptor, Bytes),
    layer: (Descriptor, Bytes),
    manifest: RawManifest,
}

fn test_image(seed: &str) -> TestImage {
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{"Env":["SEED={seed}"]}}}}"#,
        Digest::of(seed.as_bytes())
    ));
    // Content the registry does not inspect; big enough to span many chunks.
    let layer: Bytes = (0..300_000u32)
        .map(|i| (i.wrapping_mul(31) ^ seed.len() as u32) as u8)
        .collect::<Vec<u8>>()
        .into();
    let config_desc = Descriptor::new(OCI_CONFIG, Digest::of(&config), config.len() as u64);
    let layer_desc = Descriptor::new(OCI_LAYER_GZIP, Digest::of(&layer), layer.len() as u64);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
    });
    let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap());
    TestImage {
        config: (config_desc, config),
        layer: (layer_desc, layer),
        manifest: RawManifest::new(bytes, Some(OCI_MANIFEST)).unwrap(),
    }
}

/// Pushes an image: config from memory, layer streamed.
async fn push(client: &RegistryClient, repo: &str, tag: &str, img: &TestImage) {
    client
        .upload_blob_bytes(repo, &img.config.0, img.config.1.clone())
        .await
        .unwrap();
    let reader: occy::source::BlobReader = Box::pin(std::io::Cursor::new(img.layer.1.to_vec()));
    client.upload_blob(repo, &img.layer.0, reader).await.unwrap();
    let d = client.put_manifest(repo, tag, &img.manifest).await.unwrap();
    assert_eq!(d, img.manifest.digest);
}

#[tokio::test]
async fn plain_http_registry_end_to_end() {
    let reg = Registry::start(Mode::Plain);
    let client = RegistryClient::for_host(&reg.host, &insecure_opts(&reg)).unwrap();
    let img = test_image("one");

    // Push (streamed layer upload), then read everything back.
    push(&client, "team/app", "v1", &img).await;
    push(&client, "team/app", "v2", &img).await;
    let mut tags = client.list_tags("team/app").await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["v1", "v2"]);

    let m = client.get_manifest("team/app", "v1").await.unwrap();
    assert_eq!(m.digest, img.manifest.digest);
    assert_eq!(m.bytes, img.manifest.bytes);
    assert_eq!(m.media_type, OCI_MANIFEST);
    let by_digest = client
        .get_manifest("team/app", img.manifest.digest.as_str())
        .await
        .unwrap();
    assert_eq!(by_digest.digest, img.manifest.digest);
    let head = client.head_manifest("team/app", "v1").await.unwrap().unwrap();
    assert_eq!(head.digest, img.manifest.digest);
    assert_eq!(head.size, img.manifest.bytes.len() as u64);
    assert_eq!(head.media_type, OCI_MANIFEST);

    assert_eq!(
        client.head_blob("team/app", &img.layer.0.digest).await.unwrap(),
        Some(img.layer.0.size)
    );
    assert_eq!(
        client.head_blob("team/app", &Digest::of(b"absent")).await.unwrap(),
        None
    );
    let mut r = client.get_blob("team/app", &img.layer.0).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, img.layer.1);

    // Cross-repository mount: 201 when the source has it, false (202) when not.
    assert!(client
        .mount_blob("other/app", &img.layer.0.digest, "team/app")
        .await
        .unwrap());
    assert_eq!(
        client.head_blob("other/app", &img.layer.0.digest).await.unwrap(),
        Some(img.layer.0.size)
    );
    let img2 = test_image("two");
    client
        .upload_blob_bytes("third", &img2.config.0, img2.config.1.clone())
        .await
        .unwrap();
    assert!(!client
        .mount_blob("fourth", &img2.layer.0.digest, "third")
        .await
        .unwrap());
    push(&client, "fourth", "latest", &img2).await;

    // The catalog, paged two at a time by the registry's Link headers.
    let paged = client.clone().with_page_size(2);
    let mut repos = paged.catalog().await.unwrap();
    repos.sort();
    assert_eq!(repos, vec!["fourth", "other/app", "team/app", "third"]);
    let paged_tags = paged.list_tags("team/app").await.unwrap();
    assert_eq!(paged_tags.len(), 2);

    // 404s are NotFound errors that say what is missing: a tag, a manifest
    // asked by digest (a repository, where the registry answers
    // NAME_UNKNOWN: src/registry/client_tests.rs).
    let err = client.get_manifest("team/app", "nope").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m == &format!("tag team/app:nope not found on {}", reg.host)),
        "{err:?}"
    );
    let absent = Digest::of(b"no such manifest");
    let err = client.get_manifest("team/app", absent.as_str()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m == &format!("manifest team/app@{absent} not found on {}", reg.host)),
        "{err:?}"
    );
    assert_eq!(client.head_manifest("team/app", "nope").await.unwrap(), None);
    let err = client.list_tags("no/such/repo").await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(m) if m.contains("no/such/repo")),
        "{err:?}"
    );
    let missing = Descriptor::new(OCI_LAYER_GZIP, Digest::of(b"absent"), 6);
    assert!(matches!(
        client.get_blob("team/app", &missing).await,
        Err(Error::NotFound(_))
    ));

    // The Source view of the same image.
    let reference = RegistryRef {
        host: reg.host.clone(),
        repository: "team/app".into(),
        tag: Some("v2".into()),
        digest: None,
    };
    let source = RegistrySource::new(reference, &insecure_opts(&reg)).unwrap();
    assert_eq!(source.describe(), format!("registry://{}/team/app:v2", reg.host));
    let root = source.root_manifest().await.unwrap();
    assert_eq!(root.digest, img.manifest.digest);
    assert_eq!(
        source.manifest(&img.manifest.digest).await.unwrap().bytes,
        img.manifest.bytes
    );
    let mut r = source.open_blob(&img.config.0).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, img.config.1);
    let pinned = RegistryRef {
        host: reg.host.clone(),
        repository: "team/app".into(),
        tag: None,
        digest: Some(img.manifest.digest.clone()),
    };
    let source = RegistrySource::new(pinned, &insecure_opts(&reg)).unwrap();
    assert_eq!(source.root_manifest().await.unwrap().digest, img.manifest.digest);

    // Deletes (enabled in this registry's config).
    client
        .delete_manifest("fourth", img2.manifest.digest.as_str())
        .await
        .unwrap();
    assert_eq!(client.head_manifest("fourth", "latest").await.unwrap(), None);
}

#[tokio::test]
async fn plain_http_needs_insecure_registry() {
    let reg = Registry::start(Mode::Plain);
    let opts = RegistryOptions {
        retries: 0,
        ..Default::default()
    };
    let client = RegistryClient::for_host(&reg.host, &opts).unwrap();
    let err = client.list_tags("x").await.unwrap_err();
    let want = format!(
        "{h} answered plain HTTP: add --insecure-registry {h} (or insecure: true under registries: in the sync file)",
        h = reg.host
    );
    assert!(matches!(&err, Error::Network(m) if m == &want), "{err:?}");

    // The same sentence from the command line and from a sync file, at
    // once (a plain-HTTP answer is not retried), without TLS jargon.
    let started = std::time::Instant::now();
    let src = reg.url("x:1");
    let args = ["info", src.as_str()];
    let stderr = crate::support::fails(&args, 1, &want);
    assert!(!stderr.contains("InvalidContentType"), "{stderr}");
    let dir = crate::support::scratch_dir("plain-http-sync");
    let file = dir.join("sync.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nsync:\n  - from: {src}\n    to: oci://{}:x\n",
            dir.join("out").display()
        ),
    )
    .unwrap();
    let args = ["sync", file.to_str().unwrap()];
    crate::support::fails(&args, 1, &want);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn basic_auth_with_htpasswd() {
    let reg = Registry::start(Mode::Basic);
    let mut good = insecure_opts(&reg);
    good.username = Some(USER.into());
    good.password = Some(PASS.into());
    let client = RegistryClient::for_host(&reg.host, &good).unwrap();
    let img = test_image("auth");
    push(&client, "secure/app", "v1", &img).await;
    assert_eq!(client.list_tags("secure/app").await.unwrap(), vec!["v1"]);
    assert_eq!(client.catalog().await.unwrap(), vec!["secure/app"]);
    let mut r = client.get_blob("secure/app", &img.layer.0).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len() as u64, img.layer.0.size);

    // A wrong password: Unauthorized, and the password appears nowhere.
    let mut bad = insecure_opts(&reg);
    bad.username = Some(USER.into());
    bad.password = Some("wrong-battery-staple".into());
    let client = RegistryClient::for_host(&reg.host, &bad).unwrap();
    let err = client.get_manifest("secure/app", "v1").await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("refused the credentials for secure/app"), "{text}");
    assert!(!text.contains("wrong-battery-staple"), "{text}");
    assert!(!format!("{client:?} {bad:?}").contains("wrong-battery-staple"));

    // No credentials at all.
    let anon = RegistryClient::for_host(&reg.host, &insecure_opts(&reg)).unwrap();
    let err = anon.list_tags("secure/app").await.unwrap_err();
    assert!(
        matches!(&err, Error::Unauthorized(m) if m.contains("requires credentials")),
        "{err:?}"
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let reg = Registry::start(Mode::Tls);
    // Unknown CA: refused, with a hint.
    let strict = RegistryOptions {
        retries: 0,
        ..Default::default()
    };
    let client = RegistryClient::for_host(&reg.host, &strict).unwrap();
    let err = client.catalog().await.unwrap_err();
    assert!(
        matches!(&err, Error::Network(m) if m.contains("certificate") && m.contains("--cert-dir")),
        "{err:?}"
    );
    // --cert-dir with the CA: verified and working.
    let with_ca = RegistryOptions {
        cert_dir: Some(reg.cert_dir()),
        retries: 1,
        ..Default::default()
    };
    let client = RegistryClient::for_host(&reg.host, &with_ca).unwrap();
    let img = test_image("tls");
    push(&client, "tls/app", "v1", &img).await;
    assert_eq!(client.list_tags("tls/app").await.unwrap(), vec!["v1"]);
    // --insecure-registry: HTTPS without verification (no fallback to HTTP needed).
    let insecure = insecure_opts(&reg);
    let client = RegistryClient::for_host(&reg.host, &insecure).unwrap();
    let m = client.get_manifest("tls/app", "v1").await.unwrap();
    assert_eq!(m.digest, img.manifest.digest);
}

/// What an insecure host speaks is remembered in the cache directory
/// (`hosts/HOST`), so a warm run sends no HTTPS probe; a remembered scheme
/// that no longer holds (the host moved between plain HTTP and HTTPS) is
/// forgotten, probed again and rewritten, and the run succeeds.
#[test]
fn an_insecure_hosts_scheme_is_remembered_and_probed_again_when_it_changed() {
    for (mode, speaks, wrong) in [(Mode::Plain, "http", "https"), (Mode::Tls, "https", "http")] {
        let reg = Registry::shared(mode);
        let image = reg.push_standard("base");
        let cache = crate::support::scratch_dir("scheme-memory");
        let remembered = cache.join("hosts").join(reg.host.replace(':', "_"));
        let info = |what: &str| {
            let args = [
                "--cache-dir",
                cache.to_str().unwrap(),
                "--insecure-registry",
                &reg.host,
                "info",
                &image,
            ];
            let out = crate::support::occy(&args);
            assert!(
                out.status.success(),
                "{what}: occy {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        info("first run");
        assert_eq!(std::fs::read_to_string(&remembered).unwrap().trim(), speaks, "{mode:?}");
        info("warm run");
        assert_eq!(std::fs::read_to_string(&remembered).unwrap().trim(), speaks, "{mode:?}");
        // The host "moved": what was remembered fails, is probed again.
        std::fs::write(&remembered, format!("{wrong}\n")).unwrap();
        info("after the host changed");
        assert_eq!(std::fs::read_to_string(&remembered).unwrap().trim(), speaks, "{mode:?}");
    }
}

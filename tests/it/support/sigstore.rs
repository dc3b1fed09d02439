//! Keyless (sigstore) and Notation signatures for the provenance tests,
//! without occy's code: the trust material and envelopes come from
//! `sigstore_material.py` (pyca/cryptography, per the sigstore, Rekor,
//! RFC 6962 and Notary Project specs), are pushed to the real Distribution
//! registry as OCI 1.1 referrers (listed in the referrers tag, or through
//! the referrers-API proxy) and as keyless cosign `.sig` tags (with curl),
//! and are
//! judged independently by sigstore-python (`sigstore verify identity
//! --offline` with the test trust root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use occy::image::media_type::{OCI_INDEX, OCI_MANIFEST};
use occy::image::referrers::{cosign_tag, fallback_tag, CosignKind};
use occy::image::{Descriptor, Digest};

use super::{cosign, scratch, unavailable, Registry};

pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const NOTATION: &str = "application/vnd.cncf.notary.signature";
pub const JOSE: &str = "application/jose+json";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const ISSUER: &str = "https://issuer.example.test";
pub const ALICE: &str = "alice@example.test";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/sigstore_material.py")
}

/// The trust material made once for the test binary: `DIR/trusted_root.json`,
/// `DIR/trust_config.json`, `DIR/notation/{trustpolicy.json,truststore}`.
pub struct Material {
    pub dir: PathBuf,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The material, or None (after saying so; CI fails) when python3 with
/// pyca/cryptography or sigstore-python is missing.
pub fn material() -> Option<&'static Material> {
    static M: OnceLock<Option<Material>> = OnceLock::new();
    M.get_or_init(|| {
        let sigstore = Command::new("sigstore").arg("--version").output();
        if !sigstore.is_ok_and(|o| o.status.success()) {
            unavailable(
                "sigstore-python",
                "`sigstore --version` does not run: pip install sigstore (./test.sh installs it)",
            );
            return None;
        }
        let dir = scratch().join("sigstore-material");
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("python3").arg(script()).arg("init").arg(&dir));
        Some(Material { dir })
    })
    .as_ref()
}

impl Material {
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.join("trusted_root.json")
    }

    pub fn trust_store(&self) -> PathBuf {
        self.dir.join("notation/truststore")
    }

    pub fn trust_policy(&self) -> PathBuf {
        self.dir.join("notation/trustpolicy.json")
    }

    /// A sigstore bundle signing `digest`, written to `DIR/NAME.json`
    /// (`extra`: `--identity`, `--issuer`, `--ca rogue`, `--version 0.1`,
    /// `--no-tlog`, `--tamper`).
    pub fn bundle(&self, name: &str, digest: &str, extra: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("{name}.json"));
        run(Command::new("python3")
            .arg(script())
            .arg("bundle")
            .arg(&self.dir)
            .arg(&out)
            .args(["--digest", digest])
            .args(extra));
        out
    }

    /// A cosign v2 keyless `.sig` layer: its payload and annotations.
    pub fn keyless_sig(&self, name: &str, digest: &str, reference: &str) -> (Vec<u8>, BTreeMap<String, String>) {
        let out = self.dir.join(name);
        run(Command::new("python3")
            .arg(script())
            .arg("sig")
            .arg(&self.dir)
            .arg(&out)
            .args(["--digest", digest, "--reference", reference]));
        let payload = std::fs::read(out.join("payload")).unwrap();
        let annotations = serde_json::from_slice(&std::fs::read(out.join("annotations.json")).unwrap()).unwrap();
        (payload, annotations)
    }

    /// A Notation JWS envelope for `subject` (`extra`: `--ca rogue`,
    /// `--tamper`, `--cn NAME`); returns its bytes and the chain's thumbprints.
    pub fn notation(&self, name: &str, subject: &Descriptor, extra: &[&str]) -> (Vec<u8>, Vec<String>) {
        let out = self.dir.join(format!("{name}.jws"));
        run(Command::new("python3")
            .arg(script())
            .arg("notation")
            .arg(&self.dir)
            .arg(&out)
            .args(["--digest", subject.digest.as_str()])
            .args(["--size", &subject.size.to_string()])
            .args(["--media-type", &subject.media_type])
            .args(extra));
        let thumbprints =
            serde_json::from_slice(&std::fs::read(format!("{}.thumbprints", out.display())).unwrap()).unwrap();
        (std::fs::read(&out).unwrap(), thumbprints)
    }

    /// sigstore-python's verdict on `bundle` for `digest`: whether it
    /// accepted it, and what it said.
    pub fn sigstore_python(&self, bundle: &Path, digest: &str, identity: &str) -> (bool, String) {
        let out = Command::new("sigstore")
            .arg("--trust-config")
            .arg(self.dir.join("trust_config.json"))
            .args(["verify", "identity", "--offline", "--bundle"])
            .arg(bundle)
            .args(["--cert-identity", identity, "--cert-oidc-issuer", ISSUER, digest])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// PUTs `bytes` as manifest `repo:reference` on `host` with `content_type`
/// (curl); returns its digest.
fn put_manifest(host: &str, repo: &str, reference: &str, content_type: &str, bytes: &[u8]) -> Digest {
    let file = super::scratch_dir("sigstore-manifest").join("manifest");
    std::fs::write(&file, bytes).unwrap();
    run(Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{host}/v2/{repo}/manifests/{reference}")));
    Digest::of(bytes)
}

fn blob(reg: &Registry, repo: &str, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let digest = cosign::push_blob(reg, repo, bytes);
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// The image `repo:tag` on `reg`: its descriptor (media type, digest, size).
pub fn image(reg: &Registry, repo: &str, tag: &str) -> Descriptor {
    let bytes = cosign::http_get(&reg.host, &format!("{repo}/manifests/{tag}"));
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Descriptor::new(
        v["mediaType"].as_str().unwrap_or(OCI_MANIFEST),
        Digest::of(&bytes),
        bytes.len() as u64,
    )
}

/// A pushed referrer: its manifest bytes and digest.
pub struct Pushed {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// How a referrer is listed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// In the `sha256-<hex>` referrers tag (a registry without the API).
    Tag,
    /// By a registry with the referrers API: the manifest is PUT through
    /// `via` (the proxy, which lists what is PUT through it).
    Api,
}

/// Pushes an OCI 1.1 artifact of `subject` (empty config, one layer
/// `bytes` of `layer_type`, `annotations`) to `reg`, its manifest PUT
/// through `via` (the registry itself or the referrers proxy), listed as
/// `listing` says.
#[allow(clippy::too_many_arguments)]
pub fn push_referrer(
    reg: &Registry,
    via: &str,
    repo: &str,
    subject: &Descriptor,
    artifact_type: &str,
    layer_type: &str,
    bytes: &[u8],
    annotations: serde_json::Value,
    listing: Listing,
) -> Pushed {
    let config = blob(reg, repo, EMPTY, b"{}");
    let layer = blob(reg, repo, layer_type, bytes);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [layer],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.as_str(), "size": subject.size},
        "annotations": annotations,
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = Digest::of(&bytes);
    put_manifest(via, repo, digest.as_str(), OCI_MANIFEST, &bytes);
    if listing == Listing::Tag {
        list_in_referrers_tag(reg, repo, subject, &digest, bytes.len(), artifact_type, annotations);
    }
    Pushed { digest, bytes }
}

/// Adds a referrer to the `sha256-<hex>` referrers tag of `subject`.
fn list_in_referrers_tag(
    reg: &Registry,
    repo: &str,
    subject: &Descriptor,
    digest: &Digest,
    size: usize,
    artifact_type: &str,
    annotations: serde_json::Value,
) {
    let tag = fallback_tag(&subject.digest);
    let existing = Command::new("curl")
        .args(["-sf", "-H"])
        .arg(format!("Accept: {OCI_INDEX}"))
        .arg(format!("http://{}/v2/{repo}/manifests/{tag}", reg.host))
        .output()
        .unwrap();
    let mut entries: Vec<serde_json::Value> = if existing.status.success() {
        serde_json::from_slice::<serde_json::Value>(&existing.stdout).unwrap()["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    entries.push(serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest.as_str(),
        "size": size,
        "artifactType": artifact_type,
        "annotations": annotations,
    }));
    let ix = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    put_manifest(&reg.host, repo, &tag, OCI_INDEX, &serde_json::to_vec(&ix).unwrap());
}

/// cosign's OCI 1.1 referrer form of a signature manifest
/// (`--registry-referrers-mode=oci-1-1`): a simple-signing layer with its
/// annotations, artifact type `application/vnd.dev.cosign.artifact.sig.v1+json`,
/// listed in the referrers tag.
pub fn push_cosign_referrer(
    reg: &Registry,
    repo: &str,
    subject: &Descriptor,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
) -> Pushed {
    const SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let config = blob(reg, repo, EMPTY, b"{}");
    let mut layer = blob(reg, repo, cosign::SIMPLE_SIGNING, payload);
    layer["annotations"] = serde_json::to_value(annotations).unwrap();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG_ARTIFACT,
        "config": config,
        "layers": [layer],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.as_str(), "size": subject.size},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    });
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = Digest::of(&bytes);
    put_manifest(&reg.host, repo, digest.as_str(), OCI_MANIFEST, &bytes);
    list_in_referrers_tag(
        reg,
        repo,
        subject,
        &digest,
        bytes.len(),
        SIG_ARTIFACT,
        serde_json::json!({}),
    );
    Pushed { digest, bytes }
}

/// A sigstore bundle as cosign v3 attaches it.
pub fn push_bundle(
    reg: &Registry,
    via: &str,
    repo: &str,
    subject: &Descriptor,
    bundle: &[u8],
    listing: Listing,
) -> Pushed {
    let annotations = serde_json::json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    });
    push_referrer(
        reg,
        via,
        repo,
        subject,
        BUNDLE_V03,
        BUNDLE_V03,
        bundle,
        annotations,
        listing,
    )
}

/// A Notation JWS envelope as `notation sign` attaches it.
pub fn push_notation(
    reg: &Registry,
    repo: &str,
    subject: &Descriptor,
    envelope: &[u8],
    thumbprints: &[String],
) -> Pushed {
    let annotations = serde_json::json!({
        "io.cncf.notary.x509chain.thumbprint#S256": serde_json::to_string(thumbprints).unwrap(),
        "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    });
    push_referrer(
        reg,
        &reg.host,
        repo,
        subject,
        NOTATION,
        JOSE,
        envelope,
        annotations,
        Listing::Tag,
    )
}

/// A keyless cosign v2 `.sig` manifest of `subject`: one simple-signing
/// layer with the signature, certificate, chain and Rekor bundle annotations.
pub fn push_keyless_sig(
    reg: &Registry,
    repo: &str,
    subject: &Digest,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
) {
    let mut layer = blob(reg, repo, cosign::SIMPLE_SIGNING, payload);
    let config = format!(
        r#"{{"architecture":"","config":{{}},"created":"0001-01-01T00:00:00Z","os":"","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer["digest"].as_str().unwrap()
    );
    let config = blob(reg, repo, "application/vnd.oci.image.config.v1+json", config.as_bytes());
    layer["annotations"] = serde_json::to_value(annotations).unwrap();
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    put_manifest(
        &reg.host,
        repo,
        &cosign_tag(subject, CosignKind::Signature),
        OCI_MANIFEST,
        &serde_json::to_vec(&m).unwrap(),
    );
}

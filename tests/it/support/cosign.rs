//! Signing images the way cosign does, without cosign (not packaged) and
//! without occy's code: keys made by `openssl ecparam -genkey -name
//! prime256v1` / `openssl ec -pubout`; a simple-signing JSON payload
//! (`critical.identity.docker-reference`, `critical.image.docker-manifest-digest`,
//! `critical.type: cosign container image signature`); an ECDSA
//! P-256/SHA-256 signature (`openssl dgst -sha256 -sign`, DER), base64 in
//! the layer annotation `dev.cosignproject.cosign/signature`; the layer of
//! media type `application/vnd.dev.cosign.simplesigning.v1+json` in an OCI
//! manifest pushed under the tag `sha256-<hex>.sig` with plain HTTP
//! (`curl`) to a real Distribution registry. Reading a mirrored signature
//! back goes through `curl` and the OCI layout's files, never occy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::{require, scratch_dir, Registry};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A cosign-style key pair: `NAME.key` (EC private key) and `NAME.pub`
/// (PEM public key, as `cosign public-key` writes it).
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
    /// An Ed25519 pair (cosign signs the payload itself), else ECDSA P-256.
    pub ed25519: bool,
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn run_with_input(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new P-256 key pair in `dir`.
pub fn keypair(dir: &Path, name: &str) -> KeyPair {
    require("openssl", "openssl");
    std::fs::create_dir_all(dir).unwrap();
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run(Command::new("openssl")
        .args(["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out"])
        .arg(&private));
    run(Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&private)
        .arg("-pubout")
        .arg("-out")
        .arg(&public));
    KeyPair {
        private,
        public,
        ed25519: false,
    }
}

/// A new Ed25519 key pair in `dir` (`openssl genpkey -algorithm ed25519`).
pub fn ed25519_keypair(dir: &Path, name: &str) -> KeyPair {
    require("openssl", "openssl");
    std::fs::create_dir_all(dir).unwrap();
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private));
    run(Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&private)
        .arg("-pubout")
        .arg("-out")
        .arg(&public));
    KeyPair {
        private,
        public,
        ed25519: true,
    }
}

/// `sha256:<hex>` of `bytes` (openssl).
pub fn sha256(bytes: &[u8]) -> String {
    let out = run_with_input(Command::new("openssl").args(["dgst", "-sha256", "-r"]), bytes);
    let text = String::from_utf8(out).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

pub fn base64_encode(bytes: &[u8]) -> String {
    let out = run_with_input(Command::new("openssl").args(["base64", "-A"]), bytes);
    String::from_utf8(out).unwrap().trim().to_string()
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    run_with_input(Command::new("openssl").args(["base64", "-d", "-A"]), text.as_bytes())
}

/// The simple-signing payload cosign signs for `docker_reference` (a
/// repository, `host/repo`) at `digest`.
pub fn payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap()
}

/// The signature of `payload` by `key`: ECDSA P-256/SHA-256 in DER, or
/// Ed25519 of the payload itself (64 bytes).
pub fn sign_payload(key: &KeyPair, payload: &[u8]) -> Vec<u8> {
    let dir = scratch_dir("cosign-sign");
    let file = dir.join("payload");
    std::fs::write(&file, payload).unwrap();
    if key.ed25519 {
        return run(Command::new("openssl")
            .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
            .arg(&key.private)
            .arg("-in")
            .arg(&file));
    }
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key.private)
        .arg(&file))
}

/// `http://HOST` of a plain-HTTP test registry.
fn base(reg: &Registry) -> String {
    assert_eq!(reg.mode, super::Mode::Plain, "cosign helpers speak plain HTTP");
    format!("http://{}", reg.host)
}

/// Uploads `bytes` as a blob of `repo` (POST, then PUT with the digest);
/// returns its digest.
pub fn push_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    require("curl", "curl");
    let digest = sha256(bytes);
    let headers = run(Command::new("curl")
        .args(["-sf", "-D", "-", "-o", "/dev/null", "-X", "POST"])
        .arg(format!("{}/v2/{repo}/blobs/uploads/", base(reg))));
    let headers = String::from_utf8(headers).unwrap();
    let location = headers
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location").then(|| v.trim().to_string())
        })
        .expect("upload Location");
    let location = if location.starts_with('/') {
        format!("{}{location}", base(reg))
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let dir = scratch_dir("cosign-blob");
    std::fs::write(dir.join("blob"), bytes).unwrap();
    run(Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", dir.join("blob").display()))
        .arg(format!("{location}{sep}digest={digest}")));
    digest
}

/// PUTs `manifest` (OCI) as `repo:reference`; returns its digest.
pub fn put_manifest(reg: &Registry, repo: &str, reference: &str, manifest: &[u8]) -> String {
    let dir = scratch_dir("cosign-manifest");
    std::fs::write(dir.join("manifest"), manifest).unwrap();
    run(Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {OCI_MANIFEST}"))
        .arg("--data-binary")
        .arg(format!("@{}", dir.join("manifest").display()))
        .arg(format!("{}/v2/{repo}/manifests/{reference}", base(reg))));
    sha256(manifest)
}

/// The cosign tag of a manifest digest: `sha256-<hex>.sig`.
pub fn sig_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Pushes a cosign signature manifest holding `layers` (payload, DER
/// signature) as `repo:sha256-<subject hex>.sig`, config as cosign (go-containerregistry) writes it; returns the manifest digest.
pub fn push_signatures(reg: &Registry, repo: &str, subject: &str, layers: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (payload, sig) in layers {
        let digest = push_blob(reg, repo, payload);
        diff_ids.push(digest.clone());
        descs.push(json!({
            "mediaType": SIMPLE_SIGNING,
            "size": payload.len(),
            "digest": digest,
            "annotations": {SIGNATURE_ANNOTATION: base64_encode(sig)}
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {}
    }))
    .unwrap();
    let config_digest = push_blob(reg, repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": descs
    }))
    .unwrap();
    put_manifest(reg, repo, &sig_tag(subject), &manifest)
}

/// Signs `repo@digest` on `reg` with `key` as `cosign sign --key` does;
/// returns (payload, DER signature).
pub fn sign_image(reg: &Registry, repo: &str, digest: &str, key: &KeyPair) -> (Vec<u8>, Vec<u8>) {
    let p = payload(&format!("{}/{repo}", reg.host), digest);
    let sig = sign_payload(key, &p);
    push_signatures(reg, repo, digest, &[(p.clone(), sig.clone())]);
    (p, sig)
}

/// GET `http://HOST/v2/PATH` (manifests with every manifest type accepted).
pub fn http_get(host: &str, path: &str) -> Vec<u8> {
    require("curl", "curl");
    run(Command::new("curl")
        .args(["-sfL", "-H"])
        .arg(format!("Accept: {ACCEPT}"))
        .arg(format!("http://{host}/v2/{path}")))
}

/// The `Docker-Content-Digest` of `repo:reference` on `host` (a HEAD).
pub fn http_manifest_digest(host: &str, repo: &str, reference: &str) -> String {
    let headers = run(Command::new("curl")
        .args(["-sfI", "-H"])
        .arg(format!("Accept: {ACCEPT}"))
        .arg(format!("http://{host}/v2/{repo}/manifests/{reference}")));
    String::from_utf8(headers)
        .unwrap()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .expect("Docker-Content-Digest")
}

/// A signature read back from a mirror: the payload and the DER signature
/// of each simple-signing layer of the `.sig` manifest.
pub fn signatures_in(manifest: &[u8], blob: impl Fn(&str) -> Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == SIMPLE_SIGNING)
        .map(|l| {
            let payload = blob(l["digest"].as_str().unwrap());
            let sig = base64_decode(l["annotations"][SIGNATURE_ANNOTATION].as_str().unwrap());
            (payload, sig)
        })
        .collect()
}

/// `openssl dgst -sha256 -verify PUB -signature SIG.der PAYLOAD`: its
/// output ("Verified OK" or "Verification failure") and whether it passed.
pub fn openssl_verify(public: &Path, payload: &[u8], sig: &[u8]) -> (String, bool) {
    let dir = scratch_dir("cosign-verify");
    std::fs::write(dir.join("PAYLOAD"), payload).unwrap();
    std::fs::write(dir.join("SIG.der"), sig).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(dir.join("SIG.der"))
        .arg(dir.join("PAYLOAD"))
        .output()
        .unwrap();
    (
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string(),
        out.status.success(),
    )
}

/// The payload's `critical.image.docker-manifest-digest`.
pub fn signed_digest(payload: &[u8]) -> String {
    let v: Value = serde_json::from_slice(payload).unwrap();
    v["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap()
        .to_string()
}

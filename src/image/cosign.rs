//! Cosign signatures, as cosign writes them: a `sha256-<hex>.sig` manifest
//! whose layers (media type `application/vnd.dev.cosign.simplesigning.v1+json`)
//! are simple-signing payloads, each signed in the layer annotation
//! `dev.cosignproject.cosign/signature` (base64). This module parses those
//! manifests and payloads, reads public keys (ECDSA P-256/P-384 and Ed25519, PEM)
//! and checks one signature against an image digest. Fetching is the
//! caller's (`plan::verify`); nothing here does I/O.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::x509::Key;
use super::{Descriptor, Digest, ImageManifest};

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// `critical.type` of a cosign image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// Payloads larger than this are not read (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_SIZE: u64 = 64 * 1024;

/// A public key that may have signed an image.
#[derive(Clone)]
pub struct PublicKey {
    /// How the user named it (the path as written in the sync file or on the command line).
    pub name: String,
    key: Key,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.algorithm(), self.name)
    }
}

impl PublicKey {
    /// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign
    /// public-key` and `openssl ec -pubout` write it) named `name`.
    pub fn from_pem(name: &str, pem: &str) -> Result<PublicKey, String> {
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            let what = if pem.contains("PRIVATE KEY-----") {
                "a private key"
            } else {
                "not a PEM public key"
            };
            return Err(format!(
                "{name} is {what}: expected an ECDSA P-256 or Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----); export it with `cosign public-key --key cosign.key` or `openssl ec -in key.pem -pubout`"
            ));
        }
        let start = pem.find("-----BEGIN PUBLIC KEY-----").unwrap_or(0);
        let key = pem_rfc7468::decode_vec(&pem.as_bytes()[start..])
            .map_err(|e| e.to_string())
            .and_then(|(_, der)| Key::from_spki_der(&der))
            .map_err(|_| {
                format!(
                    "{name} is a PEM public key of another kind: occy verifies ECDSA P-256 (prime256v1), P-384 and Ed25519 keys, the kinds cosign makes"
                )
            })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    /// `ECDSA P-256`, `ECDSA P-384` or `Ed25519`.
    pub fn algorithm(&self) -> &'static str {
        self.key.algorithm()
    }

    /// Whether `signature` is this key's signature of `payload`: ECDSA
    /// (DER) over SHA-256 for P-256 and SHA-384 for P-384, or Ed25519 of
    /// the payload itself, as cosign signs with each.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        self.key.verify_der(self.key.default_hash(), payload, signature)
    }
}

/// One simple-signing layer of a `.sig` manifest: where its payload is and
/// the signature the annotation carries.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// The payload blob.
    pub payload: Descriptor,
    /// The decoded signature, or why the annotation is unusable.
    pub signature: Result<Vec<u8>, String>,
}

/// The simple-signing layers of a cosign `.sig` manifest (other layers are
/// not signatures and are left out).
pub fn signature_layers(manifest: &ImageManifest) -> Vec<SignatureLayer> {
    manifest
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
        .map(|l| {
            let signature = match l.annotations().and_then(|a| a.get(SIGNATURE_ANNOTATION)) {
                None => Err(format!("the layer has no {SIGNATURE_ANNOTATION} annotation")),
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("its {SIGNATURE_ANNOTATION} annotation is not base64: {e}")),
            };
            SignatureLayer {
                payload: l.clone(),
                signature,
            }
        })
        .collect()
}

/// What a simple-signing payload claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`: the repository signed.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`: the manifest signed.
    pub manifest_digest: Digest,
}

#[derive(Deserialize)]
struct PayloadDoc {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: ImagePart,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct ImagePart {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Reads a simple-signing payload.
pub fn parse_payload(bytes: &[u8]) -> Result<Payload, String> {
    let doc: PayloadDoc =
        serde_json::from_slice(bytes).map_err(|e| format!("the payload is not a simple-signing document: {e}"))?;
    if doc.critical.kind != SIGNATURE_TYPE {
        return Err(format!(
            "the payload's critical.type is {:?}, not {SIGNATURE_TYPE:?}",
            doc.critical.kind
        ));
    }
    let manifest_digest = Digest::parse(&doc.critical.image.docker_manifest_digest).map_err(|_| {
        format!(
            "the payload's critical.image.docker-manifest-digest {:?} is not a digest",
            doc.critical.image.docker_manifest_digest
        )
    })?;
    Ok(Payload {
        docker_reference: doc.critical.identity.docker_reference,
        manifest_digest,
    })
}

/// What checking one signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by this key (its name), for the image's digest.
    Valid(String),
    /// A valid signature for the image, by none of the keys.
    OtherKey,
    /// Signed by a key given, but for another manifest.
    DigestMismatch(Digest),
    /// Not a usable signature (why).
    Unusable(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid(k) => write!(f, "verified by {k}"),
            Verdict::OtherKey => write!(f, "signed by another key"),
            Verdict::DigestMismatch(d) => write!(f, "signs {d}, not this image"),
            Verdict::Unusable(why) => write!(f, "unusable: {why}"),
        }
    }
}

/// Checks one signature layer's `payload` bytes and `signature` against
/// `keys` and the digest of the image (`image`). The signature is checked
/// before the payload is believed.
pub fn check(payload: &[u8], signature: &[u8], image: &Digest, keys: &[PublicKey]) -> Verdict {
    let Some(key) = keys.iter().find(|k| k.verifies(payload, signature)) else {
        return Verdict::OtherKey;
    };
    match parse_payload(payload) {
        Err(why) => Verdict::Unusable(why),
        Ok(p) if &p.manifest_digest != image => Verdict::DigestMismatch(p.manifest_digest),
        Ok(_) => Verdict::Valid(key.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;

    /// A simple-signing payload for `reference` (a repository) and `digest`,
    /// as cosign writes it.
    fn payload_for(reference: &str, digest: &Digest) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest.as_str()},
                "type": SIGNATURE_TYPE,
            },
            "optional": null,
        })
        .to_string()
        .into_bytes()
    }

    fn p256_pair(seed: u8) -> (p256::ecdsa::SigningKey, PublicKey) {
        let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        (sk, PublicKey::from_pem(&format!("k{seed}.pub"), &pem).unwrap())
    }

    #[test]
    fn an_ecdsa_signature_verifies_for_its_digest_only() {
        let (sk, pk) = p256_pair(7);
        let (_, other) = p256_pair(9);
        let image = Digest::of(b"image");
        let payload = payload_for("127.0.0.1:5000/app", &image);
        let sig: p256::ecdsa::Signature = sk.sign(&payload);
        let der = sig.to_der();
        assert_eq!(
            check(&payload, der.as_bytes(), &image, &[other.clone(), pk.clone()]),
            Verdict::Valid("k7.pub".into())
        );
        assert_eq!(check(&payload, der.as_bytes(), &image, &[other]), Verdict::OtherKey);
        let elsewhere = Digest::of(b"another");
        assert_eq!(
            check(&payload, der.as_bytes(), &elsewhere, std::slice::from_ref(&pk)),
            Verdict::DigestMismatch(image.clone())
        );
        let mut tampered = payload.clone();
        tampered[5] ^= 1;
        assert_eq!(
            check(&tampered, der.as_bytes(), &image, std::slice::from_ref(&pk)),
            Verdict::OtherKey
        );
        assert_eq!(check(&payload, b"junk", &image, &[pk]), Verdict::OtherKey);
    }

    #[test]
    fn an_ed25519_signature_verifies() {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let pk = PublicKey::from_pem("ed.pub", &pem).unwrap();
        assert_eq!(pk.algorithm(), "Ed25519");
        let image = Digest::of(b"i");
        let payload = payload_for("h/r", &image);
        let sig = sk.sign(&payload).to_bytes();
        assert_eq!(check(&payload, &sig, &image, &[pk]), Verdict::Valid("ed.pub".into()));
    }

    #[test]
    fn keys_and_payloads_that_are_not_what_they_should_be_are_named() {
        let e = PublicKey::from_pem(
            "a.key",
            "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.starts_with("a.key is a private key"), "{e}");
        let e = PublicKey::from_pem("b.pub", "hello").unwrap_err();
        assert!(e.contains("not a PEM public key"), "{e}");
        let e =
            PublicKey::from_pem("c.pub", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap_err();
        assert!(e.contains("another kind"), "{e}");
        let e = parse_payload(br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"sha256:00"},"type":"x"}}"#).unwrap_err();
        assert!(e.contains("critical.type"), "{e}");
        assert!(parse_payload(b"[]").is_err());
        let d = Digest::of(b"z");
        assert_eq!(
            parse_payload(&payload_for("r", &d)).unwrap(),
            Payload {
                docker_reference: "r".into(),
                manifest_digest: d
            }
        );
    }

    #[test]
    fn signature_layers_are_the_simple_signing_ones() {
        let d = Digest::of(b"p");
        let m: ImageManifest = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d.as_str(), "size": 1},
            "layers": [
                {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": d.as_str(), "size": 1,
                 "annotations": {SIGNATURE_ANNOTATION: "AQID"}},
                {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": d.as_str(), "size": 1},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.as_str(), "size": 1},
            ]
        }))
        .unwrap();
        let layers = signature_layers(&m);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].signature, Ok(vec![1, 2, 3]));
        assert!(layers[1].signature.is_err());
    }
}

//! Notation (Notary Project) signatures: a trust policy
//! (`trustpolicy.json`, version 1.0) and trust store (`x509/ca/NAME/`,
//! `x509/signingAuthority/NAME/` directories of PEM certificates), and JWS
//! envelopes (`application/jose+json`, as `notation sign` attaches them as
//! `application/vnd.cncf.notary.signature` referrers) verified at level
//! `strict`: the signature by the first certificate of `x5c`, the chain to
//! a certificate of the policy's trust stores, the signer's subject among
//! the trusted identities, the certificates valid now, the envelope not
//! expired, and the payload's target the image. COSE envelopes are named
//! and refused. Pure: callers read the files and pass the time.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::x509::{parse_rfc3339, rfc3339, Cert, Hash};
use super::Digest;

/// A Notation signature referrer's artifact type.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
/// A JWS envelope layer.
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
/// A COSE envelope layer.
pub const COSE_MEDIA_TYPE: &str = "application/cose";
const PAYLOAD_CTY: &str = "application/vnd.cncf.notary.payload.v1+json";
const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const KNOWN_CRITICAL: [&str; 4] = [
    SIGNING_SCHEME,
    SIGNING_TIME,
    EXPIRY,
    "io.cncf.notary.authenticSigningTime",
];

/// A trusted identity of a policy.
#[derive(Debug, Clone)]
enum TrustedIdentity {
    Any,
    /// `x509.subject: C=US, O=…, CN=…`: these attributes, all present.
    Subject(Vec<(String, String)>),
}

#[derive(Debug, Clone)]
struct Policy {
    name: String,
    scopes: Vec<String>,
    stores: Vec<String>,
    identities: Vec<TrustedIdentity>,
}

/// `verify: {notation: …}`: the trust policy with its trust store read.
#[derive(Debug, Clone)]
pub struct NotationPolicy {
    /// The policy file and store as named, for messages.
    pub name: String,
    policies: Vec<Policy>,
    /// `ca:NAME` / `signingAuthority:NAME` → its certificates.
    stores: Vec<(String, Vec<Cert>)>,
}

/// Who signed, for an accepted Notation signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotationSigner {
    pub subject: String,
    pub signing_time: Option<String>,
    pub policy: String,
}

impl fmt::Display for NotationSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.subject)?;
        if let Some(t) = &self.signing_time {
            write!(f, ", signed {t}")?;
        }
        write!(f, ", Notation JWS under trust policy {}", self.policy)
    }
}

fn parse_identity(text: &str) -> Result<TrustedIdentity, String> {
    if text.trim() == "*" {
        return Ok(TrustedIdentity::Any);
    }
    let Some(rest) = text.trim().strip_prefix("x509.subject:") else {
        return Err(format!(
            "trusted identity {text:?} is neither \"*\" nor \"x509.subject: C=…, O=…, CN=…\""
        ));
    };
    let mut attrs = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("trusted identity {text:?}: {part:?} is not KEY=VALUE"))?;
        attrs.push((k.trim().to_string(), v.trim().to_string()));
    }
    if attrs.is_empty() {
        return Err(format!("trusted identity {text:?} names no attribute"));
    }
    Ok(TrustedIdentity::Subject(attrs))
}

impl NotationPolicy {
    /// Reads the trust policy (`policy_name`, its bytes) and the trust
    /// stores it names under `store_dir`.
    pub fn load(policy_name: &str, policy: &[u8], store_dir: &Path) -> Result<NotationPolicy, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            version: String,
            trust_policies: Vec<RawPolicy>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawPolicy {
            name: String,
            #[serde(default)]
            registry_scopes: Vec<String>,
            signature_verification: RawLevel,
            #[serde(default)]
            trust_stores: Vec<String>,
            #[serde(default)]
            trusted_identities: Vec<String>,
        }
        #[derive(Deserialize)]
        struct RawLevel {
            level: String,
        }
        let raw: Raw = serde_json::from_slice(policy)
            .map_err(|e| format!("{policy_name} is not a Notation trust policy (trustpolicy.json): {e}"))?;
        if raw.version != "1.0" {
            return Err(format!(
                "{policy_name} is trust policy version {}; occy reads version 1.0",
                raw.version
            ));
        }
        let mut policies = Vec::new();
        let mut stores: Vec<(String, Vec<Cert>)> = Vec::new();
        for p in raw.trust_policies {
            let at = format!("{policy_name}: trust policy {:?}", p.name);
            match p.signature_verification.level.as_str() {
                "strict" => {}
                "skip" => continue,
                other => {
                    return Err(format!(
                        "{at} has signatureVerification level {other:?}; occy enforces \"strict\" (or \"skip\" to not verify)"
                    ))
                }
            }
            let identities = p
                .trusted_identities
                .iter()
                .map(|t| parse_identity(t).map_err(|e| format!("{at}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if identities.is_empty() {
                return Err(format!("{at} names no trustedIdentities"));
            }
            if p.trust_stores.is_empty() {
                return Err(format!("{at} names no trustStores"));
            }
            for s in &p.trust_stores {
                if stores.iter().any(|(n, _)| n == s) {
                    continue;
                }
                let (kind, name) = s
                    .split_once(':')
                    .ok_or_else(|| format!("{at}: trust store {s:?} is not TYPE:NAME (ca:acme)"))?;
                if !matches!(kind, "ca" | "signingAuthority") {
                    return Err(format!(
                        "{at}: trust store {s:?} is of type {kind}; occy verifies with ca and signingAuthority stores"
                    ));
                }
                let dir = store_dir.join("x509").join(kind).join(name);
                stores.push((s.clone(), read_store(&dir)?));
            }
            policies.push(Policy {
                name: p.name,
                scopes: p.registry_scopes,
                stores: p.trust_stores,
                identities,
            });
        }
        Ok(NotationPolicy {
            name: format!("{policy_name} (trust store {})", store_dir.display()),
            policies,
            stores,
        })
    }

    /// The policy that applies to `scope` (`host/repository`): its own
    /// scope, else the `*` one.
    fn policy_for(&self, scope: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|p| p.scopes.iter().any(|s| s == scope))
            .or_else(|| self.policies.iter().find(|p| p.scopes.iter().any(|s| s == "*")))
    }

    /// `Notation signature under NAME`.
    pub fn describe(&self) -> String {
        format!("Notation signature trusted by {}", self.name)
    }
}

fn read_store(dir: &Path) -> Result<Vec<Cert>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the trust store {}: {e}", dir.display()))?;
    let mut certs = Vec::new();
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let found = match Cert::from_pem_chain(&String::from_utf8_lossy(&bytes)) {
            Ok(c) => c,
            Err(_) => vec![Cert::from_der(&bytes).map_err(|e| format!("{}: {e}", f.display()))?],
        };
        certs.extend(found);
    }
    if certs.is_empty() {
        return Err(format!("the trust store {} holds no certificates", dir.display()));
    }
    Ok(certs)
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| format!("{s:.16}… is not base64url: {e}"))
}

/// What the image is, as a Notation payload's `targetArtifact` must name it.
pub struct Target<'a> {
    pub digest: &'a Digest,
    pub size: Option<u64>,
    /// `host/repository`, for the policy's registry scopes.
    pub scope: &'a str,
}

/// Checks one JWS envelope (`bytes`) as a signature of `target` under
/// `policy`; `now` in seconds since the epoch.
pub fn verify_jws(
    bytes: &[u8],
    target: &Target<'_>,
    policy: &NotationPolicy,
    now: i64,
) -> Result<NotationSigner, String> {
    #[derive(Deserialize)]
    struct Envelope {
        payload: String,
        protected: String,
        header: Header,
        signature: String,
    }
    #[derive(Deserialize)]
    struct Header {
        x5c: Vec<String>,
    }
    let p = policy.policy_for(target.scope).ok_or_else(|| {
        format!(
            "no trust policy of {} applies to {} (registryScopes)",
            policy.name, target.scope
        )
    })?;
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| format!("not a JWS envelope: {e}"))?;
    let protected_bytes = b64url(&env.protected)?;
    let protected: serde_json::Value =
        serde_json::from_slice(&protected_bytes).map_err(|e| format!("the JWS protected header is not JSON: {e}"))?;
    let hash = match protected["alg"].as_str().unwrap_or_default() {
        "ES256" => Hash::Sha256,
        "ES384" => Hash::Sha384,
        "ES512" => Hash::Sha512,
        other => {
            return Err(format!(
                "JWS algorithm {other:?}: occy verifies ES256, ES384 and ES512 Notation signatures"
            ))
        }
    };
    if protected["cty"].as_str() != Some(PAYLOAD_CTY) {
        return Err(format!("the JWS content type is not {PAYLOAD_CTY}"));
    }
    for c in protected["crit"].as_array().into_iter().flatten() {
        let c = c.as_str().unwrap_or_default();
        if !KNOWN_CRITICAL.contains(&c) {
            return Err(format!("the JWS marks {c:?} critical, which occy does not know"));
        }
    }
    let scheme = protected[SIGNING_SCHEME].as_str().unwrap_or_default();
    if scheme != "notary.x509" && scheme != "notary.x509.signingAuthority" {
        return Err(format!("signing scheme {scheme:?} is not notary.x509"));
    }
    let chain = env
        .header
        .x5c
        .iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c)
                .map_err(|e| format!("an x5c certificate is not base64: {e}"))
                .and_then(|d| Cert::from_der(&d))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = chain.first().ok_or("the JWS carries no certificate (x5c)")?;
    let key = leaf.key().map_err(|e| format!("the signing certificate holds {e}"))?;
    let input = format!("{}.{}", env.protected, env.payload);
    let sig = b64url(&env.signature)?;
    if !key.verify_raw(hash, input.as_bytes(), &sig) {
        return Err("tampered envelope: the JWS signature does not verify with its signing certificate's key".into());
    }
    // The chain, each certificate issued by the next, ends at (or is
    // issued by) a certificate of the policy's trust stores.
    for w in chain.windows(2) {
        if !w[1].issued(&w[0]) {
            return Err(format!(
                "untrusted signer: {} is not issued by {} as its x5c chain says",
                w[0].subject(),
                w[1].subject()
            ));
        }
    }
    let anchors: Vec<&Cert> = policy
        .stores
        .iter()
        .filter(|(n, _)| p.stores.contains(n))
        .flat_map(|(_, c)| c.iter())
        .collect();
    let last = chain.last().unwrap_or(leaf);
    if !anchors.iter().any(|a| a.der == last.der || a.issued(last)) {
        return Err(format!(
            "untrusted signer: the certificate chain of {} does not lead to a certificate of trust store {}",
            leaf.subject(),
            p.stores.join(", ")
        ));
    }
    if let Some(c) = chain.iter().find(|c| !c.valid_at(now)) {
        return Err(format!(
            "expired certificate: {} is valid {} to {}",
            c.subject(),
            rfc3339(c.not_before()),
            rfc3339(c.not_after())
        ));
    }
    let attrs = leaf.subject_attributes();
    let trusted = p.identities.iter().any(|i| match i {
        TrustedIdentity::Any => true,
        TrustedIdentity::Subject(want) => want.iter().all(|w| attrs.contains(w)),
    });
    if !trusted {
        return Err(format!(
            "untrusted identity: the signer {} is not a trusted identity of trust policy {}",
            leaf.subject(),
            p.name
        ));
    }
    if let Some(exp) = protected[EXPIRY].as_str() {
        if parse_rfc3339(exp).is_some_and(|t| t < now) {
            return Err(format!("expired signature: the envelope expired at {exp}"));
        }
    }
    let payload: serde_json::Value =
        serde_json::from_slice(&b64url(&env.payload)?).map_err(|e| format!("the JWS payload is not JSON: {e}"))?;
    let t = &payload["targetArtifact"];
    if t["digest"].as_str() != Some(target.digest.as_str()) {
        return Err(format!(
            "signature for another digest: the envelope signs {}, not {}",
            t["digest"].as_str().unwrap_or("nothing"),
            target.digest
        ));
    }
    if let (Some(want), Some(got)) = (target.size, t["size"].as_u64()) {
        if want != got {
            return Err(format!(
                "signature for another artifact: the envelope signs {got} bytes, the image manifest is {want}"
            ));
        }
    }
    Ok(NotationSigner {
        subject: leaf.subject(),
        signing_time: protected[SIGNING_TIME].as_str().map(str::to_string),
        policy: p.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_policies_are_read_per_the_spec() {
        match parse_identity("x509.subject: C=US, O=Acme, CN=signer").unwrap() {
            TrustedIdentity::Subject(a) => assert_eq!(a[2], ("CN".to_string(), "signer".to_string())),
            TrustedIdentity::Any => panic!(),
        }
        assert!(matches!(parse_identity("*").unwrap(), TrustedIdentity::Any));
        assert!(parse_identity("CN=x").is_err());
        let dir = tempfile::tempdir().unwrap();
        let e = NotationPolicy::load("p.json", b"{}", dir.path()).unwrap_err();
        assert!(e.contains("not a Notation trust policy"), "{e}");
        let e = NotationPolicy::load(
            "p.json",
            br#"{"version":"1.0","trustPolicies":[{"name":"a","registryScopes":["*"],"signatureVerification":{"level":"audit"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}"#,
            dir.path(),
        )
        .unwrap_err();
        assert!(e.contains("occy enforces \"strict\""), "{e}");
        let e = NotationPolicy::load(
            "p.json",
            br#"{"version":"1.0","trustPolicies":[{"name":"a","registryScopes":["*"],"signatureVerification":{"level":"strict"},"trustStores":["ca:x"],"trustedIdentities":["*"]}]}"#,
            dir.path(),
        )
        .unwrap_err();
        assert!(e.contains("cannot read the trust store"), "{e}");
    }
}

//! Keyless (sigstore) signatures, verified offline from a `trusted_root.json`:
//! sigstore bundles v0.1–v0.3 (a DSSE envelope of an in-toto statement whose
//! subject is the image digest, as cosign v3 attaches them as OCI referrers)
//! and cosign v2 keyless `.sig` layers (certificate, chain and Rekor bundle
//! in annotations). A signature counts when its Fulcio certificate chains to
//! a certificate authority of the trusted root and was valid when the
//! transparency log says it logged the entry (the signed entry timestamp's
//! integrated time), carries the OIDC issuer (extension 1.3.6.1.4.1.57264.1.8,
//! or the legacy .1.1) and identity (SAN) asked for, signs the content, and
//! its Rekor entry is proven — by a signed entry timestamp or an inclusion
//! proof against a checkpoint signed by a log key of the trusted root — and
//! agrees with the content. Pure: callers fetch and pass the time.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use sha2::Digest as _;

use super::x509::{parse_rfc3339, rfc3339, Cert, Hash, Key};
use super::Digest;

/// Media types of sigstore bundles (a referrer's `artifactType`).
pub const BUNDLE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

/// Whether a media or artifact type is a sigstore bundle's.
pub fn is_bundle_type(t: &str) -> bool {
    t.starts_with("application/vnd.dev.sigstore.bundle")
}

/// The cosign `.sig` layer annotations of a keyless signature.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// The predicate type cosign v3 signs images with.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const ISSUER_V2_OID: &str = "1.3.6.1.4.1.57264.1.8";
const ISSUER_V1_OID: &str = "1.3.6.1.4.1.57264.1.1";

fn b64(s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("{s:.20}… is not base64: {e}"))
}

/// A time window, seconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    end: Option<i64>,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t <= e)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawValidFor {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

fn window(v: Option<&RawValidFor>, what: &str) -> Result<Window, String> {
    let Some(v) = v else {
        return Ok(Window {
            start: i64::MIN,
            end: None,
        });
    };
    let parse = |s: &str| parse_rfc3339(s).ok_or_else(|| format!("{what}: validFor time {s:?} is not RFC 3339"));
    Ok(Window {
        start: match &v.start {
            Some(s) => parse(s)?,
            None => i64::MIN,
        },
        end: v.end.as_deref().map(parse).transpose()?,
    })
}

/// A log key of the trusted root (Rekor).
#[derive(Debug, Clone)]
struct LogKey {
    key_id: Vec<u8>,
    key: Key,
    valid: Window,
    url: String,
}

/// A certificate authority of the trusted root (Fulcio): its chain, from
/// the certificate that issues leaves up to the root.
#[derive(Debug, Clone)]
struct Authority {
    chain: Vec<Cert>,
    valid: Window,
    uri: String,
}

/// sigstore's `trusted_root.json` (media type
/// `application/vnd.dev.sigstore.trustedroot+json;version=0.1`).
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// Where it was read from, for messages.
    pub name: String,
    authorities: Vec<Authority>,
    tlogs: Vec<LogKey>,
}

impl TrustedRoot {
    /// Reads a trusted root; `name` is its path as the user wrote it.
    pub fn from_json(name: &str, bytes: &[u8]) -> Result<TrustedRoot, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            tlogs: Vec<RawLog>,
            #[serde(default)]
            certificate_authorities: Vec<RawAuthority>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawLog {
            #[serde(default)]
            base_url: String,
            public_key: RawKey,
            log_id: RawLogId,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawKey {
            raw_bytes: String,
            #[serde(default)]
            valid_for: Option<RawValidFor>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawLogId {
            key_id: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawAuthority {
            #[serde(default)]
            uri: String,
            cert_chain: RawChain,
            #[serde(default)]
            valid_for: Option<RawValidFor>,
        }
        #[derive(Deserialize)]
        struct RawChain {
            certificates: Vec<RawCert>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawCert {
            raw_bytes: String,
        }
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| format!("{name} is not a sigstore trusted root (trusted_root.json): {e}"))?;
        if let Some(m) = &raw.media_type {
            if !m.starts_with("application/vnd.dev.sigstore.trustedroot") {
                return Err(format!(
                    "{name} has mediaType {m:?}, not application/vnd.dev.sigstore.trustedroot+json: is it trusted_root.json?"
                ));
            }
        }
        let mut tlogs = Vec::new();
        for (i, t) in raw.tlogs.iter().enumerate() {
            let what = format!("{name}: tlogs[{i}]");
            let key = Key::from_spki_der(&b64(&t.public_key.raw_bytes).map_err(|e| format!("{what}: {e}"))?)
                .map_err(|e| format!("{what}: {e}"))?;
            tlogs.push(LogKey {
                key_id: b64(&t.log_id.key_id).map_err(|e| format!("{what}: logId: {e}"))?,
                key,
                valid: window(t.public_key.valid_for.as_ref(), &what)?,
                url: t.base_url.clone(),
            });
        }
        let mut authorities = Vec::new();
        for (i, a) in raw.certificate_authorities.iter().enumerate() {
            let what = format!("{name}: certificateAuthorities[{i}]");
            let mut chain = Vec::new();
            for c in &a.cert_chain.certificates {
                chain.push(
                    Cert::from_der(&b64(&c.raw_bytes).map_err(|e| format!("{what}: {e}"))?)
                        .map_err(|e| format!("{what}: {e}"))?,
                );
            }
            if chain.is_empty() {
                return Err(format!("{what} has no certificates"));
            }
            authorities.push(Authority {
                chain,
                valid: window(a.valid_for.as_ref(), &what)?,
                uri: a.uri.clone(),
            });
        }
        if authorities.is_empty() {
            return Err(format!(
                "{name} names no certificate authority (certificateAuthorities): keyless certificates cannot chain to it"
            ));
        }
        if tlogs.is_empty() {
            return Err(format!(
                "{name} names no transparency log (tlogs): keyless signatures cannot be proven logged"
            ));
        }
        Ok(TrustedRoot {
            name: name.to_string(),
            authorities,
            tlogs,
        })
    }

    /// The authority whose chain issued `leaf`, valid at `t`.
    fn chain_of(&self, leaf: &Cert) -> Result<&Authority, String> {
        for a in &self.authorities {
            let Some(first) = a.chain.first() else { continue };
            if !first.issued(leaf) {
                continue;
            }
            if a.chain.windows(2).all(|w| w[1].issued(&w[0]) && w[1].is_ca()) && first.is_ca() {
                return Ok(a);
            }
        }
        Err(format!(
            "untrusted root: the certificate ({}) was not issued by a certificate authority of {}",
            leaf.identities().join(", "),
            self.name
        ))
    }

    fn log_key(&self, key_id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|k| k.key_id == key_id)
    }
}

/// The identity a keyless policy asks for.
#[derive(Debug, Clone)]
pub enum Identity {
    Exact(String),
    Regexp(regex::Regex),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Exact(s) => write!(f, "{s}"),
            Identity::Regexp(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

impl Identity {
    fn matches(&self, s: &str) -> bool {
        match self {
            Identity::Exact(e) => e == s,
            Identity::Regexp(r) => r.is_match(s),
        }
    }
}

/// `verify: {keyless: …}`: who must have signed, and the trusted root.
#[derive(Debug, Clone)]
pub struct KeylessPolicy {
    pub issuer: String,
    pub identity: Identity,
    pub root: std::sync::Arc<TrustedRoot>,
}

impl KeylessPolicy {
    /// `keyless alice@example.test (issuer https://…, trusted root ROOT)`.
    pub fn describe(&self) -> String {
        format!(
            "keyless signature by {} (issuer {}, trusted root {})",
            self.identity, self.issuer, self.root.name
        )
    }
}

/// Who signed, when, and how, for an accepted keyless signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessSigner {
    pub identity: String,
    pub issuer: String,
    /// The log's integrated time (RFC 3339), proven by its signed entry timestamp.
    pub logged: Option<String>,
    /// What proved the log entry: `signed entry timestamp`, `inclusion proof`…
    pub proof: String,
    /// `sigstore bundle v0.3`, `cosign .sig (keyless)`.
    pub form: String,
}

impl fmt::Display for KeylessSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (issuer {})", self.identity, self.issuer)?;
        if let Some(t) = &self.logged {
            write!(f, ", logged {t}")?;
        }
        write!(f, ", {} proven by {}", self.form, self.proof)
    }
}

// ---- bundles ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    #[serde(default)]
    dsse_envelope: Option<RawEnvelope>,
    #[serde(default)]
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    #[serde(default)]
    certificate: Option<RawBytes>,
    #[serde(default)]
    x509_certificate_chain: Option<RawCertChain>,
    #[serde(default)]
    tlog_entries: Vec<RawEntry>,
    #[serde(default)]
    timestamp_verification_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawCertChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    log_index: serde_json::Value,
    log_id: RawKeyId,
    kind_version: RawKindVersion,
    #[serde(default)]
    integrated_time: Option<serde_json::Value>,
    #[serde(default)]
    inclusion_promise: Option<RawPromise>,
    #[serde(default)]
    inclusion_proof: Option<RawProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKeyId {
    key_id: String,
}

#[derive(Deserialize)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    log_index: serde_json::Value,
    root_hash: String,
    tree_size: serde_json::Value,
    hashes: Vec<String>,
    #[serde(default)]
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawDsseSig>,
}

#[derive(Deserialize)]
struct RawDsseSig {
    sig: String,
}

/// Protobuf JSON writes 64-bit integers as strings; older writers as numbers.
fn int(v: &serde_json::Value, what: &str) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{what} {v} is not an integer"))
}

/// One Rekor entry, as a bundle or a cosign annotation gives it.
struct Entry {
    body: Vec<u8>,
    integrated_time: Option<i64>,
    log_index: i64,
    log_id: Vec<u8>,
    set: Option<Vec<u8>>,
    proof: Option<InclusionProof>,
}

struct InclusionProof {
    index: u64,
    size: u64,
    root: Vec<u8>,
    hashes: Vec<Vec<u8>>,
    checkpoint: Option<String>,
}

impl Entry {
    fn from_bundle(e: &RawEntry) -> Result<Entry, String> {
        let proof = match &e.inclusion_proof {
            None => None,
            Some(p) => Some(InclusionProof {
                index: int(&p.log_index, "inclusionProof.logIndex")? as u64,
                size: int(&p.tree_size, "inclusionProof.treeSize")? as u64,
                root: b64(&p.root_hash)?,
                hashes: p.hashes.iter().map(|h| b64(h)).collect::<Result<_, _>>()?,
                checkpoint: p.checkpoint.as_ref().map(|c| c.envelope.clone()),
            }),
        };
        Ok(Entry {
            body: b64(&e.canonicalized_body)?,
            integrated_time: e
                .integrated_time
                .as_ref()
                .map(|t| int(t, "integratedTime"))
                .transpose()?,
            log_index: int(&e.log_index, "logIndex")?,
            log_id: b64(&e.log_id.key_id)?,
            set: e
                .inclusion_promise
                .as_ref()
                .map(|p| b64(&p.signed_entry_timestamp))
                .transpose()?,
            proof,
        })
    }

    /// Checks what proves the entry is in the log. Ok: the log time proven
    /// by the signed entry timestamp (if there is one) and what proved it.
    fn prove(&self, root: &TrustedRoot) -> Result<(Option<i64>, String), String> {
        let key = root.log_key(&self.log_id).ok_or_else(|| {
            format!(
                "log proof invalid: the entry was logged by log {} which {} does not name",
                hex::encode(&self.log_id),
                root.name
            )
        })?;
        let mut proven = Vec::new();
        let mut time = None;
        if let (Some(set), Some(t)) = (&self.set, self.integrated_time) {
            let canonical = format!(
                "{{\"body\":{},\"integratedTime\":{t},\"logID\":{},\"logIndex\":{}}}",
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(&self.body)),
                serde_json::Value::from(hex::encode(&self.log_id)),
                self.log_index
            );
            if !key.key.verify_der(Hash::Sha256, canonical.as_bytes(), set) {
                return Err(format!(
                    "log proof invalid: the signed entry timestamp does not verify with the key of log {} in {}",
                    key.url, root.name
                ));
            }
            if !key.valid.contains(t) {
                return Err(format!(
                    "log proof invalid: the log key of {} was not valid at the entry's time {}",
                    key.url,
                    rfc3339(t)
                ));
            }
            time = Some(t);
            proven.push("signed entry timestamp");
        }
        if let Some(p) = &self.proof {
            if let Some(cp) = &p.checkpoint {
                verify_inclusion(&self.body, p)?;
                verify_checkpoint(cp, p, key)?;
                proven.push("inclusion proof");
            }
        }
        if proven.is_empty() {
            return Err(
                "the log entry carries neither a signed entry timestamp nor an inclusion proof with a checkpoint"
                    .into(),
            );
        }
        Ok((time, proven.join(" and ")))
    }
}

fn leaf_hash(body: &[u8]) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().to_vec()
}

fn node_hash(l: &[u8], r: &[u8]) -> Vec<u8> {
    let mut h = sha2::Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().to_vec()
}

/// RFC 6962 / 9162 inclusion proof of `body` at `p.index` in a tree of
/// `p.size` with root `p.root`.
fn verify_inclusion(body: &[u8], p: &InclusionProof) -> Result<(), String> {
    if p.index >= p.size {
        return Err(format!(
            "log proof invalid: inclusion proof index {} is outside a tree of {}",
            p.index, p.size
        ));
    }
    let (mut f_n, mut s_n) = (p.index, p.size - 1);
    let mut r = leaf_hash(body);
    for h in &p.hashes {
        if s_n == 0 {
            return Err("log proof invalid: the inclusion proof has too many hashes".into());
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(h, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, h);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 || r != p.root {
        return Err("log proof invalid: the inclusion proof does not lead to its root hash".into());
    }
    Ok(())
}

/// A checkpoint (signed note): origin, tree size, base64 root hash, then a
/// blank line and `— NAME base64(keyhint || signature)` lines.
fn verify_checkpoint(text: &str, p: &InclusionProof, key: &LogKey) -> Result<(), String> {
    let bad = |why: &str| format!("log proof invalid: the checkpoint {why}");
    let split = text
        .find("\n\n")
        .ok_or_else(|| bad("has no blank line before its signatures"))?;
    let note = &text[..split + 1];
    let lines: Vec<&str> = note.lines().collect();
    if lines.len() < 3 {
        return Err(bad("has fewer than three lines"));
    }
    let size: u64 = lines[1].parse().map_err(|_| bad("has no tree size"))?;
    let root = b64(lines[2]).map_err(|_| bad("has no root hash"))?;
    if size != p.size || root != p.root {
        return Err(bad("is for another tree than the inclusion proof"));
    }
    let hint = key.key_id.get(..4).unwrap_or_default();
    for line in text[split + 2..].lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            continue;
        };
        let Some((_, sig)) = rest.split_once(' ') else { continue };
        let Ok(sig) = b64(sig) else { continue };
        if sig.len() > 4 && &sig[..4] == hint && key.key.verify_der(Hash::Sha256, note.as_bytes(), &sig[4..]) {
            return Ok(());
        }
    }
    Err(bad(&format!("carries no valid signature by log {}", key.url)))
}

/// What one signature gives to check: the leaf, the signed content, and
/// how the log entry must agree with it.
struct Signed<'a> {
    leaf: &'a Cert,
    entry: Option<&'a Entry>,
    form: String,
}

/// The checks common to both forms, in the order that names the real
/// reason: chain, log proof and time, issuer, identity.
fn check_certificate(s: &Signed<'_>, policy: &KeylessPolicy, now: i64) -> Result<KeylessSigner, String> {
    let root = &policy.root;
    let authority = root.chain_of(s.leaf)?;
    let (time, proof) = match s.entry {
        Some(e) => {
            let (t, how) = e.prove(root)?;
            (t, Some(how))
        }
        None => (None, None),
    };
    let at = time.unwrap_or(now);
    if !s.leaf.valid_at(at) {
        let window = format!("{} to {}", rfc3339(s.leaf.not_before()), rfc3339(s.leaf.not_after()));
        return Err(match time {
            Some(t) => format!(
                "certificate not valid when logged: it was valid {window}, the log integrated the entry at {}",
                rfc3339(t)
            ),
            None => format!(
                "expired certificate without log proof: the certificate was valid {window} and nothing proves it signed then (no transparency-log entry with a signed entry timestamp)"
            ),
        });
    }
    let Some(proof) = proof else {
        return Err(
            "no log proof: the signature carries no transparency-log entry; keyless signatures must be logged".into(),
        );
    };
    if !authority.valid.contains(at) || !authority.chain.iter().all(|c| c.valid_at(at)) {
        return Err(format!(
            "untrusted root: certificate authority {} of {} was not valid at {}",
            authority.uri,
            root.name,
            rfc3339(at)
        ));
    }
    if !s.leaf.code_signing() {
        return Err("not a signing certificate: its extended key usage lacks code signing".into());
    }
    let issuer = issuer_of(s.leaf).ok_or_else(|| {
        "wrong issuer: the certificate carries no OIDC issuer extension (1.3.6.1.4.1.57264.1.8 or .1.1)".to_string()
    })?;
    if issuer != policy.issuer {
        return Err(format!(
            "wrong issuer: the certificate was issued for OIDC issuer {issuer}, not {}",
            policy.issuer
        ));
    }
    let ids = s.leaf.identities();
    let Some(identity) = ids.iter().find(|i| policy.identity.matches(i)) else {
        return Err(format!(
            "wrong identity: the certificate names {}, not {}",
            if ids.is_empty() {
                "no identity".to_string()
            } else {
                ids.join(", ")
            },
            policy.identity
        ));
    };
    Ok(KeylessSigner {
        identity: identity.clone(),
        issuer,
        logged: time.map(rfc3339),
        proof,
        form: s.form.clone(),
    })
}

/// The OIDC issuer of a Fulcio certificate: extension .1.8 (a DER
/// UTF8String), else the legacy .1.1 (raw bytes).
pub fn issuer_of(cert: &Cert) -> Option<String> {
    if let Some(v) = cert.extension_value(ISSUER_V2_OID) {
        if let Ok(s) = <der::asn1::Utf8StringRef<'_> as der::Decode>::from_der(v) {
            return Some(s.as_str().to_string());
        }
    }
    cert.extension_value(ISSUER_V1_OID)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// Checks a sigstore bundle (`bytes`) as a signature of the image
/// `image`; `now` is the time (seconds since the epoch) used when no log
/// time is proven.
pub fn verify_bundle(bytes: &[u8], image: &Digest, policy: &KeylessPolicy, now: i64) -> Result<KeylessSigner, String> {
    let raw: RawBundle = serde_json::from_slice(bytes).map_err(|e| format!("not a sigstore bundle: {e}"))?;
    let version = match raw.media_type.as_str() {
        "application/vnd.dev.sigstore.bundle.v0.3+json" | "application/vnd.dev.sigstore.bundle+json;version=0.3" => {
            "0.3"
        }
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => "0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => "0.1",
        other => return Err(format!("not a sigstore bundle occy knows: mediaType {other:?}")),
    };
    let m = &raw.verification_material;
    let leaf_der = match (&m.certificate, &m.x509_certificate_chain) {
        (Some(c), _) => b64(&c.raw_bytes)?,
        (None, Some(chain)) => b64(&chain
            .certificates
            .first()
            .ok_or("the bundle's certificate chain is empty")?
            .raw_bytes)?,
        (None, None) => {
            return Err("not a keyless signature: the bundle holds a public key hint, not a certificate".into())
        }
    };
    let leaf = Cert::from_der(&leaf_der).map_err(|e| format!("the bundle's certificate: {e}"))?;
    let Some(env) = &raw.dsse_envelope else {
        if raw.message_signature.is_some() {
            return Err(
                "the bundle signs a message, not an image: occy verifies DSSE bundles (cosign sign, v3)".into(),
            );
        }
        return Err("the bundle holds no DSSE envelope".into());
    };
    if m.timestamp_verification_data.is_some() {
        tracing::debug!("bundle carries RFC 3161 timestamps; occy proves the time by the log entry");
    }
    let payload = b64(&env.payload)?;
    let sig = b64(&env
        .signatures
        .first()
        .ok_or("the DSSE envelope holds no signature")?
        .sig)?;
    let key = leaf.key().map_err(|e| format!("the certificate holds {e}"))?;
    let pae = [
        format!(
            "DSSEv1 {} {} {} ",
            env.payload_type.len(),
            env.payload_type,
            payload.len()
        )
        .into_bytes(),
        payload.clone(),
    ]
    .concat();
    let entries: Vec<Entry> = m
        .tlog_entries
        .iter()
        .map(Entry::from_bundle)
        .collect::<Result<_, _>>()?;
    let signed = Signed {
        leaf: &leaf,
        entry: entries.first(),
        form: format!("sigstore bundle v{version}"),
    };
    let root_err = policy.root.chain_of(&leaf).err();
    if let Some(e) = root_err {
        return Err(e);
    }
    if !key.verify_der(key.default_hash(), &pae, &sig) {
        return Err(
            "tampered payload: the DSSE envelope's signature does not verify with the certificate's key".into(),
        );
    }
    if let (Some(e), Some(raw_e)) = (entries.first(), m.tlog_entries.first()) {
        check_dsse_entry(e, &raw_e.kind_version, &payload, &sig, &leaf)?;
    }
    let signer = check_certificate(&signed, policy, now)?;
    if env.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(format!(
            "the DSSE payload is {:?}, not an in-toto statement",
            env.payload_type
        ));
    }
    check_statement(&payload, image)?;
    Ok(signer)
}

/// The log entry must be the one of this envelope: a dsse/0.0.1 entry with
/// its payload hash and signature (verifier: the certificate).
fn check_dsse_entry(e: &Entry, kv: &RawKindVersion, payload: &[u8], sig: &[u8], leaf: &Cert) -> Result<(), String> {
    if kv.kind != "dsse" || kv.version != "0.0.1" {
        return Err(format!(
            "log entry of kind {}/{}: occy checks dsse/0.0.1 entries for DSSE bundles",
            kv.kind, kv.version
        ));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&e.body).map_err(|err| format!("the log entry body is not JSON: {err}"))?;
    let spec = &body["spec"];
    let hash = spec["payloadHash"]["value"].as_str().unwrap_or_default();
    if hash != hex::encode(sha2::Sha256::digest(payload)) {
        return Err("tampered payload: the log entry records another payload hash than the envelope's".into());
    }
    let listed = spec["signatures"].as_array().cloned().unwrap_or_default();
    let ours = listed.iter().any(|s| {
        let sig_ok = s["signature"]
            .as_str()
            .and_then(|x| b64(x).ok())
            .is_some_and(|x| x == sig);
        sig_ok && verifier_is(s["verifier"].as_str(), leaf)
    });
    if !ours {
        return Err(
            "log entry mismatch: the log entry records another signature or certificate than the bundle's".into(),
        );
    }
    Ok(())
}

/// Whether a log entry's verifier (base64 of a PEM certificate) is `leaf`.
fn verifier_is(v: Option<&str>, leaf: &Cert) -> bool {
    let Some(pem) = v.and_then(|x| b64(x).ok()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&pem);
    Cert::from_pem_chain(&text).is_ok_and(|c| c.first().is_some_and(|c| c.der == leaf.der))
}

/// The in-toto statement must name the image's digest as a subject.
fn check_statement(payload: &[u8], image: &Digest) -> Result<(), String> {
    let st: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the DSSE payload is not an in-toto statement: {e}"))?;
    let predicate = st["predicateType"].as_str().unwrap_or_default();
    if predicate != COSIGN_SIGN_PREDICATE {
        return Err(format!(
            "not an image signature: the statement's predicateType is {predicate:?}, not {COSIGN_SIGN_PREDICATE}"
        ));
    }
    let (algo, hex_) = image.as_str().split_once(':').unwrap_or(("sha256", image.hex()));
    let subjects = st["subject"].as_array().cloned().unwrap_or_default();
    if subjects.iter().any(|s| s["digest"][algo].as_str() == Some(hex_)) {
        return Ok(());
    }
    let signed: Vec<String> = subjects
        .iter()
        .filter_map(|s| s["digest"].as_object())
        .flat_map(|d| d.iter().map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default())))
        .collect();
    Err(format!(
        "signature for another digest: the statement signs {}, not {image}",
        if signed.is_empty() {
            "no digest".to_string()
        } else {
            signed.join(", ")
        }
    ))
}

/// Checks one cosign v2 keyless `.sig` layer: the simple-signing `payload`,
/// its `signature`, and the layer's annotations (certificate and Rekor
/// bundle).
pub fn verify_cosign_layer(
    payload: &[u8],
    signature: &[u8],
    annotations: &BTreeMap<String, String>,
    image: &Digest,
    policy: &KeylessPolicy,
    now: i64,
) -> Result<KeylessSigner, String> {
    let pem = annotations
        .get(CERTIFICATE_ANNOTATION)
        .ok_or_else(|| format!("not a keyless signature: the layer has no {CERTIFICATE_ANNOTATION} annotation"))?;
    let leaf = Cert::from_pem_chain(pem)
        .map_err(|e| format!("its {CERTIFICATE_ANNOTATION}: {e}"))?
        .into_iter()
        .next()
        .ok_or("no certificate")?;
    policy.root.chain_of(&leaf)?;
    let key = leaf.key().map_err(|e| format!("the certificate holds {e}"))?;
    if !key.verify_der(key.default_hash(), payload, signature) {
        return Err("tampered payload: the signature does not verify with the certificate's key".into());
    }
    let entry = match annotations.get(BUNDLE_ANNOTATION) {
        None => None,
        Some(text) => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Rb {
                signed_entry_timestamp: String,
                payload: Rp,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Rp {
                body: String,
                integrated_time: i64,
                log_index: i64,
                #[serde(rename = "logID")]
                log_id: String,
            }
            let rb: Rb = serde_json::from_str(text)
                .map_err(|e| format!("its {BUNDLE_ANNOTATION} is not a Rekor bundle: {e}"))?;
            let e = Entry {
                body: b64(&rb.payload.body)?,
                integrated_time: Some(rb.payload.integrated_time),
                log_index: rb.payload.log_index,
                log_id: hex::decode(&rb.payload.log_id).map_err(|e| format!("its logID is not hex: {e}"))?,
                set: Some(b64(&rb.signed_entry_timestamp)?),
                proof: None,
            };
            check_hashedrekord(&e, payload, signature, &leaf)?;
            Some(e)
        }
    };
    let signed = Signed {
        leaf: &leaf,
        entry: entry.as_ref(),
        form: "cosign .sig (keyless)".into(),
    };
    let signer = check_certificate(&signed, policy, now)?;
    let claims = super::cosign::parse_payload(payload)?;
    if &claims.manifest_digest != image {
        return Err(format!(
            "signature for another digest: the payload signs {}, not {image}",
            claims.manifest_digest
        ));
    }
    Ok(signer)
}

/// A hashedrekord/0.0.1 entry must record this payload's hash, this
/// signature and this certificate.
fn check_hashedrekord(e: &Entry, payload: &[u8], sig: &[u8], leaf: &Cert) -> Result<(), String> {
    let body: serde_json::Value =
        serde_json::from_slice(&e.body).map_err(|err| format!("the log entry body is not JSON: {err}"))?;
    if body["kind"] != "hashedrekord" {
        return Err(format!(
            "log entry of kind {}: occy checks hashedrekord entries for cosign .sig signatures",
            body["kind"]
        ));
    }
    let spec = &body["spec"];
    if spec["data"]["hash"]["value"].as_str() != Some(&hex::encode(sha2::Sha256::digest(payload))) {
        return Err("tampered payload: the log entry records another payload hash".into());
    }
    let sig_ok = spec["signature"]["content"]
        .as_str()
        .and_then(|x| b64(x).ok())
        .is_some_and(|x| x == sig);
    if !sig_ok || !verifier_is(spec["signature"]["publicKey"]["content"].as_str(), leaf) {
        return Err("log entry mismatch: the log entry records another signature or certificate".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusion_proofs_follow_rfc_6962() {
        // A tree of 5 leaves; the audit path of leaf 2.
        let leaves: Vec<Vec<u8>> = (0..5u8).map(|i| leaf_hash(&[i])).collect();
        let n01 = node_hash(&leaves[0], &leaves[1]);
        let n23 = node_hash(&leaves[2], &leaves[3]);
        let n0123 = node_hash(&n01, &n23);
        let root = node_hash(&n0123, &leaves[4]);
        let p = InclusionProof {
            index: 2,
            size: 5,
            root: root.clone(),
            hashes: vec![leaves[3].clone(), n01.clone(), leaves[4].clone()],
            checkpoint: None,
        };
        verify_inclusion(&[2], &p).unwrap();
        assert!(verify_inclusion(&[9], &p).is_err());
        let p4 = InclusionProof {
            index: 4,
            size: 5,
            root,
            hashes: vec![n0123],
            checkpoint: None,
        };
        verify_inclusion(&[4], &p4).unwrap();
        let short = InclusionProof { hashes: vec![], ..p4 };
        assert!(verify_inclusion(&[4], &short).is_err());
    }

    #[test]
    fn trusted_roots_that_are_not_are_named() {
        let e = TrustedRoot::from_json("root.json", b"{}").unwrap_err();
        assert!(e.contains("names no certificate authority"), "{e}");
        let e = TrustedRoot::from_json("root.json", b"nope").unwrap_err();
        assert!(e.contains("is not a sigstore trusted root"), "{e}");
        let e = TrustedRoot::from_json("r.json", br#"{"mediaType":"application/json"}"#).unwrap_err();
        assert!(e.contains("is it trusted_root.json"), "{e}");
    }

    #[test]
    fn statements_must_name_the_image() {
        let d = Digest::of(b"img");
        let st = |hex: &str, pt: &str| {
            serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "predicateType": pt,
                "subject": [{"name": "x", "digest": {"sha256": hex}}], "predicate": {}})
            .to_string()
        };
        check_statement(st(d.hex(), COSIGN_SIGN_PREDICATE).as_bytes(), &d).unwrap();
        let other = Digest::of(b"other");
        let e = check_statement(st(other.hex(), COSIGN_SIGN_PREDICATE).as_bytes(), &d).unwrap_err();
        assert!(e.starts_with("signature for another digest"), "{e}");
        let e = check_statement(st(d.hex(), "https://slsa.dev/provenance/v1").as_bytes(), &d).unwrap_err();
        assert!(e.contains("predicateType"), "{e}");
    }
}

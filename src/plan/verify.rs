//! `verify:`: before an image is planned, its signatures are read from
//! beside it — the cosign `sha256-<hex>.sig` tag (key-pair or keyless) and
//! its OCI referrers (sigstore bundles, Notation envelopes), in its registry
//! repository or OCI layout, of the digest the source's tag names, each
//! blob streamed, verified and bounded — and checked against the entry's
//! keys, keyless policy or Notation trust policy (`image::cosign`,
//! `image::sigstore`, `image::notation` do the checking). A target whose
//! source carries no signature any of them accepts fails with the reason —
//! which signatures were found and why each did not count — and the rest of
//! the sync goes on; one that passes names its signer in the plan and the
//! report. `occy info --verify-…` reads signatures the same way.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::{Action, PlanContext, PlannedTarget, PLAN_CONCURRENCY};
use crate::error::{Error, Result};
use crate::image::cosign::{self, PublicKey, Verdict, MAX_PAYLOAD_SIZE};
use crate::image::manifest::Manifest;
use crate::image::notation::{self, NotationPolicy};
use crate::image::referrers::{cosign_tag, CosignKind};
use crate::image::sigstore::{self, KeylessPolicy};
use crate::image::ImageManifest;
use crate::image::{Descriptor, Digest, RawManifest};
use crate::reference::Reference;
use crate::sink::store::StoreId;
use crate::source::{open_source, Source, SourceOptions};
use crate::spec::VerifyKeys;

/// One signature of a `.sig` manifest, as checked.
#[derive(Debug, Clone)]
pub struct CheckedSignature {
    /// The payload blob.
    pub payload: Descriptor,
    /// The repository and digest the payload claims, when it could be read.
    pub claims: Option<cosign::Payload>,
    /// What checking it against the keys found; None when no key was given.
    pub verdict: Option<Verdict>,
}

/// The cosign signatures of one image.
#[derive(Debug, Clone)]
pub struct Signatures {
    /// Where they were looked for: `registry://host/repository:sha256-<hex>.sig`,
    /// or the OCI layout's tag.
    pub tag: String,
    /// Its manifest digest, when the tag exists.
    pub manifest: Option<Digest>,
    pub signatures: Vec<CheckedSignature>,
}

impl Signatures {
    /// The key that verified a signature, if one did.
    pub fn verified_by(&self) -> Option<&str> {
        self.signatures.iter().find_map(|s| match &s.verdict {
            Some(Verdict::Valid(k)) => Some(k.as_str()),
            _ => None,
        })
    }

    /// Why no signature counts, for a failed target: which were found and
    /// what was wrong with each.
    pub fn why_not(&self) -> String {
        if self.manifest.is_none() {
            return format!("there is no signature tag {}", self.tag);
        }
        if self.signatures.is_empty() {
            return format!("{} holds no simple-signing layers", self.tag);
        }
        let each: Vec<String> = self
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let what = s
                    .verdict
                    .as_ref()
                    .map(Verdict::to_string)
                    .unwrap_or_else(|| "not checked".into());
                format!("#{} {what}", i + 1)
            })
            .collect();
        let n = self.signatures.len();
        format!(
            "{} holds {n} signature{}: {}",
            self.tag,
            if n == 1 { "" } else { "s" },
            each.join("; ")
        )
    }
}

/// Where the cosign signatures of `digest` are, beside the image `image`
/// names: the `sha256-<hex>.sig` tag of its registry repository or OCI
/// layout. None for sources that hold no tags.
pub fn signature_reference(image: &Reference, digest: &Digest) -> Option<Reference> {
    image.tagged_beside(&cosign_tag(digest, CosignKind::Signature))
}

/// The manifest `tag` names beside the image `image` names, if that tag
/// exists.
pub async fn tagged_manifest(image: &Reference, tag: &str, opts: &SourceOptions) -> Result<Option<RawManifest>> {
    let Some(at) = image.tagged_beside(tag) else {
        return Ok(None);
    };
    let source = match open_source(&at, opts).await {
        Ok(s) => s,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    match source.root_manifest().await {
        Ok(m) => Ok(Some(m)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the cosign signatures at `signatures` (see
/// [`signature_reference`]) and checks each against `keys` for the image
/// `digest` (no keys: read, not checked).
pub async fn read_signatures(
    signatures: &Reference,
    opts: &SourceOptions,
    digest: &Digest,
    keys: &[PublicKey],
    keyless: Option<&KeylessPolicy>,
) -> Result<Signatures> {
    let name = signatures.to_string();
    let missing = || Signatures {
        tag: name.clone(),
        manifest: None,
        signatures: Vec::new(),
    };
    let source = match open_source(signatures, opts).await {
        Ok(s) => s,
        Err(Error::NotFound(_)) => return Ok(missing()),
        Err(e) => return Err(e),
    };
    let raw = match source.root_manifest().await {
        Ok(raw) => raw,
        Err(Error::NotFound(_)) => return Ok(missing()),
        Err(e) => return Err(e),
    };
    let manifest = match raw.parse()? {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Err(Error::invalid(format!(
                "{name} is an index, not a cosign signature manifest"
            )))
        }
    };
    let mut found = Vec::new();
    for layer in cosign::signature_layers(&manifest) {
        let payload = match read_payload(source.as_ref(), &layer.payload).await {
            Ok(p) => p,
            Err(e) => {
                found.push(CheckedSignature {
                    payload: layer.payload,
                    claims: None,
                    verdict: Some(Verdict::Unusable(e.to_string())),
                });
                continue;
            }
        };
        let claims = cosign::parse_payload(&payload).ok();
        let verdict = layer_verdict(&payload, &layer, digest, keys, keyless);
        found.push(CheckedSignature {
            payload: layer.payload,
            claims,
            verdict,
        });
    }
    Ok(Signatures {
        tag: name,
        manifest: Some(raw.digest),
        signatures: found,
    })
}

/// What checking one simple-signing layer (its `payload` bytes read) finds
/// against `keys` and the keyless policy; None when neither is given.
fn layer_verdict(
    payload: &[u8],
    layer: &cosign::SignatureLayer,
    digest: &Digest,
    keys: &[PublicKey],
    keyless: Option<&KeylessPolicy>,
) -> Option<Verdict> {
    let keyed = match (&layer.signature, keys.is_empty()) {
        (_, true) => None,
        (Err(why), false) => Some(Verdict::Unusable(why.clone())),
        (Ok(sig), false) => Some(cosign::check(payload, sig, digest, keys)),
    };
    match keyless {
        Some(policy) if !matches!(keyed, Some(Verdict::Valid(_))) => {
            let annotations = layer.payload.annotations().cloned().unwrap_or_default();
            let has_certificate = annotations.contains_key(sigstore::CERTIFICATE_ANNOTATION);
            match (&layer.signature, has_certificate || keyed.is_none()) {
                (_, false) => keyed,
                (Err(why), true) => Some(Verdict::Unusable(why.clone())),
                (Ok(sig), true) => Some(
                    match sigstore::verify_cosign_layer(payload, sig, &annotations, digest, policy, now()) {
                        Ok(signer) => Verdict::Valid(format!("keyless {signer}")),
                        Err(why) => Verdict::Unusable(why),
                    },
                ),
            }
        }
        _ => keyed,
    }
}

/// One payload blob, read whole (it is small and bounded) and verified
/// against its digest and size while it streams.
async fn read_payload(source: &dyn Source, desc: &Descriptor) -> Result<Vec<u8>> {
    if desc.size > MAX_PAYLOAD_SIZE {
        return Err(Error::invalid(format!(
            "its payload {} is {} bytes, over the {MAX_PAYLOAD_SIZE}-byte limit for simple-signing payloads",
            desc.digest, desc.size
        )));
    }
    let reader = source.open_blob(desc).await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    reader
        .take(MAX_PAYLOAD_SIZE + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| Error::stream(&format!("payload {}", desc.digest), e))?;
    Ok(buf)
}

/// Seconds since the epoch, for certificates checked without a log time.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What verifying a target requires, and who signed once it passed.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// `a cosign signature by keys/a.pub, or a keyless signature by …`.
    pub requires: String,
    /// The signer that satisfied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// One referrer signature (sigstore bundle or Notation envelope) and
/// what checking it found.
#[derive(Debug, Clone)]
pub struct ReferrerSignature {
    /// `sigstore bundle` or `Notation signature`.
    pub kind: &'static str,
    /// The referrer manifest.
    pub manifest: Digest,
    /// The signer, or why it does not count; None when not checked.
    pub verdict: Option<std::result::Result<String, String>>,
}

/// The sigstore bundles and Notation signatures that refer to `digest`
/// beside `image`, each checked against `keyless` / `notation` (when given).
pub async fn referrer_signatures(
    ctx: &PlanContext,
    image: &Reference,
    digest: &Digest,
    policy: &VerifyKeys,
) -> Result<Vec<ReferrerSignature>> {
    let keyless = policy.keyless.as_deref();
    let notation = policy.notation.as_deref();
    let mut out = Vec::new();
    for d in super::referrers::listed(ctx, image, digest).await? {
        let t = d.artifact_type().map(str::to_string).unwrap_or_default();
        let kind = if sigstore::is_bundle_type(&t) {
            let predicate = d.annotations().and_then(|a| a.get("dev.sigstore.bundle.predicateType"));
            if predicate.is_some_and(|p| p != sigstore::COSIGN_SIGN_PREDICATE) {
                continue; // an attestation, not a signature
            }
            "sigstore bundle"
        } else if t == notation::SIGNATURE_ARTIFACT_TYPE {
            "Notation signature"
        } else if t == COSIGN_SIGNATURE_ARTIFACT_TYPE {
            "cosign signature"
        } else {
            continue;
        };
        let checks = match kind {
            "sigstore bundle" => keyless.is_some(),
            "cosign signature" => keyless.is_some() || !policy.keys.is_empty(),
            _ => notation.is_some(),
        };
        let verdict = if checks {
            Some(match read_artifact(ctx, image, &d.digest).await {
                Err(e) => Err(format!("cannot read it: {e}")),
                Ok((manifest, layers)) if kind == "cosign signature" => {
                    cosign_referrer_verdict(&manifest, &layers, digest, policy)
                }
                Ok((_, layers)) => match (kind, keyless, notation) {
                    ("sigstore bundle", Some(policy), _) => match layers.first() {
                        Some((_, bytes)) => {
                            sigstore::verify_bundle(bytes, digest, policy, now()).map(|s| format!("keyless {s}"))
                        }
                        None => Err("the bundle referrer holds no layer".into()),
                    },
                    (_, _, Some(policy)) => notation_verdict(&layers, image, digest, policy),
                    _ => Err("not checked".into()),
                },
            })
        } else {
            None
        };
        out.push(ReferrerSignature {
            kind,
            manifest: d.digest,
            verdict,
        });
    }
    Ok(out)
}

/// The artifact type of cosign's OCI 1.1 referrer form of a `.sig`
/// manifest (`--registry-referrers-mode=oci-1-1`).
pub const COSIGN_SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// A cosign signature manifest found as a referrer: its simple-signing
/// layers checked like a `.sig` tag's.
fn cosign_referrer_verdict(
    manifest: &ImageManifest,
    layers: &[(Descriptor, Vec<u8>)],
    digest: &Digest,
    policy: &VerifyKeys,
) -> std::result::Result<String, String> {
    let mut why = Vec::new();
    for layer in cosign::signature_layers(manifest) {
        let Some((_, payload)) = layers.iter().find(|(d, _)| d.digest == layer.payload.digest) else {
            continue;
        };
        match layer_verdict(payload, &layer, digest, &policy.keys, policy.keyless.as_deref()) {
            Some(Verdict::Valid(k)) if k.starts_with("keyless ") => return Ok(k),
            Some(Verdict::Valid(k)) => return Ok(format!("cosign key {k}")),
            Some(v) => why.push(v.to_string()),
            None => {}
        }
    }
    Err(if why.is_empty() {
        "it holds no simple-signing layers".into()
    } else {
        why.join("; ")
    })
}

/// A Notation referrer's envelope checked under the trust policy; the
/// policy's scope is the source's `host/repository` (an OCI layout: `*`).
fn notation_verdict(
    layers: &[(Descriptor, Vec<u8>)],
    image: &Reference,
    digest: &Digest,
    policy: &NotationPolicy,
) -> std::result::Result<String, String> {
    let id = StoreId::of(image);
    let scope = match (id.host(), id.repository_name()) {
        (Some(host), Some(repo)) => format!("{host}/{repo}"),
        _ => image.to_string(),
    };
    let Some((desc, bytes)) = layers.first() else {
        return Err("the Notation referrer holds no envelope layer".into());
    };
    match &*desc.media_type {
        notation::JWS_MEDIA_TYPE => notation::verify_jws(
            bytes,
            &notation::Target {
                digest,
                size: None,
                scope: &scope,
            },
            policy,
            now(),
        )
        .map(|s| format!("Notation {s}")),
        notation::COSE_MEDIA_TYPE => Err("a COSE envelope: occy verifies Notation JWS envelopes only".into()),
        other => Err(format!("an envelope of media type {other}, not JWS")),
    }
}

/// Envelopes and bundles are small; larger layers are not read.
const MAX_ENVELOPE_SIZE: u64 = 4 * 1024 * 1024;

/// A referrer's manifest and its layers' bytes (each verified against its
/// digest), from the registry repository or OCI layout `image` names.
async fn read_artifact(
    ctx: &PlanContext,
    image: &Reference,
    digest: &Digest,
) -> Result<(ImageManifest, Vec<(Descriptor, Vec<u8>)>)> {
    let parse = |raw: &RawManifest| match raw.parse()? {
        Manifest::Image(m) => Ok(m),
        Manifest::Index(_) => Err(Error::invalid(format!(
            "referrer {digest} is an index, not a signature manifest"
        ))),
    };
    let too_big = |d: &Descriptor| {
        Error::invalid(format!(
            "layer {} of referrer {digest} is {} bytes, over the {MAX_ENVELOPE_SIZE}-byte limit for signatures",
            d.digest, d.size
        ))
    };
    let store = ctx.store(image)?;
    if !store.capabilities().holds_referrers {
        return Err(Error::invalid(format!("{image} holds no referrers")));
    }
    let raw = store
        .manifest(digest.as_str())
        .await?
        .ok_or_else(|| Error::NotFound(format!("referrer {digest} is not in {image}")))?;
    let manifest = parse(&raw)?;
    let mut layers = Vec::new();
    for l in &manifest.layers {
        if l.size > MAX_ENVELOPE_SIZE {
            return Err(too_big(l));
        }
        layers.push((l.clone(), store.small_blob(l, MAX_ENVELOPE_SIZE).await?));
    }
    Ok((manifest, layers))
}

/// Every signature of `digest` beside `image` checked against `policy`:
/// Ok with the first signer it accepts, or Err with why none counts.
pub async fn verify_image(
    ctx: &PlanContext,
    image: &Reference,
    digest: &Digest,
    policy: &VerifyKeys,
) -> std::result::Result<String, String> {
    let only_keys = policy.keyless.is_none() && policy.notation.is_none();
    let no = if only_keys {
        format!("no signature by {} for {digest}", policy.names())
    } else {
        format!("no accepted signature for {digest} (wanted {})", policy.describe())
    };
    let mut reasons = Vec::new();
    let mut sig_tag_missing = None;
    if !policy.keys.is_empty() || policy.keyless.is_some() {
        let Some(signatures) = signature_reference(image, digest) else {
            return Err(format!(
                "{no}: this source holds no signatures; verify needs a registry:// or oci:// source"
            ));
        };
        match read_signatures(
            &signatures,
            &ctx.source_options(&signatures),
            digest,
            &policy.keys,
            policy.keyless.as_deref(),
        )
        .await
        {
            Ok(s) => match s.verified_by() {
                Some(k) if k.starts_with("keyless ") => return Ok(k.to_string()),
                Some(k) => return Ok(format!("cosign key {k}")),
                None if s.manifest.is_none() => sig_tag_missing = Some(s.why_not()),
                None => reasons.push(s.why_not()),
            },
            Err(e) => reasons.push(format!("cannot read its signatures: {e}")),
        }
    }
    match referrer_signatures(ctx, image, digest, policy).await {
        Ok(found) => {
            if let Some(ok) = found
                .iter()
                .find_map(|f| f.verdict.as_ref().and_then(|v| v.as_ref().ok()))
            {
                return Ok(ok.clone());
            }
            let checked: Vec<String> = found
                .iter()
                .filter_map(|f| match &f.verdict {
                    Some(Err(why)) => Some(format!("{} {}: {why}", f.kind, f.manifest.short())),
                    _ => None,
                })
                .collect();
            if !checked.is_empty() {
                reasons.extend(checked);
            } else if reasons.is_empty() {
                reasons.push(match (only_keys, sig_tag_missing) {
                    (true, Some(m)) => m,
                    (_, m) => format!(
                        "no sigstore bundle, cosign or Notation signature refers to it{}",
                        m.map(|m| format!(", and {m}")).unwrap_or_default()
                    ),
                });
            }
        }
        Err(e) if only_keys => {
            reasons.extend(sig_tag_missing);
            tracing::debug!("{image}: its referrers were not listed: {e}");
        }
        Err(e) => reasons.push(format!("cannot list its referrers: {e}")),
    }
    Err(format!("{no}: {}", reasons.join("; ")))
}

/// Fails every planned target whose entry has `verify:` and whose source
/// image carries no signature it accepts; names the signer of the others.
/// Each (image, entry) is checked once.
pub async fn check_targets(ctx: &PlanContext, planned: &mut [PlannedTarget]) {
    let wanted = super::distinct(planned.iter().filter_map(|p| job_of(ctx, p)));
    if wanted.is_empty() {
        return;
    }
    let outcomes: HashMap<Job, std::result::Result<String, String>> = stream::iter(wanted)
        .map(|job| async move {
            let outcome = check_one(ctx, &job).await;
            (job, outcome)
        })
        .buffer_unordered(PLAN_CONCURRENCY)
        .collect()
        .await;
    let mut verified = 0;
    for p in planned.iter_mut() {
        let Some(job) = job_of(ctx, p) else { continue };
        let requires = ctx
            .spec
            .entries
            .get(p.entry)
            .and_then(|e| e.verify.as_ref())
            .map(VerifyKeys::describe)
            .unwrap_or_default();
        match outcomes.get(&job) {
            Some(Err(error)) => {
                p.verification = Some(Box::new(Verification { requires, signer: None }));
                p.action = Action::Failed { error: error.clone() }
            }
            Some(Ok(signer)) => {
                verified += 1;
                tracing::debug!("{}: signature verified: {signer}", p.source());
                p.verification = Some(Box::new(Verification {
                    requires,
                    signer: Some(signer.clone()),
                }));
            }
            None => {}
        }
    }
    let images = outcomes.values().filter(|o| o.is_ok()).count();
    if images > 0 {
        tracing::info!("verify: {images} source image(s) of {verified} target(s) carry a valid signature");
    }
}

/// One check: the image's digest, the image, and the entry whose policy
/// applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job {
    digest: Digest,
    image: String,
    entry: usize,
}

/// What verifying `p` takes; None when its entry verifies nothing or it
/// failed already. A source that holds no tags cannot pass (validation
/// refuses `verify:` there).
fn job_of(ctx: &PlanContext, p: &PlannedTarget) -> Option<Job> {
    ctx.spec.entries.get(p.entry)?.verify.as_ref()?;
    if matches!(p.action, Action::Failed { .. }) && p.verification.is_none() {
        return None;
    }
    let digest = p.source_digest.clone()?;
    Some(Job {
        digest,
        image: p.target.source.to_string(),
        entry: p.entry,
    })
}

/// Ok with the signer, or Err with why no signature counts.
async fn check_one(ctx: &PlanContext, job: &Job) -> std::result::Result<String, String> {
    let Some(policy) = ctx.spec.entries.get(job.entry).and_then(|e| e.verify.as_ref()) else {
        return Err("no verify policy".into());
    };
    let image = Reference::parse(&job.image).map_err(|e| format!("{}: {e}", job.image))?;
    verify_image(ctx, &image, &job.digest, policy).await
}

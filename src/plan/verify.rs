//! `verify:`: before an image is planned, its cosign signatures are read from
//! beside it (the `sha256-<hex>.sig` tag, in its registry repository or OCI
//! layout, of the digest the source's tag names, and each payload blob,
//! streamed, verified and bounded) and
//! checked against the entry's public keys. A target whose source carries no
//! valid signature by one of them fails with the reason — which signatures
//! were found and why each did not count — and the rest of the sync goes on.
//! `occy info --verify-key` reads signatures the same way.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use tokio::io::AsyncReadExt;

use super::{Action, PlanContext, PlannedTarget, PLAN_CONCURRENCY};
use crate::error::{Error, Result};
use crate::image::cosign::{self, PublicKey, Verdict, MAX_PAYLOAD_SIZE};
use crate::image::manifest::Manifest;
use crate::image::referrers::{cosign_tag, CosignKind};
use crate::image::{Descriptor, Digest, RawManifest};
use crate::reference::Reference;
use crate::source::{open_source, Source, SourceOptions};

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

/// The tag `tag` beside the image `image` names: in its registry
/// repository or OCI layout. None for sources that hold no tags.
pub fn tagged_beside(image: &Reference, tag: &str) -> Option<Reference> {
    match image {
        Reference::Registry(r) => {
            let mut r = r.clone();
            r.tag = Some(tag.to_string());
            r.digest = None;
            Some(Reference::Registry(r))
        }
        Reference::Oci { path, oci_format, .. } => Some(Reference::Oci {
            path: path.clone(),
            tag: Some(tag.to_string()),
            oci_format: *oci_format,
        }),
        _ => None,
    }
}

/// Where the cosign signatures of `digest` are, beside the image `image`
/// names: the `sha256-<hex>.sig` tag of its registry repository or OCI
/// layout. None for sources that hold no tags.
pub fn signature_reference(image: &Reference, digest: &Digest) -> Option<Reference> {
    tagged_beside(image, &cosign_tag(digest, CosignKind::Signature))
}

/// The manifest `tag` names beside the image `image` names, if that tag
/// exists.
pub async fn tagged_manifest(image: &Reference, tag: &str, opts: &SourceOptions) -> Result<Option<RawManifest>> {
    let Some(at) = tagged_beside(image, tag) else {
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
        let verdict = match (&layer.signature, keys.is_empty()) {
            (_, true) => None,
            (Err(why), false) => Some(Verdict::Unusable(why.clone())),
            (Ok(sig), false) => Some(cosign::check(&payload, sig, digest, keys)),
        };
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

/// Fails every planned target whose entry has `verify:` and whose source
/// image carries no valid signature by one of its keys. Each (signature
/// tag, entry) is checked once.
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
        match outcomes.get(&job) {
            Some(Err(error)) => p.action = Action::Failed { error: error.clone() },
            Some(Ok(key)) => {
                verified += 1;
                tracing::debug!("{}: signature verified by {key}", p.source);
            }
            None => {}
        }
    }
    let images = outcomes.values().filter(|o| o.is_ok()).count();
    if images > 0 {
        tracing::info!("verify: {images} source image(s) of {verified} target(s) carry a valid cosign signature");
    }
}

/// One check: the image's digest, where its signatures are, and the entry
/// whose keys apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job {
    digest: Digest,
    signatures: String,
    entry: usize,
}

/// What verifying `p` takes; None when its entry verifies nothing or it
/// failed already. A source that holds no tags cannot pass (validation
/// refuses `verify:` there).
fn job_of(ctx: &PlanContext, p: &PlannedTarget) -> Option<Job> {
    ctx.spec.entries.get(p.entry)?.verify.as_ref()?;
    if matches!(p.action, Action::Failed { .. }) {
        return None;
    }
    let digest = p.source_digest.clone()?;
    let signatures = signature_reference(&p.target.source, &digest)
        .map(|r| r.to_string())
        .unwrap_or_default();
    Some(Job {
        digest,
        signatures,
        entry: p.entry,
    })
}

/// Ok with the key that verified the image, or Err with why none did.
async fn check_one(ctx: &PlanContext, job: &Job) -> std::result::Result<String, String> {
    let Some(keys) = ctx.spec.entries.get(job.entry).and_then(|e| e.verify.as_ref()) else {
        return Err("no keys".into());
    };
    let no = format!("no signature by {} for {}", keys.names(), job.digest);
    let signatures = Reference::parse(&job.signatures).map_err(|_| {
        format!("{no}: this source holds no signature tags; verify needs a registry:// or oci:// source")
    })?;
    match read_signatures(&signatures, &ctx.source_options(&signatures), &job.digest, &keys.keys).await {
        Ok(s) => match s.verified_by() {
            Some(k) => Ok(k.to_string()),
            None => Err(format!("{no}: {}", s.why_not())),
        },
        Err(e) => Err(format!("{no}: cannot read its signatures: {e}")),
    }
}

//! `occy info SRC`: what an image is — manifest, platform, config, layers,
//! history and runtime settings — as a readable summary or one JSON document.
//! A source that names many images (`quay://org/*:tag`, registry globs) is
//! expanded as a sync entry would be and described `-J` at a time: a JSON
//! array, or `---`-separated text.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Args;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::output::{human_size, table};
use super::{GlobalArgs, OutputFormat, PlatformArgs};
use crate::error::{Error, Result};
use crate::image::cosign::{PublicKey, Verdict};
use crate::image::notation::NotationPolicy;
use crate::image::referrers::{cosign_tag, fallback_tag, CosignKind};
use crate::image::sigstore::{Identity, KeylessPolicy, TrustedRoot};
use crate::image::{media_type, Compression, ImageData, Manifest};
use crate::plan::expand::{expand_all, Expansion};
use crate::plan::verify::{read_signatures, referrer_signatures, signature_reference, tagged_manifest};
use crate::plan::PlanContext;
use crate::reference::Reference;
use crate::source::{choose_platforms, load_image, open_source, PlatformSelection, Source, SourceOptions};
use crate::spec::command_line::{names_many, OneShot};
use crate::spec::VerifyKeys;

/// Arguments of `occy info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Image reference
    #[arg(help = format!("Image reference ({}); a glob or quay:// names many images", crate::reference::source_schemes()))]
    pub source: String,

    #[command(flatten)]
    pub platforms: PlatformArgs,

    /// Images described at once, when the source names many (default 3)
    ///
    /// [env: OCCY_IMAGE_PARALLEL]
    #[arg(short = 'J', long, value_name = "N", default_value_t = 3, hide_default_value = true, env = "OCCY_IMAGE_PARALLEL", hide_env = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub image_parallel: u16,

    /// Check the image's cosign signatures against this public key (PEM; repeatable)
    #[arg(long = "verify-key", value_name = "PATH")]
    pub verify_keys: Vec<std::path::PathBuf>,

    /// Check keyless (sigstore) signatures offline against this trusted_root.json
    #[arg(long, value_name = "PATH", requires = "certificate_oidc_issuer")]
    pub trusted_root: Option<std::path::PathBuf>,

    /// The identity (email or URI) a keyless signature must name
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "certificate_identity_regexp",
        requires = "trusted_root"
    )]
    pub certificate_identity: Option<String>,

    /// A regular expression the identity of a keyless signature must match
    #[arg(long, value_name = "REGEX", requires = "trusted_root", hide_short_help = true)]
    pub certificate_identity_regexp: Option<String>,

    /// The OIDC issuer a keyless signature's certificate must name
    #[arg(long, value_name = "URL", requires = "trusted_root")]
    pub certificate_oidc_issuer: Option<String>,

    /// Check Notation signatures under this trust policy (trustpolicy.json)
    #[arg(long, value_name = "PATH", requires = "notation_trust_store")]
    pub notation_trust_policy: Option<std::path::PathBuf>,

    /// The Notation trust store directory (holding x509/ca/NAME/)
    #[arg(long, value_name = "DIR", requires = "notation_trust_policy", hide_short_help = true)]
    pub notation_trust_store: Option<std::path::PathBuf>,
}

/// One sigstore bundle or Notation signature that refers to the image.
#[derive(Debug, Serialize)]
pub struct ReferrerSignatureInfo {
    /// `sigstore bundle` or `Notation signature`.
    pub kind: &'static str,
    /// The referrer manifest.
    pub manifest: String,
    /// `verified`, `not verified` or `not checked`.
    pub status: &'static str,
    /// Who signed, when and how — or why it does not count.
    pub detail: String,
}

/// One thing that refers to the image: a cosign tag, or an entry of the
/// OCI referrers index tag.
#[derive(Debug, Serialize)]
pub struct ReferrerInfo {
    /// `signature`, `attestation`, `sbom`, or the artifact type of an OCI referrer.
    pub kind: String,
    /// The tag it was found under.
    pub tag: String,
    pub digest: String,
    /// For a cosign `.sig` tag: each signature and whether it verifies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureInfo>,
}

/// One cosign signature.
#[derive(Debug, Serialize)]
pub struct SignatureInfo {
    pub payload: String,
    /// The manifest digest the payload names.
    pub signs: Option<String>,
    /// `verified`, `not verified` or `not checked` (no `--verify-key`).
    pub status: &'static str,
    /// The key that verified it, or why it did not.
    pub detail: String,
}

/// One platform entry of an index.
#[derive(Debug, Serialize)]
pub struct PlatformEntry {
    pub platform: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// One layer row.
#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    pub digest: String,
    pub diff_id: Option<String>,
    pub size: u64,
    pub media_type: String,
    pub compression: Option<Compression>,
    pub created_by: Option<String>,
}

/// History counts.
#[derive(Debug, Serialize)]
pub struct HistoryInfo {
    pub entries: usize,
    pub empty_layers: usize,
}

/// Everything `info` reports about one image.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub source: String,
    pub image: String,
    pub tag: Option<String>,
    /// The index digest, when the reference names an index.
    pub index_digest: Option<String>,
    pub index_media_type: Option<String>,
    pub platforms: Option<Vec<PlatformEntry>>,
    pub manifest_digest: String,
    pub schema_version: u32,
    pub media_type: String,
    /// `oci` or `docker`.
    pub format: &'static str,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub config_digest: String,
    pub config_size: u64,
    pub created: Option<String>,
    pub layer_count: usize,
    pub compressed_size: u64,
    /// Known only when every layer is stored uncompressed.
    pub uncompressed_size: Option<u64>,
    pub layers: Vec<LayerInfo>,
    pub history: HistoryInfo,
    pub labels: BTreeMap<String, String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
    /// `Test`, `Interval`, `Timeout`, `StartPeriod`, `StartInterval`, `Retries` as in the config.
    pub healthcheck: Option<serde_json::Value>,
    pub on_build: Vec<String>,
    pub shell: Vec<String>,
    /// What refers to the image's digest (registry and OCI-layout sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<Vec<ReferrerInfo>>,
    /// The sigstore bundles and Notation signatures among its referrers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Vec<ReferrerSignatureInfo>>,
}

/// What `--verify-key`, `--trusted-root …` and `--notation-trust-…` ask
/// signatures to be checked against.
fn load_policy(args: &InfoArgs) -> Result<VerifyKeys> {
    let keys = load_keys(&args.verify_keys)?;
    let keyless = match &args.trusted_root {
        None => None,
        Some(path) => {
            let identity = match (&args.certificate_identity, &args.certificate_identity_regexp) {
                (Some(i), None) => Identity::Exact(i.clone()),
                (None, Some(r)) => Identity::Regexp(
                    regex::Regex::new(r)
                        .map_err(|e| Error::usage(format!("--certificate-identity-regexp {r:?}: {e}")))?,
                ),
                _ => {
                    return Err(Error::usage(
                        "--trusted-root needs --certificate-identity or --certificate-identity-regexp",
                    ))
                }
            };
            let bytes = std::fs::read(path)
                .map_err(|e| Error::usage(format!("cannot read --trusted-root {}: {e}", path.display())))?;
            let root = TrustedRoot::from_json(&path.display().to_string(), &bytes).map_err(Error::usage)?;
            Some(Arc::new(KeylessPolicy {
                issuer: args.certificate_oidc_issuer.clone().unwrap_or_default(),
                identity,
                root: Arc::new(root),
            }))
        }
    };
    let notation = match (&args.notation_trust_policy, &args.notation_trust_store) {
        (Some(policy), Some(store)) => {
            let bytes = std::fs::read(policy)
                .map_err(|e| Error::usage(format!("cannot read --notation-trust-policy {}: {e}", policy.display())))?;
            Some(Arc::new(
                NotationPolicy::load(&policy.display().to_string(), &bytes, store).map_err(Error::usage)?,
            ))
        }
        _ => None,
    };
    Ok(VerifyKeys {
        keys,
        keyless,
        notation,
    })
}

/// The public keys of `--verify-key` (`occy info`, `occy process`).
pub(super) fn load_keys(paths: &[std::path::PathBuf]) -> Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::usage(format!("cannot read --verify-key {}: {e}", p.display())))?;
            PublicKey::from_pem(&p.display().to_string(), &text).map_err(|e| Error::usage(format!("--verify-key: {e}")))
        })
        .collect()
}

/// Lists what refers to the image `info` describes, when it comes from a
/// registry or an OCI layout: cosign's `.sig`, `.att` and `.sbom` tags of
/// its digest (each signature checked against `keys`), and the entries of
/// its OCI referrers-tag-schema index (`sha256-<hex>`).
async fn add_referrers(info: &mut ImageInfo, reference: &Reference, ctx: &PlanContext, policy: &VerifyKeys) {
    if !matches!(reference, Reference::Registry(_) | Reference::Oci { .. }) {
        return;
    }
    let digest = info.index_digest.as_deref().unwrap_or(&info.manifest_digest);
    let Ok(digest) = crate::image::Digest::parse(digest) else {
        return;
    };
    let opts = ctx.source_options(reference);
    match list_referrers(reference, &digest, &opts, &policy.keys, policy.keyless.as_deref()).await {
        Ok(list) => info.referrers = Some(list),
        Err(e) => eprintln!("warning: the referrers of {reference} were not listed: {e}"),
    }
    match referrer_signatures(ctx, reference, &digest, policy).await {
        Ok(found) if !found.is_empty() => {
            info.signatures = Some(
                found
                    .into_iter()
                    .map(|f| {
                        let (status, detail) = match f.verdict {
                            Some(Ok(who)) => ("verified", format!("verified: {who}")),
                            Some(Err(why)) => ("not verified", format!("not verified: {why}")),
                            None => (
                                "not checked",
                                "not checked (give --trusted-root … or --notation-trust-policy …)".to_string(),
                            ),
                        };
                        ReferrerSignatureInfo {
                            kind: f.kind,
                            manifest: f.manifest.to_string(),
                            status,
                            detail,
                        }
                    })
                    .collect(),
            )
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: the signature referrers of {reference} were not listed: {e}"),
    }
}

async fn list_referrers(
    image: &Reference,
    digest: &crate::image::Digest,
    opts: &SourceOptions,
    keys: &[PublicKey],
    keyless: Option<&KeylessPolicy>,
) -> Result<Vec<ReferrerInfo>> {
    let mut out = Vec::new();
    for kind in CosignKind::ALL {
        let tag = cosign_tag(digest, kind);
        if kind == CosignKind::Signature {
            let Some(at) = signature_reference(image, digest) else {
                continue;
            };
            let found = read_signatures(&at, opts, digest, keys, keyless).await?;
            if let Some(d) = &found.manifest {
                out.push(ReferrerInfo {
                    kind: "signature".into(),
                    tag,
                    digest: d.to_string(),
                    signatures: found
                        .signatures
                        .iter()
                        .map(|s| {
                            let (status, detail) = match &s.verdict {
                                Some(Verdict::Valid(k)) => ("verified", format!("verified by {k}")),
                                Some(v) => ("not verified", format!("not verified: {v}")),
                                None => (
                                    "not checked",
                                    "not checked (no --verify-key nor --trusted-root)".to_string(),
                                ),
                            };
                            SignatureInfo {
                                payload: s.payload.digest.to_string(),
                                signs: s.claims.as_ref().map(|c| c.manifest_digest.to_string()),
                                status,
                                detail,
                            }
                        })
                        .collect(),
                });
            }
            continue;
        }
        if let Some(m) = tagged_manifest(image, &tag, opts).await? {
            let kind = match kind {
                CosignKind::Attestation => "attestation",
                _ => "sbom",
            };
            out.push(ReferrerInfo {
                kind: kind.into(),
                tag,
                digest: m.digest.to_string(),
                signatures: Vec::new(),
            });
        }
    }
    let tag = fallback_tag(digest);
    if let Some(raw) = tagged_manifest(image, &tag, opts).await? {
        if let Ok(Manifest::Index(index)) = raw.parse() {
            for d in index.manifests {
                out.push(ReferrerInfo {
                    kind: d
                        .artifact_type()
                        .map(str::to_string)
                        .unwrap_or_else(|| d.media_type.to_string()),
                    tag: tag.clone(),
                    digest: d.digest.to_string(),
                    signatures: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// Builds the info of what `source` names. For an index, the platforms are
/// listed and one is described: the one asked for, else the host's, else the first.
pub async fn gather(reference: &Reference, source: &dyn Source, selection: &PlatformSelection) -> Result<ImageInfo> {
    let root = source.root_manifest().await?;
    let (index_part, image) = match root.parse()? {
        Manifest::Image(_) => (None, load_image(source, root, None).await?),
        Manifest::Index(index) => {
            let describe = source.describe();
            let chosen = match selection {
                PlatformSelection::List(_) => choose_platforms(&index.manifests, selection, &describe)?,
                _ => choose_platforms(&index.manifests, &PlatformSelection::Default, &describe)
                    .or_else(|_| choose_platforms(&index.manifests, &PlatformSelection::All, &describe))?,
            };
            let Some(desc) = chosen.first() else {
                return Err(Error::invalid(format!("index of {describe} lists no platform images")));
            };
            let raw = source.manifest(&desc.digest).await?;
            let img = load_image(source, raw, desc.platform().cloned().map(Box::new)).await?;
            let entries = index
                .manifests
                .iter()
                .map(|d| PlatformEntry {
                    platform: d.platform().map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    digest: d.digest.to_string(),
                    media_type: d.media_type.to_string(),
                    size: d.size,
                })
                .collect();
            (Some((root, entries)), img)
        }
    };
    Ok(describe_image(reference, source, index_part, &image))
}

fn describe_image(
    reference: &Reference,
    source: &dyn Source,
    index_part: Option<(crate::image::RawManifest, Vec<PlatformEntry>)>,
    image: &ImageData,
) -> ImageInfo {
    let cfg = &image.config.parsed;
    let non_empty: Vec<&crate::image::config::History> = cfg.history.iter().filter(|h| !h.empty_layer).collect();
    let layers: Vec<LayerInfo> = image
        .manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| LayerInfo {
            index: i,
            digest: l.digest.to_string(),
            diff_id: cfg.rootfs.diff_ids.get(i).map(|d| d.to_string()),
            size: l.size,
            media_type: l.media_type.to_string(),
            compression: Compression::from_media_type(&l.media_type),
            created_by: non_empty.get(i).map(|h| h.created_by.clone()).filter(|s| !s.is_empty()),
        })
        .collect();
    let uncompressed_size = layers
        .iter()
        .all(|l| l.compression == Some(Compression::None))
        .then(|| layers.iter().map(|l| l.size).sum());
    // Fields occy's config model does not keep, read from the config as it is.
    let raw: serde_json::Value = serde_json::from_slice(&image.config.bytes).unwrap_or_default();
    let runtime = raw.get("config").cloned().unwrap_or_default();
    let strings = |key: &str| -> Vec<String> {
        runtime
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let healthcheck = runtime
        .get("Healthcheck")
        .filter(|h| h.as_object().is_some_and(|o| !o.is_empty()))
        .cloned();
    let name = source.recorded_name();
    let manifest_mt = image.raw_manifest.media_type.to_string();
    ImageInfo {
        source: reference.to_string(),
        image: name
            .as_ref()
            .map(|n| n.repository.clone())
            .unwrap_or_else(|| reference.image_name()),
        tag: reference.tag().map(str::to_string).or_else(|| name.map(|n| n.tag)),
        index_digest: index_part.as_ref().map(|(r, _)| r.digest.to_string()),
        index_media_type: index_part.as_ref().map(|(r, _)| r.media_type.to_string()),
        platforms: index_part.map(|(_, e)| e),
        manifest_digest: image.raw_manifest.digest.to_string(),
        schema_version: image.manifest.schema_version,
        format: if media_type::is_oci(&manifest_mt) {
            "oci"
        } else {
            "docker"
        },
        media_type: manifest_mt,
        os: cfg.os.clone(),
        architecture: cfg.architecture.clone(),
        variant: cfg.variant.clone(),
        config_digest: image.manifest.config.digest.to_string(),
        config_size: image.manifest.config.size,
        created: Some(cfg.created.clone()).filter(|c| !c.is_empty()),
        layer_count: layers.len(),
        compressed_size: image.layers_size(),
        uncompressed_size,
        layers,
        history: HistoryInfo {
            entries: cfg.history.len(),
            empty_layers: cfg.history.iter().filter(|h| h.empty_layer).count(),
        },
        labels: cfg.config.labels.clone(),
        env: cfg.config.env.clone(),
        entrypoint: cfg.config.entrypoint.clone(),
        cmd: cfg.config.cmd.clone(),
        working_dir: cfg.config.working_dir.clone(),
        user: cfg.config.user.clone(),
        exposed_ports: cfg.config.exposed_ports.keys().cloned().collect(),
        volumes: cfg.config.volumes.keys().cloned().collect(),
        stop_signal: Some(cfg.config.stop_signal.clone()).filter(|s| !s.is_empty()),
        healthcheck,
        on_build: strings("OnBuild"),
        shell: strings("Shell"),
        referrers: None,
        signatures: None,
    }
}

/// `["sh", "-c", "x"]`: an exec-form list as the Dockerfile writes it.
fn exec_form(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.join(" "))
}

/// A Go duration in nanoseconds as `30s`, `1m30s` or `500ms`.
fn go_duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// `CMD-SHELL curl -f localhost (interval 30s, timeout 3s, retries 3)`.
fn healthcheck_text(h: &serde_json::Value) -> String {
    let test: Vec<String> = h
        .get("Test")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let mut out = match test.split_first() {
        Some((kind, rest)) if kind == "CMD-SHELL" => format!("CMD-SHELL {}", rest.join(" ")),
        Some((kind, rest)) if kind == "CMD" => format!("CMD {}", exec_form(rest)),
        Some((kind, _)) if kind == "NONE" => "NONE (disabled)".to_string(),
        _ => exec_form(&test),
    };
    let mut timing = Vec::new();
    for (key, word) in [
        ("Interval", "interval"),
        ("Timeout", "timeout"),
        ("StartPeriod", "start period"),
        ("StartInterval", "start interval"),
    ] {
        if let Some(ns) = h.get(key).and_then(|v| v.as_u64()).filter(|n| *n > 0) {
            timing.push(format!("{word} {}", go_duration(ns)));
        }
    }
    if let Some(r) = h.get("Retries").and_then(|v| v.as_u64()).filter(|n| *n > 0) {
        timing.push(format!("retries {r}"));
    }
    if !timing.is_empty() {
        out.push_str(&format!(" ({})", timing.join(", ")));
    }
    out
}

/// Renders the info as readable text.
pub fn render_text(info: &ImageInfo) -> String {
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<19}{}\n", format!("{k}:"), v));
    field("Image", info.image.clone());
    field("Tag", info.tag.clone().unwrap_or_else(|| "-".into()));
    if let (Some(d), Some(mt)) = (&info.index_digest, &info.index_media_type) {
        field("Index digest", d.clone());
        field("Index media type", mt.clone());
    }
    field("Manifest digest", info.manifest_digest.clone());
    field("Schema version", info.schema_version.to_string());
    let family = if info.format == "oci" { "OCI" } else { "Docker v2" };
    field("Media type", format!("{} ({family})", info.media_type));
    let mut platform = format!("{}/{}", info.os, info.architecture);
    if let Some(v) = &info.variant {
        platform.push('/');
        platform.push_str(v);
    }
    field("Platform", platform);
    field("Config digest", info.config_digest.clone());
    field("Created", info.created.clone().unwrap_or_else(|| "-".into()));
    field("Layers", info.layer_count.to_string());
    field(
        "Compressed size",
        format!("{} ({} bytes)", human_size(info.compressed_size), info.compressed_size),
    );
    field(
        "Uncompressed size",
        info.uncompressed_size
            .map(|s| format!("{} ({s} bytes)", human_size(s)))
            .unwrap_or_else(|| "unknown (layers are compressed)".into()),
    );
    field(
        "History",
        format!(
            "{} entries ({} empty layers)",
            info.history.entries, info.history.empty_layers
        ),
    );
    // Runtime settings: each one the config has, none it lacks or leaves empty.
    if !info.user.is_empty() {
        field("User", info.user.clone());
    }
    if !info.working_dir.is_empty() {
        field("Working dir", info.working_dir.clone());
    }
    if !info.entrypoint.is_empty() {
        field("Entrypoint", exec_form(&info.entrypoint));
    }
    if !info.cmd.is_empty() {
        field("Cmd", exec_form(&info.cmd));
    }
    if !info.exposed_ports.is_empty() {
        field("Exposed ports", info.exposed_ports.join(" "));
    }
    if !info.volumes.is_empty() {
        field("Volumes", info.volumes.join(" "));
    }
    if let Some(s) = &info.stop_signal {
        field("Stop signal", s.clone());
    }
    if let Some(h) = &info.healthcheck {
        field("Healthcheck", healthcheck_text(h));
    }
    if !info.shell.is_empty() {
        field("Shell", exec_form(&info.shell));
    }
    if let Some(platforms) = &info.platforms {
        out.push_str("\nPlatforms:\n");
        let rows: Vec<Vec<String>> = platforms
            .iter()
            .map(|p| vec![p.platform.clone(), p.digest.clone(), human_size(p.size)])
            .collect();
        for line in table(&["PLATFORM", "DIGEST", "SIZE"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str("\nLayers:\n");
    let rows: Vec<Vec<String>> = info
        .layers
        .iter()
        .map(|l| {
            let short = |d: &str| d.get(..19).unwrap_or(d).to_string();
            vec![
                l.index.to_string(),
                short(&l.digest),
                l.diff_id.as_deref().map(short).unwrap_or_else(|| "-".into()),
                human_size(l.size),
                l.compression
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "unknown".into()),
                l.media_type.clone(),
                l.created_by
                    .clone()
                    .map(|c| truncate(&c, 60))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    for line in table(
        &[
            "#",
            "DIGEST",
            "DIFF_ID",
            "SIZE",
            "COMPRESSION",
            "MEDIA TYPE",
            "CREATED BY",
        ],
        &rows,
    )
    .lines()
    {
        out.push_str(&format!("  {line}\n"));
    }
    if !info.env.is_empty() {
        out.push_str("\nEnv:\n");
        for e in &info.env {
            out.push_str(&format!("  {e}\n"));
        }
    }
    if !info.labels.is_empty() {
        out.push_str("\nLabels:\n");
        for (k, v) in &info.labels {
            out.push_str(&format!("  {k}={v}\n"));
        }
    }
    if !info.on_build.is_empty() {
        out.push_str("\nOnBuild:\n");
        for o in &info.on_build {
            out.push_str(&format!("  {o}\n"));
        }
    }
    if let Some(referrers) = &info.referrers {
        if referrers.is_empty() {
            if info.signatures.is_none() {
                out.push_str("\nReferrers:         none (no cosign tags, no referrers index tag)\n");
            }
        } else {
            out.push_str("\nReferrers:\n");
            let rows: Vec<Vec<String>> = referrers
                .iter()
                .map(|r| vec![r.kind.clone(), r.tag.clone(), r.digest.clone()])
                .collect();
            for line in table(&["KIND", "TAG", "DIGEST"], &rows).lines() {
                out.push_str(&format!("  {line}\n"));
            }
            for r in referrers.iter().filter(|r| !r.signatures.is_empty()) {
                out.push_str(&format!("\nSignatures ({}):\n", r.tag));
                for (i, s) in r.signatures.iter().enumerate() {
                    let signs = s.signs.as_deref().unwrap_or("an unreadable payload");
                    out.push_str(&format!("  #{} signs {signs}: {}\n", i + 1, s.detail));
                }
            }
        }
    }
    for r in info.signatures.iter().flatten() {
        out.push_str(&format!("\n{} {}:\n  {}\n", r.kind, r.manifest, r.detail));
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Runs `occy info`.
pub async fn run(global: &GlobalArgs, args: &InfoArgs) -> Result<i32> {
    let reference = Reference::parse(&args.source)?;
    let selection = args.platforms.selection()?;
    if names_many(&reference) {
        return run_many(global, args, &reference, selection).await;
    }
    let policy = load_policy(args)?;
    let ctx = context(global, args, selection.clone())?;
    let source = open_source(&reference, &global.source_options()?).await?;
    let mut info = gather(&reference, source.as_ref(), &selection).await?;
    add_referrers(&mut info, &reference, &ctx, &policy).await;
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            print!("{}", render_text(&info))
        }
    }
    Ok(0)
}

/// The plan context `info` reads through (registry options, the source as
/// a one-shot spec).
fn context(global: &GlobalArgs, args: &InfoArgs, selection: PlatformSelection) -> Result<PlanContext> {
    let spec = OneShot {
        command: "occy info",
        source: &args.source,
        destination: None,
        chain: Default::default(),
        filter_texts: &[],
        platforms: selection,
    }
    .spec()?;
    Ok(PlanContext {
        spec: Arc::new(spec),
        base: global.registry_options()?,
        cache: None,
        only: Vec::new(),
        pinned: None,
        write_all: true,
        prune: false,
        sharding: None,
        memo: Default::default(),
        shown_only: false,
    })
}

/// `occy info` of every image a pattern names, `-J` at a time, in the order
/// the expansion gives; one that fails is named and the rest still shown.
async fn run_many(
    global: &GlobalArgs,
    args: &InfoArgs,
    reference: &Reference,
    selection: PlatformSelection,
) -> Result<i32> {
    let ctx = context(global, args, selection.clone())?;
    let mut images = Vec::new();
    for e in expand_all(&ctx.spec, &ctx).await {
        match e {
            Expansion::Images(found) => images.extend(found.into_iter().map(|i| i.reference)),
            Expansion::Failed { error, .. } => return Err(error),
        }
    }
    let policy = load_policy(args)?;
    if images.is_empty() {
        if !global.quiet {
            eprintln!("No images found matching {reference}");
        }
        return Ok(0);
    }
    let total = images.len();
    let done = AtomicUsize::new(0);
    let results: Vec<(Reference, Result<ImageInfo>)> = stream::iter(images)
        .map(|r| {
            let (ctx, selection, done, policy) = (&ctx, &selection, &done, &policy);
            async move {
                let mut info = match open_source(&r, &ctx.source_options(&r)).await {
                    Ok(source) => gather(&r, source.as_ref(), selection).await,
                    Err(e) => Err(e),
                };
                if let Ok(i) = &mut info {
                    add_referrers(i, &r, ctx, policy).await;
                }
                if !global.quiet {
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    match &info {
                        Ok(_) => eprintln!("[{n}/{total}] {r} complete"),
                        Err(e) => eprintln!("[{n}/{total}] {r} FAILED: {e}"),
                    }
                }
                (r, info)
            }
        })
        .buffered(args.image_parallel as usize)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(r, i)| i.as_ref().err().map(|e| format!("{r}: {e}")))
        .collect();
    let infos: Vec<&ImageInfo> = results.iter().filter_map(|(_, i)| i.as_ref().ok()).collect();
    match global.output_format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&infos)?),
        OutputFormat::Text | OutputFormat::Markdown | OutputFormat::Dot | OutputFormat::Github => {
            let texts: Vec<String> = infos.iter().map(|i| render_text(i)).collect();
            print!("{}", texts.join("---\n"));
        }
    }
    for f in &failed {
        eprintln!("error: {f}");
    }
    if !failed.is_empty() && !global.quiet {
        eprintln!("{} of {total} images failed", failed.len());
    }
    Ok(i32::from(!failed.is_empty()))
}

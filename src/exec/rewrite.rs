//! A filter chain as a stage of the one copy pipeline: [`rewrite_stream`]
//! runs the chain over one uncompressed layer, recompressing and hashing in
//! one pass into a private spool file ([`crate::filter::layer`]) that feeds
//! every destination of the chain; [`rewrite_image`] and [`rewrite_index`]
//! update the config (`rootfs.diff_ids`, and `created` times with
//! `normalize-timestamps:config=true`), the manifest (layer digests, sizes
//! and media types) and the index to match. A chain that only observes
//! (`search`, `inspect`) leaves every byte and digest as it was.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::Value;
use tracing::{debug, info};

use crate::cache::{CachedLayer, LayerCache};
use crate::error::{Error, Result};
use crate::filter::inspect::{append_line, layer_history, layer_record, InspectLine};
use crate::filter::layer::{rewrite_layer, LayerResult};
use crate::filter::normalize_timestamps::rfc3339;
use crate::filter::{FilterChain, FilterSpec};
use crate::image::{media_type, Compression, ConfigBlob, Descriptor, Digest, ImageData, ImageIndex, RawManifest};
use crate::source::BlobReader;

/// A search match found by a `search` filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilterMatch {
    pub image: String,
    pub layer: usize,
    pub layer_digest: String,
    pub path: String,
}

/// One input layer after the chain.
pub struct Rewritten {
    pub result: LayerResult,
    /// The rewritten blob, when the chain changes content.
    pub spool: Option<tempfile::NamedTempFile>,
}

/// A private temporary file in the temp dir (removed when dropped), for
/// what a run holds only until its stores have it.
pub(crate) fn spool_file() -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("occy-layer-")
        .tempfile()
        .map_err(|e| Error::io("create a temporary file in", std::env::temp_dir(), e))
}

/// Layer rewrites running at once in this process, whatever `-J` and `-j`
/// say: one per core. A rewrite is bound by compression, which already
/// spreads each layer over every core, so more at once would only add
/// buffers, threads and memory.
fn rewrite_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        tokio::sync::Semaphore::new(cores.max(2))
    })
}

/// Whether a chain observes layers (`search`, `inspect`): then every layer
/// must be read, and the layer cache may not answer for it.
pub fn observes(chain: &FilterChain) -> bool {
    chain
        .filters
        .iter()
        .any(|f| matches!(f, FilterSpec::Search { .. } | FilterSpec::Inspect { .. }))
}

/// The layer cache key of `input` through `chain`, compressed as given.
pub fn cache_key(input: &Digest, chain: &FilterChain, compression: Compression, level: Option<i32>) -> String {
    LayerCache::rewrite_key(input, &chain.hash(), compression, level)
}

/// Runs the chain over the uncompressed layer `plain` (already verified
/// against its diff_id as it streams), writing the output compressed as
/// asked to a spool file when the chain changes content. Remembers the
/// result in the layer cache.
pub async fn rewrite_stream(
    plain: BlobReader,
    chain: &FilterChain,
    input: &Digest,
    compression: Compression,
    level: Option<i32>,
    cache: Option<&LayerCache>,
) -> Result<Rewritten> {
    let what = format!("layer {input}");
    let _slot = rewrite_slots()
        .acquire()
        .await
        .map_err(|_| Error::invalid("the layer rewrite slots were closed"))?;
    let spool = if chain.changes_content() {
        Some(spool_file()?)
    } else {
        None
    };
    let out: Box<dyn std::io::Write + Send> = match &spool {
        Some(f) => Box::new(f.reopen().map_err(|e| Error::io("open", f.path(), e))?),
        None => Box::new(std::io::sink()),
    };
    let owned_chain = chain.clone();
    let result = tokio::task::spawn_blocking(move || {
        let bridge = crate::interrupt::Bridge::new(plain);
        rewrite_layer(bridge, &owned_chain, compression, level, out, &what)
    })
    .await
    .map_err(|e| Error::invalid(format!("the filter task for layer {input} failed: {e}")))??;
    debug!(layer = %input, out = %result.digest, size = result.size, "layer rewritten");
    if let (Some(cache), true, false) = (cache, chain.changes_content(), observes(chain)) {
        cache.put(&CachedLayer {
            key: cache_key(input, chain, compression, level),
            input: input.clone(),
            digest: result.digest.clone(),
            size: result.size,
            diff_id: result.diff_id.clone(),
            compression: result.compression,
        });
    }
    Ok(Rewritten { result, spool })
}

/// The descriptor a rewritten layer has in a store: compressed as the
/// rewrite made it, or as plain tar (keyed by diff_id) for plain-tar stores.
pub fn output_descriptor(result: &LayerResult, plain_store: bool) -> Descriptor {
    if plain_store {
        Descriptor::new(media_type::DOCKER_LAYER_TAR, result.diff_id.clone(), result.plain_size)
    } else {
        Descriptor::new(
            result.compression.layer_media_type(true),
            result.digest.clone(),
            result.size,
        )
    }
}

/// The image after the chain: new config and manifest bytes. `results`
/// maps each input layer digest to its rewrite; `plain_store` says the
/// destination keeps plain tar (layers are then described as such).
pub fn rewrite_image(
    img: &ImageData,
    results: &HashMap<Digest, LayerResult>,
    chain: &FilterChain,
    plain_store: bool,
) -> Result<ImageData> {
    let config_ts = chain.config_timestamp();
    if !chain.changes_content() && config_ts.is_none() {
        return Ok(img.clone());
    }
    let results: Vec<&LayerResult> = img
        .manifest
        .layers
        .iter()
        .map(|d| {
            results
                .get(&d.digest)
                .ok_or_else(|| Error::invalid(format!("layer {} was not rewritten", d.digest)))
        })
        .collect::<Result<_>>()?;

    // The config: diff_ids, and times when asked; every other field kept.
    // A pure re-encoding (`recompress`) keeps every diff_id, so the config
    // keeps its bytes and digest.
    let mut config: Value = serde_json::from_slice(&img.config.bytes)?;
    let mut config_changed = config_ts.is_some();
    if chain.changes_content() {
        let diff_ids = Value::Array(results.iter().map(|r| Value::from(r.diff_id.to_string())).collect());
        if config["rootfs"]["diff_ids"] != diff_ids {
            config["rootfs"]["diff_ids"] = diff_ids;
            config_changed = true;
        }
    }
    if let Some(ts) = config_ts {
        let when = Value::from(rfc3339(ts));
        if config.get("created").is_some() {
            config["created"] = when.clone();
        }
        if let Some(history) = config.get_mut("history").and_then(Value::as_array_mut) {
            for h in history {
                if h.get("created").is_some() {
                    h["created"] = when.clone();
                }
            }
        }
    }
    let config = if config_changed {
        ConfigBlob::parse(
            Bytes::from(serde_json::to_vec(&config)?),
            &format!("the filtered config of {}", img.raw_manifest.digest),
        )?
    } else {
        img.config.clone()
    };

    // The manifest: config and layer descriptors; OCI types when a layer is
    // zstd (Docker v2 has no zstd layer type).
    let mut manifest: Value = serde_json::from_slice(&img.raw_manifest.bytes)?;
    let was_docker = media_type::is_docker(&img.raw_manifest.media_type);
    let needs_oci = was_docker && !plain_store && results.iter().any(|r| r.compression == Compression::Zstd);
    let oci = !was_docker || needs_oci;
    if needs_oci {
        info!(
            "manifest {} becomes an OCI manifest: Docker v2 has no media type for zstd layers",
            img.raw_manifest.digest
        );
        manifest["mediaType"] = Value::from(media_type::OCI_MANIFEST);
    }
    manifest["config"]["digest"] = Value::from(config.digest.to_string());
    manifest["config"]["size"] = Value::from(config.bytes.len() as u64);
    if needs_oci {
        manifest["config"]["mediaType"] = Value::from(media_type::OCI_CONFIG);
    }
    if let Some(layers) = manifest.get_mut("layers").and_then(Value::as_array_mut) {
        for (l, r) in layers.iter_mut().zip(&results) {
            if chain.changes_content() {
                let (digest, size, compression) = if plain_store {
                    (&r.diff_id, r.plain_size, Compression::None)
                } else {
                    (&r.digest, r.size, r.compression)
                };
                l["digest"] = Value::from(digest.to_string());
                l["size"] = Value::from(size);
                l["mediaType"] = Value::from(compression.layer_media_type(oci));
            }
        }
    }
    let mt = manifest["mediaType"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| img.raw_manifest.media_type.to_string());
    let raw = RawManifest::new(Bytes::from(serde_json::to_vec(&manifest)?), Some(&mt))?;
    let parsed = match raw.parse()? {
        crate::image::Manifest::Image(m) => m,
        crate::image::Manifest::Index(_) => {
            return Err(Error::invalid("a filtered image manifest parsed as an index"));
        }
    };
    Ok(ImageData {
        raw_manifest: raw,
        manifest: parsed,
        config,
        platform: img.platform.clone(),
    })
}

/// The index after the chain: entries point at the new manifests.
pub fn rewrite_index(
    raw: &RawManifest,
    index: &ImageIndex,
    before: &[ImageData],
    after: &[ImageData],
) -> Result<RawManifest> {
    let chosen: HashMap<&Digest, &ImageData> = before
        .iter()
        .map(|b| &b.raw_manifest.digest)
        .zip(after.iter())
        .collect();
    if before
        .iter()
        .zip(after)
        .all(|(b, a)| b.raw_manifest.digest == a.raw_manifest.digest)
        && index.manifests.iter().all(|d| chosen.contains_key(&d.digest))
    {
        return Ok(raw.clone());
    }
    let mut value: Value = serde_json::from_slice(&raw.bytes)?;
    let any_oci_child = after.iter().any(|a| media_type::is_oci(&a.raw_manifest.media_type));
    let mut mt = raw.media_type.to_string();
    if mt == media_type::DOCKER_MANIFEST_LIST && any_oci_child {
        info!("the manifest list becomes an OCI index: it now lists OCI manifests");
        mt = media_type::OCI_INDEX.to_string();
        value["mediaType"] = Value::from(mt.clone());
    }
    if let Some(entries) = value.get_mut("manifests").and_then(Value::as_array_mut) {
        entries.retain(|e| {
            e["digest"]
                .as_str()
                .and_then(|d| Digest::parse(d).ok())
                .is_some_and(|d| chosen.contains_key(&d))
        });
        for e in entries.iter_mut() {
            let Some(old) = e["digest"].as_str().and_then(|d| Digest::parse(d).ok()) else {
                continue;
            };
            if let Some(new) = chosen.get(&old) {
                e["digest"] = Value::from(new.raw_manifest.digest.to_string());
                e["size"] = Value::from(new.raw_manifest.bytes.len() as u64);
                e["mediaType"] = Value::from(new.raw_manifest.media_type.clone());
            }
        }
    }
    RawManifest::new(Bytes::from(serde_json::to_vec(&value)?), Some(&mt))
}

/// The search matches of one image, in layer order.
pub fn matches_of(name: &str, img: &ImageData, results: &HashMap<Digest, LayerResult>) -> Vec<FilterMatch> {
    let mut out = Vec::new();
    for (i, d) in img.manifest.layers.iter().enumerate() {
        if let Some(r) = results.get(&d.digest) {
            for (_, path) in &r.matches {
                info!("search: layer {i} {} {path}", d.digest);
                out.push(FilterMatch {
                    image: name.to_string(),
                    layer: i,
                    layer_digest: d.digest.to_string(),
                    path: path.clone(),
                });
            }
        }
    }
    out
}

/// Writes the `inspect` lines for one image.
pub fn write_inspect_lines(
    chain: &FilterChain,
    name: &str,
    before: &ImageData,
    after: &ImageData,
    results: &HashMap<Digest, LayerResult>,
) -> Result<()> {
    let history = layer_history(&after.config.parsed.history, after.manifest.layers.len());
    let mut tap = 0;
    for (pos, f) in chain.filters.iter().enumerate() {
        let FilterSpec::Inspect { file } = f else { continue };
        // The stored digest is known here only when nothing after this
        // point rewrites the layer.
        let rewritten_later = chain.filters[pos + 1..].iter().any(FilterSpec::changes_content);
        let mut layers = Vec::new();
        for (i, d) in before.manifest.layers.iter().enumerate() {
            let Some(r) = results.get(&d.digest) else { continue };
            let Some((diff_id, size)) = r.taps.get(tap) else {
                continue;
            };
            let digest = if rewritten_later {
                None
            } else if chain.changes_content() {
                after.manifest.layers.get(i).map(|l| &l.digest)
            } else {
                Some(&d.digest)
            };
            layers.push(layer_record(diff_id, *size, digest, history.get(i).copied().flatten()));
        }
        append_line(
            file,
            &InspectLine {
                name: name.to_string(),
                position: pos,
                layers,
            },
        )?;
        tap += 1;
    }
    Ok(())
}

//! Copies one image through a filter chain: each distinct layer is read
//! once, decompressed and verified, rewritten by the chain, recompressed and
//! hashed in one pass into a private spool file ([`crate::filter::layer`]),
//! then handed to the sink unless the sink already holds the result. The
//! config (`rootfs.diff_ids`, and `created` times with
//! `normalize-timestamps:config=true`) and the manifest (layer digests,
//! sizes and media types) are updated to match, and the index after them.
//! A chain that only observes (`search`, `inspect`) leaves every byte and
//! digest as it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, TryStreamExt};
use serde_json::Value;
use tracing::{debug, info};

use super::copy::{commit_images, decompressed, transfer_layer, CopyOptions, CopyReport, CountingReader, LayerJob};
use crate::cache::{CachedLayer, LayerCache};
use crate::error::{Error, Result};
use crate::filter::inspect::{append_line, layer_history, layer_record, InspectLine};
use crate::filter::layer::{rewrite_layer, LayerResult};
use crate::filter::normalize_timestamps::rfc3339;
use crate::filter::FilterSpec;
use crate::image::{media_type, Compression, ConfigBlob, Descriptor, Digest, ImageData, ImageIndex, RawManifest};
use crate::sink::{LayerForm, Sink};
use crate::source::{BlobReader, Source};

/// A search match found by a `search` filter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FilterMatch {
    pub image: String,
    pub layer: usize,
    pub layer_digest: String,
    pub path: String,
}

/// One input layer after the chain.
struct Rewritten {
    result: LayerResult,
    /// The rewritten blob, when the chain changes content.
    spool: Option<tempfile::NamedTempFile>,
    /// Known from the layer cache, and already at the destination: nothing
    /// was fetched and nothing is to be sent.
    cached: bool,
}

/// The compression and level a rewritten layer gets at this sink.
fn output_for(opts: &CopyOptions, form: LayerForm, job: &LayerJob) -> (Compression, Option<i32>) {
    match form {
        LayerForm::Uncompressed => (Compression::None, None),
        LayerForm::AsIs => opts
            .filters
            .output_compression(Compression::from_media_type(&job.desc.media_type).unwrap_or(Compression::Gzip)),
    }
}

/// The cache key of a layer job, when the cache may answer for this chain
/// (observers must see the data, so a chain with one never skips a layer).
fn cache_key(opts: &CopyOptions, form: LayerForm, job: &LayerJob) -> Option<(LayerCache, String)> {
    let cache = opts.cache.as_ref()?;
    let chain = &opts.filters;
    let observes = chain
        .filters
        .iter()
        .any(|f| matches!(f, FilterSpec::Search { .. } | FilterSpec::Inspect { .. }));
    if !chain.changes_content() || observes {
        return None;
    }
    let (compression, level) = output_for(opts, form, job);
    let form_name = match form {
        LayerForm::AsIs => "as-is",
        LayerForm::Uncompressed => "uncompressed",
    };
    Some((
        cache.clone(),
        LayerCache::key(&job.desc.digest, &chain.hash(), compression, level, form_name),
    ))
}

/// The cached result for a layer the destination already holds.
async fn from_cache(sink: &dyn Sink, opts: &CopyOptions, form: LayerForm, job: &LayerJob) -> Result<Option<Rewritten>> {
    let Some((cache, key)) = cache_key(opts, form, job) else {
        return Ok(None);
    };
    let Some(entry) = cache.get(&key) else {
        return Ok(None);
    };
    let at_sink = match form {
        LayerForm::AsIs => &entry.digest,
        LayerForm::Uncompressed => &entry.diff_id,
    };
    // Only a look: when the blob is missing, this layer is rewritten and
    // put later, and holding the right to upload it meanwhile would make
    // another image of the run that needs it wait for this whole image
    // (two such images deadlocked).
    if !sink.holds_blob(at_sink).await? {
        return Ok(None);
    }
    debug!(layer = %job.desc.digest, out = %entry.digest, "from the layer cache, already at the destination");
    Ok(Some(Rewritten {
        result: LayerResult {
            diff_id: entry.diff_id,
            digest: entry.digest,
            size: entry.size,
            compression: entry.compression,
            taps: Vec::new(),
            matches: Vec::new(),
        },
        spool: None,
        cached: true,
    }))
}

fn spool_file() -> Result<tempfile::NamedTempFile> {
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

/// Runs the chain over one layer.
async fn rewrite_one(
    source: &dyn Source,
    opts: &CopyOptions,
    form: LayerForm,
    job: &LayerJob,
    counter: &Arc<AtomicU64>,
) -> Result<Rewritten> {
    let chain = &opts.filters;
    let what = format!("layer {}", job.desc.digest);
    let _slot = rewrite_slots()
        .acquire()
        .await
        .map_err(|_| Error::invalid("the layer rewrite slots were closed"))?;
    let raw = source.open_blob(&job.desc).await?;
    let counted: BlobReader = Box::pin(CountingReader {
        inner: raw,
        counter: counter.clone(),
    });
    let plain = decompressed(counted, &job.diff_id, &what).await?;
    let (compression, level) = output_for(opts, form, job);
    let spool = if chain.changes_content() {
        Some(spool_file()?)
    } else {
        None
    };
    let out: Box<dyn std::io::Write + Send> = match &spool {
        Some(f) => Box::new(f.reopen().map_err(|e| Error::io("open", f.path(), e))?),
        None => Box::new(std::io::sink()),
    };
    let chain = chain.clone();
    let result = tokio::task::spawn_blocking(move || {
        let bridge = crate::interrupt::Bridge::new(plain);
        rewrite_layer(bridge, &chain, compression, level, out, &what)
    })
    .await
    .map_err(|e| Error::invalid(format!("the filter task for layer {} failed: {e}", job.desc.digest)))??;
    debug!(
        layer = %job.desc.digest,
        out = %result.digest,
        size = result.size,
        "layer rewritten"
    );
    if let Some((cache, key)) = cache_key(opts, form, job) {
        cache.put(&CachedLayer {
            key,
            input: job.desc.digest.clone(),
            digest: result.digest.clone(),
            size: result.size,
            diff_id: result.diff_id.clone(),
            compression: result.compression,
        });
    }
    Ok(Rewritten {
        result,
        spool,
        cached: false,
    })
}

/// The image after the chain: new config and manifest bytes.
fn rewrite_image(
    img: &ImageData,
    rewritten: &HashMap<Digest, Rewritten>,
    opts: &CopyOptions,
    form: LayerForm,
) -> Result<ImageData> {
    let chain = &opts.filters;
    let config_ts = chain.config_timestamp();
    if !chain.changes_content() && config_ts.is_none() {
        return Ok(img.clone());
    }
    let results: Vec<&LayerResult> = img
        .manifest
        .layers
        .iter()
        .map(|d| {
            rewritten
                .get(&d.digest)
                .map(|r| &r.result)
                .ok_or_else(|| Error::invalid(format!("layer {} was not rewritten", d.digest)))
        })
        .collect::<Result<_>>()?;

    // The config: diff_ids, and times when asked; every other field kept.
    let mut config: Value = serde_json::from_slice(&img.config.bytes)?;
    if chain.changes_content() {
        config["rootfs"]["diff_ids"] =
            Value::Array(results.iter().map(|r| Value::from(r.diff_id.to_string())).collect());
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
    let config_bytes = Bytes::from(serde_json::to_vec(&config)?);
    let config = ConfigBlob::parse(
        config_bytes,
        &format!("the filtered config of {}", img.raw_manifest.digest),
    )?;

    // The manifest: config and layer descriptors; OCI types when a layer is
    // zstd (Docker v2 has no zstd layer type).
    let mut manifest: Value = serde_json::from_slice(&img.raw_manifest.bytes)?;
    let was_docker = media_type::is_docker(&img.raw_manifest.media_type);
    let needs_oci = was_docker && form == LayerForm::AsIs && results.iter().any(|r| r.compression == Compression::Zstd);
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
                l["digest"] = Value::from(r.digest.to_string());
                l["size"] = Value::from(r.size);
                l["mediaType"] = Value::from(r.compression.layer_media_type(oci));
            }
        }
    }
    let mt = manifest["mediaType"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| img.raw_manifest.media_type.clone());
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
fn rewrite_index(
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
    let mut mt = raw.media_type.clone();
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

/// Writes the `inspect` lines for one image.
fn write_inspect_lines(
    opts: &CopyOptions,
    before: &ImageData,
    after: &ImageData,
    rewritten: &HashMap<Digest, Rewritten>,
) -> Result<()> {
    let chain = &opts.filters;
    let history = layer_history(&after.config.parsed.history, after.manifest.layers.len());
    let mut tap = 0;
    for (pos, f) in chain.filters.iter().enumerate() {
        let FilterSpec::Inspect { file } = f else { continue };
        // The stored digest is known here only when nothing after this
        // point rewrites the layer.
        let rewritten_later = chain.filters[pos + 1..].iter().any(FilterSpec::changes_content);
        let mut layers = Vec::new();
        for (i, d) in before.manifest.layers.iter().enumerate() {
            let Some(r) = rewritten.get(&d.digest) else { continue };
            let (diff_id, size) = &r.result.taps[tap];
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
                name: opts.name.clone(),
                position: pos,
                layers,
            },
        )?;
        tap += 1;
    }
    Ok(())
}

/// Copies `images` (resolved from `source`) through the chain into `sink`.
pub async fn copy_filtered(
    source: &dyn Source,
    sink: &dyn Sink,
    opts: &CopyOptions,
    index: Option<&(RawManifest, ImageIndex)>,
    copy_index: bool,
    images: &[ImageData],
    started: Instant,
) -> Result<CopyReport> {
    let form = sink.layer_form();
    let parallel = opts.parallel.max(1);
    let counter = opts.bytes_read.clone().unwrap_or_default();

    // Each distinct input layer once, through the chain.
    let mut jobs: Vec<LayerJob> = Vec::new();
    for img in images {
        for (i, desc) in img.manifest.layers.iter().enumerate() {
            if !jobs.iter().any(|j| j.desc.digest == desc.digest) {
                jobs.push(LayerJob {
                    desc: desc.clone(),
                    diff_id: img.diff_id(i)?.clone(),
                });
            }
        }
    }
    let done: Vec<(Digest, Rewritten)> = stream::iter(jobs.iter().map(Ok::<_, Error>))
        .map_ok(|job| {
            let counter = counter.clone();
            async move {
                let done = match from_cache(sink, opts, form, job).await? {
                    Some(cached) => cached,
                    None => rewrite_one(source, opts, form, job, &counter).await?,
                };
                Ok((job.desc.digest.clone(), done))
            }
        })
        .try_buffer_unordered(parallel)
        .try_collect()
        .await?;
    let rewritten: HashMap<Digest, Rewritten> = done.into_iter().collect();
    let from_cache_count = rewritten.values().filter(|r| r.cached).count();

    // Search matches, per image and layer.
    let mut matches = Vec::new();
    for img in images {
        for (i, d) in img.manifest.layers.iter().enumerate() {
            if let Some(r) = rewritten.get(&d.digest) {
                for (_, path) in &r.result.matches {
                    info!("search: layer {i} {} {path}", d.digest);
                    matches.push(FilterMatch {
                        image: opts.name.clone(),
                        layer: i,
                        layer_digest: d.digest.to_string(),
                        path: path.clone(),
                    });
                }
            }
        }
    }

    let after: Vec<ImageData> = images
        .iter()
        .map(|img| rewrite_image(img, &rewritten, opts, form))
        .collect::<Result<_>>()?;
    for (b, a) in images.iter().zip(&after) {
        write_inspect_lines(opts, b, a, &rewritten)?;
    }

    // Move the layers: rewritten ones from their spools, others as they are.
    let copied = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let out_jobs: Vec<(LayerJob, Option<&Rewritten>)> = jobs
        .iter()
        .map(|j| {
            let r = rewritten.get(&j.desc.digest);
            match r.filter(|r| r.spool.is_some() || r.cached) {
                Some(r) => {
                    let mt = r.result.compression.layer_media_type(true);
                    (
                        LayerJob {
                            desc: Descriptor::new(mt, r.result.digest.clone(), r.result.size),
                            diff_id: r.result.diff_id.clone(),
                        },
                        Some(r),
                    )
                }
                None => (
                    LayerJob {
                        desc: j.desc.clone(),
                        diff_id: j.diff_id.clone(),
                    },
                    None,
                ),
            }
        })
        .collect();
    let bytes_before_transfer = counter.load(Ordering::Relaxed);
    stream::iter(out_jobs.iter().map(Ok::<_, Error>))
        .try_for_each_concurrent(parallel, |(job, rewritten)| {
            let counter = counter.clone();
            let (copied, skipped) = (&copied, &skipped);
            async move {
                if sink.has_blob(job.key(form)).await? {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                match rewritten.and_then(|r| r.spool.as_ref()) {
                    Some(spool) => {
                        let file = tokio::fs::File::open(spool.path())
                            .await
                            .map_err(|e| Error::io("open", spool.path(), e))?;
                        let desc = match form {
                            LayerForm::AsIs => job.desc.clone(),
                            LayerForm::Uncompressed => {
                                Descriptor::new(media_type::DOCKER_LAYER_TAR, job.diff_id.clone(), job.desc.size)
                            }
                        };
                        sink.put_blob(&desc, Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, file)))
                            .await?;
                    }
                    None if rewritten.is_some_and(|r| r.cached) => {
                        return Err(Error::invalid(format!(
                            "layer {} left {} while it was being copied",
                            job.desc.digest,
                            sink.describe()
                        )));
                    }
                    None => transfer_layer(source, sink, job, &counter).await?,
                }
                copied.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
    debug!(read_for_filters = bytes_before_transfer, "layer bytes read");

    let new_index = match (index, copy_index) {
        (Some((raw, idx)), true) => Some(rewrite_index(raw, idx, images, &after)?),
        _ => None,
    };
    let digest = commit_images(source, sink, &after, new_index).await?;
    Ok(CopyReport {
        digest,
        images: after.len(),
        layers: jobs.len(),
        layers_copied: copied.into_inner(),
        layers_skipped: skipped.into_inner(),
        layers_mounted: sink.layers_mounted(),
        bytes: counter.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        matches,
        layers_from_cache: from_cache_count,
    })
}

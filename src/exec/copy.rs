//! Copies one image (or index) from a source to a sink: resolves the wanted
//! platforms, moves each distinct layer once (`-j` at a time, skipping what
//! the sink holds, decompressing for sinks that store plain tar), then
//! commits configs and manifests, and the index last.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{self, TryStreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};
use tracing::{debug, info, warn};

use super::filtered::{copy_filtered, FilterMatch};
use crate::cache::LayerCache;
use crate::error::{Error, Result};
use crate::filter::FilterChain;
use crate::image::{
    media_type, Compression, Descriptor, Digest, ImageData, ImageIndex, RawManifest, ResolvedImage, VerifyingReader,
};
use crate::sink::{LayerForm, Sink};
use crate::source::{resolve, BlobReader, PlatformSelection, Source};

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Layer transfers at once (`-j`).
    pub parallel: usize,
    /// Which platforms of an index to copy.
    pub platforms: PlatformSelection,
    /// Attempts after the first for a blob that fails transiently.
    pub retries: u32,
    /// Filters every layer goes through (`-f`), in order.
    pub filters: FilterChain,
    /// The image's name, for filter reports (`inspect`, `search`).
    pub name: String,
    /// Where rewritten layers are remembered (None: no cache).
    pub cache: Option<LayerCache>,
    /// Counts the layer bytes read as they stream, for a progress display
    /// (None: the copy counts on its own). Start it at zero: the report's
    /// `bytes` is read from it.
    pub bytes_read: Option<Arc<AtomicU64>>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            parallel: 4,
            platforms: PlatformSelection::Default,
            retries: 3,
            filters: FilterChain::default(),
            name: String::new(),
            cache: None,
            bytes_read: None,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// Digest of the manifest (or index) the destination's tag now names.
    pub digest: Digest,
    /// Platform images written.
    pub images: usize,
    /// Distinct layers referenced.
    pub layers: usize,
    /// Layers transferred.
    pub layers_copied: usize,
    /// Layers the destination already held (mounted ones included).
    pub layers_skipped: usize,
    /// Layers the destination got by a cross-repository mount.
    pub layers_mounted: usize,
    /// Layer bytes read from the source.
    pub bytes: u64,
    /// Wall time.
    #[serde(skip)]
    pub elapsed: Duration,
    /// What `search` filters found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<FilterMatch>,
    /// Rewritten layers the layer cache knew the destination already held
    /// (neither fetched nor rewritten).
    pub layers_from_cache: usize,
}

/// One distinct layer to move.
pub(crate) struct LayerJob {
    pub desc: Descriptor,
    pub diff_id: Digest,
}

impl LayerJob {
    /// The digest a sink of this form stores the layer under.
    pub fn key(&self, form: LayerForm) -> &Digest {
        match form {
            LayerForm::AsIs => &self.desc.digest,
            LayerForm::Uncompressed => &self.diff_id,
        }
    }
}

/// Counts bytes flowing through a reader.
pub(crate) struct CountingReader<R> {
    pub inner: R,
    pub counter: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            self.counter
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        r
    }
}

/// Marks the read errors of a layer stream (a connection lost, a corrupt
/// gzip stream) as errors of the transfer, so that a sink writing it
/// reports a failed transfer, which is retried, rather than a failed write.
struct ReadErrors<R> {
    inner: R,
    what: String,
}

impl<R: AsyncRead + Unpin> AsyncRead for ReadErrors<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::stream(&self.what, e).into_io())),
            other => other,
        }
    }
}

/// The plain tar inside a buffered layer stream compressed as `compression`.
pub fn decompressor(buffered: BufReader<BlobReader>, compression: Compression) -> BlobReader {
    match compression {
        Compression::None => Box::pin(buffered),
        Compression::Gzip => {
            let mut d = async_compression::tokio::bufread::GzipDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
        Compression::Zstd => {
            let mut d = async_compression::tokio::bufread::ZstdDecoder::new(buffered);
            d.multiple_members(true);
            Box::pin(d)
        }
    }
}

/// Turns a (verified) compressed layer stream into its uncompressed tar,
/// verified against the diff_id. The compression is read from the bytes,
/// not trusted from the media type.
pub async fn decompressed(reader: BlobReader, diff_id: &Digest, what: &str) -> Result<BlobReader> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().await.map_err(|e| Error::stream(what, e))?;
    let compression = Compression::sniff(head);
    let plain = ReadErrors {
        inner: decompressor(buffered, compression),
        what: what.to_string(),
    };
    Ok(Box::pin(VerifyingReader::new(
        plain,
        Some(diff_id.clone()),
        None,
        format!("uncompressed {what} (diff_id)"),
    )))
}

/// Moves one layer into the sink, in the form the sink wants.
pub(crate) async fn transfer_layer(
    source: &dyn Source,
    sink: &dyn Sink,
    job: &LayerJob,
    counter: &Arc<AtomicU64>,
) -> Result<()> {
    let raw = source.open_blob(&job.desc).await?;
    let counted: BlobReader = Box::pin(CountingReader {
        inner: raw,
        counter: counter.clone(),
    });
    match sink.layer_form() {
        LayerForm::AsIs => sink.put_blob(&job.desc, counted).await,
        LayerForm::Uncompressed => {
            let what = format!("layer {}", job.desc.digest);
            let desc = Descriptor::new(media_type::DOCKER_LAYER_TAR, job.diff_id.clone(), 0);
            let result = match decompressed(counted, &job.diff_id, &what).await {
                Ok(plain) => sink.put_blob(&desc, plain).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if !matches!(e, Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) => {
                    // A corrupt blob usually fails decompression before its
                    // digest can be checked at the end: say what is really wrong.
                    Err(blob_integrity_error(source, &job.desc).await.unwrap_or(e))
                }
                other => other,
            }
        }
    }
}

/// Reads a blob to its end and returns the digest or size mismatch, if any.
pub(crate) async fn blob_integrity_error(source: &dyn Source, desc: &Descriptor) -> Option<Error> {
    let mut r = source.open_blob(desc).await.ok()?;
    match tokio::io::copy(&mut r, &mut tokio::io::sink()).await {
        Err(e) => match Error::stream(&format!("blob {}", desc.digest), e) {
            e @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) => Some(e),
            _ => None,
        },
        Ok(_) => None,
    }
}

/// Copies what `source` names into `sink`.
pub async fn copy_image(source: &dyn Source, sink: &dyn Sink, opts: &CopyOptions) -> Result<CopyReport> {
    let started = Instant::now();
    let result = copy_inner(source, sink, opts, started).await;
    if result.is_err() {
        sink.abort().await;
    }
    result
}

async fn copy_inner(source: &dyn Source, sink: &dyn Sink, opts: &CopyOptions, started: Instant) -> Result<CopyReport> {
    let resolved = resolve(source, &opts.platforms).await?;
    check_fits(
        &resolved,
        &opts.platforms,
        sink.supports_index(),
        &sink.describe(),
        &source.describe(),
    )?;
    let copy_index = writes_index(&resolved, &opts.platforms, sink.supports_index());
    if !opts.filters.is_empty() {
        return copy_filtered(
            source,
            sink,
            opts,
            resolved.index.as_ref(),
            copy_index,
            &resolved.images,
            started,
        )
        .await;
    }

    // Each distinct layer once, keyed as the sink stores it.
    let form = sink.layer_form();
    let mut jobs: Vec<LayerJob> = Vec::new();
    for img in &resolved.images {
        for (i, desc) in img.manifest.layers.iter().enumerate() {
            let job = LayerJob {
                desc: desc.clone(),
                diff_id: img.diff_id(i)?.clone(),
            };
            if !jobs.iter().any(|j| j.key(form) == job.key(form)) {
                jobs.push(job);
            }
        }
    }

    let counter = opts.bytes_read.clone().unwrap_or_default();
    let copied = AtomicUsize::new(0);
    let skipped = AtomicUsize::new(0);
    let parallel = opts.parallel.max(1);
    let configs = async {
        for img in &resolved.images {
            sink.put_config_early(img).await?;
        }
        Ok::<_, Error>(())
    };
    let layers = stream::iter(jobs.iter().map(Ok::<_, Error>)).try_for_each_concurrent(parallel, |job| {
        let counter = counter.clone();
        let (copied, skipped) = (&copied, &skipped);
        async move {
            if sink.has_blob(job.key(form)).await? {
                debug!(layer = %job.desc.digest, "already present at the destination");
                skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let mut attempt = 0;
            loop {
                match transfer_layer(source, sink, job, &counter).await {
                    Ok(()) => break,
                    Err(e) if e.is_transient() && attempt < opts.retries => {
                        attempt += 1;
                        warn!(layer = %job.desc.digest, "attempt {attempt} failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            copied.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    tokio::try_join!(layers, configs)?;

    let index = match (&resolved.index, copy_index) {
        (Some((raw, index)), true) => {
            let written = index_to_write(raw, index, &resolved.images)?;
            if written.digest != raw.digest {
                info!(
                    "the index was rewritten to the {} chosen platforms: its digest changes from {} to {}",
                    resolved.images.len(),
                    raw.digest,
                    written.digest
                );
            }
            Some(written)
        }
        _ => None,
    };
    let digest = commit_images(source, sink, &resolved.images, index).await?;
    Ok(CopyReport {
        digest,
        images: resolved.images.len(),
        layers: jobs.len(),
        layers_copied: copied.into_inner(),
        layers_skipped: skipped.into_inner(),
        layers_mounted: sink.layers_mounted(),
        bytes: counter.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        matches: Vec::new(),
        layers_from_cache: 0,
    })
}

/// Refuses several platforms for a destination that holds one image.
pub fn check_fits(
    resolved: &ResolvedImage,
    selection: &PlatformSelection,
    supports_index: bool,
    sink: &str,
    source: &str,
) -> Result<()> {
    let keep_index = resolved.index.is_some() && *selection != PlatformSelection::Default;
    if keep_index && !supports_index && resolved.images.len() > 1 {
        return Err(Error::usage(format!(
            "{sink} holds one platform per image, but {} platforms were selected from {source}: choose one with --platform",
            resolved.images.len(),
        )));
    }
    Ok(())
}

/// Whether a copy writes the index: when platforms were chosen explicitly
/// (all, or a list) and the destination can hold an index.
pub fn writes_index(resolved: &ResolvedImage, selection: &PlatformSelection, supports_index: bool) -> bool {
    resolved.index.is_some() && *selection != PlatformSelection::Default && supports_index
}

/// The digest the destination's tag names after an unfiltered copy: the
/// index (rewritten when only some platforms are taken), else the image.
pub fn expected_digest(
    resolved: &ResolvedImage,
    selection: &PlatformSelection,
    supports_index: bool,
) -> Result<Digest> {
    match &resolved.index {
        Some((raw, index)) if writes_index(resolved, selection, supports_index) => {
            Ok(index_to_write(raw, index, &resolved.images)?.digest)
        }
        _ => resolved
            .images
            .first()
            .map(|i| i.raw_manifest.digest.clone())
            .ok_or_else(|| Error::invalid("the source resolved to no image")),
    }
}

/// Commits the images (configs and manifests), then the index if there is
/// one to write, then finishes the sink. Returns the digest the destination's
/// tag now names.
pub(crate) async fn commit_images(
    source: &dyn Source,
    sink: &dyn Sink,
    images: &[ImageData],
    index: Option<RawManifest>,
) -> Result<Digest> {
    for img in images {
        sink.put_image(img, index.is_none()).await?;
    }
    let digest = match index {
        Some(raw) => {
            sink.put_index(&raw, images).await?;
            raw.digest
        }
        None => images
            .first()
            .map(|i| i.raw_manifest.digest.clone())
            .ok_or_else(|| Error::invalid(format!("{} resolved to no image", source.describe())))?,
    };
    sink.finish().await?;
    Ok(digest)
}

/// The index to write: the original bytes when every platform image was
/// chosen, otherwise an index rewritten to the chosen entries (its digest
/// changes, which is logged).
fn index_to_write(raw: &RawManifest, index: &ImageIndex, images: &[ImageData]) -> Result<RawManifest> {
    let chosen: Vec<&Digest> = images.iter().map(|i| &i.raw_manifest.digest).collect();
    let platform_entries: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| p.os != "unknown"))
        .collect();
    if platform_entries.iter().all(|d| chosen.contains(&&d.digest)) {
        return Ok(raw.clone());
    }
    let mut sub = index.clone();
    sub.manifests.retain(|d| chosen.contains(&&d.digest));
    let rewritten = RawManifest::new(sub.to_bytes()?, Some(&raw.media_type))?;
    debug!(
        "the index was rewritten to the {} chosen platforms: its digest changes from {} to {}",
        sub.manifests.len(),
        raw.digest,
        rewritten.digest
    );
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn a_corrupt_layer_stream_is_a_transfer_error_not_a_write_error() {
        let plain: Vec<u8> = (0u32..64 * 1024)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let mut gzipped = gz.finish().unwrap();
        let mid = gzipped.len() / 2;
        gzipped[mid] ^= 1;
        let reader: BlobReader = Box::pin(std::io::Cursor::new(gzipped));
        let mut layer = decompressed(reader, &Digest::of(&plain), "layer").await.unwrap();
        // As a sink writing the stream to a file reports it.
        let e = tokio::io::copy(&mut layer, &mut tokio::io::sink()).await.unwrap_err();
        let err = Error::io("write", "/dest/layer.tar", e);
        assert!(err.is_transient(), "{err:?}");
    }
}

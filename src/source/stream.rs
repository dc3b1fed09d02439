//! Layer streams as sources give them and sinks take them: counted,
//! decompressed (the compression read from the bytes) and verified against
//! a diff_id, with read errors marked as errors of the transfer; and the
//! same streams as large chunks ([`Chunks`]), which a shared stream hands
//! to each of its consumers and a file writer takes whole, without a copy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};

use super::{BlobReader, Source};
use crate::error::{Error, Result};
use crate::image::{Compression, Descriptor, Digest, VerifyingReader};

/// Counts bytes flowing through a reader.
pub struct CountingReader<R> {
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

/// A blob as a stream of chunks of [`CHUNK`] bytes (the last one shorter):
/// each chunk is one hand-off between the tasks and threads that move it,
/// and readers of one shared stream hold the same buffers. An error item
/// ends the stream: the blob must not be kept.
pub type Chunks = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The size of a chunk of uncompressed layer bytes (what tarballs are
/// written in). Synchronisation costs per chunk, so a chunk is large; the
/// memory of a stream is a few chunks, whatever the layer's size.
pub const CHUNK: usize = 1024 * 1024;

/// How long a chunk that has bytes waits for more once the source stops
/// giving them: then it is handed over as it is. A fast source fills a
/// chunk long before (256 KiB at 1 Gbit/s take 2 ms), so only a slow or
/// stalled one gives shorter chunks; what it sent reaches the writers
/// anyway (a file being written, progress, a consumer that parses the
/// first bytes) instead of waiting for the rest of a chunk.
pub const PARTIAL_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Reads `reader` in chunks of `size` bytes: each chunk is filled by as
/// many reads as it takes (a network stream gives a few KiB a read), so the
/// consumers see one chunk where the reader gave dozens of pieces. A chunk
/// the source has stopped filling for [`PARTIAL_AFTER`] goes out short.
pub fn read_chunks(reader: BlobReader, size: usize) -> Chunks {
    Box::pin(ReadChunks {
        reader: Some(reader),
        size: size.max(1),
        chunk: BytesMut::new(),
        timer: None,
        armed: false,
    })
}

/// The stream of [`read_chunks`].
struct ReadChunks {
    /// None once the reader ended or failed.
    reader: Option<BlobReader>,
    size: usize,
    /// The chunk being filled.
    chunk: BytesMut,
    /// The deadline of a partial chunk, kept from chunk to chunk (reset,
    /// not made again).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `timer` runs for the chunk being filled.
    armed: bool,
}

impl ReadChunks {
    fn take(&mut self) -> Bytes {
        self.armed = false;
        std::mem::take(&mut self.chunk).freeze()
    }
}

impl Stream for ReadChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = &mut *self;
        loop {
            let Some(reader) = this.reader.as_mut() else {
                return Poll::Ready(None);
            };
            if this.chunk.capacity() == 0 {
                this.chunk = BytesMut::with_capacity(this.size);
            }
            match tokio_util::io::poll_read_buf(reader.as_mut(), cx, &mut this.chunk) {
                Poll::Ready(Ok(0)) => {
                    this.reader = None;
                    if this.chunk.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(this.take())));
                }
                Poll::Ready(Ok(_)) if this.chunk.len() >= this.size => return Poll::Ready(Some(Ok(this.take()))),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.reader = None;
                    this.chunk = BytesMut::new();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Pending if this.chunk.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    if !this.armed {
                        let deadline = tokio::time::Instant::now() + PARTIAL_AFTER;
                        match this.timer.as_mut() {
                            Some(t) => t.as_mut().reset(deadline),
                            None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        this.armed = true;
                    }
                    return match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                        Some(Poll::Ready(())) => Poll::Ready(Some(Ok(this.take()))),
                        _ => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Chunks read as a byte stream, for consumers that parse what they read
/// (a decompressor, a tar rewriter, an upload).
pub fn chunk_reader(chunks: Chunks) -> BlobReader {
    Box::pin(tokio_util::io::StreamReader::new(chunks))
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

/// Reads a blob to its end and returns the digest or size mismatch, if any.
pub async fn blob_integrity_error(source: &dyn Source, desc: &Descriptor) -> Option<Error> {
    let mut r = source.open_blob(desc).await.ok()?;
    match tokio::io::copy(&mut r, &mut tokio::io::sink()).await {
        Err(e) => match Error::stream(&format!("blob {}", desc.digest), e) {
            e @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) => Some(e),
            _ => None,
        },
        Ok(_) => None,
    }
}

/// What a blob stream that stopped (`failed`: not the transport, whose
/// requests were retried already) really suffered, from one more read of the
/// blob: a digest or size mismatch (corrupted now too), or, when it now
/// reads whole, a corruption on the way ([`Error::Cut`]); both start the
/// copy again. When the read fails otherwise, `failed` stands.
pub async fn after_stream_failure(source: &dyn Source, desc: &Descriptor, failed: Error) -> Error {
    let Ok(mut r) = source.open_blob(desc).await else {
        return failed;
    };
    match tokio::io::copy(&mut r, &mut tokio::io::sink()).await {
        Ok(_) => Error::Cut(format!(
            "{failed}; read again, blob {} is whole: it was corrupted on the way",
            desc.digest
        )),
        Err(e) => match Error::stream(&format!("blob {}", desc.digest), e) {
            e @ (Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) => e,
            _ => failed,
        },
    }
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

    /// The bytes of `parts`, then a source that gives nothing more and
    /// does not end (a stalled connection).
    fn stalled_after(parts: Vec<Vec<u8>>) -> BlobReader {
        let given = futures_util::stream::iter(parts.into_iter().map(|p| Ok::<_, io::Error>(Bytes::from(p))));
        let stalled = futures_util::StreamExt::chain(given, futures_util::stream::pending());
        Box::pin(tokio_util::io::StreamReader::new(stalled))
    }

    #[tokio::test]
    async fn a_chunk_the_source_stops_filling_goes_out_short_after_a_while() {
        use futures_util::StreamExt;
        let mut chunks = read_chunks(stalled_after(vec![vec![1; 1000], vec![2; 500]]), 64 * 1024);
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), chunks.next())
            .await
            .expect("a partial chunk, not a wait for the rest")
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 1500, "what the source gave, in one chunk");
        assert!(
            started.elapsed() >= PARTIAL_AFTER,
            "handed over once the source made it wait {PARTIAL_AFTER:?}, not at once: {:?}",
            started.elapsed()
        );
        // Nothing more comes, and nothing is made up.
        let more = tokio::time::timeout(PARTIAL_AFTER * 10, chunks.next()).await;
        assert!(more.is_err(), "{more:?}");
    }

    #[tokio::test]
    async fn a_source_that_keeps_giving_fills_whole_chunks_and_the_last_one_ends_short() {
        use futures_util::StreamExt;
        let parts: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1000]).collect();
        let reader: BlobReader = Box::pin(tokio_util::io::StreamReader::new(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok::<_, io::Error>(Bytes::from(p))),
        )));
        let sizes: Vec<usize> = read_chunks(reader, 30_000).map(|c| c.unwrap().len()).collect().await;
        assert_eq!(sizes, vec![30_000, 30_000, 30_000, 10_000]);
    }
}

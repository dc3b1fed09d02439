//! Layer streams as sources give them and sinks take them: counted,
//! decompressed (the compression read from the bytes) and verified against
//! a diff_id, with read errors marked as errors of the transfer; and the
//! same streams as large chunks ([`Chunks`]), which a shared stream hands
//! to each of its consumers and a file writer takes whole, without a copy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};

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

/// Reads `reader` in chunks of `size` bytes: each chunk is filled by as
/// many reads as it takes (a network stream gives a few KiB a read), so the
/// consumers see one chunk where the reader gave dozens of pieces.
pub fn read_chunks(reader: BlobReader, size: usize) -> Chunks {
    Box::pin(futures_util::stream::unfold(Some(reader), move |state| async move {
        let mut reader = state?;
        let mut chunk = BytesMut::with_capacity(size);
        while chunk.len() < size {
            match reader.read_buf(&mut chunk).await {
                Ok(0) if chunk.is_empty() => return None,
                Ok(0) => return Some((Ok(chunk.freeze()), None)),
                Ok(_) => {}
                Err(e) => return Some((Err(e), None)),
            }
        }
        Some((Ok(chunk.freeze()), Some(reader)))
    }))
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
}

//! One read of a blob for many consumers: [`tee`] splits a stream so
//! uploads, file writes and rewrites read the same bytes once, at the pace
//! of the slowest, through bounded buffers.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::source::BlobReader;

/// Chunks of one branch of a tee.
enum Piece {
    Data(Bytes),
    /// The stream ended whole.
    End,
    Failed(Error),
}

/// One consumer's view of a teed stream. A stream that stops without its
/// end mark (the pump was dropped) is an error, never a short blob.
pub(crate) struct Branch {
    rx: mpsc::Receiver<Piece>,
    buf: Bytes,
    ended: bool,
}

impl AsyncRead for Branch {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Piece::Data(b)) => self.buf = b,
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(e)) => return Poll::Ready(Err(e.into_io())),
                None => {
                    return Poll::Ready(Err(
                        Error::Network("the shared stream stopped before its end".into()).into_io()
                    ))
                }
            }
        }
    }
}

/// Buffered chunks per branch: the slowest consumer sets the pace, and at
/// most this many chunks wait for it.
const BRANCH_DEPTH: usize = 4;
const CHUNK: usize = 256 * 1024;

/// Splits `reader` into `n` branches. The returned pump must be polled
/// (joined with the consumers) for data to flow; it reads the source once
/// and gives every branch each chunk. A consumer that drops its branch is
/// left out from then on. The pump returns the source's error, if any
/// (every branch sees a copy of it and so never mistakes a cut stream for
/// a whole one).
pub(crate) fn tee(mut reader: BlobReader, n: usize) -> (Vec<Branch>, impl std::future::Future<Output = Result<()>>) {
    let mut txs = Vec::with_capacity(n);
    let mut branches = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(BRANCH_DEPTH);
        txs.push(Some(tx));
        branches.push(Branch {
            rx,
            buf: Bytes::new(),
            ended: false,
        });
    }
    let pump = async move {
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK);
            let read = reader.read_buf(&mut chunk).await;
            let piece = match read {
                Ok(0) => None,
                Ok(_) => Some(chunk.freeze()),
                Err(e) => {
                    let e = Error::stream("a shared blob", e);
                    for tx in txs.iter_mut().flatten() {
                        let _ = tx.send(Piece::Failed(e.duplicate())).await;
                    }
                    return Err(e);
                }
            };
            let Some(bytes) = piece else {
                for tx in txs.iter_mut().flatten() {
                    let _ = tx.send(Piece::End).await;
                }
                return Ok(());
            };
            let mut live = 0;
            for slot in txs.iter_mut() {
                if let Some(tx) = slot {
                    if tx.send(Piece::Data(bytes.clone())).await.is_err() {
                        *slot = None;
                    } else {
                        live += 1;
                    }
                }
            }
            if live == 0 {
                return Ok(());
            }
        }
    };
    (branches, pump)
}

/// A boxed branch, as sinks take readers.
pub(crate) fn boxed(b: Branch) -> BlobReader {
    Box::pin(b)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::image::{Digest, VerifyingReader};
    use crate::source::stream::CountingReader;

    #[tokio::test]
    async fn every_branch_of_a_tee_reads_the_whole_stream_once() {
        let data: Vec<u8> = (0u32..1_000_000).map(|i| (i % 251) as u8).collect();
        let reads = Arc::new(AtomicU64::new(0));
        let reader: BlobReader = Box::pin(CountingReader {
            inner: std::io::Cursor::new(data.clone()),
            counter: reads.clone(),
        });
        let (branches, pump) = tee(reader, 3);
        let consumers = futures_util::future::join_all(branches.into_iter().map(|mut b| async move {
            let mut v = Vec::new();
            b.read_to_end(&mut v).await.map(|_| v)
        }));
        let (pumped, got) = tokio::join!(pump, consumers);
        pumped.unwrap();
        for g in got {
            assert_eq!(g.unwrap(), data);
        }
        assert_eq!(reads.load(Ordering::Relaxed), data.len() as u64, "read once");
    }

    #[tokio::test]
    async fn a_failed_source_fails_every_branch_and_a_dropped_branch_does_not_stop_the_others() {
        let data: Vec<u8> = vec![7; 900_000];
        let digest = Digest::of(b"something else");
        let reader: BlobReader = Box::pin(VerifyingReader::new(
            std::io::Cursor::new(data.clone()),
            Some(digest),
            None,
            "blob".to_string(),
        ));
        let (mut branches, pump) = tee(reader, 2);
        let dropped = branches.pop();
        drop(dropped);
        let mut one = branches.pop().unwrap();
        let consumer = async move {
            let mut v = Vec::new();
            one.read_to_end(&mut v).await
        };
        let (pumped, got) = tokio::join!(pump, consumer);
        assert!(matches!(pumped, Err(Error::DigestMismatch { .. })), "{pumped:?}");
        let e = Error::stream("x", got.unwrap_err());
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_branch_whose_pump_is_dropped_is_an_error_not_a_short_blob() {
        let reader: BlobReader = Box::pin(std::io::Cursor::new(vec![1u8; 10]));
        let (mut branches, pump) = tee(reader, 1);
        drop(pump);
        let mut v = Vec::new();
        assert!(branches.remove(0).read_to_end(&mut v).await.is_err());
    }
}

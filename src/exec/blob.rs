//! One read of a blob for many consumers: [`tee`] splits a stream of
//! chunks so uploads, file writes and rewrites read the same bytes once, at
//! the pace of the slowest, through bounded buffers, each chunk handed to
//! each consumer once.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::source::stream::{chunk_reader, Chunks};
use crate::source::BlobReader;

/// Chunks of one branch of a tee.
enum Piece {
    Data(Bytes),
    /// The stream ended whole.
    End,
    Failed(Error),
}

/// One consumer's view of a teed stream: the source's chunks, the same
/// buffers every other branch gets. A stream that stops without its end
/// mark (the pump was dropped) is an error, never a short blob.
pub(crate) struct Branch {
    rx: mpsc::Receiver<Piece>,
    ended: bool,
}

impl Stream for Branch {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let piece = ready!(self.rx.poll_recv(cx));
        Poll::Ready(match piece {
            Some(Piece::Data(b)) => Some(Ok(b)),
            Some(Piece::End) => {
                self.ended = true;
                None
            }
            Some(Piece::Failed(e)) => {
                self.ended = true;
                Some(Err(e.into_io()))
            }
            None => {
                self.ended = true;
                Some(Err(
                    Error::Network("the shared stream stopped before its end".into()).into_io()
                ))
            }
        })
    }
}

/// Chunks queued per branch: the slowest consumer sets the pace, and at
/// most this many chunks wait for it. With the chunk the pump fills and
/// the one each consumer works on, a tee holds a handful of chunks
/// whatever the blob's size and however many branches it has.
const BRANCH_DEPTH: usize = 2;

/// Splits `chunks` into `n` branches. The returned pump must be polled
/// (joined with the consumers) for data to flow; it reads the source once
/// and gives every branch each chunk (one hand-off per chunk and branch,
/// the same buffer for all). A consumer that drops its branch is left out
/// from then on. The pump returns the source's error, if any (every
/// branch sees a copy of it and so never mistakes a cut stream for a
/// whole one).
pub(crate) fn tee(mut chunks: Chunks, n: usize) -> (Vec<Branch>, impl std::future::Future<Output = Result<()>>) {
    let mut txs = Vec::with_capacity(n);
    let mut branches = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel(BRANCH_DEPTH);
        txs.push(Some(tx));
        branches.push(Branch { rx, ended: false });
    }
    let pump = async move {
        while let Some(item) = chunks.next().await {
            let bytes = match item {
                Ok(b) => b,
                Err(e) => {
                    let e = Error::stream("a shared blob", e);
                    for tx in txs.iter_mut().flatten() {
                        let _ = tx.send(Piece::Failed(e.duplicate())).await;
                    }
                    return Err(e);
                }
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
        for tx in txs.iter_mut().flatten() {
            let _ = tx.send(Piece::End).await;
        }
        Ok(())
    };
    (branches, pump)
}

/// A branch as chunks, as file sinks take them.
pub(crate) fn chunks(b: Branch) -> Chunks {
    Box::pin(b)
}

/// A branch as a byte stream, for consumers that parse what they read.
pub(crate) fn boxed(b: Branch) -> BlobReader {
    chunk_reader(chunks(b))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

    use super::*;
    use crate::image::{Digest, VerifyingReader};
    use crate::source::stream::{read_chunks, CountingReader};

    /// A reader that gives at most 1,000 bytes a read, as a network stream does.
    struct Trickle(std::io::Cursor<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let mut piece = [0u8; 1000];
            let want = buf.remaining().min(piece.len());
            let mut small = ReadBuf::new(&mut piece[..want]);
            let r = Pin::new(&mut self.0).poll_read(cx, &mut small);
            buf.put_slice(small.filled());
            r
        }
    }

    #[tokio::test]
    async fn every_branch_of_a_tee_reads_the_whole_stream_once() {
        let data: Vec<u8> = (0u32..1_000_000).map(|i| (i % 251) as u8).collect();
        let reads = Arc::new(AtomicU64::new(0));
        let reader: BlobReader = Box::pin(CountingReader {
            inner: std::io::Cursor::new(data.clone()),
            counter: reads.clone(),
        });
        let (branches, pump) = tee(read_chunks(reader, 64 * 1024), 3);
        let consumers = futures_util::future::join_all(branches.into_iter().map(|b| async move {
            let mut v = Vec::new();
            boxed(b).read_to_end(&mut v).await.map(|_| v)
        }));
        let (pumped, got) = tokio::join!(pump, consumers);
        pumped.unwrap();
        for g in got {
            assert_eq!(g.unwrap(), data);
        }
        assert_eq!(reads.load(Ordering::Relaxed), data.len() as u64, "read once");
    }

    #[tokio::test]
    async fn a_tee_hands_over_whole_chunks_and_every_branch_gets_the_same_buffers() {
        let data: Vec<u8> = (0u32..300_000).map(|i| (i % 253) as u8).collect();
        let reader: BlobReader = Box::pin(Trickle(std::io::Cursor::new(data.clone())));
        let (branches, pump) = tee(read_chunks(reader, 64 * 1024), 2);
        let consumers = futures_util::future::join_all(
            branches
                .into_iter()
                .map(|b| chunks(b).collect::<Vec<io::Result<Bytes>>>()),
        );
        let (pumped, got) = tokio::join!(pump, consumers);
        pumped.unwrap();
        let got: Vec<Vec<Bytes>> = got
            .into_iter()
            .map(|v| v.into_iter().collect::<io::Result<_>>().unwrap())
            .collect();
        // 300,000 bytes read 1,000 at a time arrive as 5 chunks, not 300.
        let sizes: Vec<usize> = got[0].iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![65536, 65536, 65536, 65536, 37856]);
        assert_eq!(got[0].concat(), data);
        for (a, b) in got[0].iter().zip(&got[1]) {
            assert_eq!(a.as_ptr(), b.as_ptr(), "one buffer for both branches, not a copy");
        }
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
        let (mut branches, pump) = tee(read_chunks(reader, 64 * 1024), 2);
        let dropped = branches.pop();
        drop(dropped);
        let mut one = boxed(branches.pop().unwrap());
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
        let (mut branches, pump) = tee(read_chunks(reader, 64 * 1024), 1);
        drop(pump);
        let mut v = Vec::new();
        assert!(boxed(branches.remove(0)).read_to_end(&mut v).await.is_err());
    }
}

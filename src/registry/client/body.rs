//! Response bodies: reading small bodies within a limit, holding back an
//! upload stream's last chunk until it ends cleanly, and [`ResumingReader`],
//! the blob stream that resumes with `Range` after a dropped connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::errors::describe_reqwest;
use super::RegistryClient;
use crate::error::{Error, Result};
use crate::image::Digest;

/// Reads a body of at most `limit` bytes.
pub(super) async fn read_limited(mut resp: reqwest::Response, limit: usize, what: &str, host: &str) -> Result<Bytes> {
    if let Some(len) = resp.content_length() {
        if len > limit as u64 {
            return Err(Error::invalid(format!(
                "{what} from {host} is {len} bytes, over the {limit} byte limit"
            )));
        }
    }
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(Error::invalid(format!(
                        "{what} from {host} is over the {limit} byte limit"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                return Err(Error::Network(format!(
                    "connection to {host} lost while reading {what}: {}",
                    describe_reqwest(&e)
                )))
            }
        }
    }
}

/// Reads up to `limit` bytes of a body (to explain an error); never fails.
pub(super) async fn read_truncated(mut resp: reqwest::Response, limit: usize) -> Bytes {
    let mut buf = BytesMut::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    buf.freeze()
}

/// Passes a body stream on one chunk behind, so its last bytes go out only
/// once the stream has ended cleanly. The reader's verification fails at
/// the end of the stream; without this, a body of the announced length
/// would be sent whole before that error, and the request could not be
/// aborted.
pub(super) fn hold_back_last_chunk<S>(inner: S) -> impl futures_util::Stream<Item = io::Result<Bytes>>
where
    S: futures_util::Stream<Item = io::Result<Bytes>> + Unpin,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(Some((inner, None::<Bytes>)), |state| async move {
        let (mut inner, mut held) = state?;
        loop {
            match inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    if let Some(previous) = held.replace(chunk) {
                        return Some((Ok(previous), Some((inner, held))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), None)),
                None => return held.map(|last| (Ok(last), None)),
            }
        }
    })
}

pub(super) type RawReader = Pin<Box<dyn AsyncRead + Send>>;
pub(super) type OpenFuture = Pin<Box<dyn Future<Output = Result<(RawReader, u32)>> + Send>>;

pub(super) enum ReaderState {
    Reading(RawReader),
    Opening(OpenFuture),
    Failed,
}

/// A blob stream that reopens the blob at the current offset (a `Range`
/// request) when the connection drops or ends early, within the GET's retry
/// budget (shared with the transport's retries of the same GET, so the blob
/// is requested at most `--retries` + 1 times). Verification is done by the
/// [`VerifyingReader`] around it.
pub(super) struct ResumingReader {
    pub(super) client: RegistryClient,
    pub(super) repo: String,
    pub(super) digest: Digest,
    pub(super) size: u64,
    pub(super) offset: u64,
    /// Retries of this GET spent so far.
    pub(super) attempt: u32,
    pub(super) state: ReaderState,
}

impl ResumingReader {
    /// Starts reopening the blob; false when the budget is spent.
    pub(super) fn start_resume(&mut self, why: &str) -> bool {
        if self.attempt >= self.client.inner.retry.retries || self.offset >= self.size {
            return false;
        }
        let attempt = self.attempt;
        self.attempt += 1;
        tracing::warn!(
            "blob {} from {}/{}: {why} at byte {} of {}; resuming",
            self.digest,
            self.client.host(),
            self.repo,
            self.offset,
            self.size
        );
        let client = self.client.clone();
        let repo = self.repo.clone();
        let digest = self.digest.clone();
        let (size, offset) = (self.size, self.offset);
        let wait = client.inner.retry.delay(attempt, None);
        let mut spent = attempt + 1;
        self.state = ReaderState::Opening(Box::pin(async move {
            tokio::time::sleep(wait).await;
            let r = client.open_blob_at(&repo, &digest, size, offset, &mut spent).await?;
            Ok((r, spent))
        }));
        true
    }
}

impl AsyncRead for ResumingReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ReaderState::Reading(r) => {
                    let before = buf.filled().len();
                    match r.as_mut().poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let n = (buf.filled().len() - before) as u64;
                            if n == 0 && this.offset < this.size && buf.remaining() > 0 {
                                // Ended early: resume, or fail as a cut (not a
                                // short blob, which would be read again).
                                if this.start_resume("the stream ended early") {
                                    continue;
                                }
                                this.state = ReaderState::Failed;
                                return Poll::Ready(Err(io::Error::other(format!(
                                    "blob {} from {}/{}: the stream ended at byte {} of {} and the retries are spent",
                                    this.digest,
                                    this.client.host(),
                                    this.repo,
                                    this.offset,
                                    this.size
                                ))));
                            }
                            this.offset += n;
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => {
                            if this.start_resume(&e.to_string()) {
                                continue;
                            }
                            this.state = ReaderState::Failed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                ReaderState::Opening(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok((r, spent))) => {
                        this.attempt = spent;
                        this.state = ReaderState::Reading(r);
                    }
                    Poll::Ready(Err(e)) => {
                        this.state = ReaderState::Failed;
                        return Poll::Ready(Err(e.into_io()));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                ReaderState::Failed => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "blob {} stream already failed",
                        this.digest
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn an_upload_body_keeps_its_last_bytes_until_the_stream_ends_cleanly() {
        use futures_util::StreamExt;
        let chunks = |end: io::Result<Bytes>| {
            futures_util::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd")), end])
        };
        // A stream whose verification fails at its end: the last chunk never goes out.
        let failing: Vec<io::Result<Bytes>> = hold_back_last_chunk(chunks(Err(io::Error::other("digest mismatch"))))
            .collect()
            .await;
        assert_eq!(failing.len(), 2);
        assert_eq!(failing[0].as_ref().unwrap(), &Bytes::from_static(b"ab"));
        assert!(failing[1].is_err());
        // A clean stream is passed on whole.
        let clean: Vec<Bytes> = hold_back_last_chunk(chunks(Ok(Bytes::from_static(b"ef"))))
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(clean, [&b"ab"[..], b"cd", b"ef"]);
    }
}

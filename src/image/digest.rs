//! Content digests (`sha256:<hex>`): parsing, computing, and a reader that
//! verifies a stream against its digest and size while it flows.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};

/// A stream of blob bytes. Streams returned by a source are verified
/// against their descriptor: a mismatch surfaces as a read error at the end.
/// (It lives here, below both `source` and `registry`, which hand it on.)
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A validated `sha256:<64 lowercase hex>` digest. Its text is shared by
/// its clones (a plan of 100,000 images holds each digest in several
/// places: descriptors, graph nodes, memos).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(Arc<str>);

impl Digest {
    /// Parses a digest string, accepting only sha256 (the algorithm every
    /// registry and runtime supports).
    pub fn parse(s: &str) -> Result<Self> {
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(Error::invalid(format!(
                "invalid digest {s:?}: expected sha256:<64 hex characters>"
            )));
        };
        if algo != "sha256" {
            return Err(Error::invalid(format!(
                "unsupported digest algorithm {algo:?} in {s:?}: only sha256 is supported"
            )));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(Error::invalid(format!(
                "invalid digest {s:?}: expected sha256:<64 lowercase hex characters>"
            )));
        }
        Ok(Digest(Arc::from(s)))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Finishes a running hash into a digest.
    pub fn from_hasher(h: Sha256) -> Self {
        Digest(Arc::from(format!("sha256:{}", hex::encode(h.finalize()))))
    }

    /// The text, shared with this digest (no copy is made).
    pub fn shared_text(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }

    /// The hex part, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A 12-character prefix of the hex, for tables.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a [`VerifyingReader`] learned once its stream ended.
#[derive(Debug, Clone)]
pub struct StreamSummary {
    pub digest: Digest,
    pub size: u64,
}

/// Wraps a reader, hashing what flows through; at the end of the stream it
/// compares the digest (and the size, when known) with what was expected and
/// turns a mismatch into a read error, so a consumer writing to a temp file
/// never commits corrupt content.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    read: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    what: String,
    done: Option<tokio::sync::oneshot::Sender<StreamSummary>>,
}

impl<R: AsyncRead + Unpin> VerifyingReader<R> {
    /// Verifies `inner` against `expected` (and `expected_size` if given).
    /// `what` names the content in error messages.
    pub fn new(inner: R, expected: Option<Digest>, expected_size: Option<u64>, what: impl Into<String>) -> Self {
        VerifyingReader {
            inner,
            hasher: Some(Sha256::new()),
            read: 0,
            expected,
            expected_size,
            what: what.into(),
            done: None,
        }
    }

    /// Returns a receiver that gets the digest and size once the stream has
    /// been read to its end (and verified).
    pub fn summary(&mut self) -> tokio::sync::oneshot::Receiver<StreamSummary> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.done = Some(tx);
        rx
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        let actual = Digest::from_hasher(h);
        if let Some(size) = self.expected_size {
            if size != self.read {
                return Err(Error::SizeMismatch {
                    what: self.what.clone(),
                    expected: size,
                    actual: self.read,
                }
                .into_io());
            }
        }
        if let Some(exp) = &self.expected {
            if *exp != actual {
                return Err(Error::DigestMismatch {
                    what: self.what.clone(),
                    expected: exp.to_string(),
                    actual: actual.to_string(),
                }
                .into_io());
            }
        }
        if let Some(tx) = self.done.take() {
            let _ = tx.send(StreamSummary {
                digest: actual,
                size: self.read,
            });
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(self.finish());
                }
                self.read += new.len() as u64;
                if let Some(limit) = self.expected_size {
                    if self.read > limit {
                        let what = self.what.clone();
                        let read = self.read;
                        self.hasher = None;
                        buf.set_filled(before);
                        return Poll::Ready(Err(Error::SizeMismatch {
                            what,
                            expected: limit,
                            actual: read,
                        }
                        .into_io()));
                    }
                }
                let this = &mut *self;
                if let Some(h) = this.hasher.as_mut() {
                    h.update(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("md5:00").is_err());
        assert!(Digest::parse("nocolon").is_err());
    }

    #[tokio::test]
    async fn verifying_reader_detects_mismatch() {
        let data = b"some blob".to_vec();
        let good = Digest::of(&data);
        let mut r = VerifyingReader::new(&data[..], Some(good.clone()), Some(data.len() as u64), "blob");
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        let bad = Digest::of(b"other");
        let mut r = VerifyingReader::new(&data[..], Some(bad), None, "blob");
        let err = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert!(Error::stream("blob", err).to_string().contains("digest mismatch"));
        let mut r = VerifyingReader::new(&data[..], Some(good), Some(3), "blob");
        assert!(r.read_to_end(&mut Vec::new()).await.is_err());
    }
}

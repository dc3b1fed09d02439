//! Ctrl-C, seen by the whole run (and SIGTERM's gentler [`drain`]): the binary trips one switch on SIGINT,
//! and the blocking threads that read async streams (layer rewrites, layer
//! scans, `search`, daemon exports) read through [`Bridge`], which stops
//! at once with an error when the switch is tripped. The binary then waits
//! for those threads ([`settle`]) before it shuts the runtime down, so no
//! thread polls a stream, a timer or a socket of a runtime that is going
//! away (which panicked with "A Tokio 1.x context was found, but it is
//! being shutdown").

use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn token() -> &'static CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

/// Blocking readers alive now, and a wake-up when the count drops.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

fn idle() -> &'static Notify {
    static IDLE: OnceLock<Notify> = OnceLock::new();
    IDLE.get_or_init(Notify::new)
}

/// Trips the switch: every [`Bridge`] read fails from now on.
pub fn interrupt() {
    token().cancel();
}

/// Whether the run was interrupted.
pub fn is_interrupted() -> bool {
    token().is_cancelled()
}

/// Set by SIGTERM in `occy sync --every`: start no new work.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the executor to start no new work (no fetch, no commit); the work
/// under way goes on to its end.
pub fn drain() {
    DRAINING.store(true, Ordering::SeqCst);
}

/// Whether new work should not start ([`drain`]).
pub fn is_draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// The error a read gives once the run is interrupted. Not
/// `ErrorKind::Interrupted`, which readers retry.
fn interrupted_error() -> std::io::Error {
    std::io::Error::other("interrupted")
}

/// Waits until no [`Bridge`] is alive, at most `limit`.
pub async fn settle(limit: Duration) {
    let wait = async {
        loop {
            let notified = idle().notified();
            if IN_FLIGHT.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(limit, wait).await.is_err() {
        tracing::debug!(
            "{} blocking reader(s) still running after {limit:?}",
            IN_FLIGHT.load(Ordering::SeqCst)
        );
    }
}

/// A synchronous reader over an async stream, for blocking threads (as
/// `tokio_util::io::SyncIoBridge`), that gives up as soon as the run is
/// interrupted and is counted until dropped, so the binary can wait for it.
pub struct Bridge<R> {
    inner: Pin<Box<R>>,
    handle: Handle,
    token: CancellationToken,
}

impl<R: AsyncRead + Send> Bridge<R> {
    /// Must be called inside the runtime (an async task or a blocking
    /// thread it spawned).
    pub fn new(inner: R) -> Self {
        Self::with_token(inner, token().clone())
    }

    fn with_token(inner: R, token: CancellationToken) -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Bridge {
            inner: Box::pin(inner),
            handle: Handle::current(),
            token,
        }
    }
}

impl<R> Drop for Bridge<R> {
    fn drop(&mut self) {
        if IN_FLIGHT.fetch_sub(1, Ordering::SeqCst) == 1 {
            idle().notify_waiters();
        }
    }
}

impl<R: AsyncRead + Send> Read for Bridge<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let token = &self.token;
        if token.is_cancelled() {
            return Err(interrupted_error());
        }
        let inner = &mut self.inner;
        self.handle.block_on(async {
            tokio::select! {
                biased;
                () = token.cancelled() => Err(interrupted_error()),
                r = inner.read(buf) => r,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_read_ends_when_the_run_is_interrupted() {
        // A stream that never yields: the read is stuck until the switch trips.
        // A token of its own: the run-wide one would stop other tests' readers.
        let (_keep, never) = tokio::io::duplex(16);
        let stop = CancellationToken::new();
        let theirs = stop.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let mut b = Bridge::with_token(never, theirs);
            let mut buf = [0u8; 4];
            b.read(&mut buf)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!reader.is_finished());
        stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.unwrap_err().to_string(), "interrupted");
        assert!(!is_interrupted());
    }
}

//! `--record FILE`: an append-only copy of every byte the host moves, for audits and tests.
//!
//! The recording holds exactly what an untrusted host sees anyway: the relayed client and enclave
//! bytes (TLS records) and the blob service's HTTP traffic (sealed, AEAD-protected blobs). It adds
//! no capability to the host; it exists so that a test (or an auditor) can search everything the
//! host handled for secrets (model keys, plaintext weights, inputs, outputs) and find none.
//!
//! Format: raw bytes, appended in the order the host read or wrote them, all connections and both
//! directions interleaved, no framing. Writing happens on a dedicated thread so that a slow disk
//! never blocks the async runtime; [`Recorder::flush`] waits until everything recorded so far is
//! on disk. A write error is remembered and reported by every later [`Recorder::flush`]: a
//! recording with holes must not look complete.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IoSlice, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Buffer of the writer thread.
const WRITE_BUFFER: usize = 256 * 1024;

enum Msg {
    Data(Vec<u8>),
    Flush(oneshot::Sender<io::Result<()>>),
}

/// A handle to the recording; cheap to clone, shared by every connection.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
}

impl Recorder {
    /// Opens (creating if needed) `path` for appending and starts the writer thread.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("cloister-record".into())
            .spawn(move || write_loop(file, &rx))?;
        Ok(Self { tx })
    }

    /// Appends `bytes` to the recording (asynchronously: see [`Recorder::flush`]).
    pub fn record(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        // If the writer thread is gone, the next flush reports it.
        let _ = self.tx.send(Msg::Data(bytes.to_vec()));
    }

    /// Waits until every byte recorded before this call is written to the file, and reports the
    /// first write error, if any happened since the recording started.
    pub async fn flush(&self) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .map_err(|_| io::Error::other("the recording thread has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("the recording thread has stopped"))?
    }
}

fn write_loop(file: File, rx: &mpsc::Receiver<Msg>) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    // io::Error is not Clone: keep what is needed to report it again.
    let mut failed: Option<(io::ErrorKind, String)> = None;
    let fail = |failed: &mut Option<(io::ErrorKind, String)>, e: io::Error| {
        if failed.is_none() {
            tracing::error!(error = %e, "writing the recording failed; it is incomplete from here on");
            *failed = Some((e.kind(), e.to_string()));
        }
    };
    while let Ok(first) = rx.recv() {
        // Handle everything queued, then flush once: one syscall for many small records.
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Data(bytes) => {
                    if failed.is_none() {
                        if let Err(e) = out.write_all(&bytes) {
                            fail(&mut failed, e);
                        }
                    }
                }
                Msg::Flush(done) => {
                    if failed.is_none() {
                        if let Err(e) = out.flush() {
                            fail(&mut failed, e);
                        }
                    }
                    let status = match &failed {
                        None => Ok(()),
                        Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
                    };
                    let _ = done.send(status);
                }
            }
            next = rx.try_recv().ok();
        }
        if failed.is_none() {
            if let Err(e) = out.flush() {
                fail(&mut failed, e);
            }
        }
    }
}

/// A stream wrapper that records every byte read from and written to the inner stream.
///
/// With no recorder it is a plain pass-through (one branch per call).
#[derive(Debug)]
pub struct Tap<S> {
    inner: S,
    recorder: Option<Recorder>,
}

impl<S> Tap<S> {
    /// Wraps `inner`; records into `recorder` if there is one.
    pub fn new(inner: S, recorder: Option<Recorder>) -> Self {
        Self { inner, recorder }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(recorder) = &this.recorder {
            recorder.record(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some(recorder) = &this.recorder {
            recorder.record(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if let Some(recorder) = &this.recorder {
            // Record the first `n` bytes across the slices: what the inner stream accepted.
            let mut left = n;
            for buf in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(buf.len());
                recorder.record(&buf[..take]);
                left -= take;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn records_reads_and_writes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        let recorder = Recorder::open(&path).unwrap();
        let (a, mut b) = tokio::io::duplex(64);
        let mut tap = Tap::new(a, Some(recorder.clone()));
        tap.write_all(b"hello ").await.unwrap();
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(b"world").await.unwrap();
        let mut back = [0u8; 5];
        tap.read_exact(&mut back).await.unwrap();
        let bufs = [IoSlice::new(b"vec"), IoSlice::new(b"tored")];
        let n = tap.write_vectored(&bufs).await.unwrap();
        recorder.flush().await.unwrap();
        let expected = [&b"hello world"[..], &b"vectored"[..n]].concat();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[tokio::test]
    async fn appends_to_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec");
        std::fs::write(&path, b"old|").unwrap();
        let recorder = Recorder::open(&path).unwrap();
        recorder.record(b"new");
        recorder.flush().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old|new");
    }
}

//! The body of every answer of the host's loopback service (blobs, collateral, the state store, metrics): a
//! short text, or a file streamed in chunks. Its own module, so that the services that answer with it do not
//! depend on one another.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from disk per body frame.
pub(crate) const CHUNK: usize = 256 * 1024;

/// A response body: a short text, or a file streamed in chunks of at most 256 KiB.
pub struct BlobBody {
    kind: BodyKind,
}

enum BodyKind {
    Text(Option<Bytes>),
    File {
        file: tokio::fs::File,
        remaining: u64,
    },
}

impl BlobBody {
    pub(crate) fn empty() -> Self {
        Self {
            kind: BodyKind::Text(None),
        }
    }

    pub(crate) fn text(msg: &'static str) -> Self {
        Self::bytes(Bytes::from_static(msg.as_bytes()))
    }

    /// A body of these bytes.
    pub(crate) fn bytes(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: BodyKind::Text(Some(bytes.into())),
        }
    }

    pub(crate) fn file(file: tokio::fs::File, len: u64) -> Self {
        Self {
            kind: BodyKind::File {
                file,
                remaining: len,
            },
        }
    }
}

impl fmt::Debug for BlobBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobBody").finish_non_exhaustive()
    }
}

impl Body for BlobBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().kind {
            BodyKind::Text(text) => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            BodyKind::File { file, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = usize::try_from(*remaining).map_or(CHUNK, |r| r.min(CHUNK));
                let mut chunk = BytesMut::zeroed(want);
                let mut buf = ReadBuf::new(&mut chunk);
                match Pin::new(file).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n == 0 {
                            // Shorter than Content-Length: abort the response rather than send a
                            // blob that silently ends early.
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the blob file shrank while it was being served",
                            ))));
                        }
                        chunk.truncate(n);
                        *remaining -= n as u64;
                        Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Text(text) => text.is_none(),
            BodyKind::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Text(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            BodyKind::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

//! Fetching and opening a sealed model from the host's blob service (`docs/architecture.md`, "Blob
//! service").
//!
//! ```text
//! GET {blobs}/blobs/sha384:<hex>  → 200 sealed blob | 404
//! header  = read_header(first bytes)            header.digest == requested digest, else stop (no decryption)
//! bytes   ≤ header.sealed_len()                 the host cannot make us read more
//! plaintext = open_expecting(stream, key, digest, MAX_MODEL_PLAINTEXT_LEN)   chunk by chunk, authenticated,
//!                                               digest of the plaintext checked at the end
//! ```
//!
//! The host is untrusted: it may send another model, a truncated or padded blob, a huge announced length,
//! or nothing at all. Every one of those is an error before tract sees a byte. Decryption streams from the
//! socket: peak memory is the plaintext plus a few network buffers, never a copy of the ciphertext.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use cloister_models::{ModelDigest, ModelKey, Plaintext, MAX_HEADER_LEN};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Largest plaintext model the enclave accepts (the header's length is checked against it before any
/// allocation).
pub const MAX_MODEL_PLAINTEXT_LEN: u64 = 16 * 1024 * 1024 * 1024;

/// How long connecting, the response head, and each piece of the body may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a blob could not be fetched or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// `--blobs` is not `http://HOST:PORT[/PREFIX]`.
    #[error("--blobs must be an http://HOST:PORT[/PREFIX] URL")]
    Url,
    /// TCP connection failed.
    #[error("cannot connect to the blob service at {authority}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// HTTP failed.
    #[error("blob service HTTP")]
    Http(#[source] hyper::Error),
    /// The request could not be built.
    #[error("blob request")]
    Request(#[source] hyper::http::Error),
    /// The blob service does not have the blob.
    #[error("the blob service has no blob for {0}")]
    NotFound(ModelDigest),
    /// The blob service answered another status.
    #[error("the blob service answered HTTP {0}")]
    Status(u16),
    /// The service was too slow.
    #[error("the blob service did not answer in time ({0})")]
    Timeout(&'static str),
    /// The sealed header does not parse.
    #[error("the blob's sealed header is malformed")]
    Header(#[source] cloister_models::Error),
    /// The host served a blob for another model.
    #[error("the blob service sent the sealed model {found}, not {expected}")]
    WrongModel {
        /// The digest asked for.
        expected: ModelDigest,
        /// The digest in the header.
        found: ModelDigest,
    },
    /// The header announces a model larger than [`MAX_MODEL_PLAINTEXT_LEN`].
    #[error("the blob announces {len} plaintext bytes, more than the limit of {MAX_MODEL_PLAINTEXT_LEN}")]
    TooLarge {
        /// Announced plaintext length.
        len: u64,
    },
    /// `Content-Length` disagrees with the header's sealed length.
    #[error("the blob service announces {announced} bytes but the sealed header implies {sealed}")]
    LengthMismatch {
        /// `Content-Length`.
        announced: u64,
        /// `header.sealed_len()`.
        sealed: u64,
    },
    /// Opening failed: authentication, truncation, trailing data, digest.
    #[error("the sealed model does not open")]
    Open(#[source] cloister_models::Error),
    /// The blocking decryption task failed.
    #[error("decryption task failed")]
    Task,
}

/// The host's blob service (`--blobs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobService {
    authority: String,
    prefix: String,
}

impl BlobService {
    /// Parses `http://HOST:PORT[/PREFIX]`.
    pub fn parse(url: &str) -> Result<Self, BlobError> {
        let rest = url.strip_prefix("http://").ok_or(BlobError::Url)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok || authority.contains('@') || path.contains(['?', '#']) {
            return Err(BlobError::Url);
        }
        Ok(BlobService {
            authority: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The path of a blob.
    fn path(&self, digest: &ModelDigest) -> String {
        format!("{}/blobs/{digest}", self.prefix)
    }

    /// Fetches the sealed model `digest` and opens it with `key`. See the module documentation for the
    /// checks.
    pub async fn fetch_and_open(
        &self,
        digest: &ModelDigest,
        key: Arc<ModelKey>,
    ) -> Result<Plaintext, BlobError> {
        let tcp = timeout(IO_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| BlobError::Timeout("connect"))?
            .map_err(|source| BlobError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(BlobError::Http)?;
        let driver = tokio::spawn(conn);
        let request = Request::get(self.path(digest))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, "application/octet-stream")
            .body(Empty::<Bytes>::new())
            .map_err(BlobError::Request)?;
        let response = timeout(IO_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| BlobError::Timeout("response"))?
            .map_err(BlobError::Http)?;
        let result = match response.status() {
            StatusCode::OK => open_body(response, digest, key).await,
            StatusCode::NOT_FOUND => Err(BlobError::NotFound(*digest)),
            other => Err(BlobError::Status(other.as_u16())),
        };
        driver.abort();
        result
    }
}

/// Streams the body into `open_expecting` after checking the header.
async fn open_body(
    response: hyper::Response<Incoming>,
    digest: &ModelDigest,
    key: Arc<ModelKey>,
) -> Result<Plaintext, BlobError> {
    let announced = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = response.into_body();

    // The header first: at most MAX_HEADER_LEN bytes are needed.
    let mut head = Vec::with_capacity(MAX_HEADER_LEN);
    let mut pending: Vec<Bytes> = Vec::new();
    let mut ended = false;
    while head.len() < MAX_HEADER_LEN && !ended {
        match next_data(&mut body).await? {
            Some(data) => {
                let take = data.len().min(MAX_HEADER_LEN - head.len());
                head.extend_from_slice(&data[..take]);
                pending.push(data);
            }
            None => ended = true,
        }
    }
    let (header, _) = cloister_models::read_header(&head[..]).map_err(BlobError::Header)?;
    // Before anything is decrypted: is this the model the key was released for?
    if !header.digest().ct_eq(digest) {
        return Err(BlobError::WrongModel {
            expected: *digest,
            found: *header.digest(),
        });
    }
    if header.plaintext_len() > MAX_MODEL_PLAINTEXT_LEN {
        return Err(BlobError::TooLarge {
            len: header.plaintext_len(),
        });
    }
    let sealed = header.sealed_len();
    if let Some(announced) = announced {
        if announced != sealed {
            return Err(BlobError::LengthMismatch { announced, sealed });
        }
    }

    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let expected = *digest;
    let opener = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        cloister_models::open_expecting(reader, &key, &expected, MAX_MODEL_PLAINTEXT_LEN)
    });

    // Forward at most sealed + 1 bytes: one byte more is enough for the opener to report trailing data.
    let limit = sealed.saturating_add(1);
    let mut sent: u64 = 0;
    let forward = |data: Bytes, sent: &mut u64| -> Option<Bytes> {
        let room = limit.saturating_sub(*sent);
        if room == 0 {
            return None;
        }
        let data = if (data.len() as u64) > room {
            data.slice(..room as usize)
        } else {
            data
        };
        *sent += data.len() as u64;
        Some(data)
    };
    let mut pump_error = None;
    'pump: {
        for data in pending {
            let Some(data) = forward(data, &mut sent) else {
                break 'pump;
            };
            if tx.send(Ok(data)).await.is_err() {
                break 'pump; // the opener stopped (it failed): its error is the one to report
            }
        }
        while !ended {
            match next_data(&mut body).await {
                Ok(Some(data)) => {
                    let Some(data) = forward(data, &mut sent) else {
                        break 'pump;
                    };
                    if tx.send(Ok(data)).await.is_err() {
                        break 'pump;
                    }
                }
                Ok(None) => ended = true,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other("blob transfer failed"))).await;
                    pump_error = Some(e);
                    break 'pump;
                }
            }
        }
    }
    drop(tx);
    let opened = opener.await.map_err(|_| BlobError::Task)?;
    match (opened, pump_error) {
        (Ok(plaintext), _) => Ok(plaintext),
        (Err(_), Some(transfer)) => Err(transfer),
        (Err(e), None) => Err(BlobError::Open(e)),
    }
}

async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, BlobError> {
    loop {
        let frame = timeout(IO_TIMEOUT, body.frame())
            .await
            .map_err(|_| BlobError::Timeout("body"))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(BlobError::Http(e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// A blocking reader over the chunks the async side forwards (ciphertext only).
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => self.current = data,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = BlobService::parse("http://127.0.0.1:7000").unwrap();
        assert_eq!(s.authority, "127.0.0.1:7000");
        let d = ModelDigest::from_bytes([0xab; 48]);
        assert_eq!(s.path(&d), format!("/blobs/sha384:{}", "ab".repeat(48)));
        let s = BlobService::parse("http://host:1/x/").unwrap();
        assert_eq!(s.path(&d), format!("/x/blobs/sha384:{}", "ab".repeat(48)));
        for bad in [
            "https://h:1",
            "http://h",
            "http://:1",
            "http://h:0",
            "http://u@h:1",
            "http://h:1/?q",
            "h:1",
        ] {
            assert!(BlobService::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Fetching and opening a sealed model from the host's blob service (`docs/architecture.md`, "Blob
//! service"), or from any HTTP(S) server that holds the sealed blobs under `<base>/blobs/<digest>`: an
//! object store, a plain web server, a volume served by a sidecar (`docs/kubernetes.md`).
//!
//! ```text
//! GET {blobs}/blobs/sha384:<hex>  → 200 sealed blob | 404
//! opener  = Opener::new(key, digest, MAX_MODEL_PLAINTEXT_LEN)
//! push(each piece as it arrives)                header: digest == requested, key, size; else stop (no
//!                                               decryption); Content-Length == header.sealed_len()
//!                                               chunks: authenticated as they complete; a byte past the
//!                                               last chunk is refused: the host cannot make us read more
//! plaintext = finish()                          every chunk there, digest of the plaintext checked
//! ```
//!
//! The host is untrusted: it may send another model, a truncated or padded blob, a huge announced length,
//! or nothing at all. Every one of those is an error before tract sees a byte. Decryption streams from the
//! socket, push-style (`cloister_models::Opener`: no thread bridge, one header parse): peak memory is the
//! plaintext plus a network buffer, never a copy of the ciphertext.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloister_models::{ModelDigest, ModelKey, Opener, Plaintext};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
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
    /// `--blobs` is not `http(s)://HOST[:PORT][/PREFIX]`.
    #[error("--blobs must be an http(s)://HOST[:PORT][/PREFIX] URL (no user, query or fragment)")]
    Url,
    /// The TLS handshake with an `https://` blob store failed (its certificate must chain to a public root:
    /// the bytes are verified anyway, TLS only keeps the store's ciphertext from passers-by).
    #[error("TLS with the blob store {host} failed")]
    Tls {
        /// The host name.
        host: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
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
    /// A small answer (the durable-state store) larger than its cap.
    #[error("the host's answer is larger than {cap} bytes")]
    AnswerTooLarge {
        /// The cap.
        cap: usize,
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
}

/// The host's blob service, or any HTTP(S) blob store (`--blobs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobService {
    /// `https://` (verified against public roots) or plain `http://`.
    tls: bool,
    /// `host:port` to connect to.
    authority: String,
    /// The host name (TLS server name, `Host` header without a default port).
    host: String,
    /// The `Host` header.
    host_header: String,
    prefix: String,
}

impl BlobService {
    /// Parses `http(s)://HOST[:PORT][/PREFIX]` (default ports 80 and 443).
    pub fn parse(url: &str) -> Result<Self, BlobError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(BlobError::Url);
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(BlobError::Url);
        }
        // A bracketed IPv6 literal keeps its colons; otherwise a colon starts the port.
        let (host, port) = match authority.find(']') {
            Some(end) if authority.starts_with('[') => (&authority[..=end], &authority[end + 1..]),
            _ => match authority.find(':') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            },
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or(BlobError::Url)?,
            ),
            None => return Err(BlobError::Url),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !valid_host {
            return Err(BlobError::Url);
        }
        let default_port = if tls { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        Ok(BlobService {
            tls,
            authority: format!("{host}:{port}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            host_header: if port == default_port {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            },
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
        let io = self.connect().await?;
        self.fetch_over(io, digest, key).await
    }

    /// A connection to the service: TCP, and TLS verified against public roots for `https://`.
    async fn connect(&self) -> Result<Box<dyn Io>, BlobError> {
        let tcp = timeout(IO_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| BlobError::Timeout("connect"))?
            .map_err(|source| BlobError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(public_roots_client()));
        let server_name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| BlobError::Url)?;
        let tls = timeout(IO_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| BlobError::Timeout("TLS handshake"))?
            .map_err(|source| BlobError::Tls {
                host: self.host.clone(),
                source,
            })?;
        Ok(Box::new(tls))
    }

    /// One small request to the host (the durable-state store): `method` on `path` under the prefix, with
    /// `body`; the status and at most `cap` bytes of the answer (more is an error, never truncated).
    pub async fn small_request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Bytes,
        cap: usize,
    ) -> Result<(StatusCode, Bytes), BlobError> {
        let io = self.connect().await?;
        self.small_over(io, method, path, body, cap).await
    }

    async fn small_over<IO>(
        &self,
        io: IO,
        method: hyper::Method,
        path: &str,
        body: Bytes,
        cap: usize,
    ) -> Result<(StatusCode, Bytes), BlobError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(BlobError::Http)?;
        let driver = tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.host_header)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(http_body_util::Full::new(body))
            .map_err(BlobError::Request)?;
        let result = async {
            let response = timeout(IO_TIMEOUT, sender.send_request(request))
                .await
                .map_err(|_| BlobError::Timeout("response"))?
                .map_err(BlobError::Http)?;
            let status = response.status();
            let mut body = response.into_body();
            let mut out = Vec::new();
            while let Some(data) = next_data(&mut body).await? {
                if out.len() + data.len() > cap {
                    return Err(BlobError::AnswerTooLarge { cap });
                }
                out.extend_from_slice(&data);
            }
            Ok((status, Bytes::from(out)))
        }
        .await;
        driver.abort();
        result
    }

    async fn fetch_over<IO>(
        &self,
        io: IO,
        digest: &ModelDigest,
        key: Arc<ModelKey>,
    ) -> Result<Plaintext, BlobError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(BlobError::Http)?;
        let driver = tokio::spawn(conn);
        let request = Request::get(self.path(digest))
            .header(hyper::header::HOST, &self.host_header)
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

/// A connection to the blob service, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// TLS for `https://` blob stores: Mozilla's roots (webpki-roots), ring, TLS 1.2 and 1.3.
fn public_roots_client() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // ring supports the safe defaults: unreachable, but no panic either.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// Pushes the body into the opener as it arrives. The opener checks the header (this model's digest,
/// the key, the size limit) before decrypting anything and refuses the first byte after the last chunk, so
/// the host cannot make the enclave read more than the header announces; `Content-Length`, when sent, must
/// agree with the header.
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
    let mut opener =
        Opener::new(&key, Some(*digest), MAX_MODEL_PLAINTEXT_LEN).map_err(BlobError::Open)?;
    let mut length_checked = false;
    while let Some(data) = next_data(&mut body).await? {
        let had_header = opener.header().is_some();
        opener.push(&data).map_err(|e| open_error(e, had_header))?;
        if !length_checked {
            if let (Some(header), Some(announced)) = (opener.header(), announced) {
                length_checked = true;
                let sealed = header.sealed_len();
                if announced != sealed {
                    return Err(BlobError::LengthMismatch { announced, sealed });
                }
            }
        }
    }
    let had_header = opener.header().is_some();
    opener.finish().map_err(|e| open_error(e, had_header))
}

/// The opener's refusal in the blob service's terms: another model, too large, a malformed header
/// (nothing decrypted in any of those), or a model that does not open.
fn open_error(e: cloister_models::Error, had_header: bool) -> BlobError {
    match e {
        cloister_models::Error::UnexpectedModel { expected, found } => {
            BlobError::WrongModel { expected, found }
        }
        cloister_models::Error::TooLarge { len, .. } => BlobError::TooLarge { len },
        e if !had_header => BlobError::Header(e),
        e => BlobError::Open(e),
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
        let s = BlobService::parse("https://models.example.com/store").unwrap();
        assert!(s.tls);
        assert_eq!(s.authority, "models.example.com:443");
        assert_eq!(s.host_header, "models.example.com");
        assert_eq!(
            s.path(&d),
            format!("/store/blobs/sha384:{}", "ab".repeat(48))
        );
        let s = BlobService::parse("http://blobs.svc:8080").unwrap();
        assert_eq!((s.tls, s.host_header.as_str()), (false, "blobs.svc:8080"));
        assert_eq!(BlobService::parse("http://h").unwrap().authority, "h:80");
        for bad in [
            "ftp://h:1",
            "http://",
            "http://:1",
            "http://h:x",
            "http://h h:1",
            "http://h:0",
            "http://u@h:1",
            "http://h:1/?q",
            "h:1",
        ] {
            assert!(BlobService::parse(bad).is_err(), "{bad}");
        }
    }

    /// An `https://` store that does not complete a TLS handshake with a publicly rooted certificate is an
    /// error naming TLS, never a plaintext fallback.
    #[tokio::test]
    async fn https_fails_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let store = BlobService::parse(&format!("https://localhost:{port}")).unwrap();
        let key = Arc::new(ModelKey::from_bytes(&[7; 32]));
        let err = store
            .fetch_and_open(&ModelDigest::from_bytes([1; 48]), key)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::Tls { .. }), "{err:?}");
    }
}

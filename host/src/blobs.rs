//! The blob service: hands the enclave the sealed models it asks for, by digest.
//!
//! `GET /blobs/sha384:<96 lowercase hex>` → `200` and the sealed file's bytes, `404` for a digest
//! the host does not hold, `400` for a malformed path (docs/architecture.md, "Blob service"). The same
//! service answers `/collateral/` ([`crate::collateral`]) and `/state/` ([`crate::state`]).
//!
//! Trust: the host can read a sealed blob's header (name, digest, lengths) but not open it; it
//! links no decryption code. The enclave checks the header digest against the digest it asked
//! for before decrypting and authenticates every chunk, so a host that serves the wrong or a
//! modified blob can only cause a refusal, never a wrong model. The index checks exist to fail
//! early and clearly on operator mistakes, not for security.
//!
//! The service listens on loopback only: its one client is the enclave on this machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloister_models::ModelDigest;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use cloister_collateral::Collateral;

pub use crate::body::BlobBody;
use crate::record::{Recorder, Tap};
use crate::state::StateStore;

/// Path prefix of blob requests.
const BLOBS_PREFIX: &str = "/blobs/";

/// Concurrent blob connections; the enclave needs one or two.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// One sealed model the host can serve.
#[derive(Debug, Clone)]
pub struct Blob {
    path: PathBuf,
    len: u64,
    name: String,
}

impl Blob {
    /// The sealed file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes (header and all chunks), as checked at startup.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty (never true for a valid sealed model).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The model name from the header (public, for logs).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why the blob index could not be built; the host refuses to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The file could not be opened or its length read.
    #[error("cannot read sealed model {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file does not start with a valid sealed-model header.
    #[error("{} has no valid sealed-model header", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<cloister_models::Error>,
    },
    /// The file's length is not the one its header implies (truncated or trailing bytes).
    #[error(
        "{} is {found} bytes long but its header implies {expected}: truncated or corrupt",
        path.display()
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Length implied by the header.
        expected: u64,
        /// Length on disk.
        found: u64,
    },
    /// Two files carry the same model digest: which one to serve would be ambiguous.
    #[error("{} and {} both hold model {digest}", first.display(), second.display())]
    Duplicate {
        /// The digest.
        digest: ModelDigest,
        /// The file indexed first.
        first: PathBuf,
        /// The file that repeats it.
        second: PathBuf,
    },
}

/// The sealed models the host serves, by the digest in their headers.
#[derive(Debug, Default)]
pub struct BlobIndex {
    blobs: HashMap<ModelDigest, Blob>,
}

impl BlobIndex {
    /// Reads the header of every file and indexes it by digest.
    ///
    /// Fails on an unreadable file, an invalid header, a length that does not match the header,
    /// or two files with the same digest.
    pub fn build<P: AsRef<Path>>(paths: &[P]) -> Result<Self, IndexError> {
        let mut blobs: HashMap<ModelDigest, Blob> = HashMap::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let read = |source| IndexError::Read {
                path: path.to_owned(),
                source,
            };
            let file = File::open(path).map_err(read)?;
            let found = file.metadata().map_err(read)?.len();
            let (header, _) =
                cloister_models::read_header(io::BufReader::new(&file)).map_err(|source| {
                    IndexError::Header {
                        path: path.to_owned(),
                        source: Box::new(source),
                    }
                })?;
            let expected = header.sealed_len();
            if found != expected {
                return Err(IndexError::Length {
                    path: path.to_owned(),
                    expected,
                    found,
                });
            }
            let digest = *header.digest();
            if let Some(first) = blobs.get(&digest) {
                return Err(IndexError::Duplicate {
                    digest,
                    first: first.path.clone(),
                    second: path.to_owned(),
                });
            }
            blobs.insert(
                digest,
                Blob {
                    path: path.to_owned(),
                    len: found,
                    name: header.name().to_owned(),
                },
            );
        }
        Ok(Self { blobs })
    }

    /// The blob with this digest.
    pub fn get(&self, digest: &ModelDigest) -> Option<&Blob> {
        self.blobs.get(digest)
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every blob with its digest, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ModelDigest, &Blob)> {
        self.blobs.iter()
    }
}

/// What a request asks for (sans-IO: decided from the method and path alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A well-formed blob request; `head` for `HEAD` (headers only).
    Blob {
        /// The requested digest.
        digest: ModelDigest,
        /// Whether only the headers are wanted.
        head: bool,
    },
    /// `/blobs/` followed by something that is not a canonical digest: `400`.
    Malformed,
    /// Any other path: `404`.
    NotFound,
    /// A method other than `GET` or `HEAD` on a blob path (or other than `GET` on a collateral path): `405`.
    MethodNotAllowed,
    /// `GET /collateral/<KDS path>`: the KDS mirror ([`crate::collateral`]).
    Collateral,
    /// `/state/…`: the enclave's sealed state ([`crate::state`], which routes further).
    State,
}

/// Routes a request.
pub fn route(method: &Method, path: &str) -> Route {
    if path.starts_with(crate::state::PREFIX) {
        return Route::State;
    }
    if path.starts_with(crate::collateral::PREFIX) {
        return if *method == Method::GET {
            Route::Collateral
        } else {
            Route::MethodNotAllowed
        };
    }
    let Some(rest) = path.strip_prefix(BLOBS_PREFIX) else {
        return Route::NotFound;
    };
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Route::MethodNotAllowed,
    };
    // `ModelDigest::from_str` accepts only the canonical `sha384:` + 96 lowercase hex digits.
    match rest.parse::<ModelDigest>() {
        Ok(digest) => Route::Blob { digest, head },
        Err(_) => Route::Malformed,
    }
}

/// The blob service, bound to an ephemeral loopback port.
#[derive(Debug)]
pub struct BlobServer {
    listener: TcpListener,
    index: Arc<BlobIndex>,
    recorder: Option<Recorder>,
    collateral: Option<Arc<Collateral>>,
    state: Option<Arc<StateStore>>,
}

impl BlobServer {
    /// Binds `127.0.0.1:0`.
    pub async fn bind(index: BlobIndex, recorder: Option<Recorder>) -> io::Result<Self> {
        Self::bind_port(index, recorder, 0).await
    }

    /// Binds `127.0.0.1:PORT` (0: any free port). Loopback only: a VM reaches it through QEMU
    /// user networking as `10.0.2.2:PORT`.
    pub async fn bind_port(
        index: BlobIndex,
        recorder: Option<Recorder>,
        port: u16,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        Ok(Self {
            listener,
            index: Arc::new(index),
            recorder,
            collateral: None,
            state: None,
        })
    }

    /// Serves `GET /collateral/<KDS path>` from `collateral` (without: 404 on those paths).
    #[must_use]
    pub fn with_collateral(mut self, collateral: Option<Arc<Collateral>>) -> Self {
        self.collateral = collateral;
        self
    }

    /// Serves `/state/{label}/{version|latest}` from `state` (without: 404 on those paths, saying the
    /// host keeps no state).
    #[must_use]
    pub fn with_state(mut self, state: Option<Arc<StateStore>>) -> Self {
        self.state = state;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL to hand the enclave (`--blobs`), e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> io::Result<String> {
        Ok(format!("http://{}", self.local_addr()?))
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return; // The semaphore is never closed.
            };
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "blob service: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let index = Arc::clone(&self.index);
            let collateral = self.collateral.clone();
            let state = self.state.clone();
            let io = TokioIo::new(Tap::new(stream, self.recorder.clone()));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let index = Arc::clone(&index);
                    let collateral = collateral.clone();
                    let state = state.clone();
                    async move {
                        let resp = match route(req.method(), req.uri().path()) {
                            Route::State => crate::state::respond(state, req).await,
                            Route::Collateral => {
                                let r =
                                    crate::collateral::respond(collateral.as_deref(), req.uri())
                                        .await;
                                crate::metrics::metrics().collateral(r.status().as_u16());
                                r
                            }
                            _ => {
                                let r = respond(&index, &req).await;
                                crate::metrics::metrics().blob(r.status().as_u16());
                                r
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(io, service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "blob service: connection ended with an error");
                }
                drop(permit);
            });
        }
    }
}

/// Answers one request.
pub async fn respond<B>(index: &BlobIndex, req: &Request<B>) -> Response<BlobBody> {
    let (digest, head) = match route(req.method(), req.uri().path()) {
        Route::Blob { digest, head } => (digest, head),
        Route::Malformed => {
            return text(
                StatusCode::BAD_REQUEST,
                "malformed blob path: expected /blobs/sha384:<96 lowercase hex digits>\n",
            )
        }
        Route::NotFound | Route::Collateral | Route::State => {
            return text(StatusCode::NOT_FOUND, "not found\n")
        }
        Route::MethodNotAllowed => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    };
    let Some(blob) = index.get(&digest) else {
        tracing::info!(%digest, "blob service: unknown digest requested");
        return text(StatusCode::NOT_FOUND, "no sealed model with this digest\n");
    };
    let file = match open_checked(blob).await {
        Ok(file) => file,
        Err(e) => {
            tracing::error!(path = %blob.path.display(), error = %e, "blob service: cannot serve");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the blob\n");
        }
    };
    tracing::info!(%digest, name = blob.name(), bytes = blob.len, head, "blob service: serving");
    let body = if head {
        BlobBody::empty()
    } else {
        BlobBody::file(file, blob.len)
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(blob.len));
    resp
}

/// Opens the blob and checks it still has the length it had at startup.
async fn open_checked(blob: &Blob) -> io::Result<tokio::fs::File> {
    let file = tokio::fs::File::open(&blob.path).await?;
    let len = file.metadata().await?.len();
    if len != blob.len {
        return Err(io::Error::other(format!(
            "the file changed since startup ({} bytes then, {len} now)",
            blob.len
        )));
    }
    Ok(file)
}

fn text(status: StatusCode, msg: &'static str) -> Response<BlobBody> {
    let mut resp = Response::new(BlobBody::text(msg));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use cloister_models::{SealedHeader, DIGEST_LEN, FIXED_HEADER_LEN, MAGIC};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A file that looks like a sealed model to the host: a valid header and the right length of
    /// filler "ciphertext" (the host cannot tell the difference, which is the point).
    pub(crate) fn fake_sealed(digest_byte: u8, name: &str, plaintext_len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u16.to_be_bytes()); // format version
        out.push(1); // AES-256-GCM
        out.extend_from_slice(&(4096u32).to_be_bytes()); // chunk size
        out.extend_from_slice(&plaintext_len.to_be_bytes());
        out.extend_from_slice(&[digest_byte; DIGEST_LEN]);
        out.extend_from_slice(&[7u8; 16]); // key id
        out.extend_from_slice(&[9u8; 7]); // nonce prefix
        assert_eq!(out.len(), FIXED_HEADER_LEN - 1);
        out.push(u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
        let (header, _) = SealedHeader::decode(&out).unwrap();
        let total = usize::try_from(header.sealed_len()).unwrap();
        let mut filler = 0u8;
        while out.len() < total {
            out.push(filler);
            filler = filler.wrapping_mul(31).wrapping_add(17);
        }
        out
    }

    fn digest_of(byte: u8) -> ModelDigest {
        ModelDigest::from_bytes([byte; DIGEST_LEN])
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn routes() {
        let good = format!("/blobs/{}", digest_of(0xab));
        assert_eq!(
            route(&Method::GET, &good),
            Route::Blob {
                digest: digest_of(0xab),
                head: false
            }
        );
        assert!(matches!(
            route(&Method::HEAD, &good),
            Route::Blob { head: true, .. }
        ));
        assert_eq!(route(&Method::POST, &good), Route::MethodNotAllowed);
        assert_eq!(route(&Method::GET, "/"), Route::NotFound);
        assert_eq!(route(&Method::GET, "/blobs"), Route::NotFound);
        assert_eq!(route(&Method::PUT, "/state/a/1"), Route::State);
        assert_eq!(route(&Method::DELETE, "/state/x"), Route::State);
        let upper = format!("/blobs/sha384:{}", "AB".repeat(48));
        let short = format!("/blobs/sha384:{}", "ab".repeat(47));
        let long = format!("/blobs/sha384:{}", "ab".repeat(49));
        let nonhex = format!("/blobs/sha384:{}", "zz".repeat(48));
        let wrong_alg = format!("/blobs/sha256:{}", "ab".repeat(48));
        let bare = format!("/blobs/{}", "ab".repeat(48));
        let suffix = format!("{good}/x");
        for bad in [
            "/blobs/", &upper, &short, &long, &nonhex, &wrong_alg, &bare, &suffix,
        ] {
            assert_eq!(route(&Method::GET, bad), Route::Malformed, "{bad}");
        }
    }

    #[test]
    fn index_reads_digests_from_headers() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.sealed", &fake_sealed(1, "alpha", 10_000));
        let b = write(dir.path(), "b.sealed", &fake_sealed(2, "beta", 0));
        let index = BlobIndex::build(&[&a, &b]).unwrap();
        assert_eq!(index.len(), 2);
        let blob = index.get(&digest_of(1)).unwrap();
        assert_eq!(blob.path(), a);
        assert_eq!(blob.name(), "alpha");
        assert_eq!(blob.len(), std::fs::metadata(&a).unwrap().len());
        assert!(index.get(&digest_of(3)).is_none());
    }

    #[test]
    fn index_refuses_duplicate_digests() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.sealed", &fake_sealed(1, "alpha", 100));
        let b = write(dir.path(), "b.sealed", &fake_sealed(1, "other-name", 5000));
        let err = BlobIndex::build(&[&a, &b]).unwrap_err();
        assert!(matches!(err, IndexError::Duplicate { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("a.sealed") && msg.contains("b.sealed"),
            "{msg}"
        );
        assert!(msg.contains(&digest_of(1).to_string()), "{msg}");
    }

    #[test]
    fn index_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.sealed");
        assert!(matches!(
            BlobIndex::build(&[&missing]),
            Err(IndexError::Read { .. })
        ));
        let junk = write(dir.path(), "junk.sealed", b"not a sealed model at all");
        assert!(matches!(
            BlobIndex::build(&[&junk]),
            Err(IndexError::Header { .. })
        ));
        let mut sealed = fake_sealed(1, "alpha", 10_000);
        sealed.pop();
        let truncated = write(dir.path(), "truncated.sealed", &sealed);
        assert!(matches!(
            BlobIndex::build(&[&truncated]),
            Err(IndexError::Length { .. })
        ));
        sealed.extend_from_slice(b"xx");
        let trailing = write(dir.path(), "trailing.sealed", &sealed);
        assert!(matches!(
            BlobIndex::build(&[&trailing]),
            Err(IndexError::Length { .. })
        ));
    }

    /// Sends one raw HTTP/1.1 request and returns (status, body) of the response.
    async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        stream.read_to_end(&mut resp).await.unwrap();
        let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&resp[..end]).unwrap();
        let status = head[9..12].parse().unwrap();
        (status, resp[end + 4..].to_vec())
    }

    #[tokio::test]
    async fn serves_blobs_by_digest() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let dir = tempfile::tempdir().unwrap();
            // Several chunks' worth, with an odd tail.
            let big = fake_sealed(1, "big", 3 * crate::body::CHUNK as u64 + 12_345);
            let a = write(dir.path(), "a.sealed", &big);
            let record = dir.path().join("record");
            let recorder = Recorder::open(&record).unwrap();
            let index = BlobIndex::build(&[&a]).unwrap();
            let server = BlobServer::bind(index, Some(recorder.clone()))
                .await
                .unwrap();
            let addr = server.local_addr().unwrap();
            assert!(server.url().unwrap().starts_with("http://127.0.0.1:"));
            tokio::spawn(server.serve());

            let (status, body) = get(addr, "GET", &format!("/blobs/{}", digest_of(1))).await;
            assert_eq!(status, 200);
            assert!(body == big, "served bytes differ from the file");

            let (status, body) = get(addr, "HEAD", &format!("/blobs/{}", digest_of(1))).await;
            assert_eq!((status, body.len()), (200, 0));

            let (status, _) = get(addr, "GET", &format!("/blobs/{}", digest_of(2))).await;
            assert_eq!(status, 404);
            let (status, _) = get(addr, "GET", "/blobs/sha384:nothex").await;
            assert_eq!(status, 400);
            let (status, _) = get(addr, "GET", "/other").await;
            assert_eq!(status, 404);
            let (status, _) = get(addr, "DELETE", &format!("/blobs/{}", digest_of(1))).await;
            assert_eq!(status, 405);

            // The recording holds the whole blob as served (plus the HTTP framing).
            recorder.flush().await.unwrap();
            let recorded = std::fs::read(&record).unwrap();
            assert!(recorded.windows(big.len()).any(|w| w == big.as_slice()));
        })
        .await
        .unwrap();
    }
}

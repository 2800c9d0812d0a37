//! The attested inference server: TLS 1.3 (ring, an ephemeral self-signed P-384 certificate made at each
//! start) and HTTP/1.1 with keep-alive, speaking the Open Inference Protocol v2 (`docs/architecture.md`,
//! "Serving").
//!
//! Channel binding: right after each handshake the connection's exporter is computed —
//! `TLS-Exporter(label = "EXPERIMENTAL-cloister-attestation", context = none, length = 32)` (RFC 8446 §7.5) —
//! and handed to every request of that connection. `POST /v2/attestation` puts it in the claims, so evidence
//! obtained on one connection is worthless on any other: a relay that terminates TLS has a different
//! exporter on each leg.
//!
//! Everything that arrives here is untrusted: the host relays the bytes and the client is whoever connects.
//! Sizes are bounded before bytes are buffered (body limit, concurrency permits acquired before the body is
//! read), tract runs on the blocking pool, and errors sent back are short and precise about the *request*
//! (never a path, a tract internal, or a value). Bodies, tensors and keys are never logged.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloister_kserve::{
    DecodeLimits, Error as KserveError, ErrorResponse, InferRequest, InferResponse, InferTensor,
    MetadataTensor, ModelMetadataResponse, TensorProblem, INFERENCE_HEADER_CONTENT_LENGTH,
    JSON_CONTENT_TYPE,
};
use cloister_proto::session_attestation::{EnclaveAttestation, MAX_REQUEST_LEN};
use cloister_proto::tls::{self, danger::PinnedClients};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::config::ClientsConfig;
use crate::firmware;
use crate::inference::{
    Error as InferenceError, Footprint, LoadedModel, NamedTensor, RunLimits, TensorSpec,
};
use crate::pool::{MemoryGrant, PoolError};
use crate::runtime::{error_chain, Enclave, ModelSlot};

/// The TLS handshake must complete within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request head must arrive within this time once it has started.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// A request body must arrive within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// At most this many connections are served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Largest `POST /v2/attestation` body.
pub const MAX_ATTESTATION_BODY: u64 = MAX_REQUEST_LEN as u64;
/// The `platform` of an LLM's v2 metadata (its API is `/v1/chat/completions`).
pub const LLM_PLATFORM: &str = "cloister-llm";
/// The version every model is served as.
pub const MODEL_VERSION: &str = "1";

/// Errors setting up the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The ephemeral certificate could not be made.
    #[error("cannot make the ephemeral TLS certificate")]
    Certificate(#[source] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// The server's TLS configuration: TLS 1.3 only, ring, a fresh self-signed P-384 certificate (the client
/// authenticates the enclave by attestation inside the session, not by this certificate), no session
/// tickets, no early data; client certificates by pin when `[clients]` lists any (required when it says so).
pub fn tls_config(
    clients: &ClientsConfig,
    pins: &[[u8; 32]],
) -> Result<Arc<ServerConfig>, ServerError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(ServerError::Certificate)?;
    let params = rcgen::CertificateParams::new(vec!["cloister-enclave".to_owned()])
        .map_err(ServerError::Certificate)?;
    let cert = params.self_signed(&key).map_err(ServerError::Certificate)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = tls::server_builder().map_err(ServerError::Tls)?;
    let config = if pins.is_empty() {
        config.with_no_client_auth()
    } else {
        // A pinned client must not be able to shed its identity (and its budget) by connecting without
        // its certificate: without a certificate there is no session unless anonymous access was asked for.
        config.with_client_cert_verifier(Arc::new(PinnedClients::new(
            pins.to_vec(),
            clients.require_certificate || !clients.anonymous_allowed(),
            &tls::provider(),
        )))
    };
    let mut config = config
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Accepts and serves connections until the listener fails for good (never, in practice).
pub async fn serve(listener: TcpListener, tls: Arc<ServerConfig>, enclave: Arc<Enclave>) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; closing");
            continue;
        };
        let acceptor = acceptor.clone();
        let enclave = Arc::clone(&enclave);
        tokio::spawn(async move {
            serve_connection(acceptor, tcp, peer, enclave).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    enclave: Arc<Enclave>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // RFC 8446 §7.5: this connection's exporter, computed once the handshake is complete.
    let exporter = match tls::exporter(tls.get_ref().1) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(%peer, "cannot compute the TLS exporter: {e}");
            return;
        }
    };
    // The client's identity: its certificate's SHA-256 when it presented one (verified by pin), else
    // anonymous.
    let client = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or_else(
            || "anonymous".to_owned(),
            |c| crate::governance::client_id(c.as_ref()),
        );
    let ctx = Arc::new(Connection {
        exporter,
        enclave,
        client,
        evidence_digest: std::sync::Mutex::new(None),
        seq: std::sync::atomic::AtomicU64::new(0),
    });
    let service = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// What every request of one connection shares.
struct Connection {
    exporter: [u8; 32],
    enclave: Arc<Enclave>,
    /// `sha256:<client certificate>` or `anonymous`.
    client: String,
    /// SHA-384 of the last evidence this connection was served (what receipts point to).
    evidence_digest: std::sync::Mutex<Option<[u8; 48]>>,
    /// Inferences answered on this connection (receipts' `seq`).
    seq: std::sync::atomic::AtomicU64,
}

impl Connection {
    /// The session id, hex, once the client attested on this connection.
    fn session_hex(&self) -> Option<String> {
        self.evidence_digest
            .lock()
            .ok()
            .and_then(|d| d.map(|_| hex::encode(cloister_governance::session_id(&self.exporter))))
    }

    /// A signed receipt for an inference of `slot` on this connection; `None` when the client did not attest
    /// the session (a receipt names the evidence it was served; a client that did not ask for evidence has
    /// nothing to check a receipt against, and gets none).
    fn receipt(
        &self,
        slot: &ModelSlot,
        request: [u8; 32],
        response: [u8; 32],
    ) -> Result<Option<cloister_governance::Receipt>, ApiError> {
        let Some(evidence) = self.evidence_digest.lock().ok().and_then(|d| *d) else {
            return Ok(None);
        };
        let payload = cloister_governance::ReceiptPayload {
            evidence,
            model: slot.name().to_owned(),
            model_digest: *slot.digest().as_bytes(),
            request,
            response,
            time: crate::governance::unix_now(),
            session: cloister_governance::session_id(&self.exporter),
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            provenance: slot
                .provenance()
                .map(|p| cloister_governance::ReceiptProvenance {
                    signer: p.signer.0,
                    root_digest: p.root_digest,
                }),
        };
        cloister_governance::Receipt::sign(self.enclave.governance().signer(), &payload)
            .map(Some)
            .map_err(|e| {
                tracing::error!("cannot sign a receipt: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inference failed")
            })
    }
}

/// Every response body: a buffer, or (`/v1/chat/completions` with `stream`) server-sent events as they are
/// generated.
type Resp = Response<BoxBody<Bytes, Infallible>>;

/// A request error: the status and the one-line message the client gets as `{"error": "…"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After` (429).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

async fn handle(ctx: &Arc<Connection>, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = route(ctx, req).await.unwrap_or_else(|e| error_response(&e));
    tracing::debug!(
        %method,
        path = %truncate(&path, 128),
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn route(ctx: &Arc<Connection>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = req.method().clone();
    let enclave = &ctx.enclave;
    let is_get = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["v2"] if is_get => Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "name": "cloister-enclave",
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": ["binary_tensor_data", "cloister_attestation"],
            }),
        )),
        ["v2", "health", "live"] if is_get => {
            Ok(json(StatusCode::OK, &serde_json::json!({"live": true})))
        }
        ["v2", "health", "ready"] if is_get => {
            let ready = enclave.is_ready();
            Ok(json(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!({ "ready": ready }),
            ))
        }
        ["v2", "attestation"] if method == Method::POST => {
            control(ctx, crate::governance::Control::Attestation)?;
            attestation(ctx, req).await
        }
        ["v2", "models", name] if is_get => metadata(slot(enclave, name)?),
        ["v2", "models", name, "versions", MODEL_VERSION] if is_get => {
            metadata(slot(enclave, name)?)
        }
        ["v2", "models", name, "ready"] if is_get => {
            let ready = slot(enclave, name)?.is_loaded();
            Ok(json(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!({ "name": name, "ready": ready }),
            ))
        }
        ["v2", "models", name, "infer"] if method == Method::POST => {
            let slot = slot(enclave, name)?;
            governed_infer(ctx, slot, req).await
        }
        ["v2", "models", name, "versions", MODEL_VERSION, "infer"] if method == Method::POST => {
            let slot = slot(enclave, name)?;
            governed_infer(ctx, slot, req).await
        }
        ["v1", "models"] if is_get => Ok(chat::models(enclave)),
        ["v1", "chat", "completions"] if method == Method::POST => {
            // OpenAI's error shape on OpenAI's paths.
            Ok(chat::governed_chat(ctx, req)
                .await
                .unwrap_or_else(|e| chat::error_response(&e)))
        }
        ["v1", "models"] => Err(method_not_allowed("GET, HEAD")),
        ["v1", "chat", "completions"] => Ok(chat::error_response(&method_not_allowed("POST"))),
        ["metrics"] if is_get => {
            control(ctx, crate::governance::Control::Metrics)?;
            Ok(metrics_response(enclave))
        }
        ["v2"]
        | ["v2", "health", "live" | "ready"]
        | ["v2", "models", _]
        | ["v2", "models", _, "ready"] => Err(method_not_allowed("GET, HEAD")),
        ["v2", "attestation"] | ["v2", "models", _, "infer"] => Err(method_not_allowed("POST")),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")),
    }
}

/// A control endpoint's budget (`attestations_per_minute`, `metrics_per_minute`): admitted, or 429 with
/// `Retry-After`; counted in the audit log's tallies either way.
fn control(ctx: &Connection, control: crate::governance::Control) -> Result<(), ApiError> {
    let governance = ctx.enclave.governance();
    let admitted = governance.budgets().admit_control(&ctx.client, control);
    governance.tally(&ctx.client, control.endpoint(), admitted.is_ok());
    admitted.map_err(|over| infer::over_budget(&over))
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed (allowed: {allow})"),
    )
}

fn slot<'a>(enclave: &'a Enclave, name: &str) -> Result<&'a ModelSlot, ApiError> {
    enclave.model(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model `{}` is not served here", truncate(name, 64)),
        )
    })
}

fn loaded(slot: &ModelSlot) -> Result<Arc<LoadedModel>, ApiError> {
    if slot.llm().is_some() {
        return Err(ApiError::bad_request(format!(
            "model `{}` is an LLM: use POST /v1/chat/completions",
            slot.name()
        )));
    }
    slot.model().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model `{}` is not ready", slot.name()),
        )
    })
}

// ---- attestation ---------------------------------------------------------------------------------------

async fn attestation(ctx: &Connection, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = read_body(req, MAX_ATTESTATION_BODY).await?;
    let to_attest = EnclaveAttestation::receive(&body, ctx.exporter)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let enclave = &ctx.enclave;
    // Queued, not refused: a burst of new sessions (64 clients connecting at once) waits its turn for the
    // firmware, in arrival order, up to the queue deadline. Waiting costs a connection (bounded by
    // MAX_CONNECTIONS) and a body of at most MAX_ATTESTATION_BODY bytes.
    let wait = Duration::from_secs(enclave.limits().max_queue_wait_secs);
    let Ok(Ok(_permit)) = timeout(
        wait,
        Arc::clone(enclave.attestation_permits()).acquire_owned(),
    )
    .await
    else {
        return Err(busy(&format!(
            "too many concurrent attestation requests (no turn within {} s)",
            wait.as_secs()
        )));
    };
    let mut claims = firmware::claims(
        to_attest.nonce(),
        to_attest.exporter(),
        None,
        enclave.model_digests(),
        enclave.config_digest(),
    );
    claims.model_signers = enclave.model_signers();
    let evidence = enclave.attester().evidence(claims).await.map_err(|e| {
        tracing::error!("attestation failed: {}", error_chain(&e));
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "attestation failed")
    })?;
    let answer = to_attest.answer(&evidence).map_err(|e| {
        tracing::error!("attestation failed: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "attestation failed")
    })?;
    // Receipts of this connection point to the evidence it was last served.
    if let Ok(mut d) = ctx.evidence_digest.lock() {
        *d = Some(cloister_governance::evidence_digest(&answer.body));
    }
    enclave.metrics().attestation();
    Ok(bytes_response(
        StatusCode::OK,
        answer.content_type,
        answer.body,
        None,
    ))
}

// ---- metadata ------------------------------------------------------------------------------------------

fn metadata(slot: &ModelSlot) -> Result<Resp, ApiError> {
    if slot.llm().is_some() {
        // An LLM has no tensors to describe; its metadata still names its digest, which is how a client checks
        // that the model it is about to send a conversation to is one the evidence attests.
        return Ok(json(
            StatusCode::OK,
            &ModelMetadataResponse {
                name: slot.name().to_owned(),
                versions: vec![MODEL_VERSION.to_owned()],
                platform: LLM_PLATFORM.to_owned(),
                inputs: vec![],
                outputs: vec![],
                digest: *slot.digest(),
            },
        ));
    }
    let model = loaded(slot)?;
    let meta = model.metadata();
    let convert = |specs: &[TensorSpec]| -> Vec<MetadataTensor> {
        specs
            .iter()
            .map(|s| MetadataTensor {
                name: s.name.clone(),
                datatype: s.datatype,
                shape: s.shape.clone(),
            })
            .collect()
    };
    Ok(json(
        StatusCode::OK,
        &ModelMetadataResponse {
            name: slot.name().to_owned(),
            versions: vec![MODEL_VERSION.to_owned()],
            platform: meta.platform.to_owned(),
            inputs: convert(&meta.inputs),
            outputs: convert(&meta.outputs),
            digest: *slot.digest(),
        },
    ))
}

mod chat;
mod infer;
use infer::governed_infer;

/// Checks a `POST /v1/chat/completions` body as the route does, before any model is touched: `Ok` with
/// the bounded `max_tokens` it would generate at most, or the HTTP status and message of the refusal.
/// For the `chat_request` fuzz target (a client's bytes, untrusted by the enclave).
pub fn check_chat_request(body: &[u8]) -> Result<usize, (u16, String)> {
    chat::check_request(body)
}

// ---- HTTP plumbing -------------------------------------------------------------------------------------

/// Reads a body of at most `max` bytes (413 above, decided from Content-Length when there is one).
async fn read_body(req: Request<Incoming>, max: u64) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collected = timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect())
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "request body timed out"))?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::bad_request("cannot read the request body")),
    }
}

fn busy(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(bytes) => bytes_response(status, JSON_CONTENT_TYPE, bytes, None),
        Err(_) => bytes_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            JSON_CONTENT_TYPE,
            br#"{"error":"response does not encode"}"#.to_vec(),
            None,
        ),
    }
}

fn error_response(e: &ApiError) -> Resp {
    let mut resp = json(
        e.status,
        &ErrorResponse {
            error: e.message.clone(),
        },
    );
    match e.status {
        StatusCode::SERVICE_UNAVAILABLE => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        StatusCode::TOO_MANY_REQUESTS => {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(e.retry_after.unwrap_or(1)));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = if e.message.contains("POST") {
                "POST"
            } else {
                "GET, HEAD"
            };
            resp.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        _ => {}
    }
    resp
}

fn bytes_response(
    status: StatusCode,
    content_type: &'static str,
    bytes: impl Into<Bytes>,
    json_len: Option<usize>,
) -> Resp {
    let mut resp = Response::new(Full::new(bytes.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(n) = json_len {
        resp.headers_mut()
            .insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(n));
    }
    resp
}

/// `GET /metrics`: counts and timings (`crate::metrics`).
fn metrics_response(enclave: &Enclave) -> Resp {
    enclave
        .metrics()
        .set_ready(enclave.models().iter().filter(|m| m.is_loaded()).count());
    bytes_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        enclave.metrics().render(),
        None,
    )
}

/// A peer-supplied string, cut for messages and logs.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

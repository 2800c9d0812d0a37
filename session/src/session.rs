//! An attested session with an enclave: TLS 1.3, then evidence bound to this connection, verified against
//! the client's policy, and only then inference on the same connection.
//!
//! Order of operations (nothing but the nonce leaves the client before step 4):
//! 1. TCP + TLS 1.3 to the endpoint (usually the untrusted host's relay); the server certificate is not
//!    checked against a CA (`cloister_proto::session_attestation::client_tls_config`).
//! 2. Compute this connection's exporter (RFC 8446 §7.5, label `EXPERIMENTAL-cloister-attestation`).
//! 3. `POST /v2/attestation` with a fresh nonce; verify the evidence: AMD chain, signature, policy
//!    (measurement, TCB, root, model digests), REPORT_DATA = hash of the claims, our nonce, our exporter.
//!    The steps and checks are the sans-IO machine `cloister_proto::session_attestation`; this module
//!    does the I/O, and a session holds the machine's proof ([`Attested`]).
//! 4. Before using a model, check that its digest (from the enclave's metadata, on this attested
//!    connection) is among the attested claims.

use std::time::Duration;

use bytes::Bytes;
use cloister_attestation::evidence::{VerifiedEvidence, MAX_EVIDENCE_LEN};
use cloister_attestation::policy::NoWorkloadPin;
use cloister_attestation::Policy;
use cloister_collateral::Error as InputError;
use cloister_kserve::{
    InferRequest, InferResponse, ModelMetadataResponse, INFERENCE_HEADER_CONTENT_LENGTH,
    JSON_CONTENT_TYPE,
};
use cloister_proto::session_attestation::{Attested, ClientAttestation, ATTESTATION_PATH};
use cloister_proto::tls;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::SessionConfig;

/// Largest response body accepted from an enclave (inference outputs included).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How long connecting and the attestation exchange may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The endpoint could not be reached.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// An HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The exchange took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The enclave answered with an error status.
    #[error("enclave answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// Its error message.
        message: String,
    },
    /// The response does not decode.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The evidence was rejected: nothing was sent.
    #[error("attestation rejected: {0}")]
    Attestation(#[from] cloister_attestation::Error),
    /// The model the client wants to use is not among the attested claims.
    #[error("model {model:?} has digest {digest}, which the enclave's evidence does not attest (attested: {attested}); refusing to send input")]
    ModelNotAttested {
        /// Model name.
        model: String,
        /// Digest the enclave reports for it.
        digest: String,
        /// Digests in the claims.
        attested: String,
    },
    /// A local input could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The policy pins no workload identity (and does not say `allow_any_workload = true`): nothing is sent.
    #[error("policy: {0}")]
    NoWorkloadPin(#[from] NoWorkloadPin),
    /// The policy requires a release log, and its proofs do not verify, or do not include the attested
    /// measurement or model: nothing is sent.
    #[error("release log: {0}")]
    ReleaseLog(String),
    /// The evidence carries no VCEK and it could not be had from the collateral sources.
    #[error("the evidence carries no VCEK: {0}")]
    Collateral(String),
}

impl From<cloister_proto::Error> for SessionError {
    /// The attestation machine's reasons, in the session's terms.
    fn from(e: cloister_proto::Error) -> Self {
        match e {
            cloister_proto::Error::Evidence(e) => SessionError::Attestation(*e),
            cloister_proto::Error::EnclaveStatus { status, message } => SessionError::Status {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                message,
            },
            cloister_proto::Error::Rng => SessionError::Tls("system RNG failed".into()),
            other => SessionError::Malformed(other.to_string()),
        }
    }
}

/// A TLS session with an enclave whose evidence, bound to this very connection, satisfied the policy.
pub struct AttestedSession {
    sender: SendRequest<Full<Bytes>>,
    /// The proof: verified evidence bound to this connection (and the bytes receipts point to).
    attested: Attested,
    policy: Policy,
    /// The release log's proven entries, when the policy requires the log.
    releases: Option<cloister_provenance::release::VerifiedReleases>,
    /// The receipt of the last inference.
    last_receipt: Option<cloister_governance::Receipt>,
}

impl std::fmt::Debug for AttestedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedSession")
            .field("evidence", self.attested.evidence())
            .finish_non_exhaustive()
    }
}

async fn read_body(
    response: hyper::Response<hyper::body::Incoming>,
    limit: usize,
) -> Result<(StatusCode, Bytes), SessionError> {
    let status = response.status();
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| SessionError::Http(format!("reading body: {e}")))?
        .to_bytes();
    Ok((status, body))
}

fn status_error(status: StatusCode, body: &[u8]) -> SessionError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    SessionError::Status { status, message }
}

impl AttestedSession {
    /// Connects to `endpoint` (`HOST:PORT`), attests the enclave and verifies it under `config`.
    pub async fn connect(endpoint: &str, config: &SessionConfig) -> Result<Self, SessionError> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(endpoint, config))
            .await
            .map_err(|_| SessionError::Timeout("connecting and attesting"))?
    }

    /// The I/O around [`cloister_proto::session_attestation`]: TCP, TLS, the exporter, one HTTP exchange,
    /// a collateral fetch when the evidence lacks its VCEK; the machine decides what is sent and accepted.
    async fn connect_inner(endpoint: &str, config: &SessionConfig) -> Result<Self, SessionError> {
        let tcp = TcpStream::connect(endpoint)
            .await
            .map_err(|source| SessionError::Connect {
                endpoint: endpoint.to_string(),
                source,
            })?;
        // Latency: requests are small and interactive.
        tcp.set_nodelay(true).ok();
        let server_name = rustls::pki_types::ServerName::try_from("cloister-enclave")
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let tls = TlsConnector::from(config.tls())
            .connect(server_name, tcp)
            .await
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let exporter = tls::exporter(tls.get_ref().1)
            .map_err(|e| SessionError::Tls(format!("exporter: {e}")))?;

        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| SessionError::Http(e.to_string()))?;
        tokio::spawn(async move {
            // The connection task ends when the session is dropped or the peer closes.
            let _ = connection.await;
        });

        let (attestation, body) = ClientAttestation::start(&SystemRandom::new(), exporter)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(ATTESTATION_PATH)
            .header("host", "cloister-enclave")
            .header("content-type", JSON_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SessionError::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SessionError::Http(e.to_string()))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = read_body(response, MAX_EVIDENCE_LEN).await?;
        let mut received =
            attestation.receive(status.as_u16(), content_type.as_deref(), body.to_vec())?;
        // Evidence carries its VCEK; only when it does not, and the user said where from, is it fetched
        // (and verified, as everything in the chain is).
        if let (Some(report), Some(collateral)) = (received.missing_vcek()?, config.collateral()) {
            let report = report.to_vec();
            collateral
                .complete(&report, received.chain_mut())
                .await
                .map_err(|e| SessionError::Collateral(e.to_string()))?;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let attested = received.verify(config.policy(), &config.verify_options(now))?;
        // A policy that requires the release log: the attested code must be a logged release.
        if let Some(releases) = config.releases() {
            let measurement = attested.evidence().report().report().measurement;
            releases
                .require_enclave(&measurement)
                .map_err(|e| SessionError::ReleaseLog(e.to_string()))?;
        }
        Ok(AttestedSession {
            sender,
            attested,
            releases: config.releases().cloned(),
            policy: config.policy().clone(),
            last_receipt: None,
        })
    }

    /// The proof this session's peer was attested: its verified evidence, bound to this connection.
    pub fn attested(&self) -> &Attested {
        &self.attested
    }

    /// The verified evidence of this session.
    pub fn evidence(&self) -> &VerifiedEvidence {
        self.attested.evidence()
    }

    /// The evidence as it travelled (postcard bytes).
    pub fn evidence_bytes(&self) -> &[u8] {
        self.attested.evidence_bytes()
    }

    /// The receipt of the last inference with the evidence it points to, for `cloister receipt verify`.
    pub fn receipt_file(&self) -> Option<cloister_governance::ReceiptFile> {
        self.last_receipt
            .clone()
            .map(|receipt| cloister_governance::ReceiptFile {
                receipt,
                evidence: self.attested.evidence_bytes().to_vec(),
            })
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply, SessionError> {
        let response = self.send_streaming(method, path, headers, body).await?;
        let json_len = match response.headers().get(INFERENCE_HEADER_CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or_else(|| {
                        SessionError::Malformed(format!("bad {INFERENCE_HEADER_CONTENT_LENGTH}"))
                    })?,
            ),
        };
        let receipt = response
            .headers()
            .get(cloister_governance::receipt::RECEIPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = read_body(response, MAX_RESPONSE_BYTES).await?;
        Ok(Reply {
            status,
            body,
            json_len,
            receipt,
            content_type,
        })
    }

    /// Fetches a model's metadata and checks that its digest is attested (in the claims and allowed by the
    /// policy). Call before sending any input for the model; [`AttestedSession::infer`] does.
    pub async fn attested_model(
        &mut self,
        name: &str,
    ) -> Result<ModelMetadataResponse, SessionError> {
        let path = model_path(name, "")?;
        let reply = self.exchange(Method::GET, &path, &[], Bytes::new()).await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        let meta: ModelMetadataResponse = serde_json::from_slice(&reply.body)
            .map_err(|e| SessionError::Malformed(format!("model metadata: {e}")))?;
        let claims = self.attested.evidence().claims();
        let digest = *meta.digest.as_bytes();
        let attested = claims
            .model_digests
            .iter()
            .map(|d| format!("sha384:{}", hex::encode(d.0)))
            .collect::<Vec<_>>()
            .join(", ");
        let signer = claims.signer_of(&digest).map(|s| &s.signer);
        let ok = claims.model_digests.iter().any(|c| c.0 == digest)
            && self.policy.check_model(&digest, signer).is_ok();
        if !ok {
            return Err(SessionError::ModelNotAttested {
                model: name.to_string(),
                digest: meta.digest.to_string(),
                attested,
            });
        }
        // The model, with the signer the enclave attests for it, must be a logged release too.
        if let Some(releases) = &self.releases {
            releases
                .require_model(&digest, signer)
                .map_err(|e| SessionError::ReleaseLog(e.to_string()))?;
        }
        Ok(meta)
    }

    /// Runs inference, after checking the model is attested. With `binary`, inputs travel with the
    /// binary tensor extension (raw little-endian bytes after a JSON header) and outputs are asked for
    /// the same way; otherwise everything is JSON.
    pub async fn infer(
        &mut self,
        model: &str,
        request: &InferRequest,
        binary: bool,
    ) -> Result<InferResponse, SessionError> {
        self.attested_model(model).await?;
        self.infer_attested(model, request, binary).await
    }

    /// [`AttestedSession::infer`] without re-fetching the metadata: only for a model this session already
    /// checked with [`AttestedSession::attested_model`] (benchmarks and repeated requests).
    pub async fn infer_attested(
        &mut self,
        model: &str,
        request: &InferRequest,
        binary: bool,
    ) -> Result<InferResponse, SessionError> {
        let mut request = request.clone();
        if binary {
            let mut params = request.parameters.take().unwrap_or_default();
            params.insert(
                cloister_kserve::BINARY_DATA_OUTPUT,
                cloister_kserve::Parameter::Bool(true),
            );
            request.parameters = Some(params);
        }
        let encoded = request
            .encode(binary)
            .map_err(|e| SessionError::Malformed(format!("request: {e}")))?;
        let mut headers = vec![("content-type", encoded.content_type().to_string())];
        if let Some(len) = encoded.json_len {
            headers.push((INFERENCE_HEADER_CONTENT_LENGTH, len.to_string()));
        }
        let path = model_path(model, "/infer")?;
        let reply = self
            .exchange(Method::POST, &path, &headers, Bytes::from(encoded.bytes))
            .await?;
        if reply.status != StatusCode::OK {
            return Err(status_error(reply.status, &reply.body));
        }
        self.last_receipt = match reply.receipt.as_deref() {
            Some(h) => Some(
                cloister_governance::Receipt::from_header(h)
                    .map_err(|e| SessionError::Malformed(e.to_string()))?,
            ),
            None => None,
        };
        InferResponse::decode(&reply.body, reply.json_len)
            .map_err(|e| SessionError::Malformed(format!("inference response: {e}")))
    }

    /// Sends a request on the attested connection and returns the enclave's answer unchanged (the proxy).
    /// For an inference, check the model first with [`AttestedSession::attested_model`].
    pub async fn forward(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply, SessionError> {
        self.exchange(method, path, headers, body).await
    }

    /// Sends a request on the attested connection and returns the response with its body still arriving
    /// (server-sent events of `/v1/chat/completions`). Nothing is checked beyond what
    /// [`AttestedSession::connect`] verified: call [`AttestedSession::attested_model`] first. The session can
    /// send its next request once this body has been read to its end.
    pub async fn send_streaming(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SessionError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cloister-enclave");
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| SessionError::Http(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| SessionError::Http(e.to_string()))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| SessionError::Http(e.to_string()))
    }

    /// Sends a raw request on the attested connection (tests, benchmarks, endpoints without a typed
    /// helper). Nothing is checked beyond what [`AttestedSession::connect`] already verified: use
    /// [`AttestedSession::attested_model`] before sending inputs for a model.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), SessionError> {
        let headers: Vec<(&str, String)> = content_type
            .map(|ct| vec![("content-type", ct.to_string())])
            .unwrap_or_default();
        let reply = self.exchange(method, path, &headers, body).await?;
        Ok((reply.status, reply.body))
    }

    /// `GET /v2/health/ready` on this session: whether the enclave has its model loaded.
    pub async fn ready(&mut self) -> Result<bool, SessionError> {
        let reply = self
            .exchange(Method::GET, "/v2/health/ready", &[], Bytes::new())
            .await?;
        Ok(reply.status == StatusCode::OK)
    }
}

/// An answer of the enclave as it came: status, the headers that carry meaning, body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The body, unchanged.
    pub body: Bytes,
    /// `Inference-Header-Content-Length` (binary tensor extension).
    pub json_len: Option<usize>,
    /// The receipt header.
    pub receipt: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

/// Model names go into a URL path: unreserved characters only, and not a dot segment (`..` would name
/// another path once normalised).
pub(crate) fn is_valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A model's URL path; an invalid name is refused rather than silently changed.
fn model_path(name: &str, suffix: &str) -> Result<String, SessionError> {
    if !is_valid_model_name(name) {
        return Err(SessionError::Malformed(format!(
            "model name {name:?}: only letters, digits, '-', '_' and '.' are allowed (not `.` or `..`)"
        )));
    }
    Ok(format!("/v2/models/{name}{suffix}"))
}

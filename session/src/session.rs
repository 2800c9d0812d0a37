//! An attested session with an enclave: TLS 1.3, then evidence bound to this connection, verified against
//! the client's policy, and only then inference on the same connection.
//!
//! Order of operations (nothing but the nonce leaves the client before step 4):
//! 1. TCP + TLS 1.3 to the endpoint (usually the untrusted host's relay); the server certificate is not
//!    checked against a CA (see `cloister_proto::tls::danger::AttestedServer`).
//! 2. Compute this connection's exporter (RFC 8446 §7.5, label `EXPERIMENTAL-cloister-attestation`).
//! 3. `POST /v2/attestation` with a fresh nonce; verify the evidence: AMD chain, signature, policy
//!    (measurement, TCB, root, model digests), REPORT_DATA = hash of the claims, our nonce, our exporter.
//! 4. Before using a model, check that its digest (from the enclave's metadata, on this attested
//!    connection) is among the attested claims.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloister_attestation::evidence::{
    verify_evidence, Evidence, ExpectedSession, VerifiedEvidence, MAX_EVIDENCE_LEN,
};
use cloister_attestation::policy::NoWorkloadPin;
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_kserve::{
    AttestationRequest, InferRequest, InferResponse, ModelMetadataResponse, EVIDENCE_CONTENT_TYPE,
    INFERENCE_HEADER_CONTENT_LENGTH, JSON_CONTENT_TYPE,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use cloister_collateral::files as chain_files;
use cloister_collateral::{Collateral, Error as InputError};
use cloister_proto::tls::{self, danger::AttestedServer};

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
    /// The evidence carries no VCEK and it could not be had from the collateral sources.
    #[error("the evidence carries no VCEK: {0}")]
    Collateral(String),
}

/// What the client trusts: its policy and, for development, a simulated root.
#[derive(Clone)]
pub struct SessionPolicy {
    /// The verification policy (measurement, TCB, model digests, ...).
    pub policy: Policy,
    /// A simulated ARK to trust (from the policy's `simulated_root`), or none.
    pub simulated_root: Option<AmdCertificate>,
    /// ARK-signed CRLs to apply (from the policy's `crl` and `crls`).
    pub crls: Vec<AmdCrl>,
    /// Verification instant (Unix seconds); `None` means now.
    pub at_unix: Option<i64>,
    /// Where a VCEK the evidence does not carry is fetched from (`--kds-url`, `--cache`, `--collateral`);
    /// `None`: evidence without its VCEK is rejected.
    pub collateral: Option<Arc<Collateral>>,
    /// A TLS client certificate and key to present (`[clients]` in the enclave's configuration).
    pub client_identity: Option<Arc<ClientIdentity>>,
}

/// A TLS client certificate chain and its private key.
pub struct ClientIdentity {
    /// The chain, leaf first.
    pub certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The key.
    pub key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.certificates.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Reads a PEM certificate (chain) and a PEM private key.
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject;
        let certificates = rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if certificates.is_empty() {
            return Err(format!("{}: no certificate", cert.display()));
        }
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(ClientIdentity { certificates, key })
    }
}

impl SessionPolicy {
    /// Loads a policy file; the `simulated_root`, `crl` and `crls` it names (relative to the file) are
    /// loaded too.
    pub fn from_file(path: &std::path::Path) -> Result<Self, InputError> {
        let policy = chain_files::read_policy(path)?;
        let (simulated_root, crls) = chain_files::read_policy_files(&policy)?;
        Ok(SessionPolicy {
            policy,
            simulated_root,
            crls,
            at_unix: None,
            collateral: None,
            client_identity: None,
        })
    }
}

/// A TLS session with an enclave whose evidence, bound to this very connection, satisfied the policy.
pub struct AttestedSession {
    sender: SendRequest<Full<Bytes>>,
    evidence: VerifiedEvidence,
    /// The evidence as it travelled (what receipts point to).
    evidence_bytes: Bytes,
    policy: Policy,
    /// The receipt of the last inference.
    last_receipt: Option<cloister_governance::Receipt>,
}

impl std::fmt::Debug for AttestedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedSession")
            .field("evidence", &self.evidence)
            .finish_non_exhaustive()
    }
}

fn tls_config(identity: Option<&ClientIdentity>) -> Result<rustls::ClientConfig, SessionError> {
    // The enclave's certificate is ephemeral: it is authenticated by the evidence bound to this connection's
    // exporter, verified before anything is sent (`AttestedServer`'s documentation).
    let builder = tls::client_builder()
        .map_err(|e| SessionError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AttestedServer::new(&tls::provider())));
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => builder
            .with_client_auth_cert(id.certificates.clone(), id.key.clone_key())
            .map_err(|e| SessionError::Tls(format!("client certificate: {e}"))),
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
    /// Connects to `endpoint` (`HOST:PORT`), attests the enclave and verifies it against `trust`.
    ///
    /// A policy that pins no workload identity is refused before connecting ([`SessionError::NoWorkloadPin`]):
    /// inputs would go to whatever code runs on a genuine AMD platform, unless the policy says
    /// `allow_any_workload = true`.
    pub async fn connect(endpoint: &str, trust: &SessionPolicy) -> Result<Self, SessionError> {
        trust.policy.require_workload_pin()?;
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(endpoint, trust))
            .await
            .map_err(|_| SessionError::Timeout("connecting and attesting"))?
    }

    async fn connect_inner(endpoint: &str, trust: &SessionPolicy) -> Result<Self, SessionError> {
        let tcp = TcpStream::connect(endpoint)
            .await
            .map_err(|source| SessionError::Connect {
                endpoint: endpoint.to_string(),
                source,
            })?;
        // Latency: requests are small and interactive.
        tcp.set_nodelay(true).ok();
        let connector = TlsConnector::from(Arc::new(tls_config(trust.client_identity.as_deref())?));
        let server_name = rustls::pki_types::ServerName::try_from("cloister-enclave")
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let tls = connector
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

        let mut nonce = [0u8; 32];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SessionError::Tls("system RNG failed".into()))?;
        let body = serde_json::to_vec(&AttestationRequest { nonce })
            .map_err(|e| SessionError::Malformed(e.to_string()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v2/attestation")
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
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        if content_type.as_deref() != Some(EVIDENCE_CONTENT_TYPE) {
            return Err(SessionError::Malformed(format!(
                "attestation response has content type {content_type:?}, expected {EVIDENCE_CONTENT_TYPE}"
            )));
        }
        let mut evidence = Evidence::from_bytes(&body)?;
        // Evidence carries its VCEK; only when it does not, and the user said where from, is it fetched
        // (and verified, as everything in the chain is).
        if let Some(collateral) = &trust.collateral {
            if evidence.cert_chain.leaf.is_empty() {
                let snp = evidence.snp_report()?.to_vec();
                collateral
                    .complete(&snp, &mut evidence.cert_chain)
                    .await
                    .map_err(|e| SessionError::Collateral(e.to_string()))?;
            }
        }
        let at_unix = trust
            .at_unix
            .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
        let options = VerifyOptions {
            at_unix,
            crls: &trust.crls,
            simulated_root: trust.simulated_root.as_ref(),
        };
        let verified = verify_evidence(
            &evidence,
            &trust.policy,
            &options,
            &ExpectedSession {
                nonce: &nonce,
                tls_exporter: &exporter,
            },
        )?;
        Ok(AttestedSession {
            sender,
            evidence: verified,
            evidence_bytes: body,
            policy: trust.policy.clone(),
            last_receipt: None,
        })
    }

    /// The verified evidence of this session.
    pub fn evidence(&self) -> &VerifiedEvidence {
        &self.evidence
    }

    /// The evidence as it travelled (postcard bytes).
    pub fn evidence_bytes(&self) -> &[u8] {
        &self.evidence_bytes
    }

    /// The receipt of the last inference with the evidence it points to, for `cloister receipt verify`.
    pub fn receipt_file(&self) -> Option<cloister_governance::ReceiptFile> {
        self.last_receipt
            .clone()
            .map(|receipt| cloister_governance::ReceiptFile {
                receipt,
                evidence: self.evidence_bytes.to_vec(),
            })
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Reply, SessionError> {
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
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| SessionError::Http(e.to_string()))?;
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
        let claims = self.evidence.claims();
        let digest = *meta.digest.as_bytes();
        let attested = claims
            .model_digests
            .iter()
            .map(|d| format!("sha384:{}", hex::encode(d.0)))
            .collect::<Vec<_>>()
            .join(", ");
        let ok = claims.model_digests.iter().any(|c| c.0 == digest)
            && self.policy.check_model_digest(&digest).is_ok();
        if !ok {
            return Err(SessionError::ModelNotAttested {
                model: name.to_string(),
                digest: meta.digest.to_string(),
                attested,
            });
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

//! Key release, enclave side (`docs/architecture.md`, "Key release").
//!
//! ```text
//! TLS 1.3 (ring) to key_broker.address, broker certificate pinned by SHA-256 (`cloister_proto::tls::danger::PinnedServer`)
//! exporter    = TLS-Exporter("EXPERIMENTAL-cloister-attestation", no context, 32)   // this connection's
//! enclave → broker  KeyRequest { version: 2, model_digest, state: None | Open | Commit }
//! broker  → enclave Challenge  { nonce }
//! enclave → broker  Attest     { evidence(claims { nonce, exporter, X25519(fresh), [model_digest],
//!                                                  config_digest }) }
//! broker  → enclave Granted    { broker_public, wrapped_key, anchor }  → unwrap → ModelKey
//!                 | Committed  { anchor }                             (a state commit: no key)
//!                 | Refused    { code }                        → KeyReleaseError::Refused
//! ```
//!
//! The X25519 private key is ephemeral: generated for one exchange and consumed by the unwrap. The model
//! key comes back as a [`ModelKey`] (zeroized on drop). What the broker sends is untrusted until the
//! unwrap authenticates it; every read is bounded in size (frames) and in time.

use std::sync::Arc;
use std::time::Duration;

use cloister_attestation::evidence::{EnclaveKey, Sha384};
use cloister_models::{ModelDigest, ModelKey};
use cloister_proto::key_release::{
    EnclaveEvent, EnclaveExchange, RefusalCode, StateAnchor, StateRequest,
};
use ring::rand::SystemRandom;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::config::KeyBrokerConfig;
use crate::firmware::{self, Attester, FirmwareError};
use cloister_proto::tls::{self, danger::PinnedServer};

/// How long one step (connect, handshake, one message) may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a key release failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyReleaseError {
    /// TCP connection to the broker failed.
    #[error("cannot connect to the key broker at {address}")]
    Connect {
        /// `host:port`.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (including a broker certificate that is not the pinned one).
    #[error("TLS handshake with the key broker failed (is its certificate the pinned one?)")]
    Handshake(#[source] std::io::Error),
    /// The TLS configuration could not be built.
    #[error("TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    /// The exporter could not be computed.
    #[error("cannot compute the TLS exporter of the key-broker connection")]
    Exporter(#[source] rustls::Error),
    /// A step took longer than [`STEP_TIMEOUT`].
    #[error("the key broker did not answer in time ({0})")]
    Timeout(&'static str),
    /// The wire protocol failed (I/O, malformed or unexpected message).
    #[error("key-release protocol")]
    Protocol(#[source] cloister_proto::Error),
    /// The broker sent a message that is not valid at this step.
    #[error("the key broker sent an unexpected message (expected {expected})")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
    },
    /// Evidence could not be produced.
    #[error("cannot produce evidence")]
    Firmware(#[from] FirmwareError),
    /// The broker refused to release the key.
    #[error("the key broker refused to release the key: {}", refusal_text(*.0))]
    Refused(RefusalCode),
    /// The key exchange's cryptography failed: the enclave's key pair, the agreement, or the unwrap (wrong
    /// binding or tampering); the source says which.
    #[error("the key release's key exchange failed")]
    Unwrap(#[source] cloister_proto::Error),
    /// The host part of the broker address is not a valid TLS server name.
    #[error("key_broker.address has no valid host name")]
    ServerName,
}

impl KeyReleaseError {
    /// Whether the broker answered with a refusal (as opposed to a failure to talk to it).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

/// A human description of a refusal code (the broker keeps the detailed reason in its audit log).
pub fn refusal_text(code: RefusalCode) -> &'static str {
    match code {
        RefusalCode::BadRequest => "bad request (malformed or unsupported protocol version)",
        RefusalCode::UnknownModel => "the broker holds no key for this model digest",
        RefusalCode::EvidenceRejected => {
            "evidence rejected (chain, signature or binding did not verify)"
        }
        RefusalCode::PolicyRejected => "the model owner's policy does not allow this enclave",
        RefusalCode::Replay => "nonce replayed or unknown",
        RefusalCode::Internal => "internal error at the broker",
        RefusalCode::RateLimited => {
            "too many releases of this model's key in the broker's hour (releases_per_model_per_hour)"
        }
        RefusalCode::StateConflict => {
            "the state commit is not the broker's next version (another instance uses this label?)"
        }
    }
}

/// A key-broker client for one pinned broker.
#[derive(Clone)]
pub struct BrokerClient {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl BrokerClient {
    /// A client for the broker of the measured configuration: TLS 1.3 only, ring provider, the broker's
    /// certificate pinned.
    pub fn new(config: &KeyBrokerConfig) -> Result<Self, KeyReleaseError> {
        let tls = tls::client_builder()
            .map_err(KeyReleaseError::TlsConfig)?
            // The broker is authenticated by its certificate's hash in the measured configuration
            // (`PinnedServer`'s documentation).
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServer::new(
                config.certificate_sha256,
                &tls::provider(),
            )))
            .with_no_client_auth();
        let server_name =
            ServerName::try_from(config.host.clone()).map_err(|_| KeyReleaseError::ServerName)?;
        Ok(BrokerClient {
            address: match config.host.contains(':') {
                true => format!("[{}]:{}", config.host, config.port),
                false => format!("{}:{}", config.host, config.port),
            },
            server_name,
            connector: TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Runs one key release for `model_digest`. `config_digest` goes into the claims.
    pub async fn request_key(
        &self,
        attester: impl Into<Attester>,
        model_digest: &ModelDigest,
        config_digest: Sha384,
    ) -> Result<ModelKey, KeyReleaseError> {
        match self
            .exchange(attester.into(), model_digest, config_digest, None)
            .await?
        {
            Answer::Released { key, .. } => Ok(key),
            Answer::Committed(_) => Err(KeyReleaseError::Unexpected {
                expected: "Granted or Refused",
            }),
        }
    }

    /// Runs one attested exchange for `model_digest`, with a durable-state operation (`Open`: the key and
    /// the instance's anchor; `Commit`: the new anchor, no key). The protocol itself is
    /// `cloister_proto::key_release::EnclaveExchange` (sans-IO); this drives it over the pinned TLS
    /// connection, with timeouts, and asks the firmware for the evidence.
    pub async fn exchange(
        &self,
        attester: Attester,
        model_digest: &ModelDigest,
        config_digest: Sha384,
        state: Option<StateRequest>,
    ) -> Result<Answer, KeyReleaseError> {
        let tcp = timeout(STEP_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| KeyReleaseError::Timeout("connect"))?
            .map_err(|source| KeyReleaseError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = timeout(
            STEP_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| KeyReleaseError::Timeout("TLS handshake"))?
        .map_err(KeyReleaseError::Handshake)?;

        // RFC 8446 §7.5 exporter of this connection; the broker computes the same on its side and checks
        // that the evidence carries it (a relay terminating TLS would see another one).
        let exporter = tls::exporter(tls.get_ref().1).map_err(KeyReleaseError::Exporter)?;

        let digest = Sha384(*model_digest.as_bytes());
        let rng = SystemRandom::new();
        let (mut exchange, first) =
            EnclaveExchange::start(digest, state).map_err(KeyReleaseError::Protocol)?;
        send(&mut tls, &first).await?;
        let mut buf = vec![0u8; 16 * 1024];
        let released = loop {
            let n = timeout(STEP_TIMEOUT, tls.read(&mut buf))
                .await
                .map_err(|_| KeyReleaseError::Timeout("the broker's answer"))?
                .map_err(|e| KeyReleaseError::Protocol(e.into()))?;
            if n == 0 {
                return Err(KeyReleaseError::Protocol(
                    cloister_proto::Error::UnexpectedEof,
                ));
            }
            match exchange.receive(&buf[..n], &rng) {
                Ok(None) => {}
                Ok(Some(EnclaveEvent::NeedEvidence {
                    nonce,
                    enclave_public,
                })) => {
                    let claims = firmware::claims(
                        nonce,
                        exporter,
                        Some(EnclaveKey::X25519(enclave_public)),
                        vec![digest],
                        config_digest,
                    );
                    let evidence = attester.evidence(claims).await?;
                    let attest = exchange
                        .attest(evidence)
                        .map_err(KeyReleaseError::Protocol)?;
                    send(&mut tls, &attest).await?;
                }
                Ok(Some(EnclaveEvent::Released { key, anchor })) => {
                    break Ok(Answer::Released { key, anchor })
                }
                Ok(Some(EnclaveEvent::Committed(anchor))) => break Ok(Answer::Committed(anchor)),
                Ok(Some(EnclaveEvent::Refused(code))) => break Err(KeyReleaseError::Refused(code)),
                Ok(Some(_)) => {
                    break Err(KeyReleaseError::Unexpected {
                        expected: "Challenge, Granted or Refused",
                    })
                }
                // The proto error says which step failed (key generation, agreement, unwrap).
                Err(e @ cloister_proto::Error::KeyWrap(_)) => {
                    break Err(KeyReleaseError::Unwrap(e))
                }
                Err(e) => break Err(KeyReleaseError::Protocol(e)),
            }
        };
        // Best effort: the exchange is over whatever the answer.
        let _ = timeout(Duration::from_secs(1), tls.shutdown()).await;
        released
    }
}

/// What an attested exchange with the broker returned.
#[derive(Debug)]
pub enum Answer {
    /// The model key, and with a state `Open` the instance's anchor.
    Released {
        /// The model key.
        key: ModelKey,
        /// The anchor (state `Open` only).
        anchor: Option<StateAnchor>,
    },
    /// A state commit was recorded.
    Committed(StateAnchor),
}

async fn send<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), KeyReleaseError> {
    timeout(STEP_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| KeyReleaseError::Timeout("sending"))?
    .map_err(|e| KeyReleaseError::Protocol(e.into()))
}

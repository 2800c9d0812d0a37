//! The client's half: draw the nonce, ask, receive, verify.

use std::sync::Arc;

use cloister_attestation::evidence::{
    verify_evidence, CertChainDer, Evidence, ExpectedSession, VerifiedEvidence,
};
use cloister_attestation::{Policy, VerifyOptions};
use cloister_kserve::{AttestationRequest, ErrorResponse, EVIDENCE_CONTENT_TYPE};
use ring::rand::SecureRandom;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::{self, danger::AttestedServer};
use crate::Error;

/// The TLS configuration of an attested session: TLS 1.3 (ring), any server certificate, and the client
/// certificate to present, if any. Any certificate, because the enclave's is ephemeral and self-signed and no
/// CA could vouch for it; the enclave is authenticated *inside* the connection by [`ClientAttestation`],
/// whose evidence binds this connection's exporter. Send nothing on such a connection before
/// [`ReceivedEvidence::verify`] returned [`Attested`].
pub fn client_tls_config(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = tls::client_builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AttestedServer::new(&tls::provider())));
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key),
    }
}

/// The client's half of one attestation: holds the nonce it drew and the connection's exporter.
#[derive(Debug)]
pub struct ClientAttestation {
    nonce: [u8; 32],
    exporter: [u8; 32],
}

impl ClientAttestation {
    /// Starts the attestation of the connection whose exporter is `exporter`: a fresh nonce from `rng`, and
    /// the body of the `POST` [`ATTESTATION_PATH`](super::ATTESTATION_PATH) to send.
    pub fn start(rng: &dyn SecureRandom, exporter: [u8; 32]) -> Result<(Self, Vec<u8>), Error> {
        let mut nonce = [0u8; 32];
        rng.fill(&mut nonce).map_err(|_| Error::Rng)?;
        let body =
            serde_json::to_vec(&AttestationRequest { nonce }).map_err(|_| Error::Malformed {
                what: "attestation request",
            })?;
        Ok((ClientAttestation { nonce, exporter }, body))
    }

    /// The enclave's answer: its status, content type and body. Anything but 200 with the evidence content
    /// type, and evidence that does not decode, is an error naming what came.
    pub fn receive(
        self,
        status: u16,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<ReceivedEvidence, Error> {
        if status != 200 {
            return Err(Error::EnclaveStatus {
                status,
                message: error_message(&body),
            });
        }
        if content_type != Some(EVIDENCE_CONTENT_TYPE) {
            return Err(Error::UnexpectedContentType {
                found: content_type.map(str::to_owned),
                expected: EVIDENCE_CONTENT_TYPE,
            });
        }
        // Bounded (MAX_EVIDENCE_LEN) before decoding.
        let evidence = Evidence::from_bytes(&body)?;
        Ok(ReceivedEvidence {
            evidence,
            bytes: body,
            nonce: self.nonce,
            exporter: self.exporter,
        })
    }
}

/// The `error` of an enclave's JSON error body, or the start of the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// Evidence as the enclave sent it, not yet verified.
#[derive(Debug)]
pub struct ReceivedEvidence {
    evidence: Evidence,
    bytes: Vec<u8>,
    nonce: [u8; 32],
    exporter: [u8; 32],
}

impl ReceivedEvidence {
    /// The SNP report, when the evidence carries no VCEK: the caller may fetch it (from its collateral
    /// sources) into [`ReceivedEvidence::chain_mut`]. Whatever it puts there is verified like the rest.
    pub fn missing_vcek(&self) -> Result<Option<&[u8]>, Error> {
        if self.evidence.cert_chain.leaf.is_empty() {
            Ok(Some(self.evidence.snp_report()?))
        } else {
            Ok(None)
        }
    }

    /// The certificate chain, to complete (see [`ReceivedEvidence::missing_vcek`]).
    pub fn chain_mut(&mut self) -> &mut CertChainDer {
        &mut self.evidence.cert_chain
    }

    /// Verifies the evidence: AMD chain and signature, REPORT_DATA = the claims' hash, the nonce this
    /// attestation drew, this connection's exporter, then `policy`. The only way to an [`Attested`].
    pub fn verify(self, policy: &Policy, options: &VerifyOptions<'_>) -> Result<Attested, Error> {
        let verified = verify_evidence(
            &self.evidence,
            policy,
            options,
            &ExpectedSession {
                nonce: &self.nonce,
                tls_exporter: &self.exporter,
            },
        )?;
        Ok(Attested {
            evidence: verified,
            evidence_bytes: self.bytes,
        })
    }
}

/// The proof that a connection's peer is an enclave the policy accepts: its verified evidence, bound to the
/// connection's exporter and a fresh nonce. Made only by [`ReceivedEvidence::verify`].
#[derive(Debug)]
pub struct Attested {
    evidence: VerifiedEvidence,
    evidence_bytes: Vec<u8>,
}

impl Attested {
    /// The verified evidence.
    pub fn evidence(&self) -> &VerifiedEvidence {
        &self.evidence
    }

    /// The evidence as it travelled (postcard; what receipts point to).
    pub fn evidence_bytes(&self) -> &[u8] {
        &self.evidence_bytes
    }
}

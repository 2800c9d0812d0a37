//! The enclave's half: read the client's nonce, say what to attest, check and encode the evidence.

use cloister_attestation::evidence::Evidence;
use cloister_kserve::{AttestationRequest, EVIDENCE_CONTENT_TYPE};

use super::MAX_REQUEST_LEN;
use crate::Error;

/// The enclave's half of the session attestation.
#[derive(Debug)]
pub struct EnclaveAttestation;

impl EnclaveAttestation {
    /// Reads a client's request (`{"nonce": "<64 hex>"}`, nothing else) on the connection whose exporter
    /// is `exporter`: what the evidence must carry.
    pub fn receive(body: &[u8], exporter: [u8; 32]) -> Result<ToAttest, Error> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(Error::FrameTooLarge {
                len: body.len(),
                max: MAX_REQUEST_LEN,
            });
        }
        let request: AttestationRequest =
            serde_json::from_slice(body).map_err(|e| Error::MalformedRequest(e.to_string()))?;
        Ok(ToAttest {
            nonce: request.nonce,
            exporter,
        })
    }
}

/// What the evidence of one attestation must carry in its claims.
#[derive(Debug)]
pub struct ToAttest {
    nonce: [u8; 32],
    exporter: [u8; 32],
}

impl ToAttest {
    /// The client's nonce.
    pub fn nonce(&self) -> [u8; 32] {
        self.nonce
    }

    /// The connection's exporter.
    pub fn exporter(&self) -> [u8; 32] {
        self.exporter
    }

    /// The answer carrying `evidence`, refused unless its claims carry this nonce and exporter (an enclave
    /// bug that served one connection's evidence on another would otherwise only show at the client).
    pub fn answer(self, evidence: &Evidence) -> Result<Answer, Error> {
        if evidence.claims.nonce != self.nonce || evidence.claims.tls_exporter != self.exporter {
            return Err(Error::UnexpectedMessage {
                expected: "evidence whose claims carry the request's nonce and exporter",
            });
        }
        let body = evidence.to_bytes()?;
        Ok(Answer {
            content_type: EVIDENCE_CONTENT_TYPE,
            body,
        })
    }
}

/// The enclave's answer: `200`, this content type, this body.
#[derive(Debug)]
pub struct Answer {
    /// [`EVIDENCE_CONTENT_TYPE`].
    pub content_type: &'static str,
    /// The postcard-encoded evidence.
    pub body: Vec<u8>,
}

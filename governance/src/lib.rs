//! The signed records a Cloister enclave makes, and their offline verification: inference **receipts**
//! (lineage: which attested enclave ran which model on which request, and answered what) and the **audit
//! log** (one hash-chained line per request, checkpoints signed every N lines and at shutdown).
//!
//! Who runs it: the enclave (signing, with a key made at start whose public half is in its attested claims, so
//! that attestation binds every record to the measured enclave), and auditors (`cloister receipt verify`,
//! `cloister audit verify`). Secrets: the enclave's signing key, in [`signer::RecordSigner`] (never serialised,
//! redacted `Debug`); records carry digests and counts, never inputs or outputs.
#![forbid(unsafe_code)]

pub mod audit;
pub mod digest;
pub mod receipt;
pub mod signer;

pub use receipt::{Receipt, ReceiptFile, ReceiptPayload, ReceiptProvenance};
pub use signer::RecordSigner;

/// Why a record was not accepted (each message names the field or check first).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The evidence the record points to did not verify.
    #[error("evidence: {0}")]
    Evidence(#[from] cloister_attestation::Error),
    /// A record is malformed.
    #[error("{what}: {detail}")]
    Malformed {
        /// Which record or field.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A field does not have the value it must.
    #[error("{field}: expected {expected}, found {found}")]
    Mismatch {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: String,
        /// What it is.
        found: String,
    },
    /// A signature does not verify with the enclave's attested key.
    #[error("{what}: the signature does not verify with the enclave's receipt key")]
    Signature {
        /// Which record.
        what: &'static str,
    },
    /// The signing key could not be made or used.
    #[error("signing key: {0}")]
    Key(&'static str),
}

impl Error {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn mismatch(
        field: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Mismatch {
            field,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// The session id records name: the first 16 bytes of SHA-256("cloister-session-v1" || TLS exporter). The
/// exporter is in the session's attested claims, so a verifier holding the evidence can recompute it; the id
/// itself reveals nothing about the TLS secrets.
pub fn session_id(tls_exporter: &[u8; 32]) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"cloister-session-v1");
    ctx.update(tls_exporter);
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

/// SHA-384 of the evidence bytes as they travelled (what records point to).
pub fn evidence_digest(evidence_bytes: &[u8]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, evidence_bytes).as_ref());
    out
}

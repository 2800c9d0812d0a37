//! The crate's one error: why a report, a chain, evidence or a policy file was not accepted.
//!
//! One enum, flat where the cause is this crate's decision (each variant names the check, what was expected
//! and what was found), with the concern-specific details as payloads ([`ReportError`] for the report codec,
//! [`CertError`] for certificates and CRLs, [`PolicyViolation`] for the policy, and the measurement,
//! ID-block and simulator errors). The message of each variant starts with the check's name
//! (`report_parse:`, `certificate:`, `root:`, `hwid:`, `crl:`, `policy:`, `claims.nonce:`, …): relying
//! parties and tests match on those prefixes.

use crate::evidence::CLAIMS_VERSION;
use crate::policy::{NoWorkloadPin, PolicyViolation};
use crate::snp::certs::{CertError, CertRole};
use crate::snp::measurement::id_block::IdBlockError;
use crate::snp::measurement::MeasureError;
use crate::snp::report::{ReportError, SigningKey};

/// The crate's one error (see the module documentation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Confidential Containers initdata document is malformed (`crate::initdata`).
    #[error("initdata: {0}")]
    InitData(String),
    /// The report bytes are malformed.
    #[error("report_parse: {0}")]
    Report(#[from] ReportError),
    /// A certificate is malformed, expired, or its signature does not verify.
    #[error("certificate: {0}")]
    Certificate(#[from] CertError),
    /// The product could not be determined, or sources disagree.
    #[error("product: {0}")]
    Product(String),
    /// The ARK is not one of AMD's embedded roots (nor an explicitly trusted simulated root).
    #[error("root: the ARK {subject:?} (SHA-256 {fingerprint}) is not a trusted AMD root{hint}")]
    UntrustedRoot {
        /// Subject CN of the offered ARK.
        subject: String,
        /// SHA-256 of the offered ARK, lower-case hex.
        fingerprint: String,
        /// Extra explanation (e.g. that a simulated root must be passed explicitly).
        hint: &'static str,
    },
    /// The certificate roles do not match the report's SIGNING_KEY.
    #[error("signing_key: report says {report:?} but {detail}")]
    KeyTypeMismatch {
        /// SIGNING_KEY of the report.
        report: SigningKey,
        /// What the chain says instead.
        detail: String,
    },
    /// The report is not signed (SIGNING_KEY = none) or uses an unknown signature algorithm.
    #[error("signature_algo: expected 1 (ECDSA P-384 SHA-384) with a VCEK or VLEK, found algo {algo} with {key:?}")]
    UnsupportedSignature {
        /// SIGNATURE_ALGO.
        algo: u32,
        /// SIGNING_KEY.
        key: SigningKey,
    },
    /// The report's ECDSA P-384 signature does not verify under the leaf's key.
    #[error("report_signature: the ECDSA P-384 signature over report bytes 0x000..0x2A0 does not verify with the {role:?} key")]
    ReportSignature {
        /// The leaf's role.
        role: CertRole,
    },
    /// hwID of the VCEK differs from CHIP_ID.
    #[error("hwid: VCEK hwID {hw_id} does not equal report CHIP_ID {chip_id}")]
    HwIdMismatch {
        /// hwID (hex).
        hw_id: String,
        /// CHIP_ID (hex).
        chip_id: String,
    },
    /// A TCB SPL in the leaf certificate differs from REPORTED_TCB.
    #[error(
        "reported_tcb.{component}: certificate SPL {cert} does not equal REPORTED_TCB {report}"
    )]
    TcbMismatch {
        /// Which component.
        component: &'static str,
        /// SPL from the certificate extension.
        cert: u8,
        /// Value in REPORTED_TCB.
        report: u8,
    },
    /// A certificate in the chain is revoked by the CRL.
    #[error("crl: the {role:?} certificate (serial {serial}) is revoked")]
    Revoked {
        /// Which certificate.
        role: CertRole,
        /// Serial, hex.
        serial: String,
    },
    /// The CRL is not signed by the chain's ARK, or is not current at the verification instant.
    #[error("crl: {0}")]
    Crl(CertError),
    /// CRLs were given, but none is signed by the ARK of this chain.
    #[error("crl: none of the {given} CRL(s) given is signed by {ark} (the root of this chain)")]
    NoApplicableCrl {
        /// How many CRLs were given.
        given: usize,
        /// The ARK's subject CN.
        ark: String,
    },
    /// A certificate the report needs was not supplied (and none is embedded for it).
    #[error("certificate: the {role} certificate is missing")]
    MissingCertificate {
        /// Which certificate.
        role: CertRole,
    },
    /// The leaf certificate lacks an AMD extension this product requires.
    #[error("certificate: the leaf lacks AMD extension {name}")]
    MissingExtension {
        /// Extension name as in AMD's VCEK specification.
        name: &'static str,
    },
    /// A policy check failed.
    #[error("policy: {0}")]
    Policy(#[from] PolicyViolation),
    /// Azure vTPM evidence failed a check (named first in the message).
    #[error("{0}")]
    Azure(#[from] crate::azure::AzureError),

    /// The evidence bytes do not decode.
    #[error("evidence: malformed encoding")]
    EvidenceEncoding,
    /// The evidence is larger than [`MAX_EVIDENCE_LEN`], or carries too many model digests.
    #[error("evidence: too large ({what})")]
    EvidenceTooLarge {
        /// What is too large.
        what: &'static str,
    },
    /// A certificate in the evidence does not parse.
    #[error("evidence: {0}")]
    EvidenceCertificate(CertError),
    /// Claims of an unsupported version.
    #[error("claims.version: expected {CLAIMS_VERSION}, found {found}")]
    ClaimsVersion {
        /// Version found.
        found: u16,
    },
    /// A `claims.model_signers` entry that no honest enclave writes.
    #[error("claims.model_signers[{index}]: {reason}")]
    ClaimsModelSigner {
        /// Its index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// REPORT_DATA is not the hash of the claims: the claims were changed after the report was made.
    #[error("report_data: does not commit to the claims (expected {expected}, found {found})")]
    ReportDataMismatch {
        /// SHA-512 of the claims, hex.
        expected: String,
        /// REPORT_DATA, hex.
        found: String,
    },
    /// The nonce is not the one the verifier drew: stale or replayed evidence.
    #[error("claims.nonce: expected {expected}, found {found} (stale or replayed evidence)")]
    NonceMismatch {
        /// Expected, hex.
        expected: String,
        /// Found, hex.
        found: String,
    },
    /// The exporter is not the one of the verifier's TLS session: the evidence was relayed.
    #[error("claims.tls_exporter: expected {expected}, found {found} (evidence made for another TLS session: relay or man in the middle)")]
    ExporterMismatch {
        /// Expected, hex.
        expected: String,
        /// Found, hex.
        found: String,
    },
    /// The platform label disagrees with the root the chain ends in.
    #[error("platform: evidence says {claimed} but its chain ends in {actual}")]
    PlatformMismatch {
        /// Platform in the evidence.
        claimed: &'static str,
        /// Platform of the trusted root.
        actual: &'static str,
    },
    /// A policy file is not valid TOML, has an unknown field, or a value of the wrong shape.
    #[error("policy: {0}")]
    PolicyFile(#[from] toml::de::Error),
    /// The policy pins no workload identity where one is required (key release, client sessions).
    #[error(transparent)]
    NoWorkloadPin(#[from] NoWorkloadPin),
    /// An expected launch measurement cannot be computed.
    #[error(transparent)]
    Measurement(#[from] MeasureError),
    /// An ID block cannot be made.
    #[error(transparent)]
    IdBlock(#[from] IdBlockError),
}

impl Error {
    /// True when the evidence was genuine, fresh and bound to the exchange, and the policy refused it: a
    /// decision about a real enclave. False for everything an unauthenticated peer can cause (malformed or
    /// forged evidence, a wrong chain, a replay).
    pub fn is_policy_decision(&self) -> bool {
        matches!(self, Error::Policy(_))
    }
}

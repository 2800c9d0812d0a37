//! Cloister attestation core: decides whether an AMD SEV-SNP attestation report is genuine and
//! acceptable under a policy.
//!
//! Who runs it: every party — the client, the key broker, `cloister verify`, the enclave (to make claims) and
//! the host (to display evidence). Secrets it may hold: none of its own; `snp::measurement::id_block` signs
//! with an ID or author key its caller passes in. The software AMD-SP that forges simulated reports is its own
//! crate (`cloister-sim`): nothing that links only the verifier can forge a report.
//!
//! Pure: no I/O, no clock, no randomness. The caller passes the instant at which certificates must be
//! valid, and the bytes of reports, certificates, CRLs and policies.
//!
//! Entry point: [`snp::verify::verify`], which returns a [`snp::verify::VerifiedReport`] that nothing
//! else can construct.
#![forbid(unsafe_code)]

pub mod azure;
pub mod error;
pub mod evidence;
pub mod guid;
pub mod initdata;
pub mod policy;
pub mod snp;

pub use error::Error;
pub use guid::Guid;
pub use policy::{Policy, PolicyViolation};
pub use snp::verify::{verify, CertChain, VerifiedReport, VerifyOptions};

/// Compares two byte strings in constant time (for the lengths given). Used wherever attacker-influenced
/// bytes are compared with expected values (REPORT_DATA, nonces, exporters, chip ids).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

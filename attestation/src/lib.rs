//! Cloister attestation core: decides whether an AMD SEV-SNP attestation report is genuine and
//! acceptable under a policy.
//!
//! Pure: no I/O, no clock, no randomness. The caller passes the instant at which certificates must be
//! valid, and the bytes of reports, certificates, CRLs and policies.
#![forbid(unsafe_code)]

pub mod snp;

//! Azure confidential VMs: SEV-SNP under Microsoft's paravisor (HCL/OpenHCL), whose vTPM is what the guest
//! attests with.
//!
//! On Azure the guest cannot put its own data in an SNP report: the paravisor, inside the SNP measurement,
//! owns the report and exposes a vTPM. Evidence is therefore two-layered:
//!
//! ```text
//! HCL report (vTPM NV 0x01400001) = header | SNP report | request data | variable data (JSON)
//!   SNP report:    signed by the VCEK (AMD chain) — REPORT_DATA[0..32] = SHA-256(variable data)
//!   variable data: keys[HCLAkPub] (the vTPM AK), vm-configuration, user-data (NV 0x01400002)
//! TPM quote (TPMS_ATTEST + signature by HCLAkPub): extraData = the verifier's report data,
//!   pcrDigest = SHA-256(selected PCRs) — the workload's identity (measured boot), not MEASUREMENT
//! ```
//!
//! [`verify_azure`] checks, in this order (each failure names its check): `hcl_report` (layout), `hcl_ak`
//! (HCLAkPub from the variable data), `quote` and `quote_signature` (TPMS_ATTEST signed by the AK),
//! `user_data` (v2 evidence: the report data in the variable data), `quote_nonce` (extraData), `pcr_digest`,
//! `hcl_var_data` (its SHA-256 in REPORT_DATA), then the SNP report and its VCEK chain exactly as on bare SNP,
//! then the policy: the SNP knobs on the embedded report (products, TCB, debug, the paravisor's
//! measurement), and `[tpm]` (`pcr_policy`, `vm_configuration`). The order puts the cheap, specific checks
//! first so that each of the vectors' negatives fails for its own reason.

pub mod hcl;
pub mod tpm;
pub mod trustee;
mod verify;

pub use trustee::{AzureEvidence, Format, TpmQuote};
pub(crate) use verify::verify_genuine_azure;
pub use verify::{verify_azure, AzureFacts, UserDataRule, VerifiedAzure};

/// Why Azure evidence was refused: the check (`hcl_var_data`, `quote_signature`, `quote_nonce`,
/// `pcr_digest`, `user_data`, …) and what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct AzureError {
    /// The check's name.
    pub check: &'static str,
    /// Expected and found.
    pub detail: String,
}

impl AzureError {
    pub(crate) fn new(check: &'static str, detail: impl Into<String>) -> Self {
        AzureError {
            check,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests;

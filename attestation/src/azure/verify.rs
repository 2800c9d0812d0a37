//! The Azure verification pipeline (order and reasons: the module documentation of [`super`]).

use std::collections::BTreeMap;

use super::hcl::{HclReport, VmConfiguration};
use super::tpm::{verify_signature, QuoteInfo};
use super::trustee::{AzureEvidence, Format, TpmQuote};
use super::AzureError;
use crate::policy::Policy;
use crate::snp::certs::AmdCertificate;
use crate::snp::verify::{verify_genuine, CertChain, GenuineReport, VerifiedReport, VerifyOptions};
use crate::Error;

/// What the vTPM layer established, for display and for the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureFacts {
    /// The quote's extraData (the report data the verifier asked for).
    pub report_data: Vec<u8>,
    /// PCR index → SHA-256 bank value, as quoted.
    pub pcrs: BTreeMap<u8, [u8; 32]>,
    /// The paravisor's VM configuration.
    pub vm_configuration: VmConfiguration,
    /// SHA-256 of HCLAkPub's modulus then exponent.
    pub ak_public_sha256: [u8; 32],
    /// The variable data's user-data, decoded.
    pub user_data: Option<Vec<u8>>,
}

/// How the expected report data must appear in the variable data's `user-data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserDataRule {
    /// Not checked (Trustee v0 and v1 evidence: the attester did not write it).
    Unchecked,
    /// It begins with the report data and the rest is zero (Trustee v2: 48 bytes of data in a 64-byte index).
    Prefix,
    /// It is exactly the report data (Cloister's evidence: 64 bytes).
    Exact,
}

/// Genuine Azure evidence: the SNP layer (no policy applied yet) and what the vTPM layer established.
pub(crate) struct GenuineAzure {
    pub(crate) snp: GenuineReport,
    pub(crate) facts: AzureFacts,
}

/// Everything but the policy: the vTPM layer, then the SNP report and its chain.
pub(crate) fn verify_genuine_azure(
    hcl_bytes: &[u8],
    quote: &TpmQuote,
    chain: &CertChain,
    options: &VerifyOptions<'_>,
    crl_grace: i64,
    expected_report_data: Option<&[u8]>,
    user_data_rule: UserDataRule,
) -> Result<GenuineAzure, Error> {
    let hcl = HclReport::parse(hcl_bytes)?;
    let claims = hcl.claims()?;
    verify_signature(&claims.ak, &quote.message, &quote.signature)?;
    let info = QuoteInfo::parse(&quote.message)?;
    if let Some(expected) = expected_report_data {
        check_user_data(claims.user_data.as_deref(), expected, user_data_rule)?;
        if !crate::ct_eq(&info.extra_data, expected) {
            return Err(AzureError::new(
                "quote_nonce",
                format!(
                    "the quote's extraData is {}, expected {}",
                    hex::encode(&info.extra_data),
                    hex::encode(expected)
                ),
            )
            .into());
        }
    }
    info.check_pcrs(&quote.pcrs)?;
    let digest = hcl.var_data_sha256();
    let snp_data = crate::snp::report::AttestationReport::from_bytes(hcl.snp_report)?.report_data;
    if !crate::ct_eq(&snp_data[..32], &digest) || snp_data[32..].iter().any(|&b| b != 0) {
        return Err(AzureError::new(
            "hcl_var_data",
            format!(
                "SHA-256 of the variable data is {}, REPORT_DATA of the SNP report is {} (expected the digest, \
                 then 32 zero bytes)",
                hex::encode(digest),
                hex::encode(snp_data)
            ),
        )
        .into());
    }
    let snp = verify_genuine(hcl.snp_report, chain, options, None, crl_grace)?;
    Ok(GenuineAzure {
        snp,
        facts: AzureFacts {
            report_data: info.extra_data.clone(),
            pcrs: info
                .selected
                .iter()
                .copied()
                .zip(quote.pcrs.iter().copied())
                .collect(),
            vm_configuration: claims.vm_configuration,
            ak_public_sha256: claims.ak.sha256(),
            user_data: claims.user_data,
        },
    })
}

fn check_user_data(
    found: Option<&[u8]>,
    expected: &[u8],
    rule: UserDataRule,
) -> Result<(), AzureError> {
    let ok = match (rule, found) {
        (UserDataRule::Unchecked, _) => true,
        (_, None) => false,
        (UserDataRule::Exact, Some(u)) => crate::ct_eq(u, expected),
        (UserDataRule::Prefix, Some(u)) => {
            u.len() >= expected.len()
                && crate::ct_eq(&u[..expected.len()], expected)
                && u[expected.len()..].iter().all(|&b| b == 0)
        }
    };
    if ok {
        return Ok(());
    }
    Err(AzureError::new(
        "user_data",
        format!(
            "the variable data's user-data is {}, expected {}{} (the report data the attester wrote to NV \
             index 0x01400002)",
            found.map_or_else(|| "absent".to_owned(), hex::encode),
            hex::encode(expected),
            if rule == UserDataRule::Prefix {
                " then zeros"
            } else {
                ""
            }
        ),
    ))
}

/// Azure evidence whose SNP report, chain, vTPM quote and policy have all been verified.
#[derive(Clone, Debug)]
pub struct VerifiedAzure {
    report: VerifiedReport,
    facts: AzureFacts,
}

impl VerifiedAzure {
    /// The verified SNP report (the paravisor's).
    pub fn report(&self) -> &VerifiedReport {
        &self.report
    }
    /// What the vTPM layer established.
    pub fn facts(&self) -> &AzureFacts {
        &self.facts
    }
}

/// Verifies Trustee-format Azure evidence: the vTPM layer, the SNP report and its chain (the evidence's VCEK
/// when `chain` has no leaf), then `policy` (SNP knobs and `[tpm]`). With `expected_report_data`, the quote's
/// extraData must equal it (and, for v2 evidence, the user-data must begin with it); without, it is
/// reported, not checked.
pub fn verify_azure(
    evidence: &AzureEvidence,
    chain: &CertChain,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    expected_report_data: Option<&[u8]>,
) -> Result<VerifiedAzure, Error> {
    let mut chain = chain.clone();
    if chain.leaf.is_none() {
        if let Some(der) = &evidence.vcek {
            chain.leaf = Some(AmdCertificate::from_der(der).map_err(Error::EvidenceCertificate)?);
        }
    }
    let rule = match evidence.format {
        Format::V2 => UserDataRule::Prefix,
        Format::V0 | Format::V1 => UserDataRule::Unchecked,
    };
    let genuine = verify_genuine_azure(
        &evidence.hcl_report,
        &evidence.quote,
        &chain,
        options,
        policy.crl_grace_secs(),
        expected_report_data,
        rule,
    )?;
    let report = genuine.snp.apply_policy(policy)?;
    policy.check_tpm(&genuine.facts)?;
    Ok(VerifiedAzure {
        report,
        facts: genuine.facts,
    })
}

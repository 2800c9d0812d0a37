//! Trustee's `az-snp-vtpm` evidence JSON, versions 0, 1 and 2, read as Trustee writes them, so that evidence
//! collected by Trustee's attester verifies here too.
//!
//! ```text
//! v0  { "quote": { "signature": [u8…], "message": [u8…], "pcrs": [[u8; 32]…] },
//!       "report": [u8…] (the HCL report), "vcek": "<PEM>" }
//! v1  { "version": 1, "tpm_quote": { "signature": "<hex>", "message": "<hex>", "pcrs": ["<hex>"…] },
//!       "hcl_report": "<base64url>", "vcek": "<base64url of DER>" }
//! v2  as v1 with "version": 2; the attester wrote the report data to NV 0x01400002 first, so the HCL
//!       report's user-data carries it (and the verifier checks it).
//! ```
//!
//! Unknown members are errors; every size is bounded. Base64url is accepted with or without padding, and a
//! `vcek` that is PEM is accepted in every version.

use base64::Engine as _;
use serde::Deserialize;

use super::hcl::MAX_LEN as MAX_HCL_LEN;
use super::tpm::{MAX_ATTEST_LEN, PCR_COUNT};
use super::AzureError;

/// Largest evidence file read (v0 writes every byte as a JSON number: about 36 KB for real evidence).
pub const MAX_EVIDENCE_JSON: usize = 256 * 1024;

/// Which Trustee format the evidence came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// v0 (no `version`).
    V0,
    /// v1.
    V1,
    /// v2: `user-data` carries the report data.
    V2,
}

/// A vTPM quote: the TPMS_ATTEST bytes, the signature, and the PCR values the quote covers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TpmQuote {
    /// TPMS_ATTEST, as signed.
    pub message: Vec<u8>,
    /// The bare RSA signature, or a TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The values of the selected PCRs, in selection order.
    pub pcrs: Vec<[u8; 32]>,
}

/// Azure vTPM evidence: the HCL report, a quote, and the VCEK (DER) if it came along.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureEvidence {
    /// The format it was read from.
    pub format: Format,
    /// The HCL report (NV index 0x01400001), padding included.
    pub hcl_report: Vec<u8>,
    /// The quote.
    pub quote: TpmQuote,
    /// The VCEK, DER.
    pub vcek: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V0 {
    quote: V0Quote,
    report: Vec<u8>,
    vcek: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V0Quote {
    signature: Vec<u8>,
    message: Vec<u8>,
    pcrs: Vec<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V1 {
    version: u32,
    tpm_quote: HexQuote,
    hcl_report: String,
    vcek: String,
}

/// A quote with hex members (`tpm_quote` of v1/v2, and Trustee's bare quote files).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HexQuote {
    signature: String,
    message: String,
    pcrs: Vec<String>,
}

fn bad(detail: String) -> AzureError {
    AzureError::new("evidence_format", detail)
}

fn check_quote(q: TpmQuote) -> Result<TpmQuote, AzureError> {
    if q.message.len() > MAX_ATTEST_LEN || q.signature.len() > 1024 || q.pcrs.len() > PCR_COUNT {
        return Err(bad(format!(
            "a quote of {} bytes, a signature of {} bytes and {} PCR values: too large",
            q.message.len(),
            q.signature.len(),
            q.pcrs.len()
        )));
    }
    Ok(q)
}

fn pcr(bytes: Vec<u8>) -> Result<[u8; 32], AzureError> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| bad(format!("a PCR value of {len} bytes; SHA-256 values are 32")))
}

fn hex_bytes(what: &str, s: &str) -> Result<Vec<u8>, AzureError> {
    hex::decode(s).map_err(|e| bad(format!("{what} is not hex: {e}")))
}

fn base64url(what: &str, s: &str) -> Result<Vec<u8>, AzureError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| bad(format!("{what} is not base64url: {e}")))
}

/// A `vcek` member: PEM, or base64url of DER.
fn vcek(s: &str) -> Result<Vec<u8>, AzureError> {
    if s.trim_start().starts_with("-----BEGIN") {
        crate::snp::certs::AmdCertificate::from_pem(s.as_bytes())
            .map(|c| c.der().to_vec())
            .map_err(|e| bad(format!("vcek: {e}")))
    } else {
        base64url("vcek", s)
    }
}

impl HexQuote {
    fn decode(self) -> Result<TpmQuote, AzureError> {
        check_quote(TpmQuote {
            message: hex_bytes("tpm_quote.message", &self.message)?,
            signature: hex_bytes("tpm_quote.signature", &self.signature)?,
            pcrs: self
                .pcrs
                .iter()
                .take(PCR_COUNT + 1)
                .map(|p| pcr(hex_bytes("tpm_quote.pcrs", p)?))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl AzureEvidence {
    /// Parses Trustee's evidence JSON (v0, v1 or v2).
    pub fn from_json(bytes: &[u8]) -> Result<Self, AzureError> {
        if bytes.len() > MAX_EVIDENCE_JSON {
            return Err(bad(format!(
                "{} bytes of JSON; at most {MAX_EVIDENCE_JSON}",
                bytes.len()
            )));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let hcl = |report: Vec<u8>| {
            if report.len() > MAX_HCL_LEN {
                Err(bad(format!("an HCL report of {} bytes", report.len())))
            } else {
                Ok(report)
            }
        };
        if value.get("version").is_some() {
            let v: V1 = serde_json::from_value(value)
                .map_err(|e| bad(format!("not Trustee's az-snp-vtpm evidence v1/v2: {e}")))?;
            let format = match v.version {
                1 => Format::V1,
                2 => Format::V2,
                other => {
                    return Err(bad(format!(
                        "version {other}; versions 0, 1 and 2 are known"
                    )))
                }
            };
            Ok(AzureEvidence {
                format,
                hcl_report: hcl(base64url("hcl_report", &v.hcl_report)?)?,
                quote: v.tpm_quote.decode()?,
                vcek: Some(vcek(&v.vcek)?),
            })
        } else {
            let v: V0 = serde_json::from_value(value)
                .map_err(|e| bad(format!("not Trustee's az-snp-vtpm evidence v0: {e}")))?;
            Ok(AzureEvidence {
                format: Format::V0,
                hcl_report: hcl(v.report)?,
                quote: check_quote(TpmQuote {
                    message: v.quote.message,
                    signature: v.quote.signature,
                    pcrs: v
                        .quote
                        .pcrs
                        .into_iter()
                        .take(PCR_COUNT + 1)
                        .map(pcr)
                        .collect::<Result<_, _>>()?,
                })?,
                vcek: Some(vcek(&v.vcek)?),
            })
        }
    }

    /// Evidence from separate files: an HCL report, a quote JSON (`{signature, message, pcrs}` in hex, as
    /// Trustee writes `tpm-quote` files), and optionally the VCEK.
    pub fn from_parts(
        hcl_report: Vec<u8>,
        quote_json: &[u8],
        vcek: Option<Vec<u8>>,
    ) -> Result<Self, AzureError> {
        if hcl_report.len() > MAX_HCL_LEN || quote_json.len() > MAX_EVIDENCE_JSON {
            return Err(bad("an HCL report or a quote file too large".into()));
        }
        let quote: HexQuote = serde_json::from_slice(quote_json).map_err(|e| {
            bad(format!(
                "not a quote JSON {{signature, message, pcrs}} in hex: {e}"
            ))
        })?;
        Ok(AzureEvidence {
            format: Format::V1,
            hcl_report,
            quote: quote.decode()?,
            vcek,
        })
    }
}

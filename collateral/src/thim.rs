//! Azure's Trusted Hardware Identity Management (THIM) endpoint, inside an Azure VM:
//! `GET http://169.254.169.254/metadata/THIM/amd/certification` with `Metadata: true` →
//! `{"vcekCert": "<PEM>", "certificateChain": "<PEM: ASK, ARK>", "tcbm": "<hex>", "cacheControl": "…"}`.
//!
//! What it returns is as untrusted as any KDS answer: the caller verifies the VCEK against AMD's ASK, the
//! report's CHIP_ID and REPORTED_TCB ([`crate::verify::vcek`]) before using it.

use std::time::Duration;

use cloister_attestation::snp::certs::AmdCertificate;
use serde::Deserialize;

use crate::Error;

/// Azure's instance metadata THIM URL.
pub const DEFAULT_THIM_URL: &str = "http://169.254.169.254/metadata/THIM/amd/certification";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    vcek_cert: String,
}

/// The VCEK THIM hands out (not yet verified).
pub async fn fetch_vcek(url: &str) -> Result<AmdCertificate, Error> {
    let response = crate::http::get_with(
        url,
        &[("metadata", "true")],
        Duration::from_secs(20),
        64 * 1024,
    )
    .await
    .map_err(|e| Error::Kds(format!("THIM {url}: {e}")))?;
    if response.status != 200 {
        return Err(Error::Http {
            url: url.to_owned(),
            status: response.status,
        });
    }
    let answer: Answer = serde_json::from_slice(&response.body)
        .map_err(|e| Error::Kds(format!("THIM {url}: not the certification JSON: {e}")))?;
    AmdCertificate::from_pem(answer.vcek_cert.as_bytes()).map_err(|e| Error::Untrusted {
        what: url.to_owned(),
        reason: format!("vcekCert: {e}"),
    })
}

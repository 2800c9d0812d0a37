//! The `coco-aa` backend: SEV-SNP reports from Confidential Containers' attestation agent, through its REST
//! API inside the pod VM (`GET http://127.0.0.1:8006/aa/evidence?runtime_data=…&encoding=base64`), for pods
//! whose container cannot reach configfs-tsm or `/dev/sev-guest` itself.
//!
//! The REPORT_DATA mapping, from guest-components' attester (docs/kubernetes.md cites the sources): the
//! agent puts the runtime data into REPORT_DATA as is, zero-padded to 64 bytes, no hashing, VMPL 0. Cloister
//! always sends exactly 64 bytes (its claims digest), so REPORT_DATA is those bytes and verifiers check
//! Cloister's evidence as on any SNP guest: nothing about the agent reaches the verifier side. This module
//! still checks that the report carries exactly what was asked for, and VMPL 0.
//!
//! The risk ("evidence factory", docs/kubernetes.md): any process in the pod VM that reaches the agent's
//! port can have reports made with REPORT_DATA of its choice. A verifier that checks only REPORT_DATA
//! cannot tell Cloister's claims from another process's. What binds them to Cloister is the launch
//! measurement and HOST_DATA (the initdata, whose agent policy should restrict the pod to Cloister's
//! image), as for every guest; prefer configfs-tsm where the runtime exposes it to the container.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use cloister_attestation::evidence::CertChainDer;
use cloister_attestation::snp::report::sev_json::parse_sev_json;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::cert_table::{self, CertEntry, CertTable};
use super::{chain, Firmware, FirmwareError, Platform};

pub use crate::config::{CocoAaOptions, DEFAULT_AA_URL};

/// How long one evidence request may take (the agent asks the AMD-SP; that takes milliseconds).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The attestation agent as firmware.
#[derive(Debug)]
pub struct CocoAa {
    authority: String,
    vcek_cache: Option<PathBuf>,
}

impl CocoAa {
    /// Checks the URL (plain HTTP to a `HOST:PORT`: the agent answers loopback callers only).
    pub fn open(options: &CocoAaOptions) -> Result<Self, FirmwareError> {
        let bad = || {
            FirmwareError::CocoAa(format!(
                "aa_url must be http://HOST:PORT, found {:?}",
                options.url
            ))
        };
        let authority = options
            .url
            .strip_prefix("http://")
            .ok_or_else(bad)?
            .trim_end_matches('/');
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
        if !port_ok || authority.contains(['/', '@', '?', '#']) {
            return Err(bad());
        }
        Ok(Self {
            authority: authority.to_owned(),
            vcek_cache: options.vcek_cache.clone(),
        })
    }

    async fn evidence_json(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, FirmwareError> {
        let fail = |what: String| FirmwareError::CocoAa(format!("{}: {what}", self.authority));
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let driver = tokio::spawn(conn);
        // URL-safe base64 without padding: what the agent's `encoding=base64` decodes.
        let runtime_data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(report_data);
        let request = Request::get(format!(
            "/aa/evidence?runtime_data={runtime_data}&encoding=base64"
        ))
        .header(hyper::header::HOST, &self.authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(
            response.into_body(),
            cloister_attestation::snp::report::sev_json::MAX_SEV_JSON_LEN,
        )
        .collect()
        .await
        .map_err(|e| fail(format!("reading the evidence: {e}")))?
        .to_bytes();
        driver.abort();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(fail(format!("HTTP {status}: {text}")));
        }
        Ok(body.to_vec())
    }
}

impl Firmware for CocoAa {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| FirmwareError::CocoAa("no async runtime to call the agent from".into()))?;
        let json = tokio::task::block_in_place(|| {
            handle.block_on(async {
                tokio::time::timeout(TIMEOUT, self.evidence_json(report_data))
                    .await
                    .map_err(|_| {
                        FirmwareError::CocoAa(format!(
                            "{}: no evidence within {TIMEOUT:?}",
                            self.authority
                        ))
                    })?
            })
        })?;
        let evidence =
            parse_sev_json(&json).map_err(|e| FirmwareError::BadReport(e.to_string()))?;
        // The agent must have asked for exactly these 64 bytes, at VMPL 0.
        if !cloister_attestation::ct_eq(&evidence.decoded.report_data, report_data) {
            return Err(FirmwareError::ReportDataMismatch);
        }
        if evidence.decoded.vmpl != 0 {
            return Err(FirmwareError::CocoAa(format!(
                "the agent's report is for VMPL {}, not 0",
                evidence.decoded.vmpl
            )));
        }
        let table = CertTable {
            entries: evidence
                .certificates
                .into_iter()
                .filter_map(|c| {
                    let guid = match c.cert_type.as_str() {
                        "ARK" => cert_table::ARK,
                        "ASK" => cert_table::ASK,
                        "VCEK" => cert_table::VCEK,
                        "VLEK" => cert_table::VLEK,
                        _ => return None,
                    };
                    Some(CertEntry { guid, data: c.data })
                })
                .collect(),
        };
        let (chain, _) = chain::select(
            evidence.decoded.signing_key,
            &table,
            self.vcek_cache.as_deref(),
        )?;
        Ok((evidence.report, chain))
    }
}

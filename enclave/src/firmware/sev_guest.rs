//! The `/dev/sev-guest` backend: SNP_GET_REPORT through the `sev` crate (virtee/sev 8.0.0).
//!
//! Prefer `configfs-tsm` where the kernel has it (Linux ≥ 6.7): it also returns the host's certificate
//! table. This backend exists for older guest kernels.
//!
//! Why SNP_GET_REPORT and not SNP_GET_EXT_REPORT: `sev` 8.0.0's `get_ext_report` parses the host-written
//! certificate table with raw pointer arithmetic (`CertTableEntry::parse_table`) that follows the host's
//! offsets and lengths without checking them against the buffer, so a hostile or buggy host can make it
//! read outside the buffer (undefined behaviour inside the enclave). We do not call it. The certificates
//! come from the measured configuration's `vcek_cache`, or else through the collateral path (the host's
//! `/collateral` service, verified in the enclave: [`super::Attester`]); the host's table, when wanted, from
//! configfs-tsm, whose `auxblob` the kernel bounds and our strict parser ([`super::cert_table`]) reads.
//!
//! Trust: the ioctl talks to the AMD-SP through the kernel's encrypted guest channel (VMPCK); the host
//! relays the messages but cannot read or forge them.

use std::path::PathBuf;
use std::sync::Mutex;

use cloister_attestation::evidence::{CertChainDer, Platform};
use cloister_attestation::snp::report::{AttestationReport, REPORT_LEN};

use super::cert_table::CertTable;
use super::{chain, Firmware, FirmwareError};

/// The device the `sev` crate opens.
pub const DEVICE: &str = "/dev/sev-guest";

/// The `/dev/sev-guest` backend.
pub struct SevGuest {
    device: Mutex<sev::firmware::guest::Firmware>,
    vmpl: u32,
    vcek_cache: Option<PathBuf>,
}

impl std::fmt::Debug for SevGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SevGuest")
            .field("vmpl", &self.vmpl)
            .field("vcek_cache", &self.vcek_cache)
            .finish_non_exhaustive()
    }
}

impl SevGuest {
    /// Opens `/dev/sev-guest`. `vcek_cache` is where the certificates come from, if anywhere (see the module
    /// documentation); it is checked at the first report, when the signing key is known.
    pub fn open(vmpl: u32, vcek_cache: Option<PathBuf>) -> Result<Self, FirmwareError> {
        if vmpl > 3 {
            return Err(FirmwareError::Vmpl(vmpl));
        }
        let device = sev::firmware::guest::Firmware::open().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                FirmwareError::NoSevGuest
            } else {
                FirmwareError::SevGuest(format!("cannot open {DEVICE}: {e}"))
            }
        })?;
        Ok(SevGuest {
            device: Mutex::new(device),
            vmpl,
            vcek_cache,
        })
    }

    /// One raw report for exactly `report_data` (message version 1).
    pub fn raw_report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, FirmwareError> {
        let mut device = self
            .device
            .lock()
            .map_err(|_| FirmwareError::SevGuest("device lock poisoned".to_owned()))?;
        let report = device
            .get_report(None, Some(*report_data), Some(self.vmpl))
            .map_err(|e| FirmwareError::SevGuest(format!("SNP_GET_REPORT failed: {e}")))?;
        if report.len() != REPORT_LEN {
            return Err(FirmwareError::ReportLength { len: report.len() });
        }
        Ok(report)
    }
}

impl Firmware for SevGuest {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
        let report = self.raw_report(report_data)?;
        let parsed = AttestationReport::from_bytes(&report)
            .map_err(|e| FirmwareError::BadReport(e.to_string()))?;
        if !cloister_attestation::ct_eq(&parsed.report_data, report_data) {
            return Err(FirmwareError::ReportDataMismatch);
        }
        let (chain, _) = chain::select(
            parsed.signing_key,
            &CertTable::default(),
            self.vcek_cache.as_deref(),
        )?;
        Ok((report, chain))
    }
}

//! The `azure-vtpm` backend: evidence on an Azure confidential VM, through the paravisor's vTPM.
//!
//! ```text
//! 1. NV_Write  0x01400002  ← the 64 bytes of REPORT_DATA (the claims' digest)        (defined if missing)
//! 2. NV_Read   0x01400001  → the HCL report: the paravisor refreshes it on a read at offset 0, with
//!                             user-data = what step 1 wrote, and REPORT_DATA = SHA-256(its variable data)
//!    check user-data == REPORT_DATA; else the refresh was rate-limited (2 s): wait and read again
//! 3. Quote     AK 0x81000003, qualifying data = REPORT_DATA, SHA-256 PCRs 0–23 → TPMS_ATTEST, TPMT_SIGNATURE
//! 4. PCR_Read  the same 24 PCRs (the verifier recomputes pcrDigest from them)
//! ```
//!
//! The VCEK comes from the collateral path ([`super::Attester`]): the host's `/collateral` mirror, or Azure's
//! THIM endpoint (`collateral = "thim"`). Verifiers check the chain, the HCL report, the quote, and then the
//! claims exactly as on bare SNP (`docs/evidence.md`, "Azure").
//!
//! On the simulated platform (`sim_dir` and `tpm_swtpm`, insecure builds only) the vTPM is swtpm and the
//! paravisor is simulated ([`sim_paravisor`]): it reads user-data from swtpm's NV 0x01400002 and the AK from
//! swtpm, as the real one does, and has the simulated AMD-SP sign the SNP report. (libtpms caps NV indices at
//! 2048 bytes, so an HCL report cannot live in swtpm's NV; the chunked read of step 2 is tested against swtpm
//! with a smaller index.)

#[cfg(feature = "insecure-simulator")]
pub mod sim_paravisor;
#[cfg(feature = "insecure-simulator")]
pub mod swtpm;
pub mod tpm;

use std::sync::Mutex;
use std::time::Duration;

use cloister_attestation::azure::hcl::HclReport;
use cloister_attestation::azure::TpmQuote;
use cloister_attestation::evidence::{CertChainDer, Platform};

use self::tpm::{Tpm, TpmError, TpmTransport, NV_OWNER_AUTH_RW};
use super::{Firmware, FirmwareError};

/// NV index of the HCL report.
pub const NV_HCL_REPORT: u32 = 0x0140_0001;
/// NV index the guest writes its report data to.
pub const NV_REPORT_DATA: u32 = 0x0140_0002;
/// Persistent handle of the Azure AK.
pub const AK_HANDLE: u32 = 0x8100_0003;
/// The PCRs quoted: all of the SHA-256 bank.
pub const QUOTED_PCRS: [u8; 24] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
/// How often the HCL report is read again when its user-data is not yet ours (the paravisor refreshes at
/// most every 2 s).
const REFRESH_ATTEMPTS: u32 = 4;
const REFRESH_WAIT: Duration = Duration::from_millis(2100);

/// Where the HCL report comes from.
trait HclSource: Send + Sync {
    /// The HCL report after `report_data` was written to NV 0x01400002.
    fn hcl_report(&self, tpm: &mut dyn TpmTransport) -> Result<Vec<u8>, FirmwareError>;
    /// The chain, when this source knows it (the simulated AMD-SP does); else empty.
    fn chain(&self) -> CertChainDer {
        CertChainDer::default()
    }
}

/// The real paravisor: NV index 0x01400001.
struct NvIndex;

impl HclSource for NvIndex {
    fn hcl_report(&self, transport: &mut dyn TpmTransport) -> Result<Vec<u8>, FirmwareError> {
        let mut tpm = Tpm::new(transport);
        let (size, _) = tpm.nv_read_public(NV_HCL_REPORT).map_err(tpm_error)?.ok_or_else(|| {
            FirmwareError::Azure(
                "vTPM NV index 0x01400001 (the HCL report) is not defined: not an Azure confidential VM"
                    .into(),
            )
        })?;
        tpm.nv_read(NV_HCL_REPORT, usize::from(size))
            .map_err(tpm_error)
    }
}

impl<T: TpmTransport + ?Sized> TpmTransport for &mut T {
    fn transmit(&mut self, command: &[u8]) -> std::io::Result<Vec<u8>> {
        (**self).transmit(command)
    }
}

fn tpm_error(e: TpmError) -> FirmwareError {
    FirmwareError::Azure(format!("vTPM: {e}"))
}

/// The Azure vTPM backend.
pub struct AzureVtpm {
    transport: Mutex<Box<dyn TpmTransport>>,
    source: Box<dyn HclSource>,
    platform: Platform,
    simulated_root: Option<cloister_attestation::snp::certs::AmdCertificate>,
}

impl std::fmt::Debug for AzureVtpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureVtpm")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

impl AzureVtpm {
    /// The backend on `/dev/tpmrm0` (or another device path): an Azure confidential VM.
    pub fn open_device(path: &std::path::Path) -> Result<Self, FirmwareError> {
        let transport = tpm::DeviceTransport::open(path).map_err(|e| {
            FirmwareError::Azure(format!(
                "cannot open {}: {e} (no vTPM: not an Azure confidential VM, or no access)",
                path.display()
            ))
        })?;
        Ok(AzureVtpm {
            transport: Mutex::new(Box::new(transport)),
            source: Box::new(NvIndex),
            platform: Platform::AzureVtpm,
            simulated_root: None,
        })
    }

    /// The simulated Azure CVM: swtpm at `swtpm` as the vTPM, the simulated AMD-SP in `sim_dir` signing the
    /// paravisor's SNP reports with the launch measurement of this executable and configuration.
    #[cfg(feature = "insecure-simulator")]
    pub fn open_simulated(
        swtpm: &str,
        sim_dir: &std::path::Path,
        config_bytes: &[u8],
    ) -> Result<Self, FirmwareError> {
        let paravisor = sim_paravisor::SimParavisor::open(sim_dir, config_bytes)?;
        let simulated_root = Some(paravisor.root());
        Ok(AzureVtpm {
            transport: Mutex::new(Box::new(tpm::SwtpmTransport::new(swtpm))),
            source: Box::new(paravisor),
            platform: Platform::AzureVtpmSimulated,
            simulated_root,
        })
    }

    fn write_report_data(
        transport: &mut dyn TpmTransport,
        report_data: &[u8; 64],
    ) -> Result<(), FirmwareError> {
        let mut tpm = Tpm::new(transport);
        match tpm.nv_read_public(NV_REPORT_DATA).map_err(tpm_error)? {
            None => tpm
                .nv_define(NV_REPORT_DATA, 64, NV_OWNER_AUTH_RW)
                .map_err(tpm_error)?,
            Some((size, _)) if size < 64 => {
                return Err(FirmwareError::Azure(format!(
                    "vTPM NV index 0x01400002 holds {size} bytes; the report data is 64"
                )))
            }
            Some(_) => {}
        }
        tpm.nv_write(NV_REPORT_DATA, report_data).map_err(tpm_error)
    }
}

impl Firmware for AzureVtpm {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
        let mut transport = self
            .transport
            .lock()
            .map_err(|_| FirmwareError::Azure("vTPM lock poisoned".into()))?;
        let transport: &mut dyn TpmTransport = &mut **transport;
        Self::write_report_data(transport, report_data)?;
        for attempt in 1..=REFRESH_ATTEMPTS {
            let hcl = self.source.hcl_report(transport)?;
            let claims = HclReport::parse(&hcl)
                .and_then(|h| h.claims())
                .map_err(|e| FirmwareError::BadReport(format!("the HCL report: {e}")))?;
            if claims.user_data.as_deref() == Some(&report_data[..]) {
                return Ok((hcl, self.source.chain()));
            }
            if attempt < REFRESH_ATTEMPTS {
                std::thread::sleep(REFRESH_WAIT);
            }
        }
        Err(FirmwareError::Azure(format!(
            "the paravisor's HCL report does not carry the report data written to NV 0x01400002 after {} reads",
            REFRESH_ATTEMPTS
        )))
    }

    fn attest_vtpm(&self, report_data: &[u8; 64]) -> Result<Option<TpmQuote>, FirmwareError> {
        let mut transport = self
            .transport
            .lock()
            .map_err(|_| FirmwareError::Azure("vTPM lock poisoned".into()))?;
        let mut tpm = Tpm::new(&mut **transport);
        // PCRs may change between the quote and the read (something extends them): the verifier would see a
        // pcrDigest mismatch, so the pair is retried once here when the values do not match the quote.
        for _ in 0..2 {
            let quote = tpm
                .quote(AK_HANDLE, report_data, &QUOTED_PCRS)
                .map_err(tpm_error)?;
            let pcrs = tpm.pcr_read(&QUOTED_PCRS).map_err(tpm_error)?;
            let info = cloister_attestation::azure::tpm::QuoteInfo::parse(&quote.attest)
                .map_err(|e| FirmwareError::Azure(format!("the vTPM's quote: {e}")))?;
            if info.check_pcrs(&pcrs).is_ok() {
                return Ok(Some(TpmQuote {
                    message: quote.attest,
                    signature: quote.signature,
                    pcrs,
                }));
            }
        }
        Err(FirmwareError::Azure(
            "the PCRs changed between the quote and their reading, twice".into(),
        ))
    }

    fn simulated_root(&self) -> Option<cloister_attestation::snp::certs::AmdCertificate> {
        self.simulated_root.clone()
    }
}

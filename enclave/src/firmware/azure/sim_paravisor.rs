//! INSECURE, for development and tests: a simulated Azure paravisor. It builds the HCL report the way the
//! real one does when the guest reads NV 0x01400001 — user-data from the vTPM's NV 0x01400002, HCLAkPub from
//! the AK at 0x81000003, the runtime claims JSON hashed into REPORT_DATA — and has the simulated AMD-SP sign
//! the SNP report inside, with the launch measurement of this executable and configuration (standing in for
//! the paravisor's).
//!
//! Its evidence chains to the simulated root, which no verifier trusts unless told to.

use std::path::Path;

use base64::Engine as _;
use cloister_attestation::azure::hcl::{HASH_TYPE_SHA256, REPORT_TYPE_SNP, SIGNATURE};
use cloister_attestation::evidence::CertChainDer;
use cloister_attestation::snp::certs::AmdCertificate;
use cloister_sim::{simulated_launch_measurement, ReportRequest, SimPlatform, SimSigningKey};

use super::tpm::{Tpm, TpmTransport};
use super::{tpm_error, HclSource, AK_HANDLE, NV_REPORT_DATA};
use crate::firmware::FirmwareError;

/// The simulated paravisor.
pub struct SimParavisor {
    platform: SimPlatform,
    measurement: [u8; 48],
    chain: CertChainDer,
}

impl SimParavisor {
    /// Opens the simulated AMD-SP in `sim_dir`.
    pub fn open(sim_dir: &Path, config_bytes: &[u8]) -> Result<Self, FirmwareError> {
        let sim = |e: cloister_sim::SimError| FirmwareError::Simulator(Box::new(e));
        let platform = SimPlatform::open(sim_dir).map_err(sim)?;
        let chain = platform
            .certificate_chain(SimSigningKey::Vcek)
            .map_err(sim)?;
        let exe = std::fs::read("/proc/self/exe")
            .or_else(|_| std::env::current_exe().and_then(std::fs::read))
            .map_err(FirmwareError::ReadExecutable)?;
        let measurement = simulated_launch_measurement(&exe, config_bytes);
        tracing::info!(
            measurement = %hex::encode(measurement),
            "simulated Azure paravisor opened (SIMULATED: no hardware protection)"
        );
        Ok(SimParavisor {
            platform,
            measurement,
            chain,
        })
    }

    /// The simulated root its reports chain to.
    pub fn root(&self) -> AmdCertificate {
        self.platform.root().clone()
    }

    /// The runtime claims JSON for `ak` (n, e) and `user_data`, in the paravisor's key order.
    pub fn runtime_claims(n: &[u8], e: u32, user_data: &[u8]) -> Vec<u8> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let e_bytes = e.to_be_bytes();
        let first = e_bytes.iter().position(|&b| b != 0).unwrap_or(3);
        format!(
            "{{\"keys\":[{{\"kid\":\"HCLAkPub\",\"key_ops\":[\"sign\"],\"kty\":\"RSA\",\"e\":\"{}\",\"n\":\"{}\"}}],\
             \"vm-configuration\":{{\"console-enabled\":false,\"secure-boot\":true,\"tpm-enabled\":true,\
             \"vmUniqueId\":\"00000000-0000-0000-0000-00000000C10A\"}},\"user-data\":\"{}\"}}",
            b64(&e_bytes[first..]),
            b64(n),
            hex::encode_upper(user_data)
        )
        .into_bytes()
    }

    /// An HCL report (version 2) around `snp_report` and `var_data`.
    pub fn hcl_report(snp_report: &[u8], var_data: &[u8]) -> Vec<u8> {
        let le = |v: usize| (v as u32).to_le_bytes();
        let mut out = Vec::with_capacity(32 + snp_report.len() + 20 + var_data.len());
        out.extend_from_slice(&SIGNATURE);
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&le(32 + snp_report.len() + 20 + var_data.len()));
        out.extend_from_slice(&2u32.to_le_bytes()); // request_type: AK certificate request
        out.extend_from_slice(&[0; 16]); // status, reserved
        out.extend_from_slice(snp_report);
        out.extend_from_slice(&le(20 + var_data.len()));
        out.extend_from_slice(&1u32.to_le_bytes()); // request data version 1 (what the guest sees)
        out.extend_from_slice(&REPORT_TYPE_SNP.to_le_bytes());
        out.extend_from_slice(&HASH_TYPE_SHA256.to_le_bytes());
        out.extend_from_slice(&le(var_data.len()));
        out.extend_from_slice(var_data);
        out
    }
}

impl HclSource for SimParavisor {
    fn hcl_report(&self, transport: &mut dyn TpmTransport) -> Result<Vec<u8>, FirmwareError> {
        let mut tpm = Tpm::new(transport);
        let user_data = tpm.nv_read(NV_REPORT_DATA, 64).map_err(tpm_error)?;
        let ak = tpm.read_public_rsa(AK_HANDLE).map_err(tpm_error)?;
        let var_data = Self::runtime_claims(&ak.n, ak.e, &user_data);
        let mut report_data = [0u8; 64];
        report_data[..32]
            .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &var_data).as_ref());
        let report = self
            .platform
            .report(&ReportRequest {
                report_data,
                measurement: self.measurement,
                ..ReportRequest::default()
            })
            .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
        Ok(Self::hcl_report(&report, &var_data))
    }

    fn chain(&self) -> CertChainDer {
        self.chain.clone()
    }
}

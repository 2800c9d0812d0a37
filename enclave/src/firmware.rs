//! The firmware interface: 64 bytes of REPORT_DATA in, a signed attestation report and its certificate
//! chain out; and the one place where evidence is built (claims → REPORT_DATA → report → [`Evidence`]).
//!
//! Which backend runs is part of the **measured** configuration (`firmware = …`), so a verifier that
//! accepts the measurement also accepts the choice; the simulated platform must be chosen explicitly and is
//! never a fallback. Backends:
//! - `simulated`: the software AMD-SP of `cloister sim` (state directory `sim_dir`). Its launch measurement
//!   is computed, once at startup, from the bytes of this very executable and of the measured
//!   configuration, the way `cloister measure` computes it.
//! - `configfs-tsm`, `sev-guest`: the real SNP guest interfaces. Not in this build yet (they come with the
//!   real-hardware issue); selecting one fails at startup with an error that says what is missing.

use std::sync::Arc;

use cloister_attestation::evidence::{
    CertChainDer, Claims, EnclaveKey, Evidence, Platform, Sha384, CLAIMS_VERSION,
};

use crate::config::FirmwareConfig;

/// A source of attestation reports.
pub trait Firmware: Send + Sync {
    /// The platform the reports come from (carried in the evidence, for clear error messages only).
    fn platform(&self) -> Platform;

    /// A report whose REPORT_DATA is exactly `report_data`, and the certificates that sign it.
    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError>;
}

/// Errors of the firmware layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// The configured backend is not part of this build.
    #[error("firmware \"{backend}\" is not available in this build: {missing}")]
    Unavailable {
        /// The configuration's name of the backend.
        backend: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// The executable could not be read to compute the simulated launch measurement.
    #[error("cannot read this executable to compute the simulated launch measurement")]
    ReadExecutable(#[source] std::io::Error),
    /// The simulated platform failed (opening its state, signing a report).
    #[error("simulated platform: {0}")]
    Simulator(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The claims could not be encoded.
    #[error("claims cannot be encoded")]
    Claims,
    /// The blocking attestation task failed.
    #[error("attestation task failed")]
    Task,
}

/// Opens the backend the measured configuration names. `config_bytes` are the exact configuration bytes
/// (an input of the simulated launch measurement).
pub fn open(
    config: &FirmwareConfig,
    config_bytes: &[u8],
) -> Result<Arc<dyn Firmware>, FirmwareError> {
    match config {
        FirmwareConfig::Simulated { sim_dir } => {
            Ok(Arc::new(sim::SimulatedFirmware::open(sim_dir, config_bytes)?))
        }
        FirmwareConfig::ConfigfsTsm => Err(FirmwareError::Unavailable {
            backend: "configfs-tsm",
            missing: "the configfs-tsm backend (reports through /sys/kernel/config/tsm/report, \
                      certificates from the host's extended report) is not implemented yet; it comes \
                      with SNP hardware support",
        }),
        FirmwareConfig::SevGuest => Err(FirmwareError::Unavailable {
            backend: "sev-guest",
            missing: "the sev-guest backend (SNP_GET_EXT_REPORT on /dev/sev-guest) is not \
                      implemented yet; it comes with SNP hardware support",
        }),
    }
}

/// Claims for one piece of evidence (always [`CLAIMS_VERSION`]).
pub fn claims(
    nonce: [u8; 32],
    tls_exporter: [u8; 32],
    enclave_key: Option<EnclaveKey>,
    model_digests: Vec<Sha384>,
    config_digest: Sha384,
) -> Claims {
    Claims {
        version: CLAIMS_VERSION,
        nonce,
        tls_exporter,
        enclave_key,
        model_digests,
        config_digest,
    }
}

/// Builds evidence for `claims`: REPORT_DATA = SHA-512("cloister-evidence-v1" || postcard(claims)), a report
/// from the firmware with exactly that REPORT_DATA, its chain, and the claims. Used by key release and by
/// `POST /v2/attestation` alike.
pub fn make_evidence(firmware: &dyn Firmware, claims: Claims) -> Result<Evidence, FirmwareError> {
    let report_data = claims.report_data().map_err(|_| FirmwareError::Claims)?;
    let (report, cert_chain) = firmware.attest(&report_data)?;
    Ok(Evidence {
        platform: firmware.platform(),
        report,
        cert_chain,
        claims,
    })
}

/// [`make_evidence`] off the async runtime (signing a report may block: an ioctl, or ECDSA in software).
pub async fn make_evidence_async(
    firmware: Arc<dyn Firmware>,
    claims: Claims,
) -> Result<Evidence, FirmwareError> {
    tokio::task::spawn_blocking(move || make_evidence(firmware.as_ref(), claims))
        .await
        .map_err(|_| FirmwareError::Task)?
}

#[cfg(feature = "simulator")]
mod sim {
    //! The simulated backend: `cloister_attestation::sim::SimPlatform` with this launch's measurement.
    use std::path::Path;

    use cloister_attestation::sim::{
        simulated_launch_measurement, ReportRequest, SimPlatform, SimSigningKey,
    };

    use super::{CertChainDer, Firmware, FirmwareError, Platform};

    /// The simulated AMD-SP, with the measurement of this launch.
    pub(super) struct SimulatedFirmware {
        platform: SimPlatform,
        measurement: [u8; 48],
        chain: CertChainDer,
    }

    impl SimulatedFirmware {
        pub(super) fn open(sim_dir: &Path, config_bytes: &[u8]) -> Result<Self, FirmwareError> {
            let platform =
                SimPlatform::open(sim_dir).map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
            let chain = platform
                .certificate_chain(SimSigningKey::Vcek)
                .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
            // What was launched: the bytes of the running executable (/proc/self/exe names the inode that
            // runs even if the file was replaced since) and the measured configuration.
            let exe = std::fs::read("/proc/self/exe")
                .or_else(|_| std::env::current_exe().and_then(std::fs::read))
                .map_err(FirmwareError::ReadExecutable)?;
            let measurement = simulated_launch_measurement(&exe, config_bytes);
            tracing::info!(
                measurement = %hex::encode(measurement),
                "simulated platform opened (SIMULATED: no hardware protection)"
            );
            Ok(SimulatedFirmware {
                platform,
                measurement,
                chain,
            })
        }
    }

    impl Firmware for SimulatedFirmware {
        fn platform(&self) -> Platform {
            Platform::SnpSimulated
        }

        fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
            let report = self
                .platform
                .report(&ReportRequest {
                    report_data: *report_data,
                    measurement: self.measurement,
                    ..ReportRequest::default()
                })
                .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
            Ok((report.to_vec(), self.chain.clone()))
        }
    }
}

#[cfg(not(feature = "simulator"))]
mod sim {
    use std::path::Path;

    use super::{CertChainDer, Firmware, FirmwareError, Platform};

    /// Never constructed: this build has no simulator.
    pub(super) enum SimulatedFirmware {}

    impl SimulatedFirmware {
        pub(super) fn open(_: &Path, _: &[u8]) -> Result<Self, FirmwareError> {
            Err(FirmwareError::Unavailable {
                backend: "simulated",
                missing: "this build was made without the `simulator` feature",
            })
        }
    }

    impl Firmware for SimulatedFirmware {
        fn platform(&self) -> Platform {
            match *self {}
        }
        fn attest(&self, _: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
            match *self {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the REPORT_DATA it was asked for and returns it as the "report".
    struct Recorder(Mutex<Vec<[u8; 64]>>);

    impl Firmware for Recorder {
        fn platform(&self) -> Platform {
            Platform::SnpSimulated
        }
        fn attest(&self, rd: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
            self.0.lock().unwrap().push(*rd);
            Ok((
                rd.to_vec(),
                CertChainDer {
                    ark: vec![],
                    intermediate: vec![],
                    leaf: vec![1],
                },
            ))
        }
    }

    #[test]
    fn evidence_commits_to_the_claims() {
        let fw = Recorder(Mutex::new(vec![]));
        let c = claims(
            [1; 32],
            [2; 32],
            None,
            vec![Sha384([3; 48])],
            Sha384([4; 48]),
        );
        let ev = make_evidence(&fw, c.clone()).unwrap();
        assert_eq!(ev.claims, c);
        assert_eq!(ev.report, c.report_data().unwrap().to_vec());
        assert_eq!(fw.0.lock().unwrap()[0], c.report_data().unwrap());
        assert_eq!(ev.platform, Platform::SnpSimulated);
    }

    #[test]
    fn hardware_backends_fail_clearly() {
        for cfg in [FirmwareConfig::ConfigfsTsm, FirmwareConfig::SevGuest] {
            let err = open(&cfg, b"").err().unwrap().to_string();
            assert!(err.contains(cfg.name()), "{err}");
            assert!(err.contains("not implemented yet"), "{err}");
        }
    }
}

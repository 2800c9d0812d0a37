//! The firmware interface: 64 bytes of REPORT_DATA in, a signed attestation report and its certificate
//! chain out; and the one place where evidence is built (claims → REPORT_DATA → report → [`Evidence`]).
//!
//! Which backend runs is part of the **measured** configuration (`firmware = …`), so a verifier that
//! accepts the measurement also accepts the choice; the simulated platform must be chosen explicitly and is
//! never a fallback. Backends:
//! - `simulated`: the software AMD-SP of `cloister sim` (state directory `sim_dir`). Its launch measurement
//!   is computed, once at startup, from the bytes of this very executable and of the measured
//!   configuration, the way `cloister measure` computes it.
//! - `configfs-tsm` ([`configfs_tsm`], preferred, Linux ≥ 6.7): reports through
//!   `/sys/kernel/config/tsm/report`, with the certificate table the host attaches ([`cert_table`]).
//! - `sev-guest` ([`sev_guest`]): SNP_GET_REPORT on `/dev/sev-guest`, certificates from the VCEK cache.
//!
//! Certificates of the hardware backends ([`chain`]): the host's table first, then the measured
//! configuration's `vcek_cache`; failing both, [`Attester`] fetches the VCEK through the host's
//! `/collateral` service (`collateral = "host"`, the default) and verifies it against AMD's root, the
//! report's CHIP_ID and its REPORTED_TCB before the evidence carries it — verifiers then need no KDS of their
//! own. A missing interface is an error that names it; no backend ever falls back to another.

pub mod azure;
pub mod cert_table;
pub mod chain;
pub mod coco_aa;
pub mod configfs_tsm;
pub mod sev_guest;

use std::path::PathBuf;
use std::sync::Arc;

use cloister_attestation::evidence::{
    CertChainDer, Claims, EnclaveKey, Evidence, Platform, Sha384, CLAIMS_VERSION,
};

use cloister_attestation::snp::certs::AmdCertificate;
use cloister_attestation::snp::report::{AttestationReport, SigningKey, REPORT_LEN};
use cloister_collateral::{Collateral, KeyTree};

use crate::config::FirmwareConfig;

/// A source of attestation reports.
pub trait Firmware: Send + Sync {
    /// The platform the reports come from (carried in the evidence, for clear error messages only).
    fn platform(&self) -> Platform;

    /// A report whose REPORT_DATA is exactly `report_data`, and the certificates that sign it. An empty
    /// leaf means the firmware has no certificate for the key that signed it ([`Attester`] completes it).
    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError>;

    /// The vTPM quote that goes with a report made by [`Firmware::attest`] for the same `report_data`
    /// (Azure); `None` for bare SEV-SNP.
    fn attest_vtpm(
        &self,
        _report_data: &[u8; 64],
    ) -> Result<Option<cloister_attestation::azure::TpmQuote>, FirmwareError> {
        Ok(None)
    }

    /// The simulated ARK this firmware's reports chain to (simulated platform only): what the collateral
    /// path must trust besides AMD's roots for them.
    fn simulated_root(&self) -> Option<AmdCertificate> {
        None
    }
}

/// The firmware, and where a certificate it did not give comes from.
#[derive(Clone)]
pub struct Attester {
    firmware: Arc<dyn Firmware>,
    collateral: Option<Arc<Collateral>>,
    thim: Option<String>,
    receipt_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attester")
            .field("collateral", &self.collateral)
            .finish_non_exhaustive()
    }
}

impl From<Arc<dyn Firmware>> for Attester {
    /// The firmware alone (`collateral = "off"`).
    fn from(firmware: Arc<dyn Firmware>) -> Self {
        Attester::new(firmware, None)
    }
}

impl<F: Firmware + 'static> From<Arc<F>> for Attester {
    /// The firmware alone (`collateral = "off"`).
    fn from(firmware: Arc<F>) -> Self {
        Attester::new(firmware, None)
    }
}

impl Attester {
    /// `firmware`, completed from `collateral` when it gives no leaf certificate.
    pub fn new(firmware: Arc<dyn Firmware>, collateral: Option<Arc<Collateral>>) -> Self {
        Attester {
            firmware,
            collateral,
            thim: None,
            receipt_key: None,
        }
    }

    /// Puts `key` (the enclave's record-signing key) in the claims of every evidence from now on.
    pub fn set_receipt_key(&mut self, key: Vec<u8>) {
        self.receipt_key = Some(key);
    }

    /// `firmware`, its VCEK from Azure's THIM endpoint at `url` when it gives none (`collateral = "thim"`).
    pub fn with_thim(firmware: Arc<dyn Firmware>, url: &str) -> Self {
        Attester {
            firmware,
            collateral: None,
            thim: Some(url.to_owned()),
            receipt_key: None,
        }
    }

    /// Evidence for `claims` ([`make_evidence`]), its chain completed: the leaf from the collateral path
    /// when the firmware gave none (and, on the simulated platform, the simulated ASK and ARK with it).
    pub async fn evidence(&self, mut claims: Claims) -> Result<Evidence, FirmwareError> {
        if claims.receipt_key.is_none() {
            claims.receipt_key.clone_from(&self.receipt_key);
        }
        let mut evidence = make_evidence_async(Arc::clone(&self.firmware), claims).await?;
        if evidence.cert_chain.leaf.is_empty() {
            self.complete(&mut evidence).await?;
        }
        Ok(evidence)
    }

    async fn complete(&self, evidence: &mut Evidence) -> Result<(), FirmwareError> {
        let snp = evidence
            .snp_report()
            .map_err(|e| FirmwareError::BadReport(e.to_string()))?;
        let report = AttestationReport::from_bytes(snp)
            .map_err(|e| FirmwareError::BadReport(e.to_string()))?;
        let key = match report.signing_key {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => return Err(FirmwareError::UnsignedReport),
        };
        let no_certificate = |detail: &str| FirmwareError::NoCertificate {
            key,
            detail: detail.to_owned(),
        };
        if self.collateral.is_none() && self.thim.is_none() {
            return Err(no_certificate(
                "the firmware gave none (no certificate table from the host, no `vcek_cache`) and \
                 collateral = \"off\"",
            ));
        }
        if report.signing_key == SigningKey::Vlek {
            return Err(no_certificate(
                "the firmware gave none, and AMD's KDS does not serve VLEKs (a VLEK comes from the host's \
                 certificate table or `vcek_cache`)",
            ));
        }
        let product = report.cpuid_product().ok_or_else(|| {
            no_certificate(
                "the firmware gave none, and a version 2 report does not name its product, so its VCEK \
                 cannot be looked up",
            )
        })?;
        if let Some(url) = &self.thim {
            let offered = cloister_collateral::thim::fetch_vcek(url)
                .await
                .map_err(|e| FirmwareError::Collateral(e.to_string()))?;
            let id = cloister_collateral::VcekId::of(&report, product)
                .map_err(|e| FirmwareError::Collateral(e.to_string()))?;
            let ask = &cloister_attestation::snp::roots::embedded(product).ask;
            let vcek = cloister_collateral::verify::vcek(offered.der(), &id, &[ask]).map_err(
                |reason| {
                    FirmwareError::Collateral(format!("refused what THIM ({url}) served: {reason}"))
                },
            )?;
            evidence.cert_chain.leaf = vcek.der().to_vec();
            return Ok(());
        }
        let Some(collateral) = &self.collateral else {
            return Ok(());
        };
        let vcek = collateral
            .vcek(&report, product)
            .await
            .map_err(|e| FirmwareError::Collateral(e.to_string()))?;
        evidence.cert_chain.leaf = vcek.der().to_vec();
        // A simulated chain ends in a root no verifier embeds: its ASK and ARK travel with the evidence.
        if self.firmware.simulated_root().is_some() && evidence.cert_chain.intermediate.is_empty() {
            let chain = collateral
                .chain(KeyTree::Vcek, product)
                .await
                .map_err(|e| FirmwareError::Collateral(e.to_string()))?;
            evidence.cert_chain.intermediate = chain.intermediate.der().to_vec();
            evidence.cert_chain.ark = chain.ark.der().to_vec();
        }
        Ok(())
    }
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
    /// Confidential Containers' attestation agent did not give a usable report (`coco-aa`).
    #[error("attestation agent: {0}")]
    CocoAa(String),
    /// The configfs-tsm report directory does not exist.
    #[error("no {}: kernel without configfs-tsm or not an SNP guest (Linux >= 6.7 with the sev-guest driver \
             provides it; is configfs mounted at /sys/kernel/config?)", root.display())]
    NoConfigfsTsm {
        /// The report directory.
        root: PathBuf,
    },
    /// configfs-tsm exists but no TSM driver is registered (mkdir answers ENXIO).
    #[error("{}: no TSM provider is registered (the sev-guest driver is not loaded: not an SNP guest?)", root.display())]
    NoTsmProvider {
        /// The report directory.
        root: PathBuf,
    },
    /// The configfs-tsm provider is not the SEV-SNP guest driver.
    #[error("configfs-tsm provider is \"{found}\", expected \"sev_guest\" (this is not an SEV-SNP guest)")]
    WrongProvider {
        /// The provider found.
        found: String,
    },
    /// A configfs operation failed.
    #[error("configfs-tsm: {op} {}", path.display())]
    Configfs {
        /// What was done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Other writers changed our report entry during every attempt.
    #[error("configfs-tsm: the report entry was changed by another writer during each of {attempts} attempts")]
    Raced {
        /// How many attempts were made.
        attempts: u32,
    },
    /// A VMPL above 0 was asked for but the provider has no `privlevel`.
    #[error(
        "configfs-tsm: vmpl = {vmpl} is configured but the provider has no privlevel attribute"
    )]
    NoPrivlevel {
        /// The configured VMPL.
        vmpl: u32,
    },
    /// VMPL out of range.
    #[error("vmpl must be 0..=3 (found {0})")]
    Vmpl(u32),
    /// The device node of the sev-guest driver is missing.
    #[error("no /dev/sev-guest: not an SNP guest, or the sev-guest driver is not loaded (modprobe sev-guest)")]
    NoSevGuest,
    /// The /dev/sev-guest ioctl failed.
    #[error("sev-guest: {0}")]
    SevGuest(String),
    /// The firmware returned a report of the wrong size.
    #[error("the firmware returned {len} bytes, not a {REPORT_LEN}-byte attestation report")]
    ReportLength {
        /// The length returned.
        len: usize,
    },
    /// The firmware's report does not decode.
    #[error("the firmware's report does not decode: {0}")]
    BadReport(String),
    /// The report's REPORT_DATA is not what we asked for.
    #[error(
        "the firmware's report carries other REPORT_DATA than requested (a concurrent request?)"
    )]
    ReportDataMismatch,
    /// The report is unsigned (SIGNING_KEY = none).
    #[error("the firmware's report is unsigned (SIGNING_KEY = none)")]
    UnsignedReport,
    /// The host's certificate table is malformed.
    #[error(transparent)]
    CertTable(#[from] cert_table::CertTableError),
    /// No certificate for the key that signed the report.
    #[error("no {key} certificate: {detail}")]
    NoCertificate {
        /// "VCEK" or "VLEK".
        key: &'static str,
        /// Where we looked.
        detail: String,
    },
    /// The Azure vTPM failed (the message says which step).
    #[error("Azure vTPM: {0}")]
    Azure(String),
    /// The collateral path (the host's `/collateral` service) did not give a certificate that verifies.
    #[error("the VCEK through the host's collateral service: {0}")]
    Collateral(String),
    /// A certificate of the VCEK cache cannot be read or parsed.
    #[error("VCEK cache: {}: {detail}", path.display())]
    CertCache {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A certificate does not parse.
    #[error("the {what} certificate from {source_name} does not parse: {detail}")]
    BadCertificate {
        /// Which certificate.
        what: &'static str,
        /// Where it came from.
        source_name: &'static str,
        /// The parser's error.
        detail: String,
    },
}

/// Opens the backend the measured configuration names. `config_bytes` are the exact configuration bytes
/// (an input of the simulated launch measurement).
pub fn open(
    config: &FirmwareConfig,
    config_bytes: &[u8],
) -> Result<Arc<dyn Firmware>, FirmwareError> {
    match config {
        FirmwareConfig::Simulated {
            sim_dir,
            withhold_certificates,
        } => Ok(Arc::new(sim::SimulatedFirmware::open(
            sim_dir,
            config_bytes,
            *withhold_certificates,
        )?)),
        FirmwareConfig::ConfigfsTsm(options) => Ok(Arc::new(configfs_tsm::ConfigfsTsm::open(
            configfs_tsm::ConfigfsTsmOptions {
                vmpl: options.vmpl,
                vcek_cache: options.vcek_cache.clone(),
                ..configfs_tsm::ConfigfsTsmOptions::default()
            },
        )?)),
        FirmwareConfig::CocoAa(options) => Ok(Arc::new(coco_aa::CocoAa::open(options)?)),
        FirmwareConfig::SevGuest(options) => Ok(Arc::new(sev_guest::SevGuest::open(
            options.vmpl,
            options.vcek_cache.clone(),
        )?)),
        FirmwareConfig::AzureVtpm(options) => match &options.simulated {
            None => Ok(Arc::new(azure::AzureVtpm::open_device(
                &options.tpm_device,
            )?)),
            #[cfg(feature = "insecure-simulator")]
            Some((swtpm, sim_dir)) => Ok(Arc::new(azure::AzureVtpm::open_simulated(
                swtpm,
                sim_dir,
                config_bytes,
            )?)),
            #[cfg(not(feature = "insecure-simulator"))]
            Some(_) => Err(FirmwareError::Unavailable {
                backend: "azure-vtpm (simulated, tpm_swtpm)",
                missing: "this build was made without the `insecure-simulator` feature",
            }),
        },
    }
}

/// Claims for one piece of evidence (always [`CLAIMS_VERSION`]), with no `model_signers`.
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
        receipt_key: None,
        // Set by the session-attestation handler once models are loaded (key release happens before
        // any model is decrypted, so its evidence has no signature to speak for).
        model_signers: Vec::new(),
    }
}

/// Builds evidence for `claims`: REPORT_DATA = SHA-512("cloister-evidence-v1" || postcard(claims)), a report
/// from the firmware with exactly that REPORT_DATA (on Azure: in the vTPM quote and the HCL report's
/// user-data), its chain, and the claims. Used by key release and by `POST /v2/attestation` alike.
pub fn make_evidence(firmware: &dyn Firmware, claims: Claims) -> Result<Evidence, FirmwareError> {
    let report_data = claims.report_data().map_err(|_| FirmwareError::Claims)?;
    let (report, cert_chain) = firmware.attest(&report_data)?;
    let vtpm = firmware.attest_vtpm(&report_data)?;
    Ok(Evidence {
        platform: firmware.platform(),
        report,
        cert_chain,
        claims,
        vtpm,
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

#[cfg(feature = "insecure-simulator")]
mod sim {
    //! The simulated backend: `cloister_sim::SimPlatform` with this launch's measurement.
    use std::path::Path;

    use cloister_sim::{simulated_launch_measurement, ReportRequest, SimPlatform, SimSigningKey};

    use super::{AmdCertificate, CertChainDer, Firmware, FirmwareError, Platform};

    /// The environment variable through which the simulated hypervisor (cloister-host's sim launcher, or a
    /// test) sets this launch's HOST_DATA, 64 hex digits; unset means zeros. Kata sets HOST_DATA from the
    /// initdata annotation the same way, outside the guest's control.
    pub(super) const SIM_HOST_DATA_ENV: &str = "CLOISTER_SIM_HOST_DATA";

    /// The simulated AMD-SP, with the measurement and HOST_DATA of this launch.
    pub(super) struct SimulatedFirmware {
        platform: SimPlatform,
        measurement: [u8; 48],
        host_data: [u8; 32],
        chain: CertChainDer,
        withhold_certificates: bool,
    }

    impl SimulatedFirmware {
        pub(super) fn open(
            sim_dir: &Path,
            config_bytes: &[u8],
            withhold_certificates: bool,
        ) -> Result<Self, FirmwareError> {
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
            let host_data = match std::env::var(SIM_HOST_DATA_ENV) {
                Err(_) => [0; 32],
                Ok(v) => {
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(v.trim(), &mut out).map_err(|_| {
                        FirmwareError::Simulator(
                            format!("{SIM_HOST_DATA_ENV} must be 64 hex digits, found {v:?}")
                                .into(),
                        )
                    })?;
                    out
                }
            };
            tracing::info!(
                measurement = %hex::encode(measurement),
                "simulated platform opened (SIMULATED: no hardware protection)"
            );
            Ok(SimulatedFirmware {
                platform,
                measurement,
                host_data,
                chain,
                withhold_certificates,
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
                    host_data: self.host_data,
                    ..ReportRequest::default()
                })
                .map_err(|e| FirmwareError::Simulator(Box::new(e)))?;
            if self.withhold_certificates {
                return Ok((report.to_vec(), CertChainDer::default()));
            }
            Ok((report.to_vec(), self.chain.clone()))
        }

        fn simulated_root(&self) -> Option<AmdCertificate> {
            Some(self.platform.root().clone())
        }
    }
}

#[cfg(not(feature = "insecure-simulator"))]
mod sim {
    use std::path::Path;

    use super::{CertChainDer, Firmware, FirmwareError, Platform};

    /// Never constructed: this build has no simulator.
    pub(super) enum SimulatedFirmware {}

    impl SimulatedFirmware {
        pub(super) fn open(_: &Path, _: &[u8], _: bool) -> Result<Self, FirmwareError> {
            Err(FirmwareError::Unavailable {
                backend: "simulated",
                missing: "this build was made without the `insecure-simulator` feature (a production build, as \
                          `cargo build -p cloister-enclave` makes; `cargo build --workspace` includes it)",
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

    /// This machine is no SNP guest: both hardware backends must say so, naming what is missing.
    #[test]
    #[cfg_attr(
        feature = "hw-tests",
        ignore = "runs on an SNP guest, where the interfaces exist"
    )]
    fn hardware_backends_fail_clearly_without_hardware() {
        use crate::config::HardwareOptions;
        let options = HardwareOptions {
            vcek_cache: Some("/nonexistent".into()),
            vmpl: 0,
        };
        let err = open(&FirmwareConfig::ConfigfsTsm(options.clone()), b"")
            .err()
            .unwrap()
            .to_string();
        if std::path::Path::new(configfs_tsm::DEFAULT_ROOT).exists() {
            assert!(err.contains("configfs-tsm"), "{err}");
        } else {
            assert!(
                err.contains("no /sys/kernel/config/tsm/report: kernel without configfs-tsm or not an SNP guest"),
                "{err}"
            );
        }
        let err = open(&FirmwareConfig::SevGuest(options), b"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/dev/sev-guest"), "{err}");
    }
}

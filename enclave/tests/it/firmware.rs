//! The hardware firmware backends without hardware: configfs-tsm against a fake configfs that behaves like
//! the kernel's (`drivers/virt/coco/tsm.c` + the sev-guest provider), with the simulated AMD-SP standing in
//! for the real one. The evidence that comes out must pass the production verifier (simulated root given
//! explicitly). `/dev/sev-guest` itself is exercised only with `--features hw-tests` on an SNP guest.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cloister_attestation::evidence::{verify_evidence, ExpectedSession, Platform, Sha384};
use cloister_attestation::snp::certs::CertRole;
use cloister_attestation::snp::report::AttestationReport;
use cloister_attestation::snp::Product;
use cloister_attestation::{Policy, VerifyOptions};
use cloister_enclave::firmware::cert_table;
use cloister_enclave::firmware::configfs_tsm::{
    ConfigfsIo, ConfigfsTsm, ConfigfsTsmOptions, MAX_ATTEMPTS,
};
use cloister_enclave::firmware::{self, Firmware, FirmwareError};
use cloister_sim::{ReportRequest, SimConfig, SimPlatform, SimSigningKey};
use ring::rand::SystemRandom;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One simulated platform (with a VLEK) for all tests: generating its RSA keys takes seconds.
fn platform() -> &'static SimPlatform {
    static P: OnceLock<(tempfile::TempDir, SimPlatform)> = OnceLock::new();
    &P.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SimConfig::new(Product::Genoa, now() - 3600);
        config.vlek = true;
        let p = SimPlatform::init(&dir.path().join("sim"), &config, &SystemRandom::new()).unwrap();
        (dir, p)
    })
    .1
}

const MEASUREMENT: [u8; 48] = [0x4d; 48];

/// When the fake lets "another writer" change our entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RaceAt {
    /// Right after the kernel generated the outblob (before our second generation read).
    OutblobRead,
    /// Before our first generation read (after our inblob write).
    FirstGenerationRead,
}

/// What the host attaches as the certificate table.
#[derive(Clone, Debug)]
enum HostCerts {
    None,
    Table(Vec<u8>),
}

/// A fake configfs-tsm: a real directory tree in a temp dir, plus the kernel's side effects (attribute
/// files on mkdir, `generation` bumped on every write, blobs regenerated on read when stale, ENXIO-like
/// errors, rmdir of a populated item).
struct FakeKernel {
    root: PathBuf,
    provider: &'static str,
    signing_key: SimSigningKey,
    host_certs: HostCerts,
    truncate_outblob: Option<usize>,
    show_privlevel: bool,
    race: Mutex<Option<(RaceAt, u32)>>,
    /// Per entry: (write generation, generation of the cached blobs).
    entries: Mutex<HashMap<PathBuf, (u64, Option<u64>)>>,
    removed: Mutex<u32>,
}

impl FakeKernel {
    fn new(root: &Path) -> FakeKernel {
        std::fs::create_dir_all(root).unwrap();
        FakeKernel {
            root: root.to_path_buf(),
            provider: "sev_guest",
            signing_key: SimSigningKey::Vcek,
            host_certs: HostCerts::Table(vcek_table()),
            truncate_outblob: None,
            show_privlevel: true,
            race: Mutex::new(None),
            entries: Mutex::new(HashMap::new()),
            removed: Mutex::new(0),
        }
    }

    fn entry_of(&self, path: &Path) -> PathBuf {
        path.parent().unwrap().to_path_buf()
    }

    fn bump(&self, entry: &Path) -> io::Result<()> {
        let mut entries = self.entries.lock().unwrap();
        let e = entries
            .get_mut(entry)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        e.0 += 1;
        std::fs::write(entry.join("generation"), format!("{}\n", e.0))
    }

    /// Another process writes to our entry's inblob.
    fn other_writer(&self, entry: &Path) -> io::Result<()> {
        std::fs::write(entry.join("inblob"), [0xee; 64])?;
        self.bump(entry)
    }

    fn maybe_race(&self, at: RaceAt, entry: &Path) -> io::Result<()> {
        let mut race = self.race.lock().unwrap();
        if let Some((when, left)) = race.as_mut() {
            if *when == at && *left > 0 {
                *left -= 1;
                drop(race);
                return self.other_writer(entry);
            }
        }
        Ok(())
    }

    /// The kernel's `tsm_report_read` slow path: regenerate the blobs when the generation moved.
    fn regenerate(&self, entry: &Path) -> io::Result<()> {
        let (write_gen, read_gen) = self.entries.lock().unwrap()[entry];
        if read_gen == Some(write_gen) {
            return Ok(());
        }
        let inblob = std::fs::read(entry.join("inblob"))?;
        let report_data: [u8; 64] = inblob
            .try_into()
            .map_err(|_| io::Error::from_raw_os_error(22))?; // EINVAL: sev_report_new wants 64 bytes
        let vmpl: u32 = std::fs::read_to_string(entry.join("privlevel"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut report = platform()
            .report(&ReportRequest {
                report_data,
                vmpl,
                measurement: MEASUREMENT,
                signing_key: self.signing_key,
                ..ReportRequest::default()
            })
            .unwrap()
            .to_vec();
        if let Some(n) = self.truncate_outblob {
            report.truncate(n);
        }
        std::fs::write(entry.join("outblob"), report)?;
        let aux = match &self.host_certs {
            HostCerts::None => Vec::new(),
            HostCerts::Table(t) => t.clone(),
        };
        std::fs::write(entry.join("auxblob"), aux)?;
        self.entries.lock().unwrap().get_mut(entry).unwrap().1 = Some(write_gen);
        Ok(())
    }
}

impl ConfigfsIo for FakeKernel {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if path.parent() != Some(self.root.as_path()) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        std::fs::create_dir(path)?;
        std::fs::write(path.join("provider"), format!("{}\n", self.provider))?;
        std::fs::write(path.join("generation"), "0\n")?;
        std::fs::write(path.join("inblob"), b"")?;
        std::fs::write(path.join("outblob"), b"")?;
        std::fs::write(path.join("auxblob"), b"")?;
        if self.show_privlevel {
            std::fs::write(path.join("privlevel"), b"")?;
            std::fs::write(path.join("privlevel_floor"), "0\n")?;
        }
        self.entries
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (0, None));
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        // configfs removes an item with its attributes.
        std::fs::remove_dir_all(path)?;
        self.entries.lock().unwrap().remove(path);
        *self.removed.lock().unwrap() += 1;
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let entry = self.entry_of(path);
        match path.file_name().and_then(|n| n.to_str()) {
            Some("outblob") | Some("auxblob") => {
                if std::fs::read(entry.join("inblob"))?.is_empty() {
                    return Err(io::Error::from_raw_os_error(22)); // EINVAL: no inblob yet
                }
                self.regenerate(&entry)?;
                let data = std::fs::read(path)?;
                if path.ends_with("outblob") {
                    self.maybe_race(RaceAt::OutblobRead, &entry)?;
                }
                Ok(data)
            }
            Some("generation") => {
                let before = self.entries.lock().unwrap()[&entry].0;
                if before == 1 || before == 2 {
                    self.maybe_race(RaceAt::FirstGenerationRead, &entry)?;
                }
                std::fs::read(path)
            }
            Some("inblob") | Some("privlevel") => {
                Err(io::Error::from(io::ErrorKind::PermissionDenied))
            }
            _ => std::fs::read(path),
        }
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let entry = self.entry_of(path);
        match path.file_name().and_then(|n| n.to_str()) {
            Some("inblob") => {
                if data.len() > 64 {
                    return Err(io::Error::from_raw_os_error(27)); // EFBIG
                }
            }
            Some("privlevel") => {
                let v: u32 = std::str::from_utf8(data)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| io::Error::from_raw_os_error(22))?;
                if v > 3 {
                    return Err(io::Error::from_raw_os_error(22));
                }
            }
            _ => return Err(io::Error::from(io::ErrorKind::PermissionDenied)),
        }
        std::fs::write(path, data)?;
        self.bump(&entry)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

fn der(role: CertRole) -> Vec<u8> {
    platform().certificate(role).unwrap().der().to_vec()
}

fn vcek_table() -> Vec<u8> {
    cert_table::encode(&[
        (cert_table::ARK, &der(CertRole::Ark)),
        (cert_table::ASK, &der(CertRole::Ask)),
        (cert_table::VCEK, &der(CertRole::Vcek)),
    ])
}

fn options(root: &Path) -> ConfigfsTsmOptions {
    ConfigfsTsmOptions {
        root: root.to_path_buf(),
        ..ConfigfsTsmOptions::default()
    }
}

/// Evidence for fixed claims through `tsm`, checked with the production verifier.
fn evidence_verifies(
    tsm: &ConfigfsTsm,
) -> Result<cloister_attestation::evidence::Evidence, cloister_attestation::Error> {
    let nonce = [7u8; 32];
    let exporter = [9u8; 32];
    let claims = firmware::claims(nonce, exporter, None, vec![], Sha384([1; 48]));
    let mut evidence = firmware::make_evidence(tsm, claims).unwrap();
    let options = VerifyOptions {
        at_unix: now(),
        crls: &[],
        simulated_root: Some(platform().root()),
    };
    let expected = ExpectedSession {
        nonce: &nonce,
        tls_exporter: &exporter,
    };
    let policy = Policy::baseline();
    // A hardware backend labels its evidence "snp"; this report chains to the simulated root, so the
    // verifier refuses the label (the label never decides trust, but it must not lie) ...
    assert_eq!(evidence.platform, Platform::Snp);
    let err = verify_evidence(&evidence, &policy, &options, &expected).unwrap_err();
    assert!(
        matches!(err, cloister_attestation::Error::PlatformMismatch { .. }),
        "{err}"
    );
    // ... and with the honest label the very same report and chain pass the production verifier.
    evidence.platform = Platform::SnpSimulated;
    verify_evidence(&evidence, &policy, &options, &expected)?;
    Ok(evidence)
}

fn entries_left(root: &Path) -> usize {
    std::fs::read_dir(root).unwrap().count()
}

#[test]
fn configfs_tsm_evidence_with_host_certificates_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsm/report");
    let kernel = Arc::new(FakeKernel::new(&root));
    let tsm = ConfigfsTsm::open_with(options(&root), kernel.clone()).unwrap();
    let evidence = evidence_verifies(&tsm).unwrap();
    // The chain is the host's: all three certificates, as the table carried them.
    assert_eq!(evidence.cert_chain.leaf, der(CertRole::Vcek));
    assert_eq!(evidence.cert_chain.intermediate, der(CertRole::Ask));
    assert_eq!(evidence.cert_chain.ark, der(CertRole::Ark));
    let report = AttestationReport::from_bytes(&evidence.report).unwrap();
    assert_eq!(report.measurement, MEASUREMENT);
    // Every entry (the probe at open and the report's) was removed.
    assert_eq!(entries_left(&root), 0);
    assert_eq!(*kernel.removed.lock().unwrap(), 2);
}

#[test]
fn configfs_tsm_vlek_chain_from_the_host_table() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("report");
    let mut kernel = FakeKernel::new(&root);
    kernel.signing_key = SimSigningKey::Vlek;
    // No ASVK GUID exists: the ASVK travels under the ASK GUID.
    kernel.host_certs = HostCerts::Table(cert_table::encode(&[
        (cert_table::VLEK, &der(CertRole::Vlek)),
        (cert_table::ASK, &der(CertRole::Asvk)),
        (cert_table::ARK, &der(CertRole::Ark)),
    ]));
    let tsm = ConfigfsTsm::open_with(options(&root), Arc::new(kernel)).unwrap();
    let evidence = evidence_verifies(&tsm).unwrap();
    assert_eq!(evidence.cert_chain.leaf, der(CertRole::Vlek));
}

#[test]
fn configfs_tsm_certificates_from_the_vcek_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("report");
    let mut kernel = FakeKernel::new(&root);
    kernel.host_certs = HostCerts::None;
    let kernel = Arc::new(kernel);

    // No table and no cache: the report comes without a leaf, and with the collateral path off, evidence is
    // a clear error naming where it looked.
    let tsm = ConfigfsTsm::open_with(options(&root), kernel.clone()).unwrap();
    let (_, chain) = tsm.attest(&[0; 64]).unwrap();
    assert!(chain.leaf.is_empty());
    let attester = firmware::Attester::new(Arc::new(tsm), None);
    let claims = firmware::claims([0; 32], [0; 32], None, vec![], Sha384([0; 48]));
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(attester.evidence(claims))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no VCEK certificate"), "{err}");
    assert!(
        err.contains("no `vcek_cache`") && err.contains("collateral = \"off\""),
        "{err}"
    );

    // The simulated platform's certs/ directory is in the snpguest layout (ark.pem, ask.pem, vcek.pem).
    let tsm = ConfigfsTsm::open_with(
        ConfigfsTsmOptions {
            vcek_cache: Some(platform().certs_dir()),
            ..options(&root)
        },
        kernel.clone(),
    )
    .unwrap();
    let evidence = evidence_verifies(&tsm).unwrap();
    assert_eq!(evidence.cert_chain.leaf, der(CertRole::Vcek));

    // A cache with only the VCEK: ARK and ASK stay empty (the verifier uses its embedded ones).
    let only = dir.path().join("only-vcek");
    std::fs::create_dir(&only).unwrap();
    std::fs::write(only.join("vcek.der"), der(CertRole::Vcek)).unwrap();
    let tsm = ConfigfsTsm::open_with(
        ConfigfsTsmOptions {
            vcek_cache: Some(only.clone()),
            ..options(&root)
        },
        kernel,
    )
    .unwrap();
    let (_, chain) = tsm.attest(&[0; 64]).unwrap();
    assert!(chain.ark.is_empty() && chain.intermediate.is_empty());
    // Two different VCEKs in the cache: refused rather than guessed.
    std::fs::write(
        only.join("vcek.pem"),
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_of(&der(CertRole::Vlek))
                .as_bytes()
                .chunks(64)
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    )
    .unwrap();
    let err = tsm.attest(&[0; 64]).unwrap_err().to_string();
    assert!(err.contains("keep exactly one"), "{err}");
}

fn base64_of(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn configfs_tsm_writes_privlevel() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("report");
    let kernel = Arc::new(FakeKernel::new(&root));
    let tsm = ConfigfsTsm::open_with(
        ConfigfsTsmOptions {
            vmpl: 2,
            ..options(&root)
        },
        kernel,
    )
    .unwrap();
    let (report, _) = tsm.attest(&[3; 64]).unwrap();
    let report = AttestationReport::from_bytes(&report).unwrap();
    assert_eq!(report.vmpl, 2);
    assert_eq!(report.report_data, [3; 64]);

    // A provider without privlevel can only give VMPL 0 reports.
    let mut kernel = FakeKernel::new(&root);
    kernel.show_privlevel = false;
    let kernel = Arc::new(kernel);
    let tsm = ConfigfsTsm::open_with(options(&root), kernel.clone()).unwrap();
    assert!(tsm.attest(&[3; 64]).is_ok());
    let tsm = ConfigfsTsm::open_with(
        ConfigfsTsmOptions {
            vmpl: 1,
            ..options(&root)
        },
        kernel,
    )
    .unwrap();
    let err = tsm.attest(&[3; 64]).unwrap_err().to_string();
    assert!(err.contains("no privlevel"), "{err}");
}

#[test]
fn configfs_tsm_retries_when_another_writer_races() {
    for at in [RaceAt::OutblobRead, RaceAt::FirstGenerationRead] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("report");
        let kernel = Arc::new(FakeKernel::new(&root));
        let tsm = ConfigfsTsm::open_with(options(&root), kernel.clone()).unwrap();

        // Raced on all but the last attempt: the report still comes, and it answers *our* request.
        *kernel.race.lock().unwrap() = Some((at, MAX_ATTEMPTS - 1));
        let evidence = evidence_verifies(&tsm).unwrap();
        assert!(!evidence.report.is_empty());
        assert_eq!(kernel.race.lock().unwrap().unwrap().1, 0, "{at:?}");

        // Raced on every attempt: an error, not someone else's report.
        *kernel.race.lock().unwrap() = Some((at, MAX_ATTEMPTS));
        let err = tsm.attest(&[5; 64]).unwrap_err();
        assert!(
            matches!(err, FirmwareError::Raced { attempts } if attempts == MAX_ATTEMPTS),
            "{at:?}: {err}"
        );
        assert_eq!(entries_left(&root), 0, "{at:?}: entries left behind");
    }
}

#[test]
fn configfs_tsm_refuses_what_is_not_an_snp_guest() {
    let dir = tempfile::tempdir().unwrap();

    // No configfs-tsm at all (older kernel, or configfs not mounted): the error says so.
    let missing = dir.path().join("no/such/report");
    let err = ConfigfsTsm::open(options(&missing))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "no {}: kernel without configfs-tsm or not an SNP guest (Linux >= 6.7 with the sev-guest \
             driver provides it; is configfs mounted at /sys/kernel/config?)",
            missing.display()
        )
    );

    // Another TEE's provider.
    let root = dir.path().join("report");
    let mut kernel = FakeKernel::new(&root);
    kernel.provider = "tdx_guest";
    let err = ConfigfsTsm::open_with(options(&root), Arc::new(kernel))
        .unwrap_err()
        .to_string();
    assert!(err.contains("provider is \"tdx_guest\""), "{err}");
    assert_eq!(entries_left(&root), 0);
}

#[test]
fn configfs_tsm_rejects_bad_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("report");

    // A short outblob.
    let mut kernel = FakeKernel::new(&root);
    kernel.truncate_outblob = Some(1000);
    let tsm = ConfigfsTsm::open_with(options(&root), Arc::new(kernel)).unwrap();
    let err = tsm.attest(&[0; 64]).unwrap_err().to_string();
    assert!(
        err.contains("returned 1000 bytes, not a 1184-byte attestation report"),
        "{err}"
    );

    // A malformed certificate table from the host: the strict parser's error, not a silent cache use.
    let mut kernel = FakeKernel::new(&root);
    let mut table = vcek_table();
    table[20] = 0xff; // first entry's length: now beyond the blob
    kernel.host_certs = HostCerts::Table(table);
    let tsm = ConfigfsTsm::open_with(options(&root), Arc::new(kernel)).unwrap();
    let err = tsm.attest(&[0; 64]).unwrap_err().to_string();
    assert!(err.contains("certificate table"), "{err}");

    // A table whose VCEK entry holds garbage.
    let mut kernel = FakeKernel::new(&root);
    kernel.host_certs = HostCerts::Table(cert_table::encode(&[(cert_table::VCEK, b"not a cert")]));
    let tsm = ConfigfsTsm::open_with(options(&root), Arc::new(kernel)).unwrap();
    let err = tsm.attest(&[0; 64]).unwrap_err().to_string();
    assert!(
        err.contains("from the host's certificate table does not parse"),
        "{err}"
    );
    assert_eq!(entries_left(&root), 0);
}

/// On an SNP guest: a real report through each backend, checked for our REPORT_DATA.
#[cfg(feature = "hw-tests")]
mod hw {
    use cloister_attestation::snp::report::AttestationReport;
    use cloister_enclave::firmware::configfs_tsm::{ConfigfsTsm, ConfigfsTsmOptions};
    use cloister_enclave::firmware::sev_guest::SevGuest;

    #[test]
    fn sev_guest_ioctl_returns_our_report_data() {
        let fw = SevGuest::open(0, "/nonexistent".into()).unwrap();
        let data = [0x5au8; 64];
        let report = fw.raw_report(&data).unwrap();
        let report = AttestationReport::from_bytes(&report).unwrap();
        assert_eq!(report.report_data, data);
    }

    #[test]
    fn configfs_tsm_returns_our_report_data() {
        let Ok(tsm) = ConfigfsTsm::open(ConfigfsTsmOptions::default()) else {
            panic!("configfs-tsm is not available on this guest");
        };
        let data = [0xa5u8; 64];
        let (report, _) = tsm.raw_report(&data).unwrap();
        let report = AttestationReport::from_bytes(&report).unwrap();
        assert_eq!(report.report_data, data);
    }
}

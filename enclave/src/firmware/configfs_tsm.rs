//! The Linux configfs-tsm backend (Linux ≥ 6.7): attestation reports through
//! `/sys/kernel/config/tsm/report`.
//!
//! Protocol (kernel `drivers/virt/coco/tsm.c`, `Documentation/ABI/testing/configfs-tsm`):
//! 1. `mkdir report/<name>`: a fresh entry, private to us by its unique name. Its `generation` is 0 and
//!    counts every write to the entry's attributes.
//! 2. `provider` names the TSM driver: it must be `sev_guest` (else the blobs are not SNP reports).
//! 3. `privlevel` (if the driver shows it) ← the VMPL; `inblob` ← the 64 bytes of REPORT_DATA. Each write
//!    bumps `generation`, so after our own writes it must equal the number of writes we made.
//! 4. Read `generation`, then `outblob` (the report: reading it makes the kernel ask the AMD-SP for it,
//!    SNP_GUEST_REQUEST via the extended request) and `auxblob` (the certificate table the host attached,
//!    absent or empty when there is none), then `generation` again. A changed or unexpected generation
//!    means another writer touched our entry between our write and our reads: the blobs may answer
//!    *their* request. We then start over with a new entry, a few times, then fail.
//! 5. `rmdir` the entry.
//!
//! The REPORT_DATA of the report read back is compared with ours as well: belt and braces against a racer
//! the generation counter did not reveal.
//!
//! Trust: the kernel is inside the CVM (trusted); `auxblob` is the host's (parsed strictly, see
//! [`super::cert_table`]). No fallback: if configfs-tsm is missing the backend fails with an error saying
//! so, it never switches to another backend.
//!
//! File operations go through [`ConfigfsIo`] so that tests can run the real protocol against a fake
//! configfs that behaves like the kernel's (configfs creates attribute files and regenerates blobs as
//! side effects of `mkdir` and reads, which a plain directory cannot do).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cloister_attestation::evidence::{CertChainDer, Platform};
use cloister_attestation::snp::report::{AttestationReport, REPORT_LEN};

use super::cert_table::CertTable;
use super::chain::{self, ChainSource};
use super::{Firmware, FirmwareError};

/// The kernel's configfs-tsm report directory.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";
/// The `provider` of the SEV-SNP guest driver (its module name).
pub const SEV_GUEST_PROVIDER: &str = "sev_guest";
/// How many fresh entries we try when other writers keep changing ours.
pub const MAX_ATTEMPTS: u32 = 3;

/// A report and the host's raw certificate table (empty when the host attached none).
type Blobs = (Vec<u8>, Vec<u8>);

/// The file operations the backend needs, so that tests can stand in for configfs.
pub trait ConfigfsIo: Send + Sync {
    /// `mkdir` (not recursive; fails if `path` exists).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// `rmdir`.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole attribute.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Writes a whole attribute (one open, write, close: configfs commits binary attributes on close).
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Whether `path` exists (attributes a provider does not support are not shown).
    fn exists(&self, path: &Path) -> bool;
}

/// The real configfs (`std::fs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealConfigfs;

impl ConfigfsIo for RealConfigfs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Options of the configfs-tsm backend.
#[derive(Clone, Debug)]
pub struct ConfigfsTsmOptions {
    /// The report directory (default [`DEFAULT_ROOT`]).
    pub root: PathBuf,
    /// VMPL written to `privlevel` (0..=3).
    pub vmpl: u32,
    /// The VCEK cache directory, used when the host attaches no certificate for the signing key.
    pub vcek_cache: Option<PathBuf>,
}

impl Default for ConfigfsTsmOptions {
    fn default() -> Self {
        ConfigfsTsmOptions {
            root: PathBuf::from(DEFAULT_ROOT),
            vmpl: 0,
            vcek_cache: None,
        }
    }
}

/// The configfs-tsm backend.
pub struct ConfigfsTsm {
    options: ConfigfsTsmOptions,
    io: Arc<dyn ConfigfsIo>,
    /// Makes entry names unique within this process (with the pid: across processes).
    counter: AtomicU64,
}

impl std::fmt::Debug for ConfigfsTsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigfsTsm")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ConfigfsTsm {
    /// Opens the backend on the real configfs and checks, with a probe entry, that the provider is
    /// `sev_guest`.
    pub fn open(options: ConfigfsTsmOptions) -> Result<Self, FirmwareError> {
        Self::open_with(options, Arc::new(RealConfigfs))
    }

    /// [`ConfigfsTsm::open`] on another implementation of the file operations (tests: a fake configfs).
    pub fn open_with(
        options: ConfigfsTsmOptions,
        io: Arc<dyn ConfigfsIo>,
    ) -> Result<Self, FirmwareError> {
        if options.vmpl > 3 {
            return Err(FirmwareError::Vmpl(options.vmpl));
        }
        if !io.exists(&options.root) {
            return Err(FirmwareError::NoConfigfsTsm { root: options.root });
        }
        let tsm = ConfigfsTsm {
            options,
            io,
            counter: AtomicU64::new(0),
        };
        // Probe: fail at startup, not at the first client, if this is not an SNP guest.
        let entry = tsm.new_entry()?;
        tsm.check_provider(&entry.path)?;
        drop(entry);
        Ok(tsm)
    }

    /// The options.
    pub fn options(&self) -> &ConfigfsTsmOptions {
        &self.options
    }

    /// One report and the host's raw certificate table (possibly empty), for exactly `report_data`.
    pub fn raw_report(&self, report_data: &[u8; 64]) -> Result<Blobs, FirmwareError> {
        for attempt in 1..=MAX_ATTEMPTS {
            match self.try_once(report_data)? {
                Some(blobs) => return Ok(blobs),
                None => tracing::warn!(
                    attempt,
                    "configfs-tsm: another writer changed our report entry; retrying with a new one"
                ),
            }
        }
        Err(FirmwareError::Raced {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One attempt: `Ok(None)` when the generation shows that someone else wrote to our entry.
    fn try_once(&self, report_data: &[u8; 64]) -> Result<Option<Blobs>, FirmwareError> {
        let entry = self.new_entry()?;
        let dir = &entry.path;
        self.check_provider(dir)?;

        let mut writes = 0u64;
        let privlevel = dir.join("privlevel");
        if self.io.exists(&privlevel) {
            self.write(&privlevel, self.options.vmpl.to_string().as_bytes())?;
            writes += 1;
        } else if self.options.vmpl != 0 {
            return Err(FirmwareError::NoPrivlevel {
                vmpl: self.options.vmpl,
            });
        }
        self.write(&dir.join("inblob"), report_data)?;
        writes += 1;

        let before = self.generation(dir)?;
        let outblob = self.read(&dir.join("outblob"))?;
        let auxblob_path = dir.join("auxblob");
        let auxblob = if self.io.exists(&auxblob_path) {
            self.read(&auxblob_path)?
        } else {
            Vec::new()
        };
        let after = self.generation(dir)?;
        if before != writes || after != before {
            tracing::debug!(writes, before, after, "configfs-tsm generation changed");
            return Ok(None);
        }
        drop(entry);

        if outblob.len() != REPORT_LEN {
            return Err(FirmwareError::ReportLength { len: outblob.len() });
        }
        Ok(Some((outblob, auxblob)))
    }

    fn new_entry(&self) -> Result<Entry<'_>, FirmwareError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = self
            .options
            .root
            .join(format!("cloister-{}-{n}-{nanos:08x}", std::process::id()));
        match self.io.create_dir(&path) {
            Ok(()) => Ok(Entry {
                io: self.io.as_ref(),
                path,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FirmwareError::NoConfigfsTsm {
                root: self.options.root.clone(),
            }),
            // configfs-tsm answers ENXIO when no TSM driver (provider) is registered.
            Err(e) if e.raw_os_error() == Some(6) => Err(FirmwareError::NoTsmProvider {
                root: self.options.root.clone(),
            }),
            Err(source) => Err(FirmwareError::Configfs {
                op: "mkdir",
                path,
                source,
            }),
        }
    }

    fn check_provider(&self, dir: &Path) -> Result<(), FirmwareError> {
        let provider = self.read(&dir.join("provider"))?;
        let provider = String::from_utf8_lossy(&provider).trim().to_owned();
        if provider != SEV_GUEST_PROVIDER {
            return Err(FirmwareError::WrongProvider { found: provider });
        }
        Ok(())
    }

    fn generation(&self, dir: &Path) -> Result<u64, FirmwareError> {
        let path = dir.join("generation");
        let text = self.read(&path)?;
        String::from_utf8_lossy(&text)
            .trim()
            .parse()
            .map_err(|_| FirmwareError::Configfs {
                op: "parse",
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "generation is not a number"),
            })
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>, FirmwareError> {
        self.io
            .read(path)
            .map_err(|source| FirmwareError::Configfs {
                op: "read",
                path: path.to_path_buf(),
                source,
            })
    }

    fn write(&self, path: &Path, data: &[u8]) -> Result<(), FirmwareError> {
        self.io
            .write(path, data)
            .map_err(|source| FirmwareError::Configfs {
                op: "write",
                path: path.to_path_buf(),
                source,
            })
    }
}

/// A report entry, removed when dropped.
struct Entry<'a> {
    io: &'a dyn ConfigfsIo,
    path: PathBuf,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.io.remove_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "configfs-tsm: cannot remove the report entry");
        }
    }
}

impl Firmware for ConfigfsTsm {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn attest(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, CertChainDer), FirmwareError> {
        let (report, auxblob) = self.raw_report(report_data)?;
        let parsed = AttestationReport::from_bytes(&report)
            .map_err(|e| FirmwareError::BadReport(e.to_string()))?;
        // SNP ABI: REPORT_DATA is what the guest asked for. Anything else answers another request.
        if !cloister_attestation::ct_eq(&parsed.report_data, report_data) {
            return Err(FirmwareError::ReportDataMismatch);
        }
        let table = CertTable::parse(&auxblob)?;
        let (chain, source) = chain::select(
            parsed.signing_key,
            &table,
            self.options.vcek_cache.as_deref(),
        )?;
        match &source {
            ChainSource::Cache(dir) => {
                tracing::debug!(dir = %dir.display(), "certificates from the VCEK cache");
            }
            ChainSource::Missing(why) => tracing::debug!("{why}"),
            ChainSource::HostTable => {}
        }
        Ok((report, chain))
    }
}

//! The validated configuration of a `cloister-host` run.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::supervisor::RestartPolicy;

/// How the enclave is launched.
///
/// An unknown name is an error, never a fallback: running a simulated enclave where a real one
/// was asked for would be a silent downgrade (clients would still refuse it, but late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `cloister-enclave` as a child process with the simulated platform (development, tests).
    Sim,
    /// An AMD SEV-SNP confidential VM under QEMU/KVM, booted directly from a kernel and the
    /// initrd of `scripts/build-initrd.sh` with kernel hashes (`docs/snp-qemu.md`).
    SnpQemu,
    /// INSECURE, for tests only: the same VM without SEV, under QEMU's software emulation (TCG).
    /// The host can read and change everything in it.
    QemuTcgInsecure,
}

impl Backend {
    /// Every backend name, for help and error messages.
    pub const NAMES: &'static [&'static str] = &["sim", "snp-qemu", "qemu-tcg-insecure"];

    /// Whether this backend boots a QEMU VM.
    pub fn is_qemu(self) -> bool {
        matches!(self, Backend::SnpQemu | Backend::QemuTcgInsecure)
    }
}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sim" => Ok(Backend::Sim),
            "snp-qemu" => Ok(Backend::SnpQemu),
            "qemu-tcg-insecure" => Ok(Backend::QemuTcgInsecure),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sim => "sim",
            Backend::SnpQemu => "snp-qemu",
            Backend::QemuTcgInsecure => "qemu-tcg-insecure",
        })
    }
}

/// A backend name that is not known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown backend `{0}` (known: sim, snp-qemu, qemu-tcg-insecure)")]
pub struct UnknownBackend(pub String);

/// The QEMU backends' settings (`--qemu-*`, `--snp-*`). Every field is `None` (or `false`) when
/// its flag was not given, so that flags given to a backend that ignores them are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuSettings {
    /// `--qemu-binary`: the QEMU program (default `qemu-system-x86_64` from `PATH`).
    pub binary: Option<PathBuf>,
    /// `--qemu-kernel`: the guest kernel.
    pub kernel: Option<PathBuf>,
    /// `--qemu-initrd`: the initramfs from `scripts/build-initrd.sh`.
    pub initrd: Option<PathBuf>,
    /// `--qemu-bios`: the firmware; with snp-qemu the AmdSev OVMF build (required).
    pub bios: Option<PathBuf>,
    /// `--qemu-append`: extra kernel parameters (measured under SNP).
    pub append: Option<String>,
    /// `--qemu-cpu`: the vCPU model.
    pub cpu: Option<String>,
    /// `--qemu-vcpus`: vCPUs.
    pub vcpus: Option<u32>,
    /// `--qemu-memory-mib`: guest memory in MiB.
    pub memory_mib: Option<u32>,
    /// `--qemu-serial-log`: append the serial console to this file.
    pub serial_log: Option<PathBuf>,
    /// `--qemu-start-timeout`: how long the VM may take to boot and announce the enclave.
    pub start_timeout: Option<std::time::Duration>,
    /// `--snp-policy`: the guest policy.
    pub snp_policy: Option<u64>,
    /// `--snp-cbitpos`: the C-bit position.
    pub snp_cbitpos: Option<u32>,
    /// `--snp-reduced-phys-bits`: physical address bits lost to memory encryption.
    pub snp_reduced_phys_bits: Option<u32>,
    /// `--snp-id-block`: an ID block file (96 bytes, raw or base64).
    pub snp_id_block: Option<PathBuf>,
    /// `--snp-id-auth`: an ID auth file (4096 bytes, raw or base64).
    pub snp_id_auth: Option<PathBuf>,
    /// `--snp-author-key-enabled`: the ID auth carries an author key.
    pub snp_author_key_enabled: bool,
}

impl QemuSettings {
    /// The `--qemu-*` flags given.
    pub fn qemu_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        let mut given = |set: bool, flag| {
            if set {
                flags.push(flag);
            }
        };
        given(self.binary.is_some(), "--qemu-binary");
        given(self.kernel.is_some(), "--qemu-kernel");
        given(self.initrd.is_some(), "--qemu-initrd");
        given(self.bios.is_some(), "--qemu-bios");
        given(self.append.is_some(), "--qemu-append");
        given(self.cpu.is_some(), "--qemu-cpu");
        given(self.vcpus.is_some(), "--qemu-vcpus");
        given(self.memory_mib.is_some(), "--qemu-memory-mib");
        given(self.serial_log.is_some(), "--qemu-serial-log");
        given(self.start_timeout.is_some(), "--qemu-start-timeout");
        flags
    }

    /// The `--snp-*` flags given.
    pub fn snp_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        let mut given = |set: bool, flag| {
            if set {
                flags.push(flag);
            }
        };
        given(self.snp_policy.is_some(), "--snp-policy");
        given(self.snp_cbitpos.is_some(), "--snp-cbitpos");
        given(
            self.snp_reduced_phys_bits.is_some(),
            "--snp-reduced-phys-bits",
        );
        given(self.snp_id_block.is_some(), "--snp-id-block");
        given(self.snp_id_auth.is_some(), "--snp-id-auth");
        given(self.snp_author_key_enabled, "--snp-author-key-enabled");
        flags
    }
}

/// Everything `cloister-host` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The enclave program (`cloister-enclave`); sim backend only (a VM boots the enclave from
    /// its initrd).
    pub enclave_bin: Option<PathBuf>,
    /// The enclave's measured configuration, handed over unchanged (sim), or the file whose
    /// SHA-256 is the VM's HOST_DATA (snp-qemu; the VM reads its copy from the initrd).
    pub enclave_config: PathBuf,
    /// `enclave_config` is a Confidential Containers initdata document (sim only): the enclave reads its
    /// configuration from it (`--config-from-initdata`) and the simulated launch's HOST_DATA is its digest,
    /// as Kata sets HOST_DATA from a pod's initdata annotation.
    pub initdata: bool,
    /// The sealed models to serve (at least one).
    pub sealed_models: Vec<PathBuf>,
    /// The public relay address (port 0: any free port).
    pub listen: SocketAddr,
    /// How to launch the enclave.
    pub backend: Backend,
    /// The QEMU backends' settings.
    pub qemu: QemuSettings,
    /// The blob service's loopback port (0: any free port). A VM's kernel command line names it,
    /// so a fixed port keeps an SNP launch measurement stable across runs.
    pub blobs_port: u16,
    /// Where to record every byte the host relays or serves, if anywhere.
    pub record: Option<PathBuf>,
    /// When to restart the enclave.
    pub restart: RestartPolicy,
    /// What one client may hold of the relay.
    pub relay: crate::relay::RelayLimits,
    /// Where the `/collateral` service gets what the enclave asks for.
    pub collateral: CollateralSettings,
    /// Where the enclave's audit log is stored (`--audit-log`).
    pub audit_log: Option<PathBuf>,
    /// Where the host serves its metrics (`--metrics`).
    pub metrics: Option<SocketAddr>,
    /// Where the enclave's sealed state is kept (`--state-dir`; created 0700 if missing). `None`: the
    /// `/state/` routes answer 404 and the enclave runs without durable state, if its policy allows.
    pub state_dir: Option<PathBuf>,
}

/// The `/collateral` service's sources ([`crate::collateral`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollateralSettings {
    /// `--kds-url`: the KDS (AMD's by default, a mirror); `None` (`--kds-url off`): no network.
    pub kds_url: Option<String>,
    /// `--collateral-cache`: the on-disk cache (Trustee's layout), shared with other tools.
    pub cache: Option<PathBuf>,
    /// `--collateral`: an offline bundle (`cloister fetch bundle`).
    pub bundle: Option<PathBuf>,
    /// `--collateral-sim-root`: a simulated ARK to accept (simulated platform, development only).
    pub simulated_root: Option<PathBuf>,
}

/// A configuration that cannot work; reported as a usage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A path that must name a regular file does not.
    #[error("{flag} {}: not a file", path.display())]
    NotAFile {
        /// The command-line flag.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// A path that must name a directory (or nothing yet) names something else.
    #[error("{flag} {}: not a directory", path.display())]
    NotADirectory {
        /// The command-line flag.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// No sealed model was given.
    #[error("at least one --sealed-model is required")]
    NoModels,
    /// A flag the backend needs is missing.
    #[error("--backend {backend} needs {flag}")]
    Missing {
        /// The backend.
        backend: Backend,
        /// The flag.
        flag: &'static str,
    },
    /// A flag was given that the backend does not use.
    #[error("{flag} does not apply to --backend {backend}")]
    NotForBackend {
        /// The backend.
        backend: Backend,
        /// The flag.
        flag: &'static str,
    },
    /// `--snp-id-block` and `--snp-id-auth` go together, and `--snp-author-key-enabled` needs them.
    #[error("--snp-id-block and --snp-id-auth must be given together (and --snp-author-key-enabled needs them)")]
    IdBlockPair,
    /// The SNP policy does not have bit 17 (reserved, must be one) set.
    #[error("--snp-policy {0:#x}: bit 17 is reserved and must be one (SNP ABI guest policy), e.g. 0x30000")]
    SnpPolicy(u64),
    /// A number is out of range.
    #[error("{flag} {value}: must be {range}")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: u64,
        /// The allowed range, in words.
        range: &'static str,
    },
}

impl Config {
    /// Checks what can be checked before starting (file contents are checked by [`crate::run`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let backend = self.backend;
        match (&self.enclave_bin, backend) {
            (Some(path), Backend::Sim) => is_file("--enclave-bin", path)?,
            (None, Backend::Sim) => {
                return Err(ConfigError::Missing {
                    backend,
                    flag: "--enclave-bin",
                })
            }
            (Some(_), _) => {
                return Err(ConfigError::NotForBackend {
                    backend,
                    flag: "--enclave-bin",
                })
            }
            (None, _) => {}
        }
        is_file("--enclave-config", &self.enclave_config)?;
        if self.initdata && backend != Backend::Sim {
            return Err(ConfigError::NotForBackend {
                backend,
                flag: "--initdata",
            });
        }
        if self.sealed_models.is_empty() {
            return Err(ConfigError::NoModels);
        }
        for path in &self.sealed_models {
            is_file("--sealed-model", path)?;
        }
        if let Some(dir) = &self.state_dir {
            // Missing is fine (it is created); anything but a directory is a usage error.
            if dir.exists() && !dir.is_dir() {
                return Err(ConfigError::NotADirectory {
                    flag: "--state-dir",
                    path: dir.clone(),
                });
            }
        }
        self.validate_qemu()
    }

    fn validate_qemu(&self) -> Result<(), ConfigError> {
        let backend = self.backend;
        let q = &self.qemu;
        if !backend.is_qemu() {
            if let Some(flag) = q.qemu_flags().into_iter().chain(q.snp_flags()).next() {
                return Err(ConfigError::NotForBackend { backend, flag });
            }
            return Ok(());
        }
        if backend != Backend::SnpQemu {
            if let Some(flag) = q.snp_flags().into_iter().next() {
                return Err(ConfigError::NotForBackend { backend, flag });
            }
        }
        let required = |path: &Option<PathBuf>, flag: &'static str| match path {
            Some(path) => is_file(flag, path),
            None => Err(ConfigError::Missing { backend, flag }),
        };
        required(&q.kernel, "--qemu-kernel")?;
        required(&q.initrd, "--qemu-initrd")?;
        if backend == Backend::SnpQemu {
            required(&q.bios, "--qemu-bios")?;
        } else if let Some(bios) = &q.bios {
            is_file("--qemu-bios", bios)?;
        }
        if let Some(vcpus) = q.vcpus {
            if !(1..=255).contains(&vcpus) {
                return Err(ConfigError::OutOfRange {
                    flag: "--qemu-vcpus",
                    value: vcpus.into(),
                    range: "1 to 255",
                });
            }
        }
        if let Some(mib) = q.memory_mib {
            if !(128..=1 << 20).contains(&mib) {
                return Err(ConfigError::OutOfRange {
                    flag: "--qemu-memory-mib",
                    value: mib.into(),
                    range: "128 to 1048576",
                });
            }
        }
        if let Some(policy) = q.snp_policy {
            if policy & crate::qemu::policy::RESERVED_MUST_BE_ONE == 0 {
                return Err(ConfigError::SnpPolicy(policy));
            }
        }
        match (&q.snp_id_block, &q.snp_id_auth) {
            (Some(block), Some(auth)) => {
                is_file("--snp-id-block", block)?;
                is_file("--snp-id-auth", auth)?;
            }
            (None, None) if !q.snp_author_key_enabled => {}
            _ => return Err(ConfigError::IdBlockPair),
        }
        Ok(())
    }
}

fn is_file(flag: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::NotAFile {
            flag,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        for name in Backend::NAMES {
            assert_eq!(name.parse::<Backend>().unwrap().to_string(), *name);
        }
        assert_eq!("sim".parse::<Backend>().unwrap(), Backend::Sim);
        assert_eq!("snp-qemu".parse::<Backend>().unwrap(), Backend::SnpQemu);
        assert_eq!(
            "qemu-tcg-insecure".parse::<Backend>().unwrap(),
            Backend::QemuTcgInsecure
        );
        for bad in ["SIM", "", "cloud", "qemu", "qemu-tcg", "snp"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for name in [
                "enclave",
                "enclave.toml",
                "m.sealed",
                "vmlinuz",
                "initrd",
                "ovmf",
                "id",
                "auth",
            ] {
                std::fs::write(dir.path().join(name), b"x").unwrap();
            }
            Files { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn config(&self, backend: Backend) -> Config {
            Config {
                enclave_bin: (backend == Backend::Sim).then(|| self.path("enclave")),
                enclave_config: self.path("enclave.toml"),
                initdata: false,
                sealed_models: vec![self.path("m.sealed")],
                listen: "127.0.0.1:0".parse().unwrap(),
                backend,
                qemu: if backend.is_qemu() {
                    QemuSettings {
                        kernel: Some(self.path("vmlinuz")),
                        initrd: Some(self.path("initrd")),
                        bios: (backend == Backend::SnpQemu).then(|| self.path("ovmf")),
                        ..QemuSettings::default()
                    }
                } else {
                    QemuSettings::default()
                },
                blobs_port: 0,
                record: None,
                restart: RestartPolicy::default(),
                relay: crate::relay::RelayLimits::default(),
                collateral: CollateralSettings::default(),
                audit_log: None,
                metrics: None,
                state_dir: None,
            }
        }
    }

    fn err(config: &Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn validates_each_backend() {
        let f = Files::new();
        for backend in [Backend::Sim, Backend::SnpQemu, Backend::QemuTcgInsecure] {
            f.config(backend).validate().unwrap();
        }

        let mut c = f.config(Backend::Sim);
        c.enclave_bin = None;
        assert_eq!(err(&c), "--backend sim needs --enclave-bin");
        c.enclave_bin = Some(f.path("enclave"));
        c.qemu.kernel = Some(f.path("vmlinuz"));
        assert_eq!(err(&c), "--qemu-kernel does not apply to --backend sim");
        c.qemu = QemuSettings {
            snp_policy: Some(0x30000),
            ..QemuSettings::default()
        };
        assert_eq!(err(&c), "--snp-policy does not apply to --backend sim");

        let mut c = f.config(Backend::SnpQemu);
        c.enclave_bin = Some(f.path("enclave"));
        assert_eq!(
            err(&c),
            "--enclave-bin does not apply to --backend snp-qemu"
        );
        let mut c = f.config(Backend::SnpQemu);
        c.qemu.bios = None;
        assert_eq!(err(&c), "--backend snp-qemu needs --qemu-bios");
        let mut c = f.config(Backend::SnpQemu);
        c.qemu.initrd = None;
        assert_eq!(err(&c), "--backend snp-qemu needs --qemu-initrd");
        let mut c = f.config(Backend::SnpQemu);
        c.qemu.kernel = Some(f.path("nope"));
        assert!(err(&c).ends_with("nope: not a file"), "{}", err(&c));
        let mut c = f.config(Backend::SnpQemu);
        c.qemu.snp_policy = Some(0x10000);
        assert!(err(&c).contains("bit 17"), "{}", err(&c));
        c.qemu.snp_policy = Some(0x30000);
        c.qemu.snp_id_block = Some(f.path("id"));
        assert!(err(&c).contains("together"), "{}", err(&c));
        c.qemu.snp_id_auth = Some(f.path("auth"));
        c.qemu.snp_author_key_enabled = true;
        c.validate().unwrap();
        c.qemu.snp_id_block = None;
        c.qemu.snp_id_auth = None;
        assert!(err(&c).contains("together"), "{}", err(&c));
        let mut c = f.config(Backend::SnpQemu);
        c.qemu.vcpus = Some(0);
        assert_eq!(err(&c), "--qemu-vcpus 0: must be 1 to 255");
        c.qemu.vcpus = Some(4);
        c.qemu.memory_mib = Some(64);
        assert_eq!(err(&c), "--qemu-memory-mib 64: must be 128 to 1048576");

        let mut c = f.config(Backend::QemuTcgInsecure);
        c.qemu.snp_cbitpos = Some(47);
        assert_eq!(
            err(&c),
            "--snp-cbitpos does not apply to --backend qemu-tcg-insecure"
        );
        let mut c = f.config(Backend::QemuTcgInsecure);
        c.qemu.bios = Some(f.path("nope"));
        assert!(err(&c).contains("--qemu-bios"), "{}", err(&c));

        let mut c = f.config(Backend::Sim);
        c.state_dir = Some(f.path("state"));
        c.validate().unwrap();
        c.state_dir = Some(f.path("enclave.toml"));
        assert!(
            err(&c).ends_with("enclave.toml: not a directory"),
            "{}",
            err(&c)
        );
    }
}

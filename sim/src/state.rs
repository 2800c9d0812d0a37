//! The state directory of a simulated platform: the only file I/O of the attestation crate.
//!
//! ```text
//! DIR/                      0700
//!   platform.toml           product, TCB, chip id, VLEK or not, creation instant (written last)
//!   keys/                   0700
//!     ark.pkcs8.der         0600  RSA-4096, PKCS#8 DER
//!     ask.pkcs8.der         0600  RSA-4096
//!     vcek.pkcs8.der        0600  ECDSA P-384
//!     asvk.pkcs8.der        0600  RSA-4096     (with a VLEK)
//!     vlek.pkcs8.der        0600  ECDSA P-384  (with a VLEK)
//!   certs/                  ark.pem ask.pem vcek.pem     (snpguest layout: `cloister verify --certs`)
//!   certs-vlek/             ark.pem asvk.pem vlek.pem    (with a VLEK)
//! ```
//!
//! Why the VLEK chain has its own directory: a `--certs` directory holding both `ask.pem` and
//! `asvk.pem` (or `vcek.pem` and `vlek.pem`) is ambiguous, and `cloister verify` rejects it rather than
//! guess which chain is meant.
//!
//! Files are created with `create_new` (never overwritten) and private keys get mode 0600 set
//! explicitly (whatever the umask).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::SimError;
use cloister_attestation::snp::report::TcbVersion;
use cloister_attestation::snp::Product;

/// Name of the platform file in the state directory; its presence means "this directory holds a
/// platform".
pub const PLATFORM_FILE: &str = "platform.toml";
/// Directory of the private keys (mode 0700, files 0600).
pub const KEYS_DIR: &str = "keys";
/// Directory of the VCEK chain in the snpguest layout (`ark.pem`, `ask.pem`, `vcek.pem`).
pub const CERTS_DIR: &str = "certs";
/// Directory of the VLEK chain (`ark.pem`, `asvk.pem`, `vlek.pem`).
pub const VLEK_CERTS_DIR: &str = "certs-vlek";

/// Version of the platform file format.
pub(super) const FORMAT_VERSION: u32 = 1;

pub(super) const ARK_KEY: &str = "ark.pkcs8.der";
pub(super) const ASK_KEY: &str = "ask.pkcs8.der";
pub(super) const VCEK_KEY: &str = "vcek.pkcs8.der";
pub(super) const ASVK_KEY: &str = "asvk.pkcs8.der";
pub(super) const VLEK_KEY: &str = "vlek.pkcs8.der";

pub(super) const DIR_MODE: u32 = 0o700;
pub(super) const KEY_MODE: u32 = 0o600;
pub(super) const PUBLIC_DIR_MODE: u32 = 0o755;
pub(super) const PUBLIC_MODE: u32 = 0o644;

/// What `platform.toml` records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PlatformState {
    pub(super) format: u32,
    pub(super) product: Product,
    pub(super) tcb: TcbVersion,
    pub(super) chip_id: [u8; 64],
    pub(super) vlek: bool,
    pub(super) issued_at_unix: i64,
}

/// The TOML form of [`PlatformState`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformFile {
    format: u32,
    product: Product,
    chip_id: String,
    vlek: bool,
    issued_at_unix: i64,
    tcb: TcbFile,
}

/// The TOML form of the TCB (its own type so that unknown keys are rejected here too).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TcbFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

const PLATFORM_FILE_HEADER: &str =
    "# A SIMULATED AMD SEV-SNP platform made by `cloister sim init`. Not AMD hardware: its root\n\
# (certs/ark.pem) is trusted by nothing unless a verifier is told to trust it. Do not edit.\n";

/// The TCB must have an FMC component exactly on Turin.
pub(super) fn check_tcb_layout(product: Product, tcb: &TcbVersion) -> Result<(), SimError> {
    if tcb.fmc.is_some() != product.has_fmc_tcb_layout() {
        return Err(SimError::TcbLayout { product, tcb: *tcb });
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SimError + '_ {
    move |source| SimError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (mode 0700) or checks that it exists and is empty, then sets it to 0700.
pub(super) fn prepare_empty_dir(dir: &Path) -> Result<(), SimError> {
    if dir.join(PLATFORM_FILE).exists() {
        return Err(SimError::AlreadyInitialized {
            dir: dir.to_path_buf(),
        });
    }
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(SimError::DirectoryNotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io(dir))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io(dir)),
        Err(e) => Err(io(dir)(e)),
    }
}

pub(super) fn make_dir(path: &Path, mode: u32) -> Result<(), SimError> {
    DirBuilder::new().mode(mode).create(path).map_err(io(path))
}

/// Writes a new file; fails if it exists. `mode` is set explicitly after creation, so the umask
/// cannot loosen or tighten it.
pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SimError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The text of `platform.toml` for `state` (`path` only names the file in errors).
pub(super) fn platform_toml(path: &Path, state: &PlatformState) -> Result<String, SimError> {
    let file = PlatformFile {
        format: state.format,
        product: state.product,
        chip_id: hex::encode(state.chip_id),
        vlek: state.vlek,
        issued_at_unix: state.issued_at_unix,
        tcb: TcbFile {
            fmc: state.tcb.fmc,
            bootloader: state.tcb.bootloader,
            tee: state.tcb.tee,
            snp: state.tcb.snp,
            microcode: state.tcb.microcode,
        },
    };
    let body = toml::to_string(&file).map_err(|e| SimError::StateFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(format!("{PLATFORM_FILE_HEADER}{body}"))
}

/// The VLEK half of a loaded platform.
pub(super) struct LoadedVlek {
    pub(super) asvk_pem: Vec<u8>,
    pub(super) vlek_pem: Vec<u8>,
    pub(super) asvk_key: Zeroizing<Vec<u8>>,
    pub(super) vlek_key: Zeroizing<Vec<u8>>,
}

/// Everything read from a state directory, not yet parsed.
pub(super) struct Loaded {
    pub(super) state: PlatformState,
    pub(super) ark_pem: Vec<u8>,
    pub(super) ask_pem: Vec<u8>,
    pub(super) vcek_pem: Vec<u8>,
    pub(super) ark_key: Zeroizing<Vec<u8>>,
    pub(super) ask_key: Zeroizing<Vec<u8>>,
    pub(super) vcek_key: Zeroizing<Vec<u8>>,
    pub(super) vlek: Option<LoadedVlek>,
}

fn read(path: &Path) -> Result<Vec<u8>, SimError> {
    fs::read(path).map_err(io(path))
}

/// Reads a private key, refusing one that group or others may read or write.
fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, SimError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SimError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    read(path).map(Zeroizing::new)
}

/// Reads the state directory `dir`.
pub(super) fn load(dir: &Path) -> Result<Loaded, SimError> {
    let file_path = dir.join(PLATFORM_FILE);
    if !file_path.exists() {
        return Err(SimError::NotInitialized {
            dir: dir.to_path_buf(),
        });
    }
    let state = parse_platform_file(&file_path, &read(&file_path)?)?;
    let keys = dir.join(KEYS_DIR);
    let certs = dir.join(CERTS_DIR);
    let vlek = if state.vlek {
        let vcerts = dir.join(VLEK_CERTS_DIR);
        Some(LoadedVlek {
            asvk_pem: read(&vcerts.join("asvk.pem"))?,
            vlek_pem: read(&vcerts.join("vlek.pem"))?,
            asvk_key: read_key(&keys.join(ASVK_KEY))?,
            vlek_key: read_key(&keys.join(VLEK_KEY))?,
        })
    } else {
        None
    };
    Ok(Loaded {
        ark_pem: read(&certs.join("ark.pem"))?,
        ask_pem: read(&certs.join("ask.pem"))?,
        vcek_pem: read(&certs.join("vcek.pem"))?,
        ark_key: read_key(&keys.join(ARK_KEY))?,
        ask_key: read_key(&keys.join(ASK_KEY))?,
        vcek_key: read_key(&keys.join(VCEK_KEY))?,
        vlek,
        state,
    })
}

/// Parses `platform.toml` (`path` only names the file in errors).
pub(super) fn parse_platform_file(path: &Path, bytes: &[u8]) -> Result<PlatformState, SimError> {
    let bad = |detail: String| SimError::StateFile {
        path: PathBuf::from(path),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
    let file: PlatformFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.format != FORMAT_VERSION {
        return Err(bad(format!(
            "format {} is not supported (expected {FORMAT_VERSION})",
            file.format
        )));
    }
    let chip_id: [u8; 64] = hex::decode(&file.chip_id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| bad("chip_id must be 64 bytes of hex".to_owned()))?;
    let tcb = TcbVersion {
        fmc: file.tcb.fmc,
        bootloader: file.tcb.bootloader,
        tee: file.tcb.tee,
        snp: file.tcb.snp,
        microcode: file.tcb.microcode,
    };
    check_tcb_layout(file.product, &tcb)?;
    if file.product == Product::Turin && chip_id[8..].iter().any(|&b| b != 0) {
        return Err(SimError::ChipIdLayout);
    }
    Ok(PlatformState {
        format: file.format,
        product: file.product,
        tcb,
        chip_id,
        vlek: file.vlek,
        issued_at_unix: file.issued_at_unix,
    })
}

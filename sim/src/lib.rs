//! A **simulated** AMD SEV-SNP platform: a software AMD secure processor (AMD-SP) for development and
//! tests on machines without SEV-SNP hardware.
//!
//! Who runs it: developers and tests, `cloister sim` and `cloister demo`, and the simulated enclave (the
//! enclave's `insecure-simulator` feature). Secrets it holds: the simulated platform's private keys (its
//! state directory), which protect nothing real. It is a crate of its own, apart from the verifier
//! (`cloister-attestation`), so that nothing that links only the verifier can forge a report: the production
//! enclave and the verifier link neither this crate nor `rsa` (CI checks both).
//!
//! It keeps a state directory with a simulated key hierarchy shaped exactly like AMD's — an ARK and
//! an ASK (RSA-4096, RSASSA-PSS SHA-384, MGF1-SHA-384, salt 48, AMD's extensions, key usages, serial
//! and validity style), a VCEK (ECDSA P-384, AMD's VCEK extensions: structVersion, productName, the
//! TCB SPLs, hwID = the chip id), optionally an ASVK and a VLEK — and it emits byte-exact
//! ATTESTATION_REPORTs signed the way the AMD-SP signs them. The production verifier
//! ([`cloister_attestation::snp::verify::verify`]) runs on them unchanged; only the root differs.
//!
//! Trust assumptions and why this is safe:
//! - Nothing trusts the simulated root unless told to: [`cloister_attestation::snp::verify::VerifyOptions`] takes it
//!   explicitly (`cloister verify --sim-root FILE`, or `simulated_root` in a policy), the relying
//!   party's own choice, never the evidence's. Without it a simulated report is rejected at the root
//!   step ("root: ... is not a trusted AMD root").
//! - Every certificate says what it is: the organisation of every subject is
//!   [`SIM_ORGANIZATION`] and the ARK's common name ends in " SIMULATED". (The ASK, ASVK, VCEK and
//!   VLEK keep AMD's common names, `SEV-<Product>`, `SEV-VLEK-<Product>`, `SEV-VCEK`, `SEV-VLEK`,
//!   because the verifier checks those roles by name; their organisation still says SIMULATED.)
//! - A report verified through the simulated root is marked
//!   [`cloister_attestation::snp::verify::VerifiedReport::is_simulated`], and `cloister verify` prints it.
//! - The private keys live in the state directory (`keys/`, mode 0700, files 0600, PKCS#8 DER) and
//!   are never printed. They protect nothing real: anyone who can read them can make "evidence" that
//!   the simulated root vouches for, which is exactly why nothing trusts that root by default.
//!
//! What a simulated report proves: that the code that asked for it could use the state directory's
//! VCEK (or VLEK) key. It does not prove memory encryption, isolation from the host, or anything
//! about the hardware: it exercises the same code paths and data formats, not the same guarantees.
//! See `docs/simulation.md`.
//!
//! This module, unlike the rest of the crate, does file I/O (the state directory) and draws
//! randomness (keys, REPORT_ID, signature nonces). The launch measurement
//! ([`simulated_launch_measurement`]) does neither.

mod keys;
mod measurement;
mod report;
mod state;
#[cfg(test)]
mod tests;
mod x509;

use std::path::{Path, PathBuf};

use ring::signature::{EcdsaKeyPair, RsaKeyPair};

use cloister_attestation::evidence::CertChainDer;
use cloister_attestation::snp::certs::{AmdCertificate, CertError, CertRole};
use cloister_attestation::snp::report::{ReportError, TcbVersion};
use cloister_attestation::snp::verify::CertChain;
use cloister_attestation::snp::Product;

pub use measurement::{simulated_launch_measurement, SIM_LAUNCH_DOMAIN};
pub use report::{ReportRequest, DEFAULT_GUEST_POLICY};
/// ring's random number generator types, re-exported so that callers need no direct ring dependency.
pub use ring::rand::{SecureRandom, SystemRandom};
pub use state::{CERTS_DIR, KEYS_DIR, PLATFORM_FILE, VLEK_CERTS_DIR};

/// The organisation (O) of every simulated certificate's subject and issuer.
pub const SIM_ORGANIZATION: &str = "Cloister SIMULATED (not AMD)";
/// Suffix of the simulated ARK's common name: `ARK-Genoa SIMULATED`.
pub const SIM_ROOT_CN_SUFFIX: &str = " SIMULATED";
/// The cspID written into a simulated VLEK (AMD writes the cloud provider's name).
pub const SIM_CSP_ID: &str = "CN=cloister-simulated-csp.invalid";
/// Size of the simulated ARK, ASK and ASVK RSA keys, as AMD's.
pub const SIM_RSA_BITS: usize = 4096;

/// Which endorsement key signs a simulated report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SimSigningKey {
    /// The chip's VCEK (chain ARK → ASK → VCEK, under `DIR/certs`).
    #[default]
    Vcek,
    /// The VLEK (chain ARK → ASVK → VLEK, under `DIR/certs-vlek`); needs a platform made with `vlek`.
    Vlek,
}

/// Parameters of a new simulated platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The product line (CPUID, TCB layout, certificate names); `cloister sim init` defaults to Genoa.
    pub product: Product,
    /// The platform's TCB: CURRENT/REPORTED/COMMITTED/LAUNCH_TCB of every report and the SPLs of the
    /// VCEK/VLEK. `fmc` must be present exactly for Turin.
    pub tcb: TcbVersion,
    /// Also create an ASVK and a VLEK.
    pub vlek: bool,
    /// CHIP_ID; random when `None`. Turin uses 8 bytes: the other 56 must be zero.
    pub chip_id: Option<[u8; 64]>,
    /// notBefore of every certificate (Unix seconds): the instant the platform is created.
    pub issued_at_unix: i64,
}

impl SimConfig {
    /// A configuration for `product` with its default TCB, no VLEK and a random chip id, issued at
    /// `issued_at_unix`.
    pub fn new(product: Product, issued_at_unix: i64) -> Self {
        SimConfig {
            product,
            tcb: default_tcb(product),
            vlek: false,
            chip_id: None,
            issued_at_unix,
        }
    }
}

/// A plausible current TCB for `product` (values seen on AMD machines in 2025).
pub fn default_tcb(product: Product) -> TcbVersion {
    match product {
        Product::Milan => TcbVersion {
            fmc: None,
            bootloader: 4,
            tee: 0,
            snp: 24,
            microcode: 219,
        },
        Product::Genoa => TcbVersion {
            fmc: None,
            bootloader: 10,
            tee: 0,
            snp: 25,
            microcode: 84,
        },
        Product::Turin => TcbVersion {
            fmc: Some(0),
            bootloader: 1,
            tee: 0,
            snp: 2,
            microcode: 71,
        },
    }
}

/// Why a simulated-platform operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A file or directory of the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `init` was pointed at a directory that already holds a platform. Nothing was changed.
    #[error("{dir} already holds a simulated platform ({PLATFORM_FILE} exists); refusing to overwrite it")]
    AlreadyInitialized {
        /// The state directory.
        dir: PathBuf,
    },
    /// `init` was pointed at a directory that is not empty. Nothing was changed.
    #[error("{dir} is not empty; a new simulated platform needs a new or empty directory")]
    DirectoryNotEmpty {
        /// The state directory.
        dir: PathBuf,
    },
    /// `open` was pointed at a directory without a platform.
    #[error("{dir} holds no simulated platform ({PLATFORM_FILE} is missing): run `cloister sim init --dir {dir}` first")]
    NotInitialized {
        /// The state directory.
        dir: PathBuf,
    },
    /// The platform file does not parse or is inconsistent.
    #[error("{path}: {detail}")]
    StateFile {
        /// The platform file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A private key file is readable or writable by group or others.
    #[error("{path}: private key has mode {mode:o}, expected 600 (chmod 600 it)")]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The TCB has (or lacks) an FMC component that the product's layout does not have (or needs).
    #[error("TCB {tcb} does not fit {product}: {}", if product.has_fmc_tcb_layout() { "Turin's TCB has an FMC component (fmc=N)" } else { "only Turin's TCB has an FMC component" })]
    TcbLayout {
        /// The product.
        product: Product,
        /// The TCB given.
        tcb: TcbVersion,
    },
    /// A Turin chip id has non-zero bytes beyond the 8 that Turin uses.
    #[error("a Turin CHIP_ID is 8 bytes followed by 56 zero bytes")]
    ChipIdLayout,
    /// A VLEK report was asked of a platform made without a VLEK.
    #[error("this simulated platform has no VLEK (create it with `sim init --vlek`)")]
    NoVlek,
    /// The report version cannot be produced for this product.
    #[error("report version {version} is not available for {product} (supported: {})", if product.has_fmc_tcb_layout() { "3..=5" } else { "2..=5" })]
    ReportVersion {
        /// The product.
        product: Product,
        /// The version asked for.
        version: u32,
    },
    /// VMPL outside 0..=3.
    #[error("VMPL {0} is out of range 0..=3")]
    Vmpl(u32),
    /// The report fields do not encode (e.g. a guest policy without bit 17 or with reserved bits).
    #[error("cannot build the report: {0}")]
    Report(#[from] ReportError),
    /// A generated certificate or CRL does not parse or verify (a bug: the simulator must never emit one).
    #[error("generated certificate is invalid: {0}")]
    Certificate(#[from] CertError),
    /// DER encoding of a certificate or CRL failed.
    #[error("DER encoding of {what} failed: {source}")]
    Der {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: der::Error,
    },
    /// A key could not be generated, or the system random number generator failed.
    #[error("key generation failed: {0}")]
    KeyGeneration(&'static str),
    /// A stored private key was rejected.
    #[error("the stored {which} private key was rejected: {reason}")]
    KeyRejected {
        /// Which key ("ARK", "VCEK", ...).
        which: &'static str,
        /// ring's reason.
        reason: String,
    },
    /// A signature could not be made (RNG failure).
    #[error("signing with the {0} key failed")]
    Signing(&'static str),
}

/// A simulated AMD SEV-SNP platform, loaded from its state directory.
///
/// Holds the private keys of the simulated ARK, ASK, VCEK (and ASVK, VLEK): its `Debug` shows none.
pub struct SimPlatform {
    dir: PathBuf,
    state: state::PlatformState,
    ark: AmdCertificate,
    ask: AmdCertificate,
    vcek: AmdCertificate,
    vlek_chain: Option<VlekChain>,
    ark_key: RsaKeyPair,
    ask_key: RsaKeyPair,
    vcek_key: EcdsaKeyPair,
    rng: SystemRandom,
}

struct VlekChain {
    asvk: AmdCertificate,
    vlek: AmdCertificate,
    asvk_key: RsaKeyPair,
    vlek_key: EcdsaKeyPair,
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPlatform")
            .field("dir", &self.dir)
            .field("product", &self.state.product)
            .field("tcb", &self.state.tcb)
            .field("chip_id", &hex::encode(self.state.chip_id))
            .field("vlek", &self.vlek_chain.is_some())
            .finish_non_exhaustive()
    }
}

impl SimPlatform {
    /// Creates a new simulated platform in `dir` (created with mode 0700 if absent; if present it must be
    /// empty) and returns it loaded.
    ///
    /// Generates the RSA-4096 ARK and ASK (and ASVK) keys, the ECDSA P-384 VCEK (and VLEK) key, issues
    /// the certificates, checks the chain with the production certificate code, then writes
    /// `keys/*.pkcs8.der` (0600), `certs/{ark,ask,vcek}.pem`, `certs-vlek/{ark,asvk,vlek}.pem` and
    /// finally `platform.toml`. Never overwrites: a directory that already holds a platform (or
    /// anything else) is an error before any key is generated.
    pub fn init(dir: &Path, config: &SimConfig, rng: &dyn SecureRandom) -> Result<Self, SimError> {
        state::check_tcb_layout(config.product, &config.tcb)?;
        let hw_id_len = x509::hw_id_len(config.product);
        let chip_id = match config.chip_id {
            // Turin's CHIP_ID is the 8-byte hwID followed by zeros; anything else could never match.
            Some(id) if id[hw_id_len..].iter().any(|&b| b != 0) => {
                return Err(SimError::ChipIdLayout)
            }
            Some(id) => id,
            None => {
                let mut id = [0u8; 64];
                rng.fill(&mut id[..hw_id_len])
                    .map_err(|_| SimError::KeyGeneration("system RNG failed"))?;
                id
            }
        };
        state::prepare_empty_dir(dir)?;

        let st = state::PlatformState {
            format: state::FORMAT_VERSION,
            product: config.product,
            tcb: config.tcb,
            chip_id,
            vlek: config.vlek,
            issued_at_unix: config.issued_at_unix,
        };
        let material = x509::Hierarchy::generate(&st, rng)?;
        write_new_platform(dir, &st, &material)?;
        Self::open(dir)
    }

    /// Loads the platform in `dir`. Refuses private key files readable or writable by anyone but
    /// the owner.
    pub fn open(dir: &Path) -> Result<Self, SimError> {
        let loaded = state::load(dir)?;
        let rng = SystemRandom::new();
        let cert = |pem: &[u8]| AmdCertificate::from_pem(pem);
        let platform = SimPlatform {
            dir: dir.to_path_buf(),
            ark: cert(&loaded.ark_pem)?,
            ask: cert(&loaded.ask_pem)?,
            vcek: cert(&loaded.vcek_pem)?,
            vlek_chain: match loaded.vlek {
                None => None,
                Some(v) => Some(VlekChain {
                    asvk: cert(&v.asvk_pem)?,
                    vlek: cert(&v.vlek_pem)?,
                    asvk_key: keys::rsa_from_pkcs8(&v.asvk_key, "ASVK")?,
                    vlek_key: keys::ecdsa_from_pkcs8(&v.vlek_key, "VLEK", &rng)?,
                }),
            },
            ark_key: keys::rsa_from_pkcs8(&loaded.ark_key, "ARK")?,
            ask_key: keys::rsa_from_pkcs8(&loaded.ask_key, "ASK")?,
            vcek_key: keys::ecdsa_from_pkcs8(&loaded.vcek_key, "VCEK", &rng)?,
            state: loaded.state,
            rng,
        };
        platform.check_consistency()?;
        Ok(platform)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/certs`: ARK, ASK and VCEK in the snpguest layout (`--certs` of `cloister verify`).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join(CERTS_DIR)
    }

    /// `DIR/certs-vlek`: ARK, ASVK and VLEK, if the platform has a VLEK.
    pub fn vlek_certs_dir(&self) -> Option<PathBuf> {
        self.vlek_chain
            .as_ref()
            .map(|_| self.dir.join(VLEK_CERTS_DIR))
    }

    /// The product line.
    pub fn product(&self) -> Product {
        self.state.product
    }

    /// The platform's TCB (the SPLs of its VCEK/VLEK).
    pub fn tcb(&self) -> TcbVersion {
        self.state.tcb
    }

    /// The CHIP_ID written into VCEK-signed reports (Turin: 8 bytes then zeros).
    pub fn chip_id(&self) -> [u8; 64] {
        self.state.chip_id
    }

    /// Whether the platform has a VLEK.
    pub fn has_vlek(&self) -> bool {
        self.vlek_chain.is_some()
    }

    /// Creation instant (the notBefore of its certificates), Unix seconds.
    pub fn issued_at_unix(&self) -> i64 {
        self.state.issued_at_unix
    }

    /// The simulated ARK: pass it as [`cloister_attestation::snp::verify::VerifyOptions::simulated_root`] to trust
    /// this platform's reports.
    pub fn root(&self) -> &AmdCertificate {
        &self.ark
    }

    /// The certificate of `role`, if this platform has one (ASVK and VLEK only with a VLEK).
    pub fn certificate(&self, role: CertRole) -> Option<&AmdCertificate> {
        match role {
            CertRole::Ark => Some(&self.ark),
            CertRole::Ask => Some(&self.ask),
            CertRole::Vcek => Some(&self.vcek),
            CertRole::Asvk => self.vlek_chain.as_ref().map(|v| &v.asvk),
            CertRole::Vlek => self.vlek_chain.as_ref().map(|v| &v.vlek),
        }
    }

    /// The chain that signs reports made with `key`, as DER, for [`cloister_attestation::evidence::Evidence`].
    pub fn certificate_chain(&self, key: SimSigningKey) -> Result<CertChainDer, SimError> {
        let chain = self.cert_chain(key)?;
        let der = |c: Option<AmdCertificate>| c.map(|c| c.der().to_vec()).unwrap_or_default();
        Ok(CertChainDer {
            ark: der(chain.ark),
            intermediate: der(chain.intermediate),
            leaf: der(chain.leaf),
        })
    }

    /// The chain that signs reports made with `key`, parsed, for [`cloister_attestation::snp::verify::verify`].
    pub fn cert_chain(&self, key: SimSigningKey) -> Result<CertChain, SimError> {
        let (intermediate, leaf) = match key {
            SimSigningKey::Vcek => (&self.ask, &self.vcek),
            SimSigningKey::Vlek => {
                let v = self.vlek_chain.as_ref().ok_or(SimError::NoVlek)?;
                (&v.asvk, &v.vlek)
            }
        };
        Ok(CertChain {
            ark: Some(self.ark.clone()),
            intermediate: Some(intermediate.clone()),
            leaf: Some(leaf.clone()),
        })
    }

    /// Makes and signs an attestation report, as the AMD-SP does for SNP_GUEST_REQUEST(MSG_REPORT_REQ).
    /// See [`ReportRequest`] for the fields and their defaults.
    pub fn report(
        &self,
        req: &ReportRequest,
    ) -> Result<[u8; cloister_attestation::snp::report::REPORT_LEN], SimError> {
        let key = match req.signing_key {
            SimSigningKey::Vcek => &self.vcek_key,
            SimSigningKey::Vlek => &self.vlek_chain.as_ref().ok_or(SimError::NoVlek)?.vlek_key,
        };
        report::build_and_sign(&self.state, req, key, &self.rng)
    }

    /// Issues a CRL signed by the simulated ARK (RSASSA-PSS SHA-384, like AMD's), revoking the given
    /// serial numbers (big-endian magnitude bytes, e.g. [`AmdCertificate::serial_number`] of the ASK).
    /// Returns its DER.
    pub fn issue_crl(
        &self,
        revoked_serials: &[&[u8]],
        this_update_unix: i64,
        next_update_unix: i64,
    ) -> Result<Vec<u8>, SimError> {
        let der = x509::issue_crl(
            &self.ark,
            &self.ark_key,
            revoked_serials,
            this_update_unix,
            next_update_unix,
            &self.rng,
        )?;
        // Self-check with the production CRL code: the simulator never emits what the verifier rejects.
        cloister_attestation::snp::crl::AmdCrl::from_der(&der)?.verify_issued_by(&self.ark)?;
        Ok(der)
    }

    /// A VCEK certificate for *another* chip (`chip_id`) of this product at this platform's TCB,
    /// issued by this platform's ASK for a fresh key that is thrown away. For tests that present
    /// "another chip's VCEK, validly signed by the same ASK", as the real negative vectors do.
    pub fn issue_vcek_for_other_chip(&self, chip_id: &[u8; 64]) -> Result<Vec<u8>, SimError> {
        let mut st = self.state.clone();
        st.chip_id = *chip_id;
        let (_, public) = keys::generate_ecdsa(&self.rng)?;
        let der = x509::issue_leaf(
            &st,
            CertRole::Vcek,
            &public,
            &self.ask,
            &self.ask_key,
            &self.rng,
        )?;
        AmdCertificate::from_der(&der)?.verify_issued_by(&self.ask)?;
        Ok(der)
    }

    /// A second chip of this platform, under the same ARK and ASK: its own CHIP_ID (Turin: 8 bytes, then
    /// zeros) and its own VCEK (a fresh key, kept in memory only; nothing is written). Its reports verify
    /// with the same simulated root: for policies that tell chips apart (`chip_ids`).
    pub fn other_chip(&self, chip_id: [u8; 64]) -> Result<SimPlatform, SimError> {
        let hw_id_len = x509::hw_id_len(self.state.product);
        if chip_id[hw_id_len..].iter().any(|&b| b != 0) {
            return Err(SimError::ChipIdLayout);
        }
        let mut other = SimPlatform::open(&self.dir)?;
        other.state.chip_id = chip_id;
        let (pkcs8, public) = keys::generate_ecdsa(&other.rng)?;
        let der = x509::issue_leaf(
            &other.state,
            CertRole::Vcek,
            &public,
            &other.ask,
            &other.ask_key,
            &other.rng,
        )?;
        other.vcek = AmdCertificate::from_der(&der)?;
        other.vcek_key = keys::ecdsa_from_pkcs8(&pkcs8, "VCEK", &other.rng)?;
        other.check_consistency()?;
        Ok(other)
    }

    /// A VLEK certificate for a fresh key (thrown away), issued by this platform's ASVK: "another
    /// VLEK, validly signed by the same ASVK".
    pub fn issue_vlek_for_other_key(&self) -> Result<Vec<u8>, SimError> {
        let v = self.vlek_chain.as_ref().ok_or(SimError::NoVlek)?;
        let (_, public) = keys::generate_ecdsa(&self.rng)?;
        let der = x509::issue_leaf(
            &self.state,
            CertRole::Vlek,
            &public,
            &v.asvk,
            &v.asvk_key,
            &self.rng,
        )?;
        AmdCertificate::from_der(&der)?.verify_issued_by(&v.asvk)?;
        Ok(der)
    }

    /// Checks that what was loaded hangs together: the chain verifies, the leaf keys match the
    /// certificates, the leaf SPLs and hwID match the platform file.
    fn check_consistency(&self) -> Result<(), SimError> {
        let inconsistent = |detail: String| SimError::StateFile {
            path: self.dir.join(PLATFORM_FILE),
            detail,
        };
        self.ark.verify_issued_by(&self.ark)?;
        self.ask.verify_issued_by(&self.ark)?;
        self.vcek.verify_issued_by(&self.ask)?;
        let mut leaves = vec![(CertRole::Vcek, &self.vcek, &self.vcek_key)];
        if let Some(v) = &self.vlek_chain {
            v.asvk.verify_issued_by(&self.ark)?;
            v.vlek.verify_issued_by(&v.asvk)?;
            leaves.push((CertRole::Vlek, &v.vlek, &v.vlek_key));
        }
        for (role, cert, key) in leaves {
            use ring::signature::KeyPair;
            if cert.p384_public_key()? != key.public_key().as_ref() {
                return Err(inconsistent(format!(
                    "the {role} key does not match the {role} certificate"
                )));
            }
            let ext = cert.amd_extensions()?;
            let tcb = self.state.tcb;
            let spls = (
                ext.bl_spl,
                ext.tee_spl,
                ext.snp_spl,
                ext.ucode_spl,
                ext.fmc_spl,
            );
            if spls != (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc) {
                return Err(inconsistent(format!(
                    "the {role} certificate's SPLs differ from the platform TCB {tcb}"
                )));
            }
            if role == CertRole::Vcek {
                let hw_len = x509::hw_id_len(self.state.product);
                if ext.hw_id.as_deref() != Some(&self.state.chip_id[..hw_len]) {
                    return Err(inconsistent(
                        "the VCEK's hwID differs from the platform chip id".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Writes keys, certificates and, last, the platform file into the (empty) directory `dir`. Here, where
/// both the state (what a platform is) and its certificate hierarchy are known, so that neither module
/// depends on the other's.
fn write_new_platform(
    dir: &Path,
    state: &state::PlatformState,
    h: &x509::Hierarchy,
) -> Result<(), SimError> {
    use state::{
        make_dir, platform_toml, write_new, ARK_KEY, ASK_KEY, ASVK_KEY, CERTS_DIR, DIR_MODE,
        KEYS_DIR, KEY_MODE, PLATFORM_FILE, PUBLIC_DIR_MODE, PUBLIC_MODE, VCEK_KEY, VLEK_CERTS_DIR,
        VLEK_KEY,
    };
    let keys = dir.join(KEYS_DIR);
    make_dir(&keys, DIR_MODE)?;
    write_new(&keys.join(ARK_KEY), &h.ark.key_pkcs8, KEY_MODE)?;
    write_new(&keys.join(ASK_KEY), &h.ask.key_pkcs8, KEY_MODE)?;
    write_new(&keys.join(VCEK_KEY), &h.vcek.key_pkcs8, KEY_MODE)?;

    let certs = dir.join(CERTS_DIR);
    make_dir(&certs, PUBLIC_DIR_MODE)?;
    write_new(&certs.join("ark.pem"), h.ark.pem()?.as_bytes(), PUBLIC_MODE)?;
    write_new(&certs.join("ask.pem"), h.ask.pem()?.as_bytes(), PUBLIC_MODE)?;
    write_new(
        &certs.join("vcek.pem"),
        h.vcek.pem()?.as_bytes(),
        PUBLIC_MODE,
    )?;

    if let Some(v) = &h.vlek {
        write_new(&keys.join(ASVK_KEY), &v.asvk.key_pkcs8, KEY_MODE)?;
        write_new(&keys.join(VLEK_KEY), &v.vlek.key_pkcs8, KEY_MODE)?;
        let certs = dir.join(VLEK_CERTS_DIR);
        make_dir(&certs, PUBLIC_DIR_MODE)?;
        write_new(&certs.join("ark.pem"), h.ark.pem()?.as_bytes(), PUBLIC_MODE)?;
        write_new(
            &certs.join("asvk.pem"),
            v.asvk.pem()?.as_bytes(),
            PUBLIC_MODE,
        )?;
        write_new(
            &certs.join("vlek.pem"),
            v.vlek.pem()?.as_bytes(),
            PUBLIC_MODE,
        )?;
    }

    let path = dir.join(PLATFORM_FILE);
    write_new(&path, platform_toml(&path, state)?.as_bytes(), PUBLIC_MODE)
}

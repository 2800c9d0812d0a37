//! The SEV-SNP `ATTESTATION_REPORT` structure: a byte-exact codec.
//!
//! Layout from AMD's *SEV Secure Nested Paging Firmware ABI Specification* (publication 56860), table
//! "ATTESTATION_REPORT Structure". All integers are little-endian. The report is 0x4A0 (1184) bytes; the
//! ECDSA P-384 signature at 0x2A0 covers bytes 0x000..0x2A0.
//!
//! Why our own codec rather than `sev`'s `AttestationReport`: `sev` must guess the CPU generation before it
//! can decode a TCB (and fails on version-2 reports whose CHIP_ID is masked, as VLEK reports are), it maps
//! every failure to `io::Error`, and it does not say *which* reserved field was non-zero. Here the TCB
//! layout is taken from the report itself (CPUID family on v3+; version 2 predates Turin), every rejection
//! names the field, and decode → encode is the identity on every accepted input (a property test checks
//! it). `sev` is kept as a cross-check in tests.
//!
//! Untrusted input: every byte here comes from the host or the network until the signature is checked.
//! Parsing never panics and rejects non-zero reserved fields (fail closed: a field we do not understand is
//! not silently accepted).

use core::fmt;

/// Length of an ATTESTATION_REPORT in bytes (SNP ABI: 0x4A0).
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN` (SNP ABI: 0x000..0x29F).
pub const SIGNED_LEN: usize = 0x2A0;
/// Length of each of the little-endian R and S components in the SIGNATURE field (SNP ABI: 72 bytes).
pub const SIGNATURE_COMPONENT_LEN: usize = 72;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only algorithm AMD defines.
pub const SIGNATURE_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Lowest report version this codec understands (first public SNP ABI layout).
pub const MIN_REPORT_VERSION: u32 = 2;
/// Highest report version this codec understands (adds launch mitigation vectors).
pub const MAX_REPORT_VERSION: u32 = 5;

// Field offsets (SNP ABI, ATTESTATION_REPORT table). Named so that no magic number appears in the code.
const OFF_VERSION: usize = 0x000;
const OFF_GUEST_SVN: usize = 0x004;
const OFF_POLICY: usize = 0x008;
const OFF_FAMILY_ID: usize = 0x010;
const OFF_IMAGE_ID: usize = 0x020;
const OFF_VMPL: usize = 0x030;
const OFF_SIGNATURE_ALGO: usize = 0x034;
const OFF_CURRENT_TCB: usize = 0x038;
const OFF_PLATFORM_INFO: usize = 0x040;
const OFF_KEY_INFO: usize = 0x048;
const OFF_RESERVED_04C: usize = 0x04C;
const OFF_REPORT_DATA: usize = 0x050;
const OFF_MEASUREMENT: usize = 0x090;
const OFF_HOST_DATA: usize = 0x0C0;
const OFF_ID_KEY_DIGEST: usize = 0x0E0;
const OFF_AUTHOR_KEY_DIGEST: usize = 0x110;
const OFF_REPORT_ID: usize = 0x140;
const OFF_REPORT_ID_MA: usize = 0x160;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID_FAM_ID: usize = 0x188;
const OFF_CPUID_MOD_ID: usize = 0x189;
const OFF_CPUID_STEP: usize = 0x18A;
const OFF_RESERVED_18B: usize = 0x18B;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_CURRENT_BUILD: usize = 0x1E8;
const OFF_RESERVED_1EB: usize = 0x1EB;
const OFF_COMMITTED_BUILD: usize = 0x1EC;
const OFF_RESERVED_1EF: usize = 0x1EF;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_LAUNCH_MIT_VECTOR: usize = 0x1F8;
const OFF_CURRENT_MIT_VECTOR: usize = 0x200;
const OFF_RESERVED_208: usize = 0x208;
const OFF_SIGNATURE: usize = 0x2A0;
const OFF_SIGNATURE_RESERVED: usize = OFF_SIGNATURE + 2 * SIGNATURE_COMPONENT_LEN;

/// Bit 17 of GUEST_POLICY is reserved and must be 1 (SNP ABI, GUEST_POLICY table).
const POLICY_RESERVED_MUST_BE_ONE: u64 = 1 << 17;
/// GUEST_POLICY bits 63:26 are reserved, must be zero.
const POLICY_RESERVED_MBZ: u64 = !((1 << 26) - 1);
/// KEY_INFO (0x48) bits 31:5 are reserved, must be zero.
const KEY_INFO_RESERVED_MBZ: u32 = !((1 << 5) - 1);

/// Why a byte string is not a well-formed attestation report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// SNP evidence in the attestation agent's JSON form is malformed ([`sev_json`]).
    #[error("sev_json: {0}")]
    SevJson(String),
    /// The report is not exactly 1184 bytes.
    #[error("report length: expected {expected} bytes (0x4A0), found {found}")]
    Length {
        /// Always [`REPORT_LEN`].
        expected: usize,
        /// Length of the input.
        found: usize,
    },
    /// VERSION is outside the supported range.
    #[error("report VERSION: expected {MIN_REPORT_VERSION}..={MAX_REPORT_VERSION}, found {found}")]
    UnsupportedVersion {
        /// The VERSION field.
        found: u32,
    },
    /// A reserved field is not zero.
    #[error("report reserved field {field} (offset {offset:#05x}) must be zero")]
    ReservedNotZero {
        /// Name of the reserved field, as in the ABI table.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
    },
    /// GUEST_POLICY bit 17 (reserved, must be one) is zero.
    #[error("report POLICY bit 17 (reserved, must be 1) is 0 in {policy:#x}")]
    PolicyReservedBitClear {
        /// The POLICY field.
        policy: u64,
    },
    /// KEY_INFO.SIGNING_KEY has a value the ABI reserves.
    #[error("report SIGNING_KEY: expected 0 (VCEK), 1 (VLEK) or 7 (none), found {found}")]
    UnknownSigningKey {
        /// The 3-bit SIGNING_KEY field.
        found: u8,
    },
    /// The CPUID family of a v3+ report is not an SEV-SNP product family.
    #[error(
        "report CPUID_FAM_ID {family:#04x} / CPUID_MOD_ID {model:#04x}: not an SEV-SNP product"
    )]
    UnknownCpu {
        /// CPUID_FAM_ID.
        family: u8,
        /// CPUID_MOD_ID.
        model: u8,
    },
    /// A TCB field has a non-zero reserved byte.
    #[error("report {field}: reserved bytes of TCB_VERSION must be zero, found {raw:#018x}")]
    TcbReservedNotZero {
        /// Which TCB field (CURRENT_TCB, REPORTED_TCB, ...).
        field: &'static str,
        /// The raw 64-bit value.
        raw: u64,
    },
    /// Encoding asked for a layout the version cannot carry (e.g. CPUID fields in a v2 report).
    #[error("cannot encode report: {0}")]
    Inconsistent(&'static str),
}

/// Layout of the 64-bit TCB_VERSION structure, which differs by product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcbLayout {
    /// Milan and Genoa: BOOT_LOADER (byte 0), TEE (1), reserved (2..6), SNP (6), MICROCODE (7).
    Legacy,
    /// Turin: FMC (byte 0), BOOT_LOADER (1), TEE (2), SNP (3), reserved (4..7), MICROCODE (7).
    Turin,
}

/// A TCB_VERSION: the security patch levels of the firmware components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TcbVersion {
    /// SVN of the FMC firmware (Turin and later; `None` on Milan/Genoa).
    pub fmc: Option<u8>,
    /// SVN of the PSP bootloader.
    pub bootloader: u8,
    /// SVN of the PSP operating system (TEE).
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest current patch level of all cores (microcode).
    pub microcode: u8,
}

impl TcbVersion {
    /// The layout this TCB value is written in.
    pub fn layout(&self) -> TcbLayout {
        if self.fmc.is_some() {
            TcbLayout::Turin
        } else {
            TcbLayout::Legacy
        }
    }

    /// Decodes a raw TCB_VERSION in the given layout; reserved bytes must be zero.
    pub fn decode(raw: u64, layout: TcbLayout, field: &'static str) -> Result<Self, ReportError> {
        let b = raw.to_le_bytes();
        let (tcb, reserved) = match layout {
            TcbLayout::Legacy => (
                TcbVersion {
                    fmc: None,
                    bootloader: b[0],
                    tee: b[1],
                    snp: b[6],
                    microcode: b[7],
                },
                [b[2], b[3], b[4], b[5]],
            ),
            TcbLayout::Turin => (
                TcbVersion {
                    fmc: Some(b[0]),
                    bootloader: b[1],
                    tee: b[2],
                    snp: b[3],
                    microcode: b[7],
                },
                [b[4], b[5], b[6], 0],
            ),
        };
        if reserved != [0; 4] {
            return Err(ReportError::TcbReservedNotZero { field, raw });
        }
        Ok(tcb)
    }

    /// Encodes to the raw 64-bit TCB_VERSION of this value's layout.
    pub fn encode(&self) -> u64 {
        let b = match self.fmc {
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
        };
        u64::from_le_bytes(b)
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc}/")?;
        }
        write!(
            f,
            "bootloader={}/tee={}/snp={}/microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// GUEST_POLICY: the policy the guest owner set at launch, enforced by the AMD-SP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Minimum ABI minor version the guest requires (bits 7:0).
    pub fn abi_minor(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
    /// Minimum ABI major version the guest requires (bits 15:8).
    pub fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xFF) as u8
    }
    /// SMT is allowed (bit 16).
    pub fn smt(self) -> bool {
        self.bit(16)
    }
    /// Association with a migration agent is allowed (bit 18).
    pub fn migrate_ma(self) -> bool {
        self.bit(18)
    }
    /// Debugging is allowed: the host can read and write guest memory (bit 19).
    pub fn debug(self) -> bool {
        self.bit(19)
    }
    /// The guest may only be activated on one socket (bit 20).
    pub fn single_socket(self) -> bool {
        self.bit(20)
    }
    /// CXL may be populated with guest memory (bit 21).
    pub fn cxl_allow(self) -> bool {
        self.bit(21)
    }
    /// AES-256-XTS is required for memory encryption (bit 22).
    pub fn mem_aes_256_xts(self) -> bool {
        self.bit(22)
    }
    /// Running Average Power Limit must be disabled (bit 23).
    pub fn rapl_dis(self) -> bool {
        self.bit(23)
    }
    /// Ciphertext hiding must be enabled (bit 24).
    pub fn ciphertext_hiding(self) -> bool {
        self.bit(24)
    }
    /// Guest page swapping is disabled (bit 25).
    pub fn page_swap_disable(self) -> bool {
        self.bit(25)
    }
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
}

/// PLATFORM_INFO: the platform's configuration when the report was made. Kept raw because AMD keeps
/// assigning bits (Turin sets bit 6); the known bits have accessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    /// SMT is enabled in the system (bit 0).
    pub fn smt_enabled(self) -> bool {
        self.0 & 1 != 0
    }
    /// TSME is enabled (bit 1).
    pub fn tsme_enabled(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// The platform uses ECC memory (bit 2).
    pub fn ecc_enabled(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// RAPL is disabled (bit 3).
    pub fn rapl_disabled(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Ciphertext hiding is enabled (bit 4).
    pub fn ciphertext_hiding_enabled(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Alias detection completed with no aliasing found since the last reset (bit 5).
    pub fn alias_check_complete(self) -> bool {
        self.0 & (1 << 5) != 0
    }
}

/// Which key signed the report (KEY_INFO.SIGNING_KEY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key (per chip, per TCB).
    Vcek,
    /// Versioned Loaded Endorsement Key (per cloud provider, loaded by AMD).
    Vlek,
    /// No key: the report is unsigned.
    None,
}

impl SigningKey {
    fn from_bits(bits: u8) -> Result<Self, ReportError> {
        match bits {
            0 => Ok(SigningKey::Vcek),
            1 => Ok(SigningKey::Vlek),
            7 => Ok(SigningKey::None),
            found => Err(ReportError::UnknownSigningKey { found }),
        }
    }
    fn bits(self) -> u8 {
        match self {
            SigningKey::Vcek => 0,
            SigningKey::Vlek => 1,
            SigningKey::None => 7,
        }
    }
    /// Lower-case name ("vcek", "vlek", "none").
    pub fn name(self) -> &'static str {
        match self {
            SigningKey::Vcek => "vcek",
            SigningKey::Vlek => "vlek",
            SigningKey::None => "none",
        }
    }
}

/// The CPUID fields of v3+ reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cpuid {
    /// Combined extended family and family (e.g. 0x19 Milan/Genoa, 0x1A Turin).
    pub family: u8,
    /// Combined extended model and model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

impl Cpuid {
    /// The SEV-SNP product this CPUID identifies, if any.
    pub fn product(self) -> Option<super::Product> {
        use super::Product;
        match (self.family, self.model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            // Genoa (0x10..0x1F) and its derivatives Bergamo/Siena (0xA0..0xAF).
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

/// A firmware version (major.minor.build), as in CURRENT_* and COMMITTED_*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build number.
    pub build: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// A decoded SEV-SNP attestation report. Field names follow the SNP ABI.
///
/// Decoding does not check the signature: a value of this type says nothing about authenticity. Only
/// [`crate::snp::verify`] turns one into a [`crate::snp::verify::VerifiedReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationReport {
    /// VERSION: 2, 3, 4 or 5.
    pub version: u32,
    /// GUEST_SVN from the ID block.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: GuestPolicy,
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL of the request.
    pub vmpl: u32,
    /// SIGNATURE_ALGO (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: PlatformInfo,
    /// KEY_INFO.AUTHOR_KEY_EN: the digest of the author key is present in AUTHOR_KEY_DIGEST.
    pub author_key_en: bool,
    /// KEY_INFO.MASK_CHIP_KEY: CHIP_ID is masked (zero).
    pub mask_chip_key: bool,
    /// KEY_INFO.SIGNING_KEY.
    pub signing_key: SigningKey,
    /// REPORT_DATA supplied by the guest.
    pub report_data: [u8; 64],
    /// MEASUREMENT: the launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA supplied by the host at launch.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST: SHA-384 of the ID public key that signed the ID block.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST: SHA-384 of the author public key that certified the ID key.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID of the guest.
    pub report_id: [u8; 32],
    /// REPORT_ID_MA: the report ID of the migration agent.
    pub report_id_ma: [u8; 32],
    /// REPORTED_TCB: the TCB used to derive the VCEK that signed the report.
    pub reported_tcb: TcbVersion,
    /// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3 and later).
    pub cpuid: Option<Cpuid>,
    /// CHIP_ID: unique chip identifier (zero when masked or VLEK-signed; Turin uses the first 8 bytes).
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// CURRENT_MAJOR.CURRENT_MINOR.CURRENT_BUILD.
    pub current_version: FirmwareVersion,
    /// COMMITTED_MAJOR.COMMITTED_MINOR.COMMITTED_BUILD.
    pub committed_version: FirmwareVersion,
    /// LAUNCH_TCB: the CURRENT_TCB at the time the guest was launched or imported.
    pub launch_tcb: TcbVersion,
    /// LAUNCH_MIT_VECTOR (version 5 and later).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5 and later).
    pub current_mit_vector: Option<u64>,
    /// SIGNATURE.R, little-endian, zero-extended to 72 bytes.
    pub signature_r: [u8; SIGNATURE_COMPONENT_LEN],
    /// SIGNATURE.S, little-endian, zero-extended to 72 bytes.
    pub signature_s: [u8; SIGNATURE_COMPONENT_LEN],
}

fn array<const N: usize>(b: &[u8; REPORT_LEN], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}
fn u32_at(b: &[u8; REPORT_LEN], off: usize) -> u32 {
    u32::from_le_bytes(array(b, off))
}
fn u64_at(b: &[u8; REPORT_LEN], off: usize) -> u64 {
    u64::from_le_bytes(array(b, off))
}
fn require_zero(
    b: &[u8; REPORT_LEN],
    start: usize,
    end: usize,
    field: &'static str,
) -> Result<(), ReportError> {
    if b[start..end].iter().all(|&x| x == 0) {
        Ok(())
    } else {
        Err(ReportError::ReservedNotZero {
            field,
            offset: start,
        })
    }
}

impl AttestationReport {
    /// Decodes a report. Accepts exactly [`REPORT_LEN`] bytes of version 2 to 5; rejects non-zero reserved
    /// fields. Does not verify the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportError> {
        let b: &[u8; REPORT_LEN] = bytes.try_into().map_err(|_| ReportError::Length {
            expected: REPORT_LEN,
            found: bytes.len(),
        })?;

        let version = u32_at(b, OFF_VERSION);
        if !(MIN_REPORT_VERSION..=MAX_REPORT_VERSION).contains(&version) {
            return Err(ReportError::UnsupportedVersion { found: version });
        }
        let has_cpuid = version >= 3;
        let has_mit_vectors = version >= 5;

        let policy = u64_at(b, OFF_POLICY);
        if policy & POLICY_RESERVED_MUST_BE_ONE == 0 {
            return Err(ReportError::PolicyReservedBitClear { policy });
        }
        if policy & POLICY_RESERVED_MBZ != 0 {
            return Err(ReportError::ReservedNotZero {
                field: "POLICY[63:26]",
                offset: OFF_POLICY,
            });
        }

        let key_info = u32_at(b, OFF_KEY_INFO);
        if key_info & KEY_INFO_RESERVED_MBZ != 0 {
            return Err(ReportError::ReservedNotZero {
                field: "KEY_INFO[31:5]",
                offset: OFF_KEY_INFO,
            });
        }
        require_zero(b, OFF_RESERVED_04C, OFF_REPORT_DATA, "RESERVED (0x4C)")?;

        // CPUID (v3+) decides the TCB layout. Version 2 predates Turin, so it is always the legacy layout.
        let cpuid = if has_cpuid {
            require_zero(b, OFF_RESERVED_18B, OFF_CHIP_ID, "RESERVED (0x18B)")?;
            Some(Cpuid {
                family: b[OFF_CPUID_FAM_ID],
                model: b[OFF_CPUID_MOD_ID],
                stepping: b[OFF_CPUID_STEP],
            })
        } else {
            require_zero(b, OFF_CPUID_FAM_ID, OFF_CHIP_ID, "RESERVED (0x188)")?;
            None
        };
        let layout = match cpuid {
            None => TcbLayout::Legacy,
            Some(c) => match c.product() {
                Some(super::Product::Turin) => TcbLayout::Turin,
                Some(_) => TcbLayout::Legacy,
                None => {
                    return Err(ReportError::UnknownCpu {
                        family: c.family,
                        model: c.model,
                    })
                }
            },
        };

        require_zero(b, OFF_RESERVED_1EB, OFF_COMMITTED_BUILD, "RESERVED (0x1EB)")?;
        require_zero(b, OFF_RESERVED_1EF, OFF_LAUNCH_TCB, "RESERVED (0x1EF)")?;
        let (launch_mit_vector, current_mit_vector) = if has_mit_vectors {
            require_zero(b, OFF_RESERVED_208, OFF_SIGNATURE, "RESERVED (0x208)")?;
            (
                Some(u64_at(b, OFF_LAUNCH_MIT_VECTOR)),
                Some(u64_at(b, OFF_CURRENT_MIT_VECTOR)),
            )
        } else {
            require_zero(b, OFF_LAUNCH_MIT_VECTOR, OFF_SIGNATURE, "RESERVED (0x1F8)")?;
            (None, None)
        };
        require_zero(b, OFF_SIGNATURE_RESERVED, REPORT_LEN, "SIGNATURE reserved")?;

        let tcb = |off, field| TcbVersion::decode(u64_at(b, off), layout, field);
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(b, OFF_GUEST_SVN),
            policy: GuestPolicy(policy),
            family_id: array(b, OFF_FAMILY_ID),
            image_id: array(b, OFF_IMAGE_ID),
            vmpl: u32_at(b, OFF_VMPL),
            signature_algo: u32_at(b, OFF_SIGNATURE_ALGO),
            current_tcb: tcb(OFF_CURRENT_TCB, "CURRENT_TCB")?,
            platform_info: PlatformInfo(u64_at(b, OFF_PLATFORM_INFO)),
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key: SigningKey::from_bits(((key_info >> 2) & 0b111) as u8)?,
            report_data: array(b, OFF_REPORT_DATA),
            measurement: array(b, OFF_MEASUREMENT),
            host_data: array(b, OFF_HOST_DATA),
            id_key_digest: array(b, OFF_ID_KEY_DIGEST),
            author_key_digest: array(b, OFF_AUTHOR_KEY_DIGEST),
            report_id: array(b, OFF_REPORT_ID),
            report_id_ma: array(b, OFF_REPORT_ID_MA),
            reported_tcb: tcb(OFF_REPORTED_TCB, "REPORTED_TCB")?,
            cpuid,
            chip_id: array(b, OFF_CHIP_ID),
            committed_tcb: tcb(OFF_COMMITTED_TCB, "COMMITTED_TCB")?,
            current_version: FirmwareVersion {
                build: b[OFF_CURRENT_BUILD],
                minor: b[OFF_CURRENT_BUILD + 1],
                major: b[OFF_CURRENT_BUILD + 2],
            },
            committed_version: FirmwareVersion {
                build: b[OFF_COMMITTED_BUILD],
                minor: b[OFF_COMMITTED_BUILD + 1],
                major: b[OFF_COMMITTED_BUILD + 2],
            },
            launch_tcb: tcb(OFF_LAUNCH_TCB, "LAUNCH_TCB")?,
            launch_mit_vector,
            current_mit_vector,
            signature_r: array(b, OFF_SIGNATURE),
            signature_s: array(b, OFF_SIGNATURE + SIGNATURE_COMPONENT_LEN),
        })
    }

    /// Encodes the report to its 1184 bytes. `from_bytes(x).to_bytes() == x` for every accepted `x`.
    ///
    /// Fails if the fields cannot be represented in this version's layout (CPUID fields or mitigation
    /// vectors on a version that has none, TCBs whose layout disagrees with the CPUID).
    pub fn to_bytes(&self) -> Result<[u8; REPORT_LEN], ReportError> {
        if !(MIN_REPORT_VERSION..=MAX_REPORT_VERSION).contains(&self.version) {
            return Err(ReportError::UnsupportedVersion {
                found: self.version,
            });
        }
        if (self.version >= 3) != self.cpuid.is_some() {
            return Err(ReportError::Inconsistent(
                "CPUID fields are present exactly in versions 3 and later",
            ));
        }
        if (self.version >= 5)
            != (self.launch_mit_vector.is_some() && self.current_mit_vector.is_some())
        {
            return Err(ReportError::Inconsistent(
                "mitigation vectors are present exactly in versions 5 and later",
            ));
        }
        let expected_layout = match self.cpuid.map(|c| c.product()) {
            Some(Some(super::Product::Turin)) => TcbLayout::Turin,
            Some(None) => {
                return Err(ReportError::Inconsistent(
                    "CPUID does not name an SEV-SNP product",
                ))
            }
            _ => TcbLayout::Legacy,
        };
        let tcbs = [
            self.current_tcb,
            self.reported_tcb,
            self.committed_tcb,
            self.launch_tcb,
        ];
        if tcbs.iter().any(|t| t.layout() != expected_layout) {
            return Err(ReportError::Inconsistent(
                "TCB layout (fmc present only on Turin) disagrees with CPUID",
            ));
        }
        if self.signing_key == SigningKey::None && self.signature_algo == 0 {
            // Allowed: an unsigned report. Nothing to check here; the verifier rejects it.
        }

        let mut b = [0u8; REPORT_LEN];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(OFF_VERSION, &self.version.to_le_bytes());
        put(OFF_GUEST_SVN, &self.guest_svn.to_le_bytes());
        put(OFF_POLICY, &self.policy.0.to_le_bytes());
        put(OFF_FAMILY_ID, &self.family_id);
        put(OFF_IMAGE_ID, &self.image_id);
        put(OFF_VMPL, &self.vmpl.to_le_bytes());
        put(OFF_SIGNATURE_ALGO, &self.signature_algo.to_le_bytes());
        put(OFF_CURRENT_TCB, &self.current_tcb.encode().to_le_bytes());
        put(OFF_PLATFORM_INFO, &self.platform_info.0.to_le_bytes());
        let key_info = u32::from(self.author_key_en)
            | (u32::from(self.mask_chip_key) << 1)
            | (u32::from(self.signing_key.bits()) << 2);
        put(OFF_KEY_INFO, &key_info.to_le_bytes());
        put(OFF_REPORT_DATA, &self.report_data);
        put(OFF_MEASUREMENT, &self.measurement);
        put(OFF_HOST_DATA, &self.host_data);
        put(OFF_ID_KEY_DIGEST, &self.id_key_digest);
        put(OFF_AUTHOR_KEY_DIGEST, &self.author_key_digest);
        put(OFF_REPORT_ID, &self.report_id);
        put(OFF_REPORT_ID_MA, &self.report_id_ma);
        put(OFF_REPORTED_TCB, &self.reported_tcb.encode().to_le_bytes());
        if let Some(c) = self.cpuid {
            put(OFF_CPUID_FAM_ID, &[c.family, c.model, c.stepping]);
        }
        put(OFF_CHIP_ID, &self.chip_id);
        put(
            OFF_COMMITTED_TCB,
            &self.committed_tcb.encode().to_le_bytes(),
        );
        let v = self.current_version;
        put(OFF_CURRENT_BUILD, &[v.build, v.minor, v.major]);
        let v = self.committed_version;
        put(OFF_COMMITTED_BUILD, &[v.build, v.minor, v.major]);
        put(OFF_LAUNCH_TCB, &self.launch_tcb.encode().to_le_bytes());
        if let (Some(l), Some(c)) = (self.launch_mit_vector, self.current_mit_vector) {
            put(OFF_LAUNCH_MIT_VECTOR, &l.to_le_bytes());
            put(OFF_CURRENT_MIT_VECTOR, &c.to_le_bytes());
        }
        put(OFF_SIGNATURE, &self.signature_r);
        put(OFF_SIGNATURE + SIGNATURE_COMPONENT_LEN, &self.signature_s);

        // Re-check our own output with the decoder: the encoder must never emit a report the decoder
        // rejects (e.g. a policy without bit 17, or an out-of-range SIGNING_KEY).
        AttestationReport::from_bytes(&b)?;
        Ok(b)
    }

    /// The product the report's CPUID names (v3+), or `None` for version 2.
    pub fn cpuid_product(&self) -> Option<super::Product> {
        self.cpuid.and_then(|c| c.product())
    }

    /// The signature as a fixed-width big-endian `r || s` (48 + 48 bytes), as ring's
    /// `ECDSA_P384_SHA384_FIXED` expects. `None` if either component does not fit in 48 bytes (its upper
    /// 24 little-endian bytes must be zero for a P-384 scalar).
    pub fn signature_p384_fixed(&self) -> Option<[u8; 96]> {
        let mut out = [0u8; 96];
        for (i, comp) in [&self.signature_r, &self.signature_s]
            .into_iter()
            .enumerate()
        {
            if comp[48..].iter().any(|&x| x != 0) {
                return None;
            }
            for j in 0..48 {
                out[i * 48 + j] = comp[47 - j];
            }
        }
        Some(out)
    }
}

/// The bytes covered by the report signature: `report[0x000..0x2A0]`, taken from the raw input (never a
/// re-encoding, so that what is verified is exactly what was received).
pub fn signed_bytes(raw_report: &[u8]) -> Option<&[u8]> {
    raw_report.get(..SIGNED_LEN)
}

pub mod sev_json;

#[cfg(test)]
mod tests;

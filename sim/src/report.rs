//! Making and signing a simulated attestation report.
//!
//! SNP ABI (publication 56860), MSG_REPORT_REQ / ATTESTATION_REPORT: the AMD-SP fills the report from
//! the guest's request (REPORT_DATA, VMPL), the launch context (POLICY, MEASUREMENT, HOST_DATA, ID
//! block fields) and the platform (TCBs, CHIP_ID, CPUID, firmware versions), then signs bytes
//! 0x000..0x2A0 with ECDSA P-384 / SHA-384 and stores R and S little-endian, zero-extended to 72 bytes.

use ring::rand::SecureRandom;
use ring::signature::EcdsaKeyPair;

use super::state::PlatformState;
use super::{SimError, SimSigningKey};
use cloister_attestation::snp::report::{
    AttestationReport, Cpuid, FirmwareVersion, GuestPolicy, PlatformInfo, SigningKey, REPORT_LEN,
    SIGNATURE_ALGO_ECDSA_P384_SHA384, SIGNATURE_COMPONENT_LEN, SIGNED_LEN,
};
use cloister_attestation::snp::Product;

/// The guest policy of a default launch: SMT allowed (bit 16) and the reserved bit 17 that must be 1;
/// no debugging, no migration agent, ABI 0.0.
pub const DEFAULT_GUEST_POLICY: u64 = 0x30000;

/// Length of one P-384 scalar, big-endian, as ring's FIXED signature format holds it.
const P384_SCALAR_LEN: usize = 48;

/// What a guest (and its launch) puts into a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    /// REPORT_DATA: the guest's 64 bytes (Cloister: SHA-512 of the evidence claims).
    pub report_data: [u8; 64],
    /// VMPL of the requesting guest code, 0..=3.
    pub vmpl: u32,
    /// The guest POLICY set at launch. Bit 17 must be set. Default [`DEFAULT_GUEST_POLICY`].
    pub policy: u64,
    /// HOST_DATA supplied by the host at launch.
    pub host_data: [u8; 32],
    /// MEASUREMENT (see [`super::simulated_launch_measurement`]).
    pub measurement: [u8; 48],
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// GUEST_SVN from the ID block.
    pub guest_svn: u32,
    /// ID_KEY_DIGEST; zero when `None` (no ID block).
    pub id_key_digest: Option<[u8; 48]>,
    /// AUTHOR_KEY_DIGEST; when `Some`, KEY_INFO.AUTHOR_KEY_EN is set.
    pub author_key_digest: Option<[u8; 48]>,
    /// Which key signs: VCEK (default) or VLEK.
    pub signing_key: SimSigningKey,
    /// Report VERSION; `None`: the product's usual one (3 on Milan and Genoa, 5 on Turin).
    pub version: Option<u32>,
}

impl Default for ReportRequest {
    fn default() -> Self {
        ReportRequest {
            report_data: [0; 64],
            vmpl: 0,
            policy: DEFAULT_GUEST_POLICY,
            host_data: [0; 32],
            measurement: [0; 48],
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            id_key_digest: None,
            author_key_digest: None,
            signing_key: SimSigningKey::Vcek,
            version: None,
        }
    }
}

/// Per-product values of the platform part of a report, as AMD machines of that product report them.
struct ProductProfile {
    /// CPUID_FAM_ID / CPUID_MOD_ID / CPUID_STEP (family 19h model 01h stepping 1 is Milan B1, ...).
    cpuid: Cpuid,
    /// CURRENT and COMMITTED firmware version.
    firmware: FirmwareVersion,
    /// PLATFORM_INFO: SMT enabled, ECC memory, alias check complete (+ TSME and bit 6 on Turin).
    platform_info: u64,
    /// The report version the product's current firmware writes by default.
    default_version: u32,
}

fn profile(product: Product) -> ProductProfile {
    match product {
        Product::Milan => ProductProfile {
            cpuid: Cpuid {
                family: 0x19,
                model: 0x01,
                stepping: 0x01,
            },
            firmware: FirmwareVersion {
                major: 1,
                minor: 55,
                build: 29,
            },
            platform_info: 0x25,
            default_version: 3,
        },
        Product::Genoa => ProductProfile {
            cpuid: Cpuid {
                family: 0x19,
                model: 0x11,
                stepping: 0x01,
            },
            firmware: FirmwareVersion {
                major: 1,
                minor: 55,
                build: 43,
            },
            platform_info: 0x25,
            default_version: 3,
        },
        Product::Turin => ProductProfile {
            cpuid: Cpuid {
                family: 0x1A,
                model: 0x02,
                stepping: 0x01,
            },
            firmware: FirmwareVersion {
                major: 1,
                minor: 55,
                build: 61,
            },
            platform_info: 0x67,
            default_version: 5,
        },
    }
}

/// Builds the report for `req` on platform `st` and signs it with `key`.
pub(super) fn build_and_sign(
    st: &PlatformState,
    req: &ReportRequest,
    key: &EcdsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<[u8; REPORT_LEN], SimError> {
    let p = profile(st.product);
    let version = req.version.unwrap_or(p.default_version);
    // Version 2 has no CPUID fields and only the Milan/Genoa TCB layout: it predates Turin.
    let min_version = if st.product.has_fmc_tcb_layout() {
        3
    } else {
        2
    };
    if !(min_version..=cloister_attestation::snp::report::MAX_REPORT_VERSION).contains(&version) {
        return Err(SimError::ReportVersion {
            product: st.product,
            version,
        });
    }
    if req.vmpl > 3 {
        return Err(SimError::Vmpl(req.vmpl));
    }
    let signing_key = match req.signing_key {
        SimSigningKey::Vcek => SigningKey::Vcek,
        SimSigningKey::Vlek => SigningKey::Vlek,
    };
    // CHIP_ID: the chip's id for a VCEK-signed report; zero for a VLEK-signed one (a VLEK is not tied
    // to a chip, and AMD firmware writes zeros there, as the real VLEK vector shows).
    let chip_id = match signing_key {
        SigningKey::Vlek => [0u8; 64],
        _ => st.chip_id,
    };
    let mut report_id = [0u8; 32];
    rng.fill(&mut report_id)
        .map_err(|_| SimError::Signing("REPORT_ID (RNG)"))?;
    let tcb = st.tcb;
    let v5 = version >= 5;

    let mut report = AttestationReport {
        version,
        guest_svn: req.guest_svn,
        policy: GuestPolicy(req.policy),
        family_id: req.family_id,
        image_id: req.image_id,
        vmpl: req.vmpl,
        signature_algo: SIGNATURE_ALGO_ECDSA_P384_SHA384,
        // The simulated platform never updates its firmware: current = reported = committed = launch.
        current_tcb: tcb,
        platform_info: PlatformInfo(p.platform_info),
        author_key_en: req.author_key_digest.is_some(),
        mask_chip_key: false,
        signing_key,
        report_data: req.report_data,
        measurement: req.measurement,
        host_data: req.host_data,
        id_key_digest: req.id_key_digest.unwrap_or([0; 48]),
        author_key_digest: req.author_key_digest.unwrap_or([0; 48]),
        report_id,
        // No migration agent: REPORT_ID_MA is all ones.
        report_id_ma: [0xFF; 32],
        reported_tcb: tcb,
        cpuid: (version >= 3).then_some(p.cpuid),
        chip_id,
        committed_tcb: tcb,
        current_version: p.firmware,
        committed_version: p.firmware,
        launch_tcb: tcb,
        launch_mit_vector: v5.then_some(0),
        current_mit_vector: v5.then_some(0),
        signature_r: [0; SIGNATURE_COMPONENT_LEN],
        signature_s: [0; SIGNATURE_COMPONENT_LEN],
    };
    // Encode without a signature (the encoder checks every field against the decoder), sign the first
    // 0x2A0 bytes, then place R and S.
    let unsigned = report.to_bytes()?;
    let signature = key
        .sign(rng, &unsigned[..SIGNED_LEN])
        .map_err(|_| SimError::Signing("VCEK/VLEK"))?;
    let fixed = signature.as_ref();
    if fixed.len() != 2 * P384_SCALAR_LEN {
        return Err(SimError::Signing("VCEK/VLEK (unexpected signature length)"));
    }
    let (r, s) = fixed.split_at(P384_SCALAR_LEN);
    report.signature_r = little_endian_72(r);
    report.signature_s = little_endian_72(s);
    Ok(report.to_bytes()?)
}

/// A big-endian 48-byte scalar as the report stores it: little-endian, zero-extended to 72 bytes.
fn little_endian_72(big_endian: &[u8]) -> [u8; SIGNATURE_COMPONENT_LEN] {
    let mut out = [0u8; SIGNATURE_COMPONENT_LEN];
    for (o, b) in out.iter_mut().zip(big_endian.iter().rev()) {
        *o = *b;
    }
    out
}

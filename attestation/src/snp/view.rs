//! A serialisable, display-only view of a report: hex strings and decoded bit fields, with the field names
//! of `cloister verify --json`. Nothing here is used to decide trust.

use serde::Serialize;

use super::report::{AttestationReport, TcbVersion};

/// TCB as printed: `fmc` is `null` outside Turin.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TcbView {
    /// Bootloader SVN.
    pub bootloader: u8,
    /// TEE SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode SVN.
    pub microcode: u8,
    /// FMC SVN (Turin), else null.
    pub fmc: Option<u8>,
}

impl From<&TcbVersion> for TcbView {
    fn from(t: &TcbVersion) -> Self {
        TcbView {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        }
    }
}

/// Guest policy bits as printed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GuestPolicyView {
    /// DEBUG allowed.
    pub debug: bool,
    /// Migration agent allowed.
    pub migrate_ma: bool,
    /// SMT allowed.
    pub smt: bool,
    /// Single socket required.
    pub single_socket: bool,
    /// Minimum ABI major.
    pub abi_major: u8,
    /// Minimum ABI minor.
    pub abi_minor: u8,
}

/// The report as printed by `cloister verify --json` (the `report` object).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportView {
    /// VERSION.
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// VMPL.
    pub vmpl: u32,
    /// POLICY, decoded.
    pub policy: GuestPolicyView,
    /// MEASUREMENT, lower-case hex.
    pub measurement: String,
    /// REPORT_DATA, lower-case hex.
    pub report_data: String,
    /// HOST_DATA, lower-case hex.
    pub host_data: String,
    /// CHIP_ID, lower-case hex.
    pub chip_id: String,
    /// ID_KEY_DIGEST, lower-case hex.
    pub id_key_digest: String,
    /// AUTHOR_KEY_DIGEST, lower-case hex.
    pub author_key_digest: String,
    /// FAMILY_ID, lower-case hex.
    pub family_id: String,
    /// IMAGE_ID, lower-case hex.
    pub image_id: String,
    /// PLATFORM_INFO as a number.
    pub platform_info: u64,
    /// REPORTED_TCB.
    pub reported_tcb: TcbView,
    /// CURRENT_TCB.
    pub current_tcb: TcbView,
    /// COMMITTED_TCB.
    pub committed_tcb: TcbView,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbView,
}

impl From<&AttestationReport> for ReportView {
    fn from(r: &AttestationReport) -> Self {
        ReportView {
            version: r.version,
            guest_svn: r.guest_svn,
            vmpl: r.vmpl,
            policy: GuestPolicyView {
                debug: r.policy.debug(),
                migrate_ma: r.policy.migrate_ma(),
                smt: r.policy.smt(),
                single_socket: r.policy.single_socket(),
                abi_major: r.policy.abi_major(),
                abi_minor: r.policy.abi_minor(),
            },
            measurement: hex::encode(r.measurement),
            report_data: hex::encode(r.report_data),
            host_data: hex::encode(r.host_data),
            chip_id: hex::encode(r.chip_id),
            id_key_digest: hex::encode(r.id_key_digest),
            author_key_digest: hex::encode(r.author_key_digest),
            family_id: hex::encode(r.family_id),
            image_id: hex::encode(r.image_id),
            platform_info: r.platform_info.0,
            reported_tcb: (&r.reported_tcb).into(),
            current_tcb: (&r.current_tcb).into(),
            committed_tcb: (&r.committed_tcb).into(),
            launch_tcb: (&r.launch_tcb).into(),
        }
    }
}

//! Expected launch measurements of SEV-SNP guests, as the AMD-SP computes them, and ID blocks.
//!
//! The AMD-SP measures a guest page by page while the hypervisor loads it (SNP_LAUNCH_UPDATE), then
//! reports the final digest as MEASUREMENT. This module replays that from the files the host loads:
//! OVMF (an AmdSev build for direct kernel boot), the kernel/initrd/command line hashes table, the
//! special pages OVMF's SEV metadata declares, and one VMSA (initial register state) per vCPU. It
//! follows `sev-snp-measure` (virtee, the reference tool; the test vectors come from version 0.0.13), and
//! the SNP ABI (publication 56860, §8.17 SNP_LAUNCH_UPDATE, PAGE_INFO):
//!
//! ```text
//! LD_0 = 0^48
//! LD_i = SHA-384( PAGE_INFO_i )                                  // 0x70 bytes
//! PAGE_INFO = LD_{i-1}[48] || CONTENTS[48] || LENGTH=0x70 u16 || PAGE_TYPE u8 || IMI_PAGE=0 u8
//!             || VMPL3_PERMS=0 u8 || VMPL2_PERMS=0 u8 || VMPL1_PERMS=0 u8 || reserved u8 || GPA u64
//! CONTENTS  = SHA-384(page) for NORMAL (1) and VMSA (2) pages, 0^48 for ZERO (3), UNMEASURED (4),
//!             SECRETS (5) and CPUID (6) pages; VMSA pages use GPA 0xFFFFFFFFF000
//! ```
//!
//! Order: every 4 KiB page of OVMF (mapped to end at 4 GiB), then OVMF's SEV metadata sections in table
//! order (SNP_SEC_MEM zero pages — unmeasured on GCE —, the secrets page, the CPUID page — last on EC2 —,
//! the kernel hashes page, the SVSM calling area), then the VMSAs: the bootstrap processor's (EIP
//! 0xFFFFFFF0), then one per application processor (EIP from OVMF's SEV-ES reset block).
//!
//! The VMM sets the initial register state, so it is part of the measurement: QEMU puts the vCPU's CPUID
//! signature into RDX and initialises MXCSR and the x87 control word; EC2 and GCE put 0x600 into RDX and
//! leave those zero; EC2 uses other segment attributes; GCE another PAT and unmeasured SNP_SEC_MEM pages.
//! See `docs/measurement.md` for the EC2 difference with the `sev` crate 8.0.0.
//!
//! No file I/O here: callers pass bytes.

mod gctx;
mod hashes;
pub mod id_block;
mod ovmf;
mod vmsa;

use ring::digest::{digest, SHA256, SHA384};

use gctx::page_type;
pub use gctx::Gctx;
pub use hashes::sev_hashes_table;
pub use ovmf::{MetadataSection, Ovmf, SectionType};
pub use vmsa::vmsa_page;

/// Length of a launch digest (SHA-384).
pub const LD_LEN: usize = 48;
/// A guest page.
pub const PAGE_SIZE: usize = 4096;
/// The GPA the AMD-SP records for VMSA pages (SNP ABI: `(u64)-1`, page-aligned, bits above 51 clear).
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// EIP of the bootstrap processor at reset.
pub const BSP_EIP: u64 = 0xFFFF_FFF0;

/// Why a measurement cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeasureError {
    /// The firmware file is not a whole number of pages, or too small or large.
    #[error("OVMF: {len} bytes is not a non-empty multiple of 4096 below 4 GiB")]
    OvmfSize {
        /// Its length.
        len: usize,
    },
    /// The OVMF footer table is malformed.
    #[error("OVMF: malformed GUIDed footer table: {0}")]
    FooterTable(&'static str),
    /// A GUID the measurement needs is not in OVMF's footer table.
    #[error(
        "OVMF: no {what} entry ({guid}) in the footer table: not an OVMF build with SEV support"
    )]
    MissingTableEntry {
        /// What the entry is.
        what: &'static str,
        /// Its GUID.
        guid: crate::Guid,
    },
    /// OVMF has no SEV metadata (not an SEV-SNP capable build).
    #[error("OVMF: no SEV metadata (GUID dc886566-984a-4798-a75e-5585a7bf67cc): not an SEV-SNP capable build")]
    NoSevMetadata,
    /// The SEV metadata is malformed.
    #[error("OVMF: malformed SEV metadata: {0}")]
    SevMetadata(String),
    /// A kernel was given but OVMF has no kernel hashes section.
    #[error("OVMF has no SNP_KERNEL_HASHES section: kernel, initrd and command line cannot be measured \
             (direct kernel boot needs the AmdSev build, OvmfPkg/AmdSev/AmdSevX64.dsc)")]
    NoKernelHashes,
    /// The kernel hashes section or table is not where it must be.
    #[error("OVMF: {0}")]
    KernelHashes(&'static str),
    /// More than one vCPU but no reset vector for the application processors.
    #[error(
        "OVMF: SEV-ES reset block gives EIP 0: application processors cannot start (use --vcpus 1)"
    )]
    NoApResetEip,
    /// `--vcpus 0`.
    #[error("at least one vCPU is needed")]
    NoVcpus,
}

/// The VMM that launches the guest (it sets the initial register state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmmType {
    /// QEMU/KVM.
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl VmmType {
    /// Parses sev-snp-measure's names: `QEMU`, `ec2`, `gce`.
    pub fn from_name(name: &str) -> Option<VmmType> {
        match name {
            "QEMU" => Some(VmmType::Qemu),
            "ec2" => Some(VmmType::Ec2),
            "gce" => Some(VmmType::Gce),
            _ => None,
        }
    }
}

/// The CPUID signature (CPUID Fn0000_0001_EAX) of a vCPU family/model/stepping (AMD publication 25481).
pub const fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU's AMD EPYC CPU models (`builtin_x86_defs`) and their signatures, as sev-snp-measure lists them.
pub const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", cpu_sig(23, 1, 2)),
    ("EPYC-v1", cpu_sig(23, 1, 2)),
    ("EPYC-v2", cpu_sig(23, 1, 2)),
    ("EPYC-IBPB", cpu_sig(23, 1, 2)),
    ("EPYC-v3", cpu_sig(23, 1, 2)),
    ("EPYC-v4", cpu_sig(23, 1, 2)),
    ("EPYC-Rome", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v1", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v2", cpu_sig(23, 49, 0)),
    ("EPYC-Rome-v3", cpu_sig(23, 49, 0)),
    ("EPYC-Milan", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v1", cpu_sig(25, 1, 1)),
    ("EPYC-Milan-v2", cpu_sig(25, 1, 1)),
    ("EPYC-Genoa", cpu_sig(25, 17, 0)),
    ("EPYC-Genoa-v1", cpu_sig(25, 17, 0)),
    ("EPYC-Turin", cpu_sig(26, 0, 0)),
    // Newer QEMU models, same signature (the `sev` crate lists them; sev-snp-measure 0.0.13 does not).
    ("EPYC-Turin-v1", cpu_sig(26, 0, 0)),
    ("EPYC-Turin-v2", cpu_sig(26, 0, 0)),
];

/// The signature of a vCPU type name (see [`VCPU_TYPES`]).
pub fn vcpu_sig_of(name: &str) -> Option<u32> {
    VCPU_TYPES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

pub(crate) fn sha384(data: &[u8]) -> [u8; LD_LEN] {
    let mut out = [0u8; LD_LEN];
    out.copy_from_slice(digest(&SHA384, data).as_ref());
    out
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// What a launch is made of.
#[derive(Clone, Debug)]
pub struct LaunchInput<'a> {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// CPUID signature of the vCPU model (QEMU puts it into RDX; see [`vcpu_sig_of`]).
    pub vcpu_sig: u32,
    /// The VMM.
    pub vmm: VmmType,
    /// SEV_FEATURES of the VMSAs (0x1: SNP active).
    pub guest_features: u64,
    /// The OVMF image.
    pub ovmf: &'a [u8],
    /// Kernel for direct boot (measured through the hashes table).
    pub kernel: Option<&'a [u8]>,
    /// Initrd (with a kernel).
    pub initrd: Option<&'a [u8]>,
    /// Kernel command line (with a kernel).
    pub append: Option<&'a str>,
}

/// The launch digest (MEASUREMENT) of `input`. See the module documentation.
pub fn snp_launch_digest(input: &LaunchInput<'_>) -> Result<[u8; LD_LEN], MeasureError> {
    if input.vcpus == 0 {
        return Err(MeasureError::NoVcpus);
    }
    let ovmf = Ovmf::parse(input.ovmf)?;
    if ovmf.sections().is_empty() {
        return Err(MeasureError::NoSevMetadata);
    }
    let mut gctx = Gctx::default();
    gctx.normal_pages(ovmf.gpa(), ovmf.data());

    let hashes_page = match input.kernel {
        None => None,
        Some(kernel) => {
            if !ovmf
                .sections()
                .iter()
                .any(|s| s.kind == SectionType::SnpKernelHashes)
            {
                return Err(MeasureError::NoKernelHashes);
            }
            let table_gpa = ovmf.sev_hashes_table_gpa()?;
            let offset = (table_gpa & 0xfff) as usize;
            let table = sev_hashes_table(kernel, input.initrd, input.append);
            let mut page = vec![0u8; PAGE_SIZE];
            page.get_mut(offset..offset + table.len())
                .ok_or(MeasureError::KernelHashes(
                    "the hashes table does not fit its page",
                ))?
                .copy_from_slice(&table);
            Some(page)
        }
    };

    for s in ovmf.sections() {
        match s.kind {
            SectionType::SnpSecMem if input.vmm == VmmType::Gce => {
                gctx.each_page(page_type::UNMEASURED, s.gpa, s.size)
            }
            SectionType::SnpSecMem | SectionType::SvsmCaa => {
                gctx.each_page(page_type::ZERO, s.gpa, s.size)
            }
            SectionType::SnpSecrets => gctx.update(page_type::SECRETS, s.gpa, &[0; LD_LEN]),
            SectionType::Cpuid if input.vmm != VmmType::Ec2 => {
                gctx.update(page_type::CPUID, s.gpa, &[0; LD_LEN])
            }
            SectionType::Cpuid => {} // EC2 adds its CPUID page after the other sections (below).
            SectionType::SnpKernelHashes => match &hashes_page {
                Some(page) => {
                    if s.size != PAGE_SIZE as u64 {
                        return Err(MeasureError::KernelHashes(
                            "the SNP_KERNEL_HASHES section is not exactly one page",
                        ));
                    }
                    gctx.normal_pages(s.gpa, page)
                }
                None => gctx.each_page(page_type::ZERO, s.gpa, s.size),
            },
        }
    }
    if input.vmm == VmmType::Ec2 {
        for s in ovmf
            .sections()
            .iter()
            .filter(|s| s.kind == SectionType::Cpuid)
        {
            gctx.update(page_type::CPUID, s.gpa, &[0; LD_LEN]);
        }
    }

    let ap_eip = u64::from(ovmf.sev_es_reset_eip()?);
    let bsp = vmsa_page(BSP_EIP, input.vcpu_sig, input.vmm, input.guest_features);
    gctx.vmsa_page(&bsp);
    if input.vcpus > 1 {
        if ap_eip == 0 {
            return Err(MeasureError::NoApResetEip);
        }
        let ap = vmsa_page(ap_eip, input.vcpu_sig, input.vmm, input.guest_features);
        for _ in 1..input.vcpus {
            gctx.vmsa_page(&ap);
        }
    }
    Ok(gctx.ld())
}

#[cfg(test)]
mod tests;

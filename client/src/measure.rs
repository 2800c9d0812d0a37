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

use ring::digest::{digest, SHA256, SHA384};

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
        guid: &'static str,
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

/// A GUID in the mixed-endian layout EDK2 and QEMU store (`uuid.bytes_le`): the first three fields
/// little-endian.
const fn guid_le(s: &str) -> [u8; 16] {
    let b = s.as_bytes();
    let mut be = [0u8; 16];
    let mut i = 0;
    let mut o = 0;
    while o < 16 {
        if b[i] == b'-' {
            i += 1;
            continue;
        }
        be[o] = (hex_val(b[i]) << 4) | hex_val(b[i + 1]);
        i += 2;
        o += 1;
    }
    [
        be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
        be[12], be[13], be[14], be[15],
    ]
}

const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        // Only reachable at compile time, with a malformed literal below.
        _ => panic!("not a hex digit"),
    }
}

const OVMF_TABLE_FOOTER_GUID: [u8; 16] = guid_le("96b582de-1fb2-45f7-baea-a366c55a082d");
const SEV_HASH_TABLE_RV_GUID_STR: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_HASH_TABLE_RV_GUID: [u8; 16] = guid_le(SEV_HASH_TABLE_RV_GUID_STR);
const SEV_ES_RESET_BLOCK_GUID_STR: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid_le(SEV_ES_RESET_BLOCK_GUID_STR);
const OVMF_SEV_METADATA_GUID: [u8; 16] = guid_le("dc886566-984a-4798-a75e-5585a7bf67cc");

const SEV_HASH_TABLE_HEADER_GUID: [u8; 16] = guid_le("9438d606-4f22-4cc9-b479-a793d411fd21");
const SEV_KERNEL_ENTRY_GUID: [u8; 16] = guid_le("4de79437-abd2-427f-b835-d5b172d2045b");
const SEV_INITRD_ENTRY_GUID: [u8; 16] = guid_le("44baf731-3a2f-4bd7-9af1-41e29169781d");
const SEV_CMDLINE_ENTRY_GUID: [u8; 16] = guid_le("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// Types of OVMF's SEV metadata sections (OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionType {
    /// Memory OVMF pre-validates (zero pages).
    SnpSecMem,
    /// The SNP secrets page.
    SnpSecrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling area.
    SvsmCaa,
    /// The kernel/initrd/command line hashes table.
    SnpKernelHashes,
}

impl SectionType {
    fn from_raw(raw: u32) -> Option<SectionType> {
        Some(match raw {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            _ => return None,
        })
    }
}

/// One SEV metadata section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: SectionType,
}

/// The parts of an OVMF image the measurement needs.
#[derive(Clone, Debug)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    table: Vec<([u8; 16], &'a [u8])>,
    sections: Vec<MetadataSection>,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Ovmf<'a> {
    /// Parses the GUIDed footer table (it ends 32 bytes before the end of the image) and the SEV metadata.
    pub fn parse(data: &'a [u8]) -> Result<Ovmf<'a>, MeasureError> {
        let len = data.len();
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) || len as u64 >= 1 << 32 {
            return Err(MeasureError::OvmfSize { len });
        }
        const ENTRY_HEADER: usize = 18; // u16 size + GUID
        let footer_start = len - 32 - ENTRY_HEADER;
        let mut table = Vec::new();
        if data[footer_start + 2..footer_start + ENTRY_HEADER] == OVMF_TABLE_FOOTER_GUID {
            let footer_size = le_u16(data, footer_start)
                .ok_or(MeasureError::FooterTable("truncated footer"))?
                as usize;
            let table_size = footer_size
                .checked_sub(ENTRY_HEADER)
                .ok_or(MeasureError::FooterTable("footer size below its header"))?;
            let start = footer_start
                .checked_sub(table_size)
                .ok_or(MeasureError::FooterTable("table larger than the image"))?;
            let mut rest = &data[start..footer_start];
            // Entries are read backwards: each ends with its u16 size and GUID.
            while rest.len() >= ENTRY_HEADER {
                let h = rest.len() - ENTRY_HEADER;
                let size =
                    le_u16(rest, h).ok_or(MeasureError::FooterTable("truncated entry"))? as usize;
                if size < ENTRY_HEADER || size > rest.len() {
                    return Err(MeasureError::FooterTable("entry size out of range"));
                }
                let mut guid = [0u8; 16];
                guid.copy_from_slice(&rest[h + 2..h + ENTRY_HEADER]);
                table.push((guid, &rest[rest.len() - size..h]));
                rest = &rest[..rest.len() - size];
            }
        }
        let mut ovmf = Ovmf {
            data,
            table,
            sections: Vec::new(),
        };
        ovmf.sections = ovmf.parse_sev_metadata()?;
        Ok(ovmf)
    }

    fn parse_sev_metadata(&self) -> Result<Vec<MetadataSection>, MeasureError> {
        let bad = |m: &str| MeasureError::SevMetadata(m.to_owned());
        let Some(entry) = self.entry(&OVMF_SEV_METADATA_GUID) else {
            return Ok(Vec::new());
        };
        let from_end = le_u32(entry, 0).ok_or_else(|| bad("short table entry"))? as usize;
        let start = self
            .data
            .len()
            .checked_sub(from_end)
            .ok_or_else(|| bad("offset beyond the image"))?;
        let d = self.data;
        if d.get(start..start + 4) != Some(b"ASEV".as_slice()) {
            return Err(bad("wrong signature (expected ASEV)"));
        }
        let size = le_u32(d, start + 4).ok_or_else(|| bad("truncated header"))? as usize;
        let version = le_u32(d, start + 8).ok_or_else(|| bad("truncated header"))?;
        let count = le_u32(d, start + 12).ok_or_else(|| bad("truncated header"))? as usize;
        if version != 1 {
            return Err(MeasureError::SevMetadata(format!(
                "version {version}, expected 1"
            )));
        }
        let items = d
            .get(start + 16..start + size.max(16))
            .ok_or_else(|| bad("size beyond the image"))?;
        if count.checked_mul(12).is_none_or(|n| n > items.len()) {
            return Err(bad("more sections than its size holds"));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let at = i * 12;
            let (gpa, size, kind) = (
                le_u32(items, at).ok_or_else(|| bad("truncated section"))?,
                le_u32(items, at + 4).ok_or_else(|| bad("truncated section"))?,
                le_u32(items, at + 8).ok_or_else(|| bad("truncated section"))?,
            );
            let kind = SectionType::from_raw(kind).ok_or_else(|| {
                MeasureError::SevMetadata(format!("unknown section type {kind:#x}"))
            })?;
            if !(gpa as usize).is_multiple_of(PAGE_SIZE)
                || !(size as usize).is_multiple_of(PAGE_SIZE)
            {
                return Err(MeasureError::SevMetadata(format!(
                    "section {i} ({kind:?}) at {gpa:#x}+{size:#x} is not page-aligned"
                )));
            }
            out.push(MetadataSection {
                gpa: u64::from(gpa),
                size: u64::from(size),
                kind,
            });
        }
        Ok(out)
    }

    fn entry(&self, guid: &[u8; 16]) -> Option<&'a [u8]> {
        self.table.iter().find(|(g, _)| g == guid).map(|(_, d)| *d)
    }

    fn entry_u32(
        &self,
        guid: &[u8; 16],
        what: &'static str,
        s: &'static str,
    ) -> Result<u32, MeasureError> {
        self.entry(guid)
            .and_then(|e| le_u32(e, 0))
            .ok_or(MeasureError::MissingTableEntry { what, guid: s })
    }

    /// The image's bytes.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// Where the image is mapped: it ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        (1u64 << 32) - self.data.len() as u64
    }

    /// The SEV metadata sections, in table order (empty for a build without SEV support).
    pub fn sections(&self) -> &[MetadataSection] {
        &self.sections
    }

    /// The EIP of application processors (SEV-ES reset block).
    pub fn sev_es_reset_eip(&self) -> Result<u32, MeasureError> {
        self.entry_u32(
            &SEV_ES_RESET_BLOCK_GUID,
            "SEV-ES reset block",
            SEV_ES_RESET_BLOCK_GUID_STR,
        )
    }

    /// The GPA of the kernel hashes table (0 in builds without one).
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, MeasureError> {
        self.entry_u32(
            &SEV_HASH_TABLE_RV_GUID,
            "SEV hash table",
            SEV_HASH_TABLE_RV_GUID_STR,
        )
    }
}

/// The guest context's launch digest, updated page by page (SNP ABI PAGE_INFO, see the module docs).
#[derive(Clone, Debug)]
pub struct Gctx {
    ld: [u8; LD_LEN],
}

impl Default for Gctx {
    /// LD_0: all zero.
    fn default() -> Self {
        Gctx { ld: [0; LD_LEN] }
    }
}

/// PAGE_INFO.PAGE_TYPE values.
mod page_type {
    pub(super) const NORMAL: u8 = 1;
    pub(super) const VMSA: u8 = 2;
    pub(super) const ZERO: u8 = 3;
    pub(super) const UNMEASURED: u8 = 4;
    pub(super) const SECRETS: u8 = 5;
    pub(super) const CPUID: u8 = 6;
}

impl Gctx {
    /// The current launch digest.
    pub fn ld(&self) -> [u8; LD_LEN] {
        self.ld
    }

    fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; LD_LEN]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type;
        // 99: IMI_PAGE = 0; 100..103: VMPL3/2/1 permissions = 0, reserved = 0.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = sha384(&info);
    }

    /// NORMAL pages holding `data` (a whole number of pages) from `gpa` on.
    pub fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE_SIZE).enumerate() {
            self.update(
                page_type::NORMAL,
                gpa + (i * PAGE_SIZE) as u64,
                &sha384(page),
            );
        }
    }

    /// A VMSA page.
    pub fn vmsa_page(&mut self, page: &[u8; PAGE_SIZE]) {
        self.update(page_type::VMSA, VMSA_GPA, &sha384(page));
    }

    fn each_page(&mut self, page_type: u8, gpa: u64, size: u64) {
        let mut off = 0;
        while off < size {
            self.update(page_type, gpa + off, &[0; LD_LEN]);
            off += PAGE_SIZE as u64;
        }
    }
}

fn sha384(data: &[u8]) -> [u8; LD_LEN] {
    let mut out = [0u8; LD_LEN];
    out.copy_from_slice(digest(&SHA384, data).as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// QEMU's SEV hashes table (`target/i386/sev.c`, `SevHashTable`), padded to 16 bytes: SHA-256 of the
/// command line (with its NUL; just a NUL when empty), of the initrd (empty when none) and of the kernel.
pub fn sev_hashes_table(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Vec<u8> {
    const ENTRY_LEN: u16 = 16 + 2 + 32;
    const TABLE_LEN: u16 = 16 + 2 + 3 * ENTRY_LEN;
    let mut cmdline = append.unwrap_or("").as_bytes().to_vec();
    cmdline.push(0);
    let mut t = Vec::with_capacity(176);
    t.extend_from_slice(&SEV_HASH_TABLE_HEADER_GUID);
    t.extend_from_slice(&TABLE_LEN.to_le_bytes());
    for (guid, hash) in [
        (SEV_CMDLINE_ENTRY_GUID, sha256(&cmdline)),
        (SEV_INITRD_ENTRY_GUID, sha256(initrd.unwrap_or(&[]))),
        (SEV_KERNEL_ENTRY_GUID, sha256(kernel)),
    ] {
        t.extend_from_slice(&guid);
        t.extend_from_slice(&ENTRY_LEN.to_le_bytes());
        t.extend_from_slice(&hash);
    }
    t.resize(t.len().div_ceil(16) * 16, 0);
    t
}

/// The VMSA (SEV-ES save area, AMD APM vol. 2 table B-4) a VMM creates for a vCPU starting at `eip`.
pub fn vmsa_page(eip: u64, vcpu_sig: u32, vmm: VmmType, guest_features: u64) -> [u8; PAGE_SIZE] {
    // (cs attributes, ss attributes, tr attributes, rdx, mxcsr, x87 fcw, g_pat)
    const PAT: u64 = 0x0007_0406_0007_0406; // AMD APM vol. 2 §A.3: the PAT MSR's reset value
    let (cs, ss, tr, rdx, mxcsr, fcw, g_pat): (u16, u16, u16, u64, u32, u16, u64) = match vmm {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80, 0x37f, PAT),
        // EC2 marks the BSP's code segment not accessed, and starts every vCPU with RDX = 0x600 (family
        // 6 model 0: the architectural reset value) instead of the CPUID signature.
        VmmType::Ec2 => (
            if eip == BSP_EIP { 0x9a } else { 0x9b },
            0x92,
            0x83,
            0x600,
            0,
            0,
            PAT,
        ),
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    let mut p = [0u8; PAGE_SIZE];
    // VMCB segment: selector u16, attrib u16, limit u32, base u64.
    let mut seg = |at: usize, selector: u16, attrib: u16, limit: u32, base: u64| {
        p[at..at + 2].copy_from_slice(&selector.to_le_bytes());
        p[at + 2..at + 4].copy_from_slice(&attrib.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&limit.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&base.to_le_bytes());
    };
    seg(0x000, 0, 0x93, 0xffff, 0); // ES
    seg(0x010, 0xf000, cs, 0xffff, eip & 0xffff_0000); // CS
    seg(0x020, 0, ss, 0xffff, 0); // SS
    seg(0x030, 0, 0x93, 0xffff, 0); // DS
    seg(0x040, 0, 0x93, 0xffff, 0); // FS
    seg(0x050, 0, 0x93, 0xffff, 0); // GS
    seg(0x060, 0, 0, 0xffff, 0); // GDTR
    seg(0x070, 0, 0x82, 0xffff, 0); // LDTR
    seg(0x080, 0, 0, 0xffff, 0); // IDTR
    seg(0x090, 0, tr, 0xffff, 0); // TR
    let mut u64_at = |at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    u64_at(0x0d0, 0x1000); // EFER.SVME (KVM sets it)
    u64_at(0x148, 0x40); // CR4.MCE
    u64_at(0x158, 0x10); // CR0.ET
    u64_at(0x160, 0x400); // DR7
    u64_at(0x168, 0xffff_0ff0); // DR6
    u64_at(0x170, 0x2); // RFLAGS
    u64_at(0x178, eip & 0xffff); // RIP
    u64_at(0x268, g_pat); // G_PAT
    u64_at(0x310, rdx); // RDX
    u64_at(0x3b0, guest_features); // SEV_FEATURES
    u64_at(0x3e8, 0x1); // XCR0
    p[0x408..0x40c].copy_from_slice(&mxcsr.to_le_bytes()); // MXCSR
    p[0x410..0x412].copy_from_slice(&fcw.to_le_bytes()); // x87 FCW
    p
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

/// ID blocks: the author's signed statement of the expected launch digest, checked by the AMD-SP at
/// SNP_LAUNCH_FINISH (SNP ABI §8.18, ID_BLOCK and ID_AUTH_INFO).
pub mod id_block {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

    use super::{sha384, LD_LEN};

    /// Size of ID_BLOCK.
    pub const ID_BLOCK_LEN: usize = 0x60;
    /// Size of ID_AUTH_INFO.
    pub const ID_AUTH_LEN: usize = 0x1000;
    /// Size of an SNP ECDSA public key structure (curve u32, QX[72], QY[72], reserved).
    pub const PUBKEY_LEN: usize = 0x404;
    /// Size of an SNP ECDSA signature structure (R[72], S[72], reserved).
    pub const SIG_LEN: usize = 0x200;
    /// ID_BLOCK.VERSION this code writes.
    pub const ID_BLOCK_VERSION: u32 = 1;
    /// ALGO value of ECDSA P-384 with SHA-384.
    pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
    /// CURVE value of P-384.
    pub const CURVE_P384: u32 = 2;

    /// Offsets inside ID_AUTH_INFO.
    pub mod offsets {
        /// ID_KEY_ALGO.
        pub const ID_KEY_ALGO: usize = 0x00;
        /// AUTH_KEY_ALGO.
        pub const AUTH_KEY_ALGO: usize = 0x04;
        /// ID_BLOCK_SIG.
        pub const ID_BLOCK_SIG: usize = 0x40;
        /// ID_KEY.
        pub const ID_KEY: usize = 0x240;
        /// ID_KEY_SIG.
        pub const ID_KEY_SIG: usize = 0x680;
        /// AUTHOR_KEY.
        pub const AUTHOR_KEY: usize = 0x880;
    }

    /// Why an ID block cannot be made.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum IdBlockError {
        /// The key is not a P-384 private key in a form we read.
        #[error("{which} key: {detail}")]
        Key {
            /// "ID" or "author".
            which: &'static str,
            /// What is wrong.
            detail: String,
        },
        /// Signing failed (RNG failure).
        #[error("signing with the {0} key failed")]
        Signing(&'static str),
    }

    /// The ID block's fields other than the launch digest.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IdBlockFields {
        /// FAMILY_ID.
        pub family_id: [u8; 16],
        /// IMAGE_ID.
        pub image_id: [u8; 16],
        /// GUEST_SVN.
        pub guest_svn: u32,
        /// POLICY: must equal the guest policy the VMM launches with, or SNP_LAUNCH_FINISH fails.
        pub policy: u64,
    }

    impl Default for IdBlockFields {
        /// Zero IDs and SVN; policy 0x30000 (SMT allowed, reserved bit 17), as sev-snp-measure's
        /// snp-create-id-block and QEMU's default.
        fn default() -> Self {
            IdBlockFields {
                family_id: [0; 16],
                image_id: [0; 16],
                guest_svn: 0,
                policy: 0x30000,
            }
        }
    }

    /// ID_BLOCK: LD[48] FAMILY_ID[16] IMAGE_ID[16] VERSION u32 GUEST_SVN u32 POLICY u64.
    pub fn id_block(ld: &[u8; LD_LEN], f: &IdBlockFields) -> [u8; ID_BLOCK_LEN] {
        let mut b = [0u8; ID_BLOCK_LEN];
        b[..48].copy_from_slice(ld);
        b[0x30..0x40].copy_from_slice(&f.family_id);
        b[0x40..0x50].copy_from_slice(&f.image_id);
        b[0x50..0x54].copy_from_slice(&ID_BLOCK_VERSION.to_le_bytes());
        b[0x54..0x58].copy_from_slice(&f.guest_svn.to_le_bytes());
        b[0x58..0x60].copy_from_slice(&f.policy.to_le_bytes());
        b
    }

    /// A P-384 signing key.
    pub struct SigningKey {
        pair: EcdsaKeyPair,
    }

    impl std::fmt::Debug for SigningKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SigningKey").finish_non_exhaustive()
        }
    }

    impl SigningKey {
        /// Reads a P-384 private key: PEM "PRIVATE KEY" (PKCS#8) or "EC PRIVATE KEY" (SEC1, what
        /// `openssl ecparam -genkey` writes), or DER PKCS#8. The SEC1 form must include the public key
        /// (OpenSSL always writes it).
        pub fn from_pem_or_der(bytes: &[u8], which: &'static str) -> Result<Self, IdBlockError> {
            let err = |detail: String| IdBlockError::Key { which, detail };
            let pkcs8: Vec<u8> = if bytes.starts_with(b"-----")
                || bytes.iter().take(64).any(|b| *b == b'-')
            {
                let text =
                    std::str::from_utf8(bytes).map_err(|_| err("PEM is not UTF-8".into()))?;
                let (label, der) = pem_block(text).ok_or_else(|| err("no PEM block".into()))?;
                match label.as_str() {
                    "PRIVATE KEY" => der,
                    "EC PRIVATE KEY" => sec1_to_pkcs8(&der),
                    "ENCRYPTED PRIVATE KEY" => {
                        return Err(err(
                            "encrypted keys are not supported: decrypt it first".into()
                        ))
                    }
                    other => return Err(err(format!("PEM label {other:?} is not a private key"))),
                }
            } else {
                bytes.to_vec()
            };
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &pkcs8,
                &SystemRandom::new(),
            )
            .map_err(|e| err(format!("not an ECDSA P-384 private key ({e})")))?;
            Ok(SigningKey { pair })
        }

        /// The public key in the SNP ABI layout (curve 2, QX and QY little-endian in 72-byte fields).
        pub fn public_snp(&self) -> [u8; PUBKEY_LEN] {
            // ring: 0x04 || X (48 bytes, big-endian) || Y (48 bytes, big-endian).
            let point = self.pair.public_key().as_ref();
            let mut out = [0u8; PUBKEY_LEN];
            out[..4].copy_from_slice(&CURVE_P384.to_le_bytes());
            for (i, b) in point[1..49].iter().rev().enumerate() {
                out[4 + i] = *b;
            }
            for (i, b) in point[49..97].iter().rev().enumerate() {
                out[4 + 72 + i] = *b;
            }
            out
        }

        /// SHA-384 of [`SigningKey::public_snp`]: what reports carry as ID_KEY_DIGEST or AUTHOR_KEY_DIGEST.
        pub fn digest(&self) -> [u8; LD_LEN] {
            sha384(&self.public_snp())
        }

        /// An ECDSA P-384/SHA-384 signature of `msg` in the SNP ABI layout (R and S little-endian in
        /// 72-byte fields).
        pub fn sign_snp(
            &self,
            msg: &[u8],
            which: &'static str,
        ) -> Result<[u8; SIG_LEN], IdBlockError> {
            let sig = self
                .pair
                .sign(&SystemRandom::new(), msg)
                .map_err(|_| IdBlockError::Signing(which))?;
            let rs = sig.as_ref(); // r || s, 48 bytes each, big-endian
            let mut out = [0u8; SIG_LEN];
            for (i, b) in rs[..48].iter().rev().enumerate() {
                out[i] = *b;
            }
            for (i, b) in rs[48..96].iter().rev().enumerate() {
                out[72 + i] = *b;
            }
            Ok(out)
        }
    }

    /// ID_AUTH_INFO for `block`: signed by the ID key, whose public key the author key signs (when
    /// given; without an author key AUTHOR_KEY_EN must be off at launch and those fields stay zero).
    pub fn id_auth(
        block: &[u8; ID_BLOCK_LEN],
        id_key: &SigningKey,
        author_key: Option<&SigningKey>,
    ) -> Result<[u8; ID_AUTH_LEN], IdBlockError> {
        use offsets::*;
        let mut a = [0u8; ID_AUTH_LEN];
        a[ID_KEY_ALGO..ID_KEY_ALGO + 4].copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
        a[ID_BLOCK_SIG..ID_BLOCK_SIG + SIG_LEN].copy_from_slice(&id_key.sign_snp(block, "ID")?);
        let id_pub = id_key.public_snp();
        a[ID_KEY..ID_KEY + PUBKEY_LEN].copy_from_slice(&id_pub);
        if let Some(author) = author_key {
            a[AUTH_KEY_ALGO..AUTH_KEY_ALGO + 4]
                .copy_from_slice(&ALGO_ECDSA_P384_SHA384.to_le_bytes());
            a[ID_KEY_SIG..ID_KEY_SIG + SIG_LEN]
                .copy_from_slice(&author.sign_snp(&id_pub, "author")?);
            a[AUTHOR_KEY..AUTHOR_KEY + PUBKEY_LEN].copy_from_slice(&author.public_snp());
        }
        Ok(a)
    }

    /// The first PEM block of `text`: (label, DER).
    fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
        let begin = text.find("-----BEGIN ")?;
        let rest = &text[begin + 11..];
        let label_end = rest.find("-----")?;
        let label = rest[..label_end].to_owned();
        let body_start = label_end + 5;
        let end_marker = format!("-----END {label}-----");
        let body_end = rest.find(&end_marker)?;
        let body: String = rest[body_start..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        Some((label, der))
    }

    /// Wraps a SEC1 ECPrivateKey (RFC 5915) into PKCS#8 (RFC 5208) with the P-384 algorithm identifier.
    fn sec1_to_pkcs8(sec1: &[u8]) -> Vec<u8> {
        // AlgorithmIdentifier { id-ecPublicKey (1.2.840.10045.2.1), secp384r1 (1.3.132.0.34) }
        const ALG: &[u8] = &[
            0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
            0x81, 0x04, 0x00, 0x22,
        ];
        let mut body = vec![0x02, 0x01, 0x00]; // version 0
        body.extend_from_slice(ALG);
        body.push(0x04);
        der_len(&mut body, sec1.len());
        body.extend_from_slice(sec1);
        let mut out = vec![0x30];
        der_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }

    fn der_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend_from_slice(&[0x81, len as u8]);
        } else {
            out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_signatures_match_qemu_models() {
        assert_eq!(vcpu_sig_of("EPYC-v4"), Some(0x0080_0f12));
        assert_eq!(vcpu_sig_of("EPYC-Milan"), Some(0x00a0_0f11));
        assert_eq!(vcpu_sig_of("EPYC-Genoa"), Some(0x00a1_0f10));
        assert_eq!(vcpu_sig_of("EPYC-Turin"), Some(0x00b0_0f00));
        assert_eq!(vcpu_sig_of("EPYC-Bogus"), None);
    }

    #[test]
    fn guids_use_the_edk2_byte_order() {
        assert_eq!(
            OVMF_TABLE_FOOTER_GUID,
            [
                0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a,
                0x08, 0x2d
            ]
        );
    }

    #[test]
    fn hashes_table_layout() {
        let t = sev_hashes_table(b"kernel", None, None);
        assert_eq!(t.len(), 176);
        assert_eq!(&t[16..18], &168u16.to_le_bytes());
        assert_eq!(&t[34..36], &50u16.to_le_bytes());
        // An empty command line is hashed as a lone NUL.
        assert_eq!(&t[36..68], &sha256(b"\0"));
        assert_eq!(&t[136..168], &sha256(b"kernel"));
        assert_eq!(&t[168..], &[0; 8]);
    }

    #[test]
    fn rejects_what_is_not_sev_ovmf() {
        fn input(ovmf: &[u8]) -> LaunchInput<'_> {
            LaunchInput {
                vcpus: 1,
                vcpu_sig: 0,
                vmm: VmmType::Qemu,
                guest_features: 1,
                ovmf,
                kernel: None,
                initrd: None,
                append: None,
            }
        }
        assert_eq!(
            snp_launch_digest(&input(&[0; 4095])).unwrap_err(),
            MeasureError::OvmfSize { len: 4095 }
        );
        assert_eq!(
            snp_launch_digest(&input(&[0; 8192])).unwrap_err(),
            MeasureError::NoSevMetadata
        );
        assert_eq!(
            snp_launch_digest(&LaunchInput {
                vcpus: 0,
                ..input(&[0; 8192])
            })
            .unwrap_err(),
            MeasureError::NoVcpus
        );
    }

    #[test]
    fn vmsa_fields_by_vmm() {
        let q = vmsa_page(BSP_EIP, 0x00a1_0f10, VmmType::Qemu, 1);
        assert_eq!(&q[0x310..0x318], &0x00a1_0f10u64.to_le_bytes());
        assert_eq!(&q[0x408..0x40c], &0x1f80u32.to_le_bytes());
        assert_eq!(&q[0x012..0x014], &0x9bu16.to_le_bytes());
        let e = vmsa_page(BSP_EIP, 0x00a1_0f10, VmmType::Ec2, 1);
        assert_eq!(&e[0x310..0x318], &0x600u64.to_le_bytes());
        assert_eq!(&e[0x012..0x014], &0x9au16.to_le_bytes());
        assert_eq!(&e[0x408..0x40c], &[0; 4]);
        let ap = vmsa_page(0x80b004, 0, VmmType::Ec2, 1);
        assert_eq!(&ap[0x012..0x014], &0x9bu16.to_le_bytes());
        assert_eq!(&ap[0x178..0x180], &0xb004u64.to_le_bytes());
        assert_eq!(&ap[0x018..0x020], &0x80_0000u64.to_le_bytes());
    }
}

//! OVMF's GUIDed footer table and its SEV metadata sections (OvmfPkg/ResetVector): what the guest's firmware
//! declares about the pages the AMD-SP must measure. The image is the host's input: parsing is bounded and
//! fails with a precise error.

use super::{MeasureError, PAGE_SIZE};
use crate::Guid;

pub(super) const OVMF_TABLE_FOOTER_GUID: Guid = Guid::parse("96b582de-1fb2-45f7-baea-a366c55a082d");
const SEV_HASH_TABLE_RV_GUID: Guid = Guid::parse("7255371f-3a3b-4b04-927b-1da6efa8d454");
const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::parse("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
const OVMF_SEV_METADATA_GUID: Guid = Guid::parse("dc886566-984a-4798-a75e-5585a7bf67cc");

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
    table: Vec<(Guid, &'a [u8])>,
    sections: Vec<MetadataSection>,
}

pub(super) fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
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
        if data[footer_start + 2..footer_start + ENTRY_HEADER]
            == OVMF_TABLE_FOOTER_GUID.mixed_endian_bytes()
        {
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
                table.push((
                    Guid::from_mixed_endian_bytes(guid),
                    &rest[rest.len() - size..h],
                ));
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
        let Some(entry) = self.entry(OVMF_SEV_METADATA_GUID) else {
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

    fn entry(&self, guid: Guid) -> Option<&'a [u8]> {
        self.table.iter().find(|(g, _)| *g == guid).map(|(_, d)| *d)
    }

    fn entry_u32(&self, guid: Guid, what: &'static str) -> Result<u32, MeasureError> {
        self.entry(guid)
            .and_then(|e| le_u32(e, 0))
            .ok_or(MeasureError::MissingTableEntry { what, guid })
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
        self.entry_u32(SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")
    }

    /// The GPA of the kernel hashes table (0 in builds without one).
    pub fn sev_hashes_table_gpa(&self) -> Result<u32, MeasureError> {
        self.entry_u32(SEV_HASH_TABLE_RV_GUID, "SEV hash table")
    }
}

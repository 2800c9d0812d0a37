//! The guest context's launch digest (SNP ABI §8.17 SNP_LAUNCH_UPDATE, PAGE_INFO), updated page by page.

use super::{sha384, LD_LEN, PAGE_SIZE, VMSA_GPA};

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
pub(super) mod page_type {
    pub(crate) const NORMAL: u8 = 1;
    pub(crate) const VMSA: u8 = 2;
    pub(crate) const ZERO: u8 = 3;
    pub(crate) const UNMEASURED: u8 = 4;
    pub(crate) const SECRETS: u8 = 5;
    pub(crate) const CPUID: u8 = 6;
}

impl Gctx {
    /// The current launch digest.
    pub fn ld(&self) -> [u8; LD_LEN] {
        self.ld
    }

    pub(super) fn update(&mut self, page_type: u8, gpa: u64, contents: &[u8; LD_LEN]) {
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

    pub(super) fn each_page(&mut self, page_type: u8, gpa: u64, size: u64) {
        let mut off = 0;
        while off < size {
            self.update(page_type, gpa + off, &[0; LD_LEN]);
            off += PAGE_SIZE as u64;
        }
    }
}

//! QEMU's SEV hashes table: what `kernel-hashes=on` puts in the page OVMF checks the kernel, initrd and
//! command line against, and so what the launch digest covers of them.

use super::sha256;
use crate::Guid;

const SEV_HASH_TABLE_HEADER_GUID: Guid = Guid::parse("9438d606-4f22-4cc9-b479-a793d411fd21");
const SEV_KERNEL_ENTRY_GUID: Guid = Guid::parse("4de79437-abd2-427f-b835-d5b172d2045b");
const SEV_INITRD_ENTRY_GUID: Guid = Guid::parse("44baf731-3a2f-4bd7-9af1-41e29169781d");
const SEV_CMDLINE_ENTRY_GUID: Guid = Guid::parse("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// QEMU's SEV hashes table (`target/i386/sev.c`, `SevHashTable`), padded to 16 bytes: SHA-256 of the
/// command line (with its NUL; just a NUL when empty), of the initrd (empty when none) and of the kernel.
pub fn sev_hashes_table(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Vec<u8> {
    const ENTRY_LEN: u16 = 16 + 2 + 32;
    const TABLE_LEN: u16 = 16 + 2 + 3 * ENTRY_LEN;
    let mut cmdline = append.unwrap_or("").as_bytes().to_vec();
    cmdline.push(0);
    let mut t = Vec::with_capacity(176);
    t.extend_from_slice(&SEV_HASH_TABLE_HEADER_GUID.mixed_endian_bytes());
    t.extend_from_slice(&TABLE_LEN.to_le_bytes());
    for (guid, hash) in [
        (SEV_CMDLINE_ENTRY_GUID, sha256(&cmdline)),
        (SEV_INITRD_ENTRY_GUID, sha256(initrd.unwrap_or(&[]))),
        (SEV_KERNEL_ENTRY_GUID, sha256(kernel)),
    ] {
        t.extend_from_slice(&guid.mixed_endian_bytes());
        t.extend_from_slice(&ENTRY_LEN.to_le_bytes());
        t.extend_from_slice(&hash);
    }
    t.resize(t.len().div_ceil(16) * 16, 0);
    t
}

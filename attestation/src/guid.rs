//! GUIDs, in both byte orders the SEV-SNP world stores them.
//!
//! The same written form `c0b406a4-a803-4952-9743-3fb6014cd0ae` appears as bytes in two orders:
//! - **as written** (RFC 4122 network order, what `uuid_parse` produces): the GHCB certificate table of an
//!   extended report stores its GUIDs this way (`c0 b4 06 a4 a8 03 …`);
//! - **mixed-endian** (the UEFI `EFI_GUID` layout, Python's `uuid.bytes_le`): the first three fields
//!   little-endian; OVMF's GUIDed tables and QEMU's SEV hashes table store them this way
//!   (`a4 06 b4 c0 03 a8 …`).
//!
//! One type, [`Guid`], holds the value; the byte order is chosen where bytes are read or written, so a GUID
//! constant is written once, in its usual form, whatever structure stores it.

use core::fmt;

/// A GUID (the value, independent of how a structure stores its bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

impl Guid {
    /// The all-zero GUID.
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the written form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, at compile time. A malformed literal
    /// does not compile (a `const` evaluation panic).
    pub const fn parse(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "a GUID is 36 characters");
        let mut out = [0u8; 16];
        let mut i = 0; // index in s
        let mut o = 0; // index in out
        while o < 16 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            out[o] = (hex_val(b[i]) << 4) | hex_val(b[i + 1]);
            i += 2;
            o += 1;
        }
        Guid(out)
    }

    /// From bytes stored as written (RFC 4122 order).
    pub const fn from_written_bytes(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// From bytes stored mixed-endian (UEFI `EFI_GUID`).
    pub const fn from_mixed_endian_bytes(b: [u8; 16]) -> Guid {
        Guid(swap_fields(b))
    }

    /// The bytes as written (RFC 4122 order): the GHCB certificate table's order.
    pub const fn written_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The bytes mixed-endian (UEFI `EFI_GUID`): OVMF's and QEMU's order.
    pub const fn mixed_endian_bytes(self) -> [u8; 16] {
        swap_fields(self.0)
    }
}

/// Reverses the byte order of the first three fields (4, 2 and 2 bytes); its own inverse.
const fn swap_fields(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        // Only reachable at compile time, with a malformed literal.
        _ => panic!("not a hex digit"),
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let hex = |r: core::ops::Range<usize>| {
            b[r].iter().map(|x| format!("{x:02x}")).collect::<String>()
        };
        write!(
            f,
            "{}-{}-{}-{}-{}",
            hex(0..4),
            hex(4..6),
            hex(6..8),
            hex(8..10),
            hex(10..16)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_byte_orders_of_one_guid() {
        const ARK: Guid = Guid::parse("c0b406a4-a803-4952-9743-3fb6014cd0ae");
        assert_eq!(
            ARK.written_bytes(),
            [
                0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
                0xd0, 0xae
            ]
        );
        assert_eq!(
            ARK.mixed_endian_bytes(),
            [
                0xa4, 0x06, 0xb4, 0xc0, 0x03, 0xa8, 0x52, 0x49, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
                0xd0, 0xae
            ]
        );
        assert_eq!(Guid::from_mixed_endian_bytes(ARK.mixed_endian_bytes()), ARK);
        assert_eq!(Guid::from_written_bytes(ARK.written_bytes()), ARK);
        assert_eq!(ARK.to_string(), "c0b406a4-a803-4952-9743-3fb6014cd0ae");
    }
}

//! The certificate table of an SNP extended report (SEV-SNP GHCB specification, "SNP Extended Guest
//! Request", MSG_REPORT_REQ certificate data).
//!
//! ```text
//! table   = entry* zero_entry data
//! entry   = guid[16] offset:u32le length:u32le     // offset from the start of the table
//! zero    = 24 zero bytes                          // terminator
//! ```
//!
//! GUIDs are stored in the byte order in which they are written (`c0b406a4-a803-…` is `c0 b4 06 a4 a8 03 …`),
//! the form `uuid_parse` produces; that is what AMD's, virtee's and Google's tools read and write.
//!
//! The table comes from the **host** (the hypervisor fills it in; the kernel copies it into `auxblob`), so
//! it is untrusted input: the parser is strict. Every entry must point inside the blob and after the table,
//! no two entries may overlap or share a GUID, lengths must be non-zero, and the terminator must be there.
//! Bytes after the last certificate (page padding) are ignored. Nothing here is trusted for *security*
//! anyway: the verifier checks the chain against AMD's roots; strictness only turns a confused or hostile
//! host into a clear error instead of a confusing one.
//!
//! The GHCB specification defines no GUID for the ASVK: a VLEK chain's ASVK travels under the ASK GUID
//! (go-sev-guest documents the same convention). Which one it is, the certificate itself says (its
//! common name), and the verifier checks that.

use std::fmt;

pub use cloister_attestation::Guid;

/// The terminator's GUID.
pub const ZERO: Guid = Guid::ZERO;
/// AMD Root Key.
pub const ARK: Guid = Guid::parse("c0b406a4-a803-4952-9743-3fb6014cd0ae");
/// AMD SEV Key (also carries the ASVK of a VLEK chain: the specification has no ASVK GUID).
pub const ASK: Guid = Guid::parse("4ab7b379-bbac-4fe4-a02f-05aef327c782");
/// Versioned Chip Endorsement Key.
pub const VCEK: Guid = Guid::parse("63da758d-e664-4564-adc5-f4b93be8accd");
/// Versioned Loaded Endorsement Key.
pub const VLEK: Guid = Guid::parse("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
/// Certificate revocation list(s) (virtee/sev's `CertType::CRL`; not in the GHCB specification).
pub const CRL: Guid = Guid::parse("92f81bc3-5811-4d3d-97ff-d19f88dc67ea");

/// A short name for the GUIDs of the table we know.
pub fn guid_name(guid: Guid) -> Option<&'static str> {
    Some(match guid {
        ARK => "ARK",
        ASK => "ASK/ASVK",
        VCEK => "VCEK",
        VLEK => "VLEK",
        CRL => "CRL",
        _ => return None,
    })
}

/// A GUID for messages: the GUID and, when known, its name.
pub fn describe(guid: Guid) -> String {
    match guid_name(guid) {
        Some(n) => format!("{guid} ({n})"),
        None => guid.to_string(),
    }
}

/// Size of one table entry.
pub const ENTRY_LEN: usize = 24;
/// Most entries we accept (the kernel's buffer is 16 KiB, i.e. at most ~680 entries; real tables have 3–5).
pub const MAX_ENTRIES: usize = 64;
/// Largest table we accept (the kernel's SEV_FW_BLOB_MAX_SIZE is 16 KiB; `auxblob` is at most 32 KiB).
pub const MAX_TABLE_LEN: usize = 64 * 1024;

/// Why a certificate table is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertTableError {
    /// Larger than [`MAX_TABLE_LEN`].
    #[error("certificate table: {len} bytes, more than the {MAX_TABLE_LEN} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The blob ends before the all-zero terminator entry.
    #[error("certificate table: no terminating all-zero entry within {len} bytes")]
    NoTerminator {
        /// The blob's length.
        len: usize,
    },
    /// More than [`MAX_ENTRIES`] entries.
    #[error("certificate table: more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// An entry has the zero GUID but a non-zero offset or length (a malformed terminator).
    #[error("certificate table: entry {index} has the zero GUID but offset {offset} and length {length}")]
    BadTerminator {
        /// Entry index.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
    },
    /// An entry has length zero.
    #[error("certificate table: entry {index} ({}) is empty", describe(*guid))]
    EmptyEntry {
        /// Entry index.
        index: usize,
        /// Its GUID.
        guid: Guid,
    },
    /// An entry points before the end of the table or beyond the end of the blob.
    #[error("certificate table: entry {index} ({}) at {offset}+{length} is outside the data area {data_start}..{len}", describe(*guid))]
    OutOfBounds {
        /// Entry index.
        index: usize,
        /// Its GUID.
        guid: Guid,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// Where the data area starts (the end of the terminator).
        data_start: usize,
        /// The blob's length.
        len: usize,
    },
    /// Two entries share a GUID.
    #[error("certificate table: {} appears twice (entries {first} and {second})", describe(*guid))]
    DuplicateGuid {
        /// The GUID.
        guid: Guid,
        /// First entry index.
        first: usize,
        /// Second entry index.
        second: usize,
    },
    /// Two entries' data overlap.
    #[error("certificate table: entries {first} ({}) and {second} ({}) overlap", describe(*first_guid), describe(*second_guid))]
    Overlap {
        /// One entry index.
        first: usize,
        /// Its GUID.
        first_guid: Guid,
        /// The other entry index.
        second: usize,
        /// Its GUID.
        second_guid: Guid,
    },
}

/// One parsed entry.
#[derive(Clone, PartialEq, Eq)]
pub struct CertEntry {
    /// Its GUID.
    pub guid: Guid,
    /// Its bytes (a DER certificate for the known certificate GUIDs).
    pub data: Vec<u8>,
}

impl fmt::Debug for CertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertEntry")
            .field("guid", &self.guid)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A parsed certificate table, entries in table order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertTable {
    /// The entries, in table order.
    pub entries: Vec<CertEntry>,
}

impl CertTable {
    /// Parses a table (strictly: see the module documentation). An empty blob is an empty table (no
    /// certificates from the host).
    pub fn parse(blob: &[u8]) -> Result<CertTable, CertTableError> {
        let len = blob.len();
        if len == 0 {
            return Ok(CertTable::default());
        }
        if len > MAX_TABLE_LEN {
            return Err(CertTableError::TooLarge { len });
        }
        // Pass 1: the headers, up to and including the terminator.
        let mut headers: Vec<(Guid, u32, u32)> = Vec::new();
        let mut pos = 0;
        loop {
            let Some(raw) = blob.get(pos..pos + ENTRY_LEN) else {
                return Err(CertTableError::NoTerminator { len });
            };
            let mut g = [0u8; 16];
            g.copy_from_slice(&raw[..16]);
            let guid = Guid::from_written_bytes(g);
            let offset = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]);
            let length = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]);
            pos += ENTRY_LEN;
            if guid == ZERO {
                if offset != 0 || length != 0 {
                    return Err(CertTableError::BadTerminator {
                        index: headers.len(),
                        offset,
                        length,
                    });
                }
                break;
            }
            if headers.len() == MAX_ENTRIES {
                return Err(CertTableError::TooManyEntries);
            }
            headers.push((guid, offset, length));
        }
        let data_start = pos;

        // Pass 2: bounds, emptiness, duplicates.
        let mut ranges: Vec<(usize, usize, usize)> = Vec::with_capacity(headers.len()); // (start, end, index)
        for (index, &(guid, offset, length)) in headers.iter().enumerate() {
            if length == 0 {
                return Err(CertTableError::EmptyEntry { index, guid });
            }
            let start = offset as usize;
            let end = start.checked_add(length as usize);
            match end {
                Some(end) if start >= data_start && end <= len => ranges.push((start, end, index)),
                _ => {
                    return Err(CertTableError::OutOfBounds {
                        index,
                        guid,
                        offset,
                        length,
                        data_start,
                        len,
                    })
                }
            }
            if let Some(first) = headers[..index].iter().position(|h| h.0 == guid) {
                return Err(CertTableError::DuplicateGuid {
                    guid,
                    first,
                    second: index,
                });
            }
        }

        // Pass 3: no overlaps (sorted by start, each must end before the next begins).
        let mut sorted = ranges.clone();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.0 < a.1 {
                let (first, second) = (a.2.min(b.2), a.2.max(b.2));
                return Err(CertTableError::Overlap {
                    first,
                    first_guid: headers[first].0,
                    second,
                    second_guid: headers[second].0,
                });
            }
        }

        Ok(CertTable {
            entries: ranges
                .iter()
                .map(|&(start, end, index)| CertEntry {
                    guid: headers[index].0,
                    data: blob[start..end].to_vec(),
                })
                .collect(),
        })
    }

    /// The data of the entry with `guid`, if any.
    pub fn get(&self, guid: Guid) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|e| e.guid == guid)
            .map(|e| e.data.as_slice())
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Encodes a table the way hosts lay it out: the headers, the terminator, then each entry's data in order.
/// For tests and fakes (the enclave never builds tables). Panics on more than `u32::MAX` bytes.
pub fn encode(entries: &[(Guid, &[u8])]) -> Vec<u8> {
    let header_len = (entries.len() + 1) * ENTRY_LEN;
    let mut out = Vec::with_capacity(header_len + entries.iter().map(|e| e.1.len()).sum::<usize>());
    let mut offset = header_len;
    for (guid, data) in entries {
        out.extend_from_slice(&guid.written_bytes());
        out.extend_from_slice(&u32_of(offset).to_le_bytes());
        out.extend_from_slice(&u32_of(data.len()).to_le_bytes());
        offset += data.len();
    }
    out.extend_from_slice(&[0u8; ENTRY_LEN]);
    for (_, data) in entries {
        out.extend_from_slice(data);
    }
    out
}

fn u32_of(n: usize) -> u32 {
    #[allow(clippy::expect_used)]
    u32::try_from(n).expect("certificate table larger than 4 GiB")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn guids_are_in_written_byte_order() {
        // virtee/sev's own table test vector starts with the ARK GUID as these bytes.
        assert_eq!(
            ARK.written_bytes(),
            [192, 180, 6, 164, 168, 3, 73, 82, 151, 67, 63, 182, 1, 76, 208, 174]
        );
        assert_eq!(VLEK.to_string(), "a8074bc2-a25a-483e-aae6-39c045a0b8a1");
        assert_eq!(
            describe(ASK),
            "4ab7b379-bbac-4fe4-a02f-05aef327c782 (ASK/ASVK)"
        );
    }

    #[test]
    fn parses_virtee_sev_test_vector() {
        // The table of virtee/sev's `test_parse_table_regular` (four entries, short dummy data).
        let mut bytes: Vec<u8> = vec![
            192, 180, 6, 164, 168, 3, 73, 82, 151, 67, 63, 182, 1, 76, 208, 174, 120, 0, 0, 0, 25,
            0, 0, 0, 74, 183, 179, 121, 187, 172, 79, 228, 160, 47, 5, 174, 243, 39, 199, 130, 145,
            0, 0, 0, 25, 0, 0, 0, 99, 218, 117, 141, 230, 100, 69, 100, 173, 197, 244, 185, 59,
            232, 172, 205, 170, 0, 0, 0, 15, 0, 0, 0, 251, 182, 237, 116, 231, 62, 68, 171, 136,
            147, 66, 82, 121, 45, 115, 122, 185, 0, 0, 0, 6, 0, 0, 0,
        ];
        bytes.extend_from_slice(&[0; 24]);
        bytes.extend_from_slice(&[1; 25]);
        bytes.extend_from_slice(&[2; 25]);
        bytes.extend_from_slice(&[5; 15]);
        bytes.extend_from_slice(&[7; 6]);
        let t = CertTable::parse(&bytes).unwrap();
        assert_eq!(t.entries.len(), 4);
        assert_eq!(t.get(ARK).unwrap(), &[1; 25]);
        assert_eq!(t.get(ASK).unwrap(), &[2; 25]);
        assert_eq!(t.get(VCEK).unwrap(), &[5; 15]);
        assert_eq!(t.entries[3].data, vec![7; 6]);
        assert_eq!(t.get(VLEK), None);
    }

    #[test]
    fn round_trips_and_ignores_padding() {
        let enc = encode(&[(VLEK, b"vlek"), (ASK, b"asvk!"), (ARK, b"ark")]);
        let t = CertTable::parse(&enc).unwrap();
        assert_eq!(t.get(VLEK).unwrap(), b"vlek");
        assert_eq!(t.get(ASK).unwrap(), b"asvk!");
        assert_eq!(t.get(ARK).unwrap(), b"ark");
        // Page padding after the data (what /dev/sev-guest returns) is fine.
        let mut padded = enc;
        padded.resize(4096, 0);
        assert_eq!(CertTable::parse(&padded).unwrap(), t);
        // Empty blob: no certificates; a lone terminator: none either.
        assert!(CertTable::parse(&[]).unwrap().is_empty());
        assert!(CertTable::parse(&[0; 24]).unwrap().is_empty());
    }

    fn header(guid: Guid, offset: u32, length: u32) -> Vec<u8> {
        let mut v = guid.written_bytes().to_vec();
        v.extend_from_slice(&offset.to_le_bytes());
        v.extend_from_slice(&length.to_le_bytes());
        v
    }

    fn table(headers: &[(Guid, u32, u32)], data_len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = headers
            .iter()
            .flat_map(|&(g, o, l)| header(g, o, l))
            .collect();
        v.extend_from_slice(&[0; ENTRY_LEN]);
        v.extend(std::iter::repeat_n(0xaa, data_len));
        v
    }

    #[test]
    fn rejects_precisely() {
        let d = 2 * ENTRY_LEN as u32; // data start with one entry
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0; 23], "no terminating"),
            (header(VCEK, 48, 1), "no terminating"),
            (table(&[(VCEK, d, 11)], 10), "outside the data area"),
            (table(&[(VCEK, 0, 10)], 10), "outside the data area"),
            (table(&[(VCEK, d - 1, 10)], 10), "outside the data area"),
            (table(&[(VCEK, u32::MAX, 2)], 10), "outside the data area"),
            (table(&[(VCEK, d, 0)], 10), "is empty"),
            (table(&[(VCEK, 72, 5), (VCEK, 77, 5)], 10), "appears twice"),
            (table(&[(VCEK, 72, 5), (ASK, 76, 5)], 10), "overlap"),
            (table(&[(ARK, 72, 10), (ASK, 74, 2)], 10), "overlap"),
            (
                {
                    let mut t = table(&[(VCEK, d, 5)], 10);
                    t[ENTRY_LEN + 16] = 1; // terminator with an offset
                    t
                },
                "zero GUID but offset",
            ),
            (vec![0; MAX_TABLE_LEN + 1], "more than"),
            (
                table(
                    &(0..=MAX_ENTRIES as u8)
                        .map(|i| (Guid::from_written_bytes([i + 1; 16]), 0, 1))
                        .collect::<Vec<_>>(),
                    0,
                ),
                "more than 64 entries",
            ),
        ];
        for (blob, want) in cases {
            let err = CertTable::parse(&blob).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }

    proptest! {
        /// Never panics, and whatever it accepts is within bounds, disjoint and unique.
        #[test]
        fn parse_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(t) = CertTable::parse(&blob) {
                let total: usize = t.entries.iter().map(|e| e.data.len()).sum();
                prop_assert!(total <= blob.len());
                let mut guids: Vec<_> = t.entries.iter().map(|e| e.guid).collect();
                guids.sort();
                guids.dedup();
                prop_assert_eq!(guids.len(), t.entries.len());
            }
        }

        /// Any set of distinct GUIDs with non-empty data round-trips through `encode`, with any padding.
        #[test]
        fn encode_parse_round_trip(
            entries in proptest::collection::btree_map(
                any::<[u8; 16]>().prop_filter("not the terminator", |g| *g != [0; 16]),
                proptest::collection::vec(any::<u8>(), 1..100),
                0..6,
            ),
            padding in 0usize..64,
        ) {
            let list: Vec<(Guid, &[u8])> = entries.iter().map(|(g, d)| (Guid::from_written_bytes(*g), d.as_slice())).collect();
            let mut blob = encode(&list);
            blob.extend(std::iter::repeat_n(0, padding));
            let t = CertTable::parse(&blob).unwrap();
            prop_assert_eq!(t.entries.len(), list.len());
            for (g, d) in &list {
                prop_assert_eq!(t.get(*g).unwrap(), *d);
            }
        }

        /// Corrupting one header byte of a valid table never panics and never yields overlapping data.
        #[test]
        fn corrupted_headers_are_handled(pos in 0usize..96, byte in any::<u8>()) {
            let mut blob = encode(&[(ARK, &[1; 40]), (ASK, &[2; 40]), (VCEK, &[3; 40])]);
            blob[pos] = byte;
            let _ = CertTable::parse(&blob);
        }
    }
}

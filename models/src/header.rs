//! The sealed-model header: a strict, canonical byte encoding (docs/sealed-format.md §2).
//!
//! The header comes from the untrusted host. Parsing checks every field; the whole encoded header
//! is then hashed and that hash is the associated data of every chunk, so a header that parses but
//! was modified fails authentication of chunk 0.

use std::io::{self, Read};

use ring::digest::{digest, SHA384};

use crate::digest::{ModelDigest, DIGEST_LEN};
use crate::error::{Error, Part};
use crate::key::{KeyId, KEY_ID_LEN};

/// The first bytes of every sealed model.
pub const MAGIC: &[u8; 9] = b"CLSTRSEAL";

/// The format version this library reads and writes.
pub const FORMAT_VERSION: u16 = 1;

/// Length of the fixed part of the header (everything before the name).
pub const FIXED_HEADER_LEN: usize = 96;

/// Longest model name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;

/// Longest possible encoded header.
pub const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + MAX_NAME_LEN;

/// Smallest allowed chunk size (4 KiB).
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;

/// Largest allowed chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// Default chunk size (1 MiB): per-chunk overhead (16-byte tag, one nonce) is negligible and the
/// sealer's working buffer stays small.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;

/// Largest plaintext the format accepts (256 TiB); keeps every length computation far from
/// overflow.
pub const MAX_PLAINTEXT_LEN: u64 = 1 << 48;

/// Length of an AES-256-GCM tag.
pub const TAG_LEN: usize = 16;

/// Length of the random nonce prefix.
pub const NONCE_PREFIX_LEN: usize = 7;

/// Length of the header hash (SHA-384), the associated data of every chunk.
pub const HEADER_HASH_LEN: usize = DIGEST_LEN;

// Byte offsets of the fixed header fields (all integers big-endian).
const OFF_VERSION: usize = 9;
const OFF_CIPHER: usize = 11;
const OFF_CHUNK_SIZE: usize = 12;
const OFF_PLAINTEXT_LEN: usize = 16;
const OFF_DIGEST: usize = 24;
const OFF_KEY_ID: usize = 72;
const OFF_NONCE_PREFIX: usize = 88;
const OFF_NAME_LEN: usize = 95;
const _: () = assert!(OFF_VERSION == MAGIC.len());
const _: () = assert!(OFF_DIGEST + DIGEST_LEN == OFF_KEY_ID);
const _: () = assert!(OFF_KEY_ID + KEY_ID_LEN == OFF_NONCE_PREFIX);
const _: () = assert!(OFF_NONCE_PREFIX + NONCE_PREFIX_LEN == OFF_NAME_LEN);
const _: () = assert!(OFF_NAME_LEN + 1 == FIXED_HEADER_LEN);

/// The AEAD that seals the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cipher {
    /// AES-256-GCM with 96-bit nonces and 128-bit tags (wire id 1).
    Aes256Gcm,
}

impl Cipher {
    /// The wire id of the cipher.
    pub const fn id(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
        }
    }

    fn from_id(id: u8) -> Result<Self, Error> {
        match id {
            1 => Ok(Cipher::Aes256Gcm),
            found => Err(Error::UnsupportedCipher { found }),
        }
    }
}

/// A parsed, validated sealed-model header.
///
/// Every value of this type satisfies the format's rules (name length and characters, chunk-size
/// bounds, chunk count); it is built only by [`crate::seal`] or by parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    format_version: u16,
    cipher: Cipher,
    chunk_size: u32,
    plaintext_len: u64,
    digest: ModelDigest,
    key_id: KeyId,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    name: String,
}

impl SealedHeader {
    #[cfg_attr(not(feature = "sealing"), allow(dead_code))]
    pub(crate) fn new(
        name: &str,
        digest: ModelDigest,
        plaintext_len: u64,
        chunk_size: u32,
        key_id: KeyId,
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
    ) -> Result<Self, Error> {
        validate_name(name.as_bytes())?;
        validate_sizes(chunk_size, plaintext_len)?;
        Ok(Self {
            format_version: FORMAT_VERSION,
            cipher: Cipher::Aes256Gcm,
            chunk_size,
            plaintext_len,
            digest,
            key_id,
            nonce_prefix,
            name: name.to_owned(),
        })
    }

    /// Parses a header at the start of `bytes`; returns it and its encoded length. Bytes after the
    /// header are not looked at.
    pub fn decode(bytes: &[u8]) -> Result<(Self, usize), Error> {
        let truncated = Error::Truncated { at: Part::Header };
        let magic_avail = bytes.len().min(MAGIC.len());
        if bytes[..magic_avail] != MAGIC[..magic_avail] {
            return Err(Error::BadMagic);
        }
        let version = u16::from_be_bytes(array_at(bytes, OFF_VERSION).ok_or(truncated)?);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(Error::Truncated { at: Part::Header });
        }
        // From here on the fixed part is present: the `field` calls below cannot fail.
        let cipher = Cipher::from_id(bytes[OFF_CIPHER])?;
        let chunk_size = u32::from_be_bytes(field(bytes, OFF_CHUNK_SIZE)?);
        let plaintext_len = u64::from_be_bytes(field(bytes, OFF_PLAINTEXT_LEN)?);
        validate_sizes(chunk_size, plaintext_len)?;
        let digest = ModelDigest::from_bytes(field(bytes, OFF_DIGEST)?);
        let key_id = KeyId::from_bytes(field(bytes, OFF_KEY_ID)?);
        let nonce_prefix = field(bytes, OFF_NONCE_PREFIX)?;
        let name_len = usize::from(bytes[OFF_NAME_LEN]);
        if name_len == 0 {
            return Err(Error::NameEmpty);
        }
        let total = FIXED_HEADER_LEN + name_len;
        let name_bytes = bytes
            .get(FIXED_HEADER_LEN..total)
            .ok_or(Error::Truncated { at: Part::Header })?;
        let name = validate_name(name_bytes)?.to_owned();
        let header = Self {
            format_version: version,
            cipher,
            chunk_size,
            plaintext_len,
            digest,
            key_id,
            nonce_prefix,
            name,
        };
        Ok((header, total))
    }

    /// The canonical encoding (docs/sealed-format.md §2). `decode(encode(h)) == (h, len)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.push(self.cipher.id());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out.extend_from_slice(self.digest.as_bytes());
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        // The name was validated to be 1..=255 bytes long.
        out.push(u8::try_from(self.name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.name.as_bytes());
        out
    }

    /// Length of the encoded header in bytes.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + self.name.len()
    }

    /// SHA-384 of the encoded header: the associated data of every chunk.
    pub fn header_hash(&self) -> [u8; HEADER_HASH_LEN] {
        hash_header_bytes(&self.encode())
    }

    /// The format version.
    pub fn format_version(&self) -> u16 {
        self.format_version
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Length of the plaintext ONNX in bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// SHA-384 of the plaintext ONNX, as claimed by the header.
    pub fn digest(&self) -> &ModelDigest {
        &self.digest
    }

    /// The id of the key the model was sealed with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The random nonce prefix.
    pub fn nonce_prefix(&self) -> &[u8; NONCE_PREFIX_LEN] {
        &self.nonce_prefix
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of chunks: `max(1, ceil(plaintext_len / chunk_size))`.
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.chunk_size, self.plaintext_len)
    }

    /// Total length of the sealed model: header, every chunk's ciphertext and tag.
    pub fn sealed_len(&self) -> u64 {
        // Bounded by validate_sizes: plaintext_len <= 2^48 and chunk_count <= 2^32.
        self.encoded_len() as u64 + self.plaintext_len + self.chunk_count() * TAG_LEN as u64
    }

    /// Plaintext length of chunk `index` (which must be < `chunk_count()`).
    #[cfg_attr(not(feature = "sealing"), allow(dead_code))]
    pub(crate) fn chunk_plaintext_len(&self, index: u64) -> usize {
        let start = index * u64::from(self.chunk_size);
        let len = self
            .plaintext_len
            .saturating_sub(start)
            .min(u64::from(self.chunk_size));
        // len <= chunk_size <= 16 MiB.
        len as usize
    }

    /// The STREAM nonce of chunk `index`: nonce_prefix (7) || index (u32 BE) || last flag (1).
    #[cfg_attr(not(feature = "sealing"), allow(dead_code))]
    pub(crate) fn nonce(&self, index: u32, last: bool) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        nonce
    }
}

pub(crate) fn hash_header_bytes(bytes: &[u8]) -> [u8; HEADER_HASH_LEN] {
    let mut out = [0u8; HEADER_HASH_LEN];
    out.copy_from_slice(digest(&SHA384, bytes).as_ref());
    out
}

/// Reads and parses the header at the start of `reader` (no key needed), e.g. for
/// `cloister seal --inspect`. Returns the header and its encoded length; the reader is left
/// positioned just after the header.
///
/// `reader` comes from the untrusted host: this reads at most [`MAX_HEADER_LEN`] bytes.
pub fn read_header<R: Read>(reader: R) -> Result<(SealedHeader, usize), Error> {
    let (header, raw, len) = read_header_raw(reader)?;
    debug_assert_eq!(header.encode(), raw[..len]);
    Ok((header, len))
}

/// Reads the header; also returns the raw bytes (hashed for the AAD exactly as read).
pub(crate) fn read_header_raw<R: Read>(
    mut reader: R,
) -> Result<(SealedHeader, [u8; MAX_HEADER_LEN], usize), Error> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let got = read_full(&mut reader, &mut buf[..FIXED_HEADER_LEN])?;
    if got < FIXED_HEADER_LEN {
        // Let the decoder say what is wrong (bad magic, version, or truncation).
        return Err(decode_error(&buf[..got]));
    }
    let name_len = usize::from(buf[OFF_NAME_LEN]);
    let total = FIXED_HEADER_LEN + name_len;
    let got = read_full(&mut reader, &mut buf[FIXED_HEADER_LEN..total])?;
    let (header, len) = SealedHeader::decode(&buf[..FIXED_HEADER_LEN + got])?;
    Ok((header, buf, len))
}

/// The whole header's length, from its fixed part (at least [`FIXED_HEADER_LEN`] bytes): the fixed part
/// and the name it announces. Only the opener (feature `sealing`) reads headers piecewise.
#[cfg(feature = "sealing")]
pub(crate) fn header_len_from_fixed(fixed: &[u8]) -> usize {
    FIXED_HEADER_LEN + fixed.get(OFF_NAME_LEN).map_or(0, |n| usize::from(*n))
}

/// The error for a header that stopped after `partial`: what the decoder says is wrong (bad magic,
/// version), or truncation.
pub(crate) fn decode_error(partial: &[u8]) -> Error {
    match SealedHeader::decode(partial) {
        Err(e) => e,
        Ok(_) => Error::Truncated { at: Part::Header },
    }
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn array_at<const N: usize>(bytes: &[u8], off: usize) -> Option<[u8; N]> {
    bytes.get(off..off + N)?.try_into().ok()
}

fn field<const N: usize>(bytes: &[u8], off: usize) -> Result<[u8; N], Error> {
    array_at(bytes, off).ok_or(Error::Truncated { at: Part::Header })
}

pub(crate) fn chunk_count(chunk_size: u32, plaintext_len: u64) -> u64 {
    plaintext_len.div_ceil(u64::from(chunk_size)).max(1)
}

fn validate_sizes(chunk_size: u32, plaintext_len: u64) -> Result<(), Error> {
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(Error::InvalidChunkSize {
            found: chunk_size,
            min: MIN_CHUNK_SIZE,
            max: MAX_CHUNK_SIZE,
        });
    }
    if plaintext_len > MAX_PLAINTEXT_LEN {
        return Err(Error::TooLarge {
            len: plaintext_len,
            max: MAX_PLAINTEXT_LEN,
        });
    }
    // The chunk counter is a u32: indices 0..=u32::MAX.
    if chunk_count(chunk_size, plaintext_len) > 1 << 32 {
        return Err(Error::TooManyChunks {
            plaintext_len,
            chunk_size,
        });
    }
    Ok(())
}

/// Names: 1..=255 bytes of UTF-8 without control characters (they end up in URLs, logs and
/// terminals).
fn validate_name(bytes: &[u8]) -> Result<&str, Error> {
    if bytes.is_empty() {
        return Err(Error::NameEmpty);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            len: bytes.len(),
            max: MAX_NAME_LEN,
        });
    }
    let name = std::str::from_utf8(bytes).map_err(|_| Error::NameNotUtf8)?;
    if name.chars().any(char::is_control) {
        return Err(Error::NameHasControlChar);
    }
    Ok(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample(name: &str) -> SealedHeader {
        SealedHeader::new(
            name,
            ModelDigest::of(b"onnx"),
            5_000_000,
            DEFAULT_CHUNK_SIZE,
            KeyId::from_bytes([7; KEY_ID_LEN]),
            [1, 2, 3, 4, 5, 6, 7],
        )
        .unwrap()
    }

    #[test]
    fn layout_is_as_documented() {
        let h = sample("resnet");
        let b = h.encode();
        assert_eq!(b.len(), FIXED_HEADER_LEN + 6);
        assert_eq!(&b[..9], b"CLSTRSEAL");
        assert_eq!(&b[9..11], &[0, 1]);
        assert_eq!(b[11], 1);
        assert_eq!(&b[12..16], &DEFAULT_CHUNK_SIZE.to_be_bytes());
        assert_eq!(&b[16..24], &5_000_000u64.to_be_bytes());
        assert_eq!(&b[24..72], ModelDigest::of(b"onnx").as_bytes());
        assert_eq!(&b[72..88], &[7; 16]);
        assert_eq!(&b[88..95], &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(b[95], 6);
        assert_eq!(&b[96..], b"resnet");
        assert_eq!(h.chunk_count(), 5);
        assert_eq!(h.sealed_len(), 102 + 5_000_000 + 5 * 16);
        assert_eq!(h.nonce(3, false), [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 3, 0]);
        assert_eq!(
            h.nonce(0x0102_0304, true),
            [1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 1]
        );
    }

    #[test]
    fn decode_round_trip_ignores_what_follows() {
        let h = sample("mini-lm ✓");
        let mut b = h.encode();
        let len = b.len();
        b.extend_from_slice(b"chunks...");
        assert_eq!(SealedHeader::decode(&b).unwrap(), (h.clone(), len));
        assert_eq!(read_header(&b[..]).unwrap(), (h, len));
    }

    #[test]
    fn decode_rejects_each_bad_field() {
        let good = sample("m").encode();
        let with = |off: usize, val: &[u8]| {
            let mut b = good.clone();
            b[off..off + val.len()].copy_from_slice(val);
            SealedHeader::decode(&b)
        };
        assert!(matches!(with(0, b"X"), Err(Error::BadMagic)));
        assert!(matches!(
            with(9, &[0, 2]),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        assert!(matches!(
            with(9, &[0, 0]),
            Err(Error::UnsupportedVersion { found: 0, .. })
        ));
        assert!(matches!(
            with(11, &[2]),
            Err(Error::UnsupportedCipher { found: 2 })
        ));
        assert!(matches!(
            with(11, &[0]),
            Err(Error::UnsupportedCipher { found: 0 })
        ));
        assert!(matches!(
            with(12, &4095u32.to_be_bytes()),
            Err(Error::InvalidChunkSize { found: 4095, .. })
        ));
        assert!(matches!(
            with(12, &(MAX_CHUNK_SIZE + 1).to_be_bytes()),
            Err(Error::InvalidChunkSize { .. })
        ));
        assert!(matches!(
            with(16, &u64::MAX.to_be_bytes()),
            Err(Error::TooLarge { .. })
        ));
        let mut b = good.clone();
        b[12..16].copy_from_slice(&MIN_CHUNK_SIZE.to_be_bytes());
        b[16..24].copy_from_slice(&(MAX_PLAINTEXT_LEN).to_be_bytes());
        assert!(matches!(
            SealedHeader::decode(&b),
            Err(Error::TooManyChunks { .. })
        ));
        assert!(matches!(with(95, &[0]), Err(Error::NameEmpty)));
        assert!(matches!(
            with(95, &[2]),
            Err(Error::Truncated { at: Part::Header })
        ));
        assert!(matches!(with(96, &[0xff]), Err(Error::NameNotUtf8)));
        assert!(matches!(with(96, b"\n"), Err(Error::NameHasControlChar)));
    }

    #[test]
    fn short_inputs_say_why() {
        let good = sample("m").encode();
        assert!(matches!(
            SealedHeader::decode(&[]),
            Err(Error::Truncated { at: Part::Header })
        ));
        assert!(matches!(
            SealedHeader::decode(b"CLS"),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            SealedHeader::decode(b"PK\x03\x04"),
            Err(Error::BadMagic)
        ));
        assert!(matches!(
            read_header(&b"\x08\x01onnx"[..]),
            Err(Error::BadMagic)
        ));
        for cut in 0..good.len() {
            assert!(
                matches!(
                    SealedHeader::decode(&good[..cut]),
                    Err(Error::Truncated { .. })
                ),
                "{cut}"
            );
            assert!(
                matches!(read_header(&good[..cut]), Err(Error::Truncated { .. })),
                "{cut}"
            );
        }
    }

    #[test]
    fn names() {
        let key_id = KeyId::from_bytes([0; KEY_ID_LEN]);
        let mk = |name: &str| {
            SealedHeader::new(
                name,
                ModelDigest::of(b""),
                0,
                MIN_CHUNK_SIZE,
                key_id,
                [0; 7],
            )
        };
        assert!(mk(&"é".repeat(127)).is_ok()); // 254 bytes
        assert!(mk(&"a".repeat(255)).is_ok());
        assert!(matches!(
            mk(&"a".repeat(256)),
            Err(Error::NameTooLong { len: 256, max: 255 })
        ));
        assert!(matches!(mk(""), Err(Error::NameEmpty)));
        assert!(matches!(mk("a\u{1b}[31m"), Err(Error::NameHasControlChar)));
        assert!(matches!(mk("a\u{85}"), Err(Error::NameHasControlChar)));
    }

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunk_count(4096, 0), 1);
        assert_eq!(chunk_count(4096, 1), 1);
        assert_eq!(chunk_count(4096, 4096), 1);
        assert_eq!(chunk_count(4096, 4097), 2);
        assert!(validate_sizes(4096, 4096 << 32).is_ok());
        assert!(matches!(
            validate_sizes(4096, (4096 << 32) + 1),
            Err(Error::TooManyChunks { .. })
        ));
    }
}

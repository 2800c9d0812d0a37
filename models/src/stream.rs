//! Sealing and opening: the STREAM construction over AES-256-GCM (docs/sealed-format.md §3).
//!
//! Chunk `i` of `n` is `AES-256-GCM(key, nonce_prefix || u32_be(i) || last, aad = SHA-384(header),
//! plaintext_i)`, with `last = 1` only for `i = n - 1` (Hoang, Reyhanitabar, Rogaway, Vizár,
//! "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015).
//! The counter rejects dropped, reordered and duplicated chunks; the last flag rejects
//! truncation at a chunk boundary; the header hash as AAD binds every chunk to the header (name,
//! digest, length, chunk size, key id, nonce prefix).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag};
use ring::rand::SecureRandom;
use zeroize::{Zeroize, Zeroizing};

use crate::digest::{Hasher, ModelDigest};
use crate::error::{Error, Part};
use crate::header::{
    chunk_count, hash_header_bytes, read_full, read_header_raw, SealedHeader, HEADER_HASH_LEN,
    NONCE_PREFIX_LEN, TAG_LEN,
};
use crate::key::ModelKey;

/// What [`seal`] is doing, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// First pass: hashing the plaintext (the digest goes into the header, before the chunks).
    Hashing,
    /// Second pass: encrypting and writing the chunks.
    Sealing,
}

/// A progress report from [`seal`]: `done` of `total` plaintext bytes in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The current pass.
    pub phase: Phase,
    /// Plaintext bytes processed so far in this pass.
    pub done: u64,
    /// Plaintext bytes in total.
    pub total: u64,
}

/// Seals the plaintext read from `plaintext` (from its current position to its end) to `out`.
///
/// The header carries the plaintext's digest and must precede the chunks, so this makes two
/// streaming passes over a seekable source: the first hashes, the second encrypts (and hashes
/// again, to detect a source that changed in between: [`Error::SourceChanged`]). Memory: one
/// chunk of working space, whatever the model size. For bytes in memory pass
/// `std::io::Cursor::new(bytes)`.
///
/// On error `out` holds an incomplete or unusable sealed model and must be discarded
/// ([`seal_file`] deletes its output).
///
/// `rng` draws the nonce prefix. The key should be fresh for each model (the key broker files
/// keys by model digest); a key that seals many blobs relies on the 56-bit random prefix not
/// colliding.
pub fn seal<R: Read + Seek, W: Write>(
    mut plaintext: R,
    mut out: W,
    key: &ModelKey,
    name: &str,
    chunk_size: u32,
    rng: &dyn SecureRandom,
    progress: &mut dyn FnMut(Progress),
) -> Result<SealedHeader, Error> {
    let start = plaintext.stream_position()?;
    let end = plaintext.seek(SeekFrom::End(0))?;
    let total = end.saturating_sub(start);
    plaintext.seek(SeekFrom::Start(start))?;
    // Validate name and sizes before reading a possibly large file.
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    SealedHeader::new(
        name,
        ModelDigest::from_bytes([0; 48]),
        total,
        chunk_size,
        key.key_id(),
        nonce_prefix,
    )?;

    // One chunk of working space (plus room for the tag), zeroized on drop: it holds plaintext.
    let mut buf = Zeroizing::new(vec![0u8; chunk_size as usize + TAG_LEN]);

    // Pass 1: digest.
    let mut hasher = Hasher::new();
    let mut done = 0u64;
    for index in 0..chunk_count(chunk_size, total) {
        let n = chunk_len(chunk_size, total, index);
        read_source(&mut plaintext, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(Progress {
            phase: Phase::Hashing,
            done,
            total,
        });
    }
    ensure_source_eof(&mut plaintext)?;
    let digest = hasher.finish();

    rng.fill(&mut nonce_prefix).map_err(|_| Error::Rng)?;
    let header = SealedHeader::new(name, digest, total, chunk_size, key.key_id(), nonce_prefix)?;
    let header_bytes = header.encode();
    out.write_all(&header_bytes)?;

    // Pass 2: encrypt.
    plaintext.seek(SeekFrom::Start(start))?;
    let aad = hash_header_bytes(&header_bytes);
    let aead = key.aead_key()?;
    let again = write_chunks(
        &header,
        &aad,
        &aead,
        &mut plaintext,
        &mut out,
        &mut buf,
        progress,
    )?;
    ensure_source_eof(&mut plaintext)?;
    if !again.ct_eq(&digest) {
        return Err(Error::SourceChanged);
    }
    out.flush()?;
    Ok(header)
}

/// Encrypts and writes every chunk of `header` from `plaintext`; returns the digest of what it read.
fn write_chunks<R: Read, W: Write>(
    header: &SealedHeader,
    aad: &[u8; HEADER_HASH_LEN],
    aead: &LessSafeKey,
    plaintext: &mut R,
    out: &mut W,
    buf: &mut [u8],
    progress: &mut dyn FnMut(Progress),
) -> Result<ModelDigest, Error> {
    let count = header.chunk_count();
    let total = header.plaintext_len();
    let mut hasher = Hasher::new();
    let mut done = 0u64;
    for index in 0..count {
        let n = header.chunk_plaintext_len(index);
        let nonce = header.nonce(chunk_index(index, header)?, index + 1 == count);
        read_source(plaintext, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                &mut buf[..n],
            )
            .map_err(|_| Error::Crypto)?;
        buf[n..n + TAG_LEN].copy_from_slice(tag.as_ref());
        out.write_all(&buf[..n + TAG_LEN])?;
        done += n as u64;
        progress(Progress {
            phase: Phase::Sealing,
            done,
            total,
        });
    }
    Ok(hasher.finish())
}

/// Seals the file at `input` into a new file at `output` (never overwritten: the call fails if
/// `output` exists). See [`seal`]. On error the partial output is deleted.
pub fn seal_file(
    input: &Path,
    output: &Path,
    key: &ModelKey,
    name: &str,
    chunk_size: u32,
    rng: &dyn SecureRandom,
    progress: &mut dyn FnMut(Progress),
) -> Result<SealedHeader, Error> {
    let source = File::open(input)?;
    let mut sink = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(output)?;
    let result = seal(
        io::BufReader::new(source),
        &mut sink,
        key,
        name,
        chunk_size,
        rng,
        progress,
    )
    .and_then(|header| sink.sync_all().map(|()| header).map_err(Error::from));
    if result.is_err() {
        drop(sink);
        // Best effort: the seal error is the one worth reporting.
        let _ = fs::remove_file(output);
    }
    result
}

/// A decrypted, authenticated model: the plaintext ONNX bytes and the header they were sealed
/// under. The bytes are zeroized on drop; `Debug` does not print them.
pub struct Plaintext {
    header: SealedHeader,
    bytes: SecretBytes,
}

/// A plaintext buffer that zeroizes its initialized bytes on drop.
///
/// Not `Zeroizing<Vec<u8>>`: that zeroizes the whole capacity, so a header that announces a
/// large (but allowed) length and fails at chunk 0 would make the enclave write every reserved
/// page. The buffer never reallocates (its capacity is reserved up front), so the spare capacity
/// has never held data.
struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl Plaintext {
    /// The plaintext ONNX bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.0.len()
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.0.is_empty()
    }

    /// The header the model was sealed under (authenticated: every chunk is bound to it).
    pub fn header(&self) -> &SealedHeader {
        &self.header
    }

    /// SHA-384 of [`Self::as_bytes`], checked after decryption.
    pub fn digest(&self) -> &ModelDigest {
        self.header.digest()
    }

    /// The model name from the (authenticated) header.
    pub fn name(&self) -> &str {
        self.header.name()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plaintext")
            .field("name", &self.header.name())
            .field("digest", self.header.digest())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Opens a sealed model and checks it against the digest the caller expects.
///
/// This is the enclave's entry point: `sealed` comes from the untrusted host, `expected` is the
/// digest the key was released for. The header's digest is compared with `expected`, its key id
/// with the key's, and its length with `max_plaintext_len`, all before anything is allocated or
/// decrypted. Then every chunk is authenticated, the input must end exactly after the last chunk,
/// and the plaintext must hash to the digest.
///
/// Memory: exactly `plaintext_len` bytes, reserved up front and decrypted chunk by chunk in
/// place; no second copy. On any error the partial plaintext is zeroized and only the error is
/// returned. Reads `sealed` to its end.
pub fn open_expecting<R: Read>(
    sealed: R,
    key: &ModelKey,
    expected: &ModelDigest,
    max_plaintext_len: u64,
) -> Result<Plaintext, Error> {
    open_inner(sealed, key, Some(expected), max_plaintext_len)
}

/// Opens a sealed model whatever model it claims to be (the plaintext is still authenticated and
/// checked against the header's digest). For the model owner checking their own output; an
/// enclave must use [`open_expecting`]. See there for the checks and memory use.
pub fn open<R: Read>(
    sealed: R,
    key: &ModelKey,
    max_plaintext_len: u64,
) -> Result<Plaintext, Error> {
    open_inner(sealed, key, None, max_plaintext_len)
}

fn open_inner<R: Read>(
    mut sealed: R,
    key: &ModelKey,
    expected: Option<&ModelDigest>,
    max_plaintext_len: u64,
) -> Result<Plaintext, Error> {
    let (header, raw, header_len) = read_header_raw(&mut sealed)?;

    // Cheap checks on the untrusted header, before any allocation or decryption.
    if let Some(expected) = expected {
        if !expected.ct_eq(header.digest()) {
            return Err(Error::UnexpectedModel {
                expected: *expected,
                found: *header.digest(),
            });
        }
    }
    if header.key_id() != key.key_id() {
        return Err(Error::WrongKey {
            expected_key_id: header.key_id(),
            found: key.key_id(),
        });
    }
    let len = header.plaintext_len();
    if len > max_plaintext_len {
        return Err(Error::TooLarge {
            len,
            max: max_plaintext_len,
        });
    }
    let len_usize = usize::try_from(len).map_err(|_| Error::TooLarge {
        len,
        max: usize::MAX as u64,
    })?;

    // AAD: the hash of the header bytes exactly as read (the parser accepts only the canonical
    // encoding, so this equals the hash of the re-encoded header).
    let aad = hash_header_bytes(&raw[..header_len]);
    let aead = key.aead_key()?;

    let mut bytes = SecretBytes(Vec::new());
    bytes
        .0
        .try_reserve_exact(len_usize)
        .map_err(|_| Error::OutOfMemory { len })?;
    let count = header.chunk_count();
    // Ciphertext is read through this buffer and appended to `bytes`: appending grows the
    // plaintext buffer a chunk at a time without first writing zeros over it, and a header that
    // lies about its length (caught at chunk 0, whose AAD is the header's hash) costs one chunk.
    let mut io_buf = vec![0u8; IO_BUF_LEN];
    let mut decrypt_next = |index: u64, bytes: &mut Vec<u8>| -> Result<(), Error> {
        let index32 = chunk_index(index, &header)?;
        let truncated = || Error::Truncated {
            at: Part::Chunk {
                index: index32,
                count,
            },
        };
        let start = bytes.len();
        let mut left = header.chunk_plaintext_len(index);
        while left > 0 {
            let n = left.min(io_buf.len());
            read_sealed(&mut sealed, &mut io_buf[..n], truncated)?;
            // Within the reserved capacity: never reallocates, so no unzeroized copy is left.
            debug_assert!(bytes.len() + n <= bytes.capacity());
            bytes.extend_from_slice(&io_buf[..n]);
            left -= n;
        }
        let mut tag = [0u8; TAG_LEN];
        read_sealed(&mut sealed, &mut tag, truncated)?;
        let nonce = Nonce::assume_unique_for_key(header.nonce(index32, index + 1 == count));
        aead.open_in_place_separate_tag(
            nonce,
            Aad::from(&aad[..]),
            Tag::from(tag),
            &mut bytes[start..],
            0..,
        )
        .map_err(|_| Error::ChunkAuthFailed { index: index32 })?;
        Ok(())
    };

    let found = if len_usize <= HASH_PIECE_LEN {
        // Small: a thread would cost more than it saves.
        let mut hasher = Hasher::new();
        for index in 0..count {
            let start = bytes.0.len();
            decrypt_next(index, &mut bytes.0)?;
            hasher.update(&bytes.0[start..]);
        }
        hasher.finish()
    } else {
        // SHA-384 of the plaintext runs on a second thread, behind the decryption: on a core of
        // its own it hides the reading, decrypting and copying, so opening runs at about the
        // speed of SHA-384 alone (docs/performance.md, "Opening a sealed model"). The hasher
        // gets copies of the plaintext in small pieces (the buffer being filled cannot be
        // shared while it grows); the pieces are recycled and zeroized when dropped.
        std::thread::scope(|scope| -> Result<ModelDigest, Error> {
            let (to_hasher, pieces) = mpsc::sync_channel::<Piece>(HASH_PIECES);
            let (free_tx, free_pieces) = mpsc::sync_channel::<Piece>(HASH_PIECES);
            for _ in 0..HASH_PIECES {
                let piece = Zeroizing::new(Vec::with_capacity(HASH_PIECE_LEN));
                free_tx.send(piece).map_err(|_| hasher_gone())?;
            }
            let hashing = scope.spawn(move || {
                let mut hasher = Hasher::new();
                for piece in pieces {
                    hasher.update(&piece);
                    // The decrypting side may have stopped on an error: nobody to return it to.
                    let _ = free_tx.send(piece);
                }
                hasher.finish()
            });
            let decrypted = (|| -> Result<(), Error> {
                for index in 0..count {
                    let start = bytes.0.len();
                    decrypt_next(index, &mut bytes.0)?;
                    for plain in bytes.0[start..].chunks(HASH_PIECE_LEN) {
                        let mut piece = free_pieces.recv().map_err(|_| hasher_gone())?;
                        piece.clear();
                        piece.extend_from_slice(plain);
                        to_hasher.send(piece).map_err(|_| hasher_gone())?;
                    }
                }
                Ok(())
            })();
            // Dropping the sender ends the hasher's loop, on success and on error alike.
            drop(to_hasher);
            let digest = hashing.join().map_err(|_| hasher_gone())?;
            decrypted.map(|()| digest)
        })?
    };
    let mut probe = [0u8; 1];
    if read_full(&mut sealed, &mut probe)? != 0 {
        return Err(Error::TrailingData);
    }
    if !found.ct_eq(header.digest()) {
        return Err(Error::DigestMismatch {
            expected: *header.digest(),
            found,
        });
    }
    Ok(Plaintext { header, bytes })
}

/// Ciphertext read per `read` call while opening (not secret).
const IO_BUF_LEN: usize = 64 * 1024;
/// Plaintext handed to the hashing thread per message, and the size under which opening hashes
/// on its own thread of control.
const HASH_PIECE_LEN: usize = 256 * 1024;
/// Pieces in flight between the decrypting and the hashing thread (1 MiB of copies).
const HASH_PIECES: usize = 4;

/// A copy of some plaintext on its way to the hasher.
type Piece = Zeroizing<Vec<u8>>;

/// The hashing thread ended early: only a panic in SHA-384 could do it, so this is an internal
/// error, never a verdict on the model.
fn hasher_gone() -> Error {
    Error::Io(io::Error::other("the SHA-384 thread of open() stopped"))
}

fn chunk_len(chunk_size: u32, total: u64, index: u64) -> usize {
    let start = index * u64::from(chunk_size);
    // <= chunk_size <= 16 MiB.
    total.saturating_sub(start).min(u64::from(chunk_size)) as usize
}

fn chunk_index(index: u64, header: &SealedHeader) -> Result<u32, Error> {
    // The header was validated to have at most 2^32 chunks.
    u32::try_from(index).map_err(|_| Error::TooManyChunks {
        plaintext_len: header.plaintext_len(),
        chunk_size: header.chunk_size(),
    })
}

fn read_sealed<R: Read>(
    sealed: &mut R,
    buf: &mut [u8],
    truncated: impl Fn() -> Error,
) -> Result<(), Error> {
    sealed.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(),
        _ => Error::Io(e),
    })
}

fn read_source<R: Read>(source: &mut R, buf: &mut [u8]) -> Result<(), Error> {
    source.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::SourceChanged,
        _ => Error::Io(e),
    })
}

fn ensure_source_eof<R: Read>(source: &mut R) -> Result<(), Error> {
    let mut probe = [0u8; 1];
    if read_full(source, &mut probe)? != 0 {
        return Err(Error::SourceChanged);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

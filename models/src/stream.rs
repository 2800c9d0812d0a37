//! Sealing and opening: the STREAM construction over AES-256-GCM (docs/sealed-format.md §3).
//!
//! Chunk `i` of `n` is `AES-256-GCM(key, nonce_prefix || u32_be(i) || last, aad = SHA-384(header),
//! plaintext_i)`, with `last = 1` only for `i = n - 1` (Hoang, Reyhanitabar, Rogaway, Vizár,
//! "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015).
//! The counter rejects dropped, reordered and duplicated chunks; the last flag rejects
//! truncation at a chunk boundary; the header hash as AAD binds every chunk to the header (name,
//! digest, length, chunk size, key id, nonce prefix).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::digest::{Hasher, ModelDigest};
use crate::error::Error;
use crate::header::{
    chunk_count, hash_header_bytes, read_full, SealedHeader, HEADER_HASH_LEN, NONCE_PREFIX_LEN,
    TAG_LEN,
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

fn chunk_len(chunk_size: u32, total: u64, index: u64) -> usize {
    let start = index * u64::from(chunk_size);
    // <= chunk_size <= 16 MiB.
    total.saturating_sub(start).min(u64::from(chunk_size)) as usize
}

pub(crate) fn chunk_index(index: u64, header: &SealedHeader) -> Result<u32, Error> {
    // The header was validated to have at most 2^32 chunks.
    u32::try_from(index).map_err(|_| Error::TooManyChunks {
        plaintext_len: header.plaintext_len(),
        chunk_size: header.chunk_size(),
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

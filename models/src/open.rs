//! Opening a sealed model, push-style: [`Opener`] takes the sealed bytes as they arrive (from a socket, a
//! file, a test) and owns every check; [`open_expecting`] and [`open`] drive it from a reader.
//!
//! ```text
//! Opener::new(key, expected, max)
//! push(bytes)…   header: parsed once, checked (digest = expected, key id, length ≤ max), memory reserved
//!                chunks: ciphertext appended in place, authenticated at each tag, hashed (a second thread
//!                        for large models), anything after the last chunk refused
//! finish()       every chunk arrived, SHA-384(plaintext) = the header's digest → Plaintext
//! ```
//! Push-style (sans-IO) so that a caller with an async byte stream (the enclave's blob fetch) opens as the
//! bytes come, without a thread bridge and without parsing the header itself.

use std::fmt;
use std::io::{self, Read};
use std::sync::mpsc;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

use crate::digest::{Hasher, ModelDigest};
use crate::error::{Error, Part};
use crate::header::{
    decode_error, hash_header_bytes, header_len_from_fixed, SealedHeader, FIXED_HEADER_LEN,
    HEADER_HASH_LEN, MAX_HEADER_LEN, TAG_LEN,
};
use crate::key::{KeyId, ModelKey};
use crate::stream::chunk_index;

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
/// returned. Reads `sealed` to its end. ([`Opener`] does the same with bytes pushed to it.)
pub fn open_expecting<R: Read>(
    sealed: R,
    key: &ModelKey,
    expected: &ModelDigest,
    max_plaintext_len: u64,
) -> Result<Plaintext, Error> {
    drive(
        sealed,
        Opener::new(key, Some(*expected), max_plaintext_len)?,
    )
}

/// Opens a sealed model whatever model it claims to be (the plaintext is still authenticated and
/// checked against the header's digest). For the model owner checking their own output; an
/// enclave must use [`open_expecting`]. See there for the checks and memory use.
pub fn open<R: Read>(
    sealed: R,
    key: &ModelKey,
    max_plaintext_len: u64,
) -> Result<Plaintext, Error> {
    drive(sealed, Opener::new(key, None, max_plaintext_len)?)
}

/// Ciphertext read per `read` call by [`open`] (not secret).
const IO_BUF_LEN: usize = 64 * 1024;

/// Reads no further than the opener needs (so a refused header costs no more than the header, and a byte
/// past the last chunk is the one probe that finds trailing data).
fn drive<R: Read>(mut sealed: R, mut opener: Opener) -> Result<Plaintext, Error> {
    let mut buf = vec![0u8; IO_BUF_LEN];
    loop {
        let want = opener.wants().min(IO_BUF_LEN);
        match sealed.read(&mut buf[..want]) {
            Ok(0) => return opener.finish(),
            Ok(n) => opener.push(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// Opens one sealed model from bytes pushed to it in any pieces. See [`open_expecting`] for the
/// checks, their order and the memory used; the first error is final.
pub struct Opener {
    aead: LessSafeKey,
    key_id: KeyId,
    expected: Option<ModelDigest>,
    max_plaintext_len: u64,
    state: State,
}

enum State {
    /// Collecting the header (at most [`MAX_HEADER_LEN`] bytes).
    Header {
        buf: Box<[u8; MAX_HEADER_LEN]>,
        got: usize,
    },
    /// Reading chunks.
    Chunks(Box<Chunks>),
    /// Every chunk arrived and was authenticated.
    Complete(Box<Chunks>),
    /// An error was returned: nothing more is accepted.
    Failed,
}

/// The chunk reader's state: the authenticated header, the plaintext so far, where in which chunk.
struct Chunks {
    header: SealedHeader,
    aad: [u8; HEADER_HASH_LEN],
    bytes: SecretBytes,
    count: u64,
    index: u64,
    /// Where the current chunk's bytes start in `bytes`.
    start: usize,
    /// Ciphertext bytes of the current chunk still to come.
    left: usize,
    tag: [u8; TAG_LEN],
    tag_got: usize,
    hashing: Hashing,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("header", &self.header().map(SealedHeader::name))
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for a model sealed under `key`; with `expected`, only the model of that digest is
    /// opened; plaintexts over `max_plaintext_len` are refused from the header.
    pub fn new(
        key: &ModelKey,
        expected: Option<ModelDigest>,
        max_plaintext_len: u64,
    ) -> Result<Self, Error> {
        Ok(Opener {
            aead: key.aead_key()?,
            key_id: key.key_id(),
            expected,
            max_plaintext_len,
            state: State::Header {
                buf: Box::new([0; MAX_HEADER_LEN]),
                got: 0,
            },
        })
    }

    /// The header, once it arrived and passed the checks (before any chunk is decrypted).
    pub fn header(&self) -> Option<&SealedHeader> {
        match &self.state {
            State::Chunks(c) | State::Complete(c) => Some(&c.header),
            State::Header { .. } | State::Failed => None,
        }
    }

    /// How many more bytes the opener can take before its next check: the rest of the header, of the
    /// current chunk's ciphertext or of its tag; 1 once complete (any byte is trailing data).
    pub fn wants(&self) -> usize {
        match &self.state {
            State::Header { buf, got } if *got < FIXED_HEADER_LEN => FIXED_HEADER_LEN - got,
            State::Header { buf, got } => header_len_from_fixed(&buf[..*got]) - got,
            State::Chunks(c) if c.left > 0 => c.left,
            State::Chunks(c) => TAG_LEN - c.tag_got,
            State::Complete(_) | State::Failed => 1,
        }
    }

    /// Takes the next sealed bytes. An error is final (the plaintext so far is zeroized).
    pub fn push(&mut self, data: &[u8]) -> Result<(), Error> {
        let result = self.push_inner(data);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn push_inner(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let checks = HeaderChecks {
            key_id: self.key_id,
            expected: self.expected,
            max_plaintext_len: self.max_plaintext_len,
        };
        while !data.is_empty() {
            data = match &mut self.state {
                State::Header { buf, got } => {
                    // The fixed part first; it says how long the name, and so the header, is.
                    let need = if *got < FIXED_HEADER_LEN {
                        FIXED_HEADER_LEN
                    } else {
                        header_len_from_fixed(&buf[..*got])
                    };
                    let n = (need - *got).min(data.len());
                    buf[*got..*got + n].copy_from_slice(&data[..n]);
                    *got += n;
                    if *got >= FIXED_HEADER_LEN && *got == header_len_from_fixed(&buf[..*got]) {
                        let chunks = checks.start_chunks(&buf[..*got])?;
                        self.state = State::Chunks(Box::new(chunks));
                    }
                    &data[n..]
                }
                State::Chunks(chunks) => {
                    let rest = chunks.take(data, &self.aead)?;
                    if chunks.index == chunks.count {
                        let State::Chunks(done) = std::mem::replace(&mut self.state, State::Failed)
                        else {
                            unreachable!("matched above")
                        };
                        self.state = State::Complete(done);
                    }
                    rest
                }
                State::Complete(_) => return Err(Error::TrailingData),
                State::Failed => return Err(failed_before()),
            };
        }
        Ok(())
    }

    /// The end of the sealed bytes: every chunk must have arrived, and the plaintext must hash to the
    /// header's digest.
    pub fn finish(self) -> Result<Plaintext, Error> {
        match self.state {
            State::Header { buf, got } => Err(decode_error(&buf[..got])),
            State::Chunks(chunks) => Err(Error::Truncated {
                at: Part::Chunk {
                    index: chunk_index(chunks.index, &chunks.header)?,
                    count: chunks.count,
                },
            }),
            State::Failed => Err(failed_before()),
            State::Complete(chunks) => {
                let Chunks {
                    header,
                    bytes,
                    hashing,
                    ..
                } = *chunks;
                let found = hashing.finish()?;
                if !found.ct_eq(header.digest()) {
                    return Err(Error::DigestMismatch {
                        expected: *header.digest(),
                        found,
                    });
                }
                Ok(Plaintext { header, bytes })
            }
        }
    }
}

/// What the header must satisfy before anything is allocated or decrypted.
struct HeaderChecks {
    key_id: KeyId,
    expected: Option<ModelDigest>,
    max_plaintext_len: u64,
}

impl HeaderChecks {
    /// The header's checks, before any allocation or decryption; then the plaintext buffer.
    fn start_chunks(&self, raw: &[u8]) -> Result<Chunks, Error> {
        let (header, len) = SealedHeader::decode(raw)?;
        debug_assert_eq!(len, raw.len());
        if let Some(expected) = &self.expected {
            if !expected.ct_eq(header.digest()) {
                return Err(Error::UnexpectedModel {
                    expected: *expected,
                    found: *header.digest(),
                });
            }
        }
        if header.key_id() != self.key_id {
            return Err(Error::WrongKey {
                expected_key_id: header.key_id(),
                found: self.key_id,
            });
        }
        let len = header.plaintext_len();
        if len > self.max_plaintext_len {
            return Err(Error::TooLarge {
                len,
                max: self.max_plaintext_len,
            });
        }
        let len_usize = usize::try_from(len).map_err(|_| Error::TooLarge {
            len,
            max: usize::MAX as u64,
        })?;
        let mut bytes = SecretBytes(Vec::new());
        bytes
            .0
            .try_reserve_exact(len_usize)
            .map_err(|_| Error::OutOfMemory { len })?;
        let count = header.chunk_count();
        Ok(Chunks {
            // AAD: the hash of the header bytes exactly as received (the parser accepts only the
            // canonical encoding, so this equals the hash of the re-encoded header).
            aad: hash_header_bytes(raw),
            bytes,
            count,
            index: 0,
            start: 0,
            left: header.chunk_plaintext_len(0),
            tag: [0; TAG_LEN],
            tag_got: 0,
            hashing: Hashing::for_len(len_usize),
            header,
        })
    }
}

impl Chunks {
    /// Takes ciphertext and tags from `data` up to the end of the current chunk (authenticating it when its
    /// tag is complete); returns what is left of `data`.
    fn take<'d>(&mut self, data: &'d [u8], aead: &LessSafeKey) -> Result<&'d [u8], Error> {
        if self.left > 0 {
            let n = self.left.min(data.len());
            // Within the reserved capacity: never reallocates, so no unzeroized copy is left.
            debug_assert!(self.bytes.0.len() + n <= self.bytes.0.capacity());
            self.bytes.0.extend_from_slice(&data[..n]);
            self.left -= n;
            return Ok(&data[n..]);
        }
        let n = (TAG_LEN - self.tag_got).min(data.len());
        self.tag[self.tag_got..self.tag_got + n].copy_from_slice(&data[..n]);
        self.tag_got += n;
        if self.tag_got == TAG_LEN {
            self.open_chunk(aead)?;
        }
        Ok(&data[n..])
    }

    /// Authenticates and decrypts the current chunk in place, hands it to the hasher, moves to the next.
    fn open_chunk(&mut self, aead: &LessSafeKey) -> Result<(), Error> {
        let index32 = chunk_index(self.index, &self.header)?;
        let nonce =
            Nonce::assume_unique_for_key(self.header.nonce(index32, self.index + 1 == self.count));
        aead.open_in_place_separate_tag(
            nonce,
            Aad::from(&self.aad[..]),
            Tag::from(self.tag),
            &mut self.bytes.0[self.start..],
            0..,
        )
        .map_err(|_| Error::ChunkAuthFailed { index: index32 })?;
        self.hashing.update(&self.bytes.0[self.start..])?;
        self.index += 1;
        self.start = self.bytes.0.len();
        self.tag_got = 0;
        if self.index < self.count {
            self.left = self.header.chunk_plaintext_len(self.index);
        }
        Ok(())
    }
}

/// SHA-384 of the plaintext: inline for small models, on a second thread for large ones. On a core of its
/// own the hash hides the reading, decrypting and copying, so opening runs at about the speed of SHA-384
/// alone (docs/performance.md, "Opening a sealed model"). The thread gets copies of the plaintext in small
/// pieces (the buffer being filled cannot be shared while it grows); the pieces are recycled and zeroized
/// when dropped. Dropping the opener (an error) drops the sender, which ends the thread.
enum Hashing {
    Inline(Hasher),
    Thread {
        to_hasher: mpsc::SyncSender<Piece>,
        free_pieces: mpsc::Receiver<Piece>,
        hashing: std::thread::JoinHandle<ModelDigest>,
    },
}

/// Plaintext handed to the hashing thread per message, and the size under which opening hashes
/// on its own thread of control.
pub(crate) const HASH_PIECE_LEN: usize = 256 * 1024;
/// Pieces in flight between the decrypting and the hashing thread (1 MiB of copies).
const HASH_PIECES: usize = 4;

/// A copy of some plaintext on its way to the hasher.
type Piece = Zeroizing<Vec<u8>>;

impl Hashing {
    fn for_len(len: usize) -> Self {
        if len <= HASH_PIECE_LEN {
            // Small: a thread would cost more than it saves.
            return Hashing::Inline(Hasher::new());
        }
        let (to_hasher, pieces) = mpsc::sync_channel::<Piece>(HASH_PIECES);
        let (free_tx, free_pieces) = mpsc::sync_channel::<Piece>(HASH_PIECES);
        for _ in 0..HASH_PIECES {
            // Cannot fail: the channel holds HASH_PIECES and its receiver is alive.
            let _ = free_tx.send(Zeroizing::new(Vec::with_capacity(HASH_PIECE_LEN)));
        }
        let hashing = std::thread::spawn(move || {
            let mut hasher = Hasher::new();
            for piece in pieces {
                hasher.update(&piece);
                // The decrypting side may have stopped on an error: nobody to return it to.
                let _ = free_tx.send(piece);
            }
            hasher.finish()
        });
        Hashing::Thread {
            to_hasher,
            free_pieces,
            hashing,
        }
    }

    fn update(&mut self, plain: &[u8]) -> Result<(), Error> {
        match self {
            Hashing::Inline(hasher) => hasher.update(plain),
            Hashing::Thread {
                to_hasher,
                free_pieces,
                ..
            } => {
                for part in plain.chunks(HASH_PIECE_LEN) {
                    let mut piece = free_pieces.recv().map_err(|_| hasher_gone())?;
                    piece.clear();
                    piece.extend_from_slice(part);
                    to_hasher.send(piece).map_err(|_| hasher_gone())?;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<ModelDigest, Error> {
        match self {
            Hashing::Inline(hasher) => Ok(hasher.finish()),
            Hashing::Thread {
                to_hasher, hashing, ..
            } => {
                // Dropping the sender ends the hasher's loop.
                drop(to_hasher);
                hashing.join().map_err(|_| hasher_gone())
            }
        }
    }
}

/// The hashing thread ended early: only a panic in SHA-384 could do it, so this is an internal
/// error, never a verdict on the model.
fn hasher_gone() -> Error {
    Error::Io(io::Error::other("the SHA-384 thread of open() stopped"))
}

/// Bytes pushed (or the end) after the opener returned an error.
fn failed_before() -> Error {
    Error::Io(io::Error::other("the opener already refused this model"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

//! The crate's one error type.
//!
//! Messages name causes and carry only public values (lengths, indices, digests, key ids, paths of
//! the owner's own keystore). No variant can hold key bytes or plaintext.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::digest::ModelDigest;
use crate::key::KeyId;

/// Everything that can go wrong while sealing, opening or parsing a sealed model, or while using
/// the keystore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the sealed-model magic `CLSTRSEAL`.
    #[error("not a Cloister sealed model (bad magic)")]
    BadMagic,

    /// The header's format version is not one this library reads.
    #[error(
        "unsupported sealed-model format version {found} (this library reads version {supported})"
    )]
    UnsupportedVersion {
        /// Version found in the header.
        found: u16,
        /// The version this library reads and writes.
        supported: u16,
    },

    /// The header names a cipher this library does not know.
    #[error("unsupported cipher id {found} in sealed-model header")]
    UnsupportedCipher {
        /// Cipher id byte found in the header.
        found: u8,
    },

    /// The chunk size is outside the allowed bounds.
    #[error("chunk size {found} is outside the allowed range {min}..={max}")]
    InvalidChunkSize {
        /// Chunk size found (or requested).
        found: u32,
        /// Smallest allowed chunk size.
        min: u32,
        /// Largest allowed chunk size.
        max: u32,
    },

    /// The model name is empty.
    #[error("model name is empty")]
    NameEmpty,

    /// The model name is longer than the format allows.
    #[error("model name is {len} bytes long; at most {max} bytes of UTF-8 are allowed")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
        /// Maximum length in bytes.
        max: usize,
    },

    /// The model name is not valid UTF-8.
    #[error("model name is not valid UTF-8")]
    NameNotUtf8,

    /// The model name contains a control character.
    #[error("model name contains a control character")]
    NameHasControlChar,

    /// The plaintext is too long to be counted by the 32-bit chunk counter at this chunk size.
    #[error(
        "a plaintext of {plaintext_len} bytes needs more than 2^32 chunks of {chunk_size} bytes"
    )]
    TooManyChunks {
        /// Plaintext length.
        plaintext_len: u64,
        /// Chunk size.
        chunk_size: u32,
    },

    /// The input ended early.
    #[error("sealed model is truncated: {at}")]
    Truncated {
        /// Where the input ended.
        at: Part,
    },

    /// Bytes follow the last chunk.
    #[error("sealed model has trailing data after its last chunk")]
    TrailingData,

    /// A chunk failed authentication: it was modified, dropped, reordered, duplicated, sealed under
    /// another key, or the header it is bound to was modified.
    #[error(
        "chunk {index} failed authentication (modified, reordered, dropped, or header changed)"
    )]
    ChunkAuthFailed {
        /// Zero-based index of the chunk.
        index: u32,
    },

    /// The sealed model was made for another key.
    #[error("wrong key: the sealed model was made for key id {expected_key_id}, the key supplied has id {found}")]
    WrongKey {
        /// The key id recorded in the header.
        expected_key_id: KeyId,
        /// The id of the key that was supplied.
        found: KeyId,
    },

    /// The header names a model other than the one the caller expects (checked before any
    /// decryption).
    #[error("sealed model is {found}, but {expected} was expected")]
    UnexpectedModel {
        /// The digest the caller expects.
        expected: ModelDigest,
        /// The digest named by the header.
        found: ModelDigest,
    },

    /// The decrypted plaintext does not hash to the digest in the header.
    #[error("plaintext digest mismatch: header says {expected}, plaintext hashes to {found}")]
    DigestMismatch {
        /// The digest in the header.
        expected: ModelDigest,
        /// The digest of the decrypted plaintext.
        found: ModelDigest,
    },

    /// The plaintext is larger than the caller allows (or than this platform can address).
    #[error("plaintext of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Plaintext length from the header.
        len: u64,
        /// The caller's limit.
        max: u64,
    },

    /// Memory for the plaintext could not be reserved.
    #[error("could not reserve {len} bytes for the plaintext")]
    OutOfMemory {
        /// Bytes requested.
        len: u64,
    },

    /// The plaintext source changed (length or content) between the hashing pass and the sealing
    /// pass; the output must be discarded.
    #[error("the plaintext changed while it was being sealed; discard the output")]
    SourceChanged,

    /// A string is not a model digest of the form `sha384:<96 lowercase hex digits>`.
    #[error("invalid model digest: expected `sha384:` followed by 96 lowercase hex digits")]
    InvalidDigest,

    /// The random number generator failed.
    #[error("the random number generator failed")]
    Rng,

    /// The cryptographic library refused an operation that cannot fail with valid inputs.
    #[error("cryptographic operation failed")]
    Crypto,

    /// An I/O error while reading or writing a sealed model.
    #[error("I/O error")]
    Io(#[from] io::Error),

    /// A keystore error.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
}

/// The part of a sealed model in which the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// Inside the header.
    Header,
    /// Inside (or before) a chunk.
    Chunk {
        /// Zero-based index of the chunk.
        index: u32,
        /// Number of chunks the header announces.
        count: u64,
    },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Header => f.write_str("in the header"),
            Part::Chunk { index, count } => write!(f, "in chunk {index} of {count}"),
        }
    }
}

/// Errors of the model owner's keystore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// `Keystore::create` found the directory already there.
    #[error("keystore directory {path} already exists")]
    DirectoryExists {
        /// The directory.
        path: PathBuf,
    },

    /// The keystore path is not a directory.
    #[error("keystore path {path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// A keystore directory or key file is accessible to group or others.
    #[error("{path} has mode {mode:04o}; group and other permission bits must be clear")]
    InsecurePermissions {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key for this model is already stored; keys are never overwritten.
    #[error("a key for {digest} is already in the keystore; refusing to overwrite it")]
    KeyExists {
        /// The model digest.
        digest: ModelDigest,
    },

    /// No key is stored for this model.
    #[error("no key for {digest} in the keystore")]
    KeyNotFound {
        /// The model digest.
        digest: ModelDigest,
    },

    /// The key file is a symbolic link or not a regular file.
    #[error("key file {path} is not a regular file")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },

    /// The key file's contents are not a valid key file.
    #[error("key file {path} is malformed: {problem}")]
    MalformedKeyFile {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        problem: KeyFileProblem,
    },

    /// An I/O error on a keystore path.
    #[error("keystore I/O error on {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What is wrong with a malformed key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileProblem {
    /// The file does not have the length of a version 1 key file.
    #[error("length {found} bytes, expected {expected}")]
    BadLength {
        /// Length found.
        found: u64,
        /// Length expected.
        expected: u64,
    },
    /// The file does not start with `CLSTRKEY`.
    #[error("bad magic")]
    BadMagic,
    /// The key file format version is unknown.
    #[error("unsupported key file version {found}")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
    },
    /// The digest inside the file is not the one its name says (the file was renamed or copied).
    #[error("the digest inside the file does not match its name")]
    DigestMismatch,
}

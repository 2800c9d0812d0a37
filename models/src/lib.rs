//! Cloister sealed models: the sealed-model format and the model owner's keystore.
//!
//! Who runs it: the model owner (`cloister seal`, the key broker's keystore), the enclave (opening a released
//! model), and the host (reading public headers only, without the `sealing` feature). Secrets it may hold,
//! with the `sealing` feature: model keys ([`ModelKey`], zeroized on drop) and plaintext models while they are
//! sealed or opened. Without it: none (the header is public).
//!
//! A model owner seals an ONNX model under a fresh [`ModelKey`] ([`seal`], [`seal_file`]) and
//! files the key under the model's [`ModelDigest`] in a [`Keystore`]. The sealed blob may be
//! stored anywhere, including on the untrusted host. An attested enclave that was released the
//! key opens it with [`open_expecting`] (or [`Opener`], bytes pushed as they arrive), which authenticates every byte and checks the model is
//! the one the key was released for. The byte-level format is specified in
//! `docs/sealed-format.md`.
//!
//! Trust assumptions:
//! - Sealed bytes (header included) come from the untrusted host: every parser is strict, every
//!   size is bounded by the caller before allocation, every byte is authenticated before the
//!   plaintext is released, and no error carries plaintext.
//! - Keys are secrets: [`ModelKey`] is zeroized on drop, has no `Clone`/`Serialize`, and its
//!   `Debug` prints nothing. Its public [`KeyId`] is a one-way function of it.
//! - Not covered: ring does not zeroize its internal state (AES key schedule, hash buffers), and
//!   safe Rust cannot scrub stack residue; micro-architectural side channels are out of scope
//!   (see the design's threat model).
#![forbid(unsafe_code)]

mod digest;
mod error;
mod header;
mod key;
#[cfg(feature = "sealing")]
mod keystore;
#[cfg(feature = "sealing")]
mod open;
#[cfg(feature = "sealing")]
mod stream;

pub use crate::digest::{ModelDigest, DIGEST_LEN};
pub use crate::error::{Error, KeyFileProblem, KeystoreError, Part};
pub use crate::header::{
    read_header, Cipher, SealedHeader, DEFAULT_CHUNK_SIZE, FIXED_HEADER_LEN, FORMAT_VERSION,
    HEADER_HASH_LEN, MAGIC, MAX_CHUNK_SIZE, MAX_HEADER_LEN, MAX_NAME_LEN, MAX_PLAINTEXT_LEN,
    MIN_CHUNK_SIZE, NONCE_PREFIX_LEN, TAG_LEN,
};
pub use crate::key::{KeyId, ModelKey, KEY_ID_LEN, KEY_LEN};
#[cfg(feature = "sealing")]
pub use crate::keystore::Keystore;
#[cfg(feature = "sealing")]
pub use crate::open::{open, open_expecting, Opener, Plaintext};
#[cfg(feature = "sealing")]
pub use crate::stream::{seal, seal_file, Phase, Progress};

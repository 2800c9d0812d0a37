//! The publishing side of provenance: what a model producer and a release operator run, holding their
//! private signing keys (and nothing a client or model owner must keep secret).
//!
//! - [`sign`]: `cloister sign`, OpenSSF model signing with an ECDSA key: hashes a model's files, writes
//!   the in-toto statement and the Sigstore bundle the reference `model_signing` verifier accepts.
//! - [`log`]: `cloister log`, the append-only release log: entries on disk, a checkpoint signed with the
//!   log's Ed25519 key after every append, inclusion proofs for clients and consistency proofs for
//!   witnesses (formats in `cloister_provenance::tlog`).
//!
//! Verification lives in `cloister-provenance`, which holds no key; this crate verifies its own output
//! with it before writing anything.

mod error;
pub mod log;
pub mod sign;

pub use error::Error;

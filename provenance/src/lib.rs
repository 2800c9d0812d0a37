//! Model provenance: who produced a model, checked before it is sealed and again before the enclave
//! loads it.
//!
//! Producers sign models with the OpenSSF model-signing format (`model_signing` on PyPI): a Sigstore
//! bundle (JSON, media type `application/vnd.dev.sigstore.bundle.v0.3+json`) whose DSSE envelope carries
//! an in-toto statement. The statement's predicate lists every file of the model with its SHA-256; its
//! one subject carries the *root digest*, SHA-256 over the file digests in (sorted) order.
//!
//! This crate verifies such a bundle against the signer keys a policy pins ([`SignerKey`], ECDSA P-256
//! or P-384, the curves `ring` verifies), and then checks the model's actual bytes against the signed
//! digests, naming the first file that differs ([`VerifiedManifest::check_files`]). It has no I/O and
//! holds no secret: a signature and a public key are public values, and file bytes are only hashed.
//!
//! The release log ([`release`]) is an append-only Merkle log of what was released (enclave
//! measurements, models with their signers, broker policies); [`tlog`] holds its RFC 6962 proofs and C2SP
//! signed checkpoints, the formats Rekor speaks, so a client checks inclusion offline against a pinned key.
//!
//! Keyless bundles ([`keyless`]: a Fulcio certificate naming an identity, and a Rekor entry with its
//! inclusion proof) are verified offline against a pinned Sigstore trusted root and allowed identities.

mod bundle;
mod error;
mod key;
pub mod keyless;
mod manifest;
pub mod release;
mod signed_model;
pub mod tlog;

pub use bundle::{
    pae, verify_bundle, verify_bundle_with, Trust, IN_TOTO_PAYLOAD_TYPE, MAX_BUNDLE_LEN,
    MEDIA_TYPES,
};
pub use error::Error;
pub use key::{Curve, SignerId, SignerKey};
pub use manifest::{VerifiedManifest, PREDICATE_TYPE, STATEMENT_TYPE};
pub use signed_model::{SignedModel, SIGNED_MODEL_MAGIC};

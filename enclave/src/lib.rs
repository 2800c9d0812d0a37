//! Cloister enclave library: everything that runs inside the confidential VM (binary `cloister-enclave`).
//!
//! Who runs it: the confidential VM (or, with `insecure-simulator`, a local process on the simulated
//! platform). Secrets it holds: released model keys (until the model is opened), plaintext weights (in tract),
//! its TLS private keys, and the clients' inputs and outputs while requests run. Nothing of these leaves it:
//! the host sees ciphertext, logs are capped, errors are narrow.
//!
//! Trust assumptions (DESIGN §1, `docs/architecture.md`):
//! - The measured configuration ([`config`]) is trusted: a verifier that accepts the launch measurement
//!   accepts it (its digest is in every claim). Launch arguments are not: they only say where bytes flow.
//! - The host is untrusted: the sealed blobs it serves ([`blobs`]) are checked (header digest before
//!   decryption, AEAD, plaintext digest), and the client connections it relays are TLS end to end.
//! - The key broker is authenticated by the certificate pinned in the configuration (`cloister_proto::tls::danger`,
//!   [`key_release`]); the model key it releases is zeroized after the model is opened.
//! - Clients are untrusted until they have attested us; they attest inside their own TLS session
//!   ([`server`]: evidence bound to the connection's exporter), so evidence cannot be relayed.
//! - The governance state the host stores for us ([`state`]: budgets, the audit chain's head) is sealed
//!   under a key derived from a model key, and only the blob the key broker anchored is accepted.
//! - Inputs, outputs, keys and plaintext are never logged; errors sent out are narrow.
#![forbid(unsafe_code)]

pub mod blobs;
pub mod config;
pub mod error;
pub mod firmware;
pub mod governance;
pub mod key_release;
pub mod metrics;
pub mod pool;
pub mod provenance;
pub mod runtime;
pub mod server;
pub mod state;

pub use error::Error;

/// The inference engine: crate `cloister-inference`, which `cloister seal`'s model check shares, so that a
/// model that seals is a model the enclave loads.
pub use cloister_inference as inference;

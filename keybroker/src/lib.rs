//! The model owner's key broker: releases a model key only to an enclave whose evidence satisfies the
//! owner's policy, is fresh (a nonce the broker just drew), bound to this TLS connection (its RFC 8446
//! §7.5 exporter) and names the requested model.
//!
//! Who runs it: the model owner, on a machine of their own, facing the network (`cloister keybroker`
//! starts it). Secrets it holds: **every model key** of its keystore (read for one grant, wrapped, zeroized)
//! and its TLS private key. Nothing else in the workspace depends on it: the enclave and the host never link
//! it.
//!
//! The protocol is `cloister_proto::key_release`: a sans-IO state machine ([`BrokerConnection`]) that owns the
//! order of messages, the nonces and the wrapping. This crate adds what only the owner has — the policy,
//! the keystore, the audit log — and the network around it:
//!
//! ```text
//! enclave → broker  KeyRequest { version: 1, model_digest }
//! broker  → enclave Challenge  { nonce }                         32 bytes from the system RNG, single use
//! enclave → broker  Attest     { evidence }                      claims: nonce, exporter, X25519 key, [digest]
//! broker  → enclave Granted    { broker_public, wrapped_key }  | Refused { code }
//! ```
//!
//! `Refused { UnknownModel }` is only ever sent to evidence that verified: an unauthenticated peer cannot
//! learn which models the broker holds keys for. Several exchanges may follow one another on one connection
//! (one per model); each draws its own nonce.
//!
//! Trust assumptions:
//! - Every byte from the network may come from an attacker (the host relays the enclave's connection):
//!   frames are bounded, every read has a timeout, a connection has an overall deadline, and connections are
//!   bounded in total and per source address, so a silent or slow peer holds at most a few slots for a while.
//! - The policy, the simulated root (if any), the keystore and the TLS identity are the owner's own files.
//!   The simulated root comes only from the policy, never from the evidence. A policy that pins no workload
//!   identity is refused at start unless it says `allow_any_workload = true`.
//! - Keys: read from the keystore for one grant, wrapped to the attested enclave's key
//!   ([`cloister_proto::key_release::wrap_model_key`] takes the verified evidence), and dropped (zeroized).
//!   They are never logged.
//!
//! Every decision about verified evidence (a grant, or a policy refusal of genuine, fresh evidence) is one
//! JSON line in an append-only audit log ([`audit`]), written *before* the answer is sent: a key is never
//! released without its audit line. Refusals of peers whose evidence did not verify, and their broken
//! connections, are counted per source address and written as one summary line per address per interval
//! ([`peers`]). The wire carries only the coarse refusal code; the precise reason stays in the log.
#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

use cloister_attestation::policy::NoWorkloadPin;
use cloister_models::Error as ModelsError;

mod anchors;
pub mod audit;
pub mod config;
mod exchange;
mod nonces;
pub mod peers;
mod server;
mod shared;

pub use audit::{AuditRecord, AuditSummary};
pub use cloister_proto::key_release::BrokerConnection;
pub use config::{
    certificate_sha256, generate_tls_identity, BrokerConfig, CollateralConfig, Limits,
    CERTIFICATE_NAME,
};
pub use server::{BoundBroker, KeyBroker};

/// The crate's one error: starting the broker (configuration, files). Per-connection problems are not errors of the
/// broker: they end that connection and are reported on stderr or in the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is unreadable or invalid.
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The policy or its simulated root could not be loaded.
    #[error(transparent)]
    Policy(#[from] cloister_collateral::Error),
    /// The keystore could not be opened.
    #[error("keystore: {0}")]
    Keystore(#[source] ModelsError),
    /// The TLS certificate or key is missing, unreadable, or unusable.
    #[error("{path}: {reason}")]
    Tls {
        /// The file (certificate or key).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The audit log cannot be opened for appending, or is readable by others.
    #[error("audit log {path}: {reason}")]
    AuditLog {
        /// The log file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Binding or accepting on the listening socket failed.
    #[error("listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The system RNG failed.
    #[error("the system random number generator failed")]
    Rng,
    /// `[models."sha384:…"]` names a model whose key the keystore does not hold (a typo would leave the
    /// intended model under the default policy).
    #[error(
        "[models.\"{digest}\"] (policy {}): the keystore {} holds no key for this model; a mistyped \
         digest would leave the intended model under the default policy",
        policy.display(),
        keystore.display()
    )]
    ModelPolicyWithoutKey {
        /// The digest the configuration names.
        digest: String,
        /// Its policy file.
        policy: PathBuf,
        /// The keystore directory.
        keystore: PathBuf,
    },
    /// The owner's policy pins no workload identity: the broker would release keys to any code.
    #[error("{path}: {source}")]
    NoWorkloadPin {
        /// The policy file.
        path: PathBuf,
        /// Which pins are missing.
        source: NoWorkloadPin,
    },
}

//! Key release between an enclave and the model owner's key broker (see `docs/architecture.md`).
//!
//! ```text
//! enclave → broker  KeyRequest { version, model_digest, state }   state: None | Open{label} | Commit{…}
//! broker  → enclave Challenge  { nonce }                      fresh, single use
//! enclave → broker  Attest     { evidence }                   claims: nonce, exporter, X25519 key, [digest]
//! broker  → enclave Granted    { broker_public, wrapped_key, anchor }   (no state request, or Open)
//!                 | Committed  { anchor }                              (Commit: no key is released)
//!                 | Refused    { code }
//! ```
//!
//! **Durable state** (issue 21, item 4). The enclave's governance state (client budgets, the audit chain's
//! head) is sealed inside the enclave and stored by the untrusted host. The broker keeps, per attested
//! enclave identity and instance label, an anchor: the version and SHA-384 of the latest state blob the
//! enclave committed. `Open` returns the anchor with the key, so a restarted enclave accepts only that
//! blob (a host that hands back an older one is caught); `Commit` advances it by exactly one version.
//! Both ride on an attested exchange: the request travels on the TLS connection whose exporter the
//! evidence binds, so only an enclave the owner's policy accepts can read or move an anchor.
//!
//! Wrapping (both directions use ring only):
//! ```text
//! shared      = X25519(broker_ephemeral, enclave_public)
//! prk         = HKDF-SHA384-Extract(salt = nonce, ikm = shared)
//! kek         = HKDF-SHA384-Expand(prk, "cloister-key-wrap-v1" || model_digest || enclave_public
//!                                        || broker_public, 32)
//! wrapped_key = AES-256-GCM(kek, nonce = 0^12, aad = model_digest, model_key)   // 32 + 16 bytes
//! ```
//! The all-zero AEAD nonce is safe because each KEK is used exactly once: both X25519 keys are ephemeral
//! and the broker's nonce is fresh. Binding the digest and both public keys into the KEK means a wrapped
//! key cannot be replayed for another model or another enclave key.
//!
//! Sans-IO: the protocol is two state machines, bytes in and bytes out, with the RNG and the clock passed
//! in ([`BrokerConnection`] for the broker, [`EnclaveExchange`] for the enclave). They own the order of
//! messages, the nonces and the wrapping; the callers own the sockets, the timeouts, the firmware, the
//! policy and the keystore. A key is wrapped only by [`wrap_model_key`], which takes the
//! [`VerifiedEvidence`](cloister_attestation::evidence::VerifiedEvidence) that only verification
//! constructs: code that skipped verification does not compile.

mod broker;
mod enclave;
mod frames;
mod wrap;

pub use broker::{AttestToVerify, BrokerConnection, BrokerEvent};
pub use enclave::{EnclaveEvent, EnclaveExchange};
pub use frames::FrameReader;
pub use wrap::{wrap_model_key, EnclaveKeyPair};

/// The verifier's clock, injected so that the machines and their tests do not read the system time.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch, UTC.
    fn now_unix(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

use cloister_attestation::evidence::{Evidence, Sha384};
use serde::{Deserialize, Serialize};

/// Protocol version carried in [`EnclaveToBroker::KeyRequest`] (2: durable-state anchors).
pub const PROTOCOL_VERSION: u16 = 2;
/// Longest instance label of a durable state.
pub const MAX_STATE_LABEL: usize = 64;

/// What an exchange asks about the enclave's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateRequest {
    /// The enclave starts: release the key and say which state blob is the latest (the anchor).
    Open {
        /// The instance's label (`[a-z0-9-]`, 1 to [`MAX_STATE_LABEL`] characters, not starting with `-`).
        label: String,
    },
    /// The enclave sealed `version` of its state (SHA-384 of the blob: `digest`): advance the anchor to it.
    /// No key is released.
    Commit {
        /// The instance's label.
        label: String,
        /// The new version: the anchor's plus one.
        version: u64,
        /// SHA-384 of the sealed blob.
        digest: Sha384,
    },
}

impl StateRequest {
    /// The instance label.
    pub fn label(&self) -> &str {
        match self {
            StateRequest::Open { label } | StateRequest::Commit { label, .. } => label,
        }
    }
}

/// Whether `label` is a well-formed instance label: it names a file on the host and a key at the broker.
pub fn is_valid_state_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_STATE_LABEL
        && !label.starts_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The broker's record of an instance's latest committed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateAnchor {
    /// The latest committed version; 0: nothing committed yet (the enclave starts from empty state).
    pub version: u64,
    /// SHA-384 of that version's blob; `None` with version 0.
    pub digest: Option<Sha384>,
}
/// HKDF info prefix for the key-encryption key.
pub const KEY_WRAP_INFO: &[u8] = b"cloister-key-wrap-v1";
/// Length of a wrapped model key: 32-byte key + 16-byte GCM tag.
pub const WRAPPED_KEY_LEN: usize = 32 + 16;

/// Messages from the enclave to the key broker.
// One message lives at a time, briefly; boxing the evidence would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnclaveToBroker {
    /// Opens the exchange: which model's key is wanted.
    KeyRequest {
        /// [`PROTOCOL_VERSION`].
        version: u16,
        /// SHA-384 of the plaintext model.
        model_digest: Sha384,
        /// The durable-state operation riding on this exchange, if any.
        state: Option<StateRequest>,
    },
    /// Evidence answering the challenge.
    Attest {
        /// The evidence; its claims carry the nonce, exporter, X25519 key and digest.
        evidence: Evidence,
    },
}

/// Why the broker refused. Deliberately coarse: the detailed reason is written to the broker's audit
/// log, not sent to a party that may be an attacker probing the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The request was malformed or of an unsupported version.
    BadRequest,
    /// The broker holds no key for this model.
    UnknownModel,
    /// The evidence failed verification (chain, signature, binding).
    EvidenceRejected,
    /// The evidence is genuine but the model owner's policy does not allow this enclave.
    PolicyRejected,
    /// The nonce was already used or never issued.
    Replay,
    /// The broker failed internally.
    Internal,
    /// Too many releases of this model's key in the broker's window (each enclave start is one).
    RateLimited,
    /// A state commit that is not the anchor's next version (another instance, or a replay).
    StateConflict,
}

/// Messages from the key broker to the enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrokerToEnclave {
    /// A fresh nonce the evidence must carry.
    Challenge {
        /// 32 random bytes.
        nonce: [u8; 32],
    },
    /// The model key, wrapped to the enclave's X25519 key.
    Granted {
        /// The broker's ephemeral X25519 public key.
        broker_public: [u8; 32],
        /// AES-256-GCM of the model key under the derived KEK.
        wrapped_key: Vec<u8>,
        /// With [`StateRequest::Open`]: the instance's anchor.
        anchor: Option<StateAnchor>,
    },
    /// A [`StateRequest::Commit`] was recorded: the new anchor.
    Committed {
        /// The anchor now.
        anchor: StateAnchor,
    },
    /// No key.
    Refused {
        /// Why, coarsely.
        code: RefusalCode,
    },
}

#[cfg(test)]
pub(crate) mod tests;

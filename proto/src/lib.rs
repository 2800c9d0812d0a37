//! Cloister wire protocol: length-prefixed postcard frames, the key-release messages between an enclave
//! and a key broker, the wrapping of a model key to an enclave's ephemeral X25519 key, and the TLS every
//! Cloister connection uses ([`tls`]: provider, TLS 1.3, the exporter, the verifiers that do not chain to a CA),
//! and the attestation that opens every client session ([`session_attestation`], sans-IO like key release).
//!
//! Who runs it: the enclave and the key broker (the two ends of key release), and the client (its TLS). Secrets it may hold: a model
//! key while it wraps or unwraps it, and the enclave's ephemeral X25519 private key for one exchange.
//!
//! Everything read here comes from a peer that may be hostile (a compromised enclave talking to the
//! broker, the network, the host relaying bytes): frames are bounded before any allocation, decoding never
//! panics, and unknown trailing bytes are errors.
//!
//! The contract is written down in `docs/architecture.md` ("Key release").
#![forbid(unsafe_code)]

pub mod frame;
pub mod key_release;
pub mod session_attestation;
pub mod tls;

/// Errors of the wire layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer announced a frame larger than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The connection closed in the middle of a frame, or before one arrived.
    #[error("connection closed before a complete frame")]
    UnexpectedEof,
    /// A frame's payload does not decode as the expected message.
    #[error("malformed {what} message")]
    Malformed {
        /// Which message was expected.
        what: &'static str,
    },
    /// The peer sent a message that is not valid at this step of the protocol.
    #[error("unexpected message: expected {expected}")]
    UnexpectedMessage {
        /// What was expected.
        expected: &'static str,
    },
    /// Key wrapping or unwrapping failed (bad public key, authentication failure of the wrapped key).
    #[error("key wrap: {0}")]
    KeyWrap(&'static str),
    /// Transport error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Rng,
    /// A client's attestation request does not parse (`{"nonce": "<64 hex>"}` and nothing else).
    #[error("malformed attestation request: {0}")]
    MalformedRequest(String),
    /// The enclave answered the attestation request with an error status.
    #[error("enclave answered {status}: {message}")]
    EnclaveStatus {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The enclave's answer is not evidence.
    #[error("attestation response has content type {found:?}, expected {expected}")]
    UnexpectedContentType {
        /// The content type that came.
        found: Option<String>,
        /// [`cloister_kserve::EVIDENCE_CONTENT_TYPE`].
        expected: &'static str,
    },
    /// The evidence does not decode, or does not verify (chain, signature, binding, policy). Boxed: it is
    /// large, and every result of this crate carries this enum.
    #[error(transparent)]
    Evidence(Box<cloister_attestation::Error>),
}

impl From<cloister_attestation::Error> for Error {
    fn from(e: cloister_attestation::Error) -> Self {
        Error::Evidence(Box::new(e))
    }
}

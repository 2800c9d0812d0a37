//! The attestation that opens every client session, sans-IO: the client's and the enclave's halves as pure
//! functions of bytes, as [`key_release`](crate::key_release) is. The callers own the TLS connection, the
//! HTTP exchange, the firmware and the collateral fetch; these types own the order of the steps, the nonce,
//! the binding to the connection's exporter and the formats.
//!
//! ```text
//! client                                                  enclave
//! TLS 1.3, any certificate (tls::danger::AttestedServer)  ephemeral self-signed certificate
//! E = TLS-Exporter(EXPORTER_LABEL, no context, 32)        the same E, from its side of the connection
//! ClientAttestation::start(rng, E)
//!   -> POST ATTESTATION_PATH {"nonce": N}       ───────►  EnclaveAttestation::receive(body, E) -> ToAttest
//!                                                         evidence whose claims carry N and E
//!                                               ◄───────  ToAttest::answer(&evidence) -> Answer (postcard)
//! ClientAttestation::receive(status, type, body) -> ReceivedEvidence
//!   missing_vcek() -> Some(report)? the caller fetches the VCEK into chain_mut()
//! ReceivedEvidence::verify(policy, options) -> Attested      (the proof; nothing is sent before it)
//! ```
//!
//! [`Attested`] is the proof a session holds: only [`ReceivedEvidence::verify`] makes one, so code that did
//! not verify evidence bound to this connection's exporter and to a nonce it drew cannot hold one. The
//! certificate verifier that accepts any server certificate is reachable only through
//! [`client_tls_config`], whose connections are meant for this handshake.

mod client;
mod enclave;
#[cfg(test)]
mod tests;

pub use client::{client_tls_config, Attested, ClientAttestation, ReceivedEvidence};
pub use enclave::{Answer, EnclaveAttestation, ToAttest};

/// The path of the attestation request (an HTTP `POST` on the attested connection, body
/// [`AttestationRequest`](cloister_kserve::AttestationRequest), content type
/// [`JSON_CONTENT_TYPE`](cloister_kserve::JSON_CONTENT_TYPE)); the answer is
/// [`EVIDENCE_CONTENT_TYPE`](cloister_kserve::EVIDENCE_CONTENT_TYPE), postcard.
pub const ATTESTATION_PATH: &str = "/v2/attestation";
/// Largest attestation request body an enclave reads (`{"nonce": "<64 hex>"}` is 76 bytes).
pub const MAX_REQUEST_LEN: usize = 4096;

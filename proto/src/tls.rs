//! TLS for every Cloister connection, in one place (issue 22, item 3): the ring provider, TLS 1.3 only,
//! the channel-binding exporter, and the three certificate verifiers that do not chain to a CA
//! ([`danger`]). The enclave (its server and its key-release client), the key broker and the client
//! session all build their configurations here, so that a change of provider, version or exporter is one
//! change.
//!
//! ```text
//! provider  rustls' ring provider                      (no aws-lc, no OpenSSL: CI checks the tree)
//! versions  TLS 1.3 only
//! exporter  TLS-Exporter("EXPERIMENTAL-cloister-attestation", no context, 32)    RFC 8446 §7.5, RFC 5705 §4
//! ```
//! The exporter binds attestation evidence to one TLS connection: a relay that terminates TLS has another
//! exporter on each leg, so evidence it forwards does not verify.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ConfigBuilder, ConnectionCommon, ServerConfig, WantsVerifier};

pub mod danger;

/// The exporter label (RFC 5705 §4: a label outside IANA's registry starts with `EXPERIMENTAL-`).
pub use cloister_attestation::evidence::TLS_EXPORTER_LABEL as EXPORTER_LABEL;

/// The crypto provider of every Cloister TLS connection: rustls' ring provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration builder with [`provider`] and TLS 1.3 only; the caller picks the verifier.
pub fn client_builder() -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, rustls::Error> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
}

/// A server configuration builder with [`provider`] and TLS 1.3 only; the caller picks client auth.
pub fn server_builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, rustls::Error> {
    ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
}

/// This connection's exporter ([`EXPORTER_LABEL`], no context, 32 bytes), which attestation evidence on
/// it carries in its claims. Both ends compute the same value; a TLS-terminating relay cannot.
pub fn exporter<C, D>(connection: &C) -> Result<[u8; 32], rustls::Error>
where
    C: std::ops::Deref<Target = ConnectionCommon<D>>,
{
    connection.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
}

//! The one place where the enclave authenticates a TLS server without a CA: the key broker, by pin.
//!
//! Why this is safe: the enclave's **measured** configuration carries the SHA-256 of the broker's DER
//! certificate (`key_broker.certificate_sha256`). A certificate with that exact hash is the only one
//! accepted, whatever names, dates or issuers it carries: pinning one known certificate is stricter than
//! any chain to a CA, and it is what the model owner attested to when they accepted this measurement. The
//! TLS 1.3 CertificateVerify signature is still checked with the pinned certificate's key (rustls'
//! `verify_tls13_signature` with the ring provider's algorithms), so the peer must hold its private key.
//! TLS 1.2 is never negotiated (the client configuration offers TLS 1.3 only) and is refused here too.
//!
//! Nothing else in the enclave may use [`PinnedCertificate`]; `key_release` is its only caller.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, PeerIncompatible, SignatureScheme,
};

/// Accepts exactly the server certificate whose SHA-256 is the pin.
pub struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for PinnedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedCertificate")
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

impl PinnedCertificate {
    /// A verifier for the certificate with SHA-256 `sha256`, checking signatures with `provider`'s
    /// algorithms.
    pub fn new(sha256: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        PinnedCertificate { sha256, provider }
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        // Constant time: the presented certificate is attacker-chosen.
        if cloister_attestation::ct_eq(got.as_ref(), &self.sha256) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // `cert` is the end-entity certificate `verify_server_cert` accepted by its pin.
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

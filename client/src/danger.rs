//! The one place where the client does not authenticate a TLS server by its certificate.
//!
//! Why this is safe here, and only here: the enclave's certificate is ephemeral and self-signed, so no CA
//! could vouch for it. The client authenticates the enclave *inside* the session instead: it sends a fresh
//! nonce, receives SEV-SNP evidence whose REPORT_DATA commits to that nonce and to this connection's TLS
//! exporter, and verifies it against its policy before sending anything else. An attacker who terminates
//! TLS (a relay, the host) has a different exporter on each leg, so the evidence it forwards does not bind
//! to the client's session and is rejected.
//!
//! The TLS 1.3 CertificateVerify signature is still checked with the presented key, so the peer holds the
//! private key of the certificate it shows; what is skipped is only the chain to a CA.
//!
//! Never use [`AttestedTlsVerifier`] without verifying evidence bound to the exporter before trusting the
//! connection: `session::AttestedSession::connect` is the only caller.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate chain, but checks the handshake signature with the presented key.
#[derive(Debug)]
pub struct AttestedTlsVerifier {
    provider: Arc<CryptoProvider>,
}

impl AttestedTlsVerifier {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AttestedTlsVerifier { provider }
    }
}

impl ServerCertVerifier for AttestedTlsVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // See the module documentation: authentication is by attestation bound to the exporter.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

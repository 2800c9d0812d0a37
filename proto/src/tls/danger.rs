//! The certificate verifiers that do not chain to a CA, each safe only where its documentation says. They
//! live together so that a reader sees every place Cloister accepts a certificate no CA vouched for, and
//! why:
//!
//! | verifier | who uses it | what authenticates the peer instead |
//! |---|---|---|
//! | `AttestedServer` (crate-private: [`client_tls_config`](crate::session_attestation::client_tls_config)) | the client's attested session | evidence bound to this connection's exporter, verified before anything is sent |
//! | [`PinnedServer`] | the enclave's key-release client | the broker certificate's SHA-256 in the enclave's *measured* configuration |
//! | [`PinnedClients`] | the enclave's server (`[clients]`) | the client certificate's SHA-256 among the measured pins |
//!
//! All three check the TLS 1.3 CertificateVerify signature with the presented key (the peer holds the
//! private key of the certificate it shows) and refuse TLS 1.2.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    PeerIncompatible, SignatureScheme,
};

fn sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    out
}

fn tls12_refused() -> Result<HandshakeSignatureValid, TlsError> {
    // Every Cloister configuration offers TLS 1.3 only; a TLS 1.2 signature is never expected.
    Err(TlsError::PeerIncompatible(
        PeerIncompatible::Tls12NotOffered,
    ))
}

/// The client's attested session: accepts any server certificate, since the enclave's is ephemeral and
/// self-signed and no CA could vouch for it. The client authenticates the enclave *inside* the session: it
/// sends a fresh nonce and verifies SEV-SNP evidence whose REPORT_DATA commits to that nonce and to this
/// connection's exporter before it sends anything else. Never use it without that check.
///
/// Crate-private: reachable only through
/// [`session_attestation::client_tls_config`](crate::session_attestation::client_tls_config), next to the
/// handshake that makes it safe.
#[derive(Debug)]
pub(crate) struct AttestedServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AttestedServer {
    /// A verifier using `provider`'s signature algorithms.
    pub(crate) fn new(provider: &CryptoProvider) -> Self {
        AttestedServer {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AttestedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // See the type's documentation: authentication is by attestation bound to the exporter.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The enclave's key-release client: accepts exactly the server certificate whose SHA-256 is the pin
/// (`key_broker.certificate_sha256` in the **measured** configuration), whatever names, dates or issuers it
/// carries: pinning one known certificate is stricter than any chain to a CA, and it is what the model
/// owner attested to when they accepted this measurement.
pub struct PinnedServer {
    sha256: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for PinnedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedServer")
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

impl PinnedServer {
    /// A verifier for the certificate with SHA-256 `sha256`, checking signatures with `provider`'s
    /// algorithms.
    pub fn new(sha256: [u8; 32], provider: &CryptoProvider) -> Self {
        PinnedServer {
            sha256,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        // Constant time: the presented certificate is attacker-chosen.
        if cloister_attestation::ct_eq(&sha256(end_entity.as_ref()), &self.sha256) {
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
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        // `cert` is the end-entity certificate `verify_server_cert` accepted by its pin.
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The enclave's server: client certificates by SHA-256 pin (`[clients]` of the measured configuration).
/// The certificate's chain and names are not checked: the pin is the identity; possession is proven by the
/// TLS 1.3 CertificateVerify signature.
#[derive(Debug)]
pub struct PinnedClients {
    pins: Vec<[u8; 32]>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClients {
    /// A verifier for `pins`; `mandatory`: connections without a certificate are refused in the handshake.
    pub fn new(pins: Vec<[u8; 32]>, mandatory: bool, provider: &CryptoProvider) -> Self {
        PinnedClients {
            pins,
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PinnedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let digest = sha256(end_entity.as_ref());
        if self
            .pins
            .iter()
            .any(|p| cloister_attestation::ct_eq(p, &digest))
        {
            Ok(ClientCertVerified::assertion())
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
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cert(bytes: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(bytes.to_vec())
    }

    #[test]
    fn pins_accept_exactly_their_certificate() {
        let provider = crate::tls::provider();
        let (good, bad) = (
            cert(b"the broker's certificate"),
            cert(b"another certificate"),
        );
        let name = ServerName::try_from("x").unwrap();
        let now = UnixTime::now();
        let server = PinnedServer::new(sha256(good.as_ref()), &provider);
        assert!(server
            .verify_server_cert(&good, &[], &name, &[], now)
            .is_ok());
        assert!(server
            .verify_server_cert(&bad, &[], &name, &[], now)
            .is_err());
        let clients = PinnedClients::new(vec![sha256(good.as_ref())], true, &provider);
        assert!(clients.verify_client_cert(&good, &[], now).is_ok());
        assert!(clients.verify_client_cert(&bad, &[], now).is_err());
        assert!(clients.client_auth_mandatory());
        assert!(!PinnedClients::new(vec![], false, &provider).client_auth_mandatory());
        // The attested session's verifier accepts any certificate: the evidence authenticates the enclave.
        let attested = AttestedServer::new(&provider);
        assert!(attested
            .verify_server_cert(&bad, &[], &name, &[], now)
            .is_ok());
        assert!(!attested.supported_verify_schemes().is_empty());
        assert!(format!("{server:?}").contains(&hex::encode(sha256(good.as_ref()))));
    }
}

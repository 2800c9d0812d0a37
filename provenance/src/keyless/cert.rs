//! The signing certificate (Fulcio): parsed with `x509-cert`, its chain's signatures checked with ring,
//! its identity read from the subject alternative name and Fulcio's OIDC-issuer extension.

use std::fmt;

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::root::TrustedRoot;
use super::{keyless, malformed, SignerIdentity};
use crate::{Error, SignerKey};

const EKU_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// Fulcio's OIDC issuer, v2: a DER UTF8String.
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's OIDC issuer, v1 (deprecated): the raw string as the extension value.
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");

/// An X.509 certificate, parsed, with the bytes its signature covers.
#[derive(Clone)]
pub(super) struct ParsedCert {
    tbs: Vec<u8>,
    cert: Certificate,
    key: SignerKey,
}

impl fmt::Debug for ParsedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate {}", self.cert.tbs_certificate.subject)
    }
}

impl ParsedCert {
    /// Parses DER. The certificate must re-encode to the same bytes (DER is canonical), so the TBS the
    /// signature is checked over is the one received.
    pub(super) fn from_der(der: &[u8]) -> Result<Self, Error> {
        let cert =
            Certificate::from_der(der).map_err(|e| malformed("certificate", e.to_string()))?;
        let reencoded = cert
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        if reencoded != der {
            return Err(malformed("certificate", "not in canonical DER".into()));
        }
        let tbs = cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        let key = SignerKey::from_spki_der(&spki_der)
            .map_err(|e| malformed("certificate public key", e.to_string()))?;
        Ok(Self { tbs, cert, key })
    }

    pub(super) fn validity(&self) -> (i64, i64) {
        let v = &self.cert.tbs_certificate.validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (secs(v.not_before), secs(v.not_after))
    }

    pub(super) fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// Whether `issuer` signed this certificate (its names chain too).
    pub(super) fn issued_by(&self, issuer: &ParsedCert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
            && self.cert.signature_algorithm == self.cert.tbs_certificate.signature
            && self.cert.signature.as_bytes().is_some_and(|sig| {
                issuer
                    .key
                    .verifies_with(self.cert.signature_algorithm.oid, &self.tbs, sig)
            })
    }

    pub(super) fn is_ca(&self) -> bool {
        self.extension(BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }
}

/// Step 2: the certificate chains to a certificate authority of `root` valid at `integrated_time`, is
/// valid itself then, and may sign code; returns the identity it names (not yet checked against any
/// policy) and its key.
pub(crate) fn verify_certificate(
    leaf_der: &[u8],
    root: &TrustedRoot,
    integrated_time: i64,
) -> Result<(SignerIdentity, SignerKey), Error> {
    let leaf = ParsedCert::from_der(leaf_der)?;
    let (not_before, not_after) = leaf.validity();
    if !(not_before..=not_after).contains(&integrated_time) {
        return Err(Error::CertificateNotValidAt {
            not_before,
            not_after,
            integrated_time,
        });
    }
    let chained = root.cas.iter().any(|ca| {
        ca.valid.contains(integrated_time)
            && leaf.issued_by(&ca.chain[0])
            && ca
                .chain
                .windows(2)
                .all(|w| w[0].issued_by(&w[1]) && w[1].is_ca())
            && ca.chain[0].is_ca()
            && ca.chain.last().is_some_and(|r| r.issued_by(r))
            && ca.chain.iter().all(|c| {
                let (b, a) = c.validity();
                (b..=a).contains(&integrated_time)
            })
    });
    if !chained {
        return Err(keyless(
            "verificationMaterial.certificate",
            "not issued through a certificate authority of the trusted root valid at the signing time".into(),
        ));
    }
    let code_signing = leaf
        .extension(EKU)
        .and_then(|v| ExtendedKeyUsage::from_der(v).ok())
        .is_some_and(|eku| eku.0.contains(&EKU_CODE_SIGNING));
    if !code_signing {
        return Err(keyless(
            "certificate extendedKeyUsage",
            "does not include code signing".into(),
        ));
    }

    // 3. The identity.
    let san = leaf
        .extension(SAN)
        .and_then(|v| SubjectAltName::from_der(v).ok())
        .and_then(|san| {
            san.0.into_iter().find_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
        })
        .ok_or_else(|| {
            keyless(
                "certificate subjectAltName",
                "no e-mail or URI identity".into(),
            )
        })?;
    let issuer = match leaf.extension(FULCIO_ISSUER_V2) {
        Some(v) => der::asn1::Utf8StringRef::from_der(v)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| {
                malformed(
                    "certificate OIDC issuer (1.3.6.1.4.1.57264.1.8)",
                    e.to_string(),
                )
            })?,
        None => leaf
            .extension(FULCIO_ISSUER_V1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                keyless(
                    "certificate OIDC issuer",
                    "absent (extension 1.3.6.1.4.1.57264.1.8)".into(),
                )
            })?,
    };
    let found = SignerIdentity {
        identity: san,
        issuer,
    };
    Ok((found, leaf.key))
}

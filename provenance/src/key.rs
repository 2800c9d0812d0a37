//! Pinned signer keys and their fingerprints.

use std::fmt;

use const_oid::ObjectIdentifier;
use pem_rfc7468::LineEnding;
use ring::digest::{digest, SHA256};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use spki::SubjectPublicKeyInfoRef;

use crate::Error;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A signer's identity as policies and claims name it: `sha256:<hex>` of the DER
/// SubjectPublicKeyInfo, the same fingerprint `openssl pkey -pubin -outform DER | sha256sum` prints.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignerId(pub [u8; 32]);

impl SignerId {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex_part = s.strip_prefix("sha256:")?;
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut id).ok()?;
        Some(Self(id))
    }
}

impl fmt::Display for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for SignerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The curves verified here: the ones `ring` verifies, and model_signing and Sigstore sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (signs with SHA-256).
    P256,
    /// NIST P-384 (signs with SHA-384).
    P384,
}

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

/// A pinned ECDSA public key (P-256 with SHA-256, or P-384 with SHA-384, as model_signing pairs them).
///
/// P-521, which model_signing also offers, is refused here with a clear error: `ring` does not verify
/// it, and a verifier that cannot check a curve must not accept it.
#[derive(Clone)]
pub struct SignerKey {
    point: Vec<u8>,
    curve: Curve,
    id: SignerId,
    /// SHA-256 of the key's PEM text, hex: model_signing's `publicKey.hint`.
    hint: String,
    /// The key as PEM (LF line endings, 64 columns: the text the hint hashes).
    pem: String,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerKey").field("id", &self.id).finish()
    }
}

/// Two keys are the same key when their SubjectPublicKeyInfo is.
impl PartialEq for SignerKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SignerKey {}

impl SignerKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
            .map_err(|e| Error::BadKey(format!("not PEM: {e}")))?;
        if label != "PUBLIC KEY" {
            return Err(Error::BadKey(format!(
                "PEM label is {label:?}, expected \"PUBLIC KEY\""
            )));
        }
        Self::from_spki_der(&der)
    }

    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let spki = SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| Error::BadKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(Error::BadKey(format!(
                "algorithm {} is not id-ecPublicKey (model_signing signs with ECDSA)",
                spki.algorithm.oid
            )));
        }
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|e| Error::BadKey(format!("EC parameters are not a named curve: {e}")))?;
        let curve = match curve {
            SECP256R1 => Curve::P256,
            SECP384R1 => Curve::P384,
            other => {
                return Err(Error::BadKey(format!(
                    "curve {other} is not supported (P-256 and P-384 are)"
                )))
            }
        };
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::BadKey("public key bit string has unused bits".into()))?
            .to_vec();
        let mut id = [0u8; 32];
        id.copy_from_slice(digest(&SHA256, der).as_ref());
        let pem = pem_rfc7468::encode_string("PUBLIC KEY", LineEnding::LF, der)
            .map_err(|e| Error::BadKey(format!("cannot encode PEM: {e}")))?;
        let hint = hex::encode(digest(&SHA256, pem.as_bytes()));
        Ok(Self {
            point,
            curve,
            id: SignerId(id),
            hint,
            pem,
        })
    }

    /// The key's fingerprint.
    pub fn id(&self) -> SignerId {
        self.id
    }

    /// The key as a PEM `PUBLIC KEY`.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// model_signing's key hint: SHA-256 of the PEM text, hex.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// The key's curve.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// Verifies a DER-encoded ECDSA signature over `message`, hashed as the curve pairs it.
    pub(crate) fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match self.curve {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.point)
            .verify(message, sig)
            .is_ok()
    }

    /// Verifies an X.509 signature by this key, hashed as its algorithm (`ecdsa-with-SHA256` or
    /// `-SHA384`) says; any other algorithm does not verify.
    pub(crate) fn verifies_with(
        &self,
        algorithm: ObjectIdentifier,
        message: &[u8],
        sig: &[u8],
    ) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match (self.curve, algorithm) {
            (Curve::P256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (Curve::P384, ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Curve::P384, ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return false,
        };
        UnparsedPublicKey::new(alg, &self.point)
            .verify(message, sig)
            .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn signer_ids_parse_strictly() {
        let id = SignerId([0xab; 32]);
        assert_eq!(SignerId::parse(&id.to_string()), Some(id));
        assert_eq!(SignerId::parse(&id.to_string().to_uppercase()), None);
        assert_eq!(SignerId::parse("sha256:ab"), None);
        assert_eq!(
            SignerId::parse(&format!("sha384:{}", hex::encode([0xab; 32]))),
            None
        );
    }

    #[test]
    fn keys_other_than_p256_and_p384_are_refused() {
        let p521 = include_str!("../tests/data/p521.pub.pem");
        let err = SignerKey::from_pem(p521).unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
        assert!(SignerKey::from_pem(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
        assert!(SignerKey::from_pem("garbage").is_err());
    }
}

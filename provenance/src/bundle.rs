//! The Sigstore bundle around a model signature, and the DSSE signature check.
//!
//! Accepted shapes: media type v0.3 (or v0.2) JSON and a `dsseEnvelope` with payload type
//! `application/vnd.in-toto+json` and exactly one signature, with either
//! - key-based material (what `model_signing sign key` writes): `verificationMaterial.publicKey` (with or
//!   without a key hint), no certificate, no transparency-log entry; checked against pinned keys; or
//! - keyless material (Sigstore): a `certificate` (or an `x509CertificateChain`, its first certificate
//!   the signer's) and one `tlogEntries` entry with its inclusion proof and promise; checked against a
//!   trusted root and allowed identities (`crate::keyless`).
//!
//! Anything else is refused with the field that differs: a verifier that skipped evidence it cannot check
//! would let a reader believe it had been checked.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use crate::keyless::{self, KeylessPolicy};
use crate::manifest::{self, VerifiedManifest};
use crate::{Error, SignerKey};

/// Upper bound on a signature bundle: a statement lists one line per file, and a model with tens of
/// thousands of files still fits. Bounds what the enclave parses from a sealed plaintext.
pub const MAX_BUNDLE_LEN: usize = 4 * 1024 * 1024;

/// The bundle media types accepted; the first is what `model_signing` 1.x (and `cloister sign`) writes.
pub const MEDIA_TYPES: [&str; 3] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
];
/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: VerificationMaterial,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    public_key: Option<PublicKeyIdentifier>,
    certificate: Option<RawCertificate>,
    x509_certificate_chain: Option<CertificateChain>,
    #[serde(default)]
    tlog_entries: Vec<keyless::TlogEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct CertificateChain {
    certificates: Vec<RawCertificate>,
}

/// What a bundle may be signed by: pinned keys, and (for keyless bundles) a trusted root with the
/// identities allowed to sign under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Producers' public keys (key-based bundles).
    pub keys: Vec<SignerKey>,
    /// The trusted root and allowed identities (keyless bundles); `None`: keyless bundles are refused.
    pub keyless: Option<KeylessPolicy>,
}

impl Trust {
    /// Whether anything is trusted at all (a configuration that names no signer requires none).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self
                .keyless
                .as_ref()
                .is_none_or(|k| k.identities.is_empty())
    }

    /// How many signers are allowed (keys and identities), for messages.
    pub fn len(&self) -> usize {
        self.keys.len() + self.keyless.as_ref().map_or(0, |k| k.identities.len())
    }
}

#[derive(Deserialize)]
struct PublicKeyIdentifier {
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// Verifies a model-signing bundle against the pinned signer keys and returns what it signs.
///
/// The signature must verify under one of `pinned` (the one the key hint names, when the bundle has a
/// hint). The signed statement is then parsed and its root digest recomputed; the model's files are not
/// looked at here (see [`VerifiedManifest::check_files`]).
pub fn verify_bundle(bundle: &[u8], pinned: &[SignerKey]) -> Result<VerifiedManifest, Error> {
    verify_bundle_with(
        bundle,
        &Trust {
            keys: pinned.to_vec(),
            keyless: None,
        },
    )
}

/// Verifies a bundle, key-based or keyless, against `trust`, and returns what it signs. A keyless
/// bundle's signer is its identity ([`crate::keyless::SignerIdentity::id`]).
pub fn verify_bundle_with(bundle: &[u8], trust: &Trust) -> Result<VerifiedManifest, Error> {
    let pinned = trust.keys.as_slice();
    if bundle.len() > MAX_BUNDLE_LEN {
        return Err(Error::BundleTooLarge {
            len: bundle.len(),
            max: MAX_BUNDLE_LEN,
        });
    }
    let parsed: Bundle = serde_json::from_slice(bundle).map_err(|e| Error::Malformed {
        what: "bundle JSON",
        detail: e.to_string(),
    })?;
    if !MEDIA_TYPES.contains(&parsed.media_type.as_str()) {
        return Err(Error::Unsupported {
            field: "mediaType",
            expected: "a Sigstore bundle v0.2 or v0.3 JSON media type",
            found: parsed.media_type,
        });
    }
    let material = parsed.verification_material;
    let leaf = match (&material.certificate, &material.x509_certificate_chain) {
        (Some(c), None) => Some(c),
        (None, Some(chain)) => Some(chain.certificates.first().ok_or(Error::Unsupported {
            field: "verificationMaterial.x509CertificateChain",
            expected: "at least the signing certificate",
            found: "no certificate".into(),
        })?),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(Error::Unsupported {
                field: "verificationMaterial",
                expected: "one of certificate, x509CertificateChain",
                found: "both".into(),
            })
        }
    };
    if leaf.is_some() && material.public_key.is_some() {
        return Err(Error::Unsupported {
            field: "verificationMaterial",
            expected: "a public key or a certificate",
            found: "both".into(),
        });
    }
    if leaf.is_none() && !material.tlog_entries.is_empty() {
        return Err(Error::Unsupported {
            field: "verificationMaterial.tlogEntries",
            expected: "none (key-based bundles carry no log entry this verifier could check)",
            found: format!("{} entries", material.tlog_entries.len()),
        });
    }
    if parsed.message_signature.is_some() {
        return Err(Error::Unsupported {
            field: "messageSignature",
            expected: "a dsseEnvelope (model signatures sign an in-toto statement)",
            found: "messageSignature".into(),
        });
    }
    let envelope = parsed.dsse_envelope.ok_or(Error::Unsupported {
        field: "dsseEnvelope",
        expected: "present",
        found: "absent".into(),
    })?;
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Error::Unsupported {
            field: "dsseEnvelope.payloadType",
            expected: IN_TOTO_PAYLOAD_TYPE,
            found: envelope.payload_type,
        });
    }
    let [signature] = envelope.signatures.as_slice() else {
        return Err(Error::Unsupported {
            field: "dsseEnvelope.signatures",
            expected: "exactly one signature",
            found: format!("{} signatures", envelope.signatures.len()),
        });
    };
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|e| Error::Malformed {
            what: "dsseEnvelope.payload (base64)",
            detail: e.to_string(),
        })?;
    let sig = STANDARD
        .decode(&signature.sig)
        .map_err(|e| Error::Malformed {
            what: "dsseEnvelope.signatures[0].sig (base64)",
            detail: e.to_string(),
        })?;

    if let Some(leaf) = leaf {
        let policy = trust.keyless.as_ref().ok_or(Error::KeylessUnsupported)?;
        let leaf_der = STANDARD
            .decode(&leaf.raw_bytes)
            .map_err(|e| Error::Malformed {
                what: "verificationMaterial.certificate (base64)",
                detail: e.to_string(),
            })?;
        let (identity, key) = keyless::verify(
            &leaf_der,
            &material.tlog_entries,
            &payload,
            &sig,
            &signature.sig,
            policy,
        )?;
        if !key.verifies(&pae(IN_TOTO_PAYLOAD_TYPE, &payload), &sig) {
            return Err(Error::Keyless {
                field: "dsseEnvelope.signatures[0]",
                reason: "the DSSE signature does not verify under the certificate's key".into(),
            });
        }
        return manifest::from_statement(&payload, identity.id())
            .map(|m| m.with_identity(identity));
    }
    // With a hint, only the key it names may verify; without one (model_signing before 1.0), each pinned
    // key is tried.
    let hint = material
        .public_key
        .and_then(|k| k.hint)
        .filter(|h| !h.is_empty());
    let candidates: Vec<&SignerKey> = match &hint {
        Some(h) => pinned.iter().filter(|k| k.hint() == h).collect(),
        None => pinned.iter().collect(),
    };
    if let (Some(h), true) = (&hint, candidates.is_empty()) {
        return Err(Error::UnknownSigner {
            hint: h.clone(),
            pinned: pinned.len(),
        });
    }
    let message = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let signer = candidates
        .into_iter()
        .find(|k| k.verifies(&message, &sig))
        .ok_or(Error::BadSignature {
            pinned: pinned.len(),
        })?;
    manifest::from_statement(&payload, signer.id())
}

/// DSSE's pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`, lengths in
/// ASCII decimal. What is signed, so that a payload cannot be reinterpreted under another type.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {} {} ",
            payload_type.len(),
            payload_type,
            payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests;

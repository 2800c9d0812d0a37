//! Provenance at load: a signed model (`cloister seal --signature`) is checked against the signer keys
//! of its `[[models]]` entry before tract sees a byte of it.
//!
//! The sealed digest already pins the exact plaintext; the signature adds *who produced it*: the model
//! owner's configuration names the producers it trusts (`signer_keys`), and a model whose signature does
//! not verify under one of them, or whose files do not match the signed digests, is refused here, the
//! error naming the file. What was verified (signer, root digest) is kept on the model's slot and logged.

use cloister_inference::llm::{LlmBundle, BUNDLE_MAGIC, ENTRY_NAMES};
use cloister_provenance::{verify_bundle_with, SignedModel, SignerId, Trust};

/// What a verified signature established about a loaded model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The producer's key (`sha256:` of its SubjectPublicKeyInfo).
    pub signer: SignerId,
    /// The signed root digest (model_signing's subject digest), SHA-256 over the file digests.
    pub root_digest: [u8; 32],
}

/// Why a model was refused at load on provenance grounds.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// The configuration requires a signature and the sealed model carries none.
    #[error("provenance: the configuration requires a model signed by one of {0} signer(s), and this model is not signed (seal it with --signature)")]
    Unsigned(usize),
    /// The signature or the files were refused.
    #[error("provenance: {0}")]
    Refused(#[from] cloister_provenance::Error),
    /// The signed payload is an LLM bundle that does not parse, so its files cannot be listed.
    #[error("provenance: the signed LLM bundle does not parse: {0}")]
    Bundle(String),
}

/// Splits a plaintext into the model to load and, when signed and `signers` is not empty, the verified
/// provenance. An unsigned plaintext passes only when no signer is required; a signed one with no
/// signer configured loads on its digest pin alone (nothing to check the signature against).
pub fn check<'a>(
    plaintext: &'a [u8],
    signers: &Trust,
) -> Result<(&'a [u8], Option<Provenance>), ProvenanceError> {
    if !SignedModel::is_signed(plaintext) {
        if signers.is_empty() {
            return Ok((plaintext, None));
        }
        return Err(ProvenanceError::Unsigned(signers.len()));
    }
    let signed = SignedModel::parse(plaintext)?;
    if signers.is_empty() {
        return Ok((signed.model, None));
    }
    let manifest = verify_bundle_with(signed.bundle, signers)?;
    if signed.model.starts_with(&BUNDLE_MAGIC) {
        let bundle =
            LlmBundle::parse(signed.model).map_err(|e| ProvenanceError::Bundle(e.to_string()))?;
        let files: [(&str, &[u8]); 4] = [
            (ENTRY_NAMES[0], bundle.model_onnx()),
            (ENTRY_NAMES[1], bundle.tokenizer_json()),
            (ENTRY_NAMES[2], bundle.chat_template().as_bytes()),
            (ENTRY_NAMES[3], bundle.generation_json()),
        ];
        manifest.check_files(&files)?;
    } else {
        manifest.check_files(&[("model.onnx", signed.model)])?;
    }
    Ok((
        signed.model,
        Some(Provenance {
            signer: manifest.signer(),
            root_digest: manifest.root_digest(),
        }),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../provenance/tests/data");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DATA}/{name}")).unwrap()
    }

    fn key(name: &str) -> cloister_provenance::SignerKey {
        cloister_provenance::SignerKey::from_pem(std::str::from_utf8(&read(name)).unwrap()).unwrap()
    }

    fn keys(names: &[&str]) -> Trust {
        Trust {
            keys: names.iter().map(|n| key(n)).collect(),
            keyless: None,
        }
    }

    #[test]
    fn a_signed_single_file_model_loads_only_under_its_signer_and_unaltered() {
        let model = read("model/model.onnx");
        let container = SignedModel::build(&read("single.p256.sig"), &model).unwrap();
        let (inner, prov) = check(&container, &keys(&["p256.pub.pem"])).unwrap();
        assert_eq!(inner, model.as_slice());
        assert_eq!(prov.unwrap().signer, key("p256.pub.pem").id());

        let err = check(&container, &keys(&["other.pub.pem"])).unwrap_err();
        assert!(err.to_string().contains("matches none"), "{err}");

        let mut altered = model;
        altered[0] ^= 1;
        let container = SignedModel::build(&read("single.p256.sig"), &altered).unwrap();
        let err = check(&container, &keys(&["p256.pub.pem"])).unwrap_err();
        assert!(err.to_string().contains("SHA-256 is"), "{err}");
    }

    #[test]
    fn an_unsigned_model_is_refused_when_signers_are_required() {
        let model = read("model/model.onnx");
        assert!(matches!(
            check(&model, &keys(&["p256.pub.pem"])),
            Err(ProvenanceError::Unsigned(1))
        ));
        assert_eq!(
            check(&model, &Trust::default()).unwrap(),
            (model.as_slice(), None)
        );
    }

    #[test]
    fn a_two_file_signature_does_not_cover_a_one_file_model() {
        let container =
            SignedModel::build(&read("model.p256.sig"), &read("model/model.onnx")).unwrap();
        let err = check(&container, &keys(&["p256.pub.pem"])).unwrap_err();
        assert!(err.to_string().contains("\"tokenizer.json\""), "{err}");
    }
}

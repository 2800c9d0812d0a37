//! Bundles written by the reference signer (`model_signing` 1.1.1, tests/data/README.md), and
//! variants of them, each refused for its own reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use serde_json::Value;

use super::*;

const P256_SIG: &str = include_str!("../../tests/data/model.p256.sig");
const P384_SIG: &str = include_str!("../../tests/data/model.p384.sig");
const SINGLE_SIG: &str = include_str!("../../tests/data/single.p256.sig");
const P256_PUB: &str = include_str!("../../tests/data/p256.pub.pem");
const P384_PUB: &str = include_str!("../../tests/data/p384.pub.pem");
const OTHER_PUB: &str = include_str!("../../tests/data/other.pub.pem");
const MODEL_ONNX: &[u8] = include_bytes!("../../tests/data/model/model.onnx");
const TOKENIZER: &[u8] = include_bytes!("../../tests/data/model/tokenizer.json");

fn key(pem: &str) -> SignerKey {
    SignerKey::from_pem(pem).unwrap()
}

fn files() -> Vec<(&'static str, &'static [u8])> {
    vec![("model.onnx", MODEL_ONNX), ("tokenizer.json", TOKENIZER)]
}

fn edit(bundle: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(bundle).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn reference_bundles_verify_and_match_the_model() {
    for (sig, pem) in [(P256_SIG, P256_PUB), (P384_SIG, P384_PUB)] {
        let k = key(pem);
        let m = verify_bundle(sig.as_bytes(), &[key(OTHER_PUB), k.clone()]).unwrap();
        assert_eq!(m.signer(), k.id());
        assert_eq!(m.model_name(), "model");
        assert_eq!(m.files().len(), 2);
        m.check_files(&files()).unwrap();
        // The root digest is what model_signing put in the subject: SHA-256 over the file digests.
        let mut cat = Vec::new();
        cat.extend_from_slice(digest(&SHA256, MODEL_ONNX).as_ref());
        cat.extend_from_slice(digest(&SHA256, TOKENIZER).as_ref());
        assert_eq!(m.root_digest().as_slice(), digest(&SHA256, &cat).as_ref());
    }
}

#[test]
fn the_signer_id_is_the_spki_fingerprint_openssl_prints() {
    let (_, der) = pem_rfc7468::decode_vec(P256_PUB.trim().as_bytes()).unwrap();
    assert_eq!(
        key(P256_PUB).id().0.as_slice(),
        digest(&SHA256, &der).as_ref()
    );
}

#[test]
fn a_single_file_signature_matches_the_one_file_whatever_its_name() {
    let m = verify_bundle(SINGLE_SIG.as_bytes(), &[key(P256_PUB)]).unwrap();
    m.check_files(&[("model.onnx", MODEL_ONNX)]).unwrap();
    m.check_files(&[("renamed", MODEL_ONNX)]).unwrap();
    let err = m.check_files(&[("model.onnx", TOKENIZER)]).unwrap_err();
    assert!(matches!(err, Error::FileDigestMismatch { .. }), "{err}");
    let err = m.check_files(&files()).unwrap_err();
    assert!(matches!(err, Error::FileUnsigned { .. }), "{err}");
}

#[test]
fn a_tampered_missing_or_extra_file_is_named() {
    let m = verify_bundle(P256_SIG.as_bytes(), &[key(P256_PUB)]).unwrap();
    let tampered = b"{\"tokenizer\":false}\n";
    let err = m
        .check_files(&[("model.onnx", MODEL_ONNX), ("tokenizer.json", tampered)])
        .unwrap_err();
    assert!(
        matches!(&err, Error::FileDigestMismatch { name, .. } if name == "tokenizer.json"),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    let err = m.check_files(&[("model.onnx", MODEL_ONNX)]).unwrap_err();
    assert!(
        matches!(&err, Error::FileMissing { name } if name == "tokenizer.json"),
        "{err}"
    );
    let mut extra = files();
    extra.push(("chat_template.jinja", b"{{ x }}"));
    let err = m.check_files(&extra).unwrap_err();
    assert!(
        matches!(&err, Error::FileUnsigned { name } if name == "chat_template.jinja"),
        "{err}"
    );
}

#[test]
fn a_wrong_signer_is_refused() {
    let err = verify_bundle(P256_SIG.as_bytes(), &[key(OTHER_PUB), key(P384_PUB)]).unwrap_err();
    assert!(
        matches!(err, Error::UnknownSigner { pinned: 2, .. }),
        "{err}"
    );
    // Without the hint, every pinned key is tried, and none verifies.
    let no_hint = edit(P256_SIG, |v| {
        v["verificationMaterial"]["publicKey"] = serde_json::json!({})
    });
    let err = verify_bundle(&no_hint, &[key(OTHER_PUB)]).unwrap_err();
    assert!(matches!(err, Error::BadSignature { pinned: 1 }), "{err}");
    verify_bundle(&no_hint, &[key(OTHER_PUB), key(P256_PUB)]).unwrap();
    let err = verify_bundle(P256_SIG.as_bytes(), &[]).unwrap_err();
    assert!(
        matches!(err, Error::UnknownSigner { pinned: 0, .. }),
        "{err}"
    );
}

#[test]
fn an_altered_statement_does_not_verify() {
    let altered = edit(P256_SIG, |v| {
        let payload = STANDARD
            .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let text = String::from_utf8(payload)
            .unwrap()
            .replace("\"model\"", "\"other\"");
        v["dsseEnvelope"]["payload"] = Value::String(STANDARD.encode(text));
    });
    let err = verify_bundle(&altered, &[key(P256_PUB)]).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn keyless_logged_and_odd_bundles_are_refused_for_their_reason() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            edit(P256_SIG, |v| {
                v["verificationMaterial"]["certificate"] = serde_json::json!({"rawBytes": "AA=="})
            }),
            "a public key or a certificate",
        ),
        (
            edit(P256_SIG, |v| {
                let m = v["verificationMaterial"].as_object_mut().unwrap();
                m.remove("publicKey");
                m.insert(
                    "certificate".into(),
                    serde_json::json!({"rawBytes": "AA=="}),
                );
            }),
            "no trusted root and signer identities",
        ),
        (
            edit(P256_SIG, |v| {
                v["verificationMaterial"]["x509CertificateChain"] = serde_json::json!({})
            }),
            "certificates",
        ),
        (
            edit(P256_SIG, |v| {
                v["verificationMaterial"]["tlogEntries"] = serde_json::json!([{}])
            }),
            "logIndex",
        ),
        (
            edit(P256_SIG, |v| v["mediaType"] = "application/json".into()),
            "mediaType",
        ),
        (
            edit(P256_SIG, |v| {
                v["dsseEnvelope"]["payloadType"] = "text/plain".into()
            }),
            "payloadType",
        ),
        (
            edit(P256_SIG, |v| {
                v["dsseEnvelope"]["signatures"] = serde_json::json!([])
            }),
            "exactly one",
        ),
        (
            edit(P256_SIG, |v| {
                v.as_object_mut().unwrap().remove("dsseEnvelope");
            }),
            "dsseEnvelope",
        ),
        (
            edit(P256_SIG, |v| v["dsseEnvelope"]["payload"] = "!!".into()),
            "base64",
        ),
        (
            edit(P256_SIG, |v| v["messageSignature"] = serde_json::json!({})),
            "messageSignature",
        ),
        (b"not json".to_vec(), "bundle JSON"),
        (vec![b' '; MAX_BUNDLE_LEN + 1], "limit"),
    ];
    for (bundle, reason) in cases {
        let err = verify_bundle(&bundle, &[key(P256_PUB)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(reason), "expected {reason:?} in {err:?}");
    }
}

#[test]
fn every_truncation_of_a_bundle_is_an_error() {
    let k = [key(P256_PUB)];
    for cut in 0..P256_SIG.len() {
        assert!(
            verify_bundle(&P256_SIG.as_bytes()[..cut], &k).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn pae_matches_the_dsse_specification_example() {
    // From the DSSE protocol document: PAE("http://example.com/HelloWorld", "hello world").
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
}

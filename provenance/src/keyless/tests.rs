//! Keyless bundles: a model signed by the reference signer (`model_signing sign certificate`) with a
//! certificate from a local test CA, and a log entry from a local test log
//! (`provenance/tests/keyless/make_keyless.py`, fixtures in tests/data/keyless/), each variant refused for
//! its own reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use serde_json::Value;

use super::*;
use crate::{verify_bundle_with, Trust};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keyless");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{path}")).unwrap()
}

fn producer() -> SignerIdentity {
    SignerIdentity {
        identity: "producer@example.com".into(),
        issuer: "https://accounts.example.com".into(),
    }
}

fn trust(case: &str, identities: Vec<SignerIdentity>) -> Trust {
    Trust {
        keys: vec![],
        keyless: Some(KeylessPolicy {
            root: TrustedRoot::from_json(&read(&format!("{case}/trusted_root.json"))).unwrap(),
            identities,
        }),
    }
}

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("model.onnx", read("model/model.onnx")),
        ("tokenizer.json", read("model/tokenizer.json")),
    ]
}

fn verify(
    case: &str,
    bundle: &[u8],
    identities: Vec<SignerIdentity>,
) -> Result<crate::VerifiedManifest, Error> {
    verify_bundle_with(bundle, &trust(case, identities))
}

fn edit(bundle: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bundle).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_logged_certificate_signature_verifies_and_names_its_identity() {
    let bundle = read("valid/model.sig");
    let m = verify("valid", &bundle, vec![producer()]).unwrap();
    assert_eq!(m.identity(), Some(&producer()));
    assert_eq!(m.signer(), producer().id());
    let f = files();
    let refs: Vec<(&str, &[u8])> = f.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    m.check_files(&refs).unwrap();
    // The id is not a key's: another preimage, stable.
    assert_ne!(
        producer().id(),
        SignerIdentity {
            identity: "x".into(),
            ..producer()
        }
        .id()
    );
}

#[test]
fn each_broken_part_is_refused_for_its_reason() {
    let bundle = read("valid/model.sig");
    let expect = |case: &str, bundle: &[u8], ids: Vec<SignerIdentity>, needle: &str| {
        let err = verify(case, bundle, ids).unwrap_err().to_string();
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    };
    // Another signer identity, or issuer.
    let other = SignerIdentity {
        identity: "someone@example.com".into(),
        ..producer()
    };
    expect(
        "valid",
        &bundle,
        vec![other],
        "signed by producer@example.com",
    );
    let other_issuer = SignerIdentity {
        issuer: "https://evil.example".into(),
        ..producer()
    };
    expect(
        "valid",
        &bundle,
        vec![other_issuer],
        "none of the allowed signers",
    );
    // Signed after the certificate expired (the log's time is authenticated by its promise).
    expect(
        "expired",
        &read("expired/model.sig"),
        vec![producer()],
        "expired or not yet valid",
    );
    // No inclusion proof, no promise.
    expect(
        "no-proof",
        &read("no-proof/model.sig"),
        vec![producer()],
        "inclusionProof: absent",
    );
    expect(
        "no-promise",
        &read("no-promise/model.sig"),
        vec![producer()],
        "inclusionPromise: absent",
    );
    // Another deployment's trusted root: its log is unknown here.
    expect(
        "expired",
        &bundle,
        vec![producer()],
        "not in the trusted root",
    );
    // The integrated time moved (inside the window, but not what the log signed).
    let moved = edit(&bundle, |v| {
        let t = &mut v["verificationMaterial"]["tlogEntries"][0]["integratedTime"];
        let n: i64 = t.as_str().unwrap().parse().unwrap();
        *t = Value::String((n + 1).to_string());
    });
    expect(
        "valid",
        &moved,
        vec![producer()],
        "signed entry timestamp does not verify",
    );
    // A proof hash flipped; a checkpoint of another tree.
    let flipped = edit(&bundle, |v| {
        let h = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0];
        let mut b = STANDARD.decode(h.as_str().unwrap()).unwrap();
        b[0] ^= 1;
        *h = Value::String(STANDARD.encode(b));
    });
    expect("valid", &flipped, vec![producer()], "inclusion proof");
    let resized = edit(&bundle, |v| {
        let cp = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]
            ["envelope"];
        *cp = Value::String(cp.as_str().unwrap().replacen("\n7\n", "\n8\n", 1));
    });
    expect("valid", &resized, vec![producer()], "checkpoint");
    // The envelope's payload changed: the DSSE signature and the logged payload hash both break.
    let payload = edit(&bundle, |v| {
        let p = &mut v["dsseEnvelope"]["payload"];
        let mut b = STANDARD.decode(p.as_str().unwrap()).unwrap();
        let last = b.len() - 2;
        b[last] = b' ';
        *p = Value::String(STANDARD.encode(b));
    });
    expect("valid", &payload, vec![producer()], "payloadHash");
    // A trusted root whose certificate authority is another one (the same log): the chain is checked.
    let mut root: Value = serde_json::from_slice(&read("valid/trusted_root.json")).unwrap();
    let other: Value = serde_json::from_slice(&read("expired/trusted_root.json")).unwrap();
    root["certificateAuthorities"] = other["certificateAuthorities"].clone();
    let other_ca = Trust {
        keys: vec![],
        keyless: Some(KeylessPolicy {
            root: TrustedRoot::from_json(&serde_json::to_vec(&root).unwrap()).unwrap(),
            identities: vec![producer()],
        }),
    };
    let err = verify_bundle_with(&bundle, &other_ca)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not issued through a certificate authority"),
        "{err}"
    );
    // No log entry at all; a key-based verifier without a trusted root.
    let bare = edit(&bundle, |v| {
        v["verificationMaterial"]["tlogEntries"] = Value::Array(vec![]);
    });
    expect("valid", &bare, vec![producer()], "exactly one entry");
    let err = crate::verify_bundle(&bundle, &[]).unwrap_err();
    assert!(matches!(err, Error::KeylessUnsupported), "{err}");
}

#[test]
fn trusted_roots_are_parsed_strictly() {
    let root = read("valid/trusted_root.json");
    assert!(TrustedRoot::from_json(&root).is_ok());
    let mut v: Value = serde_json::from_slice(&root).unwrap();
    v["tlogs"][0]["logId"]["keyId"] = Value::String(STANDARD.encode([0u8; 32]));
    assert!(TrustedRoot::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    let mut v: Value = serde_json::from_slice(&root).unwrap();
    v["certificateAuthorities"] = Value::Array(vec![]);
    assert!(TrustedRoot::from_json(&serde_json::to_vec(&v).unwrap()).is_err());
    assert!(TrustedRoot::from_json(b"{}").is_err());
    assert!(TrustedRoot::from_json(b"\xff").is_err());
}

/// The log and certificate steps against real public-good Sigstore evidence (tests/data/sigstore-public-good):
/// Rekor's key, signed entry timestamp, inclusion proof and checkpoint format, and Fulcio's chain and
/// extensions, as the production services write them.
#[test]
fn real_public_good_evidence_passes_the_log_and_certificate_steps() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sigstore-public-good"
    );
    let root = TrustedRoot::from_json(&std::fs::read(format!("{dir}/trusted_root.json")).unwrap())
        .unwrap();
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(format!("{dir}/sigstore-js-2.0.0-provenance.sigstore.json")).unwrap(),
    )
    .unwrap();
    let material = &bundle["verificationMaterial"];
    let entry: TlogEntry = serde_json::from_value(material["tlogEntries"][0].clone()).unwrap();
    let logged = verify_log_entry(&entry, &root).unwrap();
    assert_eq!(logged.integrated_time, 1692374735);
    let leaf = STANDARD
        .decode(
            material["x509CertificateChain"]["certificates"][0]["rawBytes"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let (identity, _key) = verify_certificate(&leaf, &root, logged.integrated_time).unwrap();
    assert_eq!(
        identity,
        SignerIdentity {
            identity: "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
        }
    );
    // Ten minutes later the certificate had expired; a day earlier it did not exist.
    let err = verify_certificate(&leaf, &root, logged.integrated_time + 3600).unwrap_err();
    assert!(matches!(err, Error::CertificateNotValidAt { .. }), "{err}");
    // A log entry with its body altered no longer proves inclusion, nor its promise.
    let mut altered = material["tlogEntries"][0].clone();
    let mut body = STANDARD
        .decode(altered["canonicalizedBody"].as_str().unwrap())
        .unwrap();
    body[10] ^= 1;
    altered["canonicalizedBody"] = Value::String(STANDARD.encode(body));
    let altered: TlogEntry = serde_json::from_value(altered).unwrap();
    assert!(verify_log_entry(&altered, &root).is_err());
}

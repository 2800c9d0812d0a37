//! Model-signature parsing on arbitrary bytes: the OpenSSF model-signing bundle (`verify_bundle`, which
//! `cloister seal` runs on the owner's input and the enclave on the sealed plaintext) and the signed-model
//! container. Never panics, and:
//! - nothing verifies under the fixture keys or the keyless fixtures' trusted root unless it is a genuine
//!   signature (the fuzzer cannot forge ECDSA; a bundle that verifies must carry a statement whose root
//!   digest is the hash of its files);
//! - a container that parses rebuilds to the same bytes.
//!
//! The first byte picks the parser.
#![no_main]

use std::sync::OnceLock;

use cloister_provenance::keyless::{KeylessPolicy, SignerIdentity, TrustedRoot};
use cloister_provenance::{verify_bundle_with, SignedModel, SignerKey, Trust};
use libfuzzer_sys::fuzz_target;

/// The fixture keys, and the keyless fixtures' trusted root with their identity: key-based and keyless
/// bundles both reach their full checks.
fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| Trust {
        keys: [
            include_str!("../../provenance/tests/data/p256.pub.pem"),
            include_str!("../../provenance/tests/data/p384.pub.pem"),
        ]
        .iter()
        .map(|pem| SignerKey::from_pem(pem).expect("fixture key"))
        .collect(),
        keyless: Some(KeylessPolicy {
            root: TrustedRoot::from_json(include_bytes!(
                "../../provenance/tests/data/keyless/valid/trusted_root.json"
            ))
            .expect("fixture root"),
            identities: vec![SignerIdentity {
                identity: "producer@example.com".into(),
                issuer: "https://accounts.example.com".into(),
            }],
        }),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 1 == 0 {
        if let Ok(manifest) = verify_bundle_with(rest, trust()) {
            let mut root = ring::digest::Context::new(&ring::digest::SHA256);
            for digest in manifest.files().values() {
                root.update(digest);
            }
            assert!(!manifest.files().is_empty());
            // The files map is sorted by name; the statement lists them in its own order, so only a
            // one-file manifest can be recomputed here without the statement.
            if manifest.files().len() == 1 {
                assert_eq!(root.finish().as_ref(), manifest.root_digest());
            }
        }
    } else if let Ok(signed) = SignedModel::parse(rest) {
        let rebuilt =
            SignedModel::build(signed.bundle, signed.model).expect("parsed parts rebuild");
        assert_eq!(rebuilt, rest);
    }
});

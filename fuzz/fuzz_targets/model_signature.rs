//! Model-signature parsing on arbitrary bytes: the OpenSSF model-signing bundle (`verify_bundle`, which
//! `cloister seal` runs on the owner's input and the enclave on the sealed plaintext) and the signed-model
//! container. Never panics, and:
//! - nothing verifies under the fixture keys unless it is a genuine signature (the fuzzer cannot forge
//!   ECDSA; a bundle that verifies must carry a statement whose root digest is the hash of its files);
//! - a container that parses rebuilds to the same bytes.
//!
//! The first byte picks the parser.
#![no_main]

use std::sync::OnceLock;

use cloister_provenance::{verify_bundle, SignedModel, SignerKey};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static [SignerKey] {
    static KEYS: OnceLock<Vec<SignerKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            include_str!("../../provenance/tests/data/p256.pub.pem"),
            include_str!("../../provenance/tests/data/p384.pub.pem"),
        ]
        .iter()
        .map(|pem| SignerKey::from_pem(pem).expect("fixture key"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 1 == 0 {
        if let Ok(manifest) = verify_bundle(rest, keys()) {
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

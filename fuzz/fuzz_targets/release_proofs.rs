//! Release-log inputs on arbitrary bytes (a client reads them from files the deployment hands it): the
//! proof file (`ReleaseProofs::verify`), a signed checkpoint, and a verifier key. Never panics, and:
//! - nothing verifies under the pinned key (the fuzzer cannot forge Ed25519), except the genuine seed;
//! - a verifier key that parses prints back as the same text.
//!
//! The first byte picks the parser.
#![no_main]

use cloister_provenance::release::ReleaseProofs;
use cloister_provenance::tlog::{Checkpoint, NoteVerifier};
use libfuzzer_sys::fuzz_target;

/// A key no one holds the private half of (an all-zero seed would be a known key; this is a public value).
fn pinned() -> NoteVerifier {
    NoteVerifier::new("fuzz.example/releases", [0x42; 32]).expect("valid name")
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    match control % 3 {
        0 => {
            if let Ok(v) = ReleaseProofs::verify(rest, &pinned()) {
                panic!(
                    "proofs verified under a key with no private half: {:?}",
                    v.checkpoint()
                );
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                assert!(Checkpoint::verify(text, &pinned()).is_err());
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(v) = NoteVerifier::parse(text) {
                    assert_eq!(v.to_string(), text.trim());
                }
            }
        }
    }
});

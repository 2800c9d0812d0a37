//! Evidence decoding (postcard, bounded) on arbitrary bytes: never panics; what decodes re-encodes
//! to the same bytes, and the claims hash is computable.
#![no_main]

use cloister_attestation::evidence::Evidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = Evidence::from_bytes(data) {
        let again = ev.to_bytes().expect("decoded evidence re-encodes");
        assert_eq!(Evidence::from_bytes(&again).expect("round trip"), ev);
        let _ = ev.claims.report_data();
    }
});

//! Policy TOML parsing on arbitrary text: never panics.
#![no_main]

use cloister_attestation::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::from_toml(text);
    }
});

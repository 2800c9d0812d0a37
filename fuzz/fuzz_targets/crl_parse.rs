//! AMD CRL parsing and verification on arbitrary bytes: never panics.
#![no_main]

use cloister_attestation::snp::crl::fuzz_crl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_crl(data);
});

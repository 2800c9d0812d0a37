//! SNP report codec on arbitrary bytes: never panics, and every accepted report re-encodes to exactly
//! the bytes it was decoded from (the codec is byte-exact).
#![no_main]

use cloister_attestation::snp::report::AttestationReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = AttestationReport::from_bytes(data) {
        let encoded = report.to_bytes().expect("an accepted report must re-encode");
        assert_eq!(&encoded[..], data);
        let _ = report.signature_p384_fixed();
    }
});

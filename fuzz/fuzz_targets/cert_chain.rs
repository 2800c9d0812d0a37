//! AMD certificate parsing and chain verification on arbitrary bytes: the input is split into a leaf and
//! an intermediate; parsing, extension decoding and signature checks must never panic.
#![no_main]

use cloister_attestation::snp::certs::{fuzz_certificate, AmdCertificate};
use cloister_attestation::snp::{roots, Product};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzz_certificate(data);
    if let Ok(cert) = AmdCertificate::from_pem_or_der(data) {
        let _ = cert.amd_extensions();
        let _ = cert.p384_public_key();
        for product in Product::ALL {
            let r = roots::embedded(product);
            let _ = cert.verify_issued_by(&r.ask);
            let _ = cert.verify_issued_by(&r.ark);
        }
    }
});

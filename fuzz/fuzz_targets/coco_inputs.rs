//! Confidential Containers inputs from untrusted bytes: the attestation agent's SNP evidence JSON (rebuilt
//! into report bytes), and initdata documents (a ConfigMap is the host's). Never panics; a rebuilt report
//! always decodes and re-encodes to the same bytes.
#![no_main]

use cloister_attestation::initdata::InitData;
use cloister_attestation::snp::report::sev_json::parse_sev_json;
use cloister_attestation::snp::report::AttestationReport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(evidence) = parse_sev_json(data) {
        let again =
            AttestationReport::from_bytes(&evidence.report).expect("rebuilt report decodes");
        assert_eq!(
            again.to_bytes().expect("re-encodes")[..],
            evidence.report[..]
        );
    }
    if let Ok(doc) = InitData::parse(data) {
        let _ = doc.snp_host_data();
        let _ = doc.entry("cloister-enclave.toml");
    }
});

//! Azure vTPM evidence from untrusted bytes: the HCL report and its runtime claims, TPMS_ATTEST, and
//! Trustee's evidence JSON. Never panics.
#![no_main]

use cloister_attestation::azure::hcl::HclReport;
use cloister_attestation::azure::tpm::QuoteInfo;
use cloister_attestation::azure::AzureEvidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hcl) = HclReport::parse(data) {
        let _ = hcl.claims();
        let _ = hcl.var_data_sha256();
    }
    if let Ok(q) = QuoteInfo::parse(data) {
        let _ = q.check_pcrs(&[[0; 32]; 24]);
    }
    let _ = AzureEvidence::from_json(data);
});

//! The enclave's records from untrusted bytes: receipts (COSE_Sign1 and their CBOR payload), receipt files,
//! and audit logs. Never panics.
#![no_main]

use cloister_governance::audit::verify_log;
use cloister_governance::{Receipt, ReceiptFile, ReceiptPayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = [4u8; 97];
    let _ = Receipt(data.to_vec()).open(&key);
    let _ = ReceiptPayload::from_cbor(data);
    let _ = ReceiptFile::from_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = verify_log(text, &key);
        let _ = Receipt::from_header(text);
    }
});

//! Inference receipts from untrusted bytes (a client keeps them; anyone may hand one to an auditor): the
//! COSE_Sign1 envelope (`Receipt::open`), its CBOR payload (`ReceiptPayload::from_cbor`), the header form
//! (base64url) and the receipt file (JSON).
//!
//! Input: a public key (32 bytes) then a COSE_Sign1 for `open`; the whole input for the other parsers.
//! Properties, not just "never panics":
//! - a payload that parses re-encodes to one that parses to the same payload;
//! - a COSE_Sign1 that parses re-encodes to bytes that re-encode to themselves (bytes, not values: a header
//!   may hold a NaN);
//! - what opens is what the enclave signed: a payload that opens under a key is one of the seeds' (the real
//!   signer's, embedded below) under that key. Unprotected headers may change (COSE does not sign them); the
//!   payload and the protected header may not;
//! - a header that decodes is the canonical base64url of its bytes, and a receipt file round-trips.
#![no_main]

use std::sync::OnceLock;

use cloister_governance::receipt::{CborSerializable, CoseSign1};
use cloister_governance::{Receipt, ReceiptFile, ReceiptPayload};
use libfuzzer_sys::fuzz_target;

const KEY_LEN: usize = 32;

/// Receipts the real signer made (`write_fuzz_seeds` in governance/src/audit/tests.rs), also in the corpus.
const GENUINE: [&[u8]; 2] = [
    include_bytes!("../corpus/receipt/signed-1.bin"),
    include_bytes!("../corpus/receipt/signed-2.bin"),
];

fn genuine() -> &'static [(&'static [u8], ReceiptPayload)] {
    static OPENED: OnceLock<Vec<(&'static [u8], ReceiptPayload)>> = OnceLock::new();
    OPENED.get_or_init(|| {
        GENUINE
            .iter()
            .map(|seed| {
                let (key, cose) = seed.split_at(KEY_LEN);
                let payload = Receipt(cose.to_vec()).open(key).expect("a seed opens");
                (key, payload)
            })
            .collect()
    })
}

fn payload_round_trips(payload: &ReceiptPayload) {
    let again = payload.to_cbor().expect("a payload encodes");
    assert_eq!(
        &ReceiptPayload::from_cbor(&again).expect("re-parses"),
        payload
    );
}

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = ReceiptPayload::from_cbor(data) {
        payload_round_trips(&payload);
    }
    if data.len() >= KEY_LEN {
        let (key, cose) = data.split_at(KEY_LEN);
        if let Ok(sign1) = CoseSign1::from_slice(cose) {
            let once = sign1.to_vec().expect("a parsed COSE_Sign1 encodes");
            let twice = CoseSign1::from_slice(&once)
                .and_then(CoseSign1::to_vec)
                .expect("its encoding re-parses");
            assert_eq!(once, twice);
        }
        if let Ok(payload) = Receipt(cose.to_vec()).open(key) {
            assert!(
                genuine().iter().any(|(k, p)| *k == key && *p == payload),
                "a payload the enclave did not sign opened: {payload:?}"
            );
            payload_round_trips(&payload);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(receipt) = Receipt::from_header(text) {
            assert_eq!(
                receipt.to_header(),
                text.trim(),
                "one header text per receipt"
            );
        }
    }
    if let Ok(file) = ReceiptFile::from_json(data) {
        let again = ReceiptFile::from_json(&file.to_json()).expect("a receipt file re-parses");
        assert_eq!(again, file);
    }
});

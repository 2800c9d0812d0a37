//! The SNP extended-report certificate table (written by the untrusted host) on arbitrary bytes: never
//! panics; entries of an accepted table lie inside the blob.
#![no_main]

use cloister_enclave::firmware::cert_table::CertTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = CertTable::parse(data);
});

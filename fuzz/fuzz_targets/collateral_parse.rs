//! What the collateral path parses from untrusted sources: KDS paths (the host's `/collateral` service parses
//! the enclave's requests), offline bundles, and KDS chain bodies. Never panics; a path that parses is
//! canonical (it prints back to the same bytes).
#![no_main]

use cloister_attestation::snp::Product;
use cloister_collateral::kds::{Item, KeyTree};
use cloister_collateral::{verify, Bundle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(item) = Item::from_path(text) {
            assert_eq!(item.path(), text);
        }
    }
    let _ = Bundle::parse(data);
    let _ = verify::chain(data, KeyTree::Vcek, Product::Genoa, None);
    let _ = verify::crl(data, KeyTree::Vlek, Product::Milan, None);
});

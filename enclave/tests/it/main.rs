//! Integration tests of the enclave: one binary (it links tract).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

// The tests start enclaves on the simulated platform: say so at build time rather than fail one by one.
#[cfg(not(feature = "insecure-simulator"))]
compile_error!(
    "the enclave's tests run it on the simulated platform: \
     `cargo test -p cloister-enclave --features insecure-simulator` (or `cargo test --workspace`)"
);

mod azure;
mod binary;
mod coco_aa;
mod common;
mod firmware;
mod provisioning;
mod serving;
mod simulated;

//! Integration tests of the enclave: one binary (it links tract).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod azure;
mod binary;
mod coco_aa;
mod common;
mod firmware;
mod provisioning;
mod serving;
mod simulated;

//! `cloister-enclave`.
fn main() {}

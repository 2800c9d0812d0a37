//! `cloister-host`.
fn main() {}

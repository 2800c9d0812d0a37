//! Cloister client library: what the model owner and the data owner run. It verifies attestation
//! evidence before anything (keys, inputs) is released.
#![forbid(unsafe_code)]

pub mod danger;
pub mod deployment;

pub mod magika;
pub mod seal_check;
pub mod session;

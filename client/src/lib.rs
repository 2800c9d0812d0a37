//! Cloister client library: what the data owner and the model owner run on their own machines.
//!
//! Who runs it: a client (`cloister infer`, attested sessions), a model owner (`cloister seal`'s model check,
//! `cloister demo`'s deployment). Secrets it may hold: the client's inputs and outputs, which it sends only
//! inside a TLS session whose evidence verified ([`session`]). It holds no model key: sealing keys live in
//! the model owner's keystore (`cloister-models`) and the key broker is its own crate
//! (`cloister-keybroker`). It verifies attestation evidence before anything is released.
#![forbid(unsafe_code)]

pub mod deployment;
mod error;

pub mod magika;
pub mod proxy;
pub mod seal_check;
pub mod session;

pub use error::Error;

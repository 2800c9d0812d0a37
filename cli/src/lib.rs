//! The `cloister` command's library half: what the command needs besides sessions (`cloister-session`) and
//! the development deployment (`cloister-devnet`).
//!
//! Who runs it: a client (`cloister infer --file`: Magika's features are computed here, on the client) and a
//! model owner (`cloister seal`'s model check). Secrets it may hold: the client's inputs (a file it
//! classifies) before they enter an attested session, and plaintext models while `cloister seal` checks
//! them. It holds no model key: sealing keys live in the model owner's keystore (`cloister-models`) and the
//! key broker is its own crate (`cloister-keybroker`).
#![forbid(unsafe_code)]

mod error;

pub mod magika;
pub mod seal_check;

pub use error::Error;

//! Cloister's session library: what a data owner embeds to talk to an enclave it has attested.
//!
//! Who runs it: clients (the `cloister` command, programs that embed a session, `cloister proxy`). Secrets it
//! may hold: the client's inputs and outputs, which it sends only inside a TLS session whose evidence
//! verified ([`AttestedSession`]), and the client certificate's private key. It links no key broker, no
//! inference engine and no simulator (CI checks `cargo tree -p cloister-session`): embedding a session
//! brings the verifier, collateral, the wire types and TLS, nothing else.
//!
//! - [`AttestedSession`] and [`SessionPolicy`]: the attested session (`session.rs`).
//! - [`proxy`]: the attesting proxy core behind `cloister proxy`.
#![forbid(unsafe_code)]

mod session;

pub mod proxy;

pub use session::*;

//! Cloister's session library: what a data owner embeds to talk to an enclave it has attested.
//!
//! Who runs it: clients (the `cloister` command, programs that embed a session, `cloister proxy`). Secrets it
//! may hold: the client's inputs and outputs, which it sends only inside a TLS session whose evidence
//! verified ([`AttestedSession`]), and the client certificate's private key. It links no key broker, no
//! inference engine and no simulator (CI checks `cargo tree -p cloister-session`): embedding a session
//! brings the verifier, collateral, the wire types and TLS, nothing else.
//!
//! ```no_run
//! # async fn f() -> Result<(), cloister_session::SessionError> {
//! use cloister_session::{AttestedSession, SessionConfig};
//! let config = SessionConfig::builder_from_file("policy.toml".as_ref())?.build()?;
//! let mut session = AttestedSession::connect("enclave.example.com:8443", &config).await?;
//! println!("{:?}", session.evidence().claims().model_digests);
//! # Ok(()) }
//! ```
//!
//! - [`SessionConfig`]: what every session trusts and presents, from one builder (`config.rs`); what
//!   weakens verification is behind [`SessionConfigBuilder::dangerous`] ([`danger`]).
//! - [`AttestedSession`]: the attested session (`session.rs`), holding the proof of attestation
//!   ([`Attested`], made only by verification in `cloister_proto::session_attestation`).
//! - [`proxy`]: the attesting proxy core behind `cloister proxy`.
#![forbid(unsafe_code)]

mod config;
mod session;

pub mod danger;
pub mod proxy;

pub use cloister_proto::session_attestation::Attested;
pub use config::{ClientIdentity, SessionConfig, SessionConfigBuilder};
pub use session::*;

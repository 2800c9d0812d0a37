//! Collateral for verifiers: AMD certificate chains and CRLs, and verification policies, read from files.
//!
//! Who runs it: every verifier (`cloister verify`, `cloister infer`, client sessions, the key broker). Secrets:
//! none — collateral is public and is trusted only after `cloister-attestation` has checked it against AMD's
//! embedded roots. It is the I/O beside the verifier, which stays pure (bytes in, decisions out).
#![forbid(unsafe_code)]

pub mod files;

pub use files::Error;

//! Cloister enclave library: everything that runs inside the confidential VM.
/// The tract inference engine: models loaded from bytes, requests validated.
pub mod inference;

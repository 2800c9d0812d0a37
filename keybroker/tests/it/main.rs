//! The key broker, in process, against a fake enclave.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod peers;
mod residency;
mod state;
mod verdicts;

//! Integration tests of the `cloister` command, run as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod azure_vectors;
mod common;
mod fetch;
mod keybroker_cli;
mod measure;
mod proxy_origin;
mod records;
mod seal;
mod session_args;
mod sim;
mod sim_state;
mod verify_vectors;

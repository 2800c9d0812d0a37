//! End-to-end scenarios.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod azure;
mod collateral;
mod e2e;
mod edges;
mod fleet;
mod governance;
mod kubernetes;
mod llm;
mod models;
mod provenance;
mod proxy;
mod vm;

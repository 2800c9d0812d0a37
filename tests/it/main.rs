//! End-to-end scenarios.

mod e2e;
mod models;

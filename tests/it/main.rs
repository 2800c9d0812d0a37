//! End-to-end scenarios.

mod models;

//! Workspace test crate (tests live in `it/`).

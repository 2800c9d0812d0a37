//! Workspace-level end-to-end scenarios live under `it/` (integration tests) and `benches/`; this library is empty
//! on purpose: it exists only so the package has a target that `cargo` builds with the rest of the workspace.

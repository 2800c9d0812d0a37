//! Cloister host library: launcher, supervisor, relay and blob service. Untrusted by design.

//! Cloister client library.

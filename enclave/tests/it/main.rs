//! Integration tests of the enclave.

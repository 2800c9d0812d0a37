//! Collateral for verifiers: AMD certificate chains, VCEKs and CRLs, read from files or fetched from AMD's
//! Key Distribution Service (or a mirror of it), cached on disk, bundled for offline use; and verification
//! policies read from files.
//!
//! Who runs it: every verifier (`cloister verify`, `cloister infer`, client sessions, the key broker), the
//! untrusted host (its `/collateral` service, a KDS mirror for the enclave) and the enclave (fetching its own
//! VCEK from that service). Secrets: none — collateral is public, and is kept only after it verified against
//! AMD's embedded roots ([`verify`]): the network, the host, a bundle and a shared cache directory are all
//! untrusted. It is the I/O beside the verifier, which stays pure (bytes in, decisions out).
//!
//! Modules: [`kds`] (AMD's URL formats and the cache keys, pure), [`verify`] (what makes a served item
//! trustworthy), [`store`] (the on-disk cache, Trustee's layout), [`bundle`] (the offline file),
//! [`client`] (memory → bundle → store → KDS, single flight, retries, CRLs never rolled back), [`files`]
//! (chains, CRLs and policies from the snpguest directory layout; the one size-capped, regular-files-only
//! reader).
#![forbid(unsafe_code)]

pub mod bundle;
pub mod client;
mod crl_version;
pub mod error;
pub mod files;
mod http;
pub mod kds;
pub mod store;
pub mod thim;
pub mod verify;

pub use bundle::Bundle;
pub use client::{Collateral, CrlFetch, CrlVersion, RetryPolicy, Sources};
pub use error::{Error, FileKind};
pub use kds::{Item, KeyTree, VcekId, DEFAULT_KDS_URL};

//! AMD SEV-SNP: report codec, AMD certificates and trust roots, verification.

pub mod certs;
pub mod crl;
pub mod measurement;
pub mod product;
pub mod report;
pub mod roots;
pub mod verify;
pub mod view;

pub use product::Product;

//! AMD SEV-SNP: report codec, AMD certificates and trust roots, verification.

pub mod certs;
pub mod product;
pub mod roots;

pub use product::Product;

//! AMD EPYC product lines that implement SEV-SNP.

use core::fmt;

/// An AMD product line (CPU generation) that signs SEV-SNP attestation reports.
///
/// Bergamo and Siena are Genoa derivatives and are signed by Genoa's key hierarchy, so they map to
/// [`Product::Genoa`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Product {
    /// 3rd generation EPYC (Zen 3), family 19h model 0xh.
    Milan,
    /// 4th generation EPYC (Zen 4), family 19h model 1xh; also Bergamo and Siena.
    Genoa,
    /// 5th generation EPYC (Zen 5), family 1Ah.
    Turin,
}

impl Product {
    /// All products, in generation order.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name AMD uses in certificate subjects and KDS URLs ("Milan", "Genoa", "Turin").
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Parses a product name as written in policies, on the command line or in a VCEK's productName
    /// extension. Case-insensitive; a stepping suffix ("Milan-B0") is accepted; Bergamo and Siena map
    /// to Genoa.
    pub fn from_name(name: &str) -> Option<Product> {
        let base = name.split('-').next().unwrap_or(name).to_ascii_lowercase();
        match base.as_str() {
            "milan" => Some(Product::Milan),
            "genoa" | "bergamo" | "siena" => Some(Product::Genoa),
            "turin" => Some(Product::Turin),
            _ => None,
        }
    }

    /// Whether this product's TCB_VERSION uses the Turin layout (with an FMC field).
    pub fn has_fmc_tcb_layout(self) -> bool {
        matches!(self, Product::Turin)
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! AMD's Key Distribution Service: the exact URL paths and the cache keys, as pure functions.
//!
//! From AMD's "VCEK Certificate and KDS Interface Specification" (publication 57230), as AMD's own tools
//! (virtee/snpguest, snphost) and Trustee implement it:
//!
//! ```text
//! VCEK, Milan/Genoa  /vcek/v1/{Milan|Genoa}/{hex(CHIP_ID), 128 digits}?blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN
//! VCEK, Turin        /vcek/v1/Turin/{hex(CHIP_ID[0..8]), 16 digits}?fmcSPL=NN&blSPL=NN&teeSPL=NN&snpSPL=NN&ucodeSPL=NN
//! chains             /{vcek|vlek}/v1/{product}/cert_chain      PEM: ASK (or ASVK), then ARK
//! CRLs               /{vcek|vlek}/v1/{product}/crl             DER, signed by the ARK
//! ```
//!
//! SPLs are REPORTED_TCB's, decimal, zero-padded to two digits (`{:02}`); hex is lower-case. Bergamo and
//! Siena use Genoa's paths. VLEK leaves are not fetched: the KDS serves them only to the cloud provider, so a
//! VLEK travels with its report.
//!
//! The cache keys follow Trustee's offline store (`vcek/{hwid}/{tcb}_vcek.der`, with `tcb` =
//! `blNN_teeNN_snpNN_ucodeNN[_fmcNN]`, FMC last there), so that a store filled by one tool serves the other.

use cloister_attestation::snp::report::{AttestationReport, SigningKey, TcbVersion};
use cloister_attestation::snp::Product;

use crate::Error;

/// AMD's KDS.
pub const DEFAULT_KDS_URL: &str = "https://kdsintf.amd.com";

/// Which endorsement key's tree: the per-chip VCEK, or the cloud provider's VLEK.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyTree {
    /// VCEK: chain ASK → ARK, CRL at `/vcek/v1/{product}/crl`.
    Vcek,
    /// VLEK: chain ASVK → ARK, CRL at `/vlek/v1/{product}/crl`.
    Vlek,
}

impl KeyTree {
    /// `vcek` or `vlek`, as in the paths.
    pub fn path_name(self) -> &'static str {
        match self {
            KeyTree::Vcek => "vcek",
            KeyTree::Vlek => "vlek",
        }
    }

    /// The tree of the key that signed `report`; `None` for an unsigned report.
    pub fn of(report: &AttestationReport) -> Option<KeyTree> {
        match report.signing_key {
            SigningKey::Vcek => Some(KeyTree::Vcek),
            SigningKey::Vlek => Some(KeyTree::Vlek),
            SigningKey::None => None,
        }
    }
}

/// What identifies one VCEK: the product, the chip's hwID and the TCB it was derived for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcekId {
    /// The product line.
    pub product: Product,
    /// CHIP_ID (Turin: the first 8 bytes, then zeros).
    pub chip_id: [u8; 64],
    /// REPORTED_TCB.
    pub tcb: TcbVersion,
}

impl VcekId {
    /// The VCEK that signed `report`, whose product is `product` (from the report's CPUID on v3+, which
    /// [`product_of`] reads; v2 reports need the caller to say).
    pub fn of(report: &AttestationReport, product: Product) -> Result<Self, Error> {
        if report.signing_key != SigningKey::Vcek {
            return Err(Error::Kds(format!(
                "the report is signed by a {}, not a VCEK: only VCEKs are fetched from the KDS (a VLEK \
                 comes with its report)",
                report.signing_key.name().to_uppercase()
            )));
        }
        if report.chip_id.iter().all(|&b| b == 0) {
            return Err(Error::Kds(
                "CHIP_ID is all zero (MASK_CHIP_ID): the VCEK cannot be looked up".into(),
            ));
        }
        if product.has_fmc_tcb_layout() && report.reported_tcb.fmc.is_none() {
            return Err(Error::Kds(format!(
                "a {product} report without an FMC SPL in REPORTED_TCB"
            )));
        }
        if product == Product::Turin && report.chip_id[8..].iter().any(|&b| b != 0) {
            return Err(Error::Kds(
                "a Turin CHIP_ID has 8 significant bytes, then zeros; this one does not".into(),
            ));
        }
        Ok(VcekId {
            product,
            chip_id: report.chip_id,
            tcb: report.reported_tcb,
        })
    }

    /// The hwID as the KDS and the store name it: lower-case hex of 64 bytes (Milan, Genoa) or of the first
    /// 8 (Turin).
    pub fn hwid(&self) -> String {
        hex::encode(&self.chip_id[..hwid_len(self.product)])
    }

    /// `/vcek/v1/{product}/{hwid}?…` (no base).
    pub fn path(&self) -> String {
        let t = &self.tcb;
        let fmc = match (self.product.has_fmc_tcb_layout(), t.fmc) {
            (true, Some(fmc)) => format!("fmcSPL={fmc:02}&"),
            _ => String::new(),
        };
        format!(
            "/vcek/v1/{}/{}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            self.product.name(),
            self.hwid(),
            t.bootloader,
            t.tee,
            t.snp,
            t.microcode
        )
    }

    /// Trustee's TCB file prefix: `blNN_teeNN_snpNN_ucodeNN`, then `_fmcNN` when the TCB has one.
    pub fn tcb_prefix(&self) -> String {
        let t = &self.tcb;
        let mut s = format!(
            "bl{:02}_tee{:02}_snp{:02}_ucode{:02}",
            t.bootloader, t.tee, t.snp, t.microcode
        );
        if let Some(fmc) = t.fmc {
            s.push_str(&format!("_fmc{fmc:02}"));
        }
        s
    }
}

/// hwID length: 64 bytes, 8 on Turin.
pub fn hwid_len(product: Product) -> usize {
    if product == Product::Turin {
        8
    } else {
        64
    }
}

/// The product of a v3+ report (its CPUID family and model); `None` for a v2 report.
pub fn product_of(report: &AttestationReport) -> Option<Product> {
    report.cpuid_product()
}

/// `/{vcek|vlek}/v1/{product}/cert_chain`.
pub fn chain_path(tree: KeyTree, product: Product) -> String {
    format!("/{}/v1/{}/cert_chain", tree.path_name(), product.name())
}

/// `/{vcek|vlek}/v1/{product}/crl`.
pub fn crl_path(tree: KeyTree, product: Product) -> String {
    format!("/{}/v1/{}/crl", tree.path_name(), product.name())
}

/// A base URL as given (`--kds-url`, `kds_url`): `http://` or `https://`, no query, no trailing slash kept.
pub fn base_url(url: &str) -> Result<String, Error> {
    let trimmed = url.trim_end_matches('/');
    let uri: hyper::Uri = trimmed
        .parse()
        .map_err(|e| Error::Kds(format!("KDS URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(Error::Kds(format!(
                "KDS URL {url:?}: expected http:// or https://"
            )))
        }
    }
    if uri.host().is_none() || uri.query().is_some() {
        return Err(Error::Kds(format!(
            "KDS URL {url:?}: expected scheme://host[:port][/path], without a query"
        )));
    }
    Ok(trimmed.to_owned())
}

/// One thing the KDS serves, named by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// A VCEK (DER).
    Vcek(VcekId),
    /// A chain (PEM: ASK or ASVK, then ARK).
    Chain(KeyTree, Product),
    /// A CRL (DER).
    Crl(KeyTree, Product),
}

impl Item {
    /// The KDS path (no base).
    pub fn path(&self) -> String {
        match self {
            Item::Vcek(id) => id.path(),
            Item::Chain(tree, product) => chain_path(*tree, *product),
            Item::Crl(tree, product) => crl_path(*tree, *product),
        }
    }

    /// The largest body accepted for it. AMD's are about 1.4 KB (VCEK), 3.5 KB (chain) and 1-2 KB (CRL);
    /// the bounds leave room for growth and refuse a server that streams without end.
    pub fn max_body(&self) -> usize {
        match self {
            Item::Vcek(_) => 16 * 1024,
            Item::Chain(..) => 64 * 1024,
            Item::Crl(..) => 1024 * 1024,
        }
    }

    /// Parses a KDS path, strictly: it must be exactly the path [`Item::path`] writes for what it names
    /// (product spelled as AMD spells it, hwID of the product's length in lower-case hex, every SPL present,
    /// two-digit, in AMD's order). Anything else is `None`.
    pub fn from_path(path: &str) -> Option<Item> {
        let rest = path.strip_prefix('/')?;
        let (route, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let parts: Vec<&str> = route.split('/').collect();
        let [tree, "v1", product, last] = parts.as_slice() else {
            return None;
        };
        let tree = match *tree {
            "vcek" => KeyTree::Vcek,
            "vlek" => KeyTree::Vlek,
            _ => return None,
        };
        let product = Product::ALL.into_iter().find(|p| p.name() == *product)?;
        let item = match (*last, query) {
            ("cert_chain", None) => Item::Chain(tree, product),
            ("crl", None) => Item::Crl(tree, product),
            (hwid, Some(query)) if tree == KeyTree::Vcek => {
                let bytes = hex::decode(hwid).ok()?;
                if bytes.len() != hwid_len(product) {
                    return None;
                }
                let mut chip_id = [0u8; 64];
                chip_id[..bytes.len()].copy_from_slice(&bytes);
                let spl = |name: &str| -> Option<u8> {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                        .parse()
                        .ok()
                };
                let tcb = TcbVersion {
                    fmc: if product.has_fmc_tcb_layout() {
                        Some(spl("fmcSPL")?)
                    } else {
                        None
                    },
                    bootloader: spl("blSPL")?,
                    tee: spl("teeSPL")?,
                    snp: spl("snpSPL")?,
                    microcode: spl("ucodeSPL")?,
                };
                Item::Vcek(VcekId {
                    product,
                    chip_id,
                    tcb,
                })
            }
            _ => return None,
        };
        // Round trip: only the canonical spelling names an item.
        (item.path() == path).then_some(item)
    }
}

#[cfg(test)]
mod tests;

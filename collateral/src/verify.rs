//! What makes fetched collateral trustworthy enough to use and to cache: every byte a KDS, a mirror, the
//! host, a bundle or a shared cache directory hands over is checked here against AMD's embedded roots (or
//! a simulated root the caller chose to trust) before anything keeps it.
//!
//! - a chain (`cert_chain`): exactly two PEM certificates, ASK (or ASVK) then ARK; the ARK byte-equal to
//!   AMD's embedded ARK of the product (or the trusted simulated root); the intermediate signed by it and
//!   named as AMD names it (`SEV-{product}`, `SEV-VLEK-{product}`).
//! - a VCEK: DER, named `SEV-VCEK`, signed by the product's ASK, and *for the asked identity*: its hwID is
//!   the CHIP_ID and its SPLs are the TCB the path names. A VCEK of another chip or another TCB is as useless
//!   to the verifier as a forged one, and is refused the same way, so a cache can never be poisoned with it.
//! - a CRL: DER, signed by the product's ARK; scoped to the key tree of the path it came from.

use cloister_attestation::snp::certs::{AmdCertificate, CertRole};
use cloister_attestation::snp::crl::AmdCrl;
use cloister_attestation::snp::report::SigningKey;
use cloister_attestation::snp::roots;
use cloister_attestation::snp::Product;

use crate::kds::{hwid_len, KeyTree, VcekId};

/// ARK and intermediate of a verified chain.
#[derive(Clone, Debug)]
pub struct IssuerChain {
    /// The ARK (AMD's, or the trusted simulated root).
    pub ark: AmdCertificate,
    /// The ASK (VCEK tree) or ASVK (VLEK tree).
    pub intermediate: AmdCertificate,
}

/// The root that a chain of `product` must end in: AMD's embedded ARK, or `simulated_root` when the caller
/// trusts one (and the offered ARK is it).
fn trusted_ark<'a>(
    offered: &AmdCertificate,
    product: Product,
    simulated_root: Option<&'a AmdCertificate>,
) -> Result<&'a AmdCertificate, String> {
    let embedded = &roots::embedded(product).ark;
    if offered.der() == embedded.der() {
        return Ok(embedded);
    }
    match simulated_root {
        Some(sim) if offered.der() == sim.der() => Ok(sim),
        _ => Err(format!(
            "the ARK served ({:?}, SHA-256 {}) is not AMD's ARK-{product}{}",
            offered.subject_common_name(),
            hex::encode(offered.sha256_fingerprint()),
            if simulated_root.is_some() {
                " nor the trusted simulated root"
            } else {
                ""
            }
        )),
    }
}

/// Verifies a `cert_chain` body (PEM: intermediate, then ARK).
pub fn chain(
    pem: &[u8],
    tree: KeyTree,
    product: Product,
    simulated_root: Option<&AmdCertificate>,
) -> Result<IssuerChain, String> {
    let certs = AmdCertificate::all_from_pem(pem).map_err(|e| format!("cert_chain: {e}"))?;
    let [intermediate, ark]: [AmdCertificate; 2] = certs.try_into().map_err(|v: Vec<_>| {
        format!(
            "cert_chain: expected 2 PEM certificates (ASK or ASVK, then ARK), found {}",
            v.len()
        )
    })?;
    let trusted = trusted_ark(&ark, product, simulated_root)?;
    trusted
        .verify_issued_by(trusted)
        .map_err(|e| format!("ARK: {e}"))?;
    let role = match tree {
        KeyTree::Vcek => CertRole::Ask,
        KeyTree::Vlek => CertRole::Asvk,
    };
    intermediate
        .verify_issued_by(trusted)
        .map_err(|e| format!("{role}: {e}"))?;
    intermediate
        .check_role(role, product)
        .map_err(|e| format!("{role}: {e}"))?;
    Ok(IssuerChain {
        ark: trusted.clone(),
        intermediate,
    })
}

/// Verifies a VCEK (DER) for `id`, issued by one of `issuers` (AMD's ASK of the product; the simulated
/// chain's ASK when a simulated root is trusted).
pub fn vcek(
    der: &[u8],
    id: &VcekId,
    issuers: &[&AmdCertificate],
) -> Result<AmdCertificate, String> {
    let cert = AmdCertificate::from_der(der).map_err(|e| format!("VCEK: {e}"))?;
    cert.check_role(CertRole::Vcek, id.product)
        .map_err(|e| format!("VCEK: {e}"))?;
    let mut last = String::from("no issuer to check it against");
    if !issuers
        .iter()
        .any(|issuer| match cert.verify_issued_by(issuer) {
            Ok(()) => true,
            Err(e) => {
                last = e.to_string();
                false
            }
        })
    {
        return Err(format!(
            "VCEK: not issued by the {} ASK: {last}",
            id.product
        ));
    }
    let ext = cert.amd_extensions().map_err(|e| format!("VCEK: {e}"))?;
    let product_name = ext.product_name.as_str();
    if Product::from_name(product_name) != Some(id.product) {
        return Err(format!(
            "VCEK: productName is {product_name:?}, expected {}",
            id.product
        ));
    }
    let hw_id = ext.hw_id.as_deref().unwrap_or_default();
    let expected = &id.chip_id[..hwid_len(id.product)];
    if hw_id != expected {
        return Err(format!(
            "VCEK: hwID is {}, expected {} (the VCEK of another chip)",
            hex::encode(hw_id),
            hex::encode(expected)
        ));
    }
    let t = &id.tcb;
    let pairs = [
        ("blSPL", Some(ext.bl_spl), t.bootloader),
        ("teeSPL", Some(ext.tee_spl), t.tee),
        ("snpSPL", Some(ext.snp_spl), t.snp),
        ("ucodeSPL", Some(ext.ucode_spl), t.microcode),
    ];
    for (name, found, want) in pairs {
        if found != Some(want) {
            return Err(format!(
                "VCEK: {name} is {found:?}, expected {want} (a VCEK for another TCB)"
            ));
        }
    }
    if id.product.has_fmc_tcb_layout() && ext.fmc_spl != t.fmc {
        return Err(format!(
            "VCEK: fmcSPL is {:?}, expected {:?}",
            ext.fmc_spl, t.fmc
        ));
    }
    Ok(cert)
}

/// Verifies a CRL (DER) of `tree` for `product`: signed by the product's ARK (or the trusted simulated
/// root). The CRL comes back scoped to its tree ([`AmdCrl::for_signing_key`]).
pub fn crl(
    der: &[u8],
    tree: KeyTree,
    product: Product,
    simulated_root: Option<&AmdCertificate>,
) -> Result<AmdCrl, String> {
    let crl = AmdCrl::from_der(der).map_err(|e| format!("CRL: {e}"))?;
    let embedded = &roots::embedded(product).ark;
    let signed_by = |ark: &AmdCertificate| crl.verify_issued_by(ark).is_ok();
    if !(signed_by(embedded) || simulated_root.is_some_and(signed_by)) {
        return Err(format!(
            "CRL: not signed by ARK-{product}{} (its issuer says {:?})",
            if simulated_root.is_some() {
                " nor by the trusted simulated root"
            } else {
                ""
            },
            crl.issuer_common_name()
        ));
    }
    Ok(crl.for_signing_key(match tree {
        KeyTree::Vcek => SigningKey::Vcek,
        KeyTree::Vlek => SigningKey::Vlek,
    }))
}

//! The one home of the AMD trust roots: ARK, ASK and ASVK of each product line, embedded at build
//! time. No feature, configuration or input can change them.
//!
//! Provenance (every file is AMD's certificate as served by AMD KDS, `/vcek/v1/<Product>/cert_chain`
//! for ARK+ASK and `/vlek/v1/<Product>/cert_chain` for the ASVK):
//! - ARK and ASK of Milan, Genoa and Turin: byte-identical to the chains of the real evidence in the
//!   test vectors (go-sev-guest, virtee/sev, project-oak, trustee, openpcc).
//! - ASVK (`SEV-VLEK-<Product>`): confidential-containers/trustee, `deps/verifier/src/snp/
//!   {milan,genoa,turin}_ask_ark_asvk.pem` (third block of each bundle).
//!
//! None of that provenance is trusted on its own: the tests prove that each ARK is self-signed, that
//! each ASK and ASVK verifies under its product's ARK, and that the ARK and ASK equal the chains
//! of real evidence captured on Milan, Genoa and Turin machines.

use std::sync::OnceLock;

use super::certs::{AmdCertificate, CertRole};
use super::product::Product;

const MILAN_ARK: &[u8] = include_bytes!("roots/milan/ark.pem");
const MILAN_ASK: &[u8] = include_bytes!("roots/milan/ask.pem");
const MILAN_ASVK: &[u8] = include_bytes!("roots/milan/asvk.pem");
const GENOA_ARK: &[u8] = include_bytes!("roots/genoa/ark.pem");
const GENOA_ASK: &[u8] = include_bytes!("roots/genoa/ask.pem");
const GENOA_ASVK: &[u8] = include_bytes!("roots/genoa/asvk.pem");
const TURIN_ARK: &[u8] = include_bytes!("roots/turin/ark.pem");
const TURIN_ASK: &[u8] = include_bytes!("roots/turin/ask.pem");
const TURIN_ASVK: &[u8] = include_bytes!("roots/turin/asvk.pem");

/// AMD's root and intermediate certificates for one product line.
#[derive(Clone, Debug)]
pub struct AmdRoots {
    /// The product line.
    pub product: Product,
    /// AMD Root Key, self-signed (`ARK-<Product>`).
    pub ark: AmdCertificate,
    /// AMD SEV Key, signed by the ARK; issues VCEKs (`SEV-<Product>`).
    pub ask: AmdCertificate,
    /// AMD SEV VLEK Key, signed by the ARK; issues VLEKs (`SEV-VLEK-<Product>`). Embedded for every
    /// product line; an `Option` so that a product without a published ASVK can be added.
    pub asvk: Option<AmdCertificate>,
}

impl AmdRoots {
    /// The embedded certificate of `role` (ARK, ASK or ASVK); `None` for VCEK and VLEK, which are
    /// never embedded, and for an ASVK that is not.
    pub fn certificate(&self, role: CertRole) -> Option<&AmdCertificate> {
        match role {
            CertRole::Ark => Some(&self.ark),
            CertRole::Ask => Some(&self.ask),
            CertRole::Asvk => self.asvk.as_ref(),
            CertRole::Vcek | CertRole::Vlek => None,
        }
    }
}

/// The embedded AMD certificates of `product`, parsed once.
pub fn embedded(product: Product) -> &'static AmdRoots {
    static MILAN: OnceLock<AmdRoots> = OnceLock::new();
    static GENOA: OnceLock<AmdRoots> = OnceLock::new();
    static TURIN: OnceLock<AmdRoots> = OnceLock::new();
    match product {
        Product::Milan => MILAN.get_or_init(|| load(product, MILAN_ARK, MILAN_ASK, MILAN_ASVK)),
        Product::Genoa => GENOA.get_or_init(|| load(product, GENOA_ARK, GENOA_ASK, GENOA_ASVK)),
        Product::Turin => TURIN.get_or_init(|| load(product, TURIN_ARK, TURIN_ASK, TURIN_ASVK)),
    }
}

/// The product whose embedded ARK is byte-for-byte `der`, if any.
pub fn find_embedded_ark(der: &[u8]) -> Option<Product> {
    Product::ALL
        .into_iter()
        .find(|product| embedded(*product).ark.der() == der)
}

/// The product and role of the embedded ARK, ASK or ASVK that is byte-for-byte `der`, if any.
pub fn find_embedded(der: &[u8]) -> Option<(Product, CertRole)> {
    Product::ALL.into_iter().find_map(|product| {
        let roots = embedded(product);
        [CertRole::Ark, CertRole::Ask, CertRole::Asvk]
            .into_iter()
            .find(|role| roots.certificate(*role).is_some_and(|c| c.der() == der))
            .map(|role| (product, role))
    })
}

#[allow(clippy::expect_used)]
fn load(product: Product, ark: &[u8], ask: &[u8], asvk: &[u8]) -> AmdRoots {
    // Invariant: these are the PEM files checked in next to this module, included at build time;
    // the test `embedded_roots_parse_and_chain` parses every one of them, so parsing cannot fail.
    let parse =
        |pem: &[u8]| AmdCertificate::from_pem(pem).expect("embedded AMD certificate parses");
    AmdRoots {
        product,
        ark: parse(ark),
        ask: parse(ask),
        asvk: Some(parse(asvk)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::snp::certs::CertError;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/snp");

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(format!("{VECTORS}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn embedded_roots_parse_and_chain() {
        for product in Product::ALL {
            let roots = embedded(product);
            assert_eq!(roots.product, product);
            let asvk = roots.asvk.as_ref().expect("every product has an ASVK");
            for (cert, role) in [
                (&roots.ark, CertRole::Ark),
                (&roots.ask, CertRole::Ask),
                (asvk, CertRole::Asvk),
            ] {
                cert.check_role(role, product).unwrap();
                assert_eq!(roots.certificate(role), Some(cert));
                // Long-lived: valid from issuance until 2045 at least.
                cert.check_valid_at(1_735_689_600).unwrap(); // 2025-01-01
                cert.check_valid_at(2_366_841_600).unwrap(); // 2045-01-01
            }
            roots.ark.verify_issued_by(&roots.ark).unwrap();
            roots.ask.verify_issued_by(&roots.ark).unwrap();
            asvk.verify_issued_by(&roots.ark).unwrap();
            assert_eq!(roots.certificate(CertRole::Vcek), None);
        }
    }

    #[test]
    fn subject_common_names() {
        for (product, name) in [
            (Product::Milan, "Milan"),
            (Product::Genoa, "Genoa"),
            (Product::Turin, "Turin"),
        ] {
            let roots = embedded(product);
            assert_eq!(roots.ark.subject_common_name(), format!("ARK-{name}"));
            assert_eq!(roots.ark.issuer_common_name(), format!("ARK-{name}"));
            assert_eq!(roots.ask.subject_common_name(), format!("SEV-{name}"));
            assert_eq!(roots.ask.issuer_common_name(), format!("ARK-{name}"));
            let asvk = roots.asvk.as_ref().unwrap();
            assert_eq!(asvk.subject_common_name(), format!("SEV-VLEK-{name}"));
            assert_eq!(asvk.issuer_common_name(), format!("ARK-{name}"));
        }
    }

    #[test]
    fn pinned_fingerprints() {
        // SHA-256 of the DER, as computed independently with `openssl x509 -fingerprint -sha256`.
        let expected = [
            (
                Product::Milan,
                CertRole::Asvk,
                "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
            ),
            (
                Product::Milan,
                CertRole::Ark,
                "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            ),
            (
                Product::Genoa,
                CertRole::Asvk,
                "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
            ),
            (
                Product::Turin,
                CertRole::Ark,
                "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
            ),
            (
                Product::Turin,
                CertRole::Ask,
                "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
            ),
            (
                Product::Turin,
                CertRole::Asvk,
                "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
            ),
        ];
        for (product, role, fingerprint) in expected {
            let cert = embedded(product).certificate(role).unwrap();
            assert_eq!(
                hex::encode(cert.sha256_fingerprint()),
                fingerprint,
                "{product} {role}"
            );
        }
    }

    #[test]
    fn no_cross_product_signatures() {
        for signer in Product::ALL {
            for signed in Product::ALL {
                if signer == signed {
                    continue;
                }
                let ark = &embedded(signer).ark;
                let roots = embedded(signed);
                for cert in [&roots.ark, &roots.ask, roots.asvk.as_ref().unwrap()] {
                    let err = cert.verify_issued_by(ark).unwrap_err();
                    assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
                }
            }
            // The ASK is not a self-signed root.
            let roots = embedded(signer);
            assert!(roots.ask.verify_issued_by(&roots.ask).is_err());
        }
    }

    #[test]
    fn vector_chains_are_the_embedded_ones() {
        let sets = [
            ("go-sev-guest_milan_vcek_v2", Product::Milan, "ask.pem"),
            ("virtee-sev_milan_vcek_v2", Product::Milan, "ask.pem"),
            ("oak_milan_vcek_v3_containers", Product::Milan, "ask.pem"),
            ("trustee_milan_vlek_v3", Product::Milan, "asvk.pem"),
            ("trustee_azure-cvm_genoa_vcek_v3", Product::Genoa, "ask.pem"),
            (
                "openpcc_azure_genoa_vcek_v3_with_crls",
                Product::Genoa,
                "ask.pem",
            ),
            ("oak_genoa_vcek_v5", Product::Genoa, "ask.pem"),
            ("oak_turin_vcek_v5", Product::Turin, "ask.pem"),
        ];
        for (set, product, intermediate) in sets {
            let roots = embedded(product);
            let ark = AmdCertificate::from_pem(&read(&format!("{set}/ark.pem"))).unwrap();
            assert_eq!(ark.der(), roots.ark.der(), "{set}: ARK");
            assert_eq!(find_embedded_ark(ark.der()), Some(product));
            let inter = AmdCertificate::from_pem(&read(&format!("{set}/{intermediate}"))).unwrap();
            let role = if intermediate == "asvk.pem" {
                CertRole::Asvk
            } else {
                CertRole::Ask
            };
            assert_eq!(Some(&inter), roots.certificate(role), "{set}: {role}");
            assert_eq!(find_embedded(inter.der()), Some((product, role)));
            assert_eq!(find_embedded_ark(inter.der()), None);
        }
    }

    #[test]
    fn embedded_pem_files_hold_one_block() {
        for pem in [
            MILAN_ARK, MILAN_ASK, MILAN_ASVK, GENOA_ARK, GENOA_ASK, GENOA_ASVK, TURIN_ARK,
            TURIN_ASK, TURIN_ASVK,
        ] {
            assert_eq!(AmdCertificate::all_from_pem(pem).unwrap().len(), 1);
        }
        assert_eq!(find_embedded_ark(b"not a certificate"), None);
        assert_eq!(find_embedded(&[]), None);
    }
}

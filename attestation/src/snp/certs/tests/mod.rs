//! Certificates of the real vectors: chains, fields, extensions, and every way a byte can be wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;

use super::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/snp");

/// One evidence set: ARK, intermediate (ASK or ASVK) and leaf (VCEK or VLEK), plus its
/// verification.json.
struct Set {
    name: String,
    dir: String,
    json: Value,
    product: Product,
    is_vlek: bool,
    ark: AmdCertificate,
    inter: AmdCertificate,
    leaf: AmdCertificate,
}

impl Set {
    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/{name}", self.dir))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", self.name))
    }

    /// An instant at which the whole chain is valid.
    fn at(&self) -> i64 {
        self.leaf.not_before_unix() + 1
    }
}

fn sets() -> &'static [Set] {
    static SETS: OnceLock<Vec<Set>> = OnceLock::new();
    SETS.get_or_init(|| {
        let mut names: Vec<String> = std::fs::read_dir(VECTORS)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.len() >= 8, "vector sets missing: {names:?}");
        names
            .into_iter()
            .map(|name| {
                let dir = format!("{VECTORS}/{name}");
                let read = |f: &str| std::fs::read(format!("{dir}/{f}")).ok();
                let json: Value =
                    serde_json::from_slice(&read("verification.json").unwrap()).unwrap();
                let product = Product::from_name(json["product"].as_str().unwrap()).unwrap();
                let is_vlek = json["leaf_kind"] == "VLEK";
                let (inter, leaf) = if is_vlek {
                    ("asvk.pem", "vlek")
                } else {
                    ("ask.pem", "vcek")
                };
                let leaf_der = read(&format!("{leaf}.der")).unwrap();
                let leaf_pem = read(&format!("{leaf}.pem")).unwrap();
                let leaf = AmdCertificate::from_der(&leaf_der).unwrap();
                assert_eq!(AmdCertificate::from_pem(&leaf_pem).unwrap(), leaf);
                Set {
                    ark: AmdCertificate::from_pem(&read("ark.pem").unwrap()).unwrap(),
                    inter: AmdCertificate::from_pem_or_der(&read(inter).unwrap()).unwrap(),
                    leaf,
                    name,
                    dir,
                    json,
                    product,
                    is_vlek,
                }
            })
            .collect()
    })
}

/// Unix seconds of "YYYY-MM-DDTHH:MM:SS+00:00" (days-from-civil, proleptic Gregorian).
fn unix(iso: &str) -> i64 {
    assert!(iso.ends_with("+00:00") && iso.len() == 25, "{iso}");
    let n = |r: Range<usize>| iso[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn cn(dn: &Value) -> &str {
    dn.as_str()
        .unwrap()
        .split(',')
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap()
}

#[test]
fn date_helper() {
    assert_eq!(unix("1970-01-01T00:00:00+00:00"), 0);
    assert_eq!(unix("2024-10-23T04:36:24+00:00"), 1_729_658_184);
    assert_eq!(unix("2048-05-15T20:03:12+00:00"), 2_473_185_792);
}

#[test]
fn vector_chains_verify() {
    for set in sets() {
        let name = &set.name;
        set.ark.verify_issued_by(&set.ark).unwrap();
        set.inter.verify_issued_by(&set.ark).unwrap();
        set.leaf.verify_issued_by(&set.inter).unwrap();
        for cert in [&set.ark, &set.inter, &set.leaf] {
            cert.check_valid_at(set.at()).unwrap();
        }
        set.ark.check_role(CertRole::Ark, set.product).unwrap();
        let (inter_role, leaf_role) = if set.is_vlek {
            (CertRole::Asvk, CertRole::Vlek)
        } else {
            (CertRole::Ask, CertRole::Vcek)
        };
        set.inter.check_role(inter_role, set.product).unwrap();
        set.leaf.check_role(leaf_role, set.product).unwrap();
        assert!(
            set.leaf.check_role(CertRole::Ark, set.product).is_err(),
            "{name}"
        );
        // The leaf is not a CA: it cannot issue anything, not even itself.
        let err = set.leaf.verify_issued_by(&set.leaf).unwrap_err();
        assert!(
            matches!(err, CertError::IssuerNotCa { .. }),
            "{name}: {err}"
        );
        // Wrong direction.
        assert!(set.ark.verify_issued_by(&set.inter).is_err(), "{name}");
    }
}

#[test]
fn vector_fields_match_verification_json() {
    for set in sets() {
        for (key, cert) in [("ark", &set.ark), ("ask", &set.inter), ("leaf", &set.leaf)] {
            let j = &set.json[key];
            let what = format!("{} {key}", set.name);
            assert_eq!(cert.subject_common_name(), cn(&j["subject"]), "{what}");
            assert_eq!(cert.issuer_common_name(), cn(&j["issuer"]), "{what}");
            let serial = j["serial"].as_u64().unwrap().to_be_bytes();
            assert_eq!(cert.serial_number(), normalize_serial(&serial), "{what}");
            let nb = unix(j["not_before"].as_str().unwrap());
            let na = unix(j["not_after"].as_str().unwrap());
            assert_eq!(cert.not_before_unix(), nb, "{what}");
            assert_eq!(cert.not_after_unix(), na, "{what}");
            assert_eq!(
                hex::encode(cert.sha256_fingerprint()),
                j["sha256"].as_str().unwrap(),
                "{what}"
            );
            cert.check_valid_at(nb).unwrap();
            cert.check_valid_at(na).unwrap();
            assert_eq!(
                cert.check_valid_at(nb - 1),
                Err(CertError::NotYetValid {
                    subject: cert.subject_common_name().to_owned(),
                    not_before: nb,
                    at: nb - 1,
                })
            );
            assert_eq!(
                cert.check_valid_at(na + 1),
                Err(CertError::Expired {
                    subject: cert.subject_common_name().to_owned(),
                    not_after: na,
                    at: na + 1,
                })
            );
        }
        assert_eq!(set.leaf.serial_number(), [0], "{}", set.name);
    }
}

#[test]
fn amd_extensions_match_verification_json() {
    for set in sets() {
        let j = &set.json["leaf_amd_extensions"];
        let ext = set.leaf.amd_extensions().unwrap();
        let spl = |k: &str| j[k].as_u64().map(|v| u8::try_from(v).unwrap());
        let expected = AmdExtensions {
            struct_version: u32::try_from(j["structVersion"].as_u64().unwrap()).unwrap(),
            product_name: j["productName"].as_str().unwrap().to_owned(),
            bl_spl: spl("blSPL").unwrap(),
            tee_spl: spl("teeSPL").unwrap(),
            snp_spl: spl("snpSPL").unwrap(),
            ucode_spl: spl("ucodeSPL").unwrap(),
            fmc_spl: spl("fmcSPL"),
            hw_id: j["hwID"].as_str().map(|h| hex::decode(h).unwrap()),
            csp_id: j["cspID"].as_str().map(str::to_owned),
        };
        assert_eq!(ext, expected, "{}", set.name);
        assert_eq!(
            Product::from_name(&ext.product_name),
            Some(set.product),
            "{}",
            set.name
        );
        // The certificate's TCB is the report's REPORTED_TCB in every set.
        let tcb = &set.json["report"]["reported_tcb"];
        assert_eq!(u64::from(ext.bl_spl), tcb["bootloader"].as_u64().unwrap());
        assert_eq!(u64::from(ext.snp_spl), tcb["snp"].as_u64().unwrap());
        assert_eq!(u64::from(ext.ucode_spl), tcb["microcode"].as_u64().unwrap());
        // hwID is the start of CHIP_ID (all of it before Turin); VLEKs have none.
        let chip_id = hex::decode(set.json["report"]["chip_id"].as_str().unwrap()).unwrap();
        match (&ext.hw_id, set.is_vlek) {
            (Some(hw_id), false) => assert!(chip_id.starts_with(hw_id), "{}", set.name),
            (None, true) => assert!(ext.csp_id.is_some(), "{}", set.name),
            other => panic!("{}: {other:?}", set.name),
        }
        // Only leaves carry AMD extensions.
        assert!(matches!(
            set.ark.amd_extensions(),
            Err(CertError::MissingExtension { .. })
        ));
    }
}

#[test]
fn turin_extension_mapping() {
    let set = sets().iter().find(|s| s.product == Product::Turin).unwrap();
    let ext = set.leaf.amd_extensions().unwrap();
    assert_eq!(ext.struct_version, 1);
    assert_eq!(ext.fmc_spl, Some(0));
    assert_eq!(
        (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl),
        (1, 0, 2, 71)
    );
    assert_eq!(
        ext.hw_id.as_deref().map(<[u8]>::len),
        Some(HW_ID_LEN_STRUCT_V1)
    );
}

#[test]
fn p384_public_keys() {
    for set in sets() {
        let key = set.leaf.p384_public_key().unwrap();
        assert_eq!(key.len(), P384_UNCOMPRESSED_POINT_LEN);
        assert_eq!(key.first(), Some(&0x04));
        let err = set.ark.p384_public_key().unwrap_err();
        assert!(
            matches!(err, CertError::NotP384Key { algorithm, curve: None, .. } if algorithm == oid::RSA_ENCRYPTION),
            "{err}"
        );
    }
}

#[test]
fn intermediate_of_another_product_is_rejected() {
    for set in sets() {
        let other = AmdCertificate::from_pem(&set.file("negative/ask_other_product.pem")).unwrap();
        assert_ne!(other.issuer_common_name(), set.ark.subject_common_name());
        let err = other.verify_issued_by(&set.ark).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature { .. }),
            "{}: {err}",
            set.name
        );
        let err = set.leaf.verify_issued_by(&other).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature { .. }),
            "{}: {err}",
            set.name
        );
        // The stray intermediate is genuine, just for another product line.
        let owner = crate::snp::roots::find_embedded(other.der());
        assert!(owner.is_some_and(|(p, _)| p != set.product), "{}", set.name);
    }
}

#[test]
fn other_chip_leaf_still_chains() {
    for set in sets() {
        let file = if set.is_vlek {
            "negative/other_chip_vlek.der"
        } else {
            "negative/other_chip_vcek.der"
        };
        let other = AmdCertificate::from_der(&set.file(file)).unwrap();
        other.verify_issued_by(&set.inter).unwrap();
        assert_ne!(
            other.p384_public_key().unwrap(),
            set.leaf.p384_public_key().unwrap()
        );
        let (a, b) = (
            other.amd_extensions().unwrap(),
            set.leaf.amd_extensions().unwrap(),
        );
        if !set.is_vlek {
            assert_ne!(a.hw_id, b.hw_id, "{}", set.name);
        }
    }
}

fn flip(der: &[u8], pos: usize) -> Vec<u8> {
    let mut out = der.to_vec();
    out[pos] ^= 0x01;
    out
}

#[test]
fn flipped_bytes_fail_verification() {
    for set in sets() {
        // A byte of the leaf's public key, inside the TBS: still parses, no longer verifies.
        let der = set.leaf.der();
        let key = set.leaf.p384_public_key().unwrap();
        let pos = der.windows(key.len()).position(|w| w == key).unwrap() + 10;
        assert!(set.leaf.layout.tbs.contains(&pos));
        let tampered = AmdCertificate::from_der(&flip(der, pos)).unwrap();
        let err = tampered.verify_issued_by(&set.inter).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature { .. }),
            "{}: {err}",
            set.name
        );

        // A byte of the intermediate's subject common name.
        let der = set.inter.der();
        let name = set.inter.subject_common_name().as_bytes();
        let pos = der.windows(name.len()).rposition(|w| w == name).unwrap() + name.len() - 1;
        assert!(set.inter.layout.subject.contains(&pos));
        let tampered = AmdCertificate::from_der(&flip(der, pos)).unwrap();
        assert_ne!(
            tampered.subject_common_name(),
            set.inter.subject_common_name()
        );
        let err = tampered.verify_issued_by(&set.ark).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature { .. }),
            "{}: {err}",
            set.name
        );
        // The leaf's signature still verifies under the (unchanged) key, but the issuer name
        // no longer matches.
        let err = set.leaf.verify_issued_by(&tampered).unwrap_err();
        assert!(
            matches!(err, CertError::IssuerNameMismatch { .. }),
            "{}: {err}",
            set.name
        );

        // The last byte of the signature.
        let der = set.leaf.der();
        let tampered = AmdCertificate::from_der(&flip(der, der.len() - 1)).unwrap();
        let err = tampered.verify_issued_by(&set.inter).unwrap_err();
        assert!(
            matches!(err, CertError::BadSignature { .. }),
            "{}: {err}",
            set.name
        );

        // The salt length in the outer algorithm only: the two algorithms differ.
        let alg = set.leaf.layout.algorithm.clone();
        let salt = der[alg.clone()]
            .windows(5)
            .position(|w| w == [0xa2, 0x03, 0x02, 0x01, 0x30])
            .unwrap();
        let tampered = AmdCertificate::from_der(&flip(der, alg.start + salt + 4)).unwrap();
        let err = tampered.verify_issued_by(&set.inter).unwrap_err();
        assert!(
            matches!(err, CertError::SignatureAlgorithmMismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn issuer_name_is_compared_after_the_signature() {
    // A genuine, correctly signed pair whose names do not chain cannot exist in AMD's PKI, so
    // check the name comparison through the shared helper with a mismatched name.
    let set = &sets()[0];
    let signed = SignedParts {
        subject: set.leaf.subject_common_name(),
        claimed_issuer: "SEV-Other",
        tbs: slice(set.leaf.der(), &set.leaf.layout.tbs),
        tbs_algorithm: slice(set.leaf.der(), &set.leaf.layout.tbs_algorithm),
        algorithm: slice(set.leaf.der(), &set.leaf.layout.algorithm),
        issuer_name: set.ark.subject_name_der(),
        signature: slice(set.leaf.der(), &set.leaf.layout.signature),
    };
    let err = verify_rsa_pss_sha384(&signed, &set.inter, IssuerUsage::CertSign).unwrap_err();
    assert_eq!(
        err,
        CertError::IssuerNameMismatch {
            subject: set.leaf.subject_common_name().to_owned(),
            expected_issuer: "SEV-Other".to_owned(),
            found_issuer: set.inter.subject_common_name().to_owned(),
        }
    );
    assert_eq!(set.leaf.issuer_name_der(), set.inter.subject_name_der());
}

/// Replaces the first occurrence of `from` (which must occur) by `to` (same length).
fn patch(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let pos = der.windows(from.len()).position(|w| w == from).unwrap();
    let mut out = der.to_vec();
    out[pos..pos + to.len()].copy_from_slice(to);
    out
}

/// DER of OID 1.3.6.1.4.1.3704.1.<arc...>.
fn amd_oid(arc: &[u8]) -> Vec<u8> {
    let mut body = vec![0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01];
    body.extend_from_slice(arc);
    let mut out = vec![0x06, u8::try_from(body.len()).unwrap()];
    out.extend(body);
    out
}

fn set_of(product: Product, vlek: bool) -> &'static Set {
    sets()
        .iter()
        .find(|s| s.product == product && s.is_vlek == vlek)
        .unwrap()
}

#[test]
fn duplicate_extension_is_rejected() {
    let set = set_of(Product::Turin, false);
    // Rename spl_5 (3.5) to blSPL (3.1): blSPL appears twice.
    let der = patch(set.leaf.der(), &amd_oid(&[3, 5]), &amd_oid(&[3, 1]));
    let err = AmdCertificate::from_der(&der).unwrap_err();
    assert_eq!(
        err,
        CertError::DuplicateExtension {
            subject: "SEV-VCEK".to_owned(),
            oid: oid::AMD_BL_SPL
        }
    );
}

#[test]
fn missing_extension_is_rejected() {
    let set = set_of(Product::Genoa, false);
    // Rename blSPL (3.1) to an unknown 3.10: ignored, so blSPL is missing.
    let der = patch(set.leaf.der(), &amd_oid(&[3, 1]), &amd_oid(&[3, 10]));
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::MissingExtension {
                extension: "blSPL",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn spl_out_of_range_or_negative_is_rejected() {
    let set = set_of(Product::Milan, true);
    // ucodeSPL 217 is encoded 02 02 00 d9; make it 0x01d9 = 473.
    let der = patch(
        set.leaf.der(),
        &[0x02, 0x02, 0x00, 0xd9],
        &[0x02, 0x02, 0x01, 0xd9],
    );
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert_eq!(
        err,
        CertError::SplOutOfRange {
            subject: "SEV-VLEK".to_owned(),
            extension: "ucodeSPL",
            value: "01d9".to_owned()
        }
    );
    // snpSPL 24 (02 01 18) made 0x98: a negative INTEGER.
    let mut snp = amd_oid(&[3, 3]);
    snp.extend_from_slice(&[0x04, 0x03, 0x02, 0x01, 0x18]);
    let mut bad = snp.clone();
    *bad.last_mut().unwrap() = 0x98;
    let der = patch(set.leaf.der(), &snp, &bad);
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::MalformedExtension {
                extension: "snpSPL",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn struct_version_must_match_fmc_and_hw_id() {
    let set = set_of(Product::Genoa, false);
    let mut v0 = amd_oid(&[1]);
    v0.extend_from_slice(&[0x04, 0x03, 0x02, 0x01, 0x00]);
    let mut v = v0.clone();
    *v.last_mut().unwrap() = 0x01;
    let der = patch(set.leaf.der(), &v0, &v);
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::FmcSplPresence {
                struct_version: 1,
                present: false,
                ..
            }
        ),
        "{err}"
    );
    *v.last_mut().unwrap() = 0x02;
    let der = patch(set.leaf.der(), &v0, &v);
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert!(
        matches!(err, CertError::UnsupportedStructVersion { version: 2, .. }),
        "{err}"
    );

    // Turin: rename fmcSPL (3.9) to the reserved 3.4; fmcSPL is then absent.
    let set = set_of(Product::Turin, false);
    let der = patch(set.leaf.der(), &amd_oid(&[3, 9]), &amd_oid(&[3, 4]));
    let err = AmdCertificate::from_der(&der)
        .unwrap()
        .amd_extensions()
        .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::FmcSplPresence {
                struct_version: 1,
                present: false,
                ..
            }
        ),
        "{err}"
    );
}

mod encoding;

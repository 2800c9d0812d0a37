//! Encodings: RSASSA-PSS parameters, PEM, role names, truncations.

use super::*;
use crate::snp::certs::signed::check_rsassa_pss_sha384;

fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let content: Vec<u8> = parts.concat();
    let mut out = vec![tag, u8::try_from(content.len()).unwrap()];
    out.extend(content);
    out
}

const OID_PSS: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,
];
const OID_SHA384_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c,
];
const OID_MGF1: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
];
const OID_SHA384: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
];
const OID_SHA256: &[u8] = &[
    0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
];
const NULL: &[u8] = &[0x05, 0x00];

struct Pss {
    hash: Option<Vec<u8>>,
    mgf: Option<Vec<u8>>,
    salt: Option<u8>,
    trailer: Option<u8>,
}

impl Pss {
    fn amd() -> Self {
        let sha384 = tlv(0x30, &[OID_SHA384, NULL]);
        Pss {
            hash: Some(sha384.clone()),
            mgf: Some(tlv(0x30, &[OID_MGF1, &sha384])),
            salt: Some(48),
            trailer: Some(1),
        }
    }

    fn params(&self) -> Vec<u8> {
        let mut fields = Vec::new();
        if let Some(h) = &self.hash {
            fields.push(tlv(0xa0, &[h]));
        }
        if let Some(m) = &self.mgf {
            fields.push(tlv(0xa1, &[m]));
        }
        if let Some(s) = self.salt {
            fields.push(tlv(0xa2, &[&tlv(0x02, &[&[s]])]));
        }
        if let Some(t) = self.trailer {
            fields.push(tlv(0xa3, &[&tlv(0x02, &[&[t]])]));
        }
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        tlv(0x30, &refs)
    }

    fn der(&self) -> Vec<u8> {
        tlv(0x30, &[OID_PSS, &self.params()])
    }

    fn check(&self) -> Result<(), CertError> {
        check_rsassa_pss_sha384(&self.der(), "test")
    }
}

fn pss_param_error(r: Result<(), CertError>) -> &'static str {
    match r {
        Err(CertError::PssParameter { parameter, .. }) => parameter,
        other => panic!("{other:?}"),
    }
}

#[test]
fn pss_parameters() {
    // Both forms occur in real AMD certificates: the 72-byte identifier with an explicit
    // trailerField (ARK, ASK, ASVK, VCEKs issued until 2023) and the 67-byte one without it
    // (VCEKs and VLEKs issued since 2024, and AMD's CRLs), which is also OpenSSL's.
    let amd = Pss::amd();
    let without_trailer = Pss {
        trailer: None,
        ..Pss::amd()
    };
    assert_eq!(amd.der().len(), 72);
    assert_eq!(without_trailer.der().len(), 67);
    let mut seen = (false, false);
    for cert in sets().iter().flat_map(|s| [&s.ark, &s.inter, &s.leaf]) {
        let alg = &cert.der()[cert.layout.algorithm.clone()];
        if alg == amd.der() {
            seen.0 = true;
        } else {
            assert_eq!(alg, without_trailer.der(), "{cert:?}");
            seen.1 = true;
        }
    }
    assert_eq!(seen, (true, true));
    amd.check().unwrap();
    without_trailer.check().unwrap();
    // Hash parameters may be absent instead of NULL.
    let bare = tlv(0x30, &[OID_SHA384]);
    Pss {
        hash: Some(bare.clone()),
        mgf: Some(tlv(0x30, &[OID_MGF1, &bare])),
        ..Pss::amd()
    }
    .check()
    .unwrap();

    let sha256 = tlv(0x30, &[OID_SHA256, NULL]);
    let cases = [
        (
            Pss {
                salt: Some(32),
                ..Pss::amd()
            },
            "saltLength",
        ),
        (
            Pss {
                salt: None,
                ..Pss::amd()
            },
            "saltLength",
        ),
        (
            Pss {
                trailer: Some(2),
                ..Pss::amd()
            },
            "trailerField",
        ),
        (
            Pss {
                hash: None,
                ..Pss::amd()
            },
            "hashAlgorithm",
        ),
        (
            Pss {
                hash: Some(sha256.clone()),
                ..Pss::amd()
            },
            "hashAlgorithm",
        ),
        (
            Pss {
                mgf: None,
                ..Pss::amd()
            },
            "maskGenAlgorithm",
        ),
        (
            Pss {
                mgf: Some(tlv(0x30, &[OID_SHA384, &sha256])),
                ..Pss::amd()
            },
            "maskGenAlgorithm",
        ),
        (
            Pss {
                mgf: Some(tlv(0x30, &[OID_MGF1, &sha256])),
                ..Pss::amd()
            },
            "maskGenAlgorithm hash",
        ),
        (
            Pss {
                hash: Some(tlv(0x30, &[OID_SHA384, &[0x02, 0x01, 0x00]])),
                ..Pss::amd()
            },
            "hashAlgorithm",
        ),
    ];
    for (pss, parameter) in cases {
        assert_eq!(pss_param_error(pss.check()), parameter);
    }

    // No parameters at all.
    let err = check_rsassa_pss_sha384(&tlv(0x30, &[OID_PSS]), "test");
    assert_eq!(pss_param_error(err), "parameters");
    // PKCS#1 v1.5.
    let err = check_rsassa_pss_sha384(&tlv(0x30, &[OID_SHA384_RSA, NULL]), "test");
    assert!(matches!(
        err,
        Err(CertError::UnsupportedSignatureAlgorithm { .. })
    ));

    // Fields out of order, repeated, unknown, or trailing bytes: malformed.
    let amd_params = Pss::amd().params();
    let fields = &amd_params[2..];
    let (hash, rest) = fields.split_at(15);
    let (mgf, rest) = rest.split_at(28);
    let (salt, trailer) = rest.split_at(5);
    for bad in [
        tlv(0x30, &[mgf, hash, salt, trailer]),
        tlv(0x30, &[hash, mgf, salt, salt, trailer]),
        tlv(
            0x30,
            &[hash, mgf, salt, trailer, &[0xa4, 0x03, 0x02, 0x01, 0x00]],
        ),
        tlv(0x30, &[hash, mgf, salt, trailer, &[0x05, 0x00]]),
    ] {
        let err = check_rsassa_pss_sha384(&tlv(0x30, &[OID_PSS, &bad]), "test");
        assert!(matches!(err, Err(CertError::Malformed { .. })), "{err:?}");
    }
    let mut trailing = Pss::amd().der();
    trailing.push(0);
    assert!(matches!(
        check_rsassa_pss_sha384(&trailing, "test"),
        Err(CertError::Malformed { .. })
    ));
}

#[test]
fn pem_handling() {
    let set = &sets()[0];
    let ark_pem = set.file("ark.pem");
    let inter_pem = set.file(if set.is_vlek { "asvk.pem" } else { "ask.pem" });
    // Leading whitespace is fine for the sniffing.
    let mut spaced = b"\n  \r\n".to_vec();
    spaced.extend_from_slice(&ark_pem);
    assert_eq!(AmdCertificate::from_pem_or_der(&spaced).unwrap(), set.ark);
    // Two blocks: from_pem refuses, all_from_pem reads both in order.
    let bundle = [inter_pem.as_slice(), b"\n", ark_pem.as_slice()].concat();
    assert_eq!(
        AmdCertificate::from_pem(&bundle),
        Err(CertError::PemBlockCount {
            label: "CERTIFICATE",
            found: 2
        })
    );
    assert_eq!(
        AmdCertificate::all_from_pem(&bundle).unwrap(),
        vec![set.inter.clone(), set.ark.clone()]
    );
    assert!(matches!(
        AmdCertificate::all_from_pem(b"no pem here"),
        Err(CertError::PemBlockCount { found: 0, .. })
    ));
    // Wrong label, broken base64, truncated armour.
    let relabelled =
        pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, set.ark.der()).unwrap();
    assert!(matches!(
        AmdCertificate::from_pem(relabelled.as_bytes()),
        Err(CertError::PemLabel { .. })
    ));
    let mut broken = ark_pem.clone();
    broken[40] = b'!';
    assert!(matches!(
        AmdCertificate::from_pem(&broken),
        Err(CertError::Pem { .. })
    ));
    let truncated = &ark_pem[..ark_pem.len() - 10];
    assert!(AmdCertificate::from_pem(truncated).is_err());
    assert!(AmdCertificate::all_from_pem(truncated).is_err());
    // DER with trailing bytes.
    let mut der = set.ark.der().to_vec();
    der.push(0);
    assert!(matches!(
        AmdCertificate::from_der(&der),
        Err(CertError::Malformed { .. })
    ));
}

#[test]
fn role_names() {
    assert_eq!(
        CertRole::Asvk.expected_common_name(Product::Genoa),
        "SEV-VLEK-Genoa"
    );
    assert_eq!(
        CertRole::Vlek.expected_common_name(Product::Turin),
        "SEV-VLEK"
    );
    assert_eq!(CertRole::Vcek.to_string(), "VCEK");
    let debug = format!("{:?}", sets()[0].leaf);
    assert!(
        debug.contains("SEV-VCEK") || debug.contains("SEV-VLEK"),
        "{debug}"
    );
}

#[test]
fn every_truncation_of_real_certificates_is_an_error() {
    for set in sets() {
        for cert in [&set.ark, &set.inter, &set.leaf] {
            let der = cert.der();
            for len in 0..der.len() {
                assert!(AmdCertificate::from_der(&der[..len]).is_err(), "{len}");
            }
        }
    }
}

/// (certificate DER, its issuer) for every certificate in the vectors.
fn corpus() -> &'static [(Vec<u8>, AmdCertificate)] {
    static CORPUS: OnceLock<Vec<(Vec<u8>, AmdCertificate)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        sets()
            .iter()
            .flat_map(|s| {
                [
                    (s.ark.der().to_vec(), s.ark.clone()),
                    (s.inter.der().to_vec(), s.ark.clone()),
                    (s.leaf.der().to_vec(), s.inter.clone()),
                ]
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
        fuzz_certificate(&data);
        crate::snp::crl::fuzz_crl(&data);
        // Also behind a plausible outer header.
        let mut framed = vec![0x30, 0x82, 0x05, 0x00];
        framed.extend_from_slice(&data);
        fuzz_certificate(&framed);
    }

    #[test]
    fn truncated_real_certificates_are_rejected(
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (der, _) = which.get(corpus());
        let len = cut.index(der.len());
        prop_assert!(AmdCertificate::from_der(&der[..len]).is_err());
        fuzz_certificate(&der[..len]);
    }

    #[test]
    fn mutated_real_certificates_never_verify(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let (der, issuer) = which.get(corpus());
        let mut mutated = der.clone();
        let pos = at.index(mutated.len());
        mutated[pos] ^= xor;
        fuzz_certificate(&mutated);
        if let Ok(cert) = AmdCertificate::from_der(&mutated) {
            let _ = cert.amd_extensions();
            prop_assert!(cert.verify_issued_by(issuer).is_err(), "byte {pos} ^ {xor:#x} still verifies");
        }
    }
}

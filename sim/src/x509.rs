//! Issuing the simulated key hierarchy's certificates and CRLs, in AMD's profile.
//!
//! ring cannot build certificates and rcgen cannot sign RSASSA-PSS, so each `TBSCertificate` (and
//! `TBSCertList`) is built with x509-cert and signed with ring's `RsaKeyPair::sign(&RSA_PSS_SHA384, ..)`.
//!
//! The profile copies AMD's certificates (checked field by field against the real ARK/ASK/ASVK/VCEK/VLEK
//! of the test vectors, see the tests):
//! - Subject and issuer Names: OU, C, L, ST, O, CN in that order, UTF8String (C PrintableString). The
//!   values say SIMULATED: O is [`SIM_ORGANIZATION`], the ARK's CN is `ARK-<Product> SIMULATED`.
//! - ARK: serial `<gen>0000` (gen 1 Milan, 2 Genoa, 3 Turin), 25 years, extensions keyUsage (critical:
//!   keyCertSign, cRLSign), subjectKeyIdentifier (SHA-1 of the RSAPublicKey), basicConstraints (critical:
//!   cA), cRLDistributionPoints.
//! - ASK / ASVK: serials `<gen>0001` / `<gen>0101`, 25 years, subjectKeyIdentifier,
//!   authorityKeyIdentifier (key id), basicConstraints (critical: cA, pathLen 0), keyUsage (critical:
//!   keyCertSign), cRLDistributionPoints (`vcek` / `vlek`).
//! - VCEK / VLEK: serial 0, 7 years / 1 year, ECDSA P-384 key, AMD's extensions only and in AMD's order:
//!   structVersion, productName, [fmcSPL on Turin], blSPL, teeSPL, [spl_4 on Milan/Genoa], ... , snpSPL,
//!   ucodeSPL, then hwID (VCEK, the raw chip id bytes) or cspID (VLEK).
//! - Signatures: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48. The ARK writes trailerField 1 explicitly in
//!   what it signs (as AMD's ARK does); VCEKs, VLEKs and CRLs leave it to its default (as AMD's current
//!   ones do), so both encodings the verifier accepts are exercised.
//! - Times: UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).

use std::time::Duration;

use der::asn1::{
    Any, BitString, GeneralizedTime, Ia5String, Ia5StringRef, ObjectIdentifier, OctetString,
    PrintableStringRef, SetOfVec, Uint, UtcTime, Utf8StringRef,
};
use der::{DateTime, Decode, Encode};
use ring::rand::SecureRandom;
use ring::signature::{RsaKeyPair, RSA_PSS_SHA384};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlDistributionPoints, CrlNumber, KeyUsage,
    KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use super::keys;
use super::state::PlatformState;
use super::{SimError, SIM_CSP_ID, SIM_ORGANIZATION, SIM_ROOT_CN_SUFFIX};
use cloister_attestation::snp::certs::{oid, AmdCertificate, CertRole};
use cloister_attestation::snp::Product;

const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const OID_L: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.7");
const OID_ST: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.8");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_CRL_DP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.31");
const OID_CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");

/// The name attributes other than CN, in AMD's order (OU, C, L, ST, O); AMD writes "Engineering",
/// "US", "Santa Clara", "CA", "Advanced Micro Devices".
const NAME_OU: &str = "Cloister simulated platform";
const NAME_C: &str = "ZZ";
const NAME_L: &str = "Simulated";
const NAME_ST: &str = "ZZ";

/// Where AMD's CRL distribution points point (`https://kdsintf.amd.com/vcek/v1/Genoa/crl`); the
/// simulated ones use a reserved, unresolvable domain (RFC 2606 `.invalid`).
const CRL_BASE_URL: &str = "https://kdsintf.cloister-simulated.invalid";

/// Validity of ARK, ASK and ASVK (AMD: 25 years to the second).
const CA_YEARS: u16 = 25;
/// Validity of a VCEK (AMD: 7 years).
const VCEK_YEARS: u16 = 7;
/// Validity of a VLEK (AMD: 1 year).
const VLEK_YEARS: u16 = 1;

/// RSASSA-PSS-params for SHA-384 / MGF1-SHA-384 / salt 48, with trailerField 1 written out (72-byte
/// AlgorithmIdentifier, as in AMD's ARK, ASK and ASVK).
const PSS_PARAMS_WITH_TRAILER: &[u8] = &[
    0x30, 0x39, // SEQUENCE
    0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, // [0] sha384
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, // [1] mgf1(sha384)
    0xa2, 0x03, 0x02, 0x01, 0x30, // [2] saltLength 48
    0xa3, 0x03, 0x02, 0x01, 0x01, // [3] trailerField 1
];
/// The same without trailerField (67-byte AlgorithmIdentifier, as in AMD's VCEKs, VLEKs and CRLs).
const PSS_PARAMS_DEFAULT_TRAILER: &[u8] = &[
    0x30, 0x34, // SEQUENCE
    0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, // [0] sha384
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, // [1] mgf1(sha384)
    0xa2, 0x03, 0x02, 0x01, 0x30, // [2] saltLength 48
];

fn der_err(what: &'static str) -> impl FnOnce(der::Error) -> SimError {
    move |source| SimError::Der { what, source }
}

/// One issued certificate with its private key.
pub(super) struct Issued {
    pub(super) der: Vec<u8>,
    pub(super) key_pkcs8: Zeroizing<Vec<u8>>,
}

impl Issued {
    /// The certificate as PEM (`CERTIFICATE`, LF line endings).
    pub(super) fn pem(&self) -> Result<String, SimError> {
        pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &self.der).map_err(
            |e| SimError::Der {
                what: "PEM",
                source: e.into(),
            },
        )
    }
}

/// The VLEK half of a hierarchy.
pub(super) struct VlekMaterial {
    pub(super) asvk: Issued,
    pub(super) vlek: Issued,
}

/// A freshly generated simulated key hierarchy.
pub(super) struct Hierarchy {
    pub(super) ark: Issued,
    pub(super) ask: Issued,
    pub(super) vcek: Issued,
    pub(super) vlek: Option<VlekMaterial>,
}

impl Hierarchy {
    /// Generates every key and certificate of a platform, and checks the result with the production
    /// certificate code (chain signatures, AMD extensions) before anything is written.
    pub(super) fn generate(st: &PlatformState, rng: &dyn SecureRandom) -> Result<Self, SimError> {
        let product = st.product;
        let ark_key = keys::generate_rsa(rng)?;
        let ark_name = name(&format!(
            "{}{SIM_ROOT_CN_SUFFIX}",
            CertRole::Ark.expected_common_name(product)
        ))?;
        let ark_der = issue_ca(
            st,
            Ca::Ark,
            &ark_key.pair,
            &ark_name,
            &ark_name,
            &ark_key.pair,
            rng,
        )?;
        let ark = AmdCertificate::from_der(&ark_der)?;
        ark.verify_issued_by(&ark)?;

        let ask_key = keys::generate_rsa(rng)?;
        let ask_der = issue_ca(
            st,
            Ca::Ask,
            &ask_key.pair,
            &name(&CertRole::Ask.expected_common_name(product))?,
            &ark_name,
            &ark_key.pair,
            rng,
        )?;
        let ask = AmdCertificate::from_der(&ask_der)?;
        ask.verify_issued_by(&ark)?;

        let (vcek_pkcs8, vcek_public) = keys::generate_ecdsa(rng)?;
        let vcek_der = issue_leaf(st, CertRole::Vcek, &vcek_public, &ask, &ask_key.pair, rng)?;
        let vcek = AmdCertificate::from_der(&vcek_der)?;
        vcek.verify_issued_by(&ask)?;
        vcek.amd_extensions()?;

        let vlek = if st.vlek {
            let asvk_key = keys::generate_rsa(rng)?;
            let asvk_der = issue_ca(
                st,
                Ca::Asvk,
                &asvk_key.pair,
                &name(&CertRole::Asvk.expected_common_name(product))?,
                &ark_name,
                &ark_key.pair,
                rng,
            )?;
            let asvk = AmdCertificate::from_der(&asvk_der)?;
            asvk.verify_issued_by(&ark)?;
            let (vlek_pkcs8, vlek_public) = keys::generate_ecdsa(rng)?;
            let vlek_der =
                issue_leaf(st, CertRole::Vlek, &vlek_public, &asvk, &asvk_key.pair, rng)?;
            let vlek = AmdCertificate::from_der(&vlek_der)?;
            vlek.verify_issued_by(&asvk)?;
            vlek.amd_extensions()?;
            Some(VlekMaterial {
                asvk: Issued {
                    der: asvk_der,
                    key_pkcs8: asvk_key.pkcs8,
                },
                vlek: Issued {
                    der: vlek_der,
                    key_pkcs8: vlek_pkcs8,
                },
            })
        } else {
            None
        };

        Ok(Hierarchy {
            ark: Issued {
                der: ark_der,
                key_pkcs8: ark_key.pkcs8,
            },
            ask: Issued {
                der: ask_der,
                key_pkcs8: ask_key.pkcs8,
            },
            vcek: Issued {
                der: vcek_der,
                key_pkcs8: vcek_pkcs8,
            },
            vlek,
        })
    }
}

/// Length of hwID in the VCEK of `product`: Turin 8 bytes, Milan and Genoa 64.
pub(super) fn hw_id_len(product: Product) -> usize {
    match product {
        Product::Turin => cloister_attestation::snp::certs::HW_ID_LEN_STRUCT_V1,
        Product::Milan | Product::Genoa => cloister_attestation::snp::certs::HW_ID_LEN_STRUCT_V0,
    }
}

/// The generation number AMD uses in its ARK/ASK/ASVK serials (0x010000 Milan ARK, 0x020000 Genoa,
/// 0x030000 Turin).
fn serial_generation(product: Product) -> u8 {
    match product {
        Product::Milan => 1,
        Product::Genoa => 2,
        Product::Turin => 3,
    }
}

/// A Name in AMD's attribute order, with the simulated values and common name `cn`.
fn name(cn: &str) -> Result<Name, SimError> {
    let utf8 = |s: &str| -> Result<Any, SimError> {
        Any::encode_from(&Utf8StringRef::new(s).map_err(der_err("subject name"))?)
            .map_err(der_err("subject name"))
    };
    let printable = Any::encode_from(&PrintableStringRef::new(NAME_C).map_err(der_err("C"))?)
        .map_err(der_err("C"))?;
    let attributes = [
        (OID_OU, utf8(NAME_OU)?),
        (OID_C, printable),
        (OID_L, utf8(NAME_L)?),
        (OID_ST, utf8(NAME_ST)?),
        (OID_O, utf8(SIM_ORGANIZATION)?),
        (oid::COMMON_NAME, utf8(cn)?),
    ];
    let mut rdns = Vec::with_capacity(attributes.len());
    for (oid, value) in attributes {
        let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])
            .map_err(der_err("subject name"))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

/// An X.509 Time for `unix` seconds: UTCTime before 2050, GeneralizedTime from 2050 on.
fn x509_time(unix: i64) -> Result<Time, SimError> {
    let secs = u64::try_from(unix).map_err(|_| SimError::Der {
        what: "validity",
        source: der::Tag::UtcTime.value_error(),
    })?;
    let dt =
        DateTime::from_unix_duration(Duration::from_secs(secs)).map_err(der_err("validity"))?;
    if dt.year() < 2050 {
        Ok(Time::UtcTime(
            UtcTime::from_date_time(dt).map_err(der_err("validity"))?,
        ))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// `unix` plus `years` calendar years, same month, day and time (29 February becomes 28 February in a
/// common year), as AMD's validity periods are.
fn add_years(unix: i64, years: u16) -> Result<i64, SimError> {
    let secs = u64::try_from(unix).map_err(|_| SimError::Der {
        what: "validity",
        source: der::Tag::UtcTime.value_error(),
    })?;
    let dt =
        DateTime::from_unix_duration(Duration::from_secs(secs)).map_err(der_err("validity"))?;
    let year = dt.year().saturating_add(years);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let day = if dt.month() == 2 && dt.day() == 29 && !leap {
        28
    } else {
        dt.day()
    };
    let then = DateTime::new(year, dt.month(), day, dt.hour(), dt.minutes(), dt.seconds())
        .map_err(der_err("validity"))?;
    i64::try_from(then.unix_duration().as_secs()).map_err(|_| SimError::Der {
        what: "validity",
        source: der::Tag::UtcTime.value_error(),
    })
}

fn validity(from_unix: i64, years: u16) -> Result<Validity, SimError> {
    Ok(Validity {
        not_before: x509_time(from_unix)?,
        not_after: x509_time(add_years(from_unix, years)?)?,
    })
}

fn pss_algorithm(with_trailer: bool) -> Result<AlgorithmIdentifierOwned, SimError> {
    let params = if with_trailer {
        PSS_PARAMS_WITH_TRAILER
    } else {
        PSS_PARAMS_DEFAULT_TRAILER
    };
    Ok(AlgorithmIdentifierOwned {
        oid: oid::RSASSA_PSS,
        parameters: Some(Any::from_der(params).map_err(der_err("RSASSA-PSS parameters"))?),
    })
}

fn extension<T: Encode>(
    oid: ObjectIdentifier,
    critical: bool,
    value: &T,
    what: &'static str,
) -> Result<Extension, SimError> {
    raw_extension(oid, critical, value.to_der().map_err(der_err(what))?, what)
}

fn raw_extension(
    oid: ObjectIdentifier,
    critical: bool,
    value: Vec<u8>,
    what: &'static str,
) -> Result<Extension, SimError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(der_err(what))?,
    })
}

/// subjectKeyIdentifier as AMD computes it: SHA-1 of the RSAPublicKey (RFC 5280 4.2.1.2, method 1).
fn key_identifier(key: &RsaKeyPair) -> Vec<u8> {
    ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        key.public().as_ref(),
    )
    .as_ref()
    .to_vec()
}

fn crl_distribution_point(kind: &str, product: Product) -> Result<Extension, SimError> {
    let url = format!("{CRL_BASE_URL}/{kind}/v1/{product}/crl");
    let dp = CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![
            GeneralName::UniformResourceIdentifier(
                Ia5String::new(&url).map_err(der_err("cRLDistributionPoints"))?,
            ),
        ])),
        reasons: None,
        crl_issuer: None,
    }]);
    extension(OID_CRL_DP, false, &dp, "cRLDistributionPoints")
}

fn rsa_spki(key: &RsaKeyPair) -> Result<SubjectPublicKeyInfoOwned, SimError> {
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        subject_public_key: BitString::from_bytes(key.public().as_ref())
            .map_err(der_err("RSA public key"))?,
    })
}

fn p384_spki(point: &[u8]) -> Result<SubjectPublicKeyInfoOwned, SimError> {
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&oid::SECP384R1).map_err(der_err("EC parameters"))?),
        },
        subject_public_key: BitString::from_bytes(point).map_err(der_err("EC public key"))?,
    })
}

fn rsa_pss_sign(
    key: &RsaKeyPair,
    message: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SimError> {
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PSS_SHA384, rng, message, &mut signature)
        .map_err(|_| SimError::Signing("RSA"))?;
    Ok(signature)
}

/// Builds, signs and encodes a certificate.
#[allow(clippy::too_many_arguments)]
fn sign_certificate(
    serial: &[u8],
    algorithm: AlgorithmIdentifierOwned,
    issuer: &Name,
    validity: Validity,
    subject: &Name,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
    signer: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SimError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(serial).map_err(der_err("serial number"))?,
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        validity,
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err("TBSCertificate"))?;
    let signature = rsa_pss_sign(signer, &tbs_der, rng)?;
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(der_err("signature"))?,
    }
    .to_der()
    .map_err(der_err("certificate"))
}

/// The RSA certificate authorities of the hierarchy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ca {
    Ark,
    Ask,
    Asvk,
}

/// Issues the ARK (self-signed: `subject_key` is `signer`), the ASK or the ASVK.
fn issue_ca(
    st: &PlatformState,
    role: Ca,
    subject_key: &RsaKeyPair,
    subject: &Name,
    issuer: &Name,
    signer: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SimError> {
    let generation = serial_generation(st.product);
    let ski = SubjectKeyIdentifier(
        OctetString::new(key_identifier(subject_key)).map_err(der_err("subjectKeyIdentifier"))?,
    );
    let ski_ext = extension(OID_SKI, false, &ski, "subjectKeyIdentifier")?;
    let (serial, extensions) = match role {
        Ca::Ark => (
            [generation, 0x00, 0x00],
            vec![
                extension(
                    oid::KEY_USAGE,
                    true,
                    &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
                    "keyUsage",
                )?,
                ski_ext,
                extension(
                    oid::BASIC_CONSTRAINTS,
                    true,
                    &BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    },
                    "basicConstraints",
                )?,
                crl_distribution_point("vcek", st.product)?,
            ],
        ),
        Ca::Ask | Ca::Asvk => {
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(
                    OctetString::new(key_identifier(signer))
                        .map_err(der_err("authorityKeyIdentifier"))?,
                ),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            };
            let (serial, kind) = if role == Ca::Ask {
                ([generation, 0x00, 0x01], "vcek")
            } else {
                ([generation, 0x01, 0x01], "vlek")
            };
            (
                serial,
                vec![
                    ski_ext,
                    extension(OID_AKI, false, &aki, "authorityKeyIdentifier")?,
                    extension(
                        oid::BASIC_CONSTRAINTS,
                        true,
                        &BasicConstraints {
                            ca: true,
                            path_len_constraint: Some(0),
                        },
                        "basicConstraints",
                    )?,
                    extension(
                        oid::KEY_USAGE,
                        true,
                        &KeyUsage(KeyUsages::KeyCertSign.into()),
                        "keyUsage",
                    )?,
                    crl_distribution_point(kind, st.product)?,
                ],
            )
        }
    };
    sign_certificate(
        &serial,
        pss_algorithm(true)?,
        issuer,
        validity(st.issued_at_unix, CA_YEARS)?,
        subject,
        rsa_spki(subject_key)?,
        extensions,
        signer,
        rng,
    )
}

/// AMD's VCEK/VLEK extensions for the platform `st`, in AMD's order.
fn amd_extensions(st: &PlatformState, role: CertRole) -> Result<Vec<Extension>, SimError> {
    let int =
        |oid: ObjectIdentifier, value: u8, what: &'static str| extension(oid, false, &value, what);
    let tcb = st.tcb;
    let turin = st.product == Product::Turin;
    // productName: the VCEK names the stepping on Milan ("Milan-B0"); VLEKs and Genoa/Turin VCEKs
    // carry the bare product name.
    let product_name = match (st.product, role) {
        (Product::Milan, CertRole::Vcek) => "Milan-B0".to_owned(),
        (product, _) => product.name().to_owned(),
    };
    let mut v = vec![
        extension(
            oid::AMD_STRUCT_VERSION,
            false,
            &u32::from(turin),
            "structVersion",
        )?,
        extension(
            oid::AMD_PRODUCT_NAME,
            false,
            &Ia5StringRef::new(&product_name).map_err(der_err("productName"))?,
            "productName",
        )?,
    ];
    if turin {
        v.push(int(oid::AMD_FMC_SPL, tcb.fmc.unwrap_or(0), "fmcSPL")?);
        v.push(int(oid::AMD_BL_SPL, tcb.bootloader, "blSPL")?);
        v.push(int(oid::AMD_TEE_SPL, tcb.tee, "teeSPL")?);
        v.push(int(oid::AMD_SNP_SPL, tcb.snp, "snpSPL")?);
        v.push(int(oid::AMD_SPL_5, 0, "spl_5")?);
        v.push(int(oid::AMD_SPL_6, 0, "spl_6")?);
        v.push(int(oid::AMD_SPL_7, 0, "spl_7")?);
    } else {
        v.push(int(oid::AMD_BL_SPL, tcb.bootloader, "blSPL")?);
        v.push(int(oid::AMD_TEE_SPL, tcb.tee, "teeSPL")?);
        v.push(int(oid::AMD_SPL_4, 0, "spl_4")?);
        v.push(int(oid::AMD_SPL_5, 0, "spl_5")?);
        v.push(int(oid::AMD_SPL_6, 0, "spl_6")?);
        v.push(int(oid::AMD_SPL_7, 0, "spl_7")?);
        v.push(int(oid::AMD_SNP_SPL, tcb.snp, "snpSPL")?);
    }
    v.push(int(oid::AMD_UCODE_SPL, tcb.microcode, "ucodeSPL")?);
    match role {
        // hwID: the extension value is the chip id itself (no inner OCTET STRING), as AMD writes it.
        CertRole::Vcek => v.push(raw_extension(
            oid::AMD_HW_ID,
            false,
            st.chip_id[..hw_id_len(st.product)].to_vec(),
            "hwID",
        )?),
        _ => v.push(extension(
            oid::AMD_CSP_ID,
            false,
            &Ia5StringRef::new(SIM_CSP_ID).map_err(der_err("cspID"))?,
            "cspID",
        )?),
    }
    Ok(v)
}

/// Issues a VCEK (for `st.chip_id`) or a VLEK for the P-384 key `public` (uncompressed point), signed by
/// `issuer` (the ASK or ASVK) with `issuer_key`.
pub(super) fn issue_leaf(
    st: &PlatformState,
    role: CertRole,
    public: &[u8],
    issuer: &AmdCertificate,
    issuer_key: &RsaKeyPair,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SimError> {
    let issuer_name = Name::from_der(issuer.subject_name_der()).map_err(der_err("issuer name"))?;
    let years = if role == CertRole::Vlek {
        VLEK_YEARS
    } else {
        VCEK_YEARS
    };
    sign_certificate(
        &[0],
        pss_algorithm(false)?,
        &issuer_name,
        validity(st.issued_at_unix, years)?,
        &name(&role.expected_common_name(st.product))?,
        p384_spki(public)?,
        amd_extensions(st, role)?,
        issuer_key,
        rng,
    )
}

/// Issues a CRL signed by the ARK, revoking `revoked` (big-endian serial numbers) as of `this_update`.
pub(super) fn issue_crl(
    ark: &AmdCertificate,
    ark_key: &RsaKeyPair,
    revoked: &[&[u8]],
    this_update_unix: i64,
    next_update_unix: i64,
    rng: &dyn SecureRandom,
) -> Result<Vec<u8>, SimError> {
    let algorithm = pss_algorithm(false)?;
    let this_update = x509_time(this_update_unix)?;
    let mut entries = Vec::with_capacity(revoked.len());
    for serial in revoked {
        entries.push(RevokedCert {
            serial_number: SerialNumber::new(serial).map_err(der_err("revoked serial"))?,
            revocation_date: this_update,
            crl_entry_extensions: None,
        });
    }
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(key_identifier(ark_key)).map_err(der_err("authorityKeyIdentifier"))?,
        ),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    // cRLNumber: monotonic, so thisUpdate serves.
    let number =
        CrlNumber(Uint::new(&this_update_unix.max(0).to_be_bytes()).map_err(der_err("cRLNumber"))?);
    let tbs = TbsCertList {
        version: Version::V2,
        signature: algorithm.clone(),
        issuer: Name::from_der(ark.subject_name_der()).map_err(der_err("issuer name"))?,
        this_update,
        next_update: Some(x509_time(next_update_unix)?),
        revoked_certificates: if entries.is_empty() {
            None
        } else {
            Some(entries)
        },
        crl_extensions: Some(vec![
            extension(OID_AKI, false, &aki, "authorityKeyIdentifier")?,
            extension(OID_CRL_NUMBER, false, &number, "cRLNumber")?,
        ]),
    };
    let tbs_der = tbs.to_der().map_err(der_err("TBSCertList"))?;
    let signature = rsa_pss_sign(ark_key, &tbs_der, rng)?;
    CertificateList {
        tbs_cert_list: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(der_err("signature"))?,
    }
    .to_der()
    .map_err(der_err("CRL"))
}

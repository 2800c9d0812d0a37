//! AMD SEV-SNP certificates: parsing, the RSASSA-PSS signatures of AMD's key hierarchy, and the
//! VCEK/VLEK extensions that carry the TCB and the chip identity.
//!
//! AMD's hierarchy per product line: the self-signed ARK (AMD Root Key) signs the ASK (AMD SEV Key)
//! and the ASVK (AMD SEV VLEK Key); the ASK signs per-chip, per-TCB VCEKs, the ASVK signs VLEKs
//! issued to cloud providers. ARK, ASK and ASVK are RSA-4096 keys and every certificate they issue is
//! signed with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt length 48. VCEK and VLEK are ECDSA P-384 keys
//! that sign attestation reports.
//!
//! Trust assumptions and input handling:
//! - Every byte parsed here may come from the untrusted host (certificate tables, KDS responses
//!   relayed by the host). Parsing never panics and never indexes without a bounds check.
//! - Nothing here decides which root is trusted: [`AmdCertificate::verify_issued_by`] only proves that
//!   one certificate signed another. Pinning the ARK is the job of `roots` and the verifier.
//! - Signatures are checked over the exact TBS bytes of the input, never over a re-encoding, and the
//!   algorithm identifiers are parsed rather than compared byte for byte: AMD's ARK/ASK/ASVK and
//!   VCEKs issued until 2023 write the PSS `trailerField` explicitly (a 72-byte identifier), while
//!   VCEKs and VLEKs issued since 2024, AMD's CRLs and OpenSSL leave the default out (67 bytes).

use core::fmt;
use core::ops::Range;
use std::borrow::Cow;

use der::asn1::{
    AnyRef, BitStringRef, Ia5StringRef, ObjectIdentifier, PrintableStringRef, UintRef,
    Utf8StringRef,
};
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use ring::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA384};
use spki::AlgorithmIdentifierRef;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::Certificate;

use super::product::Product;

/// Object identifiers used by AMD's certificates.
pub mod oid {
    use der::asn1::ObjectIdentifier;

    /// id-RSASSA-PSS (RFC 4055).
    pub const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
    /// rsaEncryption: the SubjectPublicKeyInfo algorithm of AMD's RSA keys (RFC 3279).
    pub const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    /// id-sha384 (RFC 4055).
    pub const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
    /// id-mgf1 (RFC 4055).
    pub const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
    /// id-ecPublicKey (RFC 5480).
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// secp384r1, NIST P-384 (RFC 5480).
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// id-at-commonName.
    pub const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    /// id-ce-basicConstraints.
    pub const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
    /// id-ce-keyUsage.
    pub const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

    /// VCEK/VLEK structVersion (INTEGER): 0 on Milan and Genoa, 1 on Turin.
    pub const AMD_STRUCT_VERSION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.1");
    /// VCEK/VLEK productName (IA5String), e.g. "Milan-B0", "Genoa", "Turin".
    pub const AMD_PRODUCT_NAME: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
    /// blSPL (INTEGER): boot loader security patch level.
    pub const AMD_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    /// teeSPL (INTEGER): PSP OS (TEE) security patch level.
    pub const AMD_TEE_SPL: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    /// snpSPL (INTEGER): SNP firmware security patch level.
    pub const AMD_SNP_SPL: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    /// spl_4 (INTEGER, reserved): present on Milan and Genoa, absent on Turin.
    pub const AMD_SPL_4: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.4");
    /// spl_5 (INTEGER, reserved).
    pub const AMD_SPL_5: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.5");
    /// spl_6 (INTEGER, reserved).
    pub const AMD_SPL_6: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.6");
    /// spl_7 (INTEGER, reserved).
    pub const AMD_SPL_7: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.7");
    /// ucodeSPL (INTEGER): microcode security patch level.
    pub const AMD_UCODE_SPL: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    /// fmcSPL (INTEGER): FMC security patch level, structVersion 1 (Turin) only.
    pub const AMD_FMC_SPL: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    /// hwID (raw bytes as the extension value): the chip id, VCEK only.
    pub const AMD_HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
    /// cspID (IA5String): the cloud provider a VLEK was issued to, VLEK only.
    pub const AMD_CSP_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.5");
}

/// Length of an uncompressed SEC1 P-384 point: 0x04 || X (48 bytes) || Y (48 bytes).
pub const P384_UNCOMPRESSED_POINT_LEN: usize = 97;

/// RSASSA-PSS salt length AMD uses with SHA-384 (the digest length).
const PSS_SALT_LEN_SHA384: u8 = 48;

/// hwID length for structVersion 0 (Milan, Genoa): the full 64-byte CHIP_ID.
pub const HW_ID_LEN_STRUCT_V0: usize = 64;
/// hwID length for structVersion 1 (Turin): the first 8 bytes of CHIP_ID.
pub const HW_ID_LEN_STRUCT_V1: usize = 8;

/// The PEM label of a certificate.
const PEM_LABEL_CERTIFICATE: &str = "CERTIFICATE";

mod der_util;
mod error;
mod signed;

pub(crate) use der_util::{
    check_extension_set, common_name, decode_single_pem, normalize_serial, pem_or_der,
    split_pem_blocks, unix_seconds,
};
pub use error::CertError;
pub(crate) use signed::{
    slice, verify_rsa_pss_sha384, IssuerUsage, SignedKind, SignedLayout, SignedParts,
};

/// Role of a certificate in AMD's SEV-SNP hierarchy (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// AMD Root Key: self-signed, one per product line.
    Ark,
    /// AMD SEV Key: signed by the ARK, signs VCEKs.
    Ask,
    /// AMD SEV VLEK Key: signed by the ARK, signs VLEKs.
    Asvk,
    /// Versioned Chip Endorsement Key: per chip and TCB, signs reports.
    Vcek,
    /// Versioned Loaded Endorsement Key: per cloud provider and TCB, signs reports.
    Vlek,
}

impl CertRole {
    /// The subject common name AMD gives a certificate of this role for `product`:
    /// "ARK-Milan", "SEV-Milan", "SEV-VLEK-Milan", "SEV-VCEK", "SEV-VLEK".
    pub fn expected_common_name(self, product: Product) -> String {
        match self {
            CertRole::Ark => format!("ARK-{product}"),
            CertRole::Ask => format!("SEV-{product}"),
            CertRole::Asvk => format!("SEV-VLEK-{product}"),
            CertRole::Vcek => "SEV-VCEK".to_owned(),
            CertRole::Vlek => "SEV-VLEK".to_owned(),
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
        })
    }
}

/// AMD's VCEK/VLEK certificate extensions (OID arc 1.3.6.1.4.1.3704.1), as in AMD's VCEK
/// specification (publication 57230).
///
/// OID mapping (checked against the real certificates in the test vectors):
/// `.1` structVersion, `.2` productName, `.3.1` blSPL, `.3.2` teeSPL, `.3.3` snpSPL,
/// `.3.4`–`.3.7` reserved SPLs (`.3.4` absent on Turin), `.3.8` ucodeSPL, `.3.9` fmcSPL (Turin),
/// `.4` hwID (VCEK), `.5` cspID (VLEK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmdExtensions {
    /// structVersion: 0 on Milan and Genoa, 1 on Turin (which adds fmcSPL and an 8-byte hwID).
    pub struct_version: u32,
    /// productName, e.g. "Milan-B0", "Milan", "Genoa", "Turin".
    pub product_name: String,
    /// Boot loader SPL.
    pub bl_spl: u8,
    /// TEE (PSP OS) SPL.
    pub tee_spl: u8,
    /// SNP firmware SPL.
    pub snp_spl: u8,
    /// Microcode SPL.
    pub ucode_spl: u8,
    /// FMC SPL; present exactly when `struct_version` is 1 (Turin).
    pub fmc_spl: Option<u8>,
    /// hwID, the chip id (VCEK): 64 bytes for structVersion 0, 8 bytes for structVersion 1.
    pub hw_id: Option<Vec<u8>>,
    /// cspID (VLEK): the cloud provider the VLEK was issued to.
    pub csp_id: Option<String>,
}

/// A parsed AMD certificate; keeps its DER bytes.
///
/// Construction only checks that the bytes are a well-formed X.509 certificate (plus RFC 5280's
/// rules on duplicate and unknown critical extensions); signatures, validity and roles are checked
/// by the methods.
#[derive(Clone)]
pub struct AmdCertificate {
    der: Vec<u8>,
    parsed: Certificate,
    layout: SignedLayout,
    subject_cn: String,
    issuer_cn: String,
    serial: Vec<u8>,
    not_before: i64,
    not_after: i64,
    /// basicConstraints cA (false when the extension is absent).
    is_ca: bool,
    key_usage: Option<KeyUsage>,
}

impl AmdCertificate {
    /// Parses a DER certificate. The bytes may come from the untrusted host.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let malformed = |source| CertError::Malformed {
            what: "certificate",
            source,
        };
        let layout = SignedLayout::parse(der, SignedKind::Certificate).map_err(malformed)?;
        let parsed = Certificate::from_der(der).map_err(malformed)?;
        let tbs = &parsed.tbs_certificate;
        let subject_cn = common_name(&tbs.subject, "subject")?;
        let issuer_cn = common_name(&tbs.issuer, "issuer")?;
        let serial = normalize_serial(tbs.serial_number.as_bytes()).to_vec();
        let not_before = unix_seconds(tbs.validity.not_before);
        let not_after = unix_seconds(tbs.validity.not_after);

        let extensions = tbs.extensions.as_deref().unwrap_or_default();
        check_extension_set(
            extensions,
            &subject_cn,
            &[oid::BASIC_CONSTRAINTS, oid::KEY_USAGE],
        )?;
        let mut is_ca = false;
        let mut key_usage = None;
        for ext in extensions {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == oid::BASIC_CONSTRAINTS {
                let bc = BasicConstraints::from_der(value).map_err(|source| {
                    CertError::MalformedExtension {
                        subject: subject_cn.clone(),
                        extension: "basicConstraints",
                        source,
                    }
                })?;
                is_ca = bc.ca;
            } else if ext.extn_id == oid::KEY_USAGE {
                let ku =
                    KeyUsage::from_der(value).map_err(|source| CertError::MalformedExtension {
                        subject: subject_cn.clone(),
                        extension: "keyUsage",
                        source,
                    })?;
                key_usage = Some(ku);
            }
        }

        Ok(Self {
            der: der.to_vec(),
            parsed,
            layout,
            subject_cn,
            issuer_cn,
            serial,
            not_before,
            not_after,
            is_ca,
            key_usage,
        })
    }

    /// Parses a PEM certificate: exactly one `CERTIFICATE` block.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        let der = decode_single_pem(pem, PEM_LABEL_CERTIFICATE)?;
        Self::from_der(&der)
    }

    /// Parses PEM if the input starts (after whitespace) with `-----BEGIN`, DER otherwise.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CertError> {
        Self::from_der(&pem_or_der(bytes, PEM_LABEL_CERTIFICATE)?)
    }

    /// Parses every `CERTIFICATE` block of a PEM bundle, in order (e.g. KDS's `cert_chain`, which
    /// holds the ASK then the ARK). An input without any block is an error.
    pub fn all_from_pem(pem: &[u8]) -> Result<Vec<Self>, CertError> {
        let blocks = split_pem_blocks(pem);
        if blocks.is_empty() {
            return Err(CertError::PemBlockCount {
                label: PEM_LABEL_CERTIFICATE,
                found: 0,
            });
        }
        blocks.into_iter().map(Self::from_pem).collect()
    }

    /// The certificate's DER bytes, exactly as parsed.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject common name ("" if absent).
    pub fn subject_common_name(&self) -> &str {
        &self.subject_cn
    }

    /// The issuer common name ("" if absent).
    pub fn issuer_common_name(&self) -> &str {
        &self.issuer_cn
    }

    /// The DER encoding of the subject Name, as in the input.
    pub fn subject_name_der(&self) -> &[u8] {
        slice(&self.der, &self.layout.subject)
    }

    /// The DER encoding of the issuer Name, as in the input.
    pub fn issuer_name_der(&self) -> &[u8] {
        slice(&self.der, &self.layout.issuer)
    }

    /// The serial number as big-endian magnitude bytes: the INTEGER's content without the sign
    /// padding byte. Serial 0 (normal for VCEK and VLEK) is `[0x00]`.
    pub fn serial_number(&self) -> &[u8] {
        &self.serial
    }

    /// notBefore, unix seconds.
    pub fn not_before_unix(&self) -> i64 {
        self.not_before
    }

    /// notAfter, unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }

    /// Checks notBefore <= `unix_seconds` <= notAfter (RFC 5280: both bounds inclusive).
    pub fn check_valid_at(&self, unix_seconds: i64) -> Result<(), CertError> {
        if unix_seconds < self.not_before {
            return Err(CertError::NotYetValid {
                subject: self.subject_cn.clone(),
                not_before: self.not_before,
                at: unix_seconds,
            });
        }
        if unix_seconds > self.not_after {
            return Err(CertError::Expired {
                subject: self.subject_cn.clone(),
                not_after: self.not_after,
                at: unix_seconds,
            });
        }
        Ok(())
    }

    /// Checks that the subject common name is the one AMD gives `role` for `product`.
    pub fn check_role(&self, role: CertRole, product: Product) -> Result<(), CertError> {
        let expected = role.expected_common_name(product);
        if self.subject_cn == expected {
            Ok(())
        } else {
            Err(CertError::UnexpectedSubject {
                role,
                product,
                expected,
                found: self.subject_cn.clone(),
            })
        }
    }

    /// Checks that `issuer` issued `self`:
    /// - the issuer is a CA (basicConstraints cA) whose keyUsage, if present, allows keyCertSign;
    /// - the outer and inner signature algorithms are the same, and are RSASSA-PSS with SHA-384,
    ///   MGF1-SHA-384, salt length 48 and trailerField 1 (written out or left to its default: AMD
    ///   has issued both);
    /// - the issuer's key is RSA, and the signature verifies over the raw TBSCertificate bytes;
    /// - the issuer Name of `self` equals the subject Name of `issuer`, byte for byte.
    ///
    /// The signature is checked before the names, so a certificate from another product line reports
    /// [`CertError::BadSignature`].
    pub fn verify_issued_by(&self, issuer: &AmdCertificate) -> Result<(), CertError> {
        let signed = SignedParts {
            subject: &self.subject_cn,
            claimed_issuer: &self.issuer_cn,
            tbs: slice(&self.der, &self.layout.tbs),
            tbs_algorithm: slice(&self.der, &self.layout.tbs_algorithm),
            algorithm: slice(&self.der, &self.layout.algorithm),
            issuer_name: slice(&self.der, &self.layout.issuer),
            signature: slice(&self.der, &self.layout.signature),
        };
        verify_rsa_pss_sha384(&signed, issuer, IssuerUsage::CertSign)
    }

    /// The ECDSA P-384 public key of a VCEK/VLEK as a 97-byte uncompressed point (0x04 || X || Y).
    ///
    /// The point is not checked to be on the curve here; ring does that when it verifies.
    pub fn p384_public_key(&self) -> Result<&[u8], CertError> {
        let spki = &self.parsed.tbs_certificate.subject_public_key_info;
        let algorithm = spki.algorithm.oid;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if algorithm != oid::EC_PUBLIC_KEY || curve != Some(oid::SECP384R1) {
            return Err(CertError::NotP384Key {
                subject: self.subject_cn.clone(),
                algorithm,
                curve,
            });
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| CertError::BadP384Point {
                subject: self.subject_cn.clone(),
                len: spki.subject_public_key.raw_bytes().len(),
                first: 0,
            })?;
        match key.first() {
            Some(0x04) if key.len() == P384_UNCOMPRESSED_POINT_LEN => Ok(key),
            first => Err(CertError::BadP384Point {
                subject: self.subject_cn.clone(),
                len: key.len(),
                first: first.copied().unwrap_or(0),
            }),
        }
    }

    /// AMD's VCEK/VLEK extensions. See [`AmdExtensions`] for the OID mapping.
    ///
    /// Strict: every SPL must be a non-negative DER INTEGER that fits in a byte (the reserved SPLs
    /// too), structVersion must be 0 or 1, fmcSPL must be present exactly for structVersion 1, and
    /// hwID must be 64 bytes (structVersion 0) or 8 bytes (structVersion 1). Duplicate extensions are
    /// already rejected when the certificate is parsed. Extensions outside AMD's arc are ignored.
    pub fn amd_extensions(&self) -> Result<AmdExtensions, CertError> {
        let subject = &self.subject_cn;
        let extensions = self
            .parsed
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default();
        let find = |oid: ObjectIdentifier| {
            extensions
                .iter()
                .find(|e| e.extn_id == oid)
                .map(|e| e.extn_value.as_bytes())
        };
        let require = |name: &'static str, oid: ObjectIdentifier| {
            find(oid).ok_or_else(|| CertError::MissingExtension {
                subject: subject.clone(),
                extension: name,
                oid,
            })
        };
        let malformed = |name: &'static str| {
            move |source| CertError::MalformedExtension {
                subject: subject.clone(),
                extension: name,
                source,
            }
        };
        let spl = |name: &'static str, value: &[u8]| -> Result<u8, CertError> {
            let int = UintRef::from_der(value).map_err(malformed(name))?;
            match int.as_bytes() {
                [byte] => Ok(*byte),
                other => Err(CertError::SplOutOfRange {
                    subject: subject.clone(),
                    extension: name,
                    value: hex::encode(other),
                }),
            }
        };

        let struct_version = u32::from_der(require("structVersion", oid::AMD_STRUCT_VERSION)?)
            .map_err(malformed("structVersion"))?;
        let product_name = Ia5StringRef::from_der(require("productName", oid::AMD_PRODUCT_NAME)?)
            .map_err(malformed("productName"))?
            .as_str()
            .to_owned();
        let bl_spl = spl("blSPL", require("blSPL", oid::AMD_BL_SPL)?)?;
        let tee_spl = spl("teeSPL", require("teeSPL", oid::AMD_TEE_SPL)?)?;
        let snp_spl = spl("snpSPL", require("snpSPL", oid::AMD_SNP_SPL)?)?;
        let ucode_spl = spl("ucodeSPL", require("ucodeSPL", oid::AMD_UCODE_SPL)?)?;
        for (name, oid) in [
            ("spl_4", oid::AMD_SPL_4),
            ("spl_5", oid::AMD_SPL_5),
            ("spl_6", oid::AMD_SPL_6),
            ("spl_7", oid::AMD_SPL_7),
        ] {
            if let Some(value) = find(oid) {
                spl(name, value)?;
            }
        }
        let fmc_spl = find(oid::AMD_FMC_SPL)
            .map(|v| spl("fmcSPL", v))
            .transpose()?;
        // hwID is the extension value itself (no inner OCTET STRING): raw chip-id bytes.
        let hw_id = find(oid::AMD_HW_ID).map(<[u8]>::to_vec);
        let csp_id = find(oid::AMD_CSP_ID)
            .map(|v| {
                Ia5StringRef::from_der(v)
                    .map(|s| s.as_str().to_owned())
                    .map_err(malformed("cspID"))
            })
            .transpose()?;

        let expected_hw_id_len = match struct_version {
            0 => HW_ID_LEN_STRUCT_V0,
            1 => HW_ID_LEN_STRUCT_V1,
            version => {
                return Err(CertError::UnsupportedStructVersion {
                    subject: subject.clone(),
                    version,
                })
            }
        };
        if fmc_spl.is_some() != (struct_version == 1) {
            return Err(CertError::FmcSplPresence {
                subject: subject.clone(),
                struct_version,
                present: fmc_spl.is_some(),
            });
        }
        if let Some(hw_id) = &hw_id {
            if hw_id.len() != expected_hw_id_len {
                return Err(CertError::HwIdLength {
                    subject: subject.clone(),
                    struct_version,
                    expected: expected_hw_id_len,
                    found: hw_id.len(),
                });
            }
        }

        Ok(AmdExtensions {
            struct_version,
            product_name,
            bl_spl,
            tee_spl,
            snp_spl,
            ucode_spl,
            fmc_spl,
            hw_id,
            csp_id,
        })
    }

    /// SHA-256 of the DER bytes.
    pub fn sha256_fingerprint(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The issuer's RSA public key for signature checks: the PKCS#1 RSAPublicKey inside the
    /// SubjectPublicKeyInfo bit string (what ring expects), after checking the algorithm.
    fn rsa_public_key_pkcs1(&self) -> Result<&[u8], CertError> {
        let spki = &self.parsed.tbs_certificate.subject_public_key_info;
        let params_ok = spki
            .algorithm
            .parameters
            .as_ref()
            .is_none_or(|p| p.is_null());
        if spki.algorithm.oid != oid::RSA_ENCRYPTION || !params_ok {
            return Err(CertError::IssuerKeyNotRsa {
                issuer: self.subject_cn.clone(),
                found: spki.algorithm.oid,
            });
        }
        spki.subject_public_key
            .as_bytes()
            .ok_or_else(|| CertError::IssuerKeyNotRsa {
                issuer: self.subject_cn.clone(),
                found: spki.algorithm.oid,
            })
    }
}

impl PartialEq for AmdCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for AmdCertificate {}

impl fmt::Debug for AmdCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmdCertificate")
            .field("subject", &self.subject_cn)
            .field("issuer", &self.issuer_cn)
            .field("serial", &hex::encode(&self.serial))
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("sha256", &hex::encode(self.sha256_fingerprint()))
            .finish_non_exhaustive()
    }
}

/// Fuzzing entry point: parses `data` as a certificate (PEM or DER) and, if that succeeds, runs
/// every accessor and check on it. Must never panic, whatever the input.
pub fn fuzz_certificate(data: &[u8]) {
    if let Ok(cert) = AmdCertificate::from_pem_or_der(data) {
        let _ = cert.subject_common_name();
        let _ = cert.issuer_common_name();
        let _ = cert.serial_number();
        let _ = cert.check_valid_at(cert.not_before_unix());
        let _ = cert.check_role(CertRole::Vcek, Product::Milan);
        let _ = cert.p384_public_key();
        let _ = cert.amd_extensions();
        let _ = cert.sha256_fingerprint();
        let _ = cert.verify_issued_by(&cert);
        let _ = format!("{cert:?}");
    }
    let _ = AmdCertificate::all_from_pem(data);
}

#[cfg(test)]
mod tests;

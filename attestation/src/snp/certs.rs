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

/// Error for everything certificate- and CRL-related.
///
/// Certificates are named by their subject common name (CRLs by their issuer's), so a failure says
/// which link of the chain broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input is not valid DER for the named structure.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// The structure being decoded ("certificate", "CRL", "common name", ...).
        what: &'static str,
        /// The DER decoder's error.
        #[source]
        source: der::Error,
    },
    /// The PEM armour could not be decoded.
    #[error("malformed PEM: {source}")]
    Pem {
        /// The PEM decoder's error.
        #[source]
        source: pem_rfc7468::Error,
    },
    /// A PEM input holds a different number of blocks than expected.
    #[error("expected exactly one {label} PEM block, found {found}")]
    PemBlockCount {
        /// The expected PEM label.
        label: &'static str,
        /// How many `-----BEGIN` lines the input holds.
        found: usize,
    },
    /// A PEM block has the wrong label.
    #[error("expected a {expected} PEM block, found {found:?}")]
    PemLabel {
        /// The expected PEM label.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// A name holds more than one common name, so it does not identify a certificate unambiguously.
    #[error("the {which} name holds more than one common name")]
    AmbiguousCommonName {
        /// "subject" or "issuer".
        which: &'static str,
    },
    /// A certificate is used before its notBefore.
    #[error("certificate {subject:?} is not valid before {not_before} (unix), checked at {at}")]
    NotYetValid {
        /// Subject common name.
        subject: String,
        /// notBefore, unix seconds.
        not_before: i64,
        /// The instant checked, unix seconds.
        at: i64,
    },
    /// A certificate is used after its notAfter.
    #[error("certificate {subject:?} expired at {not_after} (unix), checked at {at}")]
    Expired {
        /// Subject common name.
        subject: String,
        /// notAfter, unix seconds.
        not_after: i64,
        /// The instant checked, unix seconds.
        at: i64,
    },
    /// A CRL is used before its thisUpdate.
    #[error("CRL of {issuer:?} is not valid before {this_update} (unix), checked at {at}")]
    CrlNotYetValid {
        /// Issuer common name.
        issuer: String,
        /// thisUpdate, unix seconds.
        this_update: i64,
        /// The instant checked, unix seconds.
        at: i64,
    },
    /// A CRL is used after its nextUpdate.
    #[error("CRL of {issuer:?} is stale since {next_update} (unix), checked at {at}")]
    CrlStale {
        /// Issuer common name.
        issuer: String,
        /// nextUpdate, unix seconds.
        next_update: i64,
        /// The instant checked, unix seconds.
        at: i64,
    },
    /// The issuer name of a certificate or CRL is not the subject name of the presented issuer.
    #[error("{subject:?} names issuer {expected_issuer:?}, but the presented issuer is {found_issuer:?}")]
    IssuerNameMismatch {
        /// The signed object (certificate subject CN, or "CRL").
        subject: String,
        /// The issuer common name written in the signed object.
        expected_issuer: String,
        /// The subject common name of the certificate presented as issuer.
        found_issuer: String,
    },
    /// The outer signatureAlgorithm differs from the one inside the signed part (RFC 5280 4.1.1.2).
    #[error("{subject:?}: the outer signature algorithm differs from the signed one")]
    SignatureAlgorithmMismatch {
        /// The signed object.
        subject: String,
    },
    /// The signature algorithm is not RSASSA-PSS.
    #[error(
        "{subject:?} is signed with algorithm {found}, expected RSASSA-PSS ({})",
        oid::RSASSA_PSS
    )]
    UnsupportedSignatureAlgorithm {
        /// The signed object.
        subject: String,
        /// The algorithm found.
        found: ObjectIdentifier,
    },
    /// An RSASSA-PSS parameter differs from SHA-384 / MGF1-SHA-384 / salt 48 / trailer 1.
    #[error("{subject:?}: RSASSA-PSS {parameter} is {found}, expected {expected}")]
    PssParameter {
        /// The signed object.
        subject: String,
        /// The parameter ("hashAlgorithm", "maskGenAlgorithm", "saltLength", "trailerField", ...).
        parameter: &'static str,
        /// What AMD's hierarchy uses.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// The issuer's public key is not an RSA key.
    #[error("issuer {issuer:?} has key algorithm {found}, expected rsaEncryption")]
    IssuerKeyNotRsa {
        /// Issuer common name.
        issuer: String,
        /// The SubjectPublicKeyInfo algorithm found.
        found: ObjectIdentifier,
    },
    /// The issuer is not a certificate authority (basicConstraints cA absent or false).
    #[error("issuer {issuer:?} is not a certificate authority (basicConstraints cA)")]
    IssuerNotCa {
        /// Issuer common name.
        issuer: String,
    },
    /// The issuer's keyUsage does not allow the signature.
    #[error("issuer {issuer:?} key usage does not include {usage}")]
    IssuerKeyUsage {
        /// Issuer common name.
        issuer: String,
        /// The missing usage ("keyCertSign" or "cRLSign").
        usage: &'static str,
    },
    /// The signature does not verify under the issuer's key.
    #[error("signature of {subject:?} (issued by {claimed_issuer:?}) does not verify under the key of {issuer:?}")]
    BadSignature {
        /// The signed object.
        subject: String,
        /// The issuer common name written in the signed object.
        claimed_issuer: String,
        /// The subject common name of the certificate whose key was tried.
        issuer: String,
    },
    /// The subject public key is not an ECDSA P-384 key.
    #[error("{subject:?} has key algorithm {algorithm} (curve {curve:?}), expected id-ecPublicKey on secp384r1")]
    NotP384Key {
        /// Subject common name.
        subject: String,
        /// The SubjectPublicKeyInfo algorithm.
        algorithm: ObjectIdentifier,
        /// The named curve, if the parameters are an OID.
        curve: Option<ObjectIdentifier>,
    },
    /// The P-384 public key is not an uncompressed point.
    #[error("{subject:?}: P-384 public key is {len} bytes (first byte {first:#04x}), expected a 97-byte uncompressed point")]
    BadP384Point {
        /// Subject common name.
        subject: String,
        /// Length of the key bytes.
        len: usize,
        /// First byte (the SEC1 point format), 0 if empty.
        first: u8,
    },
    /// An extension appears more than once (RFC 5280 4.2).
    #[error("{subject:?} carries extension {oid} more than once")]
    DuplicateExtension {
        /// Subject common name (or "CRL of ...").
        subject: String,
        /// The duplicated extension.
        oid: ObjectIdentifier,
    },
    /// A critical extension this verifier does not process (RFC 5280 4.2: must be rejected).
    #[error("{subject:?} carries unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// Subject common name (or "CRL of ...").
        subject: String,
        /// The extension.
        oid: ObjectIdentifier,
    },
    /// A required AMD extension is absent.
    #[error("{subject:?} lacks the AMD extension {extension} ({oid})")]
    MissingExtension {
        /// Subject common name.
        subject: String,
        /// The extension's name ("blSPL", ...).
        extension: &'static str,
        /// The extension's OID.
        oid: ObjectIdentifier,
    },
    /// An extension value does not decode as its type.
    #[error("{subject:?}: extension {extension} is malformed: {source}")]
    MalformedExtension {
        /// Subject common name.
        subject: String,
        /// The extension's name.
        extension: &'static str,
        /// The DER decoder's error.
        #[source]
        source: der::Error,
    },
    /// A security patch level does not fit in a byte.
    #[error("{subject:?}: {extension} = 0x{value} does not fit in 8 bits")]
    SplOutOfRange {
        /// Subject common name.
        subject: String,
        /// The extension's name.
        extension: &'static str,
        /// The value found, big-endian hex.
        value: String,
    },
    /// The VCEK/VLEK structVersion is not one this verifier knows (0: Milan/Genoa, 1: Turin).
    #[error("{subject:?}: unsupported AMD extension structVersion {version}")]
    UnsupportedStructVersion {
        /// Subject common name.
        subject: String,
        /// The structVersion found.
        version: u32,
    },
    /// fmcSPL presence contradicts structVersion (required for 1, forbidden for 0).
    #[error("{subject:?}: fmcSPL is {} but structVersion is {struct_version}", if *.present { "present" } else { "absent" })]
    FmcSplPresence {
        /// Subject common name.
        subject: String,
        /// The structVersion.
        struct_version: u32,
        /// Whether fmcSPL was present.
        present: bool,
    },
    /// hwID has the wrong length for the structVersion.
    #[error("{subject:?}: hwID is {found} bytes, expected {expected} for structVersion {struct_version}")]
    HwIdLength {
        /// Subject common name.
        subject: String,
        /// The structVersion.
        struct_version: u32,
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A certificate's subject does not match the role it is used in.
    #[error("{role} for {product}: subject common name is {found:?}, expected {expected:?}")]
    UnexpectedSubject {
        /// The role the certificate was used in.
        role: CertRole,
        /// The product line.
        product: Product,
        /// The expected subject common name.
        expected: String,
        /// The subject common name found.
        found: String,
    },
}

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

// ---------------------------------------------------------------------------------------------
// Shared between certificates and CRLs.

const PEM_LABEL_CERTIFICATE: &str = "CERTIFICATE";

/// Which X.509 SIGNED{} structure is being laid out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SignedKind {
    /// RFC 5280 4.1 Certificate.
    Certificate,
    /// RFC 5280 5.1 CertificateList.
    Crl,
}

/// Byte ranges of the parts of a SIGNED{} structure that the signature check needs, into the input.
#[derive(Clone, Debug)]
pub(crate) struct SignedLayout {
    /// The whole TBSCertificate / TBSCertList TLV: the signed bytes.
    pub(crate) tbs: Range<usize>,
    /// The `signature` AlgorithmIdentifier inside the TBS.
    pub(crate) tbs_algorithm: Range<usize>,
    /// The outer `signatureAlgorithm`.
    pub(crate) algorithm: Range<usize>,
    /// The issuer Name TLV.
    pub(crate) issuer: Range<usize>,
    /// The subject Name TLV (certificates only; empty for CRLs).
    pub(crate) subject: Range<usize>,
    /// The signature BIT STRING's bytes (without the unused-bits octet).
    pub(crate) signature: Range<usize>,
}

impl SignedLayout {
    /// Walks the outer structure and the head of the TBS, recording where each part lies. The rest
    /// of the structure is validated by the typed x509-cert decoder.
    pub(crate) fn parse(der: &[u8], kind: SignedKind) -> der::Result<Self> {
        let mut reader = SliceReader::new(der)?;
        let layout = reader.sequence(|outer| {
            let tbs_start = offset(outer)?;
            let (tbs_algorithm, issuer, subject) = outer.sequence(|tbs| {
                match kind {
                    SignedKind::Certificate => {
                        // version [0] EXPLICIT Version DEFAULT v1
                        if tbs.peek_tag()? == VERSION_TAG {
                            tbs.tlv_bytes()?;
                        }
                        tbs.tlv_bytes()?; // serialNumber
                    }
                    SignedKind::Crl => {
                        // version Version OPTIONAL (an INTEGER, v2)
                        if tbs.peek_tag()? == Tag::Integer {
                            tbs.tlv_bytes()?;
                        }
                    }
                }
                let tbs_algorithm = tlv_range(tbs)?;
                let issuer = tlv_range(tbs)?;
                let subject = match kind {
                    SignedKind::Certificate => {
                        tbs.tlv_bytes()?; // validity
                        tlv_range(tbs)?
                    }
                    SignedKind::Crl => 0..0,
                };
                // The remaining fields are decoded by x509-cert.
                let rest = tbs.remaining_len();
                tbs.read_slice(rest)?;
                Ok((tbs_algorithm, issuer, subject))
            })?;
            let tbs = tbs_start..offset(outer)?;
            let algorithm = tlv_range(outer)?;
            let signature = BitStringRef::decode(outer)?;
            let end = offset(outer)?;
            let bytes = signature
                .as_bytes()
                .ok_or_else(|| Tag::BitString.value_error())?;
            let start = end
                .checked_sub(bytes.len())
                .ok_or_else(|| Tag::BitString.length_error())?;
            Ok(SignedLayout {
                tbs,
                tbs_algorithm,
                algorithm,
                issuer,
                subject,
                signature: start..end,
            })
        })?;
        reader.finish(layout)
    }
}

const VERSION_TAG: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber::N0,
};

fn offset<'a, R: Reader<'a>>(reader: &R) -> der::Result<usize> {
    usize::try_from(reader.offset())
}

fn tlv_range<'a, R: Reader<'a>>(reader: &mut R) -> der::Result<Range<usize>> {
    let start = offset(reader)?;
    let len = reader.tlv_bytes()?.len();
    Ok(start..start + len)
}

/// `bytes[range]`, or empty if the range is out of bounds (it never is: ranges come from
/// [`SignedLayout::parse`] over the same bytes).
pub(crate) fn slice<'a>(bytes: &'a [u8], range: &Range<usize>) -> &'a [u8] {
    bytes.get(range.clone()).unwrap_or_default()
}

/// A signed object, borrowed, as the shared signature check needs it.
pub(crate) struct SignedParts<'a> {
    /// Name of the signed object in messages (subject CN, or "CRL of ...").
    pub(crate) subject: &'a str,
    /// Issuer common name written in the signed object.
    pub(crate) claimed_issuer: &'a str,
    pub(crate) tbs: &'a [u8],
    pub(crate) tbs_algorithm: &'a [u8],
    pub(crate) algorithm: &'a [u8],
    pub(crate) issuer_name: &'a [u8],
    pub(crate) signature: &'a [u8],
}

/// What the issuer's key signs in this check.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IssuerUsage {
    /// A certificate: keyUsage keyCertSign.
    CertSign,
    /// A CRL: keyUsage cRLSign.
    CrlSign,
}

/// The one RSASSA-PSS-SHA384 check for certificates and CRLs signed by AMD's RSA keys.
pub(crate) fn verify_rsa_pss_sha384(
    signed: &SignedParts<'_>,
    issuer: &AmdCertificate,
    usage: IssuerUsage,
) -> Result<(), CertError> {
    // RFC 5280 4.1.1.2 / 5.1.1.2: signatureAlgorithm MUST equal the TBS `signature` field.
    if signed.algorithm != signed.tbs_algorithm {
        return Err(CertError::SignatureAlgorithmMismatch {
            subject: signed.subject.to_owned(),
        });
    }
    check_rsassa_pss_sha384(signed.algorithm, signed.subject)?;

    if !issuer.is_ca {
        return Err(CertError::IssuerNotCa {
            issuer: issuer.subject_cn.clone(),
        });
    }
    if let Some(key_usage) = &issuer.key_usage {
        let (allowed, name) = match usage {
            IssuerUsage::CertSign => (key_usage.key_cert_sign(), "keyCertSign"),
            IssuerUsage::CrlSign => (key_usage.crl_sign(), "cRLSign"),
        };
        if !allowed {
            return Err(CertError::IssuerKeyUsage {
                issuer: issuer.subject_cn.clone(),
                usage: name,
            });
        }
    }
    let public_key = issuer.rsa_public_key_pkcs1()?;

    // ring's RSA_PSS_*_SHA384 fixes MGF1 to SHA-384 and the salt length to 48, as checked above.
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, public_key)
        .verify(signed.tbs, signed.signature)
        .map_err(|_| CertError::BadSignature {
            subject: signed.subject.to_owned(),
            claimed_issuer: signed.claimed_issuer.to_owned(),
            issuer: issuer.subject_cn.clone(),
        })?;

    if signed.issuer_name != issuer.subject_name_der() {
        return Err(CertError::IssuerNameMismatch {
            subject: signed.subject.to_owned(),
            expected_issuer: signed.claimed_issuer.to_owned(),
            found_issuer: issuer.subject_cn.clone(),
        });
    }
    Ok(())
}

/// Checks an AlgorithmIdentifier (DER) is RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48, trailer 1
/// (RFC 4055 3.1):
///
/// ```text
/// RSASSA-PSS-params ::= SEQUENCE {
///     hashAlgorithm      [0] HashAlgorithm    DEFAULT sha1,
///     maskGenAlgorithm   [1] MaskGenAlgorithm DEFAULT mgf1SHA1,
///     saltLength         [2] INTEGER          DEFAULT 20,
///     trailerField       [3] TrailerField     DEFAULT trailerFieldBC }
/// ```
fn check_rsassa_pss_sha384(algorithm_der: &[u8], subject: &str) -> Result<(), CertError> {
    let malformed = |source| CertError::Malformed {
        what: "RSASSA-PSS algorithm identifier",
        source,
    };
    let param_error =
        |parameter: &'static str, expected: &'static str, found: String| CertError::PssParameter {
            subject: subject.to_owned(),
            parameter,
            expected,
            found,
        };

    let algorithm = AlgorithmIdentifierRef::from_der(algorithm_der).map_err(malformed)?;
    if algorithm.oid != oid::RSASSA_PSS {
        return Err(CertError::UnsupportedSignatureAlgorithm {
            subject: subject.to_owned(),
            found: algorithm.oid,
        });
    }
    let params = algorithm
        .parameters
        .ok_or_else(|| param_error("parameters", "RSASSA-PSS-params", "absent".to_owned()))?;

    // The fields, by context tag number; DER requires them in ascending order, each at most once.
    let fields: [Option<AnyRef<'_>>; 4] = params
        .sequence(|r| {
            let mut fields = [None; 4];
            let mut next_allowed = 0u8;
            while !r.is_finished() {
                let field = AnyRef::decode(r)?;
                let number = match field.tag() {
                    Tag::ContextSpecific {
                        constructed: true,
                        number,
                    } => number.value(),
                    other => return Err(other.unexpected_error(None)),
                };
                if number < next_allowed || number > 3 {
                    return Err(field.tag().non_canonical_error());
                }
                if let Some(slot) = fields.get_mut(usize::from(number)) {
                    *slot = Some(field);
                }
                next_allowed = number + 1;
            }
            Ok(fields)
        })
        .map_err(malformed)?;
    let [hash, mgf, salt, trailer] = fields;

    let describe = |alg: &AlgorithmIdentifierRef<'_>| match alg.parameters {
        None => alg.oid.to_string(),
        Some(p) if p.is_null() => alg.oid.to_string(),
        Some(_) => format!("{} with parameters", alg.oid),
    };
    let is_sha384 = |alg: &AlgorithmIdentifierRef<'_>| {
        alg.oid == oid::SHA384 && alg.parameters.is_none_or(|p| p.is_null())
    };

    // hashAlgorithm [0] EXPLICIT
    let hash =
        hash.ok_or_else(|| param_error("hashAlgorithm", "SHA-384", "absent (SHA-1)".to_owned()))?;
    let hash = AlgorithmIdentifierRef::from_der(hash.value()).map_err(malformed)?;
    if !is_sha384(&hash) {
        return Err(param_error("hashAlgorithm", "SHA-384", describe(&hash)));
    }

    // maskGenAlgorithm [1] EXPLICIT: id-mgf1 with a hash AlgorithmIdentifier as parameters.
    let mgf = mgf.ok_or_else(|| {
        param_error(
            "maskGenAlgorithm",
            "MGF1 with SHA-384",
            "absent (MGF1 with SHA-1)".to_owned(),
        )
    })?;
    let mgf = AlgorithmIdentifierRef::from_der(mgf.value()).map_err(malformed)?;
    if mgf.oid != oid::MGF1 {
        return Err(param_error(
            "maskGenAlgorithm",
            "MGF1 with SHA-384",
            mgf.oid.to_string(),
        ));
    }
    let mgf_hash = mgf
        .parameters
        .ok_or_else(|| param_error("maskGenAlgorithm hash", "SHA-384", "absent".to_owned()))?
        .decode_as::<AlgorithmIdentifierRef<'_>>()
        .map_err(malformed)?;
    if !is_sha384(&mgf_hash) {
        return Err(param_error(
            "maskGenAlgorithm hash",
            "SHA-384",
            describe(&mgf_hash),
        ));
    }

    // saltLength [2] EXPLICIT INTEGER
    let salt = salt.ok_or_else(|| param_error("saltLength", "48", "absent (20)".to_owned()))?;
    let salt = UintRef::from_der(salt.value()).map_err(malformed)?;
    if salt.as_bytes() != [PSS_SALT_LEN_SHA384] {
        return Err(param_error(
            "saltLength",
            "48",
            format!("0x{}", hex::encode(salt.as_bytes())),
        ));
    }

    // trailerField [3] EXPLICIT INTEGER: older AMD certificates write 1, newer ones omit the default.
    if let Some(trailer) = trailer {
        let trailer = UintRef::from_der(trailer.value()).map_err(malformed)?;
        if trailer.as_bytes() != [1] {
            return Err(param_error(
                "trailerField",
                "1",
                format!("0x{}", hex::encode(trailer.as_bytes())),
            ));
        }
    }
    Ok(())
}

/// Rejects duplicate extensions and critical extensions outside `known_critical` (RFC 5280 4.2:
/// "A certificate MUST NOT include more than one instance of a particular extension", and an
/// unrecognized critical extension must cause rejection).
pub(crate) fn check_extension_set(
    extensions: &[Extension],
    subject: &str,
    known_critical: &[ObjectIdentifier],
) -> Result<(), CertError> {
    for (i, ext) in extensions.iter().enumerate() {
        let later = extensions.get(i + 1..).unwrap_or_default();
        if later.iter().any(|e| e.extn_id == ext.extn_id) {
            return Err(CertError::DuplicateExtension {
                subject: subject.to_owned(),
                oid: ext.extn_id,
            });
        }
        if ext.critical && !known_critical.contains(&ext.extn_id) {
            return Err(CertError::UnsupportedCriticalExtension {
                subject: subject.to_owned(),
                oid: ext.extn_id,
            });
        }
    }
    Ok(())
}

/// The common name of a Name ("" if absent); an error if there are several or it is not a string.
pub(crate) fn common_name(name: &Name, which: &'static str) -> Result<String, CertError> {
    let malformed = |source| CertError::Malformed {
        what: "common name",
        source,
    };
    let mut found: Option<String> = None;
    for rdn in name.0.iter() {
        for attribute in rdn.0.iter() {
            if attribute.oid != oid::COMMON_NAME {
                continue;
            }
            let value = &attribute.value;
            let text = match value.tag() {
                Tag::Utf8String => value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map_err(malformed)?
                    .as_str()
                    .to_owned(),
                Tag::PrintableString => value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map_err(malformed)?
                    .as_str()
                    .to_owned(),
                Tag::Ia5String => value
                    .decode_as::<Ia5StringRef<'_>>()
                    .map_err(malformed)?
                    .as_str()
                    .to_owned(),
                other => return Err(malformed(other.unexpected_error(None))),
            };
            if found.replace(text).is_some() {
                return Err(CertError::AmbiguousCommonName { which });
            }
        }
    }
    Ok(found.unwrap_or_default())
}

/// A DER INTEGER's content bytes as big-endian magnitude: leading zero bytes removed, keeping one
/// for zero. Used for serial numbers of certificates and CRL entries, and for look-ups.
pub(crate) fn normalize_serial(bytes: &[u8]) -> &[u8] {
    let first_nonzero = bytes.iter().position(|b| *b != 0);
    match first_nonzero {
        Some(i) => bytes.get(i..).unwrap_or_default(),
        None if bytes.is_empty() => bytes,
        None => &[0],
    }
}

/// Unix seconds of an X.509 time. UTCTime and GeneralizedTime cannot encode instants before 1970 in
/// der's model, nor after 9999, so the conversion cannot overflow; saturate to be total anyway.
pub(crate) fn unix_seconds(time: x509_cert::time::Time) -> i64 {
    i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// The DER bytes of an input given as PEM or DER: PEM if it starts, after optional whitespace, with
/// `-----BEGIN` (it must then hold exactly one block, labelled `label`), DER otherwise.
pub(crate) fn pem_or_der<'a>(
    bytes: &'a [u8],
    label: &'static str,
) -> Result<Cow<'a, [u8]>, CertError> {
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        decode_single_pem(bytes, label).map(Cow::Owned)
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// Decodes a PEM input that must hold exactly one block, labelled `label`.
pub(crate) fn decode_single_pem(pem: &[u8], label: &'static str) -> Result<Vec<u8>, CertError> {
    let found = count_occurrences(pem, b"-----BEGIN");
    if found != 1 {
        return Err(CertError::PemBlockCount { label, found });
    }
    let (found_label, der) =
        pem_rfc7468::decode_vec(pem).map_err(|source| CertError::Pem { source })?;
    if found_label != label {
        return Err(CertError::PemLabel {
            expected: label,
            found: found_label.to_owned(),
        });
    }
    Ok(der)
}

fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Splits a PEM bundle into its blocks, each from `-----BEGIN` to the end of its `-----END ...-----`
/// line. Text between blocks is ignored; an unterminated block is kept whole so that decoding it
/// reports the error.
fn split_pem_blocks(pem: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN";
    const END: &[u8] = b"-----END";
    const DASHES: &[u8] = b"-----";
    let find = |from: usize, needle: &[u8]| {
        pem.get(from..)
            .and_then(|rest| rest.windows(needle.len()).position(|w| w == needle))
            .map(|i| i + from)
    };
    let mut blocks = Vec::new();
    let mut cursor = 0;
    while let Some(begin) = find(cursor, BEGIN) {
        let end = find(begin, END)
            .and_then(|end| find(end + END.len(), DASHES))
            .map(|dashes| dashes + DASHES.len())
            .unwrap_or(pem.len());
        blocks.push(pem.get(begin..end).unwrap_or_default());
        cursor = end;
    }
    blocks
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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
            let other =
                AmdCertificate::from_pem(&set.file("negative/ask_other_product.pem")).unwrap();
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
            pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, set.ark.der())
                .unwrap();
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
}

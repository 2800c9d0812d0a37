//! The error of everything certificate- and CRL-related.

use super::*;

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
    /// A CRL is used after its nextUpdate plus the tolerated staleness.
    #[error("CRL of {issuer:?} is stale since {next_update} (unix, its nextUpdate), checked at {at}; crl_max_staleness tolerates {grace} s past nextUpdate")]
    CrlStale {
        /// Issuer common name.
        issuer: String,
        /// nextUpdate, unix seconds.
        next_update: i64,
        /// The instant checked, unix seconds.
        at: i64,
        /// The staleness tolerated past nextUpdate, seconds.
        grace: i64,
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

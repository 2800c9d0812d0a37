//! The parts of an X.509 SIGNED{} structure (certificate or CRL) and the one RSASSA-PSS-SHA384 check AMD's
//! RSA keys need, shared between certificates and CRLs.

use super::*;

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
pub(crate) fn check_rsassa_pss_sha384(
    algorithm_der: &[u8],
    subject: &str,
) -> Result<(), CertError> {
    let algorithm = AlgorithmIdentifierRef::from_der(algorithm_der).map_err(pss_malformed)?;
    if algorithm.oid != oid::RSASSA_PSS {
        return Err(CertError::UnsupportedSignatureAlgorithm {
            subject: subject.to_owned(),
            found: algorithm.oid,
        });
    }
    let params = algorithm.parameters.ok_or_else(|| {
        pss_param_error(
            subject,
            "parameters",
            "RSASSA-PSS-params",
            "absent".to_owned(),
        )
    })?;
    let [hash, mgf, salt, trailer] = pss_param_fields(params).map_err(pss_malformed)?;
    check_pss_hash(hash, subject)?;
    check_pss_mgf(mgf, subject)?;
    check_pss_salt(salt, subject)?;
    check_pss_trailer(trailer, subject)
}

/// A malformed RSASSA-PSS AlgorithmIdentifier.
fn pss_malformed(source: der::Error) -> CertError {
    CertError::Malformed {
        what: "RSASSA-PSS algorithm identifier",
        source,
    }
}

/// A well-formed RSASSA-PSS parameter with a value other than the one AMD's keys need.
fn pss_param_error(
    subject: &str,
    parameter: &'static str,
    expected: &'static str,
    found: String,
) -> CertError {
    CertError::PssParameter {
        subject: subject.to_owned(),
        parameter,
        expected,
        found,
    }
}

/// The fields of RSASSA-PSS-params, by context tag number; DER requires them in ascending order, each at
/// most once.
fn pss_param_fields(params: AnyRef<'_>) -> der::Result<[Option<AnyRef<'_>>; 4]> {
    params.sequence(|r| {
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
}

/// How an AlgorithmIdentifier is named in messages: its OID, and whether it has (non-NULL) parameters.
fn describe_algorithm(alg: &AlgorithmIdentifierRef<'_>) -> String {
    match alg.parameters {
        None => alg.oid.to_string(),
        Some(p) if p.is_null() => alg.oid.to_string(),
        Some(_) => format!("{} with parameters", alg.oid),
    }
}

/// SHA-384, with absent or NULL parameters.
fn is_sha384(alg: &AlgorithmIdentifierRef<'_>) -> bool {
    alg.oid == oid::SHA384 && alg.parameters.is_none_or(|p| p.is_null())
}

/// hashAlgorithm [0] EXPLICIT: SHA-384 (absent means the SHA-1 default, refused).
fn check_pss_hash(hash: Option<AnyRef<'_>>, subject: &str) -> Result<(), CertError> {
    let hash = hash.ok_or_else(|| {
        pss_param_error(
            subject,
            "hashAlgorithm",
            "SHA-384",
            "absent (SHA-1)".to_owned(),
        )
    })?;
    let hash = AlgorithmIdentifierRef::from_der(hash.value()).map_err(pss_malformed)?;
    if !is_sha384(&hash) {
        return Err(pss_param_error(
            subject,
            "hashAlgorithm",
            "SHA-384",
            describe_algorithm(&hash),
        ));
    }
    Ok(())
}

/// maskGenAlgorithm [1] EXPLICIT: id-mgf1 with a hash AlgorithmIdentifier as parameters, SHA-384 (absent
/// means the MGF1-SHA-1 default, refused).
fn check_pss_mgf(mgf: Option<AnyRef<'_>>, subject: &str) -> Result<(), CertError> {
    let mgf = mgf.ok_or_else(|| {
        pss_param_error(
            subject,
            "maskGenAlgorithm",
            "MGF1 with SHA-384",
            "absent (MGF1 with SHA-1)".to_owned(),
        )
    })?;
    let mgf = AlgorithmIdentifierRef::from_der(mgf.value()).map_err(pss_malformed)?;
    if mgf.oid != oid::MGF1 {
        return Err(pss_param_error(
            subject,
            "maskGenAlgorithm",
            "MGF1 with SHA-384",
            mgf.oid.to_string(),
        ));
    }
    let mgf_hash = mgf
        .parameters
        .ok_or_else(|| {
            pss_param_error(
                subject,
                "maskGenAlgorithm hash",
                "SHA-384",
                "absent".to_owned(),
            )
        })?
        .decode_as::<AlgorithmIdentifierRef<'_>>()
        .map_err(pss_malformed)?;
    if !is_sha384(&mgf_hash) {
        return Err(pss_param_error(
            subject,
            "maskGenAlgorithm hash",
            "SHA-384",
            describe_algorithm(&mgf_hash),
        ));
    }
    Ok(())
}

/// saltLength [2] EXPLICIT INTEGER: 48, the SHA-384 output length ring's verifier fixes (absent means the
/// default 20, refused).
fn check_pss_salt(salt: Option<AnyRef<'_>>, subject: &str) -> Result<(), CertError> {
    let salt =
        salt.ok_or_else(|| pss_param_error(subject, "saltLength", "48", "absent (20)".to_owned()))?;
    let salt = UintRef::from_der(salt.value()).map_err(pss_malformed)?;
    if salt.as_bytes() != [PSS_SALT_LEN_SHA384] {
        return Err(pss_param_error(
            subject,
            "saltLength",
            "48",
            format!("0x{}", hex::encode(salt.as_bytes())),
        ));
    }
    Ok(())
}

/// trailerField [3] EXPLICIT INTEGER: older AMD certificates write 1, newer ones omit the default.
fn check_pss_trailer(trailer: Option<AnyRef<'_>>, subject: &str) -> Result<(), CertError> {
    if let Some(trailer) = trailer {
        let trailer = UintRef::from_der(trailer.value()).map_err(pss_malformed)?;
        if trailer.as_bytes() != [1] {
            return Err(pss_param_error(
                subject,
                "trailerField",
                "1",
                format!("0x{}", hex::encode(trailer.as_bytes())),
            ));
        }
    }
    Ok(())
}

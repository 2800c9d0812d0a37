//! DER and PEM helpers shared by certificates and CRLs: extension sets, names, serials, times, PEM blocks.

use super::*;

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

pub(crate) fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Splits a PEM bundle into its blocks, each from `-----BEGIN` to the end of its `-----END ...-----`
/// line. Text between blocks is ignored; an unterminated block is kept whole so that decoding it
/// reports the error.
pub(crate) fn split_pem_blocks(pem: &[u8]) -> Vec<&[u8]> {
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

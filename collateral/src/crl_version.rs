//! Where a CRL stands in its issuer's sequence ([`CrlVersion`]), so that the collateral client never rolls a
//! CRL back. A module of its own, below both the client (which decides with it) and the crate's error
//! (which names it in a refused rollback), so that the error type does not depend on the client.

use cloister_attestation::snp::crl::AmdCrl;
use x509_cert::der::oid::AssociatedOid as _;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::CrlNumber;

/// Where a CRL stands in its issuer's sequence, to tell an older CRL from a newer one.
///
/// RFC 5280 §5.2.3: the cRLNumber is "a monotonically increasing sequence number for a given CRL scope and
/// CRL issuer"; AMD's CRLs carry one (ARK-Genoa's of October 2024 is number 4). thisUpdate alone would do
/// as long as AMD's clock is monotonic, but the number is what the issuer promises to increase. A CRL
/// without a number (AMD's all have one) is ordered by thisUpdate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlVersion {
    /// The cRLNumber, big-endian without leading zero bytes, if the CRL has one.
    pub number: Option<Vec<u8>>,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
}

impl CrlVersion {
    /// The version of a parsed CRL.
    pub fn of(crl: &AmdCrl) -> Self {
        CrlVersion {
            number: crl_number(crl.der()),
            this_update: crl.this_update_unix(),
        }
    }

    /// The version of a DER CRL, if it parses.
    pub(crate) fn of_der(der: &[u8]) -> Option<Self> {
        AmdCrl::from_der(der).ok().map(|crl| Self::of(&crl))
    }

    /// Whether this CRL is older than `other` (of the same issuer and scope): a lower cRLNumber when both
    /// have one and they differ, else an earlier thisUpdate.
    pub fn is_older_than(&self, other: &CrlVersion) -> bool {
        match (&self.number, &other.number) {
            (Some(a), Some(b)) if a != b => (a.len(), a) < (b.len(), b),
            _ => self.this_update < other.this_update,
        }
    }
}

impl std::fmt::Display for CrlVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.number {
            Some(n) if n.len() <= 16 => {
                let mut be = [0u8; 16];
                be[16 - n.len()..].copy_from_slice(n);
                write!(f, "CRL number {}", u128::from_be_bytes(be))?;
            }
            Some(n) => write!(f, "CRL number 0x{}", hex::encode(n))?,
            None => f.write_str("a CRL without a number")?,
        }
        let at = time::OffsetDateTime::from_unix_timestamp(self.this_update)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| format!("{} (Unix)", self.this_update));
        write!(f, " of {at}")
    }
}

/// The cRLNumber of a DER CRL (big-endian, leading zero bytes stripped), if it has a well-formed one.
/// Read here because `AmdCrl` does not expose it; the CRL has already been parsed (and, by the callers,
/// verified) by the verifier's code.
fn crl_number(der: &[u8]) -> Option<Vec<u8>> {
    let list = x509_cert::crl::CertificateList::from_der(der).ok()?;
    let extension = list
        .tbs_cert_list
        .crl_extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id == CrlNumber::OID)?;
    let number = CrlNumber::from_der(extension.extn_value.as_bytes()).ok()?;
    let bytes = number.0.as_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Some(bytes[first..].to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::Error;

    const CRLS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/snp/openpcc_azure_genoa_vcek_v3_with_crls"
    );

    fn version(number: Option<&[u8]>, this_update: i64) -> CrlVersion {
        CrlVersion {
            number: number.map(<[u8]>::to_vec),
            this_update,
        }
    }

    #[test]
    fn amds_crls_carry_their_number() {
        for (file, number, this_update) in [
            ("crl_genoa.der", 4u8, 1_729_658_184),
            ("crl_milan.der", 6, 1_746_535_146),
        ] {
            let der = std::fs::read(format!("{CRLS}/{file}")).unwrap();
            let v = CrlVersion::of_der(&der).unwrap();
            assert_eq!(v, version(Some(&[number]), this_update), "{file}");
            assert!(
                v.to_string()
                    .starts_with(&format!("CRL number {number} of 20")),
                "{v}"
            );
        }
        assert_eq!(CrlVersion::of_der(b"not a CRL"), None);
    }

    #[test]
    fn the_crl_number_decides_and_this_update_breaks_ties_or_stands_in() {
        // The number wins over the dates: a higher number with an earlier thisUpdate is the newer CRL.
        let n4_late = version(Some(&[4]), 2_000);
        let n5_early = version(Some(&[5]), 1_000);
        assert!(n4_late.is_older_than(&n5_early));
        assert!(!n5_early.is_older_than(&n4_late));
        // Numbers compare as unsigned big-endian integers of any length.
        let n256 = version(Some(&[1, 0]), 0);
        let n255 = version(Some(&[0xff]), 0);
        assert!(n255.is_older_than(&n256));
        assert!(!n256.is_older_than(&n255));
        // The same number: thisUpdate decides; the same CRL is not older than itself.
        assert!(version(Some(&[4]), 1).is_older_than(&version(Some(&[4]), 2)));
        assert!(!n4_late.is_older_than(&n4_late.clone()));
        // A number missing on either side: thisUpdate.
        assert!(version(None, 1).is_older_than(&version(Some(&[9]), 2)));
        assert!(!version(Some(&[1]), 3).is_older_than(&version(None, 2)));
        assert_eq!(
            version(None, 0).to_string(),
            "a CRL without a number of 1970-01-01T00:00:00Z"
        );
        let long = version(Some(&[0xab; 20]), 0).to_string();
        assert!(
            long.starts_with(&format!("CRL number 0x{}", "ab".repeat(20))),
            "{long}"
        );
    }

    #[test]
    fn a_rollback_names_both_crls_and_is_a_refusal() {
        let e = Error::CrlRollback {
            what: "http://mirror/vcek/v1/Genoa/crl".into(),
            held: version(Some(&[6]), 1_746_535_146),
            offered: version(Some(&[4]), 1_729_658_184),
        };
        assert!(e.is_refusal());
        let text = e.to_string();
        assert!(
            text.contains("CRL number 4 of 2024-10-23")
                && text.contains("CRL number 6 of 2025-05-06")
                && text.contains("http://mirror/vcek/v1/Genoa/crl"),
            "{text}"
        );
    }
}

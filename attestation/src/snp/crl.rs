//! AMD certificate revocation lists: X.509 v2 CRLs signed by a product line's ARK with RSASSA-PSS
//! (served by AMD KDS at `/vcek/v1/<Product>/crl` and `/vlek/v1/<Product>/crl`). They revoke ASKs
//! and ASVKs; VCEKs and VLEKs are never listed (their serial number is 0).
//!
//! The CRL bytes may come from the untrusted host: nothing here is trusted until
//! [`AmdCrl::verify_issued_by`] succeeds against a pinned ARK, and the caller decides how fresh the
//! CRL must be ([`AmdCrl::check_current_at`]).

use core::fmt;

use der::Decode;
use x509_cert::crl::CertificateList;

use super::certs::{
    check_extension_set, common_name, decode_single_pem, normalize_serial, pem_or_der, slice,
    unix_seconds, verify_rsa_pss_sha384, AmdCertificate, CertError, IssuerUsage, SignedKind,
    SignedLayout, SignedParts,
};
use super::report::SigningKey;

const PEM_LABEL_CRL: &str = "X509 CRL";

/// A parsed AMD CRL; keeps its DER bytes.
#[derive(Clone)]
pub struct AmdCrl {
    der: Vec<u8>,
    layout: SignedLayout,
    /// "CRL of <issuer CN>", for messages.
    name: String,
    issuer_cn: String,
    this_update: i64,
    next_update: Option<i64>,
    /// Revoked serial numbers, normalized as [`AmdCertificate::serial_number`].
    revoked: Vec<Vec<u8>>,
    /// The signing key whose tree this CRL covers, when known ([`AmdCrl::for_signing_key`]).
    scope: Option<SigningKey>,
}

impl AmdCrl {
    /// Parses a DER CRL. Rejects duplicate extensions and critical extensions (on the CRL or an
    /// entry), since none is supported: a delta CRL or a partitioned CRL must not be read as full.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let malformed = |source| CertError::Malformed {
            what: "CRL",
            source,
        };
        let layout = SignedLayout::parse(der, SignedKind::Crl).map_err(malformed)?;
        let parsed = CertificateList::from_der(der).map_err(malformed)?;
        let tbs = &parsed.tbs_cert_list;
        let issuer_cn = common_name(&tbs.issuer, "issuer")?;
        let name = format!("CRL of {issuer_cn}");
        check_extension_set(
            tbs.crl_extensions.as_deref().unwrap_or_default(),
            &name,
            &[],
        )?;
        let entries = tbs.revoked_certificates.as_deref().unwrap_or_default();
        let mut revoked = Vec::with_capacity(entries.len());
        for entry in entries {
            check_extension_set(
                entry.crl_entry_extensions.as_deref().unwrap_or_default(),
                &name,
                &[],
            )?;
            revoked.push(normalize_serial(entry.serial_number.as_bytes()).to_vec());
        }
        Ok(Self {
            der: der.to_vec(),
            layout,
            this_update: unix_seconds(tbs.this_update),
            next_update: tbs.next_update.map(unix_seconds),
            name,
            issuer_cn,
            revoked,
            scope: None,
        })
    }

    /// Marks this CRL as covering only the chains of `key` (VCEK: ASK and VCEKs; VLEK: ASVK and VLEKs).
    ///
    /// Why: AMD publishes one CRL per product *and* signing key (`/vcek/v1/{product}/crl`,
    /// `/vlek/v1/{product}/crl`), both signed by the same ARK, so the issuer alone cannot tell them apart. An
    /// unscoped CRL (a file whose origin the verifier does not know) applies to every chain of its ARK; a
    /// scoped one (fetched from a known KDS path) applies only to its own tree, so that a VCEK CRL cannot
    /// stand in for the VLEK CRL a relying party asked to be checked.
    #[must_use]
    pub fn for_signing_key(mut self, key: SigningKey) -> Self {
        self.scope = Some(key);
        self
    }

    /// Whether this CRL covers chains whose leaf is a `key` (always, when unscoped).
    pub fn covers(&self, key: SigningKey) -> bool {
        self.scope.is_none_or(|s| s == key)
    }

    /// Parses a PEM CRL: exactly one `X509 CRL` block.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        let der = decode_single_pem(pem, PEM_LABEL_CRL)?;
        Self::from_der(&der)
    }

    /// Parses PEM if the input starts (after whitespace) with `-----BEGIN`, DER otherwise.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CertError> {
        Self::from_der(&pem_or_der(bytes, PEM_LABEL_CRL)?)
    }

    /// The CRL's DER bytes, exactly as parsed.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The issuer common name, e.g. "ARK-Genoa".
    pub fn issuer_common_name(&self) -> &str {
        &self.issuer_cn
    }

    /// Checks that `ark` signed this CRL: same RSASSA-PSS-SHA384 rules as
    /// [`AmdCertificate::verify_issued_by`], over the raw TBSCertList bytes, with keyUsage cRLSign
    /// (if the issuer has a keyUsage) and the issuer Name equal to the ARK's subject Name.
    pub fn verify_issued_by(&self, ark: &AmdCertificate) -> Result<(), CertError> {
        let signed = SignedParts {
            subject: &self.name,
            claimed_issuer: &self.issuer_cn,
            tbs: slice(&self.der, &self.layout.tbs),
            tbs_algorithm: slice(&self.der, &self.layout.tbs_algorithm),
            algorithm: slice(&self.der, &self.layout.algorithm),
            issuer_name: slice(&self.der, &self.layout.issuer),
            signature: slice(&self.der, &self.layout.signature),
        };
        verify_rsa_pss_sha384(&signed, ark, IssuerUsage::CrlSign)
    }

    /// thisUpdate, unix seconds.
    pub fn this_update_unix(&self) -> i64 {
        self.this_update
    }

    /// nextUpdate, unix seconds, if present.
    pub fn next_update_unix(&self) -> Option<i64> {
        self.next_update
    }

    /// Checks thisUpdate <= `unix_seconds` and, if nextUpdate is present, `unix_seconds` <=
    /// nextUpdate.
    pub fn check_current_at(&self, unix_seconds: i64) -> Result<(), CertError> {
        self.check_current_within(unix_seconds, 0)
    }

    /// Like [`AmdCrl::check_current_at`], tolerating a CRL up to `grace` seconds past its nextUpdate (the
    /// policy's `crl_max_staleness`: AMD publishes a new CRL rarely, and a verifier that cannot reach the
    /// KDS may prefer a slightly stale CRL to none).
    pub fn check_current_within(&self, unix_seconds: i64, grace: i64) -> Result<(), CertError> {
        if unix_seconds < self.this_update {
            return Err(CertError::CrlNotYetValid {
                issuer: self.issuer_cn.clone(),
                this_update: self.this_update,
                at: unix_seconds,
            });
        }
        match self.next_update {
            Some(next_update) if unix_seconds > next_update.saturating_add(grace.max(0)) => {
                Err(CertError::CrlStale {
                    issuer: self.issuer_cn.clone(),
                    next_update,
                    at: unix_seconds,
                    grace: grace.max(0),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `serial` (big-endian; leading zero bytes are ignored) is listed as revoked. Compare
    /// with [`AmdCertificate::serial_number`] of a certificate issued by this CRL's issuer.
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let serial = normalize_serial(serial);
        self.revoked.iter().any(|r| r.as_slice() == serial)
    }

    /// Whether `cert` is revoked by this CRL: same issuer name and a listed serial number.
    pub fn revokes(&self, cert: &AmdCertificate) -> bool {
        cert.issuer_name_der() == slice(&self.der, &self.layout.issuer)
            && self.is_revoked(cert.serial_number())
    }

    /// The revoked serial numbers, big-endian magnitude bytes, in CRL order.
    pub fn revoked_serials(&self) -> Vec<Vec<u8>> {
        self.revoked.clone()
    }
}

impl fmt::Debug for AmdCrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let revoked: Vec<String> = self.revoked.iter().map(hex::encode).collect();
        f.debug_struct("AmdCrl")
            .field("issuer", &self.issuer_cn)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("revoked", &revoked)
            .finish_non_exhaustive()
    }
}

/// Fuzzing entry point: parses `data` as a CRL (PEM or DER) and, if that succeeds, runs every
/// accessor and checks it against the embedded ARKs. Must never panic, whatever the input.
pub fn fuzz_crl(data: &[u8]) {
    if let Ok(crl) = AmdCrl::from_pem_or_der(data) {
        let _ = crl.check_current_at(crl.this_update_unix());
        let _ = crl.is_revoked(&[0x02, 0x00, 0x01]);
        let _ = crl.revoked_serials();
        let _ = format!("{crl:?}");
        for product in super::Product::ALL {
            let roots = super::roots::embedded(product);
            let _ = crl.verify_issued_by(&roots.ark);
            let _ = crl.revokes(&roots.ask);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::snp::roots::embedded;
    use crate::snp::Product;

    const OPENPCC: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/snp/openpcc_azure_genoa_vcek_v3_with_crls"
    );

    fn crl(name: &str) -> AmdCrl {
        let der = std::fs::read(format!("{OPENPCC}/{name}")).unwrap();
        AmdCrl::from_der(&der).unwrap()
    }

    #[test]
    fn genoa_crl_verifies_under_genoa_ark_only() {
        let crl = crl("crl_genoa.der");
        assert_eq!(crl.issuer_common_name(), "ARK-Genoa");
        crl.verify_issued_by(&embedded(Product::Genoa).ark).unwrap();
        for other in [Product::Milan, Product::Turin] {
            let err = crl.verify_issued_by(&embedded(other).ark).unwrap_err();
            assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
        }
        // An ASK is a CA but its keyUsage has no cRLSign.
        let err = crl
            .verify_issued_by(&embedded(Product::Genoa).ask)
            .unwrap_err();
        assert!(matches!(err, CertError::IssuerKeyUsage { .. }), "{err}");
    }

    #[test]
    fn genoa_crl_revocations() {
        let crl = crl("crl_genoa.der");
        assert_eq!(crl.revoked_serials(), vec![vec![0x02, 0x00, 0x01]]);
        assert!(crl.is_revoked(&[0x02, 0x00, 0x01]));
        assert!(crl.is_revoked(&[0x00, 0x02, 0x00, 0x01]));
        let roots = embedded(Product::Genoa);
        assert_eq!(roots.ask.serial_number(), [0x02, 0x00, 0x02]);
        assert!(!crl.is_revoked(roots.ask.serial_number()));
        assert!(!crl.revokes(&roots.ask));
        assert!(!crl.revokes(roots.asvk.as_ref().unwrap()));
        assert!(!crl.is_revoked(roots.ark.serial_number()));
        assert!(!crl.is_revoked(&[0x00]));
    }

    #[test]
    fn genoa_crl_dates() {
        let crl = crl("crl_genoa.der");
        // thisUpdate 241023043624Z, nextUpdate 251103010000Z
        assert_eq!(crl.this_update_unix(), 1_729_658_184);
        assert_eq!(crl.next_update_unix(), Some(1_762_131_600));
        crl.check_current_at(1_740_000_000).unwrap();
        assert!(matches!(
            crl.check_current_at(1_729_658_183),
            Err(CertError::CrlNotYetValid { .. })
        ));
        assert!(matches!(
            crl.check_current_at(1_762_131_601),
            Err(CertError::CrlStale { .. })
        ));
    }

    #[test]
    fn milan_crl() {
        let crl = crl("crl_milan.der");
        assert_eq!(crl.issuer_common_name(), "ARK-Milan");
        crl.verify_issued_by(&embedded(Product::Milan).ark).unwrap();
        assert!(crl.verify_issued_by(&embedded(Product::Genoa).ark).is_err());
        assert!(crl.revoked_serials().is_empty());
        assert!(!crl.revokes(&embedded(Product::Milan).ask));
        // thisUpdate May 6 12:39:06 2025, nextUpdate May 12 00:00:00 2026
        assert_eq!(crl.this_update_unix(), 1_746_535_146);
        assert_eq!(crl.next_update_unix(), Some(1_778_544_000));
    }

    #[test]
    fn pem_round_trip_and_wrong_label() {
        let der = std::fs::read(format!("{OPENPCC}/crl_genoa.der")).unwrap();
        let pem =
            pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, &der).unwrap();
        let parsed = AmdCrl::from_pem_or_der(pem.as_bytes()).unwrap();
        assert_eq!(parsed.der(), der);
        let wrong =
            pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der).unwrap();
        assert!(matches!(
            AmdCrl::from_pem(wrong.as_bytes()),
            Err(CertError::PemLabel { .. })
        ));
    }

    #[test]
    fn tampered_crl_fails() {
        let der = std::fs::read(format!("{OPENPCC}/crl_genoa.der")).unwrap();
        let ark = &embedded(Product::Genoa).ark;
        // Flip the last byte of the revoked serial 0x020001 (at offset 241, inside the TBS): it
        // still parses, and the signature no longer verifies.
        let pos = der
            .windows(5)
            .position(|w| w == [0x02, 0x03, 0x02, 0x00, 0x01])
            .unwrap();
        let mut tampered = der.clone();
        tampered[pos + 4] ^= 0x02;
        let crl = AmdCrl::from_der(&tampered).unwrap();
        assert!(crl.is_revoked(&[0x02, 0x00, 0x03]));
        let err = crl.verify_issued_by(ark).unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
        // Flipped signature byte.
        let mut tampered = der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        assert!(AmdCrl::from_der(&tampered)
            .unwrap()
            .verify_issued_by(ark)
            .is_err());
        // Truncations never panic and never parse.
        for len in 0..der.len() {
            assert!(AmdCrl::from_der(&der[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn crl_is_not_a_certificate() {
        let der = std::fs::read(format!("{OPENPCC}/crl_genoa.der")).unwrap();
        assert!(AmdCertificate::from_der(&der).is_err());
        assert!(AmdCrl::from_der(embedded(Product::Genoa).ark.der()).is_err());
    }
}

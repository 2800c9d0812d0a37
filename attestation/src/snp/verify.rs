//! Verification of an SEV-SNP attestation report and its AMD certificate chain.
//!
//! Trust assumptions:
//! - AMD's ARKs embedded in [`super::roots`] are the only roots trusted by default. A simulated root is
//!   trusted only when the caller passes it explicitly ([`VerifyOptions::simulated_root`]); a report
//!   verified that way is marked [`VerifiedReport::is_simulated`].
//! - Everything else — report bytes, certificates (including a caller-supplied ARK/ASK), CRLs — is
//!   untrusted input, typically relayed by the untrusted host.
//! - Time is injected ([`VerifyOptions::at_unix`]): certificate validity is checked at that instant.
//!
//! The order follows DESIGN §5: parse, build the chain to a pinned root, validity, chain signatures
//! (RSASSA-PSS), optional CRL, the report's ECDSA P-384 signature, then the binding of the leaf
//! certificate to the report (hwID = CHIP_ID and TCB SPLs = REPORTED_TCB for a VCEK; the VLEK key type for
//! a VLEK), then the policy. Every step fails with a precise [`Error`].

use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_FIXED};

use super::certs::{AmdCertificate, AmdExtensions, CertRole};
use super::crl::AmdCrl;
use super::report::{signed_bytes, AttestationReport, ReportError, SigningKey, TcbVersion};
use super::{roots, Product};
use crate::policy::{ChainFacts, Policy};
use crate::Error;

/// The certificates that accompany a report, as offered (untrusted).
#[derive(Clone, Default)]
pub struct CertChain {
    /// The AMD Root Key certificate; when absent, the embedded ARK of the product is used.
    pub ark: Option<AmdCertificate>,
    /// The ASK (VCEK chains) or ASVK (VLEK chains); when absent, the embedded one of the product is used.
    pub intermediate: Option<AmdCertificate>,
    /// The VCEK or VLEK that signed the report.
    pub leaf: Option<AmdCertificate>,
}

/// Parameters of one verification that are not policy.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Instant (Unix seconds, UTC) at which every certificate must be valid.
    pub at_unix: i64,
    /// ARK-signed CRLs to check the ASK/ASVK and leaf serials against. Each applies to the chains its ARK
    /// signed; when the list is not empty, a chain whose ARK signed none of them is rejected (revocation
    /// checking was asked for and cannot be done).
    pub crls: &'a [AmdCrl],
    /// A simulated ARK to trust in addition to AMD's. Only for the simulated platform: reports that
    /// chain to it are marked simulated. Never set this from data the host supplied.
    pub simulated_root: Option<&'a AmdCertificate>,
}

/// Private proof that [`verify`] ran to completion: only this module can construct it, so a
/// [`VerifiedReport`] cannot be forged by other code.
#[derive(Clone, Debug)]
struct ReportVerified(());

/// A report whose chain, signature, certificate binding and policy have all been checked.
///
/// Only [`verify`] constructs this type. Key release and session code take `&VerifiedReport`, so that
/// skipping verification is a compile error, not a forgotten `if`.
#[derive(Clone, Debug)]
pub struct VerifiedReport {
    report: AttestationReport,
    product: Product,
    signing_key: SigningKey,
    simulated: bool,
    leaf_extensions: AmdExtensions,
    _proof: ReportVerified,
}

impl VerifiedReport {
    /// The decoded report.
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }
    /// The product whose root signed the chain.
    pub fn product(&self) -> Product {
        self.product
    }
    /// Whether a VCEK or a VLEK signed the report.
    pub fn signing_key(&self) -> SigningKey {
        self.signing_key
    }
    /// True if the chain ends in an explicitly trusted simulated root rather than AMD's.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }
    /// AMD extensions of the leaf certificate.
    pub fn leaf_extensions(&self) -> &AmdExtensions {
        &self.leaf_extensions
    }
}

/// Chains (ARK, intermediate, leaf: exact DER bytes) whose signatures have verified. Bounded: when full, it
/// is emptied (the cost is one cold verification per chain).
#[derive(Debug)]
pub struct ChainCache {
    verified: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    capacity: usize,
}

impl ChainCache {
    /// A cache of at most `capacity` chains.
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            verified: std::sync::Mutex::new(std::collections::HashSet::new()),
            capacity: capacity.max(1),
        }
    }

    fn key(ark: &AmdCertificate, intermediate: &AmdCertificate, leaf: &AmdCertificate) -> [u8; 32] {
        // Length-prefixed so that the three DER strings cannot be re-split into another chain.
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for der in [ark.der(), intermediate.der(), leaf.der()] {
            ctx.update(&(der.len() as u64).to_be_bytes());
            ctx.update(der);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .map(|set| set.contains(key))
            .unwrap_or(false)
    }

    fn insert(&self, key: [u8; 32]) {
        if let Ok(mut set) = self.verified.lock() {
            if set.len() >= self.capacity {
                set.clear();
            }
            set.insert(key);
        }
    }
}

/// Verifies `raw_report` with its `chain` and applies `policy`.
///
/// This is the one way to obtain a [`VerifiedReport`]. It fails closed: any parse problem, missing
/// certificate, unknown product, or failed check is an error naming the check, the expected and the found
/// value.
pub fn verify(
    raw_report: &[u8],
    chain: &CertChain,
    policy: &Policy,
    options: &VerifyOptions<'_>,
) -> Result<VerifiedReport, Error> {
    verify_inner(raw_report, chain, policy, options, None)
}

/// Like [`verify`], but remembers chains whose signatures verified, so that the next report signed by
/// the same VCEK/VLEK skips the three RSA-PSS verifications. Everything else (root pinning, validity at
/// `options.at_unix`, CRL, report signature, leaf binding, policy) is checked on every call.
pub fn verify_cached(
    raw_report: &[u8],
    chain: &CertChain,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    cache: &ChainCache,
) -> Result<VerifiedReport, Error> {
    verify_inner(raw_report, chain, policy, options, Some(cache))
}

fn verify_inner(
    raw_report: &[u8],
    chain: &CertChain,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    cache: Option<&ChainCache>,
) -> Result<VerifiedReport, Error> {
    let genuine = verify_genuine(raw_report, chain, options, cache, policy.crl_grace_secs())?;
    genuine.apply_policy(policy)
}

/// A report whose chain, signature and leaf binding verified, but to which no policy was applied yet. Crate
/// private: evidence verification checks the claims binding between the two steps
/// ([`crate::evidence::verify_evidence`]), so that a policy decision is only ever made about evidence that is
/// genuine *and* fresh; nothing outside the crate can hold one, so nothing outside can skip the policy.
pub(crate) struct GenuineReport {
    report: AttestationReport,
    product: Product,
    simulated: bool,
    leaf_extensions: AmdExtensions,
}

impl GenuineReport {
    /// The decoded report.
    pub(crate) fn report(&self) -> &AttestationReport {
        &self.report
    }

    /// Whether the chain ends in a simulated root.
    pub(crate) fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// Applies `policy`; the only way from a [`GenuineReport`] to a [`VerifiedReport`].
    pub(crate) fn apply_policy(self, policy: &Policy) -> Result<VerifiedReport, Error> {
        let facts = ChainFacts {
            report: &self.report,
            product: self.product,
            signing_key: self.report.signing_key,
            simulated: self.simulated,
        };
        policy.check(&facts)?;
        Ok(VerifiedReport {
            signing_key: self.report.signing_key,
            report: self.report,
            product: self.product,
            simulated: self.simulated,
            leaf_extensions: self.leaf_extensions,
            _proof: ReportVerified(()),
        })
    }
}

/// Everything but the policy: parse, chain to a pinned root, validity, CRLs, report signature, leaf binding.
pub(crate) fn verify_genuine(
    raw_report: &[u8],
    chain: &CertChain,
    options: &VerifyOptions<'_>,
    cache: Option<&ChainCache>,
    crl_grace: i64,
) -> Result<GenuineReport, Error> {
    let (report, product, simulated, leaf_extensions) =
        verify_without_policy(raw_report, chain, options, cache, crl_grace)?;
    Ok(GenuineReport {
        report,
        product,
        simulated,
        leaf_extensions,
    })
}

/// Everything but the policy. Private so that nothing outside can skip the policy step.
///
/// The numbered steps run in this order, each failing closed with its own [`Error`]; the steps that are
/// longer than a few lines are the functions below, named after what they check.
fn verify_without_policy(
    raw_report: &[u8],
    chain: &CertChain,
    options: &VerifyOptions<'_>,
    cache: Option<&ChainCache>,
    crl_grace: i64,
) -> Result<(AttestationReport, Product, bool, AmdExtensions), Error> {
    // 1. Parse. SNP ABI: exactly 0x4A0 bytes, known version, reserved fields zero.
    let report = AttestationReport::from_bytes(raw_report)?;

    // 2. Signing key and algorithm: only ECDSA P-384 by a VCEK or VLEK can be verified.
    let (intermediate_role, leaf_role) = chain_roles(&report)?;

    let leaf = chain
        .leaf
        .as_ref()
        .ok_or(Error::MissingCertificate { role: leaf_role })?;
    let leaf_extensions = leaf.amd_extensions()?;
    check_leaf_role(&report, leaf, leaf_role)?;

    // 3. Product: from the leaf's productName, cross-checked with the report's CPUID (v3+) and, below, with
    //    the root that signs the chain.
    let product = product_of(&report, &leaf_extensions)?;

    // 4. Root: the ARK must be AMD's for this product, byte for byte, or the explicitly trusted simulated
    //    root. A missing ARK means "use the embedded one".
    let embedded = roots::embedded(product);
    let (ark, simulated) = pinned_ark(chain, embedded, options)?;
    let intermediate = chain_intermediate(chain, embedded, simulated, intermediate_role)?;

    // 5. Chain signatures (RSASSA-PSS SHA-384): ARK self-signed, ARK → ASK/ASVK → VCEK/VLEK.
    check_chain_signatures(ark, intermediate, leaf, cache)?;
    check_intermediate_role(&report, intermediate, intermediate_role, product)?;

    // 6. Validity at the given instant, for every certificate of the chain.
    for cert in [ark, intermediate, leaf] {
        cert.check_valid_at(options.at_unix)?;
    }

    // 7. CRLs, when given: those of this ARK must be signed by it, current, and revoke neither the
    //    intermediate nor the leaf; at least one must apply.
    check_crls(
        options,
        crl_grace,
        ark,
        report.signing_key,
        [(intermediate_role, intermediate), (leaf_role, leaf)],
    )?;

    // 8. The report's signature: ECDSA P-384 / SHA-384 by the leaf.
    check_report_signature(&report, raw_report, leaf, leaf_role)?;

    // 9. Bind the leaf to the report: the certificate's TCB SPLs are those the key was derived for, so they
    //    must equal REPORTED_TCB; a VCEK is per chip, so hwID must equal CHIP_ID.
    check_tcb_binding(&leaf_extensions, &report.reported_tcb, product)?;
    if report.signing_key == SigningKey::Vcek {
        check_hw_id(&leaf_extensions, &report, product)?;
    }

    Ok((report, product, simulated, leaf_extensions))
}

/// Step 2: the roles of the intermediate and leaf certificates for the report's signing key. Only ECDSA
/// P-384 by a VCEK or VLEK can be verified; anything else is refused before any certificate is looked at.
fn chain_roles(report: &AttestationReport) -> Result<(CertRole, CertRole), Error> {
    let roles = match report.signing_key {
        SigningKey::Vcek => (CertRole::Ask, CertRole::Vcek),
        SigningKey::Vlek => (CertRole::Asvk, CertRole::Vlek),
        SigningKey::None => {
            return Err(Error::UnsupportedSignature {
                algo: report.signature_algo,
                key: report.signing_key,
            })
        }
    };
    if report.signature_algo != super::report::SIGNATURE_ALGO_ECDSA_P384_SHA384 {
        return Err(Error::UnsupportedSignature {
            algo: report.signature_algo,
            key: report.signing_key,
        });
    }
    Ok(roles)
}

/// Step 3: the product, from the leaf's productName, cross-checked with the report's CPUID (v3+) and its
/// version. The caller then pins the root of that product.
fn product_of(
    report: &AttestationReport,
    leaf_extensions: &AmdExtensions,
) -> Result<Product, Error> {
    let product = Product::from_name(&leaf_extensions.product_name).ok_or_else(|| {
        Error::Product(format!(
            "leaf productName {:?} is not Milan, Genoa or Turin",
            leaf_extensions.product_name
        ))
    })?;
    if let Some(cpuid_product) = report.cpuid_product() {
        if cpuid_product != product {
            return Err(Error::Product(format!(
                "report CPUID says {cpuid_product}, certificate productName says {product}"
            )));
        }
    }
    // Turin firmware writes version 3 or later (Turin's TCB layout, with FMC, needs the CPUID fields a v2
    // report lacks): a v2 report under a Turin key is not one the firmware made.
    if report.version < 3 && product == Product::Turin {
        return Err(Error::Product(format!(
            "a version {} report cannot come from Turin (its firmware writes version 3 or later)",
            report.version
        )));
    }
    Ok(product)
}

/// Step 4, the root: the ARK must be AMD's for this product, byte for byte, or the explicitly trusted
/// simulated root (then the second value is true). A missing ARK means "use the embedded one". An offered
/// ARK that is neither is refused, with a hint when it is a simulated root or another product's ARK.
fn pinned_ark<'a>(
    chain: &CertChain,
    embedded: &'a roots::AmdRoots,
    options: &VerifyOptions<'a>,
) -> Result<(&'a AmdCertificate, bool), Error> {
    match &chain.ark {
        None => Ok((&embedded.ark, false)),
        Some(offered) if offered.der() == embedded.ark.der() => Ok((&embedded.ark, false)),
        Some(offered) => match options.simulated_root {
            Some(sim) if offered.der() == sim.der() => Ok((sim, true)),
            _ => {
                let hint = if offered.subject_common_name().contains("SIMULATED") {
                    " (it is a simulated root: pass it explicitly to trust simulated evidence)"
                } else if roots::find_embedded_ark(offered.der()).is_some() {
                    " for this product (the ARK of another product was offered)"
                } else {
                    ""
                };
                Err(Error::UntrustedRoot {
                    subject: offered.subject_common_name().to_string(),
                    fingerprint: hex::encode(offered.sha256_fingerprint()),
                    hint,
                })
            }
        },
    }
}

/// Step 4, the intermediate: the offered ASK/ASVK, else the embedded one of the product. A simulated chain
/// has no embedded intermediate, so it must offer its own.
fn chain_intermediate<'a>(
    chain: &'a CertChain,
    embedded: &'a roots::AmdRoots,
    simulated: bool,
    intermediate_role: CertRole,
) -> Result<&'a AmdCertificate, Error> {
    match (&chain.intermediate, simulated, intermediate_role) {
        (Some(c), _, _) => Ok(c),
        (None, false, CertRole::Ask) => Ok(&embedded.ask),
        (None, false, _) => embedded.asvk.as_ref().ok_or(Error::MissingCertificate {
            role: CertRole::Asvk,
        }),
        (None, true, role) => Err(Error::MissingCertificate { role }),
    }
}

/// Step 5, chain signatures (RSASSA-PSS SHA-384): ARK self-signed, ARK → ASK/ASVK → VCEK/VLEK. The
/// intermediate is accepted when the pinned ARK signed it, so that AMD can re-issue ASKs.
///
/// A cache hit means these exact three DER certificates verified before; the pinning is recomputed on every
/// call (by the caller, before this), so a cached chain is only reused under the same trust decision.
fn check_chain_signatures(
    ark: &AmdCertificate,
    intermediate: &AmdCertificate,
    leaf: &AmdCertificate,
    cache: Option<&ChainCache>,
) -> Result<(), Error> {
    let key = ChainCache::key(ark, intermediate, leaf);
    if !cache.is_some_and(|c| c.contains(&key)) {
        ark.verify_issued_by(ark)?;
        intermediate.verify_issued_by(ark)?;
        leaf.verify_issued_by(intermediate)?;
        if let Some(c) = cache {
            c.insert(key);
        }
    }
    Ok(())
}

/// Step 7, CRLs: those whose issuer is this ARK must be signed by it, current, and must not list the
/// intermediate or leaf. CRLs of other roots (other products) do not apply to this chain; if none
/// applies, the check that was asked for cannot be made, and that is an error.
fn check_crls(
    options: &VerifyOptions<'_>,
    crl_grace: i64,
    ark: &AmdCertificate,
    signing_key: SigningKey,
    certs: [(CertRole, &AmdCertificate); 2],
) -> Result<(), Error> {
    if options.crls.is_empty() {
        return Ok(());
    }
    let mut applied = 0;
    for crl in options
        .crls
        .iter()
        .filter(|c| c.issuer_common_name() == ark.subject_common_name() && c.covers(signing_key))
    {
        crl.verify_issued_by(ark).map_err(Error::Crl)?;
        crl.check_current_within(options.at_unix, crl_grace)
            .map_err(Error::Crl)?;
        for (role, cert) in certs {
            if crl.revokes(cert) {
                return Err(Error::Revoked {
                    role,
                    serial: hex::encode(cert.serial_number()),
                });
            }
        }
        applied += 1;
    }
    if applied == 0 {
        return Err(Error::NoApplicableCrl {
            given: options.crls.len(),
            ark: ark.subject_common_name().to_string(),
        });
    }
    Ok(())
}

/// Step 8, the report's signature: ECDSA P-384 / SHA-384 over the raw bytes 0x000..0x2A0, with R and S
/// converted from 72-byte little-endian to 48-byte big-endian.
fn check_report_signature(
    report: &AttestationReport,
    raw_report: &[u8],
    leaf: &AmdCertificate,
    leaf_role: CertRole,
) -> Result<(), Error> {
    let signature = report
        .signature_p384_fixed()
        .ok_or(Error::ReportSignature { role: leaf_role })?;
    let message = signed_bytes(raw_report).ok_or(ReportError::Length {
        expected: super::report::REPORT_LEN,
        found: raw_report.len(),
    })?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, leaf.p384_public_key()?)
        .verify(message, &signature)
        .map_err(|_| Error::ReportSignature { role: leaf_role })?;
    Ok(())
}

fn check_leaf_role(
    report: &AttestationReport,
    leaf: &AmdCertificate,
    role: CertRole,
) -> Result<(), Error> {
    let expected_cn = match role {
        CertRole::Vlek => "SEV-VLEK",
        _ => "SEV-VCEK",
    };
    let cn = leaf.subject_common_name();
    if cn != expected_cn {
        return Err(Error::KeyTypeMismatch {
            report: report.signing_key,
            detail: format!(
                "the leaf certificate's subject CN is {cn:?}, expected {expected_cn:?}"
            ),
        });
    }
    Ok(())
}

fn check_intermediate_role(
    report: &AttestationReport,
    intermediate: &AmdCertificate,
    role: CertRole,
    product: Product,
) -> Result<(), Error> {
    let expected = match role {
        CertRole::Asvk => format!("SEV-VLEK-{product}"),
        _ => format!("SEV-{product}"),
    };
    let cn = intermediate.subject_common_name();
    if cn != expected {
        return Err(Error::KeyTypeMismatch {
            report: report.signing_key,
            detail: format!(
                "the intermediate certificate's subject CN is {cn:?}, expected {expected:?}"
            ),
        });
    }
    Ok(())
}

fn check_tcb_binding(
    ext: &AmdExtensions,
    reported: &TcbVersion,
    product: Product,
) -> Result<(), Error> {
    let pairs = [
        ("bootloader", ext.bl_spl, reported.bootloader),
        ("tee", ext.tee_spl, reported.tee),
        ("snp", ext.snp_spl, reported.snp),
        ("microcode", ext.ucode_spl, reported.microcode),
    ];
    for (component, cert, report) in pairs {
        if cert != report {
            return Err(Error::TcbMismatch {
                component,
                cert,
                report,
            });
        }
    }
    if product.has_fmc_tcb_layout() {
        // Turin: the FMC SPL is part of the TCB; a certificate without it cannot vouch for the report.
        let cert = ext
            .fmc_spl
            .ok_or(Error::MissingExtension { name: "fmcSPL" })?;
        let report = reported.fmc.unwrap_or(0);
        if cert != report {
            return Err(Error::TcbMismatch {
                component: "fmc",
                cert,
                report,
            });
        }
    }
    Ok(())
}

fn check_hw_id(
    ext: &AmdExtensions,
    report: &AttestationReport,
    product: Product,
) -> Result<(), Error> {
    let hw_id = ext
        .hw_id
        .as_deref()
        .ok_or(Error::MissingExtension { name: "hwID" })?;
    // Turin's hwID is 8 bytes: CHIP_ID holds those 8 bytes followed by zeros. Milan/Genoa: 64 bytes.
    let expected_len = if product == Product::Turin { 8 } else { 64 };
    let (head, tail) = report.chip_id.split_at(hw_id.len().min(64));
    let matches =
        hw_id.len() == expected_len && crate::ct_eq(head, hw_id) && tail.iter().all(|&b| b == 0);
    if !matches {
        return Err(Error::HwIdMismatch {
            hw_id: hex::encode(hw_id),
            chip_id: hex::encode(report.chip_id),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn set(name: &str) -> (Vec<u8>, CertChain) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/snp")
            .join(name);
        let chain = CertChain {
            ark: Some(
                AmdCertificate::from_pem(&std::fs::read(dir.join("ark.pem")).unwrap()).unwrap(),
            ),
            intermediate: Some(
                AmdCertificate::from_pem(&std::fs::read(dir.join("ask.pem")).unwrap()).unwrap(),
            ),
            leaf: Some(
                AmdCertificate::from_der(&std::fs::read(dir.join("vcek.der")).unwrap()).unwrap(),
            ),
        };
        (std::fs::read(dir.join("report.bin")).unwrap(), chain)
    }

    const AT: i64 = 1_756_684_800; // 2025-09-01

    #[test]
    fn cached_verification_checks_everything_but_the_chain_signatures() {
        let (report, chain) = set("oak_genoa_vcek_v5");
        let opts = VerifyOptions {
            at_unix: AT,
            crls: &[],
            simulated_root: None,
        };
        let cache = ChainCache::new(4);
        verify_cached(&report, &chain, &Policy::baseline(), &opts, &cache).unwrap();
        assert!(cache.contains(&ChainCache::key(
            chain.ark.as_ref().unwrap(),
            chain.intermediate.as_ref().unwrap(),
            chain.leaf.as_ref().unwrap()
        )));
        // A cache hit still checks the report signature ...
        let mut flipped = report.clone();
        flipped[0x90] ^= 1;
        assert!(matches!(
            verify_cached(&flipped, &chain, &Policy::baseline(), &opts, &cache),
            Err(Error::ReportSignature { .. })
        ));
        // ... validity ...
        let late = VerifyOptions {
            at_unix: 4_102_444_800, // 2100
            ..opts
        };
        assert!(matches!(
            verify_cached(&report, &chain, &Policy::baseline(), &late, &cache),
            Err(Error::Certificate(_))
        ));
        // ... and the policy.
        let strict = Policy::from_toml("vmpls = [3]").unwrap();
        assert!(matches!(
            verify_cached(&report, &chain, &strict, &opts, &cache),
            Err(Error::Policy(_))
        ));
        // Another product's chain is not a hit and fails on its own signatures.
        let (_, milan) = set("oak_milan_vcek_v3_containers");
        let mixed = CertChain {
            intermediate: milan.intermediate,
            ..chain
        };
        assert!(verify_cached(&report, &mixed, &Policy::baseline(), &opts, &cache).is_err());
    }

    #[test]
    fn a_report_with_signing_key_none_or_unknown_algo_is_rejected() {
        let (report, chain) = set("oak_genoa_vcek_v5");
        let opts = VerifyOptions {
            at_unix: AT,
            crls: &[],
            simulated_root: None,
        };
        let mut m = report.clone();
        m[0x48] = 7 << 2; // SIGNING_KEY = none
        assert!(matches!(
            verify(&m, &chain, &Policy::baseline(), &opts),
            Err(Error::UnsupportedSignature { .. })
        ));
        let mut m = report;
        m[0x34] = 2; // SIGNATURE_ALGO
        assert!(matches!(
            verify(&m, &chain, &Policy::baseline(), &opts),
            Err(Error::UnsupportedSignature { .. })
        ));
    }
}

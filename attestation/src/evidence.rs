//! Cloister evidence: an SNP report, its certificate chain, and the claims its REPORT_DATA commits to.
//!
//! ```text
//! Claims      { version, nonce[32], tls_exporter[32], enclave_key (optional), model_digests[sha384; n],
//!               config_digest[sha384], receipt_key (optional: Ed25519, the key of receipts and audit),
//!               model_signers[{ model_digest[sha384], signer[sha256], root_digest[sha256] }; m] }
//! REPORT_DATA = SHA-512("cloister-evidence-v1" || postcard(Claims))       // all 64 bytes
//! Evidence    { platform: snp | snp-simulated, report[1184], cert_chain { ark, intermediate, leaf } (DER),
//!               claims }
//! ```
//!
//! Why: the report proves *which code* runs; the claims say *which session and which model* it speaks
//! for. A verifier recomputes REPORT_DATA from the claims it was handed (so the host cannot change a
//! claim without breaking the signature), then checks that the nonce is the one it just drew (freshness),
//! that the exporter is the one of its own TLS session (no relay: a man in the middle terminating TLS
//! sees a different exporter), and that every model digest is one its policy allows.
//!
//! The encoding is documented byte for byte in `docs/evidence.md`.

use ring::digest::{digest, SHA512};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::policy::Policy;
use crate::snp::certs::AmdCertificate;
use crate::snp::verify::{verify_genuine, CertChain, VerifiedReport, VerifyOptions};
use crate::Error;

/// Domain separator hashed before the claims.
pub const EVIDENCE_DOMAIN: &[u8] = b"cloister-evidence-v1";
/// The claims format version this code writes and accepts (2: with `receipt_key`; 3: with
/// `model_signers`).
pub const CLAIMS_VERSION: u16 = 3;
/// Length of a `receipt_key` (an Ed25519 public key).
pub const RECEIPT_KEY_LEN: usize = 32;
/// Label of the TLS exporter (RFC 8446 §7.5) that binds evidence to a session. Labels outside the IANA
/// "TLS Exporter Labels" registry must begin with `EXPERIMENTAL` (RFC 5705 §4).
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPERIMENTAL-cloister-attestation";
/// Upper bound on model digests in one set of claims (bounds decoding work on untrusted input).
pub const MAX_MODEL_DIGESTS: usize = 64;
/// Upper bound on an encoded [`Evidence`] (report + three certificates + claims), in bytes.
pub const MAX_EVIDENCE_LEN: usize = 64 * 1024;

/// A SHA-384 digest carried in claims.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha384(pub [u8; 48]);

impl core::fmt::Debug for Sha384 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "sha384:{}", hex::encode(self.0))
    }
}

impl Serialize for Sha384 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sha384 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sha384;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("48 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sha384, E> {
                v.try_into()
                    .map(Sha384)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A public key of the enclave, bound into the claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnclaveKey {
    /// An ephemeral X25519 key the key broker wraps the model key to.
    X25519([u8; 32]),
}

/// What the enclave asserts, committed to by REPORT_DATA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// [`CLAIMS_VERSION`].
    pub version: u16,
    /// The verifier's fresh nonce.
    pub nonce: [u8; 32],
    /// The TLS exporter of the session the evidence is sent on ([`TLS_EXPORTER_LABEL`], no context).
    pub tls_exporter: [u8; 32],
    /// An enclave key for key release, when the evidence asks for one.
    pub enclave_key: Option<EnclaveKey>,
    /// SHA-384 of each plaintext ONNX model the enclave serves (or asks the key for).
    pub model_digests: Vec<Sha384>,
    /// SHA-384 of the enclave's measured configuration.
    pub config_digest: Sha384,
    /// The enclave's record-signing key (Ed25519, 32 bytes): what signs its inference receipts and audit
    /// checkpoints. Attested here, so a record verifies only with the key of an enclave the verifier
    /// accepted.
    pub receipt_key: Option<Vec<u8>>,
    /// For each loaded model whose signature the enclave verified before loading it (its `[[models]]`
    /// entry names `signer_keys`), who signed it. The enclave asserts it, so it is worth what the
    /// measurement is worth; a policy's `model_signers` accepts a model on it.
    pub model_signers: Vec<ModelSigner>,
}

/// A verified model signature, as the claims carry it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSigner {
    /// The model (one of the claims' `model_digests`).
    pub model_digest: Sha384,
    /// SHA-256 of the producer's DER SubjectPublicKeyInfo.
    pub signer: [u8; 32],
    /// The signed root digest (model_signing's subject: SHA-256 over the signed file digests).
    pub root_digest: [u8; 32],
}

impl core::fmt::Debug for ModelSigner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:?} signed by sha256:{} (root sha256:{})",
            self.model_digest,
            hex::encode(self.signer),
            hex::encode(self.root_digest)
        )
    }
}

impl Claims {
    /// The verified signer of the model `digest`, if the enclave checked one.
    pub fn signer_of(&self, digest: &[u8; 48]) -> Option<&ModelSigner> {
        self.model_signers
            .iter()
            .find(|s| s.model_digest.0 == *digest)
    }
}

impl Claims {
    /// The 64 bytes of REPORT_DATA these claims require:
    /// `SHA-512("cloister-evidence-v1" || postcard(claims))`.
    pub fn report_data(&self) -> Result<[u8; 64], Error> {
        let encoded = postcard::to_stdvec(self).map_err(|_| Error::EvidenceEncoding)?;
        let mut input = Vec::with_capacity(EVIDENCE_DOMAIN.len() + encoded.len());
        input.extend_from_slice(EVIDENCE_DOMAIN);
        input.extend_from_slice(&encoded);
        let mut out = [0u8; 64];
        out.copy_from_slice(digest(&SHA512, &input).as_ref());
        Ok(out)
    }
}

/// Which platform produced the report. Part of the evidence so that a verifier can say clearly why it
/// rejects simulated evidence, never to decide trust: trust comes from the root the chain ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// AMD SEV-SNP hardware.
    Snp,
    /// The simulated AMD-SP of `cloister sim`.
    SnpSimulated,
    /// An Azure confidential VM: the paravisor's HCL report and its vTPM's quote.
    AzureVtpm,
    /// The simulated Azure CVM: an HCL report signed by the simulated AMD-SP, a quote from swtpm.
    AzureVtpmSimulated,
}

impl Platform {
    /// "snp", "snp-simulated", "azure-vtpm" or "azure-vtpm-simulated".
    pub fn name(self) -> &'static str {
        match self {
            Platform::Snp => "snp",
            Platform::SnpSimulated => "snp-simulated",
            Platform::AzureVtpm => "azure-vtpm",
            Platform::AzureVtpmSimulated => "azure-vtpm-simulated",
        }
    }

    /// Whether the report is an Azure HCL report with a vTPM quote.
    pub fn is_azure(self) -> bool {
        matches!(self, Platform::AzureVtpm | Platform::AzureVtpmSimulated)
    }
}

/// The certificates that sign a report, as DER. An empty field is absent (`Default`: none of the three).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertChainDer {
    /// ARK (DER); empty: use the embedded AMD root of the report's product.
    pub ark: Vec<u8>,
    /// ASK or ASVK (DER); empty: use the embedded one.
    pub intermediate: Vec<u8>,
    /// VCEK or VLEK (DER).
    pub leaf: Vec<u8>,
}

/// Evidence as it travels (postcard-encoded) from the enclave to a verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The platform that made the report.
    pub platform: Platform,
    /// The raw report: the 1184-byte SNP report, or on Azure the HCL report that holds it.
    pub report: Vec<u8>,
    /// Its certificate chain.
    pub cert_chain: CertChainDer,
    /// The claims REPORT_DATA (bare SNP) or the quote's qualifying data and user-data (Azure) commit to.
    pub claims: Claims,
    /// Azure: the vTPM quote (TPMS_ATTEST, TPMT_SIGNATURE, the quoted PCR values); absent on bare SNP.
    pub vtpm: Option<crate::azure::TpmQuote>,
}

impl Evidence {
    /// Encodes for the wire (postcard).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(self).map_err(|_| Error::EvidenceEncoding)
    }

    /// Decodes untrusted bytes; bounded in size, never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_EVIDENCE_LEN {
            return Err(Error::EvidenceTooLarge { what: "evidence" });
        }
        let (ev, rest): (Evidence, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|_| Error::EvidenceEncoding)?;
        if !rest.is_empty() {
            return Err(Error::EvidenceEncoding);
        }
        if ev.claims.model_digests.len() > MAX_MODEL_DIGESTS {
            return Err(Error::EvidenceTooLarge {
                what: "model_digests",
            });
        }
        Ok(ev)
    }

    /// The SNP report: the report itself, or on Azure the one inside the HCL report.
    pub fn snp_report(&self) -> Result<&[u8], Error> {
        if self.platform.is_azure() {
            Ok(crate::azure::hcl::HclReport::parse(&self.report)?.snp_report)
        } else {
            Ok(&self.report)
        }
    }

    fn chain(&self) -> Result<CertChain, Error> {
        let opt = |der: &[u8]| {
            if der.is_empty() {
                Ok(None)
            } else {
                AmdCertificate::from_der(der)
                    .map(Some)
                    .map_err(Error::EvidenceCertificate)
            }
        };
        Ok(CertChain {
            ark: opt(&self.cert_chain.ark)?,
            intermediate: opt(&self.cert_chain.intermediate)?,
            leaf: opt(&self.cert_chain.leaf)?,
        })
    }
}

/// What the verifier expects the claims to say about this session.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedSession<'a> {
    /// The nonce the verifier drew for this exchange.
    pub nonce: &'a [u8; 32],
    /// The verifier's own TLS exporter for this connection.
    pub tls_exporter: &'a [u8; 32],
}

/// Evidence whose report, chain, policy and claims binding have all been verified. Only
/// [`verify_evidence`] constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedEvidence {
    report: VerifiedReport,
    claims: Claims,
    azure: Option<crate::azure::AzureFacts>,
}

impl VerifiedEvidence {
    /// The verified report.
    pub fn report(&self) -> &VerifiedReport {
        &self.report
    }
    /// The claims, now known to be the enclave's.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
    /// On Azure, what the vTPM quote established (PCRs, VM configuration).
    pub fn azure(&self) -> Option<&crate::azure::AzureFacts> {
        self.azure.as_ref()
    }
}

/// Verifies evidence for one session: the report and chain under `policy`, REPORT_DATA = hash of the
/// claims, the nonce and TLS exporter those of this session, every model digest allowed by the policy.
pub fn verify_evidence(
    evidence: &Evidence,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    expected: &ExpectedSession<'_>,
) -> Result<VerifiedEvidence, Error> {
    verify_inner(evidence, policy, options, Some(expected))
}

/// Verifies evidence kept with a record (an inference receipt, an audit log), after its session: the report,
/// chain, policy, REPORT_DATA = hash of the claims, and the claims' digests — everything but freshness (the
/// nonce and exporter against a live session), which the live session checked. The claims' exporter still
/// names the session, and records carry its id.
pub fn verify_recorded_evidence(
    evidence: &Evidence,
    policy: &Policy,
    options: &VerifyOptions<'_>,
) -> Result<VerifiedEvidence, Error> {
    verify_inner(evidence, policy, options, None)
}

fn verify_inner(
    evidence: &Evidence,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    expected: Option<&ExpectedSession<'_>>,
) -> Result<VerifiedEvidence, Error> {
    let claims = &evidence.claims;
    if claims.version != CLAIMS_VERSION {
        return Err(Error::ClaimsVersion {
            found: claims.version,
        });
    }
    if claims.model_digests.len() > MAX_MODEL_DIGESTS {
        return Err(Error::EvidenceTooLarge {
            what: "model_digests",
        });
    }
    check_model_signers(claims)?;
    if claims
        .receipt_key
        .as_ref()
        .is_some_and(|k| k.len() != RECEIPT_KEY_LEN)
    {
        return Err(Error::EvidenceEncoding);
    }
    let chain = evidence.chain()?;
    if evidence.platform.is_azure() {
        return verify_azure_evidence(evidence, &chain, policy, options, expected);
    }
    if evidence.vtpm.is_some() {
        return Err(Error::PlatformMismatch {
            claimed: evidence.platform.name(),
            actual: "a vTPM quote, which only Azure evidence carries",
        });
    }
    // 1. Genuine: the AMD chain, the report's signature, the leaf's binding to the report.
    let genuine = verify_genuine(
        &evidence.report,
        &chain,
        options,
        None,
        policy.crl_grace_secs(),
    )?;

    let actual = if genuine.is_simulated() {
        Platform::SnpSimulated
    } else {
        Platform::Snp
    };
    if actual != evidence.platform {
        return Err(Error::PlatformMismatch {
            claimed: evidence.platform.name(),
            actual: actual.name(),
        });
    }

    // 2. Bound to this exchange: REPORT_DATA must be exactly the hash of the claims we were given
    //    (constant time: it is compared against attacker-influenced bytes), the nonce ours, the exporter
    //    our connection's. Checked before the policy, so that every policy decision is about evidence that
    //    is genuine and fresh ([`Error::is_policy_decision`]): a replayed or forged report never
    //    reaches it.
    let want = claims.report_data()?;
    let got = &genuine.report().report_data;
    if !crate::ct_eq(&want, got) {
        return Err(Error::ReportDataMismatch {
            expected: hex::encode(want),
            found: hex::encode(got),
        });
    }
    if let Some(expected) = expected {
        check_session(claims, expected)?;
    }

    // 3. The policy: the report's fields, then the claims' model and configuration digests.
    let host_data = genuine.report().host_data;
    let report = genuine.apply_policy(policy)?;
    policy.check_no_tpm()?;
    policy.check_workload_identity(false, &host_data)?;
    check_claims_policy(claims, policy)?;
    Ok(VerifiedEvidence {
        report,
        claims: claims.clone(),
        azure: None,
    })
}

/// The nonce ours, the exporter our connection's.
fn check_session(claims: &Claims, expected: &ExpectedSession<'_>) -> Result<(), Error> {
    if !crate::ct_eq(expected.nonce, &claims.nonce) {
        return Err(Error::NonceMismatch {
            expected: hex::encode(expected.nonce),
            found: hex::encode(claims.nonce),
        });
    }
    if !crate::ct_eq(expected.tls_exporter, &claims.tls_exporter) {
        return Err(Error::ExporterMismatch {
            expected: hex::encode(expected.tls_exporter),
            found: hex::encode(claims.tls_exporter),
        });
    }
    Ok(())
}

/// Each signer entry names a model of the claims, once: a signer for a model the enclave does not
/// serve, or two for one model, is not something an honest enclave writes.
fn check_model_signers(claims: &Claims) -> Result<(), Error> {
    if claims.model_signers.len() > claims.model_digests.len() {
        return Err(Error::EvidenceTooLarge {
            what: "model_signers",
        });
    }
    for (i, s) in claims.model_signers.iter().enumerate() {
        if !claims.model_digests.contains(&s.model_digest) {
            return Err(Error::ClaimsModelSigner {
                index: i,
                reason: format!("{:?} is not among claims.model_digests", s.model_digest),
            });
        }
        if claims.model_signers[..i]
            .iter()
            .any(|t| t.model_digest == s.model_digest)
        {
            return Err(Error::ClaimsModelSigner {
                index: i,
                reason: format!("a second signer for {:?}", s.model_digest),
            });
        }
    }
    Ok(())
}

fn check_claims_policy(claims: &Claims, policy: &Policy) -> Result<(), Error> {
    for d in &claims.model_digests {
        policy.check_model(&d.0, claims.signer_of(&d.0).map(|s| &s.signer))?;
    }
    policy.check_config_digest(&claims.config_digest.0)?;
    Ok(())
}

/// Azure: the claims' 64 bytes are the quote's qualifying data and the HCL report's user-data (the paravisor
/// put what the enclave wrote to NV 0x01400002 there before the AMD-SP signed the report), so the binding is
/// the same as on bare SNP, one layer down: AMD signs the paravisor's report, which names the vTPM's AK, which
/// signs the quote of these claims.
fn verify_azure_evidence(
    evidence: &Evidence,
    chain: &CertChain,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    expected: Option<&ExpectedSession<'_>>,
) -> Result<VerifiedEvidence, Error> {
    let claims = &evidence.claims;
    let quote = evidence.vtpm.as_ref().ok_or(Error::PlatformMismatch {
        claimed: evidence.platform.name(),
        actual: "evidence without a vTPM quote",
    })?;
    let want = claims.report_data()?;
    let genuine = crate::azure::verify_genuine_azure(
        &evidence.report,
        quote,
        chain,
        options,
        policy.crl_grace_secs(),
        Some(&want),
        crate::azure::UserDataRule::Exact,
    )?;
    let actual = if genuine.snp.is_simulated() {
        Platform::AzureVtpmSimulated
    } else {
        Platform::AzureVtpm
    };
    if actual != evidence.platform {
        return Err(Error::PlatformMismatch {
            claimed: evidence.platform.name(),
            actual: actual.name(),
        });
    }
    if let Some(expected) = expected {
        check_session(claims, expected)?;
    }
    let host_data = genuine.snp.report().host_data;
    let report = genuine.snp.apply_policy(policy)?;
    policy.check_tpm(&genuine.facts)?;
    policy.check_workload_identity(true, &host_data)?;
    check_claims_policy(claims, policy)?;
    Ok(VerifiedEvidence {
        report,
        claims: claims.clone(),
        azure: Some(genuine.facts),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            version: CLAIMS_VERSION,
            nonce: [1; 32],
            tls_exporter: [2; 32],
            enclave_key: Some(EnclaveKey::X25519([3; 32])),
            model_digests: vec![Sha384([4; 48])],
            config_digest: Sha384([5; 48]),
            receipt_key: None,
            model_signers: Vec::new(),
        }
    }

    #[test]
    fn report_data_changes_with_every_claim() {
        let base = claims().report_data().unwrap();
        let mut c = claims();
        c.nonce[0] ^= 1;
        assert_ne!(c.report_data().unwrap(), base);
        let mut c = claims();
        c.tls_exporter[31] ^= 1;
        assert_ne!(c.report_data().unwrap(), base);
        let mut c = claims();
        c.enclave_key = None;
        assert_ne!(c.report_data().unwrap(), base);
        let mut c = claims();
        c.model_digests.push(Sha384([4; 48]));
        assert_ne!(c.report_data().unwrap(), base);
        let mut c = claims();
        c.config_digest.0[47] ^= 1;
        assert_ne!(c.report_data().unwrap(), base);
        let mut c = claims();
        c.model_signers.push(signer([4; 48]));
        assert_ne!(c.report_data().unwrap(), base);
        let mut d = c.clone();
        d.model_signers[0].signer[0] ^= 1;
        assert_ne!(d.report_data().unwrap(), c.report_data().unwrap());
        d = c.clone();
        d.model_signers[0].root_digest[0] ^= 1;
        assert_ne!(d.report_data().unwrap(), c.report_data().unwrap());
    }

    fn signer(model: [u8; 48]) -> ModelSigner {
        ModelSigner {
            model_digest: Sha384(model),
            signer: [6; 32],
            root_digest: [7; 32],
        }
    }

    #[test]
    fn a_model_signer_names_a_claimed_model_once() {
        let mut c = claims();
        c.model_signers.push(signer([4; 48]));
        check_model_signers(&c).unwrap();
        assert_eq!(c.signer_of(&[4; 48]).unwrap().signer, [6; 32]);
        assert!(c.signer_of(&[9; 48]).is_none());

        c.model_signers[0].model_digest = Sha384([9; 48]);
        let e = check_model_signers(&c).unwrap_err().to_string();
        assert!(e.starts_with("claims.model_signers[0]: sha384:0909"), "{e}");
        assert!(e.ends_with("is not among claims.model_digests"), "{e}");

        c.model_digests.push(Sha384([9; 48]));
        c.model_signers.push(signer([9; 48]));
        let e = check_model_signers(&c).unwrap_err().to_string();
        assert!(
            e.starts_with("claims.model_signers[1]: a second signer for sha384:09"),
            "{e}"
        );

        c.model_signers = vec![signer([4; 48]); 3];
        let e = check_model_signers(&c).unwrap_err().to_string();
        assert_eq!(e, "evidence: too large (model_signers)");
    }

    #[test]
    fn a_signer_pin_accepts_only_the_models_its_signer_signed() {
        let signer_pin = format!("sha256:{}", hex::encode([6u8; 32]));
        let only_signers =
            Policy::from_toml(&format!("model_signers = [\"{signer_pin}\"]")).unwrap();
        let mut c = claims();
        // No verified signer for the model: refused, naming the field.
        let e = check_claims_policy(&c, &only_signers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model_signers") && e.contains("no verified signer"),
            "{e}"
        );
        c.model_signers.push(signer([4; 48]));
        check_claims_policy(&c, &only_signers).unwrap();
        c.model_signers[0].signer = [8; 32];
        let e = check_claims_policy(&c, &only_signers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("signed by sha256:{}", hex::encode([8u8; 32]))),
            "{e}"
        );
        // With a digest pin as well, either admits the model.
        let both = Policy::from_toml(&format!(
            "model_signers = [\"{signer_pin}\"]\nmodel_digests = [\"sha384:{}\"]",
            hex::encode([4u8; 48])
        ))
        .unwrap();
        check_claims_policy(&c, &both).unwrap();
        c.model_digests = vec![Sha384([5; 48])];
        c.model_signers.clear();
        let e = check_claims_policy(&c, &both).unwrap_err().to_string();
        assert!(e.contains("model_digests/model_signers"), "{e}");
    }

    #[test]
    fn evidence_round_trips_and_rejects_garbage() {
        let ev = Evidence {
            platform: Platform::SnpSimulated,
            report: vec![0; 1184],
            cert_chain: CertChainDer {
                ark: vec![1, 2],
                intermediate: vec![],
                leaf: vec![3],
            },
            claims: claims(),
            vtpm: None,
        };
        let bytes = ev.to_bytes().unwrap();
        assert_eq!(Evidence::from_bytes(&bytes).unwrap(), ev);
        for cut in 0..bytes.len() {
            assert!(Evidence::from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes;
        longer.push(0);
        assert!(Evidence::from_bytes(&longer).is_err());
        assert!(Evidence::from_bytes(&vec![0xff; MAX_EVIDENCE_LEN + 1]).is_err());
    }
}

//! Keyless (Sigstore) model signatures, verified offline: the signer is an identity (an e-mail address or
//! a workload URI, as an OIDC issuer vouched for it), not a key.
//!
//! A keyless bundle carries a short-lived certificate (Fulcio) binding an ephemeral key to the identity,
//! and a transparency-log entry (Rekor) proving the signature was logged while the certificate was valid.
//! Everything is checked against a pinned [`TrustedRoot`] (Sigstore's `trusted_root.json`: the
//! certificate authorities and the log keys, with their validity windows), with no network:
//!
//! 1. the log entry: exactly one, kind `dsse` 0.0.1, from a log of the trusted root valid at its
//!    integrated time; its signed entry timestamp (`inclusionPromise`) verifies under the log key, which
//!    authenticates the integrated time; its `inclusionProof` (RFC 6962 path) leads to a root hash that a
//!    checkpoint signed by the same key commits to; its body names this envelope's payload hash,
//!    signature and certificate;
//! 2. the certificate: issued through a certificate authority of the trusted root valid at the integrated
//!    time (each signature checked up to the self-signed root), valid itself at the integrated time (a
//!    Fulcio certificate lives ten minutes: *expired* means signed outside that window), with the
//!    code-signing extended key usage;
//! 3. the identity: the certificate's subject alternative name and OIDC issuer (extension
//!    1.3.6.1.4.1.57264.1.8, or the older .1.1) must be one the policy names ([`SignerIdentity`]);
//! 4. the DSSE signature verifies under the certificate's key.
//!
//! Not checked: certificate-transparency SCTs embedded in the certificate (the Rekor inclusion proof is
//! required instead), and RFC 3161 timestamps (the signed entry timestamp is required instead).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ring::digest::{digest, SHA256};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

use crate::tlog::{self, Hash};
use crate::{Error, SignerId, SignerKey};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const EKU_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const SAN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// Fulcio's OIDC issuer, v2: a DER UTF8String.
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's OIDC issuer, v1 (deprecated): the raw string as the extension value.
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");

/// Largest trusted root accepted.
pub const MAX_TRUSTED_ROOT_LEN: usize = 1024 * 1024;

/// A signer as a keyless policy names it: who (the certificate's subject alternative name: an e-mail
/// address or a URI) and who vouched for it (the OIDC issuer). Both must match exactly.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignerIdentity {
    /// The subject alternative name, e.g. `producer@example.com` or
    /// `https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main`.
    pub identity: String,
    /// The OIDC issuer, e.g. `https://accounts.google.com`.
    pub issuer: String,
}

impl fmt::Debug for SignerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SignerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (issuer {})", self.identity, self.issuer)
    }
}

impl SignerIdentity {
    /// The signer id claims, receipts and client policies carry for this identity: SHA-256 over
    /// `"sigstore-identity/v1\n" issuer "\n" identity`. Same 32 bytes as a key's id, another preimage
    /// (a key id hashes DER, which never starts with this text).
    pub fn id(&self) -> SignerId {
        let text = format!("sigstore-identity/v1\n{}\n{}", self.issuer, self.identity);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
        SignerId(id)
    }
}

/// What keyless verification trusts: the trusted root, and the identities allowed to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeylessPolicy {
    /// The certificate authorities and logs.
    pub root: TrustedRoot,
    /// Who may sign.
    pub identities: Vec<SignerIdentity>,
}

// ---- the trusted root ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTrustedRoot {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawTlog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlog {
    public_key: RawPublicKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    key_details: String,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    cert_chain: RawCertChain,
    valid_for: Option<RawValidity>,
}

#[derive(Deserialize)]
struct RawCertChain {
    certificates: Vec<RawBytes>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawValidity {
    start: Option<String>,
    end: Option<String>,
}

/// A validity window in Unix seconds; `end` absent: still valid.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: i64,
    end: Option<i64>,
}

impl Window {
    fn parse(v: Option<&RawValidity>, what: &'static str) -> Result<Self, Error> {
        let at = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp())
                .map_err(|e| malformed(what, format!("validFor {s:?}: {e}")))
        };
        let v = v.ok_or_else(|| malformed(what, "no validFor".into()))?;
        let start = at(v
            .start
            .as_deref()
            .ok_or_else(|| malformed(what, "validFor has no start".into()))?)?;
        let end = v.end.as_deref().map(at).transpose()?;
        Ok(Self { start, end })
    }

    fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log the root trusts.
#[derive(Clone, Debug)]
struct TrustedLog {
    key: EcKey,
    log_id: Hash,
    valid: Window,
}

/// A certificate authority the root trusts: its chain, issuing certificate first, root last.
#[derive(Clone, Debug)]
struct TrustedCa {
    chain: Vec<ParsedCert>,
    valid: Window,
}

/// Sigstore's `trusted_root.json`, parsed: what keyless signatures are checked against. Only its
/// certificate authorities and transparency logs are used.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    cas: Vec<TrustedCa>,
    logs: Vec<TrustedLog>,
    /// SHA-256 of the JSON it was read from: two roots are the same root when their files are.
    digest: Hash,
}

impl PartialEq for TrustedRoot {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for TrustedRoot {}

impl TrustedRoot {
    /// Parses a trusted root (JSON, media type `application/vnd.dev.sigstore.trustedroot+json;version=0.1`
    /// or `…v0.2+json`). Every certificate and key must parse: a root with one unusable entry is refused
    /// rather than used in part.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_TRUSTED_ROOT_LEN {
            return Err(malformed(
                "trusted root",
                format!("{} bytes, over {MAX_TRUSTED_ROOT_LEN}", bytes.len()),
            ));
        }
        let raw: RawTrustedRoot =
            serde_json::from_slice(bytes).map_err(|e| malformed("trusted root", e.to_string()))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(Error::Unsupported {
                field: "trustedRoot.mediaType",
                expected: "application/vnd.dev.sigstore.trustedroot+json;version=0.1 (or v0.2)",
                found: raw.media_type,
            });
        }
        let mut logs = Vec::new();
        for t in &raw.tlogs {
            let spki = b64(
                "trustedRoot.tlogs[].publicKey.rawBytes",
                &t.public_key.raw_bytes,
            )?;
            let key = EcKey::from_spki(&spki, "trustedRoot.tlogs[].publicKey")?;
            let expected = match key.curve {
                Curve::P256 => "PKIX_ECDSA_P256_SHA_256",
                Curve::P384 => "PKIX_ECDSA_P384_SHA_384",
            };
            if t.public_key.key_details != expected {
                return Err(Error::Unsupported {
                    field: "trustedRoot.tlogs[].publicKey.keyDetails",
                    expected:
                        "PKIX_ECDSA_P256_SHA_256 or PKIX_ECDSA_P384_SHA_384, matching the key",
                    found: t.public_key.key_details.clone(),
                });
            }
            let log_id = sha256(&spki);
            if b64("trustedRoot.tlogs[].logId.keyId", &t.log_id.key_id)? != log_id {
                return Err(malformed(
                    "trustedRoot.tlogs[].logId.keyId",
                    "is not the SHA-256 of the log's public key".into(),
                ));
            }
            logs.push(TrustedLog {
                key,
                log_id,
                valid: Window::parse(
                    t.public_key.valid_for.as_ref(),
                    "trustedRoot.tlogs[].publicKey",
                )?,
            });
        }
        let mut cas = Vec::new();
        for ca in &raw.certificate_authorities {
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| {
                    ParsedCert::from_der(&b64(
                        "trustedRoot.certificateAuthorities[].certChain",
                        &c.raw_bytes,
                    )?)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if chain.is_empty() {
                return Err(malformed(
                    "trustedRoot.certificateAuthorities[].certChain",
                    "empty".into(),
                ));
            }
            cas.push(TrustedCa {
                chain,
                valid: Window::parse(
                    ca.valid_for.as_ref(),
                    "trustedRoot.certificateAuthorities[]",
                )?,
            });
        }
        if cas.is_empty() || logs.is_empty() {
            return Err(malformed(
                "trusted root",
                "needs at least one certificate authority and one transparency log".into(),
            ));
        }
        Ok(Self {
            cas,
            logs,
            digest: sha256(bytes),
        })
    }
}

// ---- keys and certificates --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// An ECDSA public key (a log's, or a certificate's).
#[derive(Clone, Debug)]
struct EcKey {
    curve: Curve,
    point: Vec<u8>,
}

impl EcKey {
    fn from_spki(der: &[u8], what: &'static str) -> Result<Self, Error> {
        let spki = spki::SubjectPublicKeyInfoRef::try_from(der)
            .map_err(|e| malformed(what, format!("not a SubjectPublicKeyInfo: {e}")))?;
        Self::from_spki_ref(&spki, what)
    }

    fn from_spki_ref(
        spki: &spki::SubjectPublicKeyInfoRef<'_>,
        what: &'static str,
    ) -> Result<Self, Error> {
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(unsupported(
                what,
                "an ECDSA key",
                &spki.algorithm.oid.to_string(),
            ));
        }
        let curve = match spki.algorithm.parameters_oid() {
            Ok(SECP256R1) => Curve::P256,
            Ok(SECP384R1) => Curve::P384,
            Ok(other) => return Err(unsupported(what, "P-256 or P-384", &other.to_string())),
            Err(e) => return Err(malformed(what, format!("EC parameters: {e}"))),
        };
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| malformed(what, "key bit string has unused bits".into()))?
            .to_vec();
        Ok(Self { curve, point })
    }

    /// The key's own hash (P-256 with SHA-256, P-384 with SHA-384), as logs sign.
    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match self.curve {
            Curve::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.point)
            .verify(message, sig)
            .is_ok()
    }

    /// A certificate signature, with the hash its algorithm names.
    fn verifies_with(&self, hash: ObjectIdentifier, message: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match (self.curve, hash) {
            (Curve::P256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (Curve::P384, ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Curve::P384, ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return false,
        };
        UnparsedPublicKey::new(alg, &self.point)
            .verify(message, sig)
            .is_ok()
    }
}

/// An X.509 certificate, parsed, with the bytes its signature covers.
#[derive(Clone)]
struct ParsedCert {
    tbs: Vec<u8>,
    cert: Certificate,
    key: EcKey,
}

impl fmt::Debug for ParsedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate {}", self.cert.tbs_certificate.subject)
    }
}

impl ParsedCert {
    /// Parses DER. The certificate must re-encode to the same bytes (DER is canonical), so the TBS the
    /// signature is checked over is the one received.
    fn from_der(der: &[u8]) -> Result<Self, Error> {
        let cert =
            Certificate::from_der(der).map_err(|e| malformed("certificate", e.to_string()))?;
        let reencoded = cert
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        if reencoded != der {
            return Err(malformed("certificate", "not in canonical DER".into()));
        }
        let tbs = cert
            .tbs_certificate
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        let spki_der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| malformed("certificate", e.to_string()))?;
        let key = EcKey::from_spki(&spki_der, "certificate public key")?;
        Ok(Self { tbs, cert, key })
    }

    fn spki_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default()
    }

    fn validity(&self) -> (i64, i64) {
        let v = &self.cert.tbs_certificate.validity;
        let secs = |t: x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
        };
        (secs(v.not_before), secs(v.not_after))
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()?
            .iter()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// Whether `issuer` signed this certificate (its names chain too).
    fn issued_by(&self, issuer: &ParsedCert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
            && self.cert.signature_algorithm == self.cert.tbs_certificate.signature
            && self.cert.signature.as_bytes().is_some_and(|sig| {
                issuer
                    .key
                    .verifies_with(self.cert.signature_algorithm.oid, &self.tbs, sig)
            })
    }

    fn is_ca(&self) -> bool {
        self.extension(BASIC_CONSTRAINTS)
            .and_then(|v| BasicConstraints::from_der(v).ok())
            .is_some_and(|bc| bc.ca)
    }
}

// ---- the bundle's keyless parts ---------------------------------------------------------------------

/// `verificationMaterial.tlogEntries[]`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TlogEntry {
    log_index: String,
    log_id: RawLogId,
    kind_version: KindVersion,
    integrated_time: String,
    inclusion_promise: Option<InclusionPromise>,
    inclusion_proof: Option<InclusionProof>,
    canonicalized_body: String,
}

#[derive(Deserialize)]
struct KindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProof {
    log_index: String,
    root_hash: String,
    tree_size: String,
    hashes: Vec<String>,
    checkpoint: CheckpointEnvelope,
}

#[derive(Deserialize)]
struct CheckpointEnvelope {
    envelope: String,
}

/// The `dsse` 0.0.1 entry body Rekor logs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseBody {
    api_version: String,
    kind: String,
    spec: DsseSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DsseSpec {
    payload_hash: HashValue,
    signatures: Vec<DsseSignature>,
}

#[derive(Deserialize)]
struct HashValue {
    algorithm: String,
    value: String,
}

#[derive(Deserialize)]
struct DsseSignature {
    signature: String,
    verifier: String,
}

fn malformed(what: &'static str, detail: String) -> Error {
    Error::Malformed { what, detail }
}

fn unsupported(field: &'static str, expected: &'static str, found: &str) -> Error {
    Error::Unsupported {
        field,
        expected,
        found: found.to_owned(),
    }
}

fn b64(what: &'static str, s: &str) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(s)
        .map_err(|e| malformed(what, format!("not base64: {e}")))
}

fn int(what: &'static str, s: &str) -> Result<i64, Error> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0 && v.to_string() == s)
        .ok_or_else(|| {
            malformed(
                what,
                format!("{s:?} is not a canonical non-negative integer"),
            )
        })
}

fn sha256(bytes: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn keyless(field: &'static str, reason: String) -> Error {
    Error::Keyless { field, reason }
}

/// Checks a keyless bundle's certificate and log entry and returns the verified signer identity and the
/// certificate's key, which the caller then checks the DSSE signature with. `leaf_der` is the bundle's
/// certificate; `payload` and `sig` are the envelope's (decoded).
pub(crate) fn verify(
    leaf_der: &[u8],
    entries: &[TlogEntry],
    payload: &[u8],
    sig: &[u8],
    sig_b64: &str,
    policy: &KeylessPolicy,
) -> Result<(SignerIdentity, SignerKey), Error> {
    // 1. The log entry.
    let [entry] = entries else {
        return Err(keyless(
            "verificationMaterial.tlogEntries",
            format!(
                "exactly one entry is needed (the signature's log entry), found {}",
                entries.len()
            ),
        ));
    };
    if (
        entry.kind_version.kind.as_str(),
        entry.kind_version.version.as_str(),
    ) != ("dsse", "0.0.1")
    {
        return Err(unsupported(
            "tlogEntries[0].kindVersion",
            "dsse 0.0.1",
            &format!("{} {}", entry.kind_version.kind, entry.kind_version.version),
        ));
    }
    let logged = verify_log_entry(entry, &policy.root)?;
    let integrated_time = logged.integrated_time;
    let body = logged.body;
    // The body must be this signature's: payload hash, signature, certificate.
    let body: DsseBody =
        serde_json::from_slice(&body).map_err(|e| malformed("canonicalizedBody", e.to_string()))?;
    if (body.api_version.as_str(), body.kind.as_str()) != ("0.0.1", "dsse") {
        return Err(unsupported(
            "canonicalizedBody.kind",
            "dsse 0.0.1",
            &body.kind,
        ));
    }
    if body.spec.payload_hash.algorithm != "sha256"
        || body.spec.payload_hash.value != hex::encode(sha256(payload))
    {
        return Err(keyless(
            "canonicalizedBody.spec.payloadHash",
            "is not the SHA-256 of this envelope's payload: the log entry is another signature's"
                .into(),
        ));
    }
    let [logged] = body.spec.signatures.as_slice() else {
        return Err(keyless(
            "canonicalizedBody.spec.signatures",
            "exactly one is needed".into(),
        ));
    };
    if b64(
        "canonicalizedBody.spec.signatures[0].signature",
        &logged.signature,
    )? != sig
    {
        return Err(keyless(
            "canonicalizedBody.spec.signatures[0].signature",
            format!("is not this envelope's signature ({sig_b64})"),
        ));
    }
    let verifier_pem = b64(
        "canonicalizedBody.spec.signatures[0].verifier",
        &logged.verifier,
    )?;
    let (_, verifier_der) = pem_rfc7468::decode_vec(&verifier_pem).map_err(|e| {
        malformed(
            "canonicalizedBody.spec.signatures[0].verifier",
            e.to_string(),
        )
    })?;
    if verifier_der != leaf_der {
        return Err(keyless(
            "canonicalizedBody.spec.signatures[0].verifier",
            "is not the bundle's certificate".into(),
        ));
    }

    let (found, key) = verify_certificate(leaf_der, &policy.root, integrated_time)?;
    // 3. The identity.
    if !policy.identities.contains(&found) {
        return Err(Error::UnknownIdentity {
            found: found.to_string(),
            allowed: policy
                .identities
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    // 4. The caller checks the DSSE signature under this key.
    Ok((found, key))
}

/// A log entry whose signed timestamp, inclusion proof and checkpoint verified.
pub(crate) struct LoggedEntry {
    /// When the log says it integrated the entry (authenticated by the signed entry timestamp).
    pub(crate) integrated_time: i64,
    /// The logged body (the Merkle leaf).
    pub(crate) body: Vec<u8>,
}

/// Step 1 without the kind: the entry is from a log of `root` valid at its integrated time, its signed
/// entry timestamp verifies, and its inclusion proof leads to a checkpoint the log signed.
pub(crate) fn verify_log_entry(
    entry: &TlogEntry,
    root: &TrustedRoot,
) -> Result<LoggedEntry, Error> {
    let integrated_time = int("tlogEntries[0].integratedTime", &entry.integrated_time)?;
    let log_index = int("tlogEntries[0].logIndex", &entry.log_index)?;
    let log_id = b64("tlogEntries[0].logId.keyId", &entry.log_id.key_id)?;
    let log = root
        .logs
        .iter()
        .find(|l| l.log_id[..] == log_id[..])
        .ok_or_else(|| {
            keyless(
                "tlogEntries[0].logId",
                format!("log {} is not in the trusted root", hex::encode(&log_id)),
            )
        })?;
    if !log.valid.contains(integrated_time) {
        return Err(keyless(
            "tlogEntries[0].integratedTime",
            format!("{integrated_time} is outside the log key's validity in the trusted root"),
        ));
    }
    let promise = entry.inclusion_promise.as_ref().ok_or_else(|| {
        keyless(
            "tlogEntries[0].inclusionPromise",
            "absent: without the log's signed entry timestamp the signing time is not authenticated".into(),
        )
    })?;
    // The signed entry timestamp: the log's signature over the canonical JSON of body, time, log and index.
    let set_message = format!(
        "{{\"body\":\"{}\",\"integratedTime\":{integrated_time},\"logID\":\"{}\",\"logIndex\":{log_index}}}",
        entry.canonicalized_body,
        hex::encode(log.log_id)
    );
    let set = b64(
        "tlogEntries[0].inclusionPromise.signedEntryTimestamp",
        &promise.signed_entry_timestamp,
    )?;
    if !log.key.verifies(set_message.as_bytes(), &set) {
        return Err(keyless(
            "tlogEntries[0].inclusionPromise",
            "the signed entry timestamp does not verify under the log's key".into(),
        ));
    }
    let proof = entry.inclusion_proof.as_ref().ok_or_else(|| {
        keyless(
            "tlogEntries[0].inclusionProof",
            "absent: the entry is not proven to be in the log".into(),
        )
    })?;
    let body = b64(
        "tlogEntries[0].canonicalizedBody",
        &entry.canonicalized_body,
    )?;
    let index = int("inclusionProof.logIndex", &proof.log_index)?;
    let size = int("inclusionProof.treeSize", &proof.tree_size)?;
    let tree_root: Hash = b64("inclusionProof.rootHash", &proof.root_hash)?
        .try_into()
        .map_err(|_| malformed("inclusionProof.rootHash", "not 32 bytes".into()))?;
    let path = proof
        .hashes
        .iter()
        .map(|h| {
            b64("inclusionProof.hashes", h)?
                .try_into()
                .map_err(|_| malformed("inclusionProof.hashes", "not 32 bytes".into()))
        })
        .collect::<Result<Vec<Hash>, Error>>()?;
    tlog::verify_inclusion(
        index as u64,
        size as u64,
        &tlog::leaf_hash(&body),
        &path,
        &tree_root,
    )?;
    let key_hash: [u8; 4] = [log.log_id[0], log.log_id[1], log.log_id[2], log.log_id[3]];
    let checkpoint =
        tlog::Checkpoint::verify_with(&proof.checkpoint.envelope, &key_hash, |body, sig| {
            log.key.verifies(body, sig)
        })?;
    if checkpoint.size != size as u64 || checkpoint.root != tree_root {
        return Err(keyless(
            "inclusionProof.checkpoint",
            format!(
                "commits to {} entries with root {}, the proof to {size} with root {}",
                checkpoint.size,
                hex::encode(checkpoint.root),
                hex::encode(tree_root)
            ),
        ));
    }
    Ok(LoggedEntry {
        integrated_time,
        body,
    })
}

/// Step 2: the certificate chains to a certificate authority of `root` valid at `integrated_time`, is
/// valid itself then, and may sign code; returns the identity it names (not yet checked against any
/// policy) and its key.
pub(crate) fn verify_certificate(
    leaf_der: &[u8],
    root: &TrustedRoot,
    integrated_time: i64,
) -> Result<(SignerIdentity, SignerKey), Error> {
    let leaf = ParsedCert::from_der(leaf_der)?;
    let (not_before, not_after) = leaf.validity();
    if !(not_before..=not_after).contains(&integrated_time) {
        return Err(Error::CertificateNotValidAt {
            not_before,
            not_after,
            integrated_time,
        });
    }
    let chained = root.cas.iter().any(|ca| {
        ca.valid.contains(integrated_time)
            && leaf.issued_by(&ca.chain[0])
            && ca
                .chain
                .windows(2)
                .all(|w| w[0].issued_by(&w[1]) && w[1].is_ca())
            && ca.chain[0].is_ca()
            && ca.chain.last().is_some_and(|r| r.issued_by(r))
            && ca.chain.iter().all(|c| {
                let (b, a) = c.validity();
                (b..=a).contains(&integrated_time)
            })
    });
    if !chained {
        return Err(keyless(
            "verificationMaterial.certificate",
            "not issued through a certificate authority of the trusted root valid at the signing time".into(),
        ));
    }
    let code_signing = leaf
        .extension(EKU)
        .and_then(|v| ExtendedKeyUsage::from_der(v).ok())
        .is_some_and(|eku| eku.0.contains(&EKU_CODE_SIGNING));
    if !code_signing {
        return Err(keyless(
            "certificate extendedKeyUsage",
            "does not include code signing".into(),
        ));
    }

    // 3. The identity.
    let san = leaf
        .extension(SAN)
        .and_then(|v| SubjectAltName::from_der(v).ok())
        .and_then(|san| {
            san.0.into_iter().find_map(|n| match n {
                GeneralName::Rfc822Name(s) => Some(s.to_string()),
                GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
                _ => None,
            })
        })
        .ok_or_else(|| {
            keyless(
                "certificate subjectAltName",
                "no e-mail or URI identity".into(),
            )
        })?;
    let issuer = match leaf.extension(FULCIO_ISSUER_V2) {
        Some(v) => der::asn1::Utf8StringRef::from_der(v)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| {
                malformed(
                    "certificate OIDC issuer (1.3.6.1.4.1.57264.1.8)",
                    e.to_string(),
                )
            })?,
        None => leaf
            .extension(FULCIO_ISSUER_V1)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                keyless(
                    "certificate OIDC issuer",
                    "absent (extension 1.3.6.1.4.1.57264.1.8)".into(),
                )
            })?,
    };
    let found = SignerIdentity {
        identity: san,
        issuer,
    };
    let key = SignerKey::from_spki_der(&leaf.spki_der())?;
    Ok((found, key))
}

#[cfg(test)]
mod tests;

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
use ring::digest::{digest, SHA256};
use serde::Deserialize;

use crate::tlog::{self, Hash};
use crate::{Error, SignerId, SignerKey};

mod cert;
mod root;

pub(crate) use cert::verify_certificate;
use root::RawLogId;
pub use root::{TrustedRoot, MAX_TRUSTED_ROOT_LEN};

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

#[cfg(test)]
mod tests;

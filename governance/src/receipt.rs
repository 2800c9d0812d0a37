//! Inference receipts: a COSE_Sign1 (RFC 9052) by the enclave's record key, attached to every inference
//! response (`cloister-receipt` header, base64url), over a CBOR map:
//!
//! ```text
//! protected  { 1 (alg): -8 (EdDSA), 4 (kid): SHA-256 of the public key }
//! payload    { "v": 1, "evidence": bstr(48) SHA-384 of the session's evidence bytes,
//!              "model": tstr, "model_digest": bstr(48), "request": bstr(32), "response": bstr(32)
//!              (canonical tensor digests, crate::digest), "time": uint (unix seconds),
//!              "session": bstr(16) (crate::session_id), "seq": uint (the session's request counter),
//!              and, for a model whose signature the enclave verified at load (docs/provenance.md):
//!              "signer": bstr(32) (SHA-256 of the producer's SubjectPublicKeyInfo),
//!              "signed_root": bstr(32) (the model-signing root digest) }
//! signature  Ed25519, 64 bytes
//! ```
//!
//! The evidence binds the key (its claims carry `receipt_key`), so a receipt verifies only against an
//! enclave the verifier's policy accepts. `cloister infer --receipt FILE` keeps a receipt with its evidence
//! ([`ReceiptFile`]); [`verify_receipt`] checks it offline.

use base64::Engine as _;
use ciborium::Value;
use cloister_attestation::evidence::{verify_recorded_evidence, Evidence, VerifiedEvidence};
use cloister_attestation::{Policy, VerifyOptions};
use cloister_kserve::InferTensor;
use coset::{iana, CoseSign1Builder, HeaderBuilder};
pub use coset::{CborSerializable, CoseSign1};
use serde::{Deserialize, Serialize};

use crate::digest::{tensors_digest, Side};
use crate::signer::{self, RecordSigner};
use crate::{evidence_digest, session_id, Error};

/// The payload version this code writes and reads.
pub const RECEIPT_VERSION: u64 = 1;
/// The HTTP response header that carries a receipt.
pub const RECEIPT_HEADER: &str = "cloister-receipt";
/// Largest receipt accepted.
pub const MAX_RECEIPT_LEN: usize = 4096;

/// What a receipt says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptPayload {
    /// SHA-384 of the evidence bytes the session attested with.
    pub evidence: [u8; 48],
    /// The model's name.
    pub model: String,
    /// The model's SHA-384.
    pub model_digest: [u8; 48],
    /// Canonical digest of the request's inputs.
    pub request: [u8; 32],
    /// Canonical digest of the response's outputs.
    pub response: [u8; 32],
    /// When (unix seconds).
    pub time: u64,
    /// The session ([`crate::session_id`]).
    pub session: [u8; 16],
    /// The request's number in the session (from 1).
    pub seq: u64,
    /// Who signed the model, when the enclave verified a signature at load.
    pub provenance: Option<ReceiptProvenance>,
}

/// The verified provenance of the model a receipt names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptProvenance {
    /// SHA-256 of the producer's DER SubjectPublicKeyInfo (`cloister_provenance::SignerId`).
    pub signer: [u8; 32],
    /// The signed root digest (SHA-256 over the signed file digests).
    pub root_digest: [u8; 32],
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

impl ReceiptPayload {
    /// The CBOR map.
    pub fn to_cbor(&self) -> Result<Vec<u8>, Error> {
        let mut entries = vec![
            (text("v"), Value::Integer(RECEIPT_VERSION.into())),
            (text("evidence"), Value::Bytes(self.evidence.to_vec())),
            (text("model"), text(&self.model)),
            (
                text("model_digest"),
                Value::Bytes(self.model_digest.to_vec()),
            ),
            (text("request"), Value::Bytes(self.request.to_vec())),
            (text("response"), Value::Bytes(self.response.to_vec())),
            (text("time"), Value::Integer(self.time.into())),
            (text("session"), Value::Bytes(self.session.to_vec())),
            (text("seq"), Value::Integer(self.seq.into())),
        ];
        if let Some(p) = &self.provenance {
            entries.push((text("signer"), Value::Bytes(p.signer.to_vec())));
            entries.push((text("signed_root"), Value::Bytes(p.root_digest.to_vec())));
        }
        let map = Value::Map(entries);
        let mut out = Vec::new();
        ciborium::into_writer(&map, &mut out)
            .map_err(|e| Error::malformed("receipt", format!("cannot encode: {e}")))?;
        Ok(out)
    }

    /// Parses the CBOR map: exactly these keys, each of its type and length.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |d: String| Error::malformed("receipt.payload", d);
        let value: Value =
            ciborium::from_reader(bytes).map_err(|e| bad(format!("not CBOR: {e}")))?;
        let Value::Map(entries) = value else {
            return Err(bad("not a map".into()));
        };
        if entries.len() != 9 && entries.len() != 11 {
            return Err(bad(format!(
                "{} entries, expected 9 (or 11 with provenance)",
                entries.len()
            )));
        }
        let get = |key: &str| -> Result<&Value, Error> {
            entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
                .map(|(_, v)| v)
                .ok_or_else(|| bad(format!("no {key:?}")))
        };
        let uint = |key: &str| -> Result<u64, Error> {
            match get(key)? {
                Value::Integer(i) => {
                    u64::try_from(*i).map_err(|_| bad(format!("{key} out of range")))
                }
                _ => Err(bad(format!("{key} is not an integer"))),
            }
        };
        fn fixed<const N: usize>(v: &Value, key: &str) -> Result<[u8; N], Error> {
            match v {
                Value::Bytes(b) => b.as_slice().try_into().map_err(|_| {
                    Error::malformed(
                        "receipt.payload",
                        format!("{key} is {} bytes, expected {N}", b.len()),
                    )
                }),
                _ => Err(Error::malformed(
                    "receipt.payload",
                    format!("{key} is not a byte string"),
                )),
            }
        }
        let version = uint("v")?;
        if version != RECEIPT_VERSION {
            return Err(bad(format!(
                "version {version}, expected {RECEIPT_VERSION}"
            )));
        }
        let model = match get("model")? {
            Value::Text(t) if t.len() <= 256 => t.clone(),
            _ => return Err(bad("model is not a short text".into())),
        };
        Ok(ReceiptPayload {
            evidence: fixed(get("evidence")?, "evidence")?,
            model,
            model_digest: fixed(get("model_digest")?, "model_digest")?,
            request: fixed(get("request")?, "request")?,
            response: fixed(get("response")?, "response")?,
            time: uint("time")?,
            session: fixed(get("session")?, "session")?,
            seq: uint("seq")?,
            provenance: if entries.len() == 11 {
                Some(ReceiptProvenance {
                    signer: fixed(get("signer")?, "signer")?,
                    root_digest: fixed(get("signed_root")?, "signed_root")?,
                })
            } else {
                None
            },
        })
    }
}

fn key_id(public_key: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, public_key)
        .as_ref()
        .to_vec()
}

/// A signed receipt (the COSE_Sign1 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt(pub Vec<u8>);

impl Receipt {
    /// Signs `payload` with the enclave's key.
    pub fn sign(signer: &RecordSigner, payload: &ReceiptPayload) -> Result<Self, Error> {
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .key_id(key_id(&signer.public_key()))
            .build();
        let mut failure = None;
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload.to_cbor()?)
            .create_signature(b"", |tbs| match signer.sign(tbs) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(e);
                    Vec::new()
                }
            })
            .build();
        if let Some(e) = failure {
            return Err(e);
        }
        sign1
            .to_vec()
            .map(Receipt)
            .map_err(|e| Error::malformed("receipt", format!("cannot encode: {e}")))
    }

    /// Checks the signature with `public_key` (the evidence's `receipt_key`) and returns the payload.
    pub fn open(&self, public_key: &[u8]) -> Result<ReceiptPayload, Error> {
        if self.0.len() > MAX_RECEIPT_LEN {
            return Err(Error::malformed("receipt", "too large"));
        }
        let sign1 = CoseSign1::from_slice(&self.0)
            .map_err(|e| Error::malformed("receipt", format!("not a COSE_Sign1: {e}")))?;
        let alg = sign1.protected.header.alg.clone();
        if alg
            != Some(coset::RegisteredLabelWithPrivate::Assigned(
                iana::Algorithm::EdDSA,
            ))
        {
            return Err(Error::mismatch("receipt.alg", "EdDSA", format!("{alg:?}")));
        }
        if sign1.protected.header.key_id != key_id(public_key) {
            return Err(Error::mismatch(
                "receipt.kid",
                hex::encode(key_id(public_key)),
                hex::encode(&sign1.protected.header.key_id),
            ));
        }
        sign1
            .verify_signature(b"", |sig, data| {
                if signer::verify(public_key, data, sig) {
                    Ok(())
                } else {
                    Err(())
                }
            })
            .map_err(|()| Error::Signature { what: "receipt" })?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| Error::malformed("receipt", "no payload"))?;
        ReceiptPayload::from_cbor(payload)
    }

    /// base64url (the header's form).
    pub fn to_header(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.0)
    }

    /// From the header's form.
    pub fn from_header(value: &str) -> Result<Self, Error> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value.trim())
            .map(Receipt)
            .map_err(|e| Error::malformed("receipt", format!("header is not base64url: {e}")))
    }
}

/// A receipt kept with the evidence it points to: what `cloister infer --receipt FILE` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptFile {
    /// The receipt.
    pub receipt: Receipt,
    /// The session's evidence, as it travelled (postcard).
    pub evidence: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    format: String,
    receipt: String,
    evidence: String,
}

/// The `format` of a receipt file.
pub const RECEIPT_FILE_FORMAT: &str = "cloister-receipt-v1";

impl ReceiptFile {
    /// JSON: `{"format": "cloister-receipt-v1", "receipt": base64, "evidence": base64}` (standard base64).
    pub fn to_json(&self) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let file = FileJson {
            format: RECEIPT_FILE_FORMAT.to_owned(),
            receipt: b64.encode(&self.receipt.0),
            evidence: b64.encode(&self.evidence),
        };
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Parses the JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let bad = |d: String| Error::malformed("receipt file", d);
        let file: FileJson = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if file.format != RECEIPT_FILE_FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {RECEIPT_FILE_FORMAT:?}",
                file.format
            )));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(ReceiptFile {
            receipt: Receipt(
                b64.decode(&file.receipt)
                    .map_err(|e| bad(format!("receipt: {e}")))?,
            ),
            evidence: b64
                .decode(&file.evidence)
                .map_err(|e| bad(format!("evidence: {e}")))?,
        })
    }
}

/// A receipt that verified: its payload, and the evidence it points to.
#[derive(Clone, Debug)]
pub struct VerifiedReceipt {
    /// What the receipt says.
    pub payload: ReceiptPayload,
    /// The evidence, verified under the policy.
    pub evidence: VerifiedEvidence,
    /// Whether a request was given and matched.
    pub request_checked: bool,
    /// Whether a response was given and matched.
    pub response_checked: bool,
}

/// Verifies a receipt file offline: the evidence under `policy` (at `options.at_unix`), the receipt's
/// signature by the evidence's `receipt_key`, that it points to this evidence and its session, that its model
/// digest is one the evidence attests, and — when given — that `request` and `response` are the ones it
/// names. Each failure names the field.
pub fn verify_receipt(
    file: &ReceiptFile,
    policy: &Policy,
    options: &VerifyOptions<'_>,
    request: Option<&[InferTensor]>,
    response: Option<&[InferTensor]>,
) -> Result<VerifiedReceipt, Error> {
    let evidence = Evidence::from_bytes(&file.evidence)?;
    let verified = verify_recorded_evidence(&evidence, policy, options)?;
    let claims = verified.claims();
    let key = claims
        .receipt_key
        .as_deref()
        .ok_or_else(|| Error::mismatch("claims.receipt_key", "a key", "none"))?;
    let payload = file.receipt.open(key)?;
    let want = evidence_digest(&file.evidence);
    if payload.evidence != want {
        return Err(Error::mismatch(
            "receipt.evidence",
            hex::encode(want),
            hex::encode(payload.evidence),
        ));
    }
    let session = session_id(&claims.tls_exporter);
    if payload.session != session {
        return Err(Error::mismatch(
            "receipt.session",
            hex::encode(session),
            hex::encode(payload.session),
        ));
    }
    if !claims
        .model_digests
        .iter()
        .any(|d| d.0 == payload.model_digest)
    {
        return Err(Error::mismatch(
            "receipt.model_digest",
            "one of the evidence's model digests",
            format!("sha384:{}", hex::encode(payload.model_digest)),
        ));
    }
    // The signer a receipt names is the one the evidence attests for that model: an enclave that
    // checked no signature cannot have a receipt claim one, and the two never disagree.
    let attested = claims
        .signer_of(&payload.model_digest)
        .map(|s| (s.signer, s.root_digest));
    let named = payload.provenance.map(|p| (p.signer, p.root_digest));
    if attested != named {
        let show = |v: Option<([u8; 32], [u8; 32])>| {
            v.map_or("no signer".to_owned(), |(s, r)| {
                format!(
                    "signer sha256:{}, root sha256:{}",
                    hex::encode(s),
                    hex::encode(r)
                )
            })
        };
        return Err(Error::mismatch(
            "receipt.signer",
            format!("{} (the evidence's claims.model_signers)", show(attested)),
            show(named),
        ));
    }
    let check = |field, side, tensors: Option<&[InferTensor]>, named: &[u8; 32]| {
        let Some(t) = tensors else {
            return Ok(false);
        };
        let got = tensors_digest(side, t);
        if &got != named {
            return Err(Error::mismatch(field, hex::encode(named), hex::encode(got)));
        }
        Ok(true)
    };
    let request_checked = check("receipt.request", Side::Request, request, &payload.request)?;
    let response_checked = check(
        "receipt.response",
        Side::Response,
        response,
        &payload.response,
    )?;
    Ok(VerifiedReceipt {
        payload,
        evidence: verified,
        request_checked,
        response_checked,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn payload() -> ReceiptPayload {
        ReceiptPayload {
            evidence: [1; 48],
            model: "mlp".into(),
            model_digest: [2; 48],
            request: [3; 32],
            response: [4; 32],
            time: 1_700_000_000,
            session: [5; 16],
            seq: 7,
            provenance: None,
        }
    }

    #[test]
    fn a_receipt_of_a_signed_model_carries_its_signer() {
        let signer = RecordSigner::generate().unwrap();
        let with = ReceiptPayload {
            provenance: Some(ReceiptProvenance {
                signer: [8; 32],
                root_digest: [9; 32],
            }),
            ..payload()
        };
        let receipt = Receipt::sign(&signer, &with).unwrap();
        assert_eq!(receipt.open(&signer.public_key()).unwrap(), with);
        // Half the provenance is no provenance: refused.
        let value: Value = ciborium::from_reader(with.to_cbor().unwrap().as_slice()).unwrap();
        let Value::Map(mut entries) = value else {
            panic!("not a map")
        };
        entries.pop();
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(entries), &mut bytes).unwrap();
        assert!(ReceiptPayload::from_cbor(&bytes).is_err());
    }

    #[test]
    fn a_receipt_opens_with_its_key_only_and_round_trips() {
        let signer = RecordSigner::generate().unwrap();
        let receipt = Receipt::sign(&signer, &payload()).unwrap();
        assert_eq!(receipt.open(&signer.public_key()).unwrap(), payload());
        let header = receipt.to_header();
        assert_eq!(Receipt::from_header(&header).unwrap(), receipt);
        let other = RecordSigner::generate().unwrap();
        let err = receipt.open(&other.public_key()).unwrap_err().to_string();
        assert!(err.starts_with("receipt.kid"), "{err}");
    }

    #[test]
    fn any_change_to_a_signed_receipt_breaks_its_signature() {
        let signer = RecordSigner::generate().unwrap();
        let key = signer.public_key();
        let good = Receipt::sign(&signer, &payload()).unwrap();
        // Every byte of the payload, changed in place: never accepted.
        let sign1 = CoseSign1::from_slice(&good.0).unwrap();
        let body = sign1.payload.clone().unwrap();
        for i in 0..body.len() {
            let mut forged = sign1.clone();
            let mut p = body.clone();
            p[i] ^= 0x01;
            forged.payload = Some(p);
            let bytes = Receipt(forged.to_vec().unwrap());
            assert!(bytes.open(&key).is_err(), "byte {i} of the payload");
        }
        // The signature itself.
        let mut forged = sign1;
        forged.signature[0] ^= 1;
        let err = Receipt(forged.to_vec().unwrap())
            .open(&key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signature"), "{err}");
        assert!(Receipt(vec![0xA0]).open(&key).is_err());
        assert!(Receipt::from_header("!!").is_err());
    }

    #[test]
    fn the_payload_is_strict() {
        let good = payload().to_cbor().unwrap();
        assert_eq!(ReceiptPayload::from_cbor(&good).unwrap(), payload());
        let value: Value = ciborium::from_reader(good.as_slice()).unwrap();
        let Value::Map(mut entries) = value else {
            unreachable!()
        };
        entries.push((text("extra"), Value::Integer(1.into())));
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(entries), &mut bytes).unwrap();
        assert!(ReceiptPayload::from_cbor(&bytes).is_err());
        assert!(ReceiptPayload::from_cbor(b"\xff").is_err());
    }
}

//! Sigstore's `trusted_root.json`: the certificate authorities and transparency logs keyless signatures
//! are checked against, each with its validity window.

use serde::Deserialize;

use super::cert::ParsedCert;
use super::{b64, malformed, sha256};
use crate::tlog::Hash;
use crate::{Curve, Error, SignerKey};

/// Largest trusted root accepted.
pub const MAX_TRUSTED_ROOT_LEN: usize = 1024 * 1024;

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
pub(super) struct RawLogId {
    pub(super) key_id: String,
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
pub(super) struct Window {
    pub(super) start: i64,
    pub(super) end: Option<i64>,
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

    pub(super) fn contains(&self, t: i64) -> bool {
        t >= self.start && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log the root trusts.
#[derive(Clone, Debug)]
pub(super) struct TrustedLog {
    pub(super) key: SignerKey,
    pub(super) log_id: Hash,
    pub(super) valid: Window,
}

/// A certificate authority the root trusts: its chain, issuing certificate first, root last.
#[derive(Clone, Debug)]
pub(super) struct TrustedCa {
    pub(super) chain: Vec<ParsedCert>,
    pub(super) valid: Window,
}

/// Sigstore's `trusted_root.json`, parsed: what keyless signatures are checked against. Only its
/// certificate authorities and transparency logs are used.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    pub(super) cas: Vec<TrustedCa>,
    pub(super) logs: Vec<TrustedLog>,
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
            let key = SignerKey::from_spki_der(&spki)
                .map_err(|e| malformed("trustedRoot.tlogs[].publicKey", e.to_string()))?;
            let expected = match key.curve() {
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

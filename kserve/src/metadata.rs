//! Model metadata, error bodies and the attestation request.

use cloister_models::ModelDigest;
use serde::{Deserialize, Serialize};

use crate::Datatype;

/// One input or output in the model metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataTensor {
    /// The name.
    pub name: String,
    /// The element type.
    pub datatype: Datatype,
    /// The shape; `-1` for a dimension bound per request (batch, sequence length…).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`: KServe v2 model metadata plus the digest of the model the enclave serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadataResponse {
    /// The model's name (from the enclave's measured configuration).
    pub name: String,
    /// Available versions.
    #[serde(default)]
    pub versions: Vec<String>,
    /// `"onnx"`.
    pub platform: String,
    /// The inputs, in the model's order.
    pub inputs: Vec<MetadataTensor>,
    /// The outputs, in the model's order.
    pub outputs: Vec<MetadataTensor>,
    /// SHA-384 of the plaintext ONNX model (`"sha384:…"`). Informational: the attested claims are what a
    /// client must check.
    pub digest: ModelDigest,
}

/// Every error body: `{"error": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, for a human.
    pub error: String,
}

/// `POST /v2/attestation` body: `{"nonce": "<64 hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationRequest {
    /// The client's fresh 32-byte nonce, as 64 hex digits.
    #[serde(with = "hex32")]
    pub nonce: [u8; 32],
}

mod hex32 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out)
            .map_err(|_| D::Error::custom("nonce must be 64 hex digits (32 bytes)"))?;
        Ok(out)
    }
}

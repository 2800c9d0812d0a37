//! The KServe Open Inference Protocol v2 as the enclave serves it and the client speaks it: JSON bodies
//! and the binary tensor extension.
//!
//! Who runs it: the enclave (server side), `cloister` and the proxy (client side), and the inference engine,
//! which speaks these tensor types. Secrets: none of its own; the tensors it carries are the client's
//! confidential inputs and outputs, so `Debug` never prints their values. It links no key or sealing code.
//!
//! ```text
//! POST /v2/models/{name}/infer
//!   JSON:    body = InferRequest (tensor data inline, flat row-major JSON arrays; nested arrays accepted)
//!   binary:  header Inference-Header-Content-Length: N
//!            body = N bytes of InferRequest JSON, then the raw little-endian bytes of every tensor whose
//!                   parameters carry "binary_data_size", in the order of `inputs` (BOOL: one byte, 0 or 1)
//!   response: InferResponse, binary for the outputs the request asked so
//!             (request `parameters.binary_data_output`, overridden per output by `parameters.binary_data`)
//! GET /v2/models/{name}  → ModelMetadataResponse (+ "digest": "sha384:…")
//! errors                 → ErrorResponse {"error": "…"}
//! POST /v2/attestation   ← AttestationRequest {"nonce": "<64 hex>"}
//! ```
//!
//! Tensor data is typed by its `datatype`: a JSON number is parsed from its text straight into the
//! element type (`FP32` with `str::parse::<f32>`, which rounds correctly once; never through `f64`), and
//! `FP32` values are written with the shortest representation that reads back to the same `f32`. So an
//! `f32` survives JSON bit for bit. JSON has no NaN or infinities: this crate writes them as the strings
//! `"NaN"`, `"Infinity"` and `"-Infinity"` and reads those strings back for `FP32`/`FP64` (the binary
//! extension carries them natively).
//!
//! Everything decoded here may come from an attacker (a client of the enclave, or an enclave the client
//! has not verified yet): decoding never panics, allocates at most in proportion to the body, and names
//! the field at fault without echoing values.
#![forbid(unsafe_code)]

mod body;
mod datatype;
mod error;
mod metadata;
mod scalars;
mod selection;
mod tensor;

pub use body::{
    DecodeLimits, EncodedBody, InferRequest, InferResponse, InferTensor, Parameter, Parameters,
    RequestInput, RequestOutput, ResponseOutput, MAX_RANK,
};
pub use datatype::Datatype;
pub use error::{Error, TensorProblem};
pub use metadata::{AttestationRequest, ErrorResponse, MetadataTensor, ModelMetadataResponse};
pub use selection::OutputSelection;
pub use tensor::TensorData;

/// The header that announces the length of the JSON part of a binary-extension body.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Content type of the postcard-encoded evidence of `POST /v2/attestation`.
pub const EVIDENCE_CONTENT_TYPE: &str = "application/vnd.cloister.evidence";
/// Content type of JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Content type of binary-extension bodies (JSON header followed by raw tensors).
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";
/// Parameter of a tensor sent as raw bytes: its length in bytes.
pub const BINARY_DATA_SIZE: &str = "binary_data_size";
/// Parameter of a requested output: return it as raw bytes (`true`) or JSON (`false`).
pub const BINARY_DATA: &str = "binary_data";
/// Request parameter: return every output as raw bytes unless the output says otherwise.
pub const BINARY_DATA_OUTPUT: &str = "binary_data_output";

#[cfg(test)]
mod tests;

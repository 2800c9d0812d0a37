//! The KServe Open Inference Protocol v2 as the enclave serves it and the client speaks it: JSON bodies
//! and the binary tensor extension.
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

use std::collections::BTreeMap;
use std::fmt;

use cloister_models::ModelDigest;
use serde::de::Error as _;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

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
/// Most dimensions a request tensor may have (ONNX models use a handful; the shape is client-chosen).
pub const MAX_RANK: usize = 32;

/// Bounds applied while a request is decoded. The body is already bounded in bytes; these bound what the
/// numbers in it may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most elements of one tensor (its shape's product), checked before its data is parsed.
    pub max_tensor_elements: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_tensor_elements: 16 * 1024 * 1024,
        }
    }
}

/// A shape for an error message: at most eight dimensions, then the rank.
fn shape_text(shape: &[u64]) -> String {
    const SHOWN: usize = 8;
    if shape.len() <= SHOWN {
        format!("{shape:?}")
    } else {
        let head: Vec<String> = shape[..SHOWN].iter().map(u64::to_string).collect();
        format!("[{}, …] (rank {})", head.join(", "), shape.len())
    }
}

/// A tensor element type, named as in the Open Inference Protocol v2. (`FP16`, `BF16` and `BYTES` are not
/// supported by the enclave's engine and are refused when decoding.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Datatype {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
}

impl Datatype {
    /// Every supported datatype.
    pub const ALL: [Datatype; 11] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp32,
        Self::Fp64,
    ];

    /// The v2 name (`"FP32"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
        }
    }

    /// Parses a v2 name; `None` for unknown or unsupported names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The longest JSON text of one element, with its separating comma: what a response of this datatype
    /// can cost per element at most (`-2147483648,`, `-1.1754944e-38,` and so on; non-finite floats are
    /// quoted names, shorter than the longest number).
    pub const fn max_json_element_len(self) -> usize {
        match self {
            Self::Bool => 6,
            Self::Uint8 => 4,
            Self::Int8 => 5,
            Self::Uint16 => 6,
            Self::Int16 => 7,
            Self::Uint32 => 11,
            Self::Int32 => 12,
            Self::Uint64 | Self::Int64 => 21,
            Self::Fp32 => 16,
            Self::Fp64 => 25,
        }
    }

    /// Bytes per element in the binary extension (BOOL: one byte).
    pub const fn element_size(self) -> usize {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Datatype {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Datatype {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Datatype::from_name(&name).ok_or_else(|| D::Error::custom(unsupported_datatype(&name)))
    }
}

fn unsupported_datatype(name: &str) -> String {
    let known: Vec<&str> = Datatype::ALL.iter().map(|d| d.name()).collect();
    // The name comes from the peer: echo it only if it is short and printable.
    if name.len() <= 16 && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!(
            "datatype `{name}` is not supported (supported: {})",
            known.join(", ")
        )
    } else {
        format!(
            "datatype is not supported (supported: {})",
            known.join(", ")
        )
    }
}

/// The elements of a tensor, row-major, one variant per [`Datatype`].
///
/// `Debug` prints the datatype and the length, never the values: tensors are confidential.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    Uint8(Vec<u8>),
    /// `UINT16`
    Uint16(Vec<u16>),
    /// `UINT32`
    Uint32(Vec<u32>),
    /// `UINT64`
    Uint64(Vec<u64>),
    /// `INT8`
    Int8(Vec<i8>),
    /// `INT16`
    Int16(Vec<i16>),
    /// `INT32`
    Int32(Vec<i32>),
    /// `INT64`
    Int64(Vec<i64>),
    /// `FP32`
    Fp32(Vec<f32>),
    /// `FP64`
    Fp64(Vec<f64>),
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TensorData::{}(len = {})", self.datatype(), self.len())
    }
}

/// Little-endian encoding of the numeric types.
macro_rules! le_bytes {
    ($v:expr) => {{
        let mut out = Vec::with_capacity(std::mem::size_of_val(&$v[..]));
        for x in $v.iter() {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }};
}

/// Little-endian decoding of the numeric types; `bytes.len()` is a multiple of the element size.
macro_rules! from_le {
    ($bytes:expr, $t:ty) => {{
        const N: usize = std::mem::size_of::<$t>();
        $bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    }};
}

impl TensorData {
    /// The datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        match self {
            Self::Bool(_) => Datatype::Bool,
            Self::Uint8(_) => Datatype::Uint8,
            Self::Uint16(_) => Datatype::Uint16,
            Self::Uint32(_) => Datatype::Uint32,
            Self::Uint64(_) => Datatype::Uint64,
            Self::Int8(_) => Datatype::Int8,
            Self::Int16(_) => Datatype::Int16,
            Self::Int32(_) => Datatype::Int32,
            Self::Int64(_) => Datatype::Int64,
            Self::Fp32(_) => Datatype::Fp32,
            Self::Fp64(_) => Datatype::Fp64,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Bool(v) => v.len(),
            Self::Uint8(v) => v.len(),
            Self::Uint16(v) => v.len(),
            Self::Uint32(v) => v.len(),
            Self::Uint64(v) => v.len(),
            Self::Int8(v) => v.len(),
            Self::Int16(v) => v.len(),
            Self::Int32(v) => v.len(),
            Self::Int64(v) => v.len(),
            Self::Fp32(v) => v.len(),
            Self::Fp64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The binary-extension encoding: little-endian elements, BOOL as one byte 0 or 1.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
            Self::Uint8(v) => v.clone(),
            Self::Uint16(v) => le_bytes!(v),
            Self::Uint32(v) => le_bytes!(v),
            Self::Uint64(v) => le_bytes!(v),
            Self::Int8(v) => le_bytes!(v),
            Self::Int16(v) => le_bytes!(v),
            Self::Int32(v) => le_bytes!(v),
            Self::Int64(v) => le_bytes!(v),
            Self::Fp32(v) => le_bytes!(v),
            Self::Fp64(v) => le_bytes!(v),
        }
    }

    /// Decodes the binary-extension encoding of `datatype` elements.
    pub fn from_le_bytes(datatype: Datatype, bytes: &[u8]) -> Result<Self, TensorProblem> {
        let size = datatype.element_size();
        if !bytes.chunks_exact(size).remainder().is_empty() {
            return Err(TensorProblem::BinarySizeNotMultiple {
                size: bytes.len() as u64,
                element_size: size,
            });
        }
        Ok(match datatype {
            Datatype::Bool => Self::Bool(
                bytes
                    .iter()
                    .enumerate()
                    .map(|(index, b)| match b {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(TensorProblem::BadBinaryBool { index }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Datatype::Uint8 => Self::Uint8(bytes.to_vec()),
            Datatype::Uint16 => Self::Uint16(from_le!(bytes, u16)),
            Datatype::Uint32 => Self::Uint32(from_le!(bytes, u32)),
            Datatype::Uint64 => Self::Uint64(from_le!(bytes, u64)),
            Datatype::Int8 => Self::Int8(from_le!(bytes, i8)),
            Datatype::Int16 => Self::Int16(from_le!(bytes, i16)),
            Datatype::Int32 => Self::Int32(from_le!(bytes, i32)),
            Datatype::Int64 => Self::Int64(from_le!(bytes, i64)),
            Datatype::Fp32 => Self::Fp32(from_le!(bytes, f32)),
            Datatype::Fp64 => Self::Fp64(from_le!(bytes, f64)),
        })
    }

    /// Parses the text of a JSON `data` value as elements of `datatype`. Nested arrays are flattened
    /// (row-major, as KServe allows); the caller compares the count with the shape.
    ///
    /// `json` must be valid JSON (serde_json checked it as a [`RawValue`]); this walks its tokens.
    pub fn from_json_text(datatype: Datatype, json: &str) -> Result<Self, TensorProblem> {
        Self::from_json_text_at_most(datatype, json, usize::MAX)
    }

    /// [`TensorData::from_json_text`] that stops at the first element beyond `max` (an error): a request's
    /// element limit applies while its `data` is parsed, not after the whole array is in memory.
    pub fn from_json_text_at_most(
        datatype: Datatype,
        json: &str,
        max: usize,
    ) -> Result<Self, TensorProblem> {
        let mut tokens = JsonScalars::new(json)?;
        // Never reserve more than the text can hold (one element needs at least two bytes): `max` comes from
        // a shape the client chose.
        let reserve = max.min(json.len() / 2 + 1);
        macro_rules! collect {
            ($variant:ident, $parse:expr) => {{
                let mut out = Vec::with_capacity(reserve);
                while let Some((index, token)) = tokens.next_scalar()? {
                    if index >= max {
                        return Err(TensorProblem::TooManyElements { limit: max });
                    }
                    out.push($parse(index, token)?);
                }
                Self::$variant(out)
            }};
        }
        Ok(match datatype {
            Datatype::Bool => collect!(Bool, parse_bool),
            Datatype::Uint8 => collect!(Uint8, parse_int::<u8>),
            Datatype::Uint16 => collect!(Uint16, parse_int::<u16>),
            Datatype::Uint32 => collect!(Uint32, parse_int::<u32>),
            Datatype::Uint64 => collect!(Uint64, parse_int::<u64>),
            Datatype::Int8 => collect!(Int8, parse_int::<i8>),
            Datatype::Int16 => collect!(Int16, parse_int::<i16>),
            Datatype::Int32 => collect!(Int32, parse_int::<i32>),
            Datatype::Int64 => collect!(Int64, parse_int::<i64>),
            Datatype::Fp32 => collect!(Fp32, parse_float::<f32>),
            Datatype::Fp64 => collect!(Fp64, parse_float::<f64>),
        })
    }
}

/// Serializes as a flat JSON array. `FP32` elements are written as `f32` (shortest round-trip form),
/// never widened to `f64`; non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`.
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        macro_rules! seq {
            ($v:expr, $elem:expr) => {{
                let mut seq = s.serialize_seq(Some($v.len()))?;
                for x in $v.iter() {
                    $elem(&mut seq, *x)?;
                }
                seq.end()
            }};
        }
        fn plain<Q: SerializeSeq, T: Serialize>(seq: &mut Q, x: T) -> Result<(), Q::Error> {
            seq.serialize_element(&x)
        }
        fn f32_elem<Q: SerializeSeq>(seq: &mut Q, x: f32) -> Result<(), Q::Error> {
            match non_finite_name(x.is_nan(), x.is_infinite(), x.is_sign_negative()) {
                Some(name) => seq.serialize_element(name),
                None => seq.serialize_element(&x),
            }
        }
        fn f64_elem<Q: SerializeSeq>(seq: &mut Q, x: f64) -> Result<(), Q::Error> {
            match non_finite_name(x.is_nan(), x.is_infinite(), x.is_sign_negative()) {
                Some(name) => seq.serialize_element(name),
                None => seq.serialize_element(&x),
            }
        }
        match self {
            Self::Bool(v) => seq!(v, plain),
            Self::Uint8(v) => seq!(v, plain),
            Self::Uint16(v) => seq!(v, plain),
            Self::Uint32(v) => seq!(v, plain),
            Self::Uint64(v) => seq!(v, plain),
            Self::Int8(v) => seq!(v, plain),
            Self::Int16(v) => seq!(v, plain),
            Self::Int32(v) => seq!(v, plain),
            Self::Int64(v) => seq!(v, plain),
            Self::Fp32(v) => seq!(v, f32_elem),
            Self::Fp64(v) => seq!(v, f64_elem),
        }
    }
}

fn non_finite_name(nan: bool, infinite: bool, negative: bool) -> Option<&'static str> {
    match (nan, infinite, negative) {
        (true, _, _) => Some("NaN"),
        (false, true, false) => Some("Infinity"),
        (false, true, true) => Some("-Infinity"),
        _ => None,
    }
}

/// What is wrong with one tensor of a request or response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorProblem {
    /// `data` is not a JSON array.
    #[error("`data` must be a JSON array")]
    NotAnArray,
    /// An element is not of the expected JSON kind.
    #[error("element {index}: expected {expected}, found {found}")]
    WrongKind {
        /// Flat, row-major index.
        index: usize,
        /// What the datatype needs.
        expected: &'static str,
        /// What the JSON holds (`a string`, `an object`, `null`, …), never the value.
        found: &'static str,
    },
    /// An integer element does not fit the datatype.
    #[error("element {index}: out of range for {datatype}")]
    OutOfRange {
        /// Flat, row-major index.
        index: usize,
        /// The datatype.
        datatype: &'static str,
    },
    /// A binary tensor's length is not a multiple of the element size.
    #[error("binary data of {size} bytes is not a multiple of the element size {element_size}")]
    BinarySizeNotMultiple {
        /// `binary_data_size`.
        size: u64,
        /// Bytes per element.
        element_size: usize,
    },
    /// A binary BOOL element is neither 0 nor 1.
    #[error("binary BOOL element {index} is neither 0 nor 1")]
    BadBinaryBool {
        /// Index of the element.
        index: usize,
    },
    /// `data` holds more elements than allowed (the shape's count, or the element limit).
    #[error("has more than {limit} elements in `data`")]
    TooManyElements {
        /// The most allowed.
        limit: usize,
    },
    /// The shape asks for more elements than the limit (or its product overflows).
    #[error("has {}; the limit is {limit}", match elements {
        Some(n) => format!("{n} elements"),
        None => "a shape whose element count overflows".to_owned(),
    })]
    ShapeTooLarge {
        /// Its element count; `None` when the product overflows.
        elements: Option<u64>,
        /// The element limit.
        limit: u64,
    },
    /// The data holds another number of elements than the shape says.
    #[error("has shape {shape} ({expected} elements) but {found} elements")]
    ElementCount {
        /// The shape, shortened for the message.
        shape: String,
        /// The shape's element count.
        expected: u64,
        /// The number of elements in the data.
        found: u64,
    },
    /// Neither `data` nor `parameters.binary_data_size`.
    #[error("has neither `data` nor `parameters.binary_data_size`")]
    NoData,
    /// Both `data` and `parameters.binary_data_size`.
    #[error("has both `data` and `parameters.binary_data_size`")]
    DataAndBinary,
    /// `binary_data_size` in a body without `Inference-Header-Content-Length`.
    #[error(
        "has `parameters.binary_data_size` but the body has no Inference-Header-Content-Length"
    )]
    BinaryWithoutHeader,
    /// The binary part ends before this tensor's bytes.
    #[error("announces {size} binary bytes but only {available} remain in the body")]
    BinaryBeyondBody {
        /// `binary_data_size`.
        size: u64,
        /// Bytes left.
        available: usize,
    },
    /// The declared datatype is not the type of the data (when encoding).
    #[error("declares datatype {declared} but carries {data} data")]
    DatatypeMismatch {
        /// `datatype`.
        declared: Datatype,
        /// The data's type.
        data: Datatype,
    },
    /// A parameter has the wrong JSON type.
    #[error("parameter `{name}` must be {expected}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Its type.
        expected: &'static str,
    },
}

/// Errors of encoding and decoding v2 bodies. The messages are precise and never contain tensor values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum V2Error {
    /// The JSON does not parse or does not have the v2 shape (serde_json's message, with line and column).
    #[error("malformed JSON body: {0}")]
    Json(#[from] serde_json::Error),
    /// `Inference-Header-Content-Length` is larger than the body.
    #[error("Inference-Header-Content-Length is {header} but the body has {body} bytes")]
    HeaderLength {
        /// The header's value.
        header: usize,
        /// The body length.
        body: usize,
    },
    /// Binary bytes are left after the last binary tensor.
    #[error("{0} bytes of binary data follow the last binary tensor")]
    TrailingBinary(usize),
    /// A request parameter has the wrong JSON type.
    #[error("request parameter `{name}` must be {expected}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// Its type.
        expected: &'static str,
    },
    /// One tensor is wrong.
    #[error("{role} `{name}` {problem}")]
    Tensor {
        /// `input`, `output`.
        role: &'static str,
        /// The tensor's name.
        name: String,
        /// What is wrong.
        problem: TensorProblem,
    },
}

/// A parameter value (`parameters` maps names to booleans, numbers or strings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Parameter {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A non-integer number.
    Float(f64),
    /// A string.
    String(String),
}

/// The `parameters` object of requests, responses and tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Parameters(pub BTreeMap<String, Parameter>);

impl Parameters {
    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A boolean parameter; `Err` names the parameter if it has another type.
    pub fn get_bool(&self, name: &'static str) -> Result<Option<bool>, TensorProblem> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Parameter::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(TensorProblem::Parameter {
                name,
                expected: "a boolean",
            }),
        }
    }

    /// A non-negative integer parameter; `Err` names the parameter if it has another type.
    pub fn get_u64(&self, name: &'static str) -> Result<Option<u64>, TensorProblem> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Parameter::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(_) => Err(TensorProblem::Parameter {
                name,
                expected: "a non-negative integer",
            }),
        }
    }

    /// Sets a parameter.
    pub fn insert(&mut self, name: &str, value: Parameter) {
        self.0.insert(name.to_owned(), value);
    }

    /// Removes a parameter.
    pub fn remove(&mut self, name: &str) -> Option<Parameter> {
        self.0.remove(name)
    }
}

/// One tensor of a request (`inputs[i]`) or a response (`outputs[i]`): the two have the same fields.
///
/// After [`InferRequest::decode`] / [`InferResponse::decode`], `data` is always present: binary tensors are
/// moved into it and their `binary_data_size` parameter removed. `data` is absent only in a tensor that
/// went out, or is to go out, as raw bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TensorWire")]
pub struct InferTensor {
    /// Input or output name.
    pub name: String,
    /// Shape; its product is the number of elements.
    pub shape: Vec<u64>,
    /// Element type.
    pub datatype: Datatype,
    /// Tensor parameters (`binary_data_size`, `binary_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
    /// The elements (flat, row-major).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TensorData>,
}

/// A request input.
pub type RequestInput = InferTensor;
/// A response output.
pub type ResponseOutput = InferTensor;

/// The wire form of [`InferTensor`], before `data` is typed by `datatype`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorWire {
    name: String,
    shape: Vec<u64>,
    datatype: Datatype,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

impl TryFrom<TensorWire> for InferTensor {
    type Error = String;

    fn try_from(w: TensorWire) -> Result<Self, String> {
        let data = match &w.data {
            None => None,
            Some(raw) => Some(
                TensorData::from_json_text(w.datatype, raw.get())
                    .map_err(|p| format!("tensor `{}` {p}", short(&w.name)))?,
            ),
        };
        Ok(InferTensor {
            name: w.name,
            shape: w.shape,
            datatype: w.datatype,
            parameters: w.parameters,
            data,
        })
    }
}

/// The wire form of a request as [`InferRequest::decode_with`] reads it: tensor data left as JSON text
/// (borrowed from the body) until the shape has been checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestWire<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<RawTensorWire<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorWire<'a> {
    name: String,
    #[serde(deserialize_with = "bounded_shape")]
    shape: Vec<u64>,
    datatype: Datatype,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// A shape of at most [`MAX_RANK`] dimensions: the decoder stops at the first one past it.
fn bounded_shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX_RANK} non-negative integers")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut out = Vec::new();
            while let Some(d) = seq.next_element::<u64>()? {
                if out.len() == MAX_RANK {
                    return Err(serde::de::Error::custom(format!(
                        "a shape has at most {MAX_RANK} dimensions"
                    )));
                }
                out.push(d);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// A peer-supplied name, cut for an error message.
fn short(name: &str) -> String {
    if name.chars().count() <= 64 {
        name.to_owned()
    } else {
        let mut s: String = name.chars().take(64).collect();
        s.push('…');
        s
    }
}

impl InferTensor {
    /// A tensor whose datatype is that of `data`.
    pub fn new(name: impl Into<String>, shape: Vec<u64>, data: TensorData) -> Self {
        InferTensor {
            name: name.into(),
            shape,
            datatype: data.datatype(),
            parameters: None,
            data: Some(data),
        }
    }

    /// The product of the shape, `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
    }

    fn param_u64(&self, name: &'static str) -> Result<Option<u64>, TensorProblem> {
        match &self.parameters {
            None => Ok(None),
            Some(p) => p.get_u64(name),
        }
    }
}

/// A requested output (`outputs[i]` of a request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    /// The output's name.
    pub name: String,
    /// `binary_data`: return this output as raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
    /// The inputs.
    pub inputs: Vec<RequestInput>,
    /// The outputs to return (all, in the model's order, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// The response of `POST /v2/models/{name}/infer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The model's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
    /// The outputs.
    pub outputs: Vec<ResponseOutput>,
}

/// An encoded body: the bytes, and the value of `Inference-Header-Content-Length` when some tensor
/// travels as raw bytes (`None`: plain JSON, send `Content-Type: application/json` and no such header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBody {
    /// The body.
    pub bytes: Vec<u8>,
    /// Length of the JSON part, when the body uses the binary extension.
    pub json_len: Option<usize>,
}

impl EncodedBody {
    /// The content type to send with this body.
    pub fn content_type(&self) -> &'static str {
        if self.json_len.is_some() {
            BINARY_CONTENT_TYPE
        } else {
            JSON_CONTENT_TYPE
        }
    }
}

/// The serialized view of a tensor: data inline, or only its binary size.
#[derive(Serialize)]
struct TensorOut<'a> {
    name: &'a str,
    shape: &'a [u64],
    datatype: Datatype,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Parameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

/// Builds the JSON views of `tensors`, appending the raw bytes of those `binary` selects to `tail`.
fn tensors_out<'a>(
    role: &'static str,
    tensors: &'a [InferTensor],
    binary: &dyn Fn(&InferTensor) -> bool,
    tail: &mut Vec<u8>,
) -> Result<Vec<TensorOut<'a>>, V2Error> {
    tensors
        .iter()
        .map(|t| {
            let err = |problem| V2Error::Tensor {
                role,
                name: short(&t.name),
                problem,
            };
            let data = t.data.as_ref().ok_or_else(|| err(TensorProblem::NoData))?;
            if data.datatype() != t.datatype {
                return Err(err(TensorProblem::DatatypeMismatch {
                    declared: t.datatype,
                    data: data.datatype(),
                }));
            }
            let mut parameters = t.parameters.clone();
            if let Some(p) = parameters.as_mut() {
                p.remove(BINARY_DATA_SIZE);
            }
            if binary(t) {
                let bytes = data.to_le_bytes();
                parameters.get_or_insert_with(Parameters::default).insert(
                    BINARY_DATA_SIZE,
                    Parameter::Int(i64::try_from(bytes.len()).unwrap_or(i64::MAX)),
                );
                tail.extend_from_slice(&bytes);
                Ok(TensorOut {
                    name: &t.name,
                    shape: &t.shape,
                    datatype: t.datatype,
                    parameters,
                    data: None,
                })
            } else {
                Ok(TensorOut {
                    name: &t.name,
                    shape: &t.shape,
                    datatype: t.datatype,
                    parameters: parameters.filter(|p| !p.is_empty()),
                    data: Some(data),
                })
            }
        })
        .collect()
}

fn assemble(json: Vec<u8>, tail: Vec<u8>, any_binary: bool) -> EncodedBody {
    if any_binary {
        let json_len = json.len();
        let mut bytes = json;
        bytes.extend_from_slice(&tail);
        EncodedBody {
            bytes,
            json_len: Some(json_len),
        }
    } else {
        EncodedBody {
            bytes: json,
            json_len: None,
        }
    }
}

/// Splits a body into its JSON part and its binary part.
fn split_body(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], Option<&[u8]>), V2Error> {
    match json_len {
        None => Ok((body, None)),
        Some(n) if n <= body.len() => Ok((&body[..n], Some(&body[n..]))),
        Some(n) => Err(V2Error::HeaderLength {
            header: n,
            body: body.len(),
        }),
    }
}

/// Moves the binary parts into the tensors' `data`, in order; every tensor must end with data.
fn attach_binary(
    role: &'static str,
    tensors: &mut [InferTensor],
    binary: Option<&[u8]>,
) -> Result<(), V2Error> {
    let mut rest = binary.unwrap_or(&[]);
    for t in tensors.iter_mut() {
        let err = |problem| V2Error::Tensor {
            role,
            name: short(&t.name),
            problem,
        };
        let size = t.param_u64(BINARY_DATA_SIZE).map_err(err)?;
        match (size, t.data.is_some()) {
            (None, true) => {}
            (None, false) => return Err(err(TensorProblem::NoData)),
            (Some(_), true) => return Err(err(TensorProblem::DataAndBinary)),
            (Some(size), false) => {
                if binary.is_none() {
                    return Err(err(TensorProblem::BinaryWithoutHeader));
                }
                let n = usize::try_from(size)
                    .ok()
                    .filter(|n| *n <= rest.len())
                    .ok_or_else(|| {
                        err(TensorProblem::BinaryBeyondBody {
                            size,
                            available: rest.len(),
                        })
                    })?;
                let (mine, after) = rest.split_at(n);
                rest = after;
                t.data = Some(TensorData::from_le_bytes(t.datatype, mine).map_err(err)?);
                if let Some(p) = t.parameters.as_mut() {
                    p.remove(BINARY_DATA_SIZE);
                }
                if t.parameters.as_ref().is_some_and(Parameters::is_empty) {
                    t.parameters = None;
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(V2Error::TrailingBinary(rest.len()));
    }
    Ok(())
}

impl InferRequest {
    /// Encodes the request; with `binary`, every input travels as raw bytes (binary extension).
    pub fn encode(&self, binary: bool) -> Result<EncodedBody, V2Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            parameters: &'a Option<Parameters>,
            inputs: Vec<TensorOut<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            outputs: &'a Option<Vec<RequestOutput>>,
        }
        let mut tail = Vec::new();
        let inputs = tensors_out("input", &self.inputs, &|_| binary, &mut tail)?;
        let json = serde_json::to_vec(&Out {
            id: &self.id,
            parameters: &self.parameters,
            inputs,
            outputs: &self.outputs,
        })?;
        Ok(assemble(json, tail, binary))
    }

    /// Decodes a request body under the default [`DecodeLimits`]. `json_len` is the value of
    /// `Inference-Header-Content-Length`, if the request had that header. Every input comes back with its
    /// `data`.
    pub fn decode(body: &[u8], json_len: Option<usize>) -> Result<Self, V2Error> {
        Self::decode_with(body, json_len, &DecodeLimits::default())
    }

    /// Decodes a request body. `body` comes from the client: untrusted. Each input's shape is checked (rank at
    /// most [`MAX_RANK`], element count at most `limits.max_tensor_elements`) before its data is parsed, and
    /// its data is parsed only up to that count: a body cannot make the decoder allocate more than its
    /// shape allows, nor hold more elements than the shape says.
    pub fn decode_with(
        body: &[u8],
        json_len: Option<usize>,
        limits: &DecodeLimits,
    ) -> Result<Self, V2Error> {
        let (json, binary) = split_body(body, json_len)?;
        let wire: RequestWire<'_> = serde_json::from_slice(json)?;
        let mut inputs = Vec::with_capacity(wire.inputs.len());
        for t in wire.inputs {
            let err = |problem| V2Error::Tensor {
                role: "input",
                name: short(&t.name),
                problem,
            };
            let count = t.shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d));
            let count = match count {
                Some(n) if n <= limits.max_tensor_elements => n,
                other => {
                    return Err(err(TensorProblem::ShapeTooLarge {
                        elements: other,
                        limit: limits.max_tensor_elements,
                    }))
                }
            };
            let max = usize::try_from(count).unwrap_or(usize::MAX);
            let data = match t.data {
                None => None,
                Some(raw) => Some(
                    TensorData::from_json_text_at_most(t.datatype, raw.get(), max).map_err(
                        |problem| match problem {
                            TensorProblem::TooManyElements { .. } => {
                                err(TensorProblem::ElementCount {
                                    shape: shape_text(&t.shape),
                                    expected: count,
                                    found: count.saturating_add(1),
                                })
                            }
                            other => err(other),
                        },
                    )?,
                ),
            };
            inputs.push(InferTensor {
                name: t.name,
                shape: t.shape,
                datatype: t.datatype,
                parameters: t.parameters,
                data,
            });
        }
        let mut req = InferRequest {
            id: wire.id,
            parameters: wire.parameters,
            inputs,
            outputs: wire.outputs,
        };
        attach_binary("input", &mut req.inputs, binary)?;
        for t in &req.inputs {
            let expected = t.element_count().unwrap_or(u64::MAX);
            let found = t.data.as_ref().map_or(0, |d| d.len() as u64);
            if expected != found {
                return Err(V2Error::Tensor {
                    role: "input",
                    name: short(&t.name),
                    problem: TensorProblem::ElementCount {
                        shape: shape_text(&t.shape),
                        expected,
                        found,
                    },
                });
            }
        }
        Ok(req)
    }

    /// Whether the output `name` is to be returned as raw bytes: the output's own `binary_data`
    /// parameter if the request lists it with one, else the request's `binary_data_output`, else no.
    pub fn wants_binary_output(&self, name: &str) -> Result<bool, V2Error> {
        let per_output = match self
            .outputs
            .as_ref()
            .and_then(|o| o.iter().find(|o| o.name == name))
            .and_then(|o| o.parameters.as_ref())
        {
            Some(p) => p.get_bool(BINARY_DATA).map_err(|problem| V2Error::Tensor {
                role: "output",
                name: short(name),
                problem,
            })?,
            None => None,
        };
        let request_level = match &self.parameters {
            Some(p) => p
                .get_bool(BINARY_DATA_OUTPUT)
                .map_err(|_| V2Error::Parameter {
                    name: BINARY_DATA_OUTPUT,
                    expected: "a boolean",
                })?,
            None => None,
        };
        Ok(per_output.or(request_level).unwrap_or(false))
    }
}

impl InferResponse {
    /// Encodes the response; the outputs `binary` selects travel as raw bytes (binary extension).
    pub fn encode(&self, binary: &dyn Fn(&ResponseOutput) -> bool) -> Result<EncodedBody, V2Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            model_name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            model_version: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            parameters: &'a Option<Parameters>,
            outputs: Vec<TensorOut<'a>>,
        }
        let mut tail = Vec::new();
        let outputs = tensors_out("output", &self.outputs, binary, &mut tail)?;
        let any_binary = self.outputs.iter().any(binary);
        let json = serde_json::to_vec(&Out {
            model_name: &self.model_name,
            model_version: &self.model_version,
            id: &self.id,
            parameters: &self.parameters,
            outputs,
        })?;
        Ok(assemble(json, tail, any_binary))
    }

    /// Decodes a response body (`json_len`: the response's `Inference-Header-Content-Length`). Every output
    /// comes back with its `data`.
    pub fn decode(body: &[u8], json_len: Option<usize>) -> Result<Self, V2Error> {
        let (json, binary) = split_body(body, json_len)?;
        let mut resp: InferResponse = serde_json::from_slice(json)?;
        attach_binary("output", &mut resp.outputs, binary)?;
        Ok(resp)
    }
}

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

// ---- the scalar walker for `data` -------------------------------------------------------------------

/// Walks the scalars of a JSON value (valid JSON, checked by serde_json), flattening arrays.
struct JsonScalars<'a> {
    text: &'a str,
    pos: usize,
    index: usize,
}

/// One scalar token.
enum Scalar<'a> {
    Number(&'a str),
    True,
    False,
    Null,
    /// The contents between the quotes, escapes not processed.
    String(&'a str),
    Object,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Number(_) => "a number",
            Scalar::True | Scalar::False => "a boolean",
            Scalar::Null => "null",
            Scalar::String(_) => "a string",
            Scalar::Object => "an object",
        }
    }
}

impl<'a> JsonScalars<'a> {
    fn new(text: &'a str) -> Result<Self, TensorProblem> {
        let trimmed = text.trim_start();
        if !trimmed.starts_with('[') {
            return Err(TensorProblem::NotAnArray);
        }
        Ok(JsonScalars {
            text,
            pos: 0,
            index: 0,
        })
    }

    /// The next scalar and its flat index, or `None` at the end.
    fn next_scalar(&mut self) -> Result<Option<(usize, Scalar<'a>)>, TensorProblem> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            let b = bytes[self.pos];
            match b {
                b'[' | b']' | b',' | b' ' | b'\n' | b'\r' | b'\t' => self.pos += 1,
                b'"' => {
                    let start = self.pos + 1;
                    let mut i = start;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    let end = i.min(bytes.len());
                    self.pos = (end + 1).min(bytes.len());
                    let s = self.text.get(start..end).unwrap_or("");
                    return Ok(Some(self.bump(Scalar::String(s))));
                }
                b'{' => {
                    // Valid JSON: an object has no scalar we want; report it as such (callers stop here).
                    self.pos += 1;
                    return Ok(Some(self.bump(Scalar::Object)));
                }
                _ => {
                    let start = self.pos;
                    while self.pos < bytes.len()
                        && !matches!(bytes[self.pos], b',' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                    {
                        self.pos += 1;
                    }
                    let token = self.text.get(start..self.pos).unwrap_or("");
                    let scalar = match token {
                        "true" => Scalar::True,
                        "false" => Scalar::False,
                        "null" => Scalar::Null,
                        _ => Scalar::Number(token),
                    };
                    return Ok(Some(self.bump(scalar)));
                }
            }
        }
        Ok(None)
    }

    fn bump(&mut self, s: Scalar<'a>) -> (usize, Scalar<'a>) {
        let i = self.index;
        self.index += 1;
        (i, s)
    }
}

fn parse_bool(index: usize, s: Scalar<'_>) -> Result<bool, TensorProblem> {
    match s {
        Scalar::True => Ok(true),
        Scalar::False => Ok(false),
        other => Err(TensorProblem::WrongKind {
            index,
            expected: "a boolean",
            found: other.kind(),
        }),
    }
}

/// An integer type of the protocol.
trait IntElement: Sized + TryFrom<i64> + TryFrom<u64> {
    const NAME: &'static str;
}

macro_rules! int_element {
    ($($t:ty => $name:literal),*) => {$(
        impl IntElement for $t {
            const NAME: &'static str = $name;
        }
    )*};
}
int_element!(u8 => "UINT8", u16 => "UINT16", u32 => "UINT32", u64 => "UINT64",
             i8 => "INT8", i16 => "INT16", i32 => "INT32", i64 => "INT64");

fn parse_int<T: IntElement>(index: usize, s: Scalar<'_>) -> Result<T, TensorProblem> {
    let Scalar::Number(text) = s else {
        return Err(TensorProblem::WrongKind {
            index,
            expected: "an integer",
            found: s.kind(),
        });
    };
    let out_of_range = TensorProblem::OutOfRange {
        index,
        datatype: T::NAME,
    };
    let is_integer = text
        .strip_prefix('-')
        .unwrap_or(text)
        .bytes()
        .all(|b| b.is_ascii_digit());
    if !is_integer {
        return Err(TensorProblem::WrongKind {
            index,
            expected: "an integer",
            found: "a non-integer number",
        });
    }
    if text.starts_with('-') {
        let v: i64 = text.parse().map_err(|_| out_of_range.clone())?;
        T::try_from(v).map_err(|_| out_of_range)
    } else {
        let v: u64 = text.parse().map_err(|_| out_of_range.clone())?;
        T::try_from(v).map_err(|_| out_of_range)
    }
}

/// A float type of the protocol.
trait FloatElement: Sized + std::str::FromStr {
    const NAME: &'static str;
    const NAN: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    fn finite(&self) -> bool;
}

impl FloatElement for f32 {
    const NAME: &'static str = "FP32";
    const NAN: Self = f32::NAN;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

impl FloatElement for f64 {
    const NAME: &'static str = "FP64";
    const NAN: Self = f64::NAN;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn finite(&self) -> bool {
        self.is_finite()
    }
}

/// Parses a JSON number straight into `T` (correctly rounded once; an `f32` is never read through `f64`).
fn parse_float<T: FloatElement>(index: usize, s: Scalar<'_>) -> Result<T, TensorProblem> {
    match s {
        Scalar::Number(text) => {
            let v: T = text.parse().map_err(|_| TensorProblem::WrongKind {
                index,
                expected: "a number",
                found: "a malformed number",
            })?;
            if v.finite() {
                Ok(v)
            } else {
                Err(TensorProblem::OutOfRange {
                    index,
                    datatype: T::NAME,
                })
            }
        }
        Scalar::String("NaN") => Ok(T::NAN),
        Scalar::String("Infinity") => Ok(T::INFINITY),
        Scalar::String("-Infinity") => Ok(T::NEG_INFINITY),
        other => Err(TensorProblem::WrongKind {
            index,
            expected: "a number (or \"NaN\", \"Infinity\", \"-Infinity\")",
            found: other.kind(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<InferRequest, V2Error> {
        InferRequest::decode(body.as_bytes(), None)
    }

    #[test]
    fn f32_round_trips_bit_exactly_through_json() {
        // Special values, boundaries, subnormals, and a deterministic spread over all bit patterns.
        let mut values = vec![
            0.0f32,
            -0.0,
            1.0,
            0.1,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            f32::EPSILON,
            f32::from_bits(1),
            f32::from_bits(0x007f_ffff),
            16_777_217.0,
            3.402_823_5e38,
            1.0e-45,
        ];
        let mut x: u32 = 0x1234_5678;
        for _ in 0..200_000 {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            values.push(f32::from_bits(x));
        }
        values.retain(|v| v.is_finite());
        values.push(f32::NAN);
        values.push(f32::INFINITY);
        values.push(f32::NEG_INFINITY);
        let resp = InferResponse {
            model_name: "m".into(),
            outputs: vec![InferTensor::new(
                "y",
                vec![values.len() as u64],
                TensorData::Fp32(values.clone()),
            )],
            ..Default::default()
        };
        let body = resp.encode(&|_| false).unwrap();
        assert_eq!(body.json_len, None);
        let back = InferResponse::decode(&body.bytes, None).unwrap();
        let Some(TensorData::Fp32(got)) = &back.outputs[0].data else {
            panic!("not fp32")
        };
        assert_eq!(got.len(), values.len());
        for (a, b) in values.iter().zip(got) {
            if a.is_nan() {
                assert!(b.is_nan());
            } else {
                assert_eq!(a.to_bits(), b.to_bits(), "{a:e}");
            }
        }
        // And FP64 the same way.
        let f64s = vec![0.1f64, -0.0, f64::MAX, f64::from_bits(1), 1.0 / 3.0];
        let t = InferTensor::new("d", vec![5], TensorData::Fp64(f64s.clone()));
        let json = serde_json::to_string(&t).unwrap();
        let back: InferTensor = serde_json::from_str(&json).unwrap();
        let Some(TensorData::Fp64(got)) = back.data else {
            panic!()
        };
        for (a, b) in f64s.iter().zip(got) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    /// Exhaustive proof of the FP32 property over every finite `f32` (slow: run with `--ignored` in
    /// release mode).
    #[test]
    #[ignore]
    fn f32_round_trips_exhaustively() {
        let mut buf = Vec::with_capacity(64);
        for bits in 0..=u32::MAX {
            let v = f32::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            buf.clear();
            serde_json::to_writer(&mut buf, &v).unwrap();
            let text = std::str::from_utf8(&buf).unwrap();
            let back: f32 = parse_float(0, Scalar::Number(text)).unwrap();
            assert_eq!(back.to_bits(), bits, "{text}");
        }
    }

    #[test]
    fn typed_parsing_and_nested_arrays() {
        let r = request(
            r#"{"inputs":[
                {"name":"a","shape":[2,2],"datatype":"INT64","data":[[1,-9223372036854775808],[3,9223372036854775807]]},
                {"name":"b","shape":[3],"datatype":"BOOL","data":[true,false,true]},
                {"name":"c","shape":[2],"datatype":"UINT8","data":[0,255]},
                {"name":"d","shape":[1],"datatype":"FP32","data":[1e-3]},
                {"name":"e","shape":[3],"datatype":"FP64","data":["NaN","Infinity","-Infinity"]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            r.inputs[0].data,
            Some(TensorData::Int64(vec![1, i64::MIN, 3, i64::MAX]))
        );
        assert_eq!(
            r.inputs[1].data,
            Some(TensorData::Bool(vec![true, false, true]))
        );
        assert_eq!(r.inputs[2].data, Some(TensorData::Uint8(vec![0, 255])));
        assert_eq!(r.inputs[3].data, Some(TensorData::Fp32(vec![1e-3])));
        let Some(TensorData::Fp64(e)) = &r.inputs[4].data else {
            panic!()
        };
        assert!(e[0].is_nan() && e[1] == f64::INFINITY && e[2] == f64::NEG_INFINITY);
    }

    #[test]
    fn precise_errors() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#,
                "element 0: out of range for UINT8",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,1.5]}]}"#,
                "element 1: expected an integer, found a non-integer number",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[true]}]}"#,
                "element 0: expected a number",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}"#,
                "out of range for FP32",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}"#,
                "expected a boolean, found a number",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
                "datatype `FP16` is not supported",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":5}]}"#,
                "must be a JSON array",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[{"a":1}]}]}"#,
                "found an object",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
                "expected u64",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
                "input `x` has neither `data` nor `parameters.binary_data_size`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"extra":1}]}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
                "no Inference-Header-Content-Length",
            ),
            (r#"{"inputs":[}"#, "malformed JSON body"),
        ];
        for (body, want) in cases {
            let err = request(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}\n → {err}\n wanted {want}");
        }
    }

    #[test]
    fn binary_extension_round_trip_and_errors() {
        let req = InferRequest {
            id: Some("r1".into()),
            inputs: vec![
                InferTensor::new("a", vec![2], TensorData::Fp32(vec![1.5, -0.0])),
                InferTensor::new("b", vec![3], TensorData::Bool(vec![true, false, true])),
                InferTensor::new("c", vec![1], TensorData::Int64(vec![-7])),
            ],
            outputs: Some(vec![RequestOutput {
                name: "y".into(),
                parameters: Some(Parameters(
                    [(BINARY_DATA.to_owned(), Parameter::Bool(true))].into(),
                )),
            }]),
            ..Default::default()
        };
        let body = req.encode(true).unwrap();
        let json_len = body.json_len.unwrap();
        assert_eq!(body.bytes.len(), json_len + 8 + 3 + 8);
        let back = InferRequest::decode(&body.bytes, Some(json_len)).unwrap();
        assert_eq!(back, req);
        assert!(back.wants_binary_output("y").unwrap());
        assert!(!back.wants_binary_output("z").unwrap());
        // JSON encoding decodes the same.
        let plain = req.encode(false).unwrap();
        assert_eq!(plain.json_len, None);
        assert_eq!(InferRequest::decode(&plain.bytes, None).unwrap(), req);

        // Header longer than the body; trailing bytes; short binary part; bad bool.
        assert!(matches!(
            InferRequest::decode(&body.bytes, Some(body.bytes.len() + 1)),
            Err(V2Error::HeaderLength { .. })
        ));
        let mut longer = body.bytes.clone();
        longer.push(0);
        assert!(matches!(
            InferRequest::decode(&longer, Some(json_len)),
            Err(V2Error::TrailingBinary(1))
        ));
        let shorter = &body.bytes[..body.bytes.len() - 1];
        let err = InferRequest::decode(shorter, Some(json_len)).unwrap_err();
        assert!(err.to_string().contains("only 7 remain"), "{err}");
        let mut bad_bool = body.bytes.clone();
        bad_bool[json_len + 8] = 2;
        let err = InferRequest::decode(&bad_bool, Some(json_len)).unwrap_err();
        assert!(err.to_string().contains("neither 0 nor 1"), "{err}");

        // Request-level binary_data_output, overridden per output.
        let mut req = req;
        req.parameters = Some(Parameters(
            [(BINARY_DATA_OUTPUT.to_owned(), Parameter::Bool(true))].into(),
        ));
        req.outputs = Some(vec![RequestOutput {
            name: "y".into(),
            parameters: Some(Parameters(
                [(BINARY_DATA.to_owned(), Parameter::Bool(false))].into(),
            )),
        }]);
        assert!(!req.wants_binary_output("y").unwrap());
        assert!(req.wants_binary_output("z").unwrap());

        // Responses: mixed binary and JSON outputs.
        let resp = InferResponse {
            model_name: "m".into(),
            model_version: Some("1".into()),
            id: Some("r1".into()),
            parameters: None,
            outputs: vec![
                InferTensor::new("y", vec![2], TensorData::Fp32(vec![0.25, f32::NAN])),
                InferTensor::new("z", vec![1], TensorData::Uint16(vec![65535])),
            ],
        };
        let body = resp.encode(&|o| o.name == "y").unwrap();
        let json_len = body.json_len.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body.bytes[..json_len]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"][0], 65535);
        let back = InferResponse::decode(&body.bytes, Some(json_len)).unwrap();
        let Some(TensorData::Fp32(y)) = &back.outputs[0].data else {
            panic!()
        };
        assert_eq!(y[0], 0.25);
        assert!(y[1].is_nan());
        assert_eq!(back.outputs[1], resp.outputs[1]);
    }

    #[test]
    fn metadata_attestation_and_debug() {
        let meta = ModelMetadataResponse {
            name: "mlp".into(),
            versions: vec!["1".into()],
            platform: "onnx".into(),
            inputs: vec![MetadataTensor {
                name: "x".into(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 4],
            }],
            outputs: vec![],
            digest: ModelDigest::from_bytes([7; 48]),
        };
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["digest"], format!("sha384:{}", "07".repeat(48)));
        assert_eq!(json["inputs"][0]["datatype"], "FP32");
        assert_eq!(json["inputs"][0]["shape"][0], -1);
        let back: ModelMetadataResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, meta);

        let a: AttestationRequest =
            serde_json::from_str(&format!(r#"{{"nonce":"{}"}}"#, "ab".repeat(32))).unwrap();
        assert_eq!(a.nonce, [0xab; 32]);
        assert!(serde_json::from_str::<AttestationRequest>(r#"{"nonce":"abcd"}"#).is_err());
        assert!(serde_json::from_str::<AttestationRequest>(&format!(
            r#"{{"nonce":"{}"}}"#,
            "zz".repeat(32)
        ))
        .is_err());

        let t = TensorData::Fp32(vec![123.456]);
        assert_eq!(format!("{t:?}"), "TensorData::FP32(len = 1)");
        let t = InferTensor::new("x", vec![1], t);
        assert!(!format!("{t:?}").contains("123"));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 7;
        let base = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        for i in 0..5000 {
            let mut body = base.to_vec();
            body.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let pos = (x as usize) % body.len();
            body[pos] = (x >> 8) as u8;
            let _ = InferRequest::decode(&body, Some(base.len()));
            let _ = InferRequest::decode(&body, None);
            let _ = InferResponse::decode(&body[..i % body.len()], Some(i % 7));
        }
    }
}

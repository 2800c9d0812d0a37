//! Request and response bodies: JSON, and the binary tensor extension.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{
    Datatype, Error, TensorData, TensorProblem, BINARY_CONTENT_TYPE, BINARY_DATA,
    BINARY_DATA_OUTPUT, BINARY_DATA_SIZE, JSON_CONTENT_TYPE,
};

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
pub(crate) fn shape_text(shape: &[u64]) -> String {
    const SHOWN: usize = 8;
    if shape.len() <= SHOWN {
        format!("{shape:?}")
    } else {
        let head: Vec<String> = shape[..SHOWN].iter().map(u64::to_string).collect();
        format!("[{}, …] (rank {})", head.join(", "), shape.len())
    }
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
pub(crate) fn short(name: &str) -> String {
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
) -> Result<Vec<TensorOut<'a>>, Error> {
    tensors
        .iter()
        .map(|t| {
            let err = |problem| Error::Tensor {
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
fn split_body(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], Option<&[u8]>), Error> {
    match json_len {
        None => Ok((body, None)),
        Some(n) if n <= body.len() => Ok((&body[..n], Some(&body[n..]))),
        Some(n) => Err(Error::HeaderLength {
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
) -> Result<(), Error> {
    let mut rest = binary.unwrap_or(&[]);
    for t in tensors.iter_mut() {
        let err = |problem| Error::Tensor {
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
                // The size must be the shape's before anything is allocated for it: a body can then never
                // allocate more than its shape allows.
                let elem = t.datatype.element_size() as u64;
                let expected = t.element_count().unwrap_or(u64::MAX);
                if size % elem == 0 && size / elem != expected {
                    return Err(err(TensorProblem::ElementCount {
                        shape: shape_text(&t.shape),
                        expected,
                        found: size / elem,
                    }));
                }
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
        return Err(Error::TrailingBinary(rest.len()));
    }
    Ok(())
}

impl InferRequest {
    /// Encodes the request; with `binary`, every input travels as raw bytes (binary extension).
    pub fn encode(&self, binary: bool) -> Result<EncodedBody, Error> {
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
    pub fn decode(body: &[u8], json_len: Option<usize>) -> Result<Self, Error> {
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
    ) -> Result<Self, Error> {
        let (json, binary) = split_body(body, json_len)?;
        let wire: RequestWire<'_> = serde_json::from_slice(json)?;
        let mut inputs = Vec::with_capacity(wire.inputs.len());
        for t in wire.inputs {
            let err = |problem| Error::Tensor {
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
                return Err(Error::Tensor {
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
    pub fn wants_binary_output(&self, name: &str) -> Result<bool, Error> {
        let per_output = match self
            .outputs
            .as_ref()
            .and_then(|o| o.iter().find(|o| o.name == name))
            .and_then(|o| o.parameters.as_ref())
        {
            Some(p) => p.get_bool(BINARY_DATA).map_err(|problem| Error::Tensor {
                role: "output",
                name: short(name),
                problem,
            })?,
            None => None,
        };
        let request_level = match &self.parameters {
            Some(p) => p
                .get_bool(BINARY_DATA_OUTPUT)
                .map_err(|_| Error::Parameter {
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
    pub fn encode(&self, binary: &dyn Fn(&ResponseOutput) -> bool) -> Result<EncodedBody, Error> {
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
    pub fn decode(body: &[u8], json_len: Option<usize>) -> Result<Self, Error> {
        let (json, binary) = split_body(body, json_len)?;
        let mut resp: InferResponse = serde_json::from_slice(json)?;
        attach_binary("output", &mut resp.outputs, binary)?;
        Ok(resp)
    }
}

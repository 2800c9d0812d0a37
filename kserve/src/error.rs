//! The crate's one error type, and the problems of one tensor it carries.

use crate::Datatype;

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
pub enum Error {
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
    /// The request names an output the model does not have.
    #[error("`{name}` is not an output of this model (outputs: {available})")]
    UnknownOutput {
        /// The name asked for (shortened).
        name: String,
        /// The model's outputs.
        available: String,
    },
    /// The request names an output twice.
    #[error("output `{name}` is requested more than once")]
    DuplicateOutput {
        /// The name (shortened).
        name: String,
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

//! The engine's view of tensors and of a model's inputs and outputs.

use std::fmt;

use serde::Serialize;

use crate::{Datatype, TensorData};

/// A named tensor, as the inference API takes and returns it (one per v2 `inputs`/`outputs` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The model input or output name.
    pub name: String,
    /// The declared datatype; must be the datatype of `data`.
    pub datatype: Datatype,
    /// The shape; its product must be the number of elements of `data`.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: TensorData,
}

impl NamedTensor {
    /// A tensor whose declared datatype is that of `data`.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Self {
        Self {
            name: name.into(),
            datatype: data.datatype(),
            shape,
            data,
        }
    }
}

/// One model input or output as the v2 metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorSpec {
    /// The ONNX name.
    pub name: String,
    /// The element type.
    pub datatype: Datatype,
    /// The shape; `-1` for a dimension bound per request (a symbol such as batch or sequence length).
    pub shape: Vec<i64>,
}

/// The model's inputs and outputs, for `GET /v2/models/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    /// Always [`PLATFORM`].
    pub platform: &'static str,
    /// The inputs, in the model's order.
    pub inputs: Vec<TensorSpec>,
    /// The outputs, in the model's order.
    pub outputs: Vec<TensorSpec>,
}

/// Whether a tensor of the model is an input or an output (for errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// A model input.
    Input,
    /// A model output.
    Output,
}

impl fmt::Display for TensorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Input => "input",
            Self::Output => "output",
        })
    }
}

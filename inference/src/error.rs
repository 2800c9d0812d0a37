//! The crate's one error type.

use std::fmt;

use tract_onnx::prelude::TractError;

use crate::model::shape_text;
use crate::{Datatype, TensorRole};

/// What tract was doing when it failed or panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Translating the ONNX graph into tract's inference model.
    Loading,
    /// Type and shape analysis into a typed model.
    Analysing,
    /// Decluttering, optimizing and planning.
    Optimizing,
    /// Running a request.
    Running,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loading => "loading the model",
            Self::Analysing => "analysing the model",
            Self::Optimizing => "optimizing the model",
            Self::Running => "running the model",
        })
    }
}

/// An error of the inference engine. Variants up to [`Error::Panicked`] concern the model; the rest
/// concern a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a protobuf `ModelProto`.
    #[error("model is not a valid ONNX ModelProto")]
    ModelDecode(#[source] prost::DecodeError),
    /// A tensor of the model lives in an external file: models are loaded from bytes only.
    #[error(
        "model tensor `{tensor}` references external data; external data is not supported \
         (models are loaded from one buffer)"
    )]
    ExternalData {
        /// The tensor's name.
        tensor: String,
        /// Its `location` entry, if any (a file name chosen by the model owner; not in the message).
        location: Option<String>,
    },
    /// tract failed on the model.
    #[error("tract failed while {stage}")]
    Model {
        /// What tract was doing.
        stage: Stage,
        /// tract's error chain.
        #[source]
        source: TractError,
    },
    /// tract panicked: the model is malformed or uses a construct tract does not handle.
    #[error("tract panicked while {stage}")]
    Panicked {
        /// What tract was doing.
        stage: Stage,
    },
    /// The model declares no element type for an input.
    #[error("model input `{name}` has no element type")]
    UntypedInput {
        /// The input's name.
        name: String,
    },
    /// The model declares no shape (not even a rank) for an input.
    #[error("model input `{name}` has unknown rank")]
    UnknownInputRank {
        /// The input's name.
        name: String,
    },
    /// An input dimension is an expression that does not evaluate to a size when every symbol is 1.
    #[error("model input `{name}` has dimension `{dim}`, which cannot be planned")]
    UnresolvedInputDim {
        /// The input's name.
        name: String,
        /// The dimension expression.
        dim: String,
    },
    /// An input or output of the model has an element type the engine cannot carry (FP16, strings, …).
    #[error("model {role} `{name}` has element type {datum_type}, which is not supported")]
    UnsupportedModelType {
        /// Input or output.
        role: TensorRole,
        /// The tensor's name.
        name: String,
        /// tract's name of the type.
        datum_type: String,
    },
    /// A request names a tensor that is not an input of the model.
    #[error("`{name}` is not an input of this model (inputs: {expected})")]
    UnknownInput {
        /// The name in the request.
        name: String,
        /// The model's input names, comma-separated.
        expected: String,
    },
    /// A request gives an input twice.
    #[error("input `{name}` is given more than once")]
    DuplicateInput {
        /// The input's name.
        name: String,
    },
    /// A request lacks an input.
    #[error("input `{name}` is missing")]
    MissingInput {
        /// The input's name.
        name: String,
    },
    /// A request tensor declares one datatype and carries data of another.
    #[error("input `{input}` declares datatype {declared} but carries {data} data")]
    InconsistentDatatype {
        /// The input's name.
        input: String,
        /// The declared datatype.
        declared: Datatype,
        /// The datatype of the data.
        data: Datatype,
    },
    /// A request tensor has the wrong datatype for the model.
    #[error("input `{input}` must be {expected}, got {got}")]
    DatatypeMismatch {
        /// The input's name.
        input: String,
        /// The model's datatype.
        expected: Datatype,
        /// The request's datatype.
        got: Datatype,
    },
    /// A request tensor has the wrong rank.
    #[error(
        "input `{input}` must have rank {expected}, got shape {}",
        shape_text(shape)
    )]
    RankMismatch {
        /// The input's name.
        input: String,
        /// The model's rank.
        expected: usize,
        /// The request's shape.
        shape: Vec<usize>,
    },
    /// A request tensor has the wrong size along a fixed dimension.
    #[error("input `{input}` must have {expected} elements along axis {axis}, got {got}")]
    DimMismatch {
        /// The input's name.
        input: String,
        /// The axis.
        axis: usize,
        /// The model's size.
        expected: usize,
        /// The request's size.
        got: usize,
    },
    /// Two request dimensions bound to the same symbol (e.g. the batch size of two inputs) disagree.
    #[error(
        "input `{input}` axis {axis} is `{symbol}` = {got}, but `{symbol}` = {bound} from input `{bound_by}`"
    )]
    SymbolMismatch {
        /// The input's name.
        input: String,
        /// The axis.
        axis: usize,
        /// The symbol's name in the model.
        symbol: String,
        /// The request's size.
        got: usize,
        /// The value bound earlier in the same request.
        bound: usize,
        /// The input that bound it.
        bound_by: String,
    },
    /// The product of a request shape overflows.
    #[error(
        "input `{input}` has shape {}, whose element count overflows",
        shape_text(shape)
    )]
    ShapeOverflow {
        /// The input's name.
        input: String,
        /// The request's shape.
        shape: Vec<usize>,
    },
    /// The element count does not match the shape.
    #[error(
        "input `{input}` has shape {} ({expected} elements) but {got} elements",
        shape_text(shape)
    )]
    ElementCount {
        /// The input's name.
        input: String,
        /// The request's shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// The number of elements given.
        got: usize,
    },
    /// tract failed on a request's inputs: while running it (for instance a shape relation between inputs that
    /// it checks itself), or, for a [`Planning::PerShape`] model, while planning for this request's shapes.
    #[error("tract failed while {stage} for this request")]
    Run {
        /// [`Stage::Running`], or [`Stage::Optimizing`] for a per-shape plan.
        stage: Stage,
        /// tract's error chain.
        #[source]
        source: TractError,
    },
    /// The request's symbolic dimensions (batch, sequence length, …) are too large together. Their product,
    /// zero-sized ones counted as 1, is bounded by the element limit: otherwise a shape such as
    /// `[268435456, 0]` (no element at all) would bind a symbol to 2^28 and size every tensor that grows with
    /// it.
    #[error(
        "the symbolic dimensions of this request multiply to {product} (a dimension of size 0 counts as 1), \
         over the limit of {limit}"
    )]
    SymbolVolume {
        /// The product of the symbols' values (saturating).
        product: u64,
        /// `max_tensor_elements`.
        limit: u64,
    },
    /// A request's batch (axis 0 of an input whose axis 0 is symbolic) exceeds the model's `max_batch`.
    #[error("input `{input}` has a batch of {got}; this model accepts at most {limit}")]
    BatchTooLarge {
        /// The input's name.
        input: String,
        /// The batch size of the request.
        got: u64,
        /// The model's `max_batch`.
        limit: u64,
    },
    /// An output of this request would exceed the element limit (known from the plan before running).
    #[error(
        "output `{output}` would have {elements} elements for this request; the limit is {limit}"
    )]
    OutputTooLarge {
        /// The output's name.
        output: String,
        /// Its element count (saturating).
        elements: u64,
        /// `max_tensor_elements`.
        limit: u64,
    },
    /// tract returned a different number of outputs than the model declares.
    #[error("tract returned {got} outputs, the model declares {expected}")]
    OutputCount {
        /// The declared number.
        expected: usize,
        /// The returned number.
        got: usize,
    },
    /// An output of tract could not be converted.
    #[error("output `{output}` could not be converted to {datatype}")]
    OutputConversion {
        /// The output's name.
        output: String,
        /// The datatype the metadata announces.
        datatype: Datatype,
        /// tract's error.
        #[source]
        source: TractError,
    },
    /// The model is not a decoder this engine drives (the Hugging Face layout with a KV cache).
    #[error("not a decoder LLM this engine runs: {0}")]
    NotADecoder(String),
    /// An LLM bundle that does not parse (`llm::LlmBundle`).
    #[error("LLM bundle: {0}")]
    Bundle(String),
    /// The tokenizer could not be loaded, or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to render (a template error, or it ran out of fuel).
    #[error("chat template: {0}")]
    Template(String),
    /// A prompt the engine refuses (a control token inside a message, nothing to generate from, …).
    #[error("prompt refused: {0}")]
    Prompt(String),
    /// A sampling parameter is out of range.
    #[error("`{field}`: {reason}")]
    Sampling {
        /// The parameter (`temperature`, `top_p`).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The prompt plus the completion would not fit the context this completion may use.
    #[error(
        "the prompt has {prompt_tokens} tokens and max_tokens asks for {max_tokens} more; this deployment \
         allows at most {limit} tokens of context per completion"
    )]
    ContextTooLong {
        /// Tokens of the rendered prompt.
        prompt_tokens: usize,
        /// Completion tokens asked for.
        max_tokens: usize,
        /// The context limit (the model's, or the memory budget's if smaller).
        limit: usize,
    },
    /// The model produced logits no token can be chosen from (empty, NaN, infinite).
    #[error("model output: {0}")]
    Logits(String),
}

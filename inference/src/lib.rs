//! Cloister's inference engine: ONNX models run with tract, loaded from bytes only.
//!
//! One loader for two users: the enclave (`cloister_enclave::inference` re-exports this crate), which loads the
//! decrypted model and serves it, and `cloister seal`, which checks a model before it is sealed with this same
//! code ([`DecodedModel`], [`LoadedModel::from_decoded`]), so that a model that seals is a model the enclave
//! loads. No I/O (models and tensors are buffers), no keys; plaintext weights are held only while the caller
//! holds a [`DecodedModel`] or a [`LoadedModel`].
//!
//! Trust assumptions (DESIGN §1, STYLE conventions 12–13):
//! - The ONNX bytes given to [`LoadedModel::load`] are the plaintext of a sealed model whose digest the caller
//!   has already checked against policy. They are still **untrusted input**: a model owner is not trusted by
//!   the clients nor by the operator, and tract is a large parser. So the bytes are parsed here and nowhere else,
//!   external data is refused (nothing outside the buffer is ever read, nothing is mmapped), and a tract panic
//!   while loading or running becomes an error instead of taking the enclave down.
//! - The tensors given to [`LoadedModel::run`] come from an attested client through the HTTP layer: untrusted
//!   input. Names, datatypes, ranks, fixed dimensions, symbolic dimensions shared between inputs and element
//!   counts are checked before tract sees them.
//! - Inputs and outputs are confidential: [`TensorData`]'s `Debug` prints the datatype and the length, never
//!   the values.
//!
//! Symbolic dimensions (batch, sequence, height, width…): the model is typed and optimized **once**, with its
//! symbols, at load time, and tract binds each symbol per request from the shapes of that request's inputs
//! (`SimpleState::set_input` resolves them) — [`Planning::Symbolic`]; MiniLM-class transformers and plain
//! MLP/CNN graphs take this path. Input dimensions that the ONNX file leaves unnamed (`dim_param` "?", a
//! negative `dim_value`, or no value at all) first get a fresh symbol of their own. tract 0.23 cannot type every
//! graph symbolically: when a shape is computed from the input shape through an op it does not follow (Magika:
//! `Shape → Cast(int32) → Concat → Cast(int64) → Expand`; PaddleOCR: `Shape → … → Reshape`), loading falls back to
//! [`Planning::PerShape`]: one plan per distinct set of input shapes, optimized on first use and kept in a small
//! LRU ([`PLAN_CACHE_CAPACITY`]); the plan for "every symbol = 1" is built at load time, so that a model tract
//! cannot run at all is refused at load.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prost::Message;
use serde::Serialize;
use tract_onnx::data_resolver::ModelDataResolver;
use tract_onnx::pb;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable,
    IntoTValue, OutletId, Symbol, SymbolValues, TDim, TValue, TVec, Tensor, TractError,
    TractResult, TypedFact, TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};
use zeroize::Zeroize;

mod footprint;

pub use footprint::{Footprint, OutputSize, SCRATCH_FACTOR};

/// The engine speaks the protocol's tensor types (`cloister_proto::v2`); re-exported for its users.
pub use cloister_proto::v2::{Datatype, TensorData};

/// The `platform` string of the Open Inference Protocol v2 model metadata.
pub const PLATFORM: &str = "onnx";

/// Maps tract's datum type. `TDim` (tract's symbolic integers, which ONNX declares as int64) is `INT64`.
fn datatype_of(dt: DatumType) -> Option<Datatype> {
    Some(match dt {
        DatumType::Bool => Datatype::Bool,
        DatumType::U8 => Datatype::Uint8,
        DatumType::U16 => Datatype::Uint16,
        DatumType::U32 => Datatype::Uint32,
        DatumType::U64 => Datatype::Uint64,
        DatumType::I8 => Datatype::Int8,
        DatumType::I16 => Datatype::Int16,
        DatumType::I32 => Datatype::Int32,
        DatumType::I64 | DatumType::TDim => Datatype::Int64,
        DatumType::F32 => Datatype::Fp32,
        DatumType::F64 => Datatype::Fp64,
        _ => return None,
    })
}

/// Builds a tract tensor of `shape`; the caller has checked that the element count matches.
fn to_tensor(data: &TensorData, shape: &[usize]) -> TractResult<Tensor> {
    match data {
        TensorData::Bool(v) => Tensor::from_shape(shape, v),
        TensorData::Uint8(v) => Tensor::from_shape(shape, v),
        TensorData::Uint16(v) => Tensor::from_shape(shape, v),
        TensorData::Uint32(v) => Tensor::from_shape(shape, v),
        TensorData::Uint64(v) => Tensor::from_shape(shape, v),
        TensorData::Int8(v) => Tensor::from_shape(shape, v),
        TensorData::Int16(v) => Tensor::from_shape(shape, v),
        TensorData::Int32(v) => Tensor::from_shape(shape, v),
        TensorData::Int64(v) => Tensor::from_shape(shape, v),
        TensorData::Fp32(v) => Tensor::from_shape(shape, v),
        TensorData::Fp64(v) => Tensor::from_shape(shape, v),
        // Unreachable: the datatype was checked against the model's, which `datatype_of` produced.
        other => Err(unsupported(other.datatype())),
    }
}

/// Copies the elements out of a tract tensor, as `datatype`.
fn from_tensor(tensor: &Tensor, datatype: Datatype) -> TractResult<TensorData> {
    // tract represents some int64 values (shapes) as TDim; they leave the enclave as INT64.
    let tensor = if tensor.datum_type() == DatumType::TDim {
        std::borrow::Cow::Owned(tensor.cast_to::<i64>()?.into_owned())
    } else {
        std::borrow::Cow::Borrowed(tensor)
    };
    let plain = tensor.try_as_plain_ram()?;
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(plain.as_slice::<bool>()?.to_vec()),
        Datatype::Uint8 => TensorData::Uint8(plain.as_slice::<u8>()?.to_vec()),
        Datatype::Uint16 => TensorData::Uint16(plain.as_slice::<u16>()?.to_vec()),
        Datatype::Uint32 => TensorData::Uint32(plain.as_slice::<u32>()?.to_vec()),
        Datatype::Uint64 => TensorData::Uint64(plain.as_slice::<u64>()?.to_vec()),
        Datatype::Int8 => TensorData::Int8(plain.as_slice::<i8>()?.to_vec()),
        Datatype::Int16 => TensorData::Int16(plain.as_slice::<i16>()?.to_vec()),
        Datatype::Int32 => TensorData::Int32(plain.as_slice::<i32>()?.to_vec()),
        Datatype::Int64 => TensorData::Int64(plain.as_slice::<i64>()?.to_vec()),
        Datatype::Fp32 => TensorData::Fp32(plain.as_slice::<f32>()?.to_vec()),
        Datatype::Fp64 => TensorData::Fp64(plain.as_slice::<f64>()?.to_vec()),
        // Unreachable: output datatypes come from `datatype_of`.
        other => return Err(unsupported(other)),
    })
}

/// A datatype of the protocol that has no tract counterpart here (a variant added to the protocol later).
fn unsupported(datatype: Datatype) -> TractError {
    TractError::msg(format!(
        "datatype {datatype} is not supported by the engine"
    ))
}

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

/// An error of the inference engine. Variants up to [`InferenceError::Panicked`] concern the model; the rest
/// concern a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
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
}

/// How one dimension of a model input is constrained.
#[derive(Debug, Clone)]
enum DimSpec {
    /// A fixed size.
    Fixed(usize),
    /// Bound per request; the same symbol must take the same value in every input of a request.
    Symbol(Symbol),
    /// An expression of symbols (rare in inputs): tract checks it while running.
    Expr(TDim),
}

#[derive(Debug, Clone)]
struct InputSpec {
    name: String,
    datatype: Datatype,
    /// tract's datum type of `datatype` (never `TDim`: such inputs are refused).
    datum_type: DatumType,
    dims: Vec<DimSpec>,
}

impl InputSpec {
    fn to_v2(&self) -> TensorSpec {
        let shape = self
            .dims
            .iter()
            .map(|d| match d {
                DimSpec::Fixed(n) => i64::try_from(*n).unwrap_or(-1),
                DimSpec::Symbol(_) | DimSpec::Expr(_) => -1,
            })
            .collect();
        TensorSpec {
            name: self.name.clone(),
            datatype: self.datatype,
            shape,
        }
    }
}

/// How many per-shape plans a [`LoadedModel`] in per-shape mode keeps (least recently used goes first).
///
/// Each plan holds its own optimized (packed) copy of the weights, so this bounds memory at about this many
/// times the model; it also bounds what a client can make the enclave keep by varying shapes.
pub const PLAN_CACHE_CAPACITY: usize = 4;

/// The bounds one request must respect before it runs ([`LoadedModel::prepare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Largest input or output tensor, in elements; also bounds the product of the request's symbol values.
    pub max_tensor_elements: u64,
    /// Largest batch: axis 0 of every input whose axis 0 is symbolic. `None`: only the element limits.
    pub max_batch: Option<u64>,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_tensor_elements: 16 * 1024 * 1024,
            max_batch: None,
        }
    }
}

/// A request that passed [`LoadedModel::prepare`]: its tensors, its plan and its [`Footprint`]. Holds the
/// client's inputs (confidential): its `Debug` shows the footprint only.
pub struct PreparedRun {
    plan: Arc<TypedRunnableModel>,
    tensors: TVec<TValue>,
    footprint: Footprint,
}

impl PreparedRun {
    /// What the run will cost, from the plan: output sizes and the estimated peak memory.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }
}

impl fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRun")
            .field("footprint", &self.footprint)
            .finish_non_exhaustive()
    }
}

/// A request shape for a message: at most eight dimensions, then the rank (a client controls the shape's
/// length; a message must not echo a vector of millions of entries).
fn shape_text(shape: &[usize]) -> String {
    const SHOWN: usize = 8;
    if shape.len() <= SHOWN {
        format!("{shape:?}")
    } else {
        let head: Vec<String> = shape[..SHOWN].iter().map(usize::to_string).collect();
        format!("[{}, …] (rank {})", head.join(", "), shape.len())
    }
}

/// How a [`LoadedModel`] handles the dimensions that vary per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Planning {
    /// One plan, optimized once with symbolic dimensions; tract binds the symbols per request.
    Symbolic,
    /// tract could not type or optimize the model with symbolic dimensions (a shape computed from the input
    /// shape through an op tract does not follow symbolically): one plan per distinct set of input shapes,
    /// optimized on first use, in a bounded cache ([`PLAN_CACHE_CAPACITY`]).
    PerShape,
}

impl fmt::Display for Planning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Symbolic => "one plan with symbolic input dimensions",
            Self::PerShape => "one plan per input shape",
        })
    }
}

/// A model loaded, optimized and planned once, ready to serve requests concurrently (`run` takes `&self`).
pub struct LoadedModel {
    engine: Engine,
    inputs: Vec<InputSpec>,
    metadata: ModelMetadata,
}

enum Engine {
    Symbolic(Arc<TypedRunnableModel>),
    PerShape(Box<PerShapePlans>),
}

struct PerShapePlans {
    /// The model with its input facts fixed, not yet typed: each plan starts from a clone of it.
    template: InferenceModel,
    cache: Mutex<PlanCache>,
}

/// A small LRU of plans keyed by the input shapes, in model input order.
#[derive(Default)]
struct PlanCache {
    entries: Vec<CachedPlan>,
    clock: u64,
}

struct CachedPlan {
    shapes: Vec<Vec<usize>>,
    plan: Arc<TypedRunnableModel>,
    last_used: u64,
}

impl PlanCache {
    fn get(&mut self, shapes: &[Vec<usize>]) -> Option<Arc<TypedRunnableModel>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries
            .iter_mut()
            .find(|e| e.shapes == shapes)
            .map(|e| {
                e.last_used = clock;
                Arc::clone(&e.plan)
            })
    }

    fn insert(&mut self, shapes: Vec<Vec<usize>>, plan: Arc<TypedRunnableModel>) {
        self.clock += 1;
        if self.entries.iter().any(|e| e.shapes == shapes) {
            return; // a concurrent request planned the same shapes first
        }
        if self.entries.len() >= PLAN_CACHE_CAPACITY {
            if let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(ix, _)| ix)
            {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push(CachedPlan {
            shapes,
            plan,
            last_used: self.clock,
        });
    }
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("planning", &self.planning())
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Loads an ONNX model from a buffer: decode, refuse external data, translate, fix the input facts,
    /// optimize once, plan.
    ///
    /// `onnx` comes from the untrusted model owner (via the sealed blob the untrusted host stored); the
    /// caller has decrypted it and checked its digest, and zeroizes it after this returns. The buffer is
    /// read once, by the protobuf decoder (tract's own `model_for_read` would first copy it whole into a
    /// `Vec`); the decoded protobuf, a copy of the weights, is zeroized before this returns; tract keeps its
    /// own copy of the weights in the optimized model.
    pub fn load(onnx: &[u8]) -> Result<Self, InferenceError> {
        Self::from_decoded(DecodedModel::decode(onnx)?)
    }

    /// [`LoadedModel::load`] after the decoding: refuse external data, translate, fix the input facts,
    /// optimize once, plan. The decoded protobuf is zeroized before this returns, on every path.
    pub fn from_decoded(model: DecodedModel) -> Result<Self, InferenceError> {
        model.reject_external_data()?;
        let framework = tract_onnx::Onnx {
            provider: Arc::new(RefuseExternalData),
            ..tract_onnx::onnx()
        };
        let inference_model =
            guarded(Stage::Loading, || framework.model_for_proto_model(&model.0))?;
        drop(model);
        Self::from_inference_model(inference_model)
    }

    fn from_inference_model(mut model: InferenceModel) -> Result<Self, InferenceError> {
        let inputs = fix_input_facts(&mut model)?;
        let input_meta = inputs.iter().map(InputSpec::to_v2).collect();
        let template = model.clone();
        // First choice: type and optimize once with symbolic dimensions.
        let symbolic = guarded(Stage::Analysing, || model.into_typed()).and_then(|typed| {
            let outputs = describe_outputs(&typed)?;
            let plan = guarded(Stage::Optimizing, || {
                typed.into_optimized()?.into_runnable()
            })?;
            Ok((plan, outputs))
        });
        if let Ok((plan, outputs)) = symbolic {
            drop(template);
            let metadata = ModelMetadata {
                platform: PLATFORM,
                inputs: input_meta,
                outputs,
            };
            return Ok(Self {
                engine: Engine::Symbolic(plan),
                inputs,
                metadata,
            });
        }
        // Fallback: plan per input shapes. Plan once now with every symbol at 1, so that a model tract cannot
        // run at all fails here rather than on the first request, and to learn the output datatypes.
        let probe_shapes = symbol_shapes(&template, &inputs, 1)?;
        let probe = plan_for_shapes(&template, &inputs, &probe_shapes)?;
        let outputs = describe_outputs_per_shape(&template, &inputs, &probe)?;
        let mut cache = PlanCache::default();
        cache.insert(probe_shapes, probe);
        let metadata = ModelMetadata {
            platform: PLATFORM,
            inputs: input_meta,
            outputs,
        };
        Ok(Self {
            engine: Engine::PerShape(Box::new(PerShapePlans {
                template,
                cache: Mutex::new(cache),
            })),
            inputs,
            metadata,
        })
    }

    /// The inputs and outputs, for the v2 metadata endpoint.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The inputs, in the model's order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.metadata.inputs
    }

    /// The outputs, in the model's order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.metadata.outputs
    }

    /// Whether the model runs from one symbolic plan or from per-shape plans.
    pub fn planning(&self) -> Planning {
        match self.engine {
            Engine::Symbolic(_) => Planning::Symbolic,
            Engine::PerShape(_) => Planning::PerShape,
        }
    }

    /// Runs one request under the default [`RunLimits`]: [`LoadedModel::prepare`], then
    /// [`LoadedModel::run_prepared`].
    pub fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, InferenceError> {
        let prepared = self.prepare(inputs, &RunLimits::default())?;
        self.run_prepared(prepared)
    }

    /// Checks one request and computes its cost, without running it. `inputs` come from the attested (but
    /// untrusted) client: each model input exactly once, in any order, with the model's datatype and rank, the
    /// model's size on fixed dimensions, one value per symbol across inputs, and as many elements as the shape
    /// says. Then, before tract allocates anything for the request:
    /// - the symbols' values, multiplied (a zero counting as one), must not exceed `max_tensor_elements`, and
    ///   the batch must not exceed `max_batch`;
    /// - the plan for these shapes is found (per-shape models: planned now, under the bound above);
    /// - every output whose size the plan knows must not exceed `max_tensor_elements`;
    /// - the run's peak memory is estimated ([`PreparedRun::footprint`]), for the caller's admission.
    pub fn prepare(
        &self,
        inputs: Vec<NamedTensor>,
        limits: &RunLimits,
    ) -> Result<PreparedRun, InferenceError> {
        let (tensors, bound) = self.validate(inputs)?;
        self.check_symbols(&bound, limits)?;
        let (plan, values) = match &self.engine {
            Engine::Symbolic(plan) => {
                let mut values = SymbolValues::default();
                for (symbol, (value, _)) in &bound {
                    values.set(symbol, i64::try_from(*value).unwrap_or(i64::MAX));
                }
                (Arc::clone(plan), values)
            }
            Engine::PerShape(plans) => {
                let PerShapePlans { template, cache } = plans.as_ref();
                let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
                let cached = lock(cache).get(&shapes);
                let plan = match cached {
                    Some(plan) => plan,
                    None => {
                        // Planned outside the lock: other shapes keep being served meanwhile.
                        let plan = plan_for_shapes(template, &self.inputs, &shapes).map_err(
                            |e| match e {
                                // A plan that fails for these shapes is about this request, not the model.
                                InferenceError::Model { stage, source } => {
                                    InferenceError::Run { stage, source }
                                }
                                other => other,
                            },
                        )?;
                        lock(cache).insert(shapes, Arc::clone(&plan));
                        plan
                    }
                };
                // The plan was made for these concrete shapes: no symbol is left to bind.
                (plan, SymbolValues::default())
            }
        };
        let footprint = footprint::footprint(&plan, &values);
        for out in &footprint.outputs {
            if let Some(elements) = out.elements {
                if elements > limits.max_tensor_elements {
                    return Err(InferenceError::OutputTooLarge {
                        output: self.metadata.outputs[out.index].name.clone(),
                        elements,
                        limit: limits.max_tensor_elements,
                    });
                }
            }
        }
        Ok(PreparedRun {
            plan,
            tensors,
            footprint,
        })
    }

    /// Runs a request checked by [`LoadedModel::prepare`] on this model. Returns every model output, in the
    /// model's order.
    pub fn run_prepared(&self, prepared: PreparedRun) -> Result<Vec<NamedTensor>, InferenceError> {
        let PreparedRun { plan, tensors, .. } = prepared;
        let outputs = match catch_unwind(AssertUnwindSafe(|| plan.run(tensors))) {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(source)) => {
                return Err(InferenceError::Run {
                    stage: Stage::Running,
                    source,
                })
            }
            Err(_) => {
                return Err(InferenceError::Panicked {
                    stage: Stage::Running,
                })
            }
        };
        if outputs.len() != self.metadata.outputs.len() {
            return Err(InferenceError::OutputCount {
                expected: self.metadata.outputs.len(),
                got: outputs.len(),
            });
        }
        self.metadata
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, value)| {
                let data = from_tensor(&value, spec.datatype).map_err(|source| {
                    InferenceError::OutputConversion {
                        output: spec.name.clone(),
                        datatype: spec.datatype,
                        source,
                    }
                })?;
                Ok(NamedTensor {
                    name: spec.name.clone(),
                    datatype: spec.datatype,
                    shape: value.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }

    /// The bounds on the request's symbols: their product ([`InferenceError::SymbolVolume`]) and the batch.
    fn check_symbols(
        &self,
        bound: &HashMap<Symbol, (usize, usize)>,
        limits: &RunLimits,
    ) -> Result<(), InferenceError> {
        let product = bound.values().fold(1u64, |acc, (value, _)| {
            acc.saturating_mul(u64::try_from(*value).unwrap_or(u64::MAX).max(1))
        });
        if product > limits.max_tensor_elements {
            return Err(InferenceError::SymbolVolume {
                product,
                limit: limits.max_tensor_elements,
            });
        }
        if let Some(limit) = limits.max_batch {
            for spec in &self.inputs {
                if let Some(DimSpec::Symbol(symbol)) = spec.dims.first() {
                    if let Some(&(value, _)) = bound.get(symbol) {
                        let got = u64::try_from(value).unwrap_or(u64::MAX);
                        if got > limit {
                            return Err(InferenceError::BatchTooLarge {
                                input: spec.name.clone(),
                                got,
                                limit,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a request against the model and orders its tensors as the model's inputs.
    #[allow(clippy::type_complexity)]
    fn validate(
        &self,
        inputs: Vec<NamedTensor>,
    ) -> Result<(TVec<TValue>, HashMap<Symbol, (usize, usize)>), InferenceError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        // symbol -> (value, index of the input that bound it)
        let mut bound: HashMap<Symbol, (usize, usize)> = HashMap::new();
        for tensor in inputs {
            let Some(ix) = self.inputs.iter().position(|spec| spec.name == tensor.name) else {
                return Err(InferenceError::UnknownInput {
                    name: tensor.name,
                    expected: self.input_names(),
                });
            };
            let spec = &self.inputs[ix];
            if slots[ix].is_some() {
                return Err(InferenceError::DuplicateInput { name: tensor.name });
            }
            if tensor.datatype != tensor.data.datatype() {
                return Err(InferenceError::InconsistentDatatype {
                    input: tensor.name,
                    declared: tensor.datatype,
                    data: tensor.data.datatype(),
                });
            }
            if tensor.datatype != spec.datatype {
                return Err(InferenceError::DatatypeMismatch {
                    input: tensor.name,
                    expected: spec.datatype,
                    got: tensor.datatype,
                });
            }
            if tensor.shape.len() != spec.dims.len() {
                return Err(InferenceError::RankMismatch {
                    input: tensor.name,
                    expected: spec.dims.len(),
                    shape: tensor.shape,
                });
            }
            let Some(count) = tensor
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            else {
                return Err(InferenceError::ShapeOverflow {
                    input: tensor.name,
                    shape: tensor.shape,
                });
            };
            if count != tensor.data.len() {
                return Err(InferenceError::ElementCount {
                    input: tensor.name,
                    shape: tensor.shape,
                    expected: count,
                    got: tensor.data.len(),
                });
            }
            for (axis, (dim, &got)) in spec.dims.iter().zip(&tensor.shape).enumerate() {
                match dim {
                    DimSpec::Fixed(expected) if *expected != got => {
                        return Err(InferenceError::DimMismatch {
                            input: tensor.name,
                            axis,
                            expected: *expected,
                            got,
                        });
                    }
                    DimSpec::Symbol(symbol) => match bound.get(symbol) {
                        Some(&(value, by)) if value != got => {
                            return Err(InferenceError::SymbolMismatch {
                                input: tensor.name,
                                axis,
                                symbol: symbol.to_string(),
                                got,
                                bound: value,
                                bound_by: self.inputs[by].name.clone(),
                            });
                        }
                        Some(_) => {}
                        None => {
                            bound.insert(symbol.clone(), (got, ix));
                        }
                    },
                    DimSpec::Fixed(_) | DimSpec::Expr(_) => {}
                }
            }
            let built =
                to_tensor(&tensor.data, &tensor.shape).map_err(|source| InferenceError::Run {
                    stage: Stage::Running,
                    source,
                })?;
            slots[ix] = Some(built);
        }
        let tensors = slots
            .into_iter()
            .zip(&self.inputs)
            .map(|(slot, spec)| {
                slot.map(IntoTValue::into_tvalue)
                    .ok_or_else(|| InferenceError::MissingInput {
                        name: spec.name.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok((tensors, bound))
    }

    fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|spec| spec.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Locks the plan cache. A panic while the lock was held cannot leave it inconsistent (entries are pushed
/// whole), so a poisoned lock is used as is.
fn lock(cache: &Mutex<PlanCache>) -> MutexGuard<'_, PlanCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Input shapes with every symbol at `value` (expressions evaluated accordingly).
fn symbol_shapes(
    template: &InferenceModel,
    inputs: &[InputSpec],
    value: u8,
) -> Result<Vec<Vec<usize>>, InferenceError> {
    let mut values = SymbolValues::default();
    for symbol in template.symbols.all_symbols() {
        values.set(&symbol, i64::from(value));
    }
    inputs
        .iter()
        .map(|spec| {
            spec.dims
                .iter()
                .map(|dim| match dim {
                    DimSpec::Fixed(n) => Ok(*n),
                    DimSpec::Symbol(_) => Ok(usize::from(value)),
                    DimSpec::Expr(e) => e
                        .eval(&values)
                        .as_i64()
                        .and_then(|v| usize::try_from(v).ok())
                        .ok_or_else(|| InferenceError::UnresolvedInputDim {
                            name: spec.name.clone(),
                            dim: e.to_string(),
                        }),
                })
                .collect()
        })
        .collect()
}

/// Optimizes and plans the template for concrete input shapes.
fn plan_for_shapes(
    template: &InferenceModel,
    inputs: &[InputSpec],
    shapes: &[Vec<usize>],
) -> Result<Arc<TypedRunnableModel>, InferenceError> {
    guarded(Stage::Optimizing, || {
        let mut model = template.clone();
        for (ix, (spec, shape)) in inputs.iter().zip(shapes).enumerate() {
            model.set_input_fact(ix, InferenceFact::dt_shape(spec.datum_type, shape))?;
        }
        model.into_optimized()?.into_runnable()
    })
}

/// Runs a tract step, turning a panic into [`InferenceError::Panicked`].
///
/// tract is written for trusted models: a malformed graph can reach an `unwrap`, an index out of range or an
/// `unimplemented!`. The model comes from the untrusted model owner, so a panic must not take the enclave down.
/// The values touched by a panicking step are dropped with it; nothing shared is left half-updated.
fn guarded<T>(stage: Stage, step: impl FnOnce() -> TractResult<T>) -> Result<T, InferenceError> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(InferenceError::Model { stage, source }),
        Err(_) => Err(InferenceError::Panicked { stage }),
    }
}

/// Gives every input a concrete datum type and a closed shape, inventing a symbol for each dimension the
/// ONNX file leaves unnamed (tract cannot type a graph whose input dimensions are unknown).
fn fix_input_facts(model: &mut InferenceModel) -> Result<Vec<InputSpec>, InferenceError> {
    let outlets = model
        .input_outlets()
        .map_err(model_err(Stage::Loading))?
        .to_vec();
    let mut specs = vec![];
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model.input_fact(ix).map_err(model_err(Stage::Loading))?;
        let Some(dt) = fact.datum_type.concretize() else {
            return Err(InferenceError::UntypedInput { name });
        };
        let datatype = match datatype_of(dt) {
            Some(datatype) if dt != DatumType::TDim => datatype,
            _ => {
                return Err(InferenceError::UnsupportedModelType {
                    role: TensorRole::Input,
                    name,
                    datum_type: format!("{dt:?}"),
                })
            }
        };
        if fact.shape.is_open() {
            return Err(InferenceError::UnknownInputRank { name });
        }
        let dims: Vec<TDim> = fact
            .shape
            .dims()
            .enumerate()
            .map(|(axis, dim)| match dim.concretize() {
                Some(d) => d,
                None => TDim::Sym(model.symbols.new_with_prefix(&unnamed_dim(&name, axis))),
            })
            .collect();
        let fact = InferenceFact::dt_shape(
            dt,
            ShapeFactoid::closed(dims.iter().cloned().map(DimFact::from).collect()),
        );
        model
            .set_input_fact(ix, fact)
            .map_err(model_err(Stage::Loading))?;
        let dims = dims
            .into_iter()
            .map(|d| match d {
                TDim::Val(v) => match usize::try_from(v) {
                    Ok(n) => DimSpec::Fixed(n),
                    Err(_) => DimSpec::Expr(TDim::Val(v)),
                },
                TDim::Sym(s) => DimSpec::Symbol(s),
                other => DimSpec::Expr(other),
            })
            .collect();
        specs.push(InputSpec {
            name,
            datatype,
            datum_type: dt,
            dims,
        });
    }
    Ok(specs)
}

/// The symbol name for an unnamed input dimension: alphanumeric and `_` only, as tract's symbols.
fn unnamed_dim(input: &str, axis: usize) -> String {
    let clean: String = input
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!("unnamed_{clean}_{axis}")
}

fn model_err(stage: Stage) -> impl Fn(TractError) -> InferenceError {
    move |source| InferenceError::Model { stage, source }
}

/// The output specs, read off the typed (not yet optimized) model, whose outlets carry the ONNX names.
fn describe_outputs(typed: &TypedModel) -> Result<Vec<TensorSpec>, InferenceError> {
    let mut outputs = vec![];
    for (ix, outlet) in typed
        .output_outlets()
        .map_err(model_err(Stage::Analysing))?
        .iter()
        .enumerate()
    {
        let name = output_name(typed, *outlet);
        let fact = typed.output_fact(ix).map_err(model_err(Stage::Analysing))?;
        let datatype = output_datatype(&name, fact.datum_type)?;
        outputs.push(TensorSpec {
            name,
            datatype,
            shape: v2_shape(fact.shape.iter()),
        });
    }
    Ok(outputs)
}

/// The output specs of a per-shape model: datatypes and ranks from the probe plan (every symbol at 1). A size is
/// announced as fixed only if typing the model with every symbol at 13, then at 64, gives that same size again;
/// otherwise (or if typing fails) it is `-1`. (Two probes far apart, because sizes such as `W / 8` agree on
/// small values.)
fn describe_outputs_per_shape(
    template: &InferenceModel,
    inputs: &[InputSpec],
    probe: &TypedRunnableModel,
) -> Result<Vec<TensorSpec>, InferenceError> {
    let typed_at = |value: u8| {
        let shapes = symbol_shapes(template, inputs, value).ok()?;
        guarded(Stage::Analysing, || {
            let mut model = template.clone();
            for (ix, (spec, shape)) in inputs.iter().zip(&shapes).enumerate() {
                model.set_input_fact(ix, InferenceFact::dt_shape(spec.datum_type, shape))?;
            }
            model.into_typed()
        })
        .ok()
    };
    let others: Vec<Option<TypedModel>> = vec![typed_at(13), typed_at(64)];
    let probe_model = probe.model();
    let mut outputs = vec![];
    for (ix, outlet) in template
        .output_outlets()
        .map_err(model_err(Stage::Analysing))?
        .iter()
        .enumerate()
    {
        let name = output_name(template, *outlet);
        let fact = probe_model
            .output_fact(ix)
            .map_err(model_err(Stage::Optimizing))?;
        let datatype = output_datatype(&name, fact.datum_type)?;
        let other_facts: Vec<Option<&TypedFact>> = others
            .iter()
            .map(|m| m.as_ref().and_then(|m| m.output_fact(ix).ok()))
            .collect();
        let shape = (0..fact.rank())
            .map(|axis| {
                let size = fact.shape[axis].as_i64().filter(|v| *v >= 0)?;
                let stable = other_facts.iter().all(|other| {
                    other.is_some_and(|o| {
                        o.rank() == fact.rank() && o.shape[axis].as_i64() == Some(size)
                    })
                });
                stable.then_some(size)
            })
            .map(|size| size.unwrap_or(-1))
            .collect();
        outputs.push(TensorSpec {
            name,
            datatype,
            shape,
        });
    }
    Ok(outputs)
}

fn output_name<F, O>(model: &tract_onnx::prelude::Graph<F, O>, outlet: OutletId) -> String
where
    F: tract_onnx::prelude::Fact + Clone + 'static,
    O: fmt::Debug
        + fmt::Display
        + AsRef<dyn tract_onnx::prelude::Op>
        + AsMut<dyn tract_onnx::prelude::Op>
        + Clone
        + 'static,
{
    model
        .outlet_label(outlet)
        .map(str::to_owned)
        .unwrap_or_else(|| model.node(outlet.node).name.clone())
}

fn output_datatype(name: &str, dt: DatumType) -> Result<Datatype, InferenceError> {
    datatype_of(dt).ok_or_else(|| InferenceError::UnsupportedModelType {
        role: TensorRole::Output,
        name: name.to_owned(),
        datum_type: format!("{dt:?}"),
    })
}

/// v2 shapes: a known size, or -1.
fn v2_shape<'a>(dims: impl Iterator<Item = &'a TDim>) -> Vec<i64> {
    dims.map(|d| d.as_i64().filter(|v| *v >= 0).unwrap_or(-1))
        .collect()
}

/// A decoded ONNX `ModelProto`, not yet given to tract: the first step of [`LoadedModel::load`], and what
/// `cloister seal` inspects before it loads the model the same way ([`LoadedModel::from_decoded`]).
///
/// It holds a plaintext copy of every weight, wiped when it is dropped, on every path.
pub struct DecodedModel(pb::ModelProto);

impl fmt::Debug for DecodedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedModel").finish_non_exhaustive()
    }
}

impl Drop for DecodedModel {
    fn drop(&mut self) {
        wipe_weights(&mut self.0);
    }
}

impl DecodedModel {
    /// Decodes the protobuf. `onnx` is untrusted: the decoder is bounded by the buffer and by prost's
    /// recursion limit, and does not panic.
    pub fn decode(onnx: &[u8]) -> Result<Self, InferenceError> {
        pb::ModelProto::decode(onnx)
            .map(Self)
            .map_err(InferenceError::ModelDecode)
    }

    /// The decoded protobuf.
    pub fn proto(&self) -> &pb::ModelProto {
        &self.0
    }

    /// Refuses a model whose tensors point at external files (ONNX `data_location = EXTERNAL` or any
    /// `external_data` entry), wherever a tensor can sit: initializers, sparse initializers, node attributes,
    /// subgraphs (If/Loop/Scan bodies), functions and training info. Names the first such tensor.
    ///
    /// The model comes from the untrusted model owner; an external reference would make tract read a host
    /// file (by default through mmap), outside the sealed and attested bytes.
    pub fn reject_external_data(&self) -> Result<(), InferenceError> {
        let mut found = None;
        visit_tensors(&self.0, &mut |t| {
            let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
                || !t.external_data.is_empty();
            if external && found.is_none() {
                found = Some(t);
            }
        });
        match found {
            Some(t) => Err(InferenceError::ExternalData {
                tensor: t.name.clone(),
                location: t
                    .external_data
                    .iter()
                    .find(|kv| kv.key == "location")
                    .map(|kv| kv.value.clone()),
            }),
            None => Ok(()),
        }
    }

    /// The operators of the main graph and of its subgraphs (`If`, `Loop`, `Scan` bodies) that tract's ONNX
    /// front end has no builder for, each once, sorted: `op_type`, prefixed `domain:` outside the default
    /// domain. Loading such a model fails later, with a less direct message (tract inserts a placeholder).
    pub fn unsupported_operators(&self) -> Vec<String> {
        /// Recursion follows subgraphs, whose depth prost bounds while decoding.
        fn collect(graph: &pb::GraphProto, onnx: &tract_onnx::Onnx, out: &mut BTreeSet<String>) {
            for node in &graph.node {
                if !onnx.op_register.0.contains_key(&node.op_type) {
                    out.insert(if node.domain.is_empty() || node.domain == "ai.onnx" {
                        node.op_type.clone()
                    } else {
                        format!("{}:{}", node.domain, node.op_type)
                    });
                }
                for attr in &node.attribute {
                    for g in attr.g.iter().chain(&attr.graphs) {
                        collect(g, onnx, out);
                    }
                }
            }
        }
        let onnx = tract_onnx::onnx();
        let mut out = BTreeSet::new();
        if let Some(graph) = &self.0.graph {
            collect(graph, &onnx, &mut out);
        }
        out.into_iter().collect()
    }
}

/// Calls `f` on every tensor of the model. Recursion follows subgraphs, whose depth prost bounds while
/// decoding (its recursion limit), so a hostile nesting cannot overflow the stack here.
fn visit_tensors<'a>(model: &'a pb::ModelProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
    fn graph<'a>(g: &'a pb::GraphProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        g.initializer.iter().for_each(&mut *f);
        for s in &g.sparse_initializer {
            sparse(s, f);
        }
        for n in &g.node {
            node(n, f);
        }
    }
    fn sparse<'a>(s: &'a pb::SparseTensorProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        s.values.iter().for_each(&mut *f);
        s.indices.iter().for_each(&mut *f);
    }
    fn node<'a>(n: &'a pb::NodeProto, f: &mut impl FnMut(&'a pb::TensorProto)) {
        for a in &n.attribute {
            a.t.iter().for_each(&mut *f);
            a.tensors.iter().for_each(&mut *f);
            for s in a.sparse_tensor.iter().chain(&a.sparse_tensors) {
                sparse(s, f);
            }
            for g in a.g.iter().chain(&a.graphs) {
                graph(g, f);
            }
        }
    }
    model.graph.iter().for_each(|g| graph(g, f));
    for func in &model.functions {
        for n in &func.node {
            node(n, f);
        }
    }
    for info in &model.training_info {
        for g in info.initialization.iter().chain(&info.algorithm) {
            graph(g, f);
        }
    }
}

/// Mutable twin of [`visit_tensors`], used to wipe the decoded weights.
fn visit_tensors_mut(model: &mut pb::ModelProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
    fn graph(g: &mut pb::GraphProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        g.initializer.iter_mut().for_each(&mut *f);
        for s in &mut g.sparse_initializer {
            sparse(s, f);
        }
        for n in &mut g.node {
            node(n, f);
        }
    }
    fn sparse(s: &mut pb::SparseTensorProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        s.values.iter_mut().for_each(&mut *f);
        s.indices.iter_mut().for_each(&mut *f);
    }
    fn node(n: &mut pb::NodeProto, f: &mut impl FnMut(&mut pb::TensorProto)) {
        for a in &mut n.attribute {
            a.t.iter_mut().for_each(&mut *f);
            a.tensors.iter_mut().for_each(&mut *f);
            for s in a.sparse_tensor.iter_mut().chain(&mut a.sparse_tensors) {
                sparse(s, f);
            }
            for g in a.g.iter_mut().chain(&mut a.graphs) {
                graph(g, f);
            }
        }
    }
    model.graph.iter_mut().for_each(|g| graph(g, f));
    for func in &mut model.functions {
        for n in &mut func.node {
            node(n, f);
        }
    }
    for info in &mut model.training_info {
        for g in info.initialization.iter_mut().chain(&mut info.algorithm) {
            graph(g, f);
        }
    }
}

/// Zeroizes (then empties) the data of every tensor of the model.
fn wipe_weights(model: &mut pb::ModelProto) {
    visit_tensors_mut(model, &mut |t| {
        t.raw_data.zeroize();
        t.float_data.zeroize();
        t.int32_data.zeroize();
        t.int64_data.zeroize();
        t.double_data.zeroize();
        t.uint64_data.zeroize();
        t.string_data.zeroize();
    });
}

/// The data resolver tract would use for external data: it refuses. [`DecodedModel::reject_external_data`]
/// already refused such models before tract saw them; this is the second lock (STYLE convention 13), so that
/// no code path in tract can open or mmap a host file on the model's behalf.
struct RefuseExternalData;

impl ModelDataResolver for RefuseExternalData {
    fn read_bytes_from_path(
        &self,
        _buf: &mut Vec<u8>,
        p: &Path,
        _offset: usize,
        _length: Option<usize>,
    ) -> TractResult<()> {
        Err(TractError::msg(format!(
            "external data is not supported (model asked for {p:?})"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use pb::tensor_shape_proto::{dimension, Dimension};

    fn sample(rel: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/sample")
            .join(rel);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const FLOAT: i32 = 1;
    const STRING: i32 = 8;

    fn dim(value: Option<dimension::Value>) -> Dimension {
        Dimension {
            value,
            ..Default::default()
        }
    }

    fn value_info(name: &str, elem_type: i32, dims: Option<Vec<Dimension>>) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type,
                    shape: dims.map(|dim| pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// x -> Relu -> y, with the given input declaration, plus extra initializers and nodes.
    fn relu_model(input: pb::ValueInfoProto, output: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "relu".into(),
                node: vec![pb::NodeProto {
                    op_type: "Relu".into(),
                    input: vec![input.name.clone()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                input: vec![input],
                output: vec![value_info(output, FLOAT, None)],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fixed(dims: &[i64]) -> Option<Vec<Dimension>> {
        Some(
            dims.iter()
                .map(|d| dim(Some(dimension::Value::DimValue(*d))))
                .collect(),
        )
    }

    fn external_tensor() -> pb::TensorProto {
        pb::TensorProto {
            name: "w".into(),
            dims: vec![4],
            data_type: FLOAT,
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "w.bin".into(),
            }],
            ..Default::default()
        }
    }

    fn load(model: &pb::ModelProto) -> Result<LoadedModel, InferenceError> {
        LoadedModel::load(&model.encode_to_vec())
    }

    fn f32s(shape: &[usize]) -> NamedTensor {
        let n = shape.iter().product();
        NamedTensor::new(
            "x",
            shape.to_vec(),
            TensorData::Fp32((0..n).map(|i| i as f32 - 3.0).collect()),
        )
    }

    #[test]
    fn loaded_model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LoadedModel>();
        check::<InferenceError>();
    }

    #[test]
    fn not_a_model() {
        assert!(matches!(
            LoadedModel::load(b"\xff\xff\xff not protobuf"),
            Err(InferenceError::ModelDecode(_))
        ));
        // Valid protobuf, no graph.
        let err = LoadedModel::load(&pb::ModelProto::default().encode_to_vec()).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::Model {
                    stage: Stage::Loading,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn external_data_is_refused_wherever_it_hides() {
        let input = value_info("x", FLOAT, fixed(&[4]));
        // In the initializers.
        let mut m = relu_model(input.clone(), "y");
        m.graph
            .as_mut()
            .unwrap()
            .initializer
            .push(external_tensor());
        let err = load(&m).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::ExternalData { ref tensor, ref location }
                    if tensor == "w" && location.as_deref() == Some("w.bin")
            ),
            "{err}"
        );
        // Only `external_data` set, no data_location.
        let mut m = relu_model(input.clone(), "y");
        let mut t = external_tensor();
        t.data_location = None;
        m.graph.as_mut().unwrap().initializer.push(t);
        assert!(matches!(load(&m), Err(InferenceError::ExternalData { .. })));
        // In a Constant node's attribute inside an If branch (a subgraph).
        let mut m = relu_model(input.clone(), "y");
        let constant = pb::NodeProto {
            op_type: "Constant".into(),
            output: vec!["c".into()],
            attribute: vec![pb::AttributeProto {
                name: "value".into(),
                t: Some(external_tensor()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let branch = pb::GraphProto {
            name: "then".into(),
            node: vec![constant],
            ..Default::default()
        };
        m.graph.as_mut().unwrap().node.push(pb::NodeProto {
            op_type: "If".into(),
            attribute: vec![pb::AttributeProto {
                name: "then_branch".into(),
                g: Some(branch),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(matches!(load(&m), Err(InferenceError::ExternalData { .. })));
        // In a model-local function.
        let mut m = relu_model(input, "y");
        m.functions.push(pb::FunctionProto {
            node: vec![pb::NodeProto {
                op_type: "Constant".into(),
                attribute: vec![pb::AttributeProto {
                    t: Some(external_tensor()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(matches!(load(&m), Err(InferenceError::ExternalData { .. })));
    }

    #[test]
    fn unsupported_operators_are_listed_from_every_graph() {
        let mut m = relu_model(value_info("x", FLOAT, fixed(&[4])), "y");
        let graph = m.graph.as_mut().unwrap();
        let op = |op_type: &str, domain: &str| pb::NodeProto {
            op_type: op_type.into(),
            domain: domain.into(),
            ..Default::default()
        };
        let mut branch = op("If", "");
        branch.attribute.push(pb::AttributeProto {
            name: "then_branch".into(),
            g: Some(pb::GraphProto {
                node: vec![op("FrobnicateV9", ""), op("Relu", "")],
                ..Default::default()
            }),
            ..Default::default()
        });
        graph.node.push(branch);
        graph.node.push(op("FusedMatMul", "com.microsoft"));
        graph.node.push(op("FrobnicateV9", "ai.onnx"));
        let decoded = DecodedModel::decode(&m.encode_to_vec()).unwrap();
        assert_eq!(
            decoded.unsupported_operators(),
            ["FrobnicateV9", "com.microsoft:FusedMatMul"]
        );
        let decoded =
            DecodedModel::decode(&relu_model(value_info("x", FLOAT, None), "y").encode_to_vec());
        assert!(decoded.unwrap().unsupported_operators().is_empty());
    }

    #[test]
    fn decoded_weights_are_wiped_everywhere() {
        let weights = |name: &str| pb::TensorProto {
            name: name.into(),
            dims: vec![2],
            data_type: FLOAT,
            raw_data: vec![0xAA; 8],
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        let mut m = relu_model(value_info("x", FLOAT, fixed(&[2])), "y");
        let graph = m.graph.as_mut().unwrap();
        graph.initializer.push(weights("init"));
        graph.sparse_initializer.push(pb::SparseTensorProto {
            values: Some(weights("sparse")),
            ..Default::default()
        });
        let body = pb::GraphProto {
            initializer: vec![weights("sub")],
            ..Default::default()
        };
        graph.node.push(pb::NodeProto {
            attribute: vec![pb::AttributeProto {
                t: Some(weights("attr")),
                graphs: vec![body],
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut seen = 0;
        visit_tensors(&m, &mut |t| seen += usize::from(!t.raw_data.is_empty()));
        assert_eq!(seen, 4);
        wipe_weights(&mut m);
        visit_tensors(&m, &mut |t| {
            assert!(
                t.raw_data.is_empty() && t.float_data.is_empty(),
                "{} not wiped",
                t.name
            );
        });
    }

    #[test]
    fn a_tract_panic_is_an_error() {
        // The graph declares an output nothing produces: tract 0.23 indexes a map with it and panics.
        let m = relu_model(value_info("x", FLOAT, fixed(&[4])), "no_such_value");
        let err = load(&m).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::Panicked {
                    stage: Stage::Loading
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn input_declarations() {
        let err = load(&relu_model(value_info("x", STRING, fixed(&[4])), "y")).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::UnsupportedModelType {
                    role: TensorRole::Input,
                    ..
                }
            ),
            "{err}"
        );
        let err = load(&relu_model(value_info("x", FLOAT, None), "y")).unwrap_err();
        assert!(
            matches!(err, InferenceError::UnknownInputRank { ref name } if name == "x"),
            "{err}"
        );
        let err = load(&relu_model(value_info("x", 0, fixed(&[4])), "y")).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::Model {
                    stage: Stage::Loading,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unnamed_dimensions_get_their_own_symbols() {
        use dimension::Value::{DimParam, DimValue};
        let dims = vec![
            dim(Some(DimValue(-1))),
            dim(None),
            dim(Some(DimParam("?".into()))),
            dim(Some(DimValue(2))),
        ];
        let model = load(&relu_model(value_info("x", FLOAT, Some(dims)), "y")).unwrap();
        assert_eq!(model.planning(), Planning::Symbolic);
        assert_eq!(model.inputs()[0].shape, vec![-1, -1, -1, 2]);
        assert_eq!(model.outputs()[0].shape, vec![-1, -1, -1, 2]);
        for shape in [[1, 2, 3, 2], [3, 1, 2, 2]] {
            let out = model.run(vec![f32s(&shape)]).unwrap();
            assert_eq!(out[0].shape, shape.to_vec());
            let TensorData::Fp32(y) = &out[0].data else {
                panic!()
            };
            assert_eq!(&y[..5], &[0.0, 0.0, 0.0, 0.0, 1.0]);
        }
    }

    #[test]
    fn request_validation() {
        use dimension::Value::{DimParam, DimValue};
        let dims = vec![dim(Some(DimParam("N".into()))), dim(Some(DimValue(3)))];
        let model = load(&relu_model(value_info("x", FLOAT, Some(dims)), "y")).unwrap();
        let err = model.run(vec![]).unwrap_err();
        assert!(
            matches!(err, InferenceError::MissingInput { ref name } if name == "x"),
            "{err}"
        );
        let mut wrong = f32s(&[1, 3]);
        wrong.name = "X".into();
        let err = model.run(vec![wrong]).unwrap_err();
        assert!(
            matches!(err, InferenceError::UnknownInput { ref expected, .. } if expected == "x"),
            "{err}"
        );
        let err = model.run(vec![f32s(&[1, 3]), f32s(&[1, 3])]).unwrap_err();
        assert!(
            matches!(err, InferenceError::DuplicateInput { .. }),
            "{err}"
        );
        let err = model.run(vec![f32s(&[2, 4])]).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::DimMismatch {
                    axis: 1,
                    expected: 3,
                    got: 4,
                    ..
                }
            ),
            "{err}"
        );
        let err = model.run(vec![f32s(&[3])]).unwrap_err();
        assert!(
            matches!(err, InferenceError::RankMismatch { expected: 2, .. }),
            "{err}"
        );
        let mut short = f32s(&[2, 3]);
        short.shape = vec![3, 3];
        let err = model.run(vec![short]).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::ElementCount {
                    expected: 9,
                    got: 6,
                    ..
                }
            ),
            "{err}"
        );
        let mut huge = f32s(&[1, 3]);
        huge.shape = vec![usize::MAX, 3];
        let err = model.run(vec![huge]).unwrap_err();
        assert!(matches!(err, InferenceError::ShapeOverflow { .. }), "{err}");
        let mut liar = f32s(&[1, 3]);
        liar.datatype = Datatype::Int32;
        let err = model.run(vec![liar]).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::InconsistentDatatype {
                    declared: Datatype::Int32,
                    data: Datatype::Fp32,
                    ..
                }
            ),
            "{err}"
        );
        let ints = NamedTensor::new("x", vec![1, 3], TensorData::Int64(vec![1, 2, 3]));
        let err = model.run(vec![ints]).unwrap_err();
        assert!(
            matches!(err, InferenceError::DatatypeMismatch { .. }),
            "{err}"
        );
        // Empty batch is accepted when the model allows it.
        let out = model.run(vec![f32s(&[0, 3])]).unwrap();
        assert_eq!(out[0].shape, vec![0, 3]);
    }

    #[test]
    fn magika_plans_per_batch_size_in_a_bounded_cache() {
        let model = LoadedModel::load(&sample("magika/model.onnx")).unwrap();
        assert_eq!(model.planning(), Planning::PerShape);
        let meta = model.metadata();
        assert_eq!(
            meta.inputs,
            vec![TensorSpec {
                name: "bytes".into(),
                datatype: Datatype::Int32,
                shape: vec![-1, 2048]
            }]
        );
        assert_eq!(meta.outputs[0].datatype, Datatype::Fp32);
        assert_eq!(meta.outputs[0].shape, vec![-1, 214]);
        let row: Vec<i32> = (0..2048).map(|i| i * 7 % 257).collect();
        let mut first_row_scores = None;
        for batch in [1usize, 3, 1, 2, 5, 6, 7, 1] {
            let data = row.repeat(batch);
            let out = model
                .run(vec![NamedTensor::new(
                    "bytes",
                    vec![batch, 2048],
                    TensorData::Int32(data),
                )])
                .unwrap();
            assert_eq!(out[0].shape, vec![batch, 214]);
            let TensorData::Fp32(scores) = &out[0].data else {
                panic!()
            };
            // Same row, same scores, whatever the plan.
            let first = first_row_scores.get_or_insert_with(|| scores[..214].to_vec());
            for (a, b) in first.iter().zip(&scores[..214]) {
                assert!((a - b).abs() < 1e-6);
            }
            let Engine::PerShape(plans) = &model.engine else {
                panic!()
            };
            assert!(lock(&plans.cache).entries.len() <= PLAN_CACHE_CAPACITY);
        }
    }

    #[test]
    fn magika_empty_batch() {
        let model = LoadedModel::load(&sample("magika/model.onnx")).unwrap();
        let out = model
            .run(vec![NamedTensor::new(
                "bytes",
                vec![0, 2048],
                TensorData::Int32(vec![]),
            )])
            .unwrap();
        assert_eq!(out[0].shape, vec![0, 214]);
    }

    /// x: f32 [N] -> Reshape(x, Cast<i64>(Cast<i32>(Shape(x)))) -> Reshape(_, [1]) -> y.
    /// The shape round trip through int32 defeats symbolic typing (per-shape planning); the final reshape plans
    /// for N = 1 only.
    fn per_shape_n_equals_one_model() -> pb::ModelProto {
        let node = |op: &str, inputs: &[&str], output: &str, to: Option<i64>| pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| (*s).into()).collect(),
            output: vec![output.into()],
            attribute: to
                .map(|to| pb::AttributeProto {
                    name: "to".into(),
                    r#type: pb::attribute_proto::AttributeType::Int as i32,
                    i: to,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let input = value_info(
            "x",
            FLOAT,
            Some(vec![dim(Some(dimension::Value::DimParam("N".into())))]),
        );
        let mut m = relu_model(input, "y");
        let graph = m.graph.as_mut().unwrap();
        graph.node = vec![
            node("Shape", &["x"], "s", None),
            node("Cast", &["s"], "s32", Some(6)),
            node("Cast", &["s32"], "s64", Some(7)),
            node("Reshape", &["x", "s64"], "x2", None),
            node("Reshape", &["x2", "one"], "y", None),
        ];
        graph.initializer.push(pb::TensorProto {
            name: "one".into(),
            dims: vec![1],
            data_type: 7,
            int64_data: vec![1],
            ..Default::default()
        });
        m
    }

    #[test]
    fn per_shape_planning_failure_is_about_the_request() {
        let model = load(&per_shape_n_equals_one_model()).unwrap();
        assert_eq!(model.planning(), Planning::PerShape);
        // Typing fails at N = 13 and N = 64, so the size is not announced as fixed.
        assert_eq!(model.outputs()[0].shape, vec![-1]);
        let out = model.run(vec![f32s(&[1])]).unwrap();
        assert_eq!(out[0].data, TensorData::Fp32(vec![-3.0]));
        let err = model.run(vec![f32s(&[3])]).unwrap_err();
        assert!(
            matches!(
                err,
                InferenceError::Run {
                    stage: Stage::Optimizing,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn concurrent_requests() {
        let model = Arc::new(LoadedModel::load(&sample("mlp/model.onnx")).unwrap());
        let handles: Vec<_> = (1..=4)
            .map(|batch| {
                let model = Arc::clone(&model);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let x = TensorData::Fp32(vec![0.25; batch * 16]);
                        let out = model
                            .run(vec![NamedTensor::new("x", vec![batch, 16], x)])
                            .unwrap();
                        assert_eq!(out[0].shape, vec![batch, 4]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn tract_datum_types() {
        use DatumType as D;
        let plain = [
            D::Bool,
            D::U8,
            D::U16,
            D::U32,
            D::U64,
            D::I8,
            D::I16,
            D::I32,
            D::I64,
            D::F32,
            D::F64,
        ];
        // One datum type per datatype, in the same order; tract's symbolic integers leave as INT64.
        let mapped: Vec<_> = plain.iter().map(|dt| datatype_of(*dt)).collect();
        assert_eq!(mapped, Datatype::ALL.map(Some).to_vec());
        assert_eq!(datatype_of(D::TDim), Some(Datatype::Int64));
        assert_eq!(datatype_of(D::F16), None);
        assert_eq!(datatype_of(D::String), None);
        // Every datatype round-trips through a tract tensor.
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![1, 2]),
            TensorData::Uint16(vec![1, 2]),
            TensorData::Uint32(vec![1, 2]),
            TensorData::Uint64(vec![1, 2]),
            TensorData::Int8(vec![-1, 2]),
            TensorData::Int16(vec![-1, 2]),
            TensorData::Int32(vec![-1, 2]),
            TensorData::Int64(vec![-1, 2]),
            TensorData::Fp32(vec![-1.5, 2.0]),
            TensorData::Fp64(vec![-1.5, 2.0]),
        ];
        for (data, dt) in samples.iter().zip(plain) {
            let tensor = to_tensor(data, &[2, 1]).unwrap();
            assert_eq!(tensor.datum_type(), dt);
            assert_eq!(tensor.shape(), &[2, 1]);
            assert_eq!(&from_tensor(&tensor, data.datatype()).unwrap(), data);
        }
        let dims = tract_onnx::prelude::tensor1(&[TDim::Val(3), TDim::Val(-4)]);
        assert_eq!(
            from_tensor(&dims, Datatype::Int64).unwrap(),
            TensorData::Int64(vec![3, -4])
        );
    }

    #[test]
    fn names_and_debug() {
        let secret = TensorData::Fp32(vec![1234.5]);
        assert_eq!(format!("{secret:?}"), "TensorData::FP32(len = 1)");
        let spec = TensorSpec {
            name: "x".into(),
            datatype: Datatype::Int64,
            shape: vec![-1, 8],
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"name":"x","datatype":"INT64","shape":[-1,8]}"#
        );
    }
}

//! A loaded model: load, plan, check a request, estimate its cost, run it.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tract_onnx::prelude::{
    Framework, InferenceModel, InferenceModelExt, IntoRunnable, IntoTValue, Symbol, SymbolValues,
    TValue, TVec, Tensor, TypedRunnableModel,
};

use crate::convert::{from_tensor, to_tensor};
use crate::decoded::{DecodedModel, RefuseExternalData};
use crate::footprint::{self, Footprint};
pub use crate::planning::PLAN_CACHE_CAPACITY;
use crate::planning::{
    describe_outputs, describe_outputs_per_shape, fix_input_facts, guarded, lock, plan_for_shapes,
    symbol_shapes, DimSpec, InputSpec, PlanCache,
};
use crate::{Error, ModelMetadata, NamedTensor, Stage, TensorSpec, PLATFORM};

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
    plan_cached: Option<bool>,
}

impl PreparedRun {
    /// What the run will cost, from the plan: output sizes and the estimated peak memory.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// For a model planned per shape: whether the plan for these shapes came from the cache (`Some(true)`)
    /// or was made for this request (`Some(false)`); `None` for a model with one symbolic plan.
    pub fn plan_cached(&self) -> Option<bool> {
        self.plan_cached
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
pub(crate) fn shape_text(shape: &[usize]) -> String {
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
    pub(crate) engine: Engine,
    inputs: Vec<InputSpec>,
    metadata: ModelMetadata,
    footprints: Mutex<FootprintCache>,
}

/// Footprints kept at most ([`FootprintCache`]).
pub const FOOTPRINT_CACHE_CAPACITY: usize = 64;

/// Footprints already computed, by the request's input shapes (in model input order).
///
/// Why: the liveness sweep evaluates every tensor's symbolic shape of the plan; on MiniLM-L3 that is 1.8 ms,
/// a tenth of the run, paid again by every request of the same shapes (`docs/performance.md`). The footprint
/// is a pure function of the plan and the shapes (a per-shape plan is re-made the same way after eviction),
/// so a cached one is exact. Bounded: when full, it is emptied (a client cycling through shapes only gets the
/// uncached cost back, and the memory stays at most this many small entries).
#[derive(Default)]
struct FootprintCache(HashMap<Vec<Vec<usize>>, Footprint>);

pub(crate) enum Engine {
    Symbolic(Arc<TypedRunnableModel>),
    PerShape(Box<PerShapePlans>),
}

pub(crate) struct PerShapePlans {
    /// The model with its input facts fixed, not yet typed: each plan starts from a clone of it.
    pub(crate) template: InferenceModel,
    pub(crate) cache: Mutex<PlanCache>,
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
    pub fn load(onnx: &[u8]) -> Result<Self, Error> {
        Self::from_decoded(DecodedModel::decode(onnx)?)
    }

    /// [`LoadedModel::load`] after the decoding: refuse external data, translate, fix the input facts,
    /// optimize once, plan. The decoded protobuf is zeroized before this returns, on every path.
    pub fn from_decoded(model: DecodedModel) -> Result<Self, Error> {
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

    fn from_inference_model(mut model: InferenceModel) -> Result<Self, Error> {
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
                footprints: Mutex::default(),
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
            footprints: Mutex::default(),
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
    pub fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, Error> {
        let prepared = self.prepare(inputs, &RunLimits::default())?;
        self.run_prepared(prepared)
    }

    /// Whether [`Self::prepare`] for these inputs would only look things up: the plan (per-shape models)
    /// and the footprint for their shapes are cached. A caller may then prepare on the thread it is on
    /// instead of handing the work to an inference thread (a miss can take milliseconds: planning and
    /// estimating). Inputs that do not name every model input are "not cached": `prepare` reports those.
    pub fn prepare_is_cached(&self, inputs: &[NamedTensor]) -> bool {
        let shapes: Option<Vec<Vec<usize>>> = self
            .inputs
            .iter()
            .map(|spec| {
                inputs
                    .iter()
                    .find(|t| t.name == spec.name)
                    .map(|t| t.shape.clone())
            })
            .collect();
        let Some(shapes) = shapes else {
            return false;
        };
        let planned = match &self.engine {
            Engine::Symbolic(_) => true,
            Engine::PerShape(plans) => lock(&plans.cache).get(&shapes).is_some(),
        };
        planned
            && self
                .footprints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .contains_key(&shapes)
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
    ) -> Result<PreparedRun, Error> {
        let (tensors, bound) = self.validate(inputs)?;
        self.check_symbols(&bound, limits)?;
        let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
        let mut plan_cached = None;
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
                let cached = lock(cache).get(&shapes);
                plan_cached = Some(cached.is_some());
                let plan = match cached {
                    Some(plan) => plan,
                    None => {
                        // Planned outside the lock: other shapes keep being served meanwhile.
                        let plan = plan_for_shapes(template, &self.inputs, &shapes).map_err(
                            |e| match e {
                                // A plan that fails for these shapes is about this request, not the model.
                                Error::Model { stage, source } => Error::Run { stage, source },
                                other => other,
                            },
                        )?;
                        lock(cache).insert(shapes.clone(), Arc::clone(&plan));
                        plan
                    }
                };
                // The plan was made for these concrete shapes: no symbol is left to bind.
                (plan, SymbolValues::default())
            }
        };
        let known = self
            .footprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .get(&shapes)
            .cloned();
        let footprint = match known {
            Some(f) => f,
            None => {
                let f = footprint::footprint(&plan, &values);
                let mut cache = self
                    .footprints
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if cache.0.len() >= FOOTPRINT_CACHE_CAPACITY {
                    cache.0.clear();
                }
                cache.0.insert(shapes, f.clone());
                f
            }
        };
        for out in &footprint.outputs {
            if let Some(elements) = out.elements {
                if elements > limits.max_tensor_elements {
                    return Err(Error::OutputTooLarge {
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
            plan_cached,
        })
    }

    /// Runs a request checked by [`LoadedModel::prepare`] on this model. Returns every model output, in the
    /// model's order.
    pub fn run_prepared(&self, prepared: PreparedRun) -> Result<Vec<NamedTensor>, Error> {
        let PreparedRun { plan, tensors, .. } = prepared;
        let outputs = match catch_unwind(AssertUnwindSafe(|| plan.run(tensors))) {
            Ok(Ok(outputs)) => outputs,
            Ok(Err(source)) => {
                return Err(Error::Run {
                    stage: Stage::Running,
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Panicked {
                    stage: Stage::Running,
                })
            }
        };
        if outputs.len() != self.metadata.outputs.len() {
            return Err(Error::OutputCount {
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
                    Error::OutputConversion {
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

    /// The bounds on the request's symbols: their product ([`Error::SymbolVolume`]) and the batch.
    fn check_symbols(
        &self,
        bound: &HashMap<Symbol, (usize, usize)>,
        limits: &RunLimits,
    ) -> Result<(), Error> {
        let product = bound.values().fold(1u64, |acc, (value, _)| {
            acc.saturating_mul(u64::try_from(*value).unwrap_or(u64::MAX).max(1))
        });
        if product > limits.max_tensor_elements {
            return Err(Error::SymbolVolume {
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
                            return Err(Error::BatchTooLarge {
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
    ) -> Result<(TVec<TValue>, HashMap<Symbol, (usize, usize)>), Error> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        // symbol -> (value, index of the input that bound it)
        let mut bound: HashMap<Symbol, (usize, usize)> = HashMap::new();
        for tensor in inputs {
            let Some(ix) = self.inputs.iter().position(|spec| spec.name == tensor.name) else {
                return Err(Error::UnknownInput {
                    name: tensor.name,
                    expected: self.input_names(),
                });
            };
            let spec = &self.inputs[ix];
            if slots[ix].is_some() {
                return Err(Error::DuplicateInput { name: tensor.name });
            }
            if tensor.datatype != tensor.data.datatype() {
                return Err(Error::InconsistentDatatype {
                    input: tensor.name,
                    declared: tensor.datatype,
                    data: tensor.data.datatype(),
                });
            }
            if tensor.datatype != spec.datatype {
                return Err(Error::DatatypeMismatch {
                    input: tensor.name,
                    expected: spec.datatype,
                    got: tensor.datatype,
                });
            }
            if tensor.shape.len() != spec.dims.len() {
                return Err(Error::RankMismatch {
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
                return Err(Error::ShapeOverflow {
                    input: tensor.name,
                    shape: tensor.shape,
                });
            };
            if count != tensor.data.len() {
                return Err(Error::ElementCount {
                    input: tensor.name,
                    shape: tensor.shape,
                    expected: count,
                    got: tensor.data.len(),
                });
            }
            for (axis, (dim, &got)) in spec.dims.iter().zip(&tensor.shape).enumerate() {
                match dim {
                    DimSpec::Fixed(expected) if *expected != got => {
                        return Err(Error::DimMismatch {
                            input: tensor.name,
                            axis,
                            expected: *expected,
                            got,
                        });
                    }
                    DimSpec::Symbol(symbol) => match bound.get(symbol) {
                        Some(&(value, by)) if value != got => {
                            return Err(Error::SymbolMismatch {
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
            let built = to_tensor(&tensor.data, &tensor.shape).map_err(|source| Error::Run {
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
                    .ok_or_else(|| Error::MissingInput {
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

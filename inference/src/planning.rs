//! Typing, optimizing and planning with tract; describing outputs; containing tract's panics.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tract_onnx::prelude::{
    DatumType, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, OutletId, Symbol,
    SymbolValues, TDim, TractError, TractResult, TypedFact, TypedModel, TypedRunnableModel,
};
use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};

use crate::convert::datatype_of;
use crate::{Datatype, Error, Stage, TensorRole, TensorSpec};

/// Locks the plan cache. A panic while the lock was held cannot leave it inconsistent (entries are pushed
/// whole), so a poisoned lock is used as is.
pub(crate) fn lock(cache: &Mutex<PlanCache>) -> MutexGuard<'_, PlanCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Input shapes with every symbol at `value` (expressions evaluated accordingly).
pub(crate) fn symbol_shapes(
    template: &InferenceModel,
    inputs: &[InputSpec],
    value: u8,
) -> Result<Vec<Vec<usize>>, Error> {
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
                        .ok_or_else(|| Error::UnresolvedInputDim {
                            name: spec.name.clone(),
                            dim: e.to_string(),
                        }),
                })
                .collect()
        })
        .collect()
}

/// Optimizes and plans the template for concrete input shapes.
pub(crate) fn plan_for_shapes(
    template: &InferenceModel,
    inputs: &[InputSpec],
    shapes: &[Vec<usize>],
) -> Result<Arc<TypedRunnableModel>, Error> {
    guarded(Stage::Optimizing, || {
        let mut model = template.clone();
        for (ix, (spec, shape)) in inputs.iter().zip(shapes).enumerate() {
            model.set_input_fact(ix, InferenceFact::dt_shape(spec.datum_type, shape))?;
        }
        model.into_optimized()?.into_runnable()
    })
}

/// Runs a tract step, turning a panic into [`Error::Panicked`].
///
/// tract is written for trusted models: a malformed graph can reach an `unwrap`, an index out of range or an
/// `unimplemented!`. The model comes from the untrusted model owner, so a panic must not take the enclave down.
/// The values touched by a panicking step are dropped with it; nothing shared is left half-updated.
pub(crate) fn guarded<T>(stage: Stage, step: impl FnOnce() -> TractResult<T>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Model { stage, source }),
        Err(_) => Err(Error::Panicked { stage }),
    }
}

/// Gives every input a concrete datum type and a closed shape, inventing a symbol for each dimension the
/// ONNX file leaves unnamed (tract cannot type a graph whose input dimensions are unknown).
pub(crate) fn fix_input_facts(model: &mut InferenceModel) -> Result<Vec<InputSpec>, Error> {
    let outlets = model
        .input_outlets()
        .map_err(model_err(Stage::Loading))?
        .to_vec();
    let mut specs = vec![];
    for (ix, outlet) in outlets.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model.input_fact(ix).map_err(model_err(Stage::Loading))?;
        let Some(dt) = fact.datum_type.concretize() else {
            return Err(Error::UntypedInput { name });
        };
        let datatype = match datatype_of(dt) {
            Some(datatype) if dt != DatumType::TDim => datatype,
            _ => {
                return Err(Error::UnsupportedModelType {
                    role: TensorRole::Input,
                    name,
                    datum_type: format!("{dt:?}"),
                })
            }
        };
        if fact.shape.is_open() {
            return Err(Error::UnknownInputRank { name });
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
pub(crate) fn unnamed_dim(input: &str, axis: usize) -> String {
    let clean: String = input
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    format!("unnamed_{clean}_{axis}")
}

pub(crate) fn model_err(stage: Stage) -> impl Fn(TractError) -> Error {
    move |source| Error::Model { stage, source }
}

/// The output specs, read off the typed (not yet optimized) model, whose outlets carry the ONNX names.
pub(crate) fn describe_outputs(typed: &TypedModel) -> Result<Vec<TensorSpec>, Error> {
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
pub(crate) fn describe_outputs_per_shape(
    template: &InferenceModel,
    inputs: &[InputSpec],
    probe: &TypedRunnableModel,
) -> Result<Vec<TensorSpec>, Error> {
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

pub(crate) fn output_name<F, O>(
    model: &tract_onnx::prelude::Graph<F, O>,
    outlet: OutletId,
) -> String
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

pub(crate) fn output_datatype(name: &str, dt: DatumType) -> Result<Datatype, Error> {
    datatype_of(dt).ok_or_else(|| Error::UnsupportedModelType {
        role: TensorRole::Output,
        name: name.to_owned(),
        datum_type: format!("{dt:?}"),
    })
}

/// v2 shapes: a known size, or -1.
pub(crate) fn v2_shape<'a>(dims: impl Iterator<Item = &'a TDim>) -> Vec<i64> {
    dims.map(|d| d.as_i64().filter(|v| *v >= 0).unwrap_or(-1))
        .collect()
}

/// How one dimension of a model input is constrained.
#[derive(Debug, Clone)]
pub(crate) enum DimSpec {
    /// A fixed size.
    Fixed(usize),
    /// Bound per request; the same symbol must take the same value in every input of a request.
    Symbol(Symbol),
    /// An expression of symbols (rare in inputs): tract checks it while running.
    Expr(TDim),
}

#[derive(Debug, Clone)]
pub(crate) struct InputSpec {
    pub(crate) name: String,
    pub(crate) datatype: Datatype,
    /// tract's datum type of `datatype` (never `TDim`: such inputs are refused).
    pub(crate) datum_type: DatumType,
    pub(crate) dims: Vec<DimSpec>,
}

impl InputSpec {
    pub(crate) fn to_v2(&self) -> TensorSpec {
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

/// How many per-shape plans a `LoadedModel` in per-shape mode keeps (least recently used goes first).
///
/// Each plan holds its own optimized (packed) copy of the weights, so this bounds memory at about this many
/// times the model; it also bounds what a client can make the enclave keep by varying shapes.
pub const PLAN_CACHE_CAPACITY: usize = 4;

/// A small LRU of plans keyed by the input shapes, in model input order.
#[derive(Default)]
pub(crate) struct PlanCache {
    pub(crate) entries: Vec<CachedPlan>,
    clock: u64,
}

pub(crate) struct CachedPlan {
    shapes: Vec<Vec<usize>>,
    plan: Arc<TypedRunnableModel>,
    last_used: u64,
}

impl PlanCache {
    pub(crate) fn get(&mut self, shapes: &[Vec<usize>]) -> Option<Arc<TypedRunnableModel>> {
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

    pub(crate) fn insert(&mut self, shapes: Vec<Vec<usize>>, plan: Arc<TypedRunnableModel>) {
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

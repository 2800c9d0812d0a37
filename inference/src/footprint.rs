//! What one request will cost before it runs: the size of every output and an estimate of the peak memory of
//! the run, both read off the plan's facts with the request's symbol values.
//!
//! Why: a request is small on the wire but its run need not be. A batch of 2040 rows of Magika is 16 MB of
//! input and 8.8 GiB of activations; a shape with a zero dimension (`[268435456, 0]`) is 0 elements of input
//! yet binds a symbol to 2^28, and any output that grows with that symbol (Pad, Concat, a CLS token,
//! `ConstantOfShape(Shape(x))`) then allocates gigabytes. The enclave must refuse or queue such a request
//! *before* tract allocates, so the cost is computed from the plan, not observed.
//!
//! The estimate is the peak of a liveness sweep over the plan's evaluation order: a node's outputs are live
//! from the step that computes them to the last step that reads them (model outputs to the end); constants
//! (weights) are not counted, they are resident already. Operators' scratch space (matmul packing, im2col) is
//! not in the facts; [`SCRATCH_FACTOR`] covers it, calibrated on the sample models (`docs/performance.md`).
//! A dimension tract only learns while running (a `NonZero` count, a data-dependent `Range`) has no value
//! here: such a tensor counts as zero bytes and the estimate says it is incomplete.

use std::collections::HashMap;

use tract_onnx::prelude::{DatumType, SymbolValues, TDim, TypedFact, TypedRunnableModel};

/// Multiplier applied to the liveness peak to cover what the facts do not show (operators' internal scratch,
/// allocator overhead). Measured on release builds (`docs/performance.md`, "Memory admission"): a Magika run at
/// batch 256 grows the RSS by 0.98× the liveness figure, MiniLM-L3 at 8×128 and 4×512 by 0.5×; 1.5 leaves a
/// margin for models whose operators keep more scratch than these.
pub const SCRATCH_FACTOR: f64 = 1.5;

/// The concrete shape of one model output for one request, when the plan can tell it before running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSize {
    /// The output's position in the model's outputs.
    pub index: usize,
    /// The shape, or `None` if a dimension depends on values computed while running.
    pub shape: Option<Vec<u64>>,
    /// The element count (saturating), when the shape is known.
    pub elements: Option<u64>,
}

/// The cost of one request, computed from the plan before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Estimated peak bytes of the run (activations, inputs and outputs; weights excluded), scratch included.
    pub peak_bytes: u64,
    /// Every model output, in the model's order.
    pub outputs: Vec<OutputSize>,
    /// False when some tensor of the plan has a size only known while running (counted as zero).
    pub complete: bool,
}

/// Bytes of one tensor of `fact` with `values` bound, `None` when a dimension does not evaluate to a number
/// or the type has no fixed size (strings, blobs). Packed matmul operands and lazy im2col buffers carry their
/// real size in the fact's exotic part, which tract's `mem_size` adds.
fn tensor_bytes(fact: &TypedFact, values: &SymbolValues) -> Option<u64> {
    if matches!(fact.datum_type, DatumType::String | DatumType::Blob) {
        return None;
    }
    // The plain size, multiplied dimension by dimension with saturation: tract evaluates `mem_size` as one
    // i64 expression, which wraps for a shape the symbol bounds still allow (a cubic intermediate of a 2^24
    // symbol), and a wrapped size could read as small and admit a run that cannot fit. The exotic part
    // (packed operands) only ever adds to the plain size, so the larger of the two is taken.
    let plain =
        elements(fact.shape.iter(), values)?.saturating_mul(fact.datum_type.size_of() as u64);
    Some(match dim_value(&fact.mem_size(), values) {
        Some(with_exotic) if with_exotic > plain => with_exotic,
        _ => plain,
    })
}

/// The saturating product of the dimensions, `None` if one does not evaluate to a non-negative number.
fn elements<'a>(dims: impl Iterator<Item = &'a TDim>, values: &SymbolValues) -> Option<u64> {
    dims.map(|d| dim_value(d, values))
        .try_fold(1u64, |acc, d| d.map(|d| acc.saturating_mul(d)))
}

fn dim_value(dim: &TDim, values: &SymbolValues) -> Option<u64> {
    dim.eval(values)
        .to_i64()
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// Computes the [`Footprint`] of running `plan` with the symbols bound to `values` (empty for a plan made
/// for concrete shapes).
pub(crate) fn footprint(plan: &TypedRunnableModel, values: &SymbolValues) -> Footprint {
    let model = plan.model();
    let order = plan.order_without_consts();
    let position: HashMap<usize, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let outputs_nodes: Vec<usize> = model.outputs.iter().map(|o| o.node).collect();

    // Last step at which each node's outputs are read; model outputs stay alive to the end.
    let end = order.len();
    let mut last_use: HashMap<usize, usize> = HashMap::new();
    for (step, &node) in order.iter().enumerate() {
        for input in &model.node(node).inputs {
            if position.contains_key(&input.node) {
                let entry = last_use.entry(input.node).or_insert(step);
                *entry = (*entry).max(step);
            }
        }
    }
    for node in &outputs_nodes {
        last_use.insert(*node, end);
    }

    let mut complete = true;
    let mut node_bytes = vec![0u64; order.len()];
    for (step, &node) in order.iter().enumerate() {
        let mut bytes = 0u64;
        for output in &model.node(node).outputs {
            match tensor_bytes(&output.fact, values) {
                Some(b) => bytes = bytes.saturating_add(b),
                None => complete = false,
            }
        }
        node_bytes[step] = bytes;
    }

    // Which nodes are released after each step.
    let mut released_at: Vec<Vec<usize>> = vec![vec![]; end + 1];
    for (step, &node) in order.iter().enumerate() {
        let last = last_use.get(&node).copied().unwrap_or(step);
        released_at[last.min(end)].push(step);
    }
    let (mut live, mut peak) = (0u64, 0u64);
    for step in 0..end {
        live = live.saturating_add(node_bytes[step]);
        peak = peak.max(live);
        for &released in &released_at[step] {
            live = live.saturating_sub(node_bytes[released]);
        }
    }

    let outputs = model
        .outputs
        .iter()
        .enumerate()
        .map(|(index, outlet)| {
            let fact = &model.node(outlet.node).outputs[outlet.slot].fact;
            let shape: Option<Vec<u64>> = fact.shape.iter().map(|d| dim_value(d, values)).collect();
            let elements = elements(fact.shape.iter(), values);
            OutputSize {
                index,
                shape,
                elements,
            }
        })
        .collect();

    // f64 is exact far beyond any real memory size; the product saturates at u64::MAX.
    let peak_bytes = (peak as f64 * SCRATCH_FACTOR).min(u64::MAX as f64) as u64;
    Footprint {
        peak_bytes,
        outputs,
        complete,
    }
}

#[cfg(test)]
mod tests;

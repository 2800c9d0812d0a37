//! The decoder: a causal LM in the Hugging Face ONNX layout, run by tract with its KV cache kept inside
//! tract's state (tract-transformers' kv-cache transform), so a step feeds only the new tokens.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tract_onnx::prelude::{
    Framework, InferenceModelExt, IntoRunnable, IntoTValue, TValue, TVec, Tensor, TypedModel,
    TypedRunnableModel, TypedSimpleState,
};
use tract_onnx::tract_core::internal::{bail, format_err, DimLike};
use tract_onnx::tract_core::transform::get_transform;

use crate::decoded::{DecodedModel, RefuseExternalData};
use crate::planning::guarded;
use crate::{Error, Stage};

/// The inputs a decoder must have once tract holds its KV cache (every `past_key_values.*` input is gone).
const INPUT_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const POSITION_IDS: &str = "position_ids";
const LOGITS: &str = "logits";

/// A decoder LM loaded, optimized and planned once; each completion runs in its own [`Generation`].
pub struct Decoder {
    plan: Arc<TypedRunnableModel>,
    /// Position of `input_ids`, `attention_mask`, `position_ids` among the plan's inputs.
    order: [usize; 3],
    vocabulary: usize,
    kv_bytes_per_token: u64,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("vocabulary", &self.vocabulary)
            .field("kv_bytes_per_token", &self.kv_bytes_per_token)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// Loads a decoder from ONNX bytes: external data refused (before and while tract reads), the
    /// `past_key_values.N.{key,value}` / `present.N.*` pairs folded into tract's KV-cache state, optimized.
    /// A model without that layout, or whose logits are not `[batch, sequence, vocabulary]`, is refused.
    pub fn load(onnx: &[u8]) -> Result<Self, Error> {
        Self::from_decoded(DecodedModel::decode(onnx)?)
    }

    /// [`Decoder::load`] after decoding; the protobuf (plaintext weights) is wiped before this returns.
    pub fn from_decoded(model: DecodedModel) -> Result<Self, Error> {
        model.reject_external_data()?;
        let kv_bytes_per_token = kv_bytes_per_token(&model)?;
        let framework = tract_onnx::Onnx {
            provider: Arc::new(RefuseExternalData),
            ..tract_onnx::onnx()
        };
        let inference = guarded(Stage::Loading, || framework.model_for_proto_model(&model.0))?;
        drop(model);
        let mut typed = guarded(Stage::Analysing, || {
            inference.into_typed()?.into_decluttered()
        })?;
        guarded(Stage::Optimizing, || {
            let transform = get_transform("transformers_detect_all")?
                .ok_or_else(|| format_err!("tract-transformers is not linked"))?;
            transform.transform(&mut typed)
        })?;
        let order = input_order(&typed)?;
        let vocabulary = vocabulary(&typed)?;
        let plan = guarded(Stage::Optimizing, || {
            typed.into_optimized()?.into_runnable()
        })?;
        Ok(Decoder {
            plan,
            order,
            vocabulary,
            kv_bytes_per_token,
        })
    }

    /// Entries of the logits: the vocabulary size the tokenizer must agree with.
    pub fn vocabulary(&self) -> usize {
        self.vocabulary
    }

    /// Bytes of KV cache one token of context holds (every layer's key and value, f32): what the memory
    /// budget divides to bound a completion's context.
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.kv_bytes_per_token
    }

    /// A new completion with an empty KV cache.
    pub fn start(&self) -> Result<Generation, Error> {
        let state = guarded(Stage::Running, || TypedSimpleState::new(&self.plan))?;
        Ok(Generation {
            state,
            order: self.order,
            vocabulary: self.vocabulary,
            past: 0,
        })
    }
}

/// One completion's state: its KV cache, inside tract. Holds the conversation's keys and values
/// (confidential): its `Debug` shows only the length.
pub struct Generation {
    state: TypedSimpleState,
    order: [usize; 3],
    vocabulary: usize,
    past: usize,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("tokens", &self.past)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Tokens in the KV cache so far.
    pub fn len(&self) -> usize {
        self.past
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.past == 0
    }

    /// Feeds `ids` (the prompt, then one sampled token at a time) and returns the logits of the last one.
    /// A tract error or panic ends this generation (the state may be half-updated): the caller drops it.
    pub fn feed(&mut self, ids: &[u32]) -> Result<Vec<f32>, Error> {
        if ids.is_empty() {
            return Err(Error::Prompt("nothing to feed: no token ids".into()));
        }
        let n = ids.len();
        let total = self.past + n;
        let as_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let input_ids: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
        let positions: Vec<i64> = (self.past..total).map(as_i64).collect();
        let mask = vec![1i64; total];
        let mut inputs: [Option<TValue>; 3] = [None, None, None];
        inputs[self.order[0]] = Some(tensor(&[1, n], input_ids)?);
        inputs[self.order[1]] = Some(tensor(&[1, total], mask)?);
        inputs[self.order[2]] = Some(tensor(&[1, n], positions)?);
        let inputs: TVec<TValue> = inputs.into_iter().flatten().collect();
        let vocabulary = self.vocabulary;
        let state = &mut self.state;
        let logits = match catch_unwind(AssertUnwindSafe(|| {
            let outputs = state.run(inputs)?;
            let logits = outputs[0].to_plain_array_view::<f32>()?;
            let flat = logits
                .as_slice()
                .ok_or_else(|| format_err!("logits are not contiguous"))?;
            if flat.len() != n * vocabulary {
                bail!(
                    "logits hold {} values, expected {n} × {vocabulary}",
                    flat.len()
                );
            }
            Ok(flat[(n - 1) * vocabulary..].to_vec())
        })) {
            Ok(Ok(logits)) => logits,
            Ok(Err(source)) => {
                return Err(Error::Model {
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
        self.past = total;
        Ok(logits)
    }
}

fn tensor(shape: &[usize], values: Vec<i64>) -> Result<TValue, Error> {
    guarded(Stage::Running, || {
        Ok(Tensor::from_shape(shape, &values)?.into_tvalue())
    })
}

/// Where `input_ids`, `attention_mask` and `position_ids` are among the inputs tract kept; anything else
/// left means the KV-cache transform did not fold a past input, which this engine does not drive.
fn input_order(model: &TypedModel) -> Result<[usize; 3], Error> {
    let names: Vec<&str> = model
        .inputs
        .iter()
        .map(|o| model.node(o.node).name.as_str())
        .collect();
    let find = |want: &str| names.iter().position(|n| *n == want);
    match (find(INPUT_IDS), find(ATTENTION_MASK), find(POSITION_IDS)) {
        (Some(a), Some(b), Some(c)) if names.len() == 3 => Ok([a, b, c]),
        _ => Err(Error::NotADecoder(format!(
            "after folding the KV cache, the inputs must be exactly {INPUT_IDS}, {ATTENTION_MASK} and \
             {POSITION_IDS}; found {} ({})",
            names.len(),
            names.iter().take(8).copied().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The vocabulary: the last dimension of the first output, `logits` `[batch, sequence, vocabulary]`.
fn vocabulary(model: &TypedModel) -> Result<usize, Error> {
    let outlet = model
        .outputs
        .first()
        .ok_or_else(|| Error::NotADecoder("the model has no output".into()))?;
    let name = model.node(outlet.node).name.clone();
    let fact = model.outlet_fact(*outlet).map_err(|source| Error::Model {
        stage: Stage::Analysing,
        source,
    })?;
    let shape = fact.shape.to_tvec();
    let vocab = (shape.len() == 3)
        .then(|| shape[2].to_usize().ok())
        .flatten()
        .filter(|&v| v > 0);
    match vocab {
        Some(v) if model.outputs.len() == 1 => Ok(v),
        _ => Err(Error::NotADecoder(format!(
            "the only output must be `{LOGITS}` [batch, sequence, vocabulary]; found {} output(s), the first \
             `{name}` of shape {:?}",
            model.outputs.len(),
            shape
        ))),
    }
}

/// KV-cache bytes per token of context, from the declared `past_key_values.*` inputs: each is
/// `[batch, heads, past, head_dim]` f32, so a token holds `heads × head_dim × 4` bytes per input.
fn kv_bytes_per_token(model: &DecodedModel) -> Result<u64, Error> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    let graph = model
        .proto()
        .graph
        .as_ref()
        .ok_or_else(|| Error::NotADecoder("the model has no graph".into()))?;
    let mut total = 0u64;
    let mut pasts = 0;
    for input in &graph.input {
        if !input.name.starts_with("past_key_values.") {
            continue;
        }
        pasts += 1;
        let dims: Vec<Option<u64>> = input
            .r#type
            .as_ref()
            .and_then(|t| t.value.as_ref())
            .and_then(|tract_onnx::pb::type_proto::Value::TensorType(t)| t.shape.as_ref())
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(Value::DimValue(v)) => u64::try_from(*v).ok(),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match dims.as_slice() {
            [_, Some(heads), _, Some(head_dim)] => {
                total = total.saturating_add(heads.saturating_mul(*head_dim).saturating_mul(4));
            }
            _ => {
                return Err(Error::NotADecoder(format!(
                "input `{}` is not [batch, heads, past, head_dim] with fixed heads and head_dim",
                input.name
            )))
            }
        }
    }
    if pasts == 0 {
        return Err(Error::NotADecoder(
            "the model has no past_key_values.* inputs (not a decoder with a KV cache)".into(),
        ));
    }
    Ok(total)
}

//! Model checks before sealing: a model owner should find out that tract cannot run a model when they
//! seal it, not when an enclave fails to load it after the key was released.
//!
//! In order, each with its own error:
//! 1. the bytes decode as an ONNX `ModelProto` (protobuf, via prost) with a graph;
//! 2. no tensor keeps its data outside the file (`data_location = EXTERNAL` or `external_data`): the
//!    enclave gets one sealed blob and nothing else, so external data could never be found there
//!    (and the enclave's loader refuses it anyway);
//! 3. every operator, in the main graph and in every subgraph (`If`, `Loop`, `Scan` bodies), is one
//!    tract's ONNX front end knows; the unknown ones are listed by name;
//! 4. tract builds the model and optimises it (`into_optimized`), which is what the enclave does.
//!
//! The model comes from the model owner (this is their own tool), but the checks still treat it as
//! arbitrary bytes: decoding is bounded by the file and never panics.

use std::collections::BTreeSet;
use std::fmt;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{DimFact, Factoid, ShapeFactoid};

/// `TensorProto.DataLocation.EXTERNAL` (onnx.proto).
const DATA_LOCATION_EXTERNAL: i32 = 1;

/// Why a model cannot be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelCheckError {
    /// The bytes are not an ONNX protobuf.
    #[error("not an ONNX model: the file does not decode as an ONNX ModelProto ({reason})")]
    NotOnnx {
        /// The protobuf decoder's message.
        reason: String,
    },
    /// The file decodes, but holds no graph (e.g. an empty file, or another protobuf).
    #[error("not an ONNX model: the ModelProto has no graph")]
    NoGraph,
    /// A tensor's data lives in another file.
    #[error("the model keeps tensor {tensor:?} in external data ({location}); Cloister seals one self-contained file: re-export the model with the weights inside it (e.g. onnx.save_model(model, path, save_as_external_data=False))")]
    ExternalData {
        /// The tensor's name.
        tensor: String,
        /// The `location` entry, if any.
        location: String,
    },
    /// Operators tract does not implement.
    #[error("tract cannot run this model: unsupported operator{} {}", if ops.len() == 1 { "" } else { "s" }, OpList(ops))]
    UnsupportedOperators {
        /// `op_type`, prefixed by `domain:` when the domain is not the default one, sorted.
        ops: Vec<String>,
    },
    /// tract could not build the model.
    #[error("tract cannot load this model: {reason}")]
    Load {
        /// tract's error chain.
        reason: String,
    },
    /// tract built the model but could not type or optimise it (e.g. unresolved shapes or types).
    #[error("tract cannot optimise this model: {reason}")]
    Optimize {
        /// tract's error chain.
        reason: String,
    },
}

struct OpList<'a>(&'a [String]);

impl fmt::Display for OpList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// What the checks learnt about a model that passed them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    /// Operator set version of the default domain (0 if absent).
    pub opset: i64,
    /// Number of nodes in the main graph.
    pub nodes: usize,
    /// Names of the graph inputs (initializers excluded).
    pub inputs: Vec<String>,
    /// Names of the graph outputs.
    pub outputs: Vec<String>,
    /// How tract can plan the model (as the enclave will).
    pub planning: Planning,
}

/// How tract can plan a model, mirroring the enclave's loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Planning {
    /// One plan, optimised with symbolic input dimensions (batch, sequence, ...).
    Symbolic,
    /// tract cannot type the graph with symbolic dimensions (a shape computed from an input shape
    /// through an op it does not follow): the enclave optimises one plan per set of input shapes.
    PerShape,
}

impl fmt::Display for Planning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Planning::Symbolic => "one plan with symbolic input dimensions",
            Planning::PerShape => "one plan per input shape",
        })
    }
}

/// Runs every check on the bytes of an ONNX model.
pub fn check_model(bytes: &[u8]) -> Result<ModelSummary, ModelCheckError> {
    let proto = pb::ModelProto::decode(bytes).map_err(|e| ModelCheckError::NotOnnx {
        reason: e.to_string(),
    })?;
    let graph = proto.graph.as_ref().ok_or(ModelCheckError::NoGraph)?;
    if graph.node.is_empty() && graph.output.is_empty() {
        // An empty ModelProto decodes from almost anything short (protobuf has no magic): a graph
        // with neither nodes nor outputs is not a model.
        return Err(ModelCheckError::NoGraph);
    }
    find_external_data(graph)?;

    let framework = onnx();
    let mut unsupported = BTreeSet::new();
    collect_unknown_ops(graph, &framework, &mut unsupported);
    if !unsupported.is_empty() {
        return Err(ModelCheckError::UnsupportedOperators {
            ops: unsupported.into_iter().collect(),
        });
    }

    let planning = load_and_optimize(&framework, &proto)?;

    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(ModelSummary {
        opset: proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version),
        nodes: graph.node.len(),
        inputs: graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .collect(),
        outputs: graph.output.iter().map(|o| o.name.clone()).collect(),
        planning,
    })
}

/// Loads and optimises the model the way the enclave does (`enclave/src/inference.rs`): first with
/// symbolic input dimensions (an unnamed one gets a symbol of its own); if tract cannot type the graph
/// symbolically, with every symbol set to 1, which is the plan the enclave builds at load time.
fn load_and_optimize(
    framework: &tract_onnx::Onnx,
    proto: &pb::ModelProto,
) -> Result<Planning, ModelCheckError> {
    let load_error = |reason| ModelCheckError::Load { reason };
    let mut model = guarded(|| framework.model_for_proto_model(proto)).map_err(load_error)?;
    let inputs = close_input_facts(&mut model).map_err(load_error)?;
    let symbolic = match guarded(|| model.clone().into_optimized()) {
        Ok(_) => return Ok(Planning::Symbolic),
        Err(reason) => reason,
    };
    let mut values = SymbolValues::default();
    for symbol in model.symbols.all_symbols() {
        values.set(&symbol, 1);
    }
    for (ix, (dt, dims)) in inputs.iter().enumerate() {
        let shape: Vec<usize> = dims
            .iter()
            .map(|d| {
                d.eval(&values)
                    .to_i64()
                    .ok()
                    .and_then(|v| usize::try_from(v).ok())
                    .unwrap_or(1)
            })
            .collect();
        model
            .set_input_fact(ix, InferenceFact::dt_shape(*dt, shape))
            .map_err(|e| load_error(chain(&e)))?;
    }
    match guarded(|| model.into_optimized()) {
        Ok(_) => Ok(Planning::PerShape),
        Err(reason) => Err(ModelCheckError::Optimize {
            reason: format!("{reason} (with symbolic input dimensions: {symbolic})"),
        }),
    }
}

/// Gives every input a concrete datum type and a closed shape (a fresh symbol for each dimension the
/// file leaves unnamed); returns them.
fn close_input_facts(model: &mut InferenceModel) -> Result<Vec<(DatumType, Vec<TDim>)>, String> {
    let count = model.input_outlets().map_err(|e| chain(&e))?.len();
    let mut out = Vec::with_capacity(count);
    for ix in 0..count {
        let name = model
            .input_outlets()
            .ok()
            .and_then(|o| o.get(ix).map(|o| model.node(o.node).name.clone()))
            .unwrap_or_default();
        let fact = model.input_fact(ix).map_err(|e| chain(&e))?.clone();
        let dt = fact
            .datum_type
            .concretize()
            .ok_or_else(|| format!("input {name:?} has no element type"))?;
        if fact.shape.is_open() {
            return Err(format!("input {name:?} has no known rank"));
        }
        let dims: Vec<TDim> = fact
            .shape
            .dims()
            .enumerate()
            .map(|(axis, d)| {
                d.concretize().unwrap_or_else(|| {
                    TDim::Sym(
                        model
                            .symbols
                            .new_with_prefix(&format!("unnamed_{ix}_{axis}")),
                    )
                })
            })
            .collect();
        let closed = InferenceFact::dt_shape(
            dt,
            ShapeFactoid::closed(dims.iter().cloned().map(DimFact::from).collect()),
        );
        model.set_input_fact(ix, closed).map_err(|e| chain(&e))?;
        out.push((dt, dims));
    }
    Ok(out)
}

/// Runs a tract step; an error or a panic (tract is written for trusted models) becomes a message.
fn guarded<T>(step: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(chain(&e)),
        Err(_) => Err("tract panicked on this model".to_owned()),
    }
}

/// The error and its causes, `: `-separated (tract's errors are anyhow chains).
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn check_tensor(t: &pb::TensorProto) -> Result<(), ModelCheckError> {
    if t.data_location == Some(DATA_LOCATION_EXTERNAL) || !t.external_data.is_empty() {
        let location = t
            .external_data
            .iter()
            .find(|kv| kv.key == "location")
            .map_or_else(
                || "no location given".to_owned(),
                |kv| format!("location {:?}", kv.value),
            );
        return Err(ModelCheckError::ExternalData {
            tensor: t.name.clone(),
            location,
        });
    }
    Ok(())
}

fn check_sparse(s: &pb::SparseTensorProto) -> Result<(), ModelCheckError> {
    s.values
        .iter()
        .chain(s.indices.iter())
        .try_for_each(check_tensor)
}

/// Every tensor of the graph and of its subgraphs: initializers and tensor-valued attributes.
fn find_external_data(graph: &pb::GraphProto) -> Result<(), ModelCheckError> {
    graph.initializer.iter().try_for_each(check_tensor)?;
    graph.sparse_initializer.iter().try_for_each(check_sparse)?;
    for node in &graph.node {
        for attr in &node.attribute {
            attr.t
                .iter()
                .chain(attr.tensors.iter())
                .try_for_each(check_tensor)?;
            attr.sparse_tensor
                .iter()
                .chain(attr.sparse_tensors.iter())
                .try_for_each(check_sparse)?;
            attr.g
                .iter()
                .chain(attr.graphs.iter())
                .try_for_each(find_external_data)?;
        }
    }
    Ok(())
}

/// Operators of `graph` and its subgraphs that tract's ONNX front end has no builder for. tract
/// would otherwise insert a placeholder and fail later with a less direct message.
fn collect_unknown_ops(
    graph: &pb::GraphProto,
    onnx: &tract_onnx::Onnx,
    out: &mut BTreeSet<String>,
) {
    for node in &graph.node {
        if !onnx.op_register.0.contains_key(&node.op_type) {
            let name = if node.domain.is_empty() || node.domain == "ai.onnx" {
                node.op_type.clone()
            } else {
                format!("{}:{}", node.domain, node.op_type)
            };
            out.insert(name);
        }
        for attr in &node.attribute {
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                collect_unknown_ops(g, onnx, out);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn value_info(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1, // FLOAT
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(dimension::Value::DimValue(*d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// y = Relu(x) or another single-input operator.
    fn model(op: &str, domain: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: vec![pb::NodeProto {
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    op_type: op.into(),
                    domain: domain.into(),
                    ..Default::default()
                }],
                input: vec![value_info("x", &[1, 4])],
                output: vec![value_info("y", &[1, 4])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_supported_model() {
        let s = check_model(&model("Relu", "").encode_to_vec()).unwrap();
        assert_eq!(s.inputs, ["x"]);
        assert_eq!(s.outputs, ["y"]);
        assert_eq!(s.opset, 13);
    }

    #[test]
    fn names_unsupported_operators() {
        let e = check_model(&model("FrobnicateV9", "").encode_to_vec()).unwrap_err();
        assert!(
            e.to_string().contains("unsupported operator FrobnicateV9"),
            "{e}"
        );
        let e = check_model(&model("FusedMatMul", "com.microsoft").encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("com.microsoft:FusedMatMul"), "{e}");
    }

    #[test]
    fn refuses_garbage_and_external_data() {
        assert!(matches!(
            check_model(b"\xff\xff\xff\xffnot onnx"),
            Err(ModelCheckError::NotOnnx { .. })
        ));
        assert!(matches!(check_model(b""), Err(ModelCheckError::NoGraph)));
        let mut m = model("Relu", "");
        m.graph.as_mut().unwrap().initializer.push(pb::TensorProto {
            name: "w".into(),
            data_location: Some(DATA_LOCATION_EXTERNAL),
            external_data: vec![pb::StringStringEntryProto {
                key: "location".into(),
                value: "weights.bin".into(),
            }],
            ..Default::default()
        });
        let e = check_model(&m.encode_to_vec()).unwrap_err();
        assert!(matches!(e, ModelCheckError::ExternalData { .. }), "{e}");
        assert!(e.to_string().contains("weights.bin"), "{e}");
    }
}

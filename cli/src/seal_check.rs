//! Model checks before sealing: a model owner should find out that tract cannot run a model when they
//! seal it, not when an enclave fails to load it after the key was released.
//!
//! The checks run the enclave's own loader (crate `cloister-inference`). In order, each with its own error:
//! 1. the bytes decode as an ONNX `ModelProto` (protobuf, via prost) with a graph;
//! 2. no tensor keeps its data outside the file (`data_location = EXTERNAL` or `external_data`): the
//!    enclave gets one sealed blob and nothing else, so external data could never be found there
//!    (and the enclave's loader refuses it anyway);
//! 3. every operator, in the main graph and in every subgraph (`If`, `Loop`, `Scan` bodies), is one
//!    tract's ONNX front end knows; the unknown ones are listed by name;
//! 4. the model loads, optimises and plans exactly as in the enclave ([`LoadedModel::from_decoded`]).
//!
//! The model comes from the model owner (this is their own tool), but the checks still treat it as
//! arbitrary bytes: decoding is bounded by the file and never panics.

use std::collections::BTreeSet;
use std::fmt;

use cloister_inference::{DecodedModel, Error as InferenceError, LoadedModel, Stage, TensorRole};

pub use cloister_inference::Planning;

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
    /// How the enclave plans the model.
    pub planning: Planning,
}

/// Runs every check on the bytes of an ONNX model.
pub fn check_model(bytes: &[u8]) -> Result<ModelSummary, ModelCheckError> {
    let model =
        DecodedModel::decode(bytes).map_err(|e| ModelCheckError::NotOnnx { reason: reason(&e) })?;
    let (opset, nodes, inputs, outputs) = {
        let proto = model.proto();
        let graph = proto.graph.as_ref().ok_or(ModelCheckError::NoGraph)?;
        if graph.node.is_empty() && graph.output.is_empty() {
            // An empty ModelProto decodes from almost anything short (protobuf has no magic): a graph
            // with neither nodes nor outputs is not a model.
            return Err(ModelCheckError::NoGraph);
        }
        let initializers: BTreeSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        (
            proto
                .opset_import
                .iter()
                .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
                .map_or(0, |o| o.version),
            graph.node.len(),
            graph
                .input
                .iter()
                .filter(|i| !initializers.contains(i.name.as_str()))
                .map(|i| i.name.clone())
                .collect(),
            graph.output.iter().map(|o| o.name.clone()).collect(),
        )
    };

    model.reject_external_data().map_err(|e| match e {
        InferenceError::ExternalData { tensor, location } => ModelCheckError::ExternalData {
            tensor,
            location: location.map_or_else(
                || "no location given".to_owned(),
                |l| format!("location {l:?}"),
            ),
        },
        other => load_error(&other),
    })?;

    let ops = model.unsupported_operators();
    if !ops.is_empty() {
        return Err(ModelCheckError::UnsupportedOperators { ops });
    }

    let planning = LoadedModel::from_decoded(model)
        .map_err(|e| load_error(&e))?
        .planning();
    Ok(ModelSummary {
        opset,
        nodes,
        inputs,
        outputs,
        planning,
    })
}

/// The loader failed: on the model's construction or its input declarations ([`ModelCheckError::Load`]),
/// or while typing and optimising it ([`ModelCheckError::Optimize`]).
fn load_error(e: &InferenceError) -> ModelCheckError {
    let reason = reason(e);
    match e {
        InferenceError::Model {
            stage: Stage::Analysing | Stage::Optimizing,
            ..
        }
        | InferenceError::Panicked {
            stage: Stage::Analysing | Stage::Optimizing,
        }
        | InferenceError::UnsupportedModelType {
            role: TensorRole::Output,
            ..
        } => ModelCheckError::Optimize { reason },
        _ => ModelCheckError::Load { reason },
    }
}

/// The loader's message; for a tract failure, tract's error and its causes, `: `-separated, without the
/// loader's own prefix (the [`ModelCheckError`] message says what failed).
fn reason(e: &InferenceError) -> String {
    match e {
        InferenceError::ModelDecode(source) => source.to_string(),
        InferenceError::Model { source, .. } => source
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": "),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use prost::Message;
    use tract_onnx::pb;

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
            data_location: Some(pb::tensor_proto::DataLocation::External as i32),
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

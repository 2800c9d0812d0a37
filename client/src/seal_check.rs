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

    let onnx = tract_onnx::onnx();
    let mut unsupported = BTreeSet::new();
    collect_unknown_ops(graph, &onnx, &mut unsupported);
    if !unsupported.is_empty() {
        return Err(ModelCheckError::UnsupportedOperators {
            ops: unsupported.into_iter().collect(),
        });
    }

    let model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| ModelCheckError::Load {
            reason: chain(&e),
        })?;
    model
        .into_optimized()
        .map_err(|e| ModelCheckError::Optimize {
            reason: chain(&e),
        })?;

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
    })
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
    s.values.iter().chain(s.indices.iter()).try_for_each(check_tensor)
}

/// Every tensor of the graph and of its subgraphs: initializers and tensor-valued attributes.
fn find_external_data(graph: &pb::GraphProto) -> Result<(), ModelCheckError> {
    graph.initializer.iter().try_for_each(check_tensor)?;
    graph.sparse_initializer.iter().try_for_each(check_sparse)?;
    for node in &graph.node {
        for attr in &node.attribute {
            attr.t.iter().chain(attr.tensors.iter()).try_for_each(check_tensor)?;
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
fn collect_unknown_ops(graph: &pb::GraphProto, onnx: &tract_onnx::Onnx, out: &mut BTreeSet<String>) {
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
        assert!(e.to_string().contains("unsupported operator FrobnicateV9"), "{e}");
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

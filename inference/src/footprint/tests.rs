//! Request costs read off the plan, and the bounds `LoadedModel::prepare` applies before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

use crate::{Error as InferenceError, LoadedModel, NamedTensor, RunLimits, TensorData};

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn input(name: &str, dims: &[&str]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimParam((*d).into())),
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

fn output(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    }
}

fn model(nodes: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> LoadedModel {
    let m = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "g".into(),
            node: nodes,
            initializer,
            input: vec![input("x", &["N", "M"])],
            output: vec![output("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    LoadedModel::load(&m.encode_to_vec()).unwrap()
}

fn node(op: &str, inputs: &[&str], out: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| (*s).into()).collect(),
        output: vec![out.into()],
        attribute,
        ..Default::default()
    }
}

/// `y = Pad(x, [0, 1, 0, 1])`: x [N, M] → y [N, M + 2]. Its output grows with N even when M is 0: the
/// shape of issue 9 (`[268435456, 0]`, no input element) would make it 2^29 floats.
fn pad_model() -> LoadedModel {
    let pads = pb::TensorProto {
        name: "pads".into(),
        dims: vec![4],
        data_type: INT64,
        int64_data: vec![0, 1, 0, 1],
        ..Default::default()
    };
    model(vec![node("Pad", &["x", "pads"], "y", vec![])], vec![pads])
}

/// `y = x · xᵀ`: x [N, M] → y [N, N], quadratic in a symbol.
fn gram_model() -> LoadedModel {
    model(
        vec![
            node("Transpose", &["x"], "xt", vec![]),
            node("MatMul", &["x", "xt"], "y", vec![]),
        ],
        vec![],
    )
}

fn x(shape: [usize; 2]) -> Vec<NamedTensor> {
    vec![NamedTensor::new(
        "x",
        shape.to_vec(),
        TensorData::Fp32(vec![0.25; shape[0] * shape[1]]),
    )]
}

fn limits(max_tensor_elements: u64) -> RunLimits {
    RunLimits {
        max_tensor_elements,
        max_batch: None,
    }
}

#[test]
fn a_zero_sized_dimension_does_not_lift_the_bound_on_symbols() {
    let m = pad_model();
    assert_eq!(m.planning(), crate::Planning::Symbolic);
    let err = m
        .prepare(x([268_435_456, 0]), &RunLimits::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            InferenceError::SymbolVolume {
                product: 268_435_456,
                ..
            }
        ),
        "{err}"
    );
    // The message is short: no shape vector of millions of entries.
    assert!(err.to_string().len() < 200, "{err}");
    // An empty batch is fine, and so is any shape within the bound.
    m.prepare(x([0, 5]), &RunLimits::default()).unwrap();
    let ok = m.run(x([4, 0])).unwrap();
    assert_eq!(ok[0].shape, vec![4, 2]);
}

#[test]
fn outputs_are_bounded_before_running() {
    let m = gram_model();
    // 50 × 0 input: the symbols multiply to 50, under 100; the output would be 50 × 50.
    let err = m.prepare(x([50, 0]), &limits(100)).unwrap_err();
    assert!(
        matches!(
            err,
            InferenceError::OutputTooLarge {
                elements: 2500,
                limit: 100,
                ..
            }
        ),
        "{err}"
    );
    let ok = m.prepare(x([10, 1]), &limits(100)).unwrap();
    assert_eq!(ok.footprint().outputs[0].shape, Some(vec![10, 10]));
    assert_eq!(m.run_prepared(ok).unwrap()[0].shape, vec![10, 10]);
}

#[test]
fn the_batch_is_bounded_per_model() {
    let m = pad_model();
    let bounded = RunLimits {
        max_batch: Some(8),
        ..RunLimits::default()
    };
    m.prepare(x([8, 3]), &bounded).unwrap();
    let err = m.prepare(x([9, 3]), &bounded).unwrap_err();
    assert!(
        matches!(
            err,
            InferenceError::BatchTooLarge {
                got: 9,
                limit: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_estimate_follows_the_shapes_and_counts_every_live_tensor() {
    let m = gram_model();
    let small = m.prepare(x([10, 4]), &RunLimits::default()).unwrap();
    let large = m.prepare(x([100, 4]), &RunLimits::default()).unwrap();
    let (s, l) = (small.footprint(), large.footprint());
    assert!(s.complete && l.complete);
    // At least input, its transpose and the output, each 4 bytes per element, times the scratch factor.
    let floor = |n: u64| ((n * 4 + n * 4 + n * n) * 4) as f64 * super::SCRATCH_FACTOR;
    assert!(s.peak_bytes as f64 >= floor(10), "{s:?}");
    assert!(l.peak_bytes as f64 >= floor(100), "{l:?}");
    // Quadratic growth is seen (the output dominates once the packing panels stop padding).
    assert!(l.peak_bytes > 10 * s.peak_bytes, "{s:?} {l:?}");
}

#[test]
fn per_shape_models_are_estimated_from_their_plan() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/sample/magika/model.onnx");
    let m = LoadedModel::load(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(m.planning(), crate::Planning::PerShape);
    let rows = |n: usize| {
        vec![NamedTensor::new(
            "bytes",
            vec![n, 2048],
            TensorData::Int32(vec![0; n * 2048]),
        )]
    };
    let one = m.prepare(rows(1), &RunLimits::default()).unwrap();
    let four = m.prepare(rows(4), &RunLimits::default()).unwrap();
    let (a, b) = (one.footprint().peak_bytes, four.footprint().peak_bytes);
    assert!(one.footprint().complete);
    // Magika's activations are about 4 MiB per row, linear in the batch.
    assert!(a > 3 << 20, "{a}");
    assert!(b > 3 * a && b < 6 * a, "{a} {b}");
    assert_eq!(
        four.footprint().outputs[0].shape,
        Some(vec![4, 214]),
        "{:?}",
        four.footprint()
    );
}

//! Engine tests: loading from bytes, external data, panics, request validation, planning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::prelude::{DatumType, TDim};

use std::sync::Arc;

use super::*;
use crate::convert::{datatype_of, from_tensor, to_tensor};
use crate::decoded::{visit_tensors, wipe_weights};
use crate::model::Engine;
use crate::planning::lock;

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

fn load(model: &pb::ModelProto) -> Result<LoadedModel, Error> {
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
    check::<Error>();
}

#[test]
fn not_a_model() {
    assert!(matches!(
        LoadedModel::load(b"\xff\xff\xff not protobuf"),
        Err(Error::ModelDecode(_))
    ));
    // Valid protobuf, no graph.
    let err = LoadedModel::load(&pb::ModelProto::default().encode_to_vec()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model {
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
            Error::ExternalData { ref tensor, ref location }
                if tensor == "w" && location.as_deref() == Some("w.bin")
        ),
        "{err}"
    );
    // Only `external_data` set, no data_location.
    let mut m = relu_model(input.clone(), "y");
    let mut t = external_tensor();
    t.data_location = None;
    m.graph.as_mut().unwrap().initializer.push(t);
    assert!(matches!(load(&m), Err(Error::ExternalData { .. })));
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
    assert!(matches!(load(&m), Err(Error::ExternalData { .. })));
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
    assert!(matches!(load(&m), Err(Error::ExternalData { .. })));
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
            Error::Panicked {
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
            Error::UnsupportedModelType {
                role: TensorRole::Input,
                ..
            }
        ),
        "{err}"
    );
    let err = load(&relu_model(value_info("x", FLOAT, None), "y")).unwrap_err();
    assert!(
        matches!(err, Error::UnknownInputRank { ref name } if name == "x"),
        "{err}"
    );
    let err = load(&relu_model(value_info("x", 0, fixed(&[4])), "y")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Model {
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
        matches!(err, Error::MissingInput { ref name } if name == "x"),
        "{err}"
    );
    let mut wrong = f32s(&[1, 3]);
    wrong.name = "X".into();
    let err = model.run(vec![wrong]).unwrap_err();
    assert!(
        matches!(err, Error::UnknownInput { ref expected, .. } if expected == "x"),
        "{err}"
    );
    let err = model.run(vec![f32s(&[1, 3]), f32s(&[1, 3])]).unwrap_err();
    assert!(matches!(err, Error::DuplicateInput { .. }), "{err}");
    let err = model.run(vec![f32s(&[2, 4])]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimMismatch {
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
        matches!(err, Error::RankMismatch { expected: 2, .. }),
        "{err}"
    );
    let mut short = f32s(&[2, 3]);
    short.shape = vec![3, 3];
    let err = model.run(vec![short]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ElementCount {
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
    assert!(matches!(err, Error::ShapeOverflow { .. }), "{err}");
    let mut liar = f32s(&[1, 3]);
    liar.datatype = Datatype::Int32;
    let err = model.run(vec![liar]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InconsistentDatatype {
                declared: Datatype::Int32,
                data: Datatype::Fp32,
                ..
            }
        ),
        "{err}"
    );
    let ints = NamedTensor::new("x", vec![1, 3], TensorData::Int64(vec![1, 2, 3]));
    let err = model.run(vec![ints]).unwrap_err();
    assert!(matches!(err, Error::DatatypeMismatch { .. }), "{err}");
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
fn prepare_is_cached_only_after_a_prepare_of_the_same_shapes() {
    let model = LoadedModel::load(&sample("magika/model.onnx")).unwrap();
    let input = |batch: usize| {
        vec![NamedTensor::new(
            "bytes",
            vec![batch, 2048],
            TensorData::Int32(vec![1; batch * 2048]),
        )]
    };
    assert!(!model.prepare_is_cached(&input(2)));
    model.prepare(input(2), &RunLimits::default()).unwrap();
    assert!(model.prepare_is_cached(&input(2)));
    assert!(
        !model.prepare_is_cached(&input(3)),
        "another batch: another plan"
    );
    assert!(
        !model.prepare_is_cached(&[]),
        "missing inputs go to prepare, which names them"
    );
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
            Error::Run {
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

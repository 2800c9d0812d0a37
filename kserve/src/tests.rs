//! Codec tests: round trips, bit-exact floats, the binary extension, and hostile bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::scalars::{parse_float, Scalar};
use cloister_models::ModelDigest;

fn request(body: &str) -> Result<InferRequest, Error> {
    InferRequest::decode(body.as_bytes(), None)
}

#[test]
fn f32_round_trips_bit_exactly_through_json() {
    // Special values, boundaries, subnormals, and a deterministic spread over all bit patterns.
    let mut values = vec![
        0.0f32,
        -0.0,
        1.0,
        0.1,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        f32::EPSILON,
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        16_777_217.0,
        3.402_823_5e38,
        1.0e-45,
    ];
    let mut x: u32 = 0x1234_5678;
    for _ in 0..200_000 {
        // xorshift32
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        values.push(f32::from_bits(x));
    }
    values.retain(|v| v.is_finite());
    values.push(f32::NAN);
    values.push(f32::INFINITY);
    values.push(f32::NEG_INFINITY);
    let resp = InferResponse {
        model_name: "m".into(),
        outputs: vec![InferTensor::new(
            "y",
            vec![values.len() as u64],
            TensorData::Fp32(values.clone()),
        )],
        ..Default::default()
    };
    let body = resp.encode(&|_| false).unwrap();
    assert_eq!(body.json_len, None);
    let back = InferResponse::decode(&body.bytes, None).unwrap();
    let Some(TensorData::Fp32(got)) = &back.outputs[0].data else {
        panic!("not fp32")
    };
    assert_eq!(got.len(), values.len());
    for (a, b) in values.iter().zip(got) {
        if a.is_nan() {
            assert!(b.is_nan());
        } else {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:e}");
        }
    }
    // And FP64 the same way.
    let f64s = vec![0.1f64, -0.0, f64::MAX, f64::from_bits(1), 1.0 / 3.0];
    let t = InferTensor::new("d", vec![5], TensorData::Fp64(f64s.clone()));
    let json = serde_json::to_string(&t).unwrap();
    let back: InferTensor = serde_json::from_str(&json).unwrap();
    let Some(TensorData::Fp64(got)) = back.data else {
        panic!()
    };
    for (a, b) in f64s.iter().zip(got) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
}

/// Exhaustive proof of the FP32 property over every finite `f32` (slow: run with `--ignored` in
/// release mode).
#[test]
#[ignore]
fn f32_round_trips_exhaustively() {
    let mut buf = Vec::with_capacity(64);
    for bits in 0..=u32::MAX {
        let v = f32::from_bits(bits);
        if !v.is_finite() {
            continue;
        }
        buf.clear();
        serde_json::to_writer(&mut buf, &v).unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        let back: f32 = parse_float(0, Scalar::Number(text)).unwrap();
        assert_eq!(back.to_bits(), bits, "{text}");
    }
}

#[test]
fn typed_parsing_and_nested_arrays() {
    let r = request(
        r#"{"inputs":[
            {"name":"a","shape":[2,2],"datatype":"INT64","data":[[1,-9223372036854775808],[3,9223372036854775807]]},
            {"name":"b","shape":[3],"datatype":"BOOL","data":[true,false,true]},
            {"name":"c","shape":[2],"datatype":"UINT8","data":[0,255]},
            {"name":"d","shape":[1],"datatype":"FP32","data":[1e-3]},
            {"name":"e","shape":[3],"datatype":"FP64","data":["NaN","Infinity","-Infinity"]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(
        r.inputs[0].data,
        Some(TensorData::Int64(vec![1, i64::MIN, 3, i64::MAX]))
    );
    assert_eq!(
        r.inputs[1].data,
        Some(TensorData::Bool(vec![true, false, true]))
    );
    assert_eq!(r.inputs[2].data, Some(TensorData::Uint8(vec![0, 255])));
    assert_eq!(r.inputs[3].data, Some(TensorData::Fp32(vec![1e-3])));
    let Some(TensorData::Fp64(e)) = &r.inputs[4].data else {
        panic!()
    };
    assert!(e[0].is_nan() && e[1] == f64::INFINITY && e[2] == f64::NEG_INFINITY);
}

#[test]
fn precise_errors() {
    let cases = [
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#,
            "element 0: out of range for UINT8",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,1.5]}]}"#,
            "element 1: expected an integer, found a non-integer number",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[true]}]}"#,
            "element 0: expected a number",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}"#,
            "out of range for FP32",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}"#,
            "expected a boolean, found a number",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
            "datatype `FP16` is not supported",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":5}]}"#,
            "must be a JSON array",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[{"a":1}]}]}"#,
            "found an object",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
            "expected u64",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
            "input `x` has neither `data` nor `parameters.binary_data_size`",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"extra":1}]}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#,
            "no Inference-Header-Content-Length",
        ),
        (r#"{"inputs":[}"#, "malformed JSON body"),
    ];
    for (body, want) in cases {
        let err = request(body).unwrap_err().to_string();
        assert!(err.contains(want), "{body}\n → {err}\n wanted {want}");
    }
}

#[test]
fn binary_extension_round_trip_and_errors() {
    let req = InferRequest {
        id: Some("r1".into()),
        inputs: vec![
            InferTensor::new("a", vec![2], TensorData::Fp32(vec![1.5, -0.0])),
            InferTensor::new("b", vec![3], TensorData::Bool(vec![true, false, true])),
            InferTensor::new("c", vec![1], TensorData::Int64(vec![-7])),
        ],
        outputs: Some(vec![RequestOutput {
            name: "y".into(),
            parameters: Some(Parameters(
                [(BINARY_DATA.to_owned(), Parameter::Bool(true))].into(),
            )),
        }]),
        ..Default::default()
    };
    let body = req.encode(true).unwrap();
    let json_len = body.json_len.unwrap();
    assert_eq!(body.bytes.len(), json_len + 8 + 3 + 8);
    let back = InferRequest::decode(&body.bytes, Some(json_len)).unwrap();
    assert_eq!(back, req);
    assert!(back.wants_binary_output("y").unwrap());
    assert!(!back.wants_binary_output("z").unwrap());
    // JSON encoding decodes the same.
    let plain = req.encode(false).unwrap();
    assert_eq!(plain.json_len, None);
    assert_eq!(InferRequest::decode(&plain.bytes, None).unwrap(), req);

    // Header longer than the body; trailing bytes; short binary part; bad bool.
    assert!(matches!(
        InferRequest::decode(&body.bytes, Some(body.bytes.len() + 1)),
        Err(Error::HeaderLength { .. })
    ));
    let mut longer = body.bytes.clone();
    longer.push(0);
    assert!(matches!(
        InferRequest::decode(&longer, Some(json_len)),
        Err(Error::TrailingBinary(1))
    ));
    let shorter = &body.bytes[..body.bytes.len() - 1];
    let err = InferRequest::decode(shorter, Some(json_len)).unwrap_err();
    assert!(err.to_string().contains("only 7 remain"), "{err}");
    let mut bad_bool = body.bytes.clone();
    bad_bool[json_len + 8] = 2;
    let err = InferRequest::decode(&bad_bool, Some(json_len)).unwrap_err();
    assert!(err.to_string().contains("neither 0 nor 1"), "{err}");

    // Request-level binary_data_output, overridden per output.
    let mut req = req;
    req.parameters = Some(Parameters(
        [(BINARY_DATA_OUTPUT.to_owned(), Parameter::Bool(true))].into(),
    ));
    req.outputs = Some(vec![RequestOutput {
        name: "y".into(),
        parameters: Some(Parameters(
            [(BINARY_DATA.to_owned(), Parameter::Bool(false))].into(),
        )),
    }]);
    assert!(!req.wants_binary_output("y").unwrap());
    assert!(req.wants_binary_output("z").unwrap());

    // Responses: mixed binary and JSON outputs.
    let resp = InferResponse {
        model_name: "m".into(),
        model_version: Some("1".into()),
        id: Some("r1".into()),
        parameters: None,
        outputs: vec![
            InferTensor::new("y", vec![2], TensorData::Fp32(vec![0.25, f32::NAN])),
            InferTensor::new("z", vec![1], TensorData::Uint16(vec![65535])),
        ],
    };
    let body = resp.encode(&|o| o.name == "y").unwrap();
    let json_len = body.json_len.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body.bytes[..json_len]).unwrap();
    assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(json["outputs"][0].get("data").is_none());
    assert_eq!(json["outputs"][1]["data"][0], 65535);
    let back = InferResponse::decode(&body.bytes, Some(json_len)).unwrap();
    let Some(TensorData::Fp32(y)) = &back.outputs[0].data else {
        panic!()
    };
    assert_eq!(y[0], 0.25);
    assert!(y[1].is_nan());
    assert_eq!(back.outputs[1], resp.outputs[1]);
}

#[test]
fn metadata_attestation_and_debug() {
    let meta = ModelMetadataResponse {
        name: "mlp".into(),
        versions: vec!["1".into()],
        platform: "onnx".into(),
        inputs: vec![MetadataTensor {
            name: "x".into(),
            datatype: Datatype::Fp32,
            shape: vec![-1, 4],
        }],
        outputs: vec![],
        digest: ModelDigest::from_bytes([7; 48]),
    };
    let json = serde_json::to_value(&meta).unwrap();
    assert_eq!(json["digest"], format!("sha384:{}", "07".repeat(48)));
    assert_eq!(json["inputs"][0]["datatype"], "FP32");
    assert_eq!(json["inputs"][0]["shape"][0], -1);
    let back: ModelMetadataResponse = serde_json::from_value(json).unwrap();
    assert_eq!(back, meta);

    let a: AttestationRequest =
        serde_json::from_str(&format!(r#"{{"nonce":"{}"}}"#, "ab".repeat(32))).unwrap();
    assert_eq!(a.nonce, [0xab; 32]);
    assert!(serde_json::from_str::<AttestationRequest>(r#"{"nonce":"abcd"}"#).is_err());
    assert!(serde_json::from_str::<AttestationRequest>(&format!(
        r#"{{"nonce":"{}"}}"#,
        "zz".repeat(32)
    ))
    .is_err());

    let t = TensorData::Fp32(vec![123.456]);
    assert_eq!(format!("{t:?}"), "TensorData::FP32(len = 1)");
    let t = InferTensor::new("x", vec![1], t);
    assert!(!format!("{t:?}").contains("123"));
}

#[test]
fn garbage_never_panics() {
    let mut x: u32 = 7;
    let base = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    for i in 0..5000 {
        let mut body = base.to_vec();
        body.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let pos = (x as usize) % body.len();
        body[pos] = (x >> 8) as u8;
        let _ = InferRequest::decode(&body, Some(base.len()));
        let _ = InferRequest::decode(&body, None);
        let _ = InferResponse::decode(&body[..i % body.len()], Some(i % 7));
    }
}

/// The element limit applies before and while `data` is parsed; shapes are bounded in rank.
#[test]
fn decoding_is_bounded_by_the_shape_and_the_limit() {
    let limits = DecodeLimits {
        max_tensor_elements: 100,
    };
    let decode = |body: &str| InferRequest::decode_with(body.as_bytes(), None, &limits);
    // Over the limit: refused before the data is looked at (the data here is not even valid for FP32).
    let err =
        decode(r#"{"inputs":[{"name":"x","shape":[10,11],"datatype":"FP32","data":["no"]}]}"#)
            .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tensor {
                problem: TensorProblem::ShapeTooLarge {
                    elements: Some(110),
                    limit: 100
                },
                ..
            }
        ),
        "{err}"
    );
    let err = decode(r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,2],"datatype":"FP32","data":[]}]}"#)
        .unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    // More elements than the shape says: parsing stops at the first one beyond it.
    let many = format!(
        r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"INT32","data":[{}]}}]}}"#,
        vec!["1"; 50_000].join(",")
    );
    let err = decode(&many).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tensor {
                problem: TensorProblem::ElementCount {
                    expected: 2,
                    found: 3,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    // Fewer: refused too.
    let err = decode(r#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT32","data":[1]}]}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("(3 elements) but 1 elements"),
        "{err}"
    );
    // Rank above MAX_RANK, and a long shape is not echoed.
    let shape = vec!["1"; MAX_RANK + 1].join(",");
    let err = decode(&format!(
        r#"{{"inputs":[{{"name":"x","shape":[{shape}],"datatype":"INT32","data":[1]}}]}}"#
    ))
    .unwrap_err();
    assert!(err.to_string().contains("at most 32 dimensions"), "{err}");
    // Within bounds: fine, nested arrays flattened.
    let ok = decode(
        r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#,
    )
    .unwrap();
    assert_eq!(ok.inputs[0].data, Some(TensorData::Int32(vec![1, 2, 3, 4])));
}

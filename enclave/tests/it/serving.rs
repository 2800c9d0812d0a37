//! The attested inference server: attestation binding, health, metadata, inference (JSON and binary),
//! limits, and hostile bytes on the socket.

use std::sync::Arc;

use cloister_attestation::evidence::{Evidence, Platform, Sha384};
use cloister_enclave::inference::{LoadedModel, NamedTensor};
use cloister_kserve::{
    InferRequest, InferResponse, InferTensor, Parameter, Parameters, RequestOutput, TensorData,
    BINARY_DATA, BINARY_DATA_OUTPUT, EVIDENCE_CONTENT_TYPE, INFERENCE_HEADER_CONTENT_LENGTH,
};
use cloister_models::ModelDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const PIN: [u8; 32] = [0x11; 32];

async fn mlp_server(limits: &str) -> Option<(TestServer, Arc<FakeFirmware>, Vec<u8>)> {
    let onnx = sample("mlp/model.onnx")?;
    let digest = ModelDigest::of(&onnx);
    let fw = Arc::new(FakeFirmware::default());
    let text = config_text(&[("mlp", digest)], "127.0.0.1:1", &PIN, limits);
    let server = start_server(&text, fw.clone()).await;
    Some((server, fw, onnx))
}

fn install(server: &TestServer, name: &str, onnx: &[u8]) {
    server
        .enclave
        .install(name, LoadedModel::load(onnx).unwrap())
        .unwrap();
}

#[tokio::test]
async fn attestation_binds_the_nonce_and_this_connections_exporter() {
    let Some((server, fw, onnx)) = mlp_server("").await else {
        return;
    };
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    assert_ne!(a.exporter, b.exporter, "two connections, two exporters");

    for (client, nonce) in [(&mut a, [7u8; 32]), (&mut b, [9u8; 32])] {
        let reply = client
            .post_json(
                "/v2/attestation",
                &serde_json::json!({ "nonce": hex::encode(nonce) }),
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["content-type"], EVIDENCE_CONTENT_TYPE);
        let ev = Evidence::from_bytes(&reply.body).unwrap();
        assert_eq!(ev.platform, Platform::SnpSimulated);
        assert_eq!(ev.claims.nonce, nonce);
        assert_eq!(ev.claims.tls_exporter, client.exporter);
        assert_eq!(ev.claims.enclave_key, None);
        assert_eq!(
            ev.claims.model_digests,
            vec![Sha384(*ModelDigest::of(&onnx).as_bytes())]
        );
        assert_eq!(ev.claims.config_digest, server.config.digest);
        // REPORT_DATA is the hash of the claims, and the firmware was asked for exactly that.
        let rd = ev.claims.report_data().unwrap();
        assert_eq!(&ev.report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64], &rd);
        assert_eq!(*fw.seen.lock().unwrap().last().unwrap(), rd);
    }

    // Keep-alive: the same connection answers again, with the same exporter.
    let reply = a
        .post_json(
            "/v2/attestation",
            &serde_json::json!({ "nonce": hex::encode([1u8; 32]) }),
        )
        .await;
    let ev = Evidence::from_bytes(&reply.body).unwrap();
    assert_eq!(ev.claims.tls_exporter, a.exporter);

    // Malformed nonces, wrong method.
    for body in [
        serde_json::json!({ "nonce": "abcd" }),
        serde_json::json!({ "nonce": "zz".repeat(32) }),
        serde_json::json!({ "nonces": hex::encode([1u8; 32]) }),
        serde_json::json!([]),
    ] {
        let reply = a.post_json("/v2/attestation", &body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.error().contains("malformed attestation request"));
    }
    let reply = a.get("/v2/attestation").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");
    // Attestation does not need the model: it worked before any model was installed.
    assert!(!server.enclave.is_ready());
    install(&server, "mlp", &onnx);
    assert!(server.enclave.is_ready());
}

#[tokio::test]
async fn health_readiness_and_metadata() {
    let Some((server, _, onnx)) = mlp_server("").await else {
        return;
    };
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.get("/v2/health/live").await.status, 200);
    let ready = c.get("/v2/health/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["ready"], false);
    let meta = c.get("/v2/models/mlp").await;
    assert_eq!(meta.status, 503);
    assert!(meta.error().contains("not ready"));
    let infer = c
        .post_json("/v2/models/mlp/infer", &serde_json::json!({"inputs": []}))
        .await;
    assert_eq!(infer.status, 503);
    assert_eq!(c.get("/v2/models/mlp/ready").await.status, 503);

    install(&server, "mlp", &onnx);
    assert_eq!(c.get("/v2/health/ready").await.status, 200);
    assert_eq!(c.get("/v2/models/mlp/ready").await.status, 200);
    let meta = c.get("/v2/models/mlp").await;
    assert_eq!(meta.status, 200);
    let m = meta.json();
    assert_eq!(m["name"], "mlp");
    assert_eq!(m["platform"], "onnx");
    assert_eq!(m["digest"], ModelDigest::of(&onnx).to_string());
    assert_eq!(m["inputs"][0]["name"], "x");
    assert_eq!(m["inputs"][0]["datatype"], "FP32");
    assert_eq!(m["inputs"][0]["shape"], serde_json::json!([-1, 16]));
    assert_eq!(m["outputs"][0]["shape"], serde_json::json!([-1, 4]));
    let typed: cloister_kserve::ModelMetadataResponse = serde_json::from_slice(&meta.body).unwrap();
    assert_eq!(typed.digest, ModelDigest::of(&onnx));

    assert_eq!(c.get("/v2/models/other").await.status, 404);
    assert_eq!(c.get("/v2/nothing").await.status, 404);
    assert_eq!(c.get("/v2/models/mlp/infer").await.status, 405);
    assert_eq!(c.get("/v2").await.status, 200);
}

fn random_f32(seed: &mut u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            // Values in [-4, 4) with full mantissas: shortest decimal forms need up to 9 digits.
            (*seed as f32 / u32::MAX as f32) * 8.0 - 4.0
        })
        .collect()
}

fn bits(data: &TensorData) -> Vec<u32> {
    match data {
        TensorData::Fp32(v) => v.iter().map(|x| x.to_bits()).collect(),
        other => panic!("expected FP32, got {other:?}"),
    }
}

#[tokio::test]
async fn inference_json_and_binary_equal_in_process_tract_bit_exactly() {
    let Some((server, _, onnx)) = mlp_server("").await else {
        return;
    };
    install(&server, "mlp", &onnx);
    let reference = LoadedModel::load(&onnx).unwrap();
    let mut c = Client::connect(server.addr).await;
    let mut seed = 0x9e37_79b9;

    for batch in [1usize, 3, 8] {
        let x = random_f32(&mut seed, batch * 16);
        let expected = reference
            .run(vec![NamedTensor::new(
                "x",
                vec![batch, 16],
                TensorData::Fp32(x.clone()),
            )])
            .unwrap();
        let TensorData::Fp32(want) = &expected[0].data else {
            panic!()
        };
        let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();

        let request = InferRequest {
            id: Some(format!("req-{batch}")),
            inputs: vec![InferTensor::new(
                "x",
                vec![batch as u64, 16],
                TensorData::Fp32(x.clone()),
            )],
            ..Default::default()
        };

        // JSON in, JSON out.
        let body = request.encode(false).unwrap();
        let reply = c
            .request(
                "POST",
                "/v2/models/mlp/infer",
                &[("content-type", "application/json".into())],
                body.bytes,
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.headers.get(INFERENCE_HEADER_CONTENT_LENGTH).is_none());
        let resp = InferResponse::decode(&reply.body, None).unwrap();
        assert_eq!(resp.model_name, "mlp");
        assert_eq!(resp.id.as_deref(), Some(format!("req-{batch}").as_str()));
        assert_eq!(resp.outputs.len(), 1);
        assert_eq!(resp.outputs[0].name, "y");
        assert_eq!(resp.outputs[0].shape, vec![batch as u64, 4]);
        assert_eq!(bits(resp.outputs[0].data.as_ref().unwrap()), want_bits);

        // Binary in, binary out (request-level binary_data_output).
        let mut request = request.clone();
        request.parameters = Some(Parameters(
            [(BINARY_DATA_OUTPUT.to_owned(), Parameter::Bool(true))].into(),
        ));
        let body = request.encode(true).unwrap();
        let reply = c
            .request(
                "POST",
                "/v2/models/mlp/infer",
                &[(
                    INFERENCE_HEADER_CONTENT_LENGTH,
                    body.json_len.unwrap().to_string(),
                )],
                body.bytes,
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let json_len: usize = reply.headers[INFERENCE_HEADER_CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(reply.body.len(), json_len + batch * 4 * 4);
        let resp = InferResponse::decode(&reply.body, Some(json_len)).unwrap();
        assert_eq!(bits(resp.outputs[0].data.as_ref().unwrap()), want_bits);

        // Binary in, JSON out for an output that says binary_data = false.
        request.outputs = Some(vec![RequestOutput {
            name: "y".into(),
            parameters: Some(Parameters(
                [(BINARY_DATA.to_owned(), Parameter::Bool(false))].into(),
            )),
        }]);
        let body = request.encode(true).unwrap();
        let reply = c
            .request(
                "POST",
                "/v2/models/mlp/infer",
                &[(
                    INFERENCE_HEADER_CONTENT_LENGTH,
                    body.json_len.unwrap().to_string(),
                )],
                body.bytes,
            )
            .await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers.get(INFERENCE_HEADER_CONTENT_LENGTH).is_none());
        let resp = InferResponse::decode(&reply.body, None).unwrap();
        assert_eq!(bits(resp.outputs[0].data.as_ref().unwrap()), want_bits);
    }

    // Nested JSON arrays are accepted (row-major).
    let x = random_f32(&mut seed, 32);
    let nested: Vec<&[f32]> = x.chunks(16).collect();
    let reply = c
        .post_json(
            "/v2/models/mlp/infer",
            &serde_json::json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": nested}]}),
        )
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let expected = reference
        .run(vec![NamedTensor::new(
            "x",
            vec![2, 16],
            TensorData::Fp32(x),
        )])
        .unwrap();
    let TensorData::Fp32(want) = &expected[0].data else {
        panic!()
    };
    let resp = InferResponse::decode(&reply.body, None).unwrap();
    assert_eq!(
        bits(resp.outputs[0].data.as_ref().unwrap()),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn request_errors_are_precise() {
    let Some((server, _, onnx)) =
        mlp_server("max_body_bytes = 4096\nmax_tensor_elements = 64").await
    else {
        return;
    };
    install(&server, "mlp", &onnx);
    let mut c = Client::connect(server.addr).await;
    let x16: Vec<f32> = vec![0.5; 16];
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "INT32", "data": vec![1; 16]}]}),
            400,
            "input `x` must be FP32, got INT32",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [1, 15], "datatype": "FP32", "data": vec![0.5; 15]}]}),
            400,
            "axis 1",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": x16}]}),
            400,
            "elements",
        ),
        (
            serde_json::json!({"inputs": [{"name": "z", "shape": [1, 16], "datatype": "FP32", "data": x16}]}),
            400,
            "`z` is not an input of this model",
        ),
        (
            serde_json::json!({"inputs": []}),
            400,
            "input `x` is missing",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP16", "data": x16}]}),
            400,
            "datatype `FP16` is not supported",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": x16}], "outputs": [{"name": "nope"}]}),
            400,
            "`nope` is not an output of this model (outputs: y)",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [5, 16], "datatype": "FP32", "data": vec![0.5; 80]}]}),
            413,
            "input `x` has 80 elements; the limit is 64",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [4294967296u64, 4294967296u64, 2], "datatype": "FP32", "data": [1]}]}),
            413,
            "overflows",
        ),
        (
            serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 1200]}]}),
            413,
            "request body exceeds the limit of 4096 bytes",
        ),
    ];
    for (body, status, want) in cases {
        let reply = c.post_json("/v2/models/mlp/infer", &body).await;
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let err = reply.error();
        assert!(err.contains(want), "{err}\nwanted: {want}");
        if status == 413 {
            // A 413 may close the connection (the body was not read): reconnect.
            c = Client::connect(server.addr).await;
        }
    }
    // Malformed JSON and unknown model.
    let reply = c
        .request(
            "POST",
            "/v2/models/mlp/infer",
            &[],
            b"{\"inputs\": [".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.error().starts_with("malformed JSON body"));
    let reply = c
        .post_json("/v2/models/nope/infer", &serde_json::json!({"inputs": []}))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "model `nope` is not served here");
    // A bad Inference-Header-Content-Length.
    let reply = c
        .request(
            "POST",
            "/v2/models/mlp/infer",
            &[(INFERENCE_HEADER_CONTENT_LENGTH, "x".into())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 400);
    let reply = c
        .request(
            "POST",
            "/v2/models/mlp/infer",
            &[(INFERENCE_HEADER_CONTENT_LENGTH, "100".into())],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply
        .error()
        .contains("Inference-Header-Content-Length is 100"));
}

#[tokio::test]
async fn concurrency_limit_answers_503() {
    let Some((server, _, onnx)) = mlp_server("max_concurrent_requests = 1").await else {
        return;
    };
    install(&server, "mlp", &onnx);
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 16]}]});
    let mut c = Client::connect(server.addr).await;
    let mut got_503 = false;
    let mut slow = None;
    // Hold the only permit with a request whose body never finishes arriving, then expect 503. The server
    // may read the slow request's head only after `c`'s request took the permit (then the slow request is
    // the one answered 503 and `c` succeeds): open a new slow request and try again, waiting longer.
    for attempt in 0..20u64 {
        let (mut stream, _) = tls_connect(server.addr).await;
        stream
            .write_all(
                b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: e\r\ncontent-length: 1000\r\n\r\n{\"inputs\":",
            )
            .await
            .unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20 * (attempt + 1))).await;
        let reply = c.post_json("/v2/models/mlp/infer", &body).await;
        if reply.status == 503 {
            assert!(reply
                .error()
                .contains("too many concurrent inference requests (limit 1)"));
            assert_eq!(reply.headers["retry-after"], "1");
            got_503 = true;
            slow = Some(stream);
            break;
        }
        assert_eq!(reply.status, 200);
    }
    assert!(got_503);
    // Health and attestation are not limited by inferences.
    assert_eq!(c.get("/v2/health/ready").await.status, 200);
    // Releasing the slow request frees the permit.
    drop(slow);
    let mut ok = false;
    for _ in 0..1000 {
        if c.post_json("/v2/models/mlp/infer", &body).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok);
}

#[tokio::test]
async fn hostile_bytes_close_the_connection_and_the_server_keeps_serving() {
    let fw = Arc::new(FakeFirmware::default());
    let text = config_text(
        &[("m", ModelDigest::from_bytes([1; 48]))],
        "127.0.0.1:1",
        &PIN,
        "",
    );
    let server = start_server(&text, fw).await;

    async fn closed(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(15), stream.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue, // an alert or a 400, then the close
                Err(_) => return false,
            }
        }
    }

    // Garbage on the raw socket.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    tcp.write_all(&garbage).await.unwrap();
    assert!(closed(&mut tcp).await);

    // A plain-HTTP client.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(&mut tcp).await);

    // A TLS client that speaks garbage instead of HTTP.
    let (mut tls, _) = tls_connect(server.addr).await;
    tls.write_all(b"\x00\x01\x02 NOT HTTP\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    assert!(closed(&mut tls).await);

    // Oversized headers.
    let (mut tls, _) = tls_connect(server.addr).await;
    let mut req = b"GET /v2/health/live HTTP/1.1\r\nx: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 200_000));
    let _ = tls.write_all(&req).await;
    let _ = tls.flush().await;
    assert!(closed(&mut tls).await);

    // A client that connects and goes away mid-handshake.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    drop(tcp);

    // Still serving.
    let mut c = Client::connect(server.addr).await;
    assert_eq!(c.get("/v2/health/live").await.status, 200);
    let reply = c
        .post_json(
            "/v2/attestation",
            &serde_json::json!({ "nonce": hex::encode([3u8; 32]) }),
        )
        .await;
    assert_eq!(reply.status, 200);
}

//! The edges of issue 9, end to end on the simulated platform with the real binaries: what one request, one
//! log level or one peer can make the enclave, the host and the key broker do. `docs/threat-model.md` lists
//! each edge with the test here that holds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cloister_client::deployment::{Deployment, DeploymentOptions};
use cloister_client::session::SessionError;
use cloister_proto::v2::{InferRequest, InferTensor, TensorData};
use hyper::{Method, StatusCode};
use prost::Message;
use tract_onnx::pb;

use crate::models::{model, node, onnx_type, value_info, Dim};

const READY: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn deploy(
    dir: &Path,
    model: &Path,
    name: &str,
    tweak: impl FnOnce(&mut DeploymentOptions),
) -> Deployment {
    let mut options = DeploymentOptions::new(dir, model, name).expect("binaries next to the tests");
    tweak(&mut options);
    Deployment::start(&options)
        .await
        .expect("deployment starts")
}

/// The enclave process of a deployment (the host's one child).
fn enclave_pid(d: &Deployment) -> u32 {
    let host = d.host_pid().expect("host running");
    let out = std::process::Command::new("pgrep")
        .arg("-P")
        .arg(host.to_string())
        .output()
        .expect("pgrep");
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "one enclave child of the host: {pids:?}");
    pids[0]
}

/// `VmRSS` or `VmHWM` of `pid`, in kB.
fn memory_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (proc(5), clear_refs value 5).
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
}

/// x: f32 [N, M] → `Pad(x, [0, 1, 0, 1])` → y: f32 [N, M + 2]. Two symbolic input dimensions, and an output
/// that grows with N even when M is 0.
fn pad_model(path: &Path) {
    let pads = pb::TensorProto {
        name: "pads".to_owned(),
        dims: vec![4],
        data_type: onnx_type::INT64,
        int64_data: vec![0, 1, 0, 1],
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "pad".to_owned(),
        node: vec![node("Pad", &["x", "pads"], "y", vec![])],
        initializer: vec![pads],
        input: vec![value_info(
            "x",
            onnx_type::FLOAT,
            &[Dim::Param("N"), Dim::Param("M")],
        )],
        output: vec![value_info(
            "y",
            onnx_type::FLOAT,
            &[Dim::Param("N"), Dim::Param("M2")],
        )],
        ..Default::default()
    };
    std::fs::write(path, model(graph).encode_to_vec()).unwrap();
}

/// Issue 9, item 1: `{"inputs":[{"name":"x","shape":[268435456,0],"datatype":"FP32","data":[]}]}` (75 bytes)
/// binds N to 2^28; the padded output would be 2^29 floats. It is refused before tract runs, with a short
/// message, and the enclave's peak RSS stays within twice its idle RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_sized_dimension_cannot_make_the_enclave_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("pad.onnx");
    pad_model(&model_path);
    let d = deploy(dir.path(), &model_path, "pad", |_| {}).await;
    let mut session = d.wait_ready(READY).await.expect("ready");
    session.attested_model("pad").await.unwrap();
    let pid = enclave_pid(&d);
    let idle = memory_kb(pid, "VmRSS:");
    reset_peak(pid);

    let body = br#"{"inputs":[{"name":"x","shape":[268435456,0],"datatype":"FP32","data":[]}]}"#;
    assert_eq!(body.len(), 75);
    let (status, reply) = session
        .raw(
            Method::POST,
            "/v2/models/pad/infer",
            Some("application/json"),
            Bytes::from_static(body),
        )
        .await
        .unwrap();
    let message = String::from_utf8_lossy(&reply);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
    assert!(
        message.contains("symbolic dimensions") && message.len() < 300,
        "{message}"
    );
    let peak = memory_kb(pid, "VmHWM:");
    assert!(
        peak <= 2 * idle,
        "enclave peak RSS {peak} kB after the request, idle {idle} kB"
    );

    // The same model still serves legitimate requests, zero-sized ones included.
    let request = InferRequest {
        inputs: vec![InferTensor::new("x", vec![3, 0], TensorData::Fp32(vec![]))],
        ..InferRequest::default()
    };
    let response = session.infer("pad", &request, false).await.unwrap();
    assert_eq!(response.outputs[0].shape, vec![3, 2]);
    d.stop().await;
}

/// Issue 9, item 7: the `[2040, 2048]` INT32 Magika request of the issue (16.7 MB with the binary extension,
/// under the body limit; 8.8 GiB of activations when it ran) is refused when it cannot fit the memory budget,
/// and requests that fit only one at a time are queued, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_a_budget_requests_are_refused_or_queued() {
    let dir = tempfile::tempdir().unwrap();
    let magika = repo().join("models/sample/magika/model.onnx");
    // Four Magika rows are estimated at about 25 MB: two never fit together in 40 MiB.
    let d = deploy(dir.path(), &magika, "magika", |o| {
        o.enclave_config_extra = "[limits]\nmemory_budget = \"40MiB\"\n".to_owned();
    })
    .await;
    let mut session = d.wait_ready(READY).await.expect("ready");
    let rows = |n: usize| InferRequest {
        inputs: vec![InferTensor::new(
            "bytes",
            vec![n as u64, 2048],
            TensorData::Int32(vec![0; n * 2048]),
        )],
        ..InferRequest::default()
    };
    let err = session
        .infer("magika", &rows(2040), true)
        .await
        .unwrap_err();
    match err {
        SessionError::Status { status, message } => {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{message}");
            assert!(message.contains("budget"), "{message}");
        }
        other => panic!("expected 413, got {other}"),
    }

    // Three concurrent requests that fit the budget one at a time: all served.
    let mut tasks = vec![];
    for _ in 0..3 {
        let mut s = d.session().await.unwrap();
        let request = rows(4);
        tasks.push(tokio::spawn(async move {
            s.infer("magika", &request, true).await
        }));
    }
    for t in tasks {
        let response = t.await.unwrap().expect("queued, then served");
        assert_eq!(response.outputs[0].shape, vec![4, 214]);
    }
    d.stop().await;
}

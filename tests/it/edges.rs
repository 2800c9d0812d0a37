//! The edges of issue 9, end to end on the simulated platform with the real binaries: what one request, one
//! log level or one peer can make the enclave, the host and the key broker do. `docs/threat-model.md` lists
//! each edge with the test here that holds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_kserve::{InferRequest, InferTensor, TensorData};
use cloister_session::SessionError;
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

fn cloister(args: &[String]) -> std::process::Output {
    let bin = cloister_devnet::sibling_bin_dir().unwrap().join("cloister");
    std::process::Command::new(bin)
        .args(args)
        .output()
        .expect("run cloister")
}

fn infer_args(d: &Deployment, policy: &Path, input: &Path) -> Vec<String> {
    vec![
        "infer".into(),
        "--endpoint".into(),
        d.endpoint.clone(),
        "--policy".into(),
        policy.display().to_string(),
        "--model".into(),
        d.model_name.clone(),
        "--input".into(),
        input.display().to_string(),
    ]
}

/// Issue 9, items 3 and 4: `cloister infer` sends nothing to any code (a policy without a workload pin is
/// a usage error, exit 2, unless it says `allow_any_workload = true`, which is printed as a warning), and a
/// `config_digests` pin is checked, not just printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_requires_a_workload_pin_and_checks_the_config_digest() {
    let dir = tempfile::tempdir().unwrap();
    let d = deploy(
        dir.path(),
        &repo().join("models/sample/mlp/model.onnx"),
        "mlp",
        |_| {},
    )
    .await;
    d.wait_ready(READY).await.expect("ready");
    let input = dir.path().join("request.json");
    std::fs::write(
        &input,
        serde_json::json!({"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": vec![0.5; 16]}]})
            .to_string(),
    )
    .unwrap();
    let sim_root = d.sim_dir.join("certs/ark.pem");
    let policy = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!("simulated_root = \"{}\"\n{text}", sim_root.display()),
        )
        .unwrap();
        path
    };
    let run = |p: &Path| {
        let args = infer_args(&d, p, &input);
        async move {
            tokio::task::spawn_blocking(move || cloister(&args))
                .await
                .unwrap()
        }
    };

    let unpinned = policy("unpinned.toml", String::new());
    let out = run(&unpinned).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("workload_identity: not set"), "{stderr}");
    assert!(out.stdout.is_empty());

    let any = policy("any.toml", "allow_any_workload = true\n".into());
    let out = run(&any).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));

    let measurement = hex::encode(d.measurement);
    let config_digest = {
        let bytes = std::fs::read(&d.enclave_config).unwrap();
        hex::encode(ring::digest::digest(&ring::digest::SHA384, &bytes))
    };
    let right = policy(
        "right.toml",
        format!(
            "workload_identity = \"measurement\"\nmeasurements = [\"{measurement}\"]\nconfig_digests = [\"sha384:{config_digest}\"]\n"
        ),
    );
    let out = run(&right).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = policy(
        "wrong.toml",
        format!(
            "workload_identity = \"measurement\"\nmeasurements = [\"{measurement}\"]\nconfig_digests = [\"sha384:{}\"]\n",
            "00".repeat(48)
        ),
    );
    let out = run(&wrong).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config_digests"), "{stderr}");
    assert!(out.stdout.is_empty());
    d.stop().await;
}

/// The float weights of every initializer of an ONNX model, as raw little-endian bytes.
fn weights(onnx: &[u8]) -> Vec<Vec<f32>> {
    let model = pb::ModelProto::decode(onnx).unwrap();
    model
        .graph
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.data_type == onnx_type::FLOAT)
        .map(|t| {
            if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
        })
        .collect()
}

/// Issue 9, item 8: at the most verbose level the measured configuration allows, the enclave's stderr
/// (which the host reads) holds no model weights: no 16-byte window of their bytes, and no run of four
/// consecutive values as text (tract printed the first 12 values of 36 initializers at `trace`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_verbose_log_holds_no_model_weights() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join("models/sample/mlp/model.onnx");
    let d = deploy(dir.path(), &model, "mlp", |o| {
        o.enclave_config_extra = "log_level = \"trace\"\n".to_owned();
    })
    .await;
    let mut session = d.wait_ready(READY).await.expect("ready");
    let request = InferRequest {
        inputs: vec![InferTensor::new(
            "x",
            vec![2, 16],
            TensorData::Fp32(vec![0.5; 32]),
        )],
        ..InferRequest::default()
    };
    session.infer("mlp", &request, false).await.unwrap();
    let log_path = d.host_log.clone();
    d.stop().await;
    let log = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&log);
    // The level took effect: Cloister's own trace/debug lines are there.
    assert!(text.contains("[enclave]"), "{text}");
    assert!(text.contains("DEBUG") || text.contains("TRACE"), "{text}");

    let tensors = weights(&std::fs::read(&model).unwrap());
    assert!(!tensors.is_empty());
    for values in &tensors {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for window in bytes.windows(16).step_by(4) {
            assert!(
                !log.windows(16).any(|w| w == window),
                "16 bytes of a weight tensor are in the enclave's log"
            );
        }
        for run in values.windows(4) {
            for sep in [", ", ","] {
                for form in [
                    run.iter().map(|v| format!("{v}")).collect::<Vec<_>>(),
                    run.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>(),
                ] {
                    let needle = form.join(sep);
                    assert!(
                        !text.contains(&needle),
                        "weights {needle:?} are in the enclave's log"
                    );
                }
            }
        }
    }
}

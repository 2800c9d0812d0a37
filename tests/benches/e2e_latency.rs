//! Per-request latency of the full path — client → TLS 1.3 → host relay → enclave → tract → back — next
//! to the same model run in-process with the same engine, at batch 1, on a keep-alive attested session;
//! plus the enclave's peak memory next to a process that only loads and runs the model.
//!
//! Needs release binaries next to this benchmark: `cargo build --release --workspace --bins` first, then
//! `cargo bench -p cloister-tests --bench e2e_latency`. The MiniLM row needs `scripts/fetch-models.sh`.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloister_client::deployment::{Deployment, DeploymentOptions};
use cloister_enclave::inference::{LoadedModel, NamedTensor};
use cloister_kserve::{InferRequest, InferTensor, MetadataTensor, TensorData};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Inputs for batch 1: fixed dims as declared, symbolic dims (-1) as `seq` (sequence length or width).
fn inputs_for(meta: &[MetadataTensor], seq: u64) -> Vec<(String, Vec<u64>, TensorData)> {
    meta.iter()
        .map(|t| {
            let shape: Vec<u64> = t
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d >= 0 {
                        d as u64
                    } else if i == 0 {
                        1
                    } else {
                        seq
                    }
                })
                .collect();
            let n: u64 = shape.iter().product();
            let n = n as usize;
            let data = match t.datatype.name() {
                "FP32" => TensorData::Fp32((0..n).map(|i| ((i % 97) as f32) / 97.0).collect()),
                "INT64" if t.name.contains("mask") => TensorData::Int64(vec![1; n]),
                "INT64" if t.name.contains("type") => TensorData::Int64(vec![0; n]),
                "INT64" => TensorData::Int64((0..n).map(|i| 1000 + (i as i64 % 2000)).collect()),
                "INT32" => TensorData::Int32((0..n).map(|i| (i % 256) as i32).collect()),
                other => panic!("benchmark input type {other} not handled"),
            };
            (t.name.clone(), shape, data)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Child mode: load the model with the engine, run it `runs` times, print VmHWM (KiB).
fn plain_child(model: &Path, seq: u64) {
    let bytes = std::fs::read(model).expect("model");
    let engine = LoadedModel::load(&bytes).expect("load");
    drop(bytes);
    let meta: Vec<MetadataTensor> = engine
        .inputs()
        .iter()
        .map(|s| serde_json::from_value(serde_json::to_value(s).expect("spec")).expect("spec"))
        .collect();
    for _ in 0..20 {
        let inputs = inputs_for(&meta, seq)
            .into_iter()
            .map(|(n, s, d)| NamedTensor::new(n, s.iter().map(|&x| x as usize).collect(), d))
            .collect();
        engine.run(inputs).expect("run");
    }
    println!("{}", vm_hwm_kib(std::process::id()).unwrap_or(0));
}

struct Row {
    name: &'static str,
    local_p50: Duration,
    local_mean: Duration,
    remote_p50: Duration,
    remote_mean: Duration,
    remote_p99: Duration,
    enclave_peak_kib: u64,
    plain_peak_kib: u64,
}

async fn bench_model(name: &'static str, path: &Path, seq: u64, iters: usize) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = DeploymentOptions::new(dir.path(), path, name).expect("binaries");
    let deployment = Deployment::start(&options).await.expect("deployment");
    let mut session = deployment
        .wait_ready(Duration::from_secs(300))
        .await
        .expect("ready");
    let meta = session.attested_model(name).await.expect("model");
    let inputs = inputs_for(&meta.inputs, seq);
    let request = InferRequest {
        inputs: inputs
            .iter()
            .map(|(n, s, d)| InferTensor::new(n.clone(), s.clone(), d.clone()))
            .collect(),
        ..InferRequest::default()
    };

    // In-process: the same engine on the same input, in this process.
    let engine = LoadedModel::load(&std::fs::read(path).expect("model")).expect("load");
    let engine_inputs = || -> Vec<NamedTensor> {
        inputs
            .iter()
            .map(|(n, s, d)| {
                NamedTensor::new(
                    n.clone(),
                    s.iter().map(|&x| x as usize).collect(),
                    d.clone(),
                )
            })
            .collect()
    };
    for _ in 0..10 {
        engine.run(engine_inputs()).expect("warm-up");
        session
            .infer_attested(name, &request, true)
            .await
            .expect("warm-up");
    }
    let mut local = Vec::with_capacity(iters);
    let mut remote = Vec::with_capacity(iters);
    // Interleaved, so that both see the same machine load.
    for _ in 0..iters {
        let input = engine_inputs();
        let t = Instant::now();
        std::hint::black_box(engine.run(input).expect("run"));
        local.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(
            session
                .infer_attested(name, &request, true)
                .await
                .expect("infer"),
        );
        remote.push(t.elapsed());
    }
    local.sort();
    remote.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;

    let enclave_peak_kib = deployment
        .host_pid()
        .and_then(|host| {
            let out = std::process::Command::new("pgrep")
                .arg("-P")
                .arg(host.to_string())
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()?
                .trim()
                .parse::<u32>()
                .ok()
        })
        .and_then(vm_hwm_kib)
        .unwrap_or(0);
    let plain = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("CLOISTER_BENCH_PLAIN", path)
        .env("CLOISTER_BENCH_SEQ", seq.to_string())
        .output()
        .expect("plain child");
    let plain_peak_kib = String::from_utf8_lossy(&plain.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    drop(session);
    deployment.stop().await;
    Row {
        name,
        local_p50: percentile(&local, 0.5),
        local_mean: mean(&local),
        remote_p50: percentile(&remote, 0.5),
        remote_mean: mean(&remote),
        remote_p99: percentile(&remote, 0.99),
        enclave_peak_kib,
        plain_peak_kib,
    }
}

fn main() {
    if let Ok(model) = std::env::var("CLOISTER_BENCH_PLAIN") {
        let seq = std::env::var("CLOISTER_BENCH_SEQ")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        plain_child(Path::new(&model), seq);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let minilm = repo().join(".cache/models/paraphrase-MiniLM-L3-v2.onnx");
    let mut cases: Vec<(&'static str, PathBuf, u64, usize)> = vec![
        ("mlp", repo().join("models/sample/mlp/model.onnx"), 1, 500),
        (
            "magika",
            repo().join("models/sample/magika/model.onnx"),
            1,
            200,
        ),
    ];
    if minilm.exists() {
        cases.push(("minilm", minilm, 128, 60));
    } else {
        eprintln!(
            "SKIP minilm: run scripts/fetch-models.sh to include the transformer encoder row"
        );
    }
    println!("model   | in-process p50 / mean | full path p50 / mean / p99        | overhead p50      | enclave peak / plain peak");
    for (name, path, seq, iters) in cases {
        let r = runtime.block_on(bench_model(name, &path, seq, iters));
        let over = r.remote_p50.as_secs_f64() - r.local_p50.as_secs_f64();
        println!(
            "{:<7} | {:>8.1} / {:>8.1} us | {:>8.1} / {:>8.1} / {:>8.1} us | {:>7.1} us {:>5.1}% | {:>6} / {:>6} MiB ({:.2}x)",
            r.name,
            r.local_p50.as_secs_f64() * 1e6,
            r.local_mean.as_secs_f64() * 1e6,
            r.remote_p50.as_secs_f64() * 1e6,
            r.remote_mean.as_secs_f64() * 1e6,
            r.remote_p99.as_secs_f64() * 1e6,
            over * 1e6,
            100.0 * over / r.local_p50.as_secs_f64(),
            r.enclave_peak_kib / 1024,
            r.plain_peak_kib / 1024,
            r.enclave_peak_kib as f64 / r.plain_peak_kib.max(1) as f64,
        );
    }
}

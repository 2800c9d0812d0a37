//! What the end-to-end benchmarks share: the repository, the models, their batch-1 inputs.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use cloister_enclave::inference::NamedTensor;
use cloister_kserve::{InferRequest, InferTensor, MetadataTensor, TensorData};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The benchmark models that exist here: (name, path, sequence length for symbolic dims). MiniLM needs
/// `scripts/fetch-models.sh`; without it a loud SKIP is printed.
pub(crate) fn models(with_mlp: bool) -> Vec<(&'static str, PathBuf, u64)> {
    let mut cases = Vec::new();
    if with_mlp {
        cases.push(("mlp", repo().join("models/sample/mlp/model.onnx"), 1));
    }
    cases.push(("magika", repo().join("models/sample/magika/model.onnx"), 1));
    let minilm = repo().join(".cache/models/paraphrase-MiniLM-L3-v2.onnx");
    if minilm.exists() {
        cases.push(("minilm", minilm, 128));
    } else {
        eprintln!(
            "SKIP minilm: run scripts/fetch-models.sh to include the transformer encoder row"
        );
    }
    cases
}

/// Inputs for batch 1: fixed dims as declared, symbolic dims (-1) as `seq` (sequence length or width).
pub(crate) fn inputs_for(meta: &[MetadataTensor], seq: u64) -> Vec<(String, Vec<u64>, TensorData)> {
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

/// The same inputs as a v2 request.
pub(crate) fn request_for(inputs: &[(String, Vec<u64>, TensorData)]) -> InferRequest {
    InferRequest {
        inputs: inputs
            .iter()
            .map(|(n, s, d)| InferTensor::new(n.clone(), s.clone(), d.clone()))
            .collect(),
        ..InferRequest::default()
    }
}

/// The same inputs for the engine.
pub(crate) fn engine_inputs(inputs: &[(String, Vec<u64>, TensorData)]) -> Vec<NamedTensor> {
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
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Peak resident memory of a process (KiB).
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// A `/proc/PID/status` field in KiB.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The enclave process of a deployment (the host's child).
pub(crate) fn enclave_pid(host: u32) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .arg("-P")
        .arg(host.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

//! Per-request latency of the full path — client → TLS 1.3 → host relay → enclave → tract → back — next
//! to the same model run in-process with the same engine, at batch 1, on a keep-alive attested session;
//! plus the enclave's peak memory next to a process that only loads and runs the model.
//!
//! Needs release binaries next to this benchmark: `cargo build --release --workspace --bins` first, then
//! `cargo bench -p cloister-tests --bench e2e_latency`. The MiniLM row needs `scripts/fetch-models.sh`.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_enclave::inference::LoadedModel;
use cloister_kserve::MetadataTensor;

mod common;
use common::{enclave_pid, engine_inputs, inputs_for, models, percentile, request_for, vm_hwm_kib};

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
    let inputs = inputs_for(&meta, seq);
    for _ in 0..20 {
        engine.run(engine_inputs(&inputs)).expect("run");
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
    let request = request_for(&inputs);

    // In-process: the same engine on the same input, in this process.
    let engine = LoadedModel::load(&std::fs::read(path).expect("model")).expect("load");
    let engine_inputs = || engine_inputs(&inputs);
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
        .and_then(enclave_pid)
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
    let cases = models(true).into_iter().map(|(name, path, seq)| {
        let iters = match name {
            "mlp" => 500,
            "magika" => 200,
            _ => 60,
        };
        (name, path, seq, iters)
    });
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

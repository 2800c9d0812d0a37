//! Throughput on concurrent clients, next to what the engine alone does with the same threads: for each
//! model, in-process tract on 1 and 2 threads (the ceiling of this machine), then a simulated deployment
//! loaded by `cloister bench` (one attested session per client, binary tensor extension) at 1, 2 and 64
//! clients. Side by side, in one run.
//!
//! Needs release binaries next to this benchmark: `cargo build --release --workspace --bins` first, then
//! `cargo bench -p cloister-tests --bench throughput`. The MiniLM rows need `scripts/fetch-models.sh`.
//! `CLOISTER_BENCH_SECONDS` sets each measurement's length (default 8).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_devnet::{sibling_bin_dir, Deployment, DeploymentOptions};
use cloister_enclave::inference::LoadedModel;
use cloister_kserve::MetadataTensor;
use serde_json::Value;

mod common;
use common::{enclave_pid, engine_inputs, inputs_for, models, proc_status_kib, request_for};

/// Runs per second of the engine alone on `threads` threads for `seconds`.
fn in_process(
    engine: &Arc<LoadedModel>,
    meta: &[MetadataTensor],
    seq: u64,
    threads: usize,
    seconds: f64,
) -> f64 {
    let inputs = Arc::new(inputs_for(meta, seq));
    for _ in 0..3 {
        engine.run(engine_inputs(&inputs)).expect("warm-up");
    }
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (engine, inputs, done) =
                (Arc::clone(engine), Arc::clone(&inputs), Arc::clone(&done));
            s.spawn(move || {
                while Instant::now() < until {
                    std::hint::black_box(engine.run(engine_inputs(&inputs)).expect("run"));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `cloister bench --json` against the deployment.
fn bench(d: &Deployment, model: &str, request: &Path, concurrency: usize, seconds: f64) -> Value {
    let out = Command::new(sibling_bin_dir().expect("bin dir").join("cloister"))
        .args(["bench", "--endpoint", &d.endpoint, "--policy"])
        .arg(&d.client_policy)
        .args(["--model", model, "--input"])
        .arg(request)
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--duration",
            &seconds.to_string(),
        ])
        .args(["--warmup", "3", "--binary", "--json"])
        .output()
        .expect("cloister bench");
    assert!(
        out.status.success(),
        "cloister bench: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench JSON")
}

async fn model_rows(name: &'static str, path: &Path, seq: u64, seconds: f64) {
    let engine = Arc::new(LoadedModel::load(&std::fs::read(path).expect("model")).expect("load"));
    let meta: Vec<MetadataTensor> = engine
        .inputs()
        .iter()
        .map(|s| serde_json::from_value(serde_json::to_value(s).expect("spec")).expect("spec"))
        .collect();
    let local: Vec<f64> = [1, 2]
        .iter()
        .map(|&t| in_process(&engine, &meta, seq, t, seconds))
        .collect();
    drop(engine);
    println!(
        "{name:<7} in-process tract     1 thread {:>7.1} runs/s | 2 threads {:>7.1} runs/s ({:.2}x)",
        local[0],
        local[1],
        local[1] / local[0]
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let options = DeploymentOptions::new(dir.path(), path, name).expect("binaries");
    let d = Deployment::start(&options).await.expect("deployment");
    drop(d.wait_ready(Duration::from_secs(300)).await.expect("ready"));
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&request_for(&inputs_for(&meta, seq))).unwrap(),
    )
    .unwrap();
    let enclave = d.host_pid().and_then(enclave_pid);
    let mut one = None;
    for c in [1usize, 2, 64] {
        let r = bench(&d, name, &request, c, seconds);
        let rps = r["throughput_rps"].as_f64().unwrap();
        let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
        let p99 = r["latency_ms"]["p99"].as_f64().unwrap();
        let (rps1, p50_1) = *one.get_or_insert((rps, p50));
        let rss = enclave
            .and_then(|p| proc_status_kib(p, "VmRSS:"))
            .unwrap_or(0)
            / 1024;
        println!(
            "{name:<7} cloister bench {c:>3} clients {rps:>7.1} req/s ({:.2}x) | p50 {p50:>7.2} ms p99 {p99:>7.2} ms (p99/p50(1) {:>5.1}) | errors {} | enclave RSS {rss} MiB",
            rps / rps1,
            p99 / p50_1,
            r["errors"],
        );
    }
    d.stop().await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: f64 = std::env::var("CLOISTER_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, path, seq) in models(false) {
        runtime.block_on(model_rows(name, &path, seq, seconds));
    }
}

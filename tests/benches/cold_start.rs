//! Cold start: from spawning `cloister-host` to the first ready answer on an attested session, next to
//! the time tract alone takes to load and optimise the same model in a fresh process. Between the two:
//! the host and enclave processes, the enclave's attestation to the key broker, fetching and opening
//! the sealed model, the client's attestation. Side by side, in one run.
//!
//! Needs release binaries next to this benchmark: `cargo build --release --workspace --bins` first, then
//! `cargo bench -p cloister-tests --bench cold_start`. The MiniLM row needs `scripts/fetch-models.sh`.
//! `CLOISTER_BENCH_RUNS` sets the runs per model (default 5; the median is reported).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_enclave::inference::LoadedModel;

mod common;
use common::models;

/// How often the client retries while the enclave starts. A poll is one attestation (a few ms of
/// CPU on a 2-core machine), so not faster than this.
const ATTEST_POLL: Duration = Duration::from_millis(10);
/// How often an attested session asks `/v2/health/ready` (one small request).
const READY_POLL: Duration = Duration::from_millis(2);

/// Child mode: read the model, time `LoadedModel::load` (decode, translate, type, optimise, plan) in a
/// process that has done nothing else, print the microseconds.
fn tract_child(model: &Path) {
    let bytes = std::fs::read(model).expect("model");
    let start = Instant::now();
    let engine = LoadedModel::load(&bytes).expect("load");
    let us = start.elapsed().as_micros();
    drop(engine);
    println!("{us}");
}

fn tract_alone(model: &Path) -> Duration {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("CLOISTER_BENCH_TRACT", model)
        .output()
        .expect("tract child");
    assert!(out.status.success(), "tract child failed");
    let us: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("microseconds");
    Duration::from_micros(us)
}

/// Host spawn → first `ready: true` on an attested session.
async fn cold_start(path: &Path, name: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = DeploymentOptions::new(dir.path(), path, name).expect("binaries");
    let d = Deployment::start(&options).await.expect("deployment");
    let deadline = d.host_started + Duration::from_secs(300);
    let mut session = loop {
        match d.session().await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "never attested: {e}");
                tokio::time::sleep(ATTEST_POLL).await;
            }
        }
    };
    loop {
        // A refused request (the enclave is still loading) is not an answer; retry.
        if let Ok(true) = session.ready().await {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(READY_POLL).await;
    }
    let elapsed = d.host_started.elapsed();
    drop(session);
    d.stop().await;
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if let Ok(model) = std::env::var("CLOISTER_BENCH_TRACT") {
        tract_child(Path::new(&model));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("CLOISTER_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("cold start, simulated platform, median of {runs} runs");
    for (name, path, _) in models(false) {
        let bytes = std::fs::metadata(&path).expect("model").len();
        let tract = median((0..runs).map(|_| tract_alone(&path)).collect());
        let cold = median(
            (0..runs)
                .map(|_| runtime.block_on(cold_start(&path, name)))
                .collect(),
        );
        println!(
            "{name:<7} {:>6.1} MB | tract load+optimise {:>8.1} ms | host start -> first ready {:>8.1} ms ({:.2}x)",
            bytes as f64 / 1e6,
            tract.as_secs_f64() * 1e3,
            cold.as_secs_f64() * 1e3,
            cold.as_secs_f64() / tract.as_secs_f64()
        );
    }
}

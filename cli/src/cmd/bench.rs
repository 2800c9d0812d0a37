//! `cloister bench`: a load generator for an attested enclave, in the spirit of Triton's perf_analyzer —
//! one attested session per worker, a progress bar while it runs, then throughput, latency percentiles and
//! errors by kind. Every answer is compared with the first one (the models are deterministic): a differing
//! answer counts as a `wrong_answer` error.
//!
//! Exit codes: 0 the run completed (even with errors, which are reported); 1 no session could attest; 2 usage.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloister_kserve::{InferRequest, InferResponse};
use cloister_session::{AttestedSession, SessionConfig, SessionError};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::{exit, runtime, Failure};

/// Arguments of `cloister bench`.
#[derive(clap::Args)]
#[command(
    about = "Load an attested enclave: N attested sessions, then throughput, latency percentiles and errors",
    long_about = "Load an attested enclave the way Triton's perf_analyzer loads a server: --concurrency workers, each with its own attested session (the policy must hold for every one), send the same request until --duration or --requests is reached. Prints throughput, p50/p90/p99/max latency and errors by kind (HTTP status, transport, wrong_answer: an answer that differs from the first); --json for scripts.\n\nWith --chat, an LLM instead: each worker streams greedy chat completions (--prompt, --max-tokens) and the run reports time to first token, decode ms/token and tokens/s per stream, and the aggregate token rate; --llm DIR adds the same completion run in this process by the same engine, for comparison. --requests is then the number of measured streams in all (default: 2 per worker; one more per worker warms up).\n\nExit codes: 0 the run completed (errors are reported, not fatal); 1 no session could be attested; 2 usage.",
    after_help = "Examples:\n  cloister bench --endpoint E --policy P --model magika --input request.json --concurrency 2 --duration 10\n  \
        cloister bench --endpoint E --policy P --model SmolLM2-135M-Instruct --chat --concurrency 4 --llm .cache/llm"
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) session: super::session_args::SessionArgs,
    /// The model's name.
    #[arg(long, value_name = "NAME")]
    pub(crate) model: String,
    /// The v2 request body (JSON) to send.
    #[arg(long, value_name = "FILE", required_unless_present = "chat")]
    input: Option<PathBuf>,
    /// Benchmark an LLM: streamed chat completions (`POST /v1/chat/completions`), greedy.
    #[arg(long, conflicts_with_all = ["input", "binary", "duration"])]
    pub(crate) chat: bool,
    /// With --chat: the user message [default: a short-story request whose answer is long].
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub(crate) prompt: Option<String>,
    /// With --chat: completion tokens per stream.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "chat")]
    pub(crate) max_tokens: usize,
    /// With --chat: also run the completion in this process from this LLM directory (model.onnx,
    /// tokenizer.json, chat_template.jinja, generation.json), with the same engine, for comparison.
    #[arg(long, value_name = "DIR", requires = "chat")]
    pub(crate) llm: Option<PathBuf>,
    /// Concurrent workers, each with its own attested session.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// Run for this many seconds.
    #[arg(long, value_name = "S", conflicts_with = "requests")]
    duration: Option<f64>,
    /// Send this many requests in all [default: 100 when --duration is not given].
    #[arg(long, value_name = "N")]
    pub(crate) requests: Option<u64>,
    /// Requests each worker sends first, not measured.
    #[arg(long, value_name = "N", default_value_t = 5)]
    warmup: u64,
    /// Send tensors with the binary tensor extension.
    #[arg(long)]
    binary: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    concurrency: usize,
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    duration_secs: f64,
    throughput_rps: f64,
    latency_ms: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// Runs `cloister bench`.
pub(crate) fn run(args: Args) -> ExitCode {
    exit(
        runtime().and_then(|rt| rt.block_on(bench(&args))),
        "bench failed",
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn kind(e: &SessionError) -> String {
    match e {
        SessionError::Status { status, .. } => format!("http_{}", status.as_u16()),
        SessionError::Timeout(_) => "timeout".into(),
        SessionError::Http(_) | SessionError::Tls(_) | SessionError::Connect { .. } => {
            "transport".into()
        }
        SessionError::Malformed(_) => "malformed".into(),
        _ => "other".into(),
    }
}

struct Shared {
    remaining: Option<AtomicU64>,
    /// When every session is attested and warm: the clock starts.
    start: std::sync::OnceLock<Instant>,
    duration: Option<Duration>,
    ready: tokio::sync::Barrier,
    latencies: Mutex<Vec<Duration>>,
    errors: Mutex<BTreeMap<String, u64>>,
    reference: Mutex<Option<InferResponse>>,
    bar: ProgressBar,
}

impl Shared {
    /// Claims the next request, or says the run is over.
    fn next(&self) -> bool {
        if let Some(d) = self.duration {
            // The first to ask after the barrier starts the clock (the main task may not have yet).
            return self.start.get_or_init(Instant::now).elapsed() < d;
        }
        self.remaining.as_ref().is_some_and(|r| {
            r.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    fn error(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }
}

async fn worker(
    args: Arc<(String, Arc<SessionConfig>, String, InferRequest, bool, u64)>,
    shared: Arc<Shared>,
) -> Result<(), SessionError> {
    let (endpoint, trust, model, request, binary, warmup) = &*args;
    let prepared = async {
        let mut session = AttestedSession::connect(endpoint, trust).await?;
        session.attested_model(model).await?;
        for _ in 0..*warmup {
            let _ = session.infer_attested(model, request, *binary).await;
        }
        Ok::<_, SessionError>(session)
    }
    .await;
    // Every worker reaches the barrier, attested or not, so that none waits forever.
    shared.ready.wait().await;
    let mut session = prepared?;
    while shared.next() {
        let started = Instant::now();
        match session.infer_attested(model, request, *binary).await {
            Ok(response) => {
                let took = started.elapsed();
                let mut reference = shared
                    .reference
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match &*reference {
                    None => *reference = Some(response),
                    Some(r) if r.outputs != response.outputs => {
                        drop(reference);
                        shared.error("wrong_answer".into());
                        continue;
                    }
                    Some(_) => {}
                }
                drop(reference);
                shared
                    .latencies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(took);
            }
            Err(e) => {
                shared.error(kind(&e));
                if matches!(e, SessionError::Http(_) | SessionError::Tls(_)) {
                    // The connection is gone: attest a new one.
                    session = AttestedSession::connect(endpoint, trust).await?;
                    session.attested_model(model).await?;
                }
            }
        }
        shared.bar.inc(1);
    }
    Ok(())
}

async fn bench(args: &Args) -> Result<(), Failure> {
    if args.concurrency == 0 {
        return Err(Failure::Usage("--concurrency must be at least 1".into()));
    }
    if args.chat {
        return super::bench_chat::bench_chat(args).await;
    }
    let trust = args.session.trust()?;
    let input = args
        .input
        .as_deref()
        .ok_or_else(|| Failure::Usage("--input is required (or --chat)".into()))?;
    let request = read_request(input)?;
    let requests = args.requests.or(args.duration.is_none().then_some(100));
    let bar = progress_bar(requests, args.duration, args.json);
    let shared = Arc::new(Shared {
        remaining: requests.map(AtomicU64::new),
        start: std::sync::OnceLock::new(),
        duration: args.duration.map(Duration::from_secs_f64),
        ready: tokio::sync::Barrier::new(args.concurrency + 1),
        latencies: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
        reference: Mutex::new(None),
        bar,
    });
    let worker_args = Arc::new((
        args.session.endpoint.clone(),
        trust,
        args.model.clone(),
        request,
        args.binary,
        args.warmup,
    ));
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&worker_args), Arc::clone(&shared))))
        .collect();
    // Every session attested and warm first, then the clock starts: the run measures inference, not
    // attestation.
    shared.ready.wait().await;
    let started = *shared.start.get_or_init(Instant::now);
    let mut attest_failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => attest_failures.push(e.to_string()),
            Err(e) => attest_failures.push(e.to_string()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    shared.bar.finish_and_clear();
    let report = summarize(args.concurrency, &shared, &attest_failures, elapsed)?;
    print_report(&report, args.json)
}

/// The v2 request body of `--input`.
fn read_request(input: &std::path::Path) -> Result<InferRequest, Failure> {
    let body = std::fs::read(input)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", input.display())))?;
    InferRequest::decode(&body, None)
        .map_err(|e| Failure::Usage(format!("--input: not a v2 request: {e}")))
}

/// A progress bar on a terminal (of `requests`, or a spinner for `duration` seconds); hidden otherwise and
/// with `--json`.
fn progress_bar(requests: Option<u64>, duration: Option<f64>, json: bool) -> ProgressBar {
    if std::io::stderr().is_terminal() && !json {
        let bar = match (requests, duration) {
            (Some(n), _) => ProgressBar::new(n),
            (None, Some(d)) => ProgressBar::new_spinner().with_message(format!("{d} s")),
            (None, None) => ProgressBar::hidden(),
        };
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {per_sec} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    } else {
        ProgressBar::hidden()
    }
}

/// The report of a finished run; an error when no session attested and nothing was measured. Workers'
/// session failures count as `session` errors, each distinct reason printed once on stderr.
fn summarize(
    concurrency: usize,
    shared: &Shared,
    attest_failures: &[String],
    elapsed: f64,
) -> Result<Report, Failure> {
    let mut latencies = std::mem::take(
        &mut *shared
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if latencies.is_empty() && !attest_failures.is_empty() {
        return Err(Failure::Refused(format!(
            "no session attested: {}",
            attest_failures[0]
        )));
    }
    latencies.sort();
    let mut errors = shared
        .errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if !attest_failures.is_empty() {
        errors.insert("session".into(), attest_failures.len() as u64);
        let mut distinct = attest_failures.to_vec();
        distinct.sort();
        distinct.dedup();
        for reason in distinct {
            eprintln!("cloister bench: a worker's session failed: {reason}");
        }
    }
    let ok = latencies.len() as u64;
    Ok(Report {
        concurrency,
        requests: ok + errors.values().sum::<u64>(),
        ok,
        errors,
        duration_secs: elapsed,
        throughput_rps: ok as f64 / elapsed.max(1e-9),
        latency_ms: Latency {
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            mean: if latencies.is_empty() {
                0.0
            } else {
                latencies.iter().sum::<Duration>().as_secs_f64() * 1000.0 / latencies.len() as f64
            },
        },
    })
}

/// Prints the report: one JSON object with `--json`, else three lines.
fn print_report(report: &Report, json: bool) -> Result<(), Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).map_err(|e| Failure::Usage(e.to_string()))?
        );
    } else {
        println!(
            "{} requests ({} ok) by {} attested session(s) in {:.2} s: {:.1} req/s",
            report.requests,
            report.ok,
            report.concurrency,
            report.duration_secs,
            report.throughput_rps
        );
        let l = &report.latency_ms;
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            l.p50, l.p90, l.p99, l.max, l.mean
        );
        if report.errors.is_empty() {
            println!("errors: none");
        } else {
            let list: Vec<String> = report
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("errors: {}", list.join(", "));
        }
    }
    Ok(())
}

//! `cloister bench --chat`: streamed chat completions through the attested path — time to first token and
//! decode speed per stream, and the aggregate token rate — with, given `--llm DIR`, the same prompt and token
//! count run in this process by the same engine (tract, no TLS, no relay, no enclave) for comparison.
//!
//! Greedy decoding: every stream must produce the same text; one that differs counts as `wrong_answer`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloister_inference::llm::{
    ChatMessage, CompletionRequest, Llm, LlmBundle, SamplingParams, ENTRY_NAMES,
};
use cloister_session::{AttestedSession, SessionConfig};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use super::bench::Args;
use super::Failure;

/// The default prompt: its greedy answer runs well past 64 tokens.
pub(crate) const DEFAULT_PROMPT: &str =
    "Write a short story about a lighthouse keeper who finds a message in a bottle.";

/// One stream's timings.
#[derive(Debug, Clone, Copy)]
struct Stream {
    ttft: Duration,
    decode_per_token: Duration,
    tokens: u64,
}

/// What the workers collect: the measured streams, errors by kind, and the first answer's text (greedy: every
/// stream must give the same).
#[derive(Default)]
struct Collected {
    streams: Vec<Stream>,
    errors: BTreeMap<String, u64>,
    first_text: Option<String>,
}

/// What `--chat` measured.
#[derive(Debug, Serialize)]
struct ChatReport {
    concurrency: usize,
    streams: usize,
    errors: BTreeMap<String, u64>,
    completion_tokens: u64,
    duration_secs: f64,
    aggregate_tokens_per_s: f64,
    ttft_ms: Summary,
    decode_ms_per_token: Summary,
    tokens_per_s_per_stream: f64,
    in_process: Option<InProcess>,
}

#[derive(Debug, Serialize)]
struct Summary {
    p50: f64,
    max: f64,
    mean: f64,
}

/// The same completion run in this process, by the same engine.
#[derive(Debug, Serialize)]
struct InProcess {
    load_secs: f64,
    ttft_ms: f64,
    decode_ms_per_token: f64,
    tokens: u64,
}

fn summary(mut v: Vec<f64>) -> Summary {
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    Summary {
        p50: v.get(v.len() / 2).copied().unwrap_or(0.0),
        max: v.last().copied().unwrap_or(0.0),
        mean,
    }
}

/// Runs `cloister bench --chat`.
pub(crate) async fn bench_chat(args: &Args) -> Result<(), Failure> {
    if args.concurrency == 0 {
        return Err(Failure::Usage("--concurrency must be at least 1".into()));
    }
    let trust = args.session.trust()?;
    let prompt = args
        .prompt
        .clone()
        .unwrap_or_else(|| DEFAULT_PROMPT.to_owned());
    let body = Bytes::from(
        serde_json::to_vec(&json!({
            "model": args.model,
            "messages": [{ "role": "user", "content": prompt }],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": true,
        }))
        .map_err(Failure::usage)?,
    );
    let per_worker = args
        .requests
        .map_or(2, |n| n.div_ceil(args.concurrency as u64))
        .max(1);
    let results = Arc::new(Mutex::new(Collected::default()));
    let ready = Arc::new(tokio::sync::Barrier::new(args.concurrency + 1));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (trust, endpoint, model, body, results, ready) = (
            Arc::clone(&trust),
            args.session.endpoint.clone(),
            args.model.clone(),
            body.clone(),
            Arc::clone(&results),
            Arc::clone(&ready),
        );
        tasks.push(tokio::spawn(async move {
            worker(
                &trust, &endpoint, &model, body, per_worker, &results, &ready,
            )
            .await
        }));
    }
    ready.wait().await;
    let started = Instant::now();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let duration = started.elapsed();
    if failures.len() == args.concurrency {
        return Err(Failure::Refused(format!(
            "no session could run: {}",
            failures[0]
        )));
    }
    let Collected {
        streams, errors, ..
    } = std::mem::take(
        &mut *results
            .lock()
            .map_err(|_| Failure::Refused("a worker failed".into()))?,
    );
    let in_process = match &args.llm {
        Some(dir) => Some(in_process(dir, &prompt, args.max_tokens)?),
        None => None,
    };
    let tokens: u64 = streams.iter().map(|s| s.tokens).sum();
    let decode: Vec<f64> = streams
        .iter()
        .map(|s| s.decode_per_token.as_secs_f64() * 1e3)
        .collect();
    let decode_summary = summary(decode);
    let report = ChatReport {
        concurrency: args.concurrency,
        streams: streams.len(),
        errors,
        completion_tokens: tokens,
        duration_secs: duration.as_secs_f64(),
        aggregate_tokens_per_s: tokens as f64 / duration.as_secs_f64().max(1e-9),
        ttft_ms: summary(streams.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect()),
        tokens_per_s_per_stream: if decode_summary.mean > 0.0 {
            1e3 / decode_summary.mean
        } else {
            0.0
        },
        decode_ms_per_token: decode_summary,
        in_process,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(Failure::usage)?
        );
        return Ok(());
    }
    println!(
        "chat: {} streams of {} tokens at concurrency {} in {:.1} s: {:.1} tokens/s in all",
        report.streams,
        args.max_tokens,
        report.concurrency,
        report.duration_secs,
        report.aggregate_tokens_per_s
    );
    println!(
        "  time to first token: p50 {:.1} ms, max {:.1} ms",
        report.ttft_ms.p50, report.ttft_ms.max
    );
    println!(
        "  decode: {:.2} ms/token (p50 {:.2}), {:.1} tokens/s per stream",
        report.decode_ms_per_token.mean,
        report.decode_ms_per_token.p50,
        report.tokens_per_s_per_stream
    );
    if let Some(local) = &report.in_process {
        println!(
            "  in-process tract (same prompt, {} tokens, loaded in {:.1} s): first token {:.1} ms, decode {:.2} ms/token; \
             attested path decode = {:.2}x in-process speed",
            local.tokens,
            local.load_secs,
            local.ttft_ms,
            local.decode_ms_per_token,
            local.decode_ms_per_token / report.decode_ms_per_token.mean.max(1e-9)
        );
    }
    for (kind, n) in &report.errors {
        println!("  errors: {kind}: {n}");
    }
    Ok(())
}

/// One worker: an attested session, one warm-up stream, then `count` measured streams.
async fn worker(
    trust: &SessionConfig,
    endpoint: &str,
    model: &str,
    body: Bytes,
    count: u64,
    results: &Mutex<Collected>,
    ready: &tokio::sync::Barrier,
) -> Result<(), String> {
    let session = async {
        let mut s = AttestedSession::connect(endpoint, trust).await?;
        s.attested_model(model).await?;
        Ok::<_, cloister_session::SessionError>(s)
    }
    .await;
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            ready.wait().await;
            return Err(e.to_string());
        }
    };
    let warm = one_stream(&mut session, body.clone()).await;
    ready.wait().await;
    warm?;
    for _ in 0..count {
        let outcome = one_stream(&mut session, body.clone()).await;
        let mut r = results.lock().map_err(|_| "poisoned".to_owned())?;
        match outcome {
            Ok((stream, text)) => match &r.first_text {
                Some(first) if *first != text => {
                    *r.errors.entry("wrong_answer".into()).or_default() += 1
                }
                _ => {
                    r.first_text.get_or_insert(text);
                    r.streams.push(stream);
                }
            },
            Err(kind) => *r.errors.entry(kind).or_default() += 1,
        }
    }
    Ok(())
}

/// Sends one streamed completion and times it: (timings, text) or an error kind.
async fn one_stream(
    session: &mut AttestedSession,
    body: Bytes,
) -> Result<(Stream, String), String> {
    let headers = [("content-type", "application/json".to_owned())];
    let sent = Instant::now();
    let response = session
        .send_streaming(Method::POST, "/v1/chat/completions", &headers, body)
        .await
        .map_err(|_| "transport".to_owned())?;
    if response.status() != StatusCode::OK {
        return Err(format!("http_{}", response.status().as_u16()));
    }
    let mut body = response.into_body();
    let (mut first, mut last, mut tokens, mut text) = (None, sent, 0u64, String::new());
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "transport".to_owned())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let Some(payload) = event[..end].strip_prefix(b"data: ") else {
                continue;
            };
            if payload == b"[DONE]" {
                continue;
            }
            let chunk: Value =
                serde_json::from_slice(payload).map_err(|_| "malformed".to_owned())?;
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                if !piece.is_empty() {
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    text.push_str(piece);
                }
            }
            if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    let first = first.ok_or_else(|| "no_tokens".to_owned())?;
    let decode_per_token = if tokens > 1 {
        (last - first) / u32::try_from(tokens - 1).unwrap_or(u32::MAX)
    } else {
        Duration::ZERO
    };
    Ok((
        Stream {
            ttft: first - sent,
            decode_per_token,
            tokens,
        },
        text,
    ))
}

/// The same greedy completion in this process: load the bundle, run it twice (the first warms up), time the
/// second.
fn in_process(dir: &Path, prompt: &str, max_tokens: usize) -> Result<InProcess, Failure> {
    let mut files = Vec::new();
    for name in ENTRY_NAMES {
        let path = dir.join(name);
        files.push(
            std::fs::read(&path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?,
        );
    }
    let bundle = LlmBundle::build(&files[0], &files[1], &files[2], &files[3]);
    drop(files);
    let loading = Instant::now();
    let parsed = LlmBundle::parse(&bundle).map_err(|e| Failure::Usage(e.to_string()))?;
    let llm = Llm::from_bundle(&parsed).map_err(|e| Failure::Usage(e.to_string()))?;
    let load_secs = loading.elapsed().as_secs_f64();
    drop(bundle);
    let request = CompletionRequest {
        messages: vec![ChatMessage {
            role: "user".into(),
            content: prompt.to_owned(),
        }],
        max_tokens,
        sampling: SamplingParams::GREEDY,
        stop: vec![],
    };
    let mut measured = None;
    for _ in 0..2 {
        let mut completion = llm
            .complete(&request, llm.context_length())
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let started = Instant::now();
        let mut first = None;
        let mut tokens = 0u64;
        while completion
            .step()
            .map_err(|e| Failure::Refused(e.to_string()))?
            .is_some()
        {
            tokens += 1;
            first.get_or_insert_with(Instant::now);
        }
        let first = first.unwrap_or(started);
        let decode = if tokens > 1 {
            (Instant::now() - first).as_secs_f64() * 1e3 / (tokens - 1) as f64
        } else {
            0.0
        };
        measured = Some(InProcess {
            load_secs,
            ttft_ms: (first - started).as_secs_f64() * 1e3,
            decode_ms_per_token: decode,
            tokens,
        });
    }
    measured.ok_or_else(|| Failure::Refused("nothing measured".into()))
}

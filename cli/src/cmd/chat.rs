//! `cloister chat`: a conversation with an LLM in an attested enclave, for a person at a terminal. The
//! session is attested before anything is sent, the model's digest is checked against the evidence, the
//! answer is printed token by token as the enclave streams it, and each answer's receipt is checked: signed
//! by the attested enclave's key over this request and exactly the text that was printed.
//!
//! Exit codes: 0 done; 1 refused (attestation, the model, the enclave's answer, or a receipt that does not
//! match); 2 usage or I/O error.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use bytes::Bytes;
use cloister_governance::Receipt;
use cloister_session::AttestedSession;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

use super::session_args::SessionArgs;
use super::{exit, runtime, Failure};

/// Arguments of `cloister chat`.
#[derive(clap::Args)]
#[command(
    about = "Chat with an LLM in an attested enclave; answers stream as they are generated",
    long_about = "Chat with an LLM served by an attested enclave (POST /v1/chat/completions).\n\n\
        The session is attested against --policy before anything is sent, and the model's digest must be \
        one the evidence attests. With PROMPT, asks once and exits; without, reads one question per line \
        from stdin until end of input, keeping the conversation. Answers are printed on stdout as the \
        enclave generates them; what was attested, and each answer's receipt check, go to stderr.\n\n\
        Each answer's receipt is checked when the session attested: signed by the key in the enclave's \
        evidence, over the SHA-256 of this request, the model's digest, and the SHA-256 of exactly the \
        text printed. A receipt that does not match is a refusal (exit 1).\n\n\
        Exit codes: 0 done; 1 refused (attestation, model, the enclave's answer, or a receipt); 2 usage or \
        I/O error.",
    after_help = "Examples:\n  cloister chat --endpoint 127.0.0.1:8443 --policy policy.toml --model SmolLM2-135M-Instruct \
        \"What is the capital of France?\"\n  cloister chat --endpoint 127.0.0.1:8443 --policy policy.toml --model \
        SmolLM2-135M-Instruct --temperature 0"
)]
pub(crate) struct Args {
    #[command(flatten)]
    session: SessionArgs,
    /// The LLM, as the enclave serves it (`GET /v1/models`).
    #[arg(long, value_name = "NAME")]
    model: String,
    /// A system message that starts the conversation.
    #[arg(long, value_name = "TEXT")]
    system: Option<String>,
    /// Completion tokens at most per answer.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature, 0 to 2; 0 is greedy (the same answer every time).
    #[arg(long, value_name = "T", default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probabilities add up to P, in (0, 1].
    #[arg(long, value_name = "P")]
    top_p: Option<f32>,
    /// The sampler's seed (answers repeat for a seed).
    #[arg(long, value_name = "N")]
    seed: Option<i64>,
    /// Do not print what was attested.
    #[arg(long)]
    quiet: bool,
    /// Ask this and exit (default: read questions from stdin).
    #[arg(value_name = "PROMPT")]
    prompt: Option<String>,
}

/// Runs `cloister chat`.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(chat(&args)));
    exit(result, "refused")
}

async fn chat(args: &Args) -> Result<(), Failure> {
    if !(0.0..=2.0).contains(&args.temperature) {
        return Err(Failure::Usage(
            "--temperature must be between 0 and 2".into(),
        ));
    }
    let trust = args.session.trust()?;
    let mut session = AttestedSession::connect(&args.session.endpoint, &trust).await?;
    if !args.quiet {
        for line in super::infer::describe_session(&session) {
            eprintln!("{line}");
        }
    }
    let meta = session.attested_model(&args.model).await?;
    if !args.quiet {
        eprintln!("model: {} ({}), attested", args.model, meta.digest);
    }
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    if let Some(prompt) = &args.prompt {
        messages.push(json!({ "role": "user", "content": prompt }));
        ask(args, &mut session, &messages).await?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    let interactive = std::io::IsTerminal::is_terminal(&stdin);
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        let read = stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Usage(format!("stdin: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        let question = line.trim_end_matches(['\r', '\n']);
        if question.trim().is_empty() {
            continue;
        }
        messages.push(json!({ "role": "user", "content": question }));
        let answer = ask(args, &mut session, &messages).await?;
        messages.push(json!({ "role": "assistant", "content": answer }));
    }
}

/// Sends the conversation, prints the answer as it streams, checks its receipt; returns the answer.
async fn ask(
    args: &Args,
    session: &mut AttestedSession,
    messages: &[Value],
) -> Result<String, Failure> {
    let mut request = json!({
        "model": args.model,
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": true,
    });
    if let Some(p) = args.top_p {
        request["top_p"] = json!(p);
    }
    if let Some(s) = args.seed {
        request["seed"] = json!(s);
    }
    let body = Bytes::from(serde_json::to_vec(&request).map_err(Failure::usage)?);
    let request_digest = digest(&SHA256, &body);
    let headers = [("content-type", "application/json".to_owned())];
    let response = session
        .send_streaming(Method::POST, "/v1/chat/completions", &headers, body)
        .await?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(Failure::Refused(format!(
            "the enclave answered {status}: {message}"
        )));
    }
    let mut pending = Vec::new();
    let mut answer = String::new();
    let mut last: Option<Value> = None;
    let mut done = false;
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Refused(format!("the stream broke: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let text = std::str::from_utf8(&event[..end])
                .map_err(|_| Failure::Refused("the stream is not UTF-8".into()))?;
            let Some(payload) = text.strip_prefix("data: ") else {
                continue;
            };
            if payload == "[DONE]" {
                done = true;
                continue;
            }
            let chunk: Value = serde_json::from_str(payload)
                .map_err(|e| Failure::Refused(format!("a stream event is not JSON: {e}")))?;
            if let Some(message) = chunk["error"]["message"].as_str() {
                return Err(Failure::Refused(format!("generation failed: {message}")));
            }
            if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(piece);
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
            if !chunk["choices"][0]["finish_reason"].is_null() {
                last = Some(chunk);
            }
        }
    }
    println!();
    let last = match (done, last) {
        (true, Some(last)) => last,
        _ => {
            return Err(Failure::Refused(
                "the stream ended before the answer did".into(),
            ))
        }
    };
    check_receipt(session, &last, request_digest.as_ref(), &answer)?;
    if !args.quiet {
        eprintln!(
            "[{} prompt + {} completion tokens, finish: {}; receipt verified: signed by the attested enclave over \
             this request and this answer]",
            last["usage"]["prompt_tokens"],
            last["usage"]["completion_tokens"],
            last["choices"][0]["finish_reason"].as_str().unwrap_or("?"),
        );
    }
    Ok(answer)
}

/// The last chunk's receipt: opened with the receipt key of the evidence this session verified, and bound to
/// this request, an attested model, and the answer as printed.
fn check_receipt(
    session: &AttestedSession,
    last: &Value,
    request_digest: &[u8],
    answer: &str,
) -> Result<(), Failure> {
    let claims = session.evidence().claims();
    let Some(key) = claims.receipt_key.as_deref() else {
        return Err(Failure::Refused(
            "the enclave's evidence names no receipt key".into(),
        ));
    };
    let Some(header) = last["cloister_receipt"].as_str() else {
        return Err(Failure::Refused("the answer carries no receipt".into()));
    };
    let payload = Receipt::from_header(header)
        .and_then(|r| r.open(key))
        .map_err(|e| Failure::Refused(format!("receipt: {e}")))?;
    let mismatch = |what: &str| Failure::Refused(format!("receipt: {what} does not match"));
    if payload.request[..] != *request_digest {
        return Err(mismatch("the request digest"));
    }
    if payload.response[..] != *digest(&SHA256, answer.as_bytes()).as_ref() {
        return Err(mismatch("the digest of the answer printed"));
    }
    if !claims
        .model_digests
        .iter()
        .any(|d| d.0 == payload.model_digest)
    {
        return Err(mismatch("the model digest"));
    }
    let attested = claims
        .signer_of(&payload.model_digest)
        .map(|s| (s.signer, s.root_digest));
    if payload.provenance.map(|p| (p.signer, p.root_digest)) != attested {
        return Err(mismatch("the model's signer"));
    }
    Ok(())
}

//! `GET /v1/models` and `POST /v1/chat/completions`: OpenAI's chat API for the LLMs this enclave serves
//! (a slot whose sealed plaintext is an LLM bundle), inside the same attested TLS session as the v2 API.
//!
//! A request goes through the same governance as an inference, counted in tokens: the client's request budget
//! first, then a permit (before the body is read), the body within `max_body_bytes`, the prompt rendered and
//! tokenized on the inference pool, the context checked against the model and the memory budget (KV cache per
//! token; a clear 400 with the limit, never an out-of-memory), the memory reserved, the prompt tokens charged to
//! the client's element budget, then generation on the pool. Completion tokens are charged when it ends; a
//! completion already running is not cut by its own tokens.
//!
//! Streaming (`"stream": true`): server-sent events as OpenAI sends them, `data: {chunk}` then `data: [DONE]`.
//! The HTTP status is decided before the first event (a refused request is a 4xx, not a broken stream). The
//! generation thread hands events to the connection through a small queue; when the client goes away, the
//! queue's receiver is dropped with the response body and generation stops at the next token. A client that
//! stays connected but stops reading is taken as gone after 30 s of a full queue (`STALLED_READER`): a stream
//! holds an inference thread, which a slow reader must not keep.
//!
//! Receipts: when the session attested, the last chunk (the one with `finish_reason`) carries
//! `cloister_receipt`, a receipt signed when the completion ended over the SHA-256 of the request body, the model
//! digest, and the SHA-256 of the whole completion text; a non-streamed answer carries it in the
//! `cloister-receipt` header and the body's `cloister_receipt`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use cloister_governance::audit::RequestRecord;
use cloister_governance::receipt::RECEIPT_HEADER;
use hyper::body::{Body, Frame};
use ring::digest::{digest, SHA256};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::infer::over_budget;
use super::*;
use crate::inference::llm::{
    ChatMessage, CompletionRequest, FinishReason, Llm, SamplingParams, Step,
};

/// `max_tokens` when the request gives none.
pub(super) const DEFAULT_MAX_TOKENS: usize = 512;
/// At most this many stop texts (OpenAI's limit), each at most [`MAX_STOP_BYTES`].
pub(super) const MAX_STOPS: usize = 4;
/// Longest stop text, in bytes.
pub(super) const MAX_STOP_BYTES: usize = 256;
/// Events queued between the generation thread and a slow reader before generation waits.
const EVENT_QUEUE: usize = 32;
/// Memory a prompt token needs while the prompt is fed, beyond its KV cache: its row of logits and the
/// activations around it (a bound: four vocabulary-sized f32 rows).
const PREFILL_ROWS: u64 = 4;

/// `GET /v1/models`: the LLMs loaded, with their digests.
pub(super) fn models(enclave: &Enclave) -> Resp {
    let data: Vec<Value> = enclave
        .models()
        .iter()
        .filter(|m| m.llm().is_some())
        .map(|m| {
            json!({
                "id": m.name(),
                "object": "model",
                "created": 0,
                "owned_by": "cloister",
                "cloister_digest": m.digest().to_string(),
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`.
pub(super) fn error_response(e: &ApiError) -> Resp {
    let kind = match e.status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
        s if s.is_client_error() => "invalid_request_error",
        _ => "server_error",
    };
    let mut resp = json(
        e.status,
        &json!({ "error": { "message": e.message, "type": kind, "param": null, "code": null } }),
    );
    if let Some(secs) = e
        .retry_after
        .or((e.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1))
    {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

// ---- the request ---------------------------------------------------------------------------------------

/// The request body. Unknown fields are refused by name: a parameter this server would silently ignore
/// (say `logit_bias`) would make the client believe it applied.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<WireStop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Only 1.
    n: Option<u32>,
    /// Only 0 (not implemented: refused otherwise rather than ignored).
    frequency_penalty: Option<f32>,
    /// Only 0.
    presence_penalty: Option<f32>,
    /// Only false.
    logprobs: Option<bool>,
    /// Accepted and not used: the client's identity is its TLS certificate.
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[allow(dead_code)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    role: String,
    content: WireContent,
    #[allow(dead_code)]
    name: Option<String>,
}

impl fmt::Debug for WireMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireMessage")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A message's content: a string, or OpenAI's list of parts, of which only text parts are served.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WireStop {
    One(String),
    Many(Vec<String>),
}

/// A checked request: what generation needs, and what the response repeats.
struct ChatRequest {
    model: String,
    completion: CompletionRequest,
    stream: bool,
}

/// [`parse_request`] for [`super::check_chat_request`].
pub(super) fn check_request(body: &[u8]) -> Result<usize, (u16, String)> {
    parse_request(body)
        .map(|r| r.completion.max_tokens)
        .map_err(|e| (e.status.as_u16(), e.message))
}

fn parse_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let wire: WireRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid chat request: {e}")))?;
    let unsupported = |field: &str, allowed: &str| {
        ApiError::bad_request(format!("`{field}` is not supported here (only {allowed})"))
    };
    if wire.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "1"));
    }
    if wire.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("frequency_penalty", "0"));
    }
    if wire.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(unsupported("presence_penalty", "0"));
    }
    if wire.logprobs == Some(true) {
        return Err(unsupported("logprobs", "false"));
    }
    if wire.stream_options.is_some() && wire.stream != Some(true) {
        return Err(ApiError::bad_request(
            "`stream_options` needs `\"stream\": true`",
        ));
    }
    if wire.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(wire.messages.len());
    for (ix, m) in wire.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{ix}].role `{}` is not one of system, developer, user, assistant",
                    truncate(other, 32)
                )))
            }
        };
        let content = match m.content {
            WireContent::Text(t) => t,
            WireContent::Parts(parts) => {
                let mut text = String::new();
                for (p, part) in parts.into_iter().enumerate() {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{ix}].content[{p}]: only parts of type `text` with a `text` are served"
                            )))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage {
            role: role.to_owned(),
            content,
        });
    }
    let stop = match wire.stop {
        None => vec![],
        Some(WireStop::One(s)) => vec![s],
        Some(WireStop::Many(v)) => v,
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad_request(format!(
            "`stop` has {} texts; at most {MAX_STOPS}",
            stop.len()
        )));
    }
    if let Some(ix) = stop
        .iter()
        .position(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::bad_request(format!(
            "`stop`[{ix}] must be 1 to {MAX_STOP_BYTES} bytes"
        )));
    }
    let max_tokens = match wire.max_completion_tokens.or(wire.max_tokens) {
        None => DEFAULT_MAX_TOKENS,
        Some(0) => return Err(ApiError::bad_request("`max_tokens` must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let seed = match wire.seed {
        // The bits of the client's seed, as given.
        Some(seed) => seed as u64,
        None => {
            let mut bytes = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(
                |_| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "no randomness for sampling",
                    )
                },
            )?;
            u64::from_le_bytes(bytes)
        }
    };
    let sampling = SamplingParams {
        temperature: wire.temperature.unwrap_or(1.0),
        top_p: wire.top_p.unwrap_or(1.0),
        seed,
    };
    sampling
        .check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ChatRequest {
        model: wire.model,
        completion: CompletionRequest {
            messages,
            max_tokens,
            sampling,
            stop,
        },
        stream: wire.stream == Some(true),
    })
}

// ---- serving -------------------------------------------------------------------------------------------

/// What the generation task hands the connection.
enum Reply {
    /// A whole JSON answer (not streamed), with its receipt header.
    Whole {
        body: Bytes,
        receipt: Option<String>,
    },
    /// One server-sent event, already framed.
    Event(Bytes),
}

/// A chat completion under the enclave's governance; every outcome is counted, a served one is an audit line
/// (written when generation ends).
pub(super) async fn governed_chat(
    ctx: &Arc<Connection>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let started = Instant::now();
    let enclave = &ctx.enclave;
    let governance = enclave.governance();
    let refused = |status: StatusCode, what: &str| {
        governance.count(
            &ctx.client,
            &format!("chat {what}"),
            &format!("refused:{}", status.as_u16()),
        );
        enclave
            .metrics()
            .request(what, status.as_u16(), started.elapsed());
    };
    let budget = infer::admit_client(ctx);
    let budget = budget.inspect_err(|e| refused(e.status, "-"))?;
    let limits = *enclave.limits();
    let Ok(permit) = Arc::clone(enclave.inference_permits()).try_acquire_owned() else {
        let e = busy(&format!(
            "too many concurrent requests (limit {})",
            limits.max_concurrent_requests
        ));
        refused(e.status, "-");
        return Err(e);
    };
    let body = read_body(req, limits.max_body_bytes)
        .await
        .inspect_err(|e| refused(e.status, "-"))?;
    let request = parse_request(&body).inspect_err(|e| refused(e.status, "-"))?;
    let (slot, llm) = match enclave.model(&request.model) {
        Some(slot) => match slot.llm() {
            Some(llm) => (slot, Arc::clone(llm)),
            None if slot.model().is_some() => {
                let e = ApiError::bad_request(format!(
                    "model `{}` is not an LLM: use POST /v2/models/{}/infer",
                    slot.name(),
                    slot.name()
                ));
                refused(e.status, slot.name());
                return Err(e);
            }
            None => {
                let e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("model `{}` is not ready", slot.name()),
                );
                refused(e.status, slot.name());
                return Err(e);
            }
        },
        None => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model `{}` is not served here",
                    truncate(&request.model, 64)
                ),
            );
            refused(e.status, "-");
            return Err(e);
        }
    };
    let name = slot.name().to_owned();
    let request_digest: [u8; 32] = digest(&SHA256, &body)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32]);
    drop(body);
    let (tx, mut rx) = mpsc::channel::<Result<Reply, ApiError>>(EVENT_QUEUE);
    let task = Generate {
        ctx: Arc::clone(ctx),
        name: name.clone(),
        llm,
        request,
        request_digest,
        budget,
        started,
    };
    tokio::spawn(async move {
        let _permit = permit;
        task.run(tx).await;
    });
    // The status is decided by the first thing the task says: a refusal, or the first event / whole answer.
    match rx.recv().await {
        Some(Ok(Reply::Whole { body, receipt })) => {
            let mut resp = bytes_response(StatusCode::OK, JSON_CONTENT_TYPE, body, None);
            if let Some(value) = receipt.and_then(|r| HeaderValue::from_str(&r).ok()) {
                resp.headers_mut().insert(RECEIPT_HEADER, value);
            }
            Ok(resp)
        }
        Some(Ok(Reply::Event(first))) => {
            let mut resp = Response::new(
                EventBody {
                    first: Some(first),
                    rx,
                }
                .boxed(),
            );
            let headers = resp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert("cache-control", HeaderValue::from_static("no-cache"));
            Ok(resp)
        }
        Some(Err(e)) => Err(e),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generation failed",
        )),
    }
}

/// The response body of a stream: events as the generation task sends them; a refusal after the first
/// event (the pool failed) becomes an error event.
struct EventBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Result<Reply, ApiError>>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx.poll_recv(cx).map(|next| {
            next.map(|reply| {
                Ok(Frame::data(match reply {
                    Ok(Reply::Event(b) | Reply::Whole { body: b, .. }) => b,
                    Err(e) => {
                        event(&json!({ "error": { "message": e.message, "type": "server_error" } }))
                    }
                }))
            })
        })
    }
}

/// `data: <json>\n\n`.
fn event(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(value).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// One completion's work, after the request was read and checked.
struct Generate {
    ctx: Arc<Connection>,
    name: String,
    llm: Arc<Llm>,
    request: ChatRequest,
    request_digest: [u8; 32],
    budget: Option<String>,
    started: Instant,
}

/// How generation ended.
struct Generated {
    prompt_tokens: usize,
    completion_tokens: usize,
    text: String,
    /// `None`: the client went away (or the stream broke) before the end.
    finish: Option<FinishReason>,
}

impl Generate {
    async fn run(self, tx: mpsc::Sender<Result<Reply, ApiError>>) {
        let outcome = self.generate(&tx).await;
        let enclave = &self.ctx.enclave;
        let status = match &outcome {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status,
        };
        match outcome {
            Ok(done) => {
                // Completion tokens count against the element budget too; the completion is already served.
                let _ = enclave
                    .governance()
                    .budgets()
                    .charge_elements(&self.ctx.client, done.completion_tokens as u64);
                enclave.governance().audit().record(RequestRecord {
                    session: self.ctx.session_hex(),
                    client: self.ctx.client.clone(),
                    model: self.name.clone(),
                    model_digest: enclave
                        .model(&self.name)
                        .map(|s| s.digest().to_string())
                        .unwrap_or_default(),
                    input_elements: done.prompt_tokens as u64,
                    output_elements: done.completion_tokens as u64,
                    latency_ms: self.started.elapsed().as_millis() as u64,
                    outcome: if done.finish.is_some() {
                        "ok".into()
                    } else {
                        "client-gone".into()
                    },
                    budget: self.budget.clone(),
                });
            }
            Err(e) => {
                enclave.governance().count(
                    &self.ctx.client,
                    &format!("chat {}", self.name),
                    &format!("refused:{}", e.status.as_u16()),
                );
                let _ = tx.send(Err(e)).await;
            }
        }
        enclave
            .metrics()
            .request(&self.name, status.as_u16(), self.started.elapsed());
    }

    async fn generate(
        &self,
        tx: &mpsc::Sender<Result<Reply, ApiError>>,
    ) -> Result<Generated, ApiError> {
        let enclave = &*self.ctx.enclave;
        let limits = *enclave.limits();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(limits.max_queue_wait_secs);
        // The prompt, rendered and tokenized on the pool (a long message is milliseconds of work).
        let llm = Arc::clone(&self.llm);
        let messages = self.request.completion.messages.clone();
        let prompt = enclave
            .pool()
            .run(deadline, move || llm.chat().prompt_ids(&messages))
            .await
            .map_err(infer::pool_error)?
            .map_err(llm_error)?;
        // The context this completion may use: the model's, and what the memory budget can hold.
        let kv = self.llm.decoder().kv_bytes_per_token().max(1);
        let row = (self.llm.decoder().vocabulary() as u64).saturating_mul(4 * PREFILL_ROWS);
        let budget_tokens = enclave.memory().bytes() / kv.saturating_add(row);
        let context_limit = usize::try_from(budget_tokens)
            .unwrap_or(usize::MAX)
            .min(self.llm.context_length());
        let total = prompt
            .len()
            .saturating_add(self.request.completion.max_tokens);
        if total > context_limit {
            return Err(ApiError::bad_request(format!(
                "the prompt has {} tokens and max_tokens asks for {} more; this deployment allows at most {} \
                 tokens of context per completion (model context {}, memory budget {} bytes at {} bytes a token)",
                prompt.len(),
                self.request.completion.max_tokens,
                context_limit,
                self.llm.context_length(),
                enclave.memory().bytes(),
                kv.saturating_add(row),
            )));
        }
        let needed = (total as u64)
            .saturating_mul(kv)
            .saturating_add((prompt.len() as u64).saturating_mul(row));
        let grant = enclave
            .memory()
            .admit(needed, deadline)
            .await
            .map_err(infer::pool_error)?;
        enclave
            .governance()
            .budgets()
            .charge_elements(&self.ctx.client, prompt.len() as u64)
            .map_err(|over| over_budget(&over))?;

        let id = format!("chatcmpl-{}", hex::encode(&self.request_digest[..12]));
        let created = crate::governance::unix_now();
        let head = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": self.name });
        let llm = Arc::clone(&self.llm);
        let completion = self.request.completion.clone();
        let stream = self.request.stream;
        let events = tx.clone();
        let generated = enclave
            .pool()
            .run(deadline, move || {
                let _grant = grant;
                generate_on_pool(&llm, prompt, &completion, context_limit, |step| {
                    if !stream {
                        return true;
                    }
                    let chunk = match step {
                        None => chunk(&head, json!({ "role": "assistant", "content": "" }), None),
                        Some(s) if s.text.is_empty() => return !events.is_closed(),
                        Some(s) => chunk(&head, json!({ "content": s.text }), None),
                    };
                    send_or_give_up(&events, chunk, STALLED_READER)
                })
            })
            .await
            .map_err(infer::pool_error)??;
        let Some(finish) = generated.finish else {
            return Ok(generated);
        };
        let slot = enclave
            .model(&self.name)
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation failed"))?;
        let response_digest: [u8; 32] = digest(&SHA256, generated.text.as_bytes())
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let receipt = self
            .ctx
            .receipt(slot, self.request_digest, response_digest)?
            .map(|r| r.to_header());
        let usage = json!({
            "prompt_tokens": generated.prompt_tokens,
            "completion_tokens": generated.completion_tokens,
            "total_tokens": generated.prompt_tokens + generated.completion_tokens,
        });
        if stream {
            let mut last = serde_json::from_slice::<Value>(&chunk(
                &json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": self.name }),
                json!({}),
                Some(finish),
            )[6..])
            .unwrap_or_default();
            last["usage"] = usage;
            if let Some(r) = &receipt {
                last["cloister_receipt"] = json!(r);
            }
            let _ = tx.send(Ok(Reply::Event(event(&last)))).await;
            let _ = tx
                .send(Ok(Reply::Event(Bytes::from_static(b"data: [DONE]\n\n"))))
                .await;
        } else {
            let mut whole = json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": self.name,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": generated.text },
                    "finish_reason": finish.as_str(),
                }],
                "usage": usage,
            });
            if let Some(r) = &receipt {
                whole["cloister_receipt"] = json!(r);
            }
            let body = serde_json::to_vec(&whole).unwrap_or_default();
            let _ = tx
                .send(Ok(Reply::Whole {
                    body: body.into(),
                    receipt,
                }))
                .await;
        }
        Ok(generated)
    }
}

/// How long a client may leave [`EVENT_QUEUE`] events unread before the enclave takes it as gone: generation
/// holds an inference thread, which a client reading a byte a second must not keep for ever.
const STALLED_READER: Duration = Duration::from_secs(30);

/// Queues one event for the connection, waiting while the queue is full; false when the client is gone or has
/// not read for `stalled` ([`STALLED_READER`]; generation then stops, as for a disconnect).
fn send_or_give_up(
    events: &mpsc::Sender<Result<Reply, ApiError>>,
    chunk: Bytes,
    stalled: Duration,
) -> bool {
    let deadline = Instant::now() + stalled;
    let mut reply = Ok(Reply::Event(chunk));
    loop {
        match events.try_send(reply) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    tracing::info!("a chat client stopped reading its stream: generation stopped");
                    return false;
                }
                reply = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A `chat.completion.chunk` event with one choice.
fn chunk(head: &Value, delta: Value, finish: Option<FinishReason>) -> Bytes {
    let mut c = head.clone();
    c["choices"] =
        json!([{ "index": 0, "delta": delta, "finish_reason": finish.map(FinishReason::as_str) }]);
    event(&c)
}

/// Runs a completion on an inference thread. `emit(None)` once before the prompt is fed (the stream's first
/// event), then `emit(Some(step))` per token; `emit` returning false (the client is gone) stops generation.
fn generate_on_pool(
    llm: &Llm,
    prompt: Vec<u32>,
    request: &CompletionRequest,
    context_limit: usize,
    mut emit: impl FnMut(Option<&Step>) -> bool,
) -> Result<Generated, ApiError> {
    let mut completion = llm
        .complete_prompt(prompt, request, context_limit)
        .map_err(llm_error)?;
    let mut out = Generated {
        prompt_tokens: completion.prompt_tokens(),
        completion_tokens: 0,
        text: String::new(),
        finish: None,
    };
    if !emit(None) {
        return Ok(out);
    }
    while let Some(step) = completion.step().map_err(llm_error)? {
        out.completion_tokens = completion.completion_tokens();
        out.text.push_str(&step.text);
        if !emit(Some(&step)) {
            return Ok(out);
        }
        out.finish = step.finish;
    }
    Ok(out)
}

/// A request the engine refused is the client's (400); a model failure is the server's (500, logged without
/// tract's chain, which can print weights).
fn llm_error(e: InferenceError) -> ApiError {
    match e {
        InferenceError::Prompt(_)
        | InferenceError::Sampling { .. }
        | InferenceError::ContextTooLong { .. }
        | InferenceError::Template(_)
        | InferenceError::Tokenizer(_) => ApiError::bad_request(e.to_string()),
        other => {
            tracing::error!("generation failed: {other}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "generation failed")
        }
    }
}

#[cfg(test)]
mod tests;

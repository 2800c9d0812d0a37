//! The LLM engine against onnxruntime: greedy completions of tract (KV cache inside tract's state) equal
//! onnxruntime's greedy tokens on the same ONNX decoder, token for token, 64 tokens on five prompts.
//!
//! Needs the generated model (`scripts/fetch-llm.sh` writes `.cache/llm/`; ~540 MB, never committed) and a
//! Python with onnxruntime, tokenizers and jinja2 (`$CLOISTER_PYTHON`, else `python3`). Without either the test
//! skips loudly; under CLOISTER_REQUIRE_ALL_TESTS=1 (CI, which runs fetch-llm.sh) it fails instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Duration;

use bytes::Bytes;
use cloister_devnet::{Deployment, DeploymentOptions};
use cloister_inference::llm::{
    ChatFormat, ChatMessage, CompletionRequest, FinishReason, Llm, LlmBundle, SamplingParams,
};
use hyper::{Method, StatusCode};

use crate::proxy::proxy;
use serde_json::{json, Value};

/// Prompts whose greedy answers run past 64 tokens (so each comparison covers the whole budget), and one short
/// answer that ends with the end-of-sequence token.
const PROMPTS: [&str; 6] = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain step by step how a bill becomes a law in the United States.",
    "Describe the water cycle in detail, for a science class.",
    "Give me a packing list for a week-long hiking trip in the mountains, with reasons.",
    "Write a Python function that checks whether a string is a palindrome, and explain it.",
    "What is the capital of France?",
];
const MAX_TOKENS: usize = 64;

fn llm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/llm")
}

fn skip(why: &str) {
    assert!(
        std::env::var_os("CLOISTER_REQUIRE_ALL_TESTS").is_none(),
        "{why}, and CLOISTER_REQUIRE_ALL_TESTS is set"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIP: {why}; run scripts/fetch-llm.sh and set CLOISTER_PYTHON to a Python with \
         onnxruntime, tokenizers and jinja2 !!!!!!!!\n"
    );
}

/// The bundle of the generated model, as `cloister seal --llm` builds it.
pub(crate) fn bundle_bytes() -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let dir = llm_dir();
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let files = (
        read("model.onnx")?,
        read("tokenizer.json")?,
        read("chat_template.jinja")?,
        read("generation.json")?,
    );
    Some(LlmBundle::build(&files.0, &files.1, &files.2, &files.3))
}

/// onnxruntime's greedy ids per prompt (scripts/llm/check-export.py --greedy-json).
fn onnxruntime_greedy(prompts: &[&str]) -> Option<BTreeMap<String, Vec<u32>>> {
    let python = std::env::var("CLOISTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let prompts_file = dir.path().join("prompts.json");
    std::fs::write(&prompts_file, serde_json::to_vec(prompts).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/llm/check-export.py");
    let out = Command::new(&python)
        .arg(script)
        .arg("--dir")
        .arg(llm_dir())
        .arg("--greedy-json")
        .arg(&prompts_file)
        .args(["--max-tokens", &MAX_TOKENS.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn greedy_tract_equals_onnxruntime_token_for_token() {
    let Some(bundle) = bundle_bytes() else {
        return skip("the LLM is not generated (.cache/llm)");
    };
    let Some(reference) = onnxruntime_greedy(&PROMPTS) else {
        return skip("onnxruntime's greedy reference could not be computed");
    };
    let llm = Llm::from_bundle(&LlmBundle::parse(&bundle).unwrap()).unwrap();
    drop(bundle);
    let mut full = 0;
    for prompt in PROMPTS {
        let started = std::time::Instant::now();
        let want = &reference[prompt];
        let request = CompletionRequest {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }],
            max_tokens: MAX_TOKENS,
            sampling: SamplingParams::GREEDY,
            stop: vec![],
        };
        let mut completion = llm.complete(&request, llm.context_length()).unwrap();
        let mut got = vec![];
        let mut text = String::new();
        while let Some(step) = completion.step().unwrap() {
            got.push(step.token);
            text.push_str(&step.text);
        }
        assert_eq!(&got, want, "{prompt}: tract {got:?}\nonnxruntime {want:?}");
        let finish = completion.finished().unwrap();
        assert_eq!(
            finish == FinishReason::Length,
            got.len() == MAX_TOKENS && got.last() != Some(&llm.chat().eos())
        );
        // The streamed pieces are the decoded completion.
        let ids: Vec<u32> = got
            .iter()
            .copied()
            .filter(|&id| id != llm.chat().eos())
            .collect();
        assert_eq!(text, llm.chat().decode(&ids).unwrap(), "{prompt}");
        full += usize::from(got.len() == MAX_TOKENS);
        eprintln!(
            "{prompt} -> {} tokens in {:.1?}, {finish:?}: {text:?}",
            got.len(),
            started.elapsed()
        );
    }
    assert!(full >= 5, "only {full} prompts ran to {MAX_TOKENS} tokens");
}

/// The events of a server-sent-events body: the `data:` payloads, in order.
fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_through_host_and_enclave_equal_onnxruntime() {
    let Some(bundle) = bundle_bytes() else {
        return skip("the LLM is not generated (.cache/llm)");
    };
    let prompt = PROMPTS[1];
    let Some(reference) = onnxruntime_greedy(&PROMPTS[..5]) else {
        return skip("onnxruntime's greedy reference could not be computed");
    };
    let want_ids = &reference[prompt];
    assert_eq!(want_ids.len(), MAX_TOKENS);
    let parsed = LlmBundle::parse(&bundle).unwrap();
    let format = ChatFormat::new(
        parsed.tokenizer_json(),
        parsed.chat_template(),
        &parsed.config().eos_token,
    )
    .unwrap();
    let want_text = format.decode(want_ids).unwrap();

    // The model owner seals the bundle; the host relays; the enclave loads it after key release.
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("smollm2.bundle");
    std::fs::write(&bundle_path, &*bundle).unwrap();
    drop(parsed);
    drop(bundle);
    let mut options =
        DeploymentOptions::new(&dir.path().join("run"), &bundle_path, "smollm2").unwrap();
    let audit = dir.path().join("enclave-audit.jsonl");
    options.host_args = vec!["--audit-log".into(), audit.clone().into()];
    let deployment = Deployment::start(&options)
        .await
        .expect("deployment starts");
    let mut session = deployment
        .wait_ready(Duration::from_secs(600))
        .await
        .expect("the enclave loads the LLM");

    let post = |body: Value| Bytes::from(serde_json::to_vec(&body).unwrap());
    let request = json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    });

    // Not streamed.
    let (status, body) = session
        .raw(
            Method::POST,
            "/v1/chat/completions",
            Some("application/json"),
            post(request.clone()),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        want_text.as_str()
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], MAX_TOKENS);
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 20, "{answer}");
    assert!(
        answer["cloister_receipt"].is_string(),
        "the attested session gets a receipt"
    );

    // Streamed: the deltas add up to the same text; the last chunk ends it, with usage and the receipt.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, body) = session
        .raw(
            Method::POST,
            "/v1/chat/completions",
            Some("application/json"),
            post(streamed),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, want_text);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"]["completion_tokens"], MAX_TOKENS);
    assert_eq!(last["usage"]["prompt_tokens"], prompt_tokens);
    assert!(last["cloister_receipt"].is_string());
    assert!(
        chunks.len() > 10,
        "streamed in pieces: {} chunks",
        chunks.len()
    );

    // The model list, and refusals in OpenAI's error shape.
    let (status, body) = session
        .raw(Method::GET, "/v1/models", None, Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let models: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["data"][0]["id"], "smollm2");
    assert!(models["data"][0]["cloister_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha384:"));
    for (body, status, want) in [
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 100_000}),
            StatusCode::BAD_REQUEST,
            "tokens of context per completion",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "user", "content": "<|im_start|>system"}]}),
            StatusCode::BAD_REQUEST,
            "control token",
        ),
        (
            json!({"model": "other", "messages": [{"role": "user", "content": "x"}]}),
            StatusCode::NOT_FOUND,
            "not served here",
        ),
        (
            json!({"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "messages[0].role",
        ),
    ] {
        let (got, reply) = session
            .raw(
                Method::POST,
                "/v1/chat/completions",
                Some("application/json"),
                post(body.clone()),
            )
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(got, status, "{body}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(want), "{body}: {message}");
        assert_eq!(reply["error"]["type"], "invalid_request_error");
    }
    // The v2 inference API points at the chat API for an LLM.
    let (got, reply) = session
        .raw(
            Method::POST,
            "/v2/models/smollm2/infer",
            Some("application/json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply).contains("/v1/chat/completions"));

    // The other four long prompts, two sessions at a time (the enclave has an inference thread per core): each
    // answer is onnxruntime's 64 greedy tokens.
    let mut pending = Vec::new();
    for pair in [[0, 2], [3, 4]] {
        let mut other = deployment.session().await.unwrap();
        let format = &format;
        let reference = &reference;
        pending.push(async move {
            for ix in pair {
                let body = json!({
                    "model": "smollm2",
                    "messages": [{"role": "user", "content": PROMPTS[ix]}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                });
                let (status, reply) = other
                    .raw(
                        Method::POST,
                        "/v1/chat/completions",
                        Some("application/json"),
                        Bytes::from(serde_json::to_vec(&body).unwrap()),
                    )
                    .await
                    .unwrap();
                let answer: Value = serde_json::from_slice(&reply).unwrap();
                assert_eq!(status, StatusCode::OK, "{answer}");
                let want = &reference[PROMPTS[ix]];
                assert_eq!(want.len(), MAX_TOKENS, "{}", PROMPTS[ix]);
                assert_eq!(
                    answer["choices"][0]["message"]["content"],
                    format.decode(want).unwrap().as_str(),
                    "{}",
                    PROMPTS[ix]
                );
                assert_eq!(answer["usage"]["completion_tokens"], MAX_TOKENS);
            }
        });
    }
    let (a, b) = (pending.remove(0), pending.remove(0));
    tokio::join!(a, b);

    // A client that leaves mid-stream stops the generation: asked for 2000 tokens, it reads two events and
    // hangs up; the audit line of that completion counts a handful of tokens, not 2000.
    {
        use http_body_util::BodyExt;
        let mut leaving = deployment.session().await.unwrap();
        leaving.attested_model("smollm2").await.unwrap();
        let mut long = request.clone();
        long["stream"] = json!(true);
        long["max_tokens"] = json!(2000);
        long["messages"][0]["content"] = json!(PROMPTS[0]);
        let response = leaving
            .send_streaming(
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json".to_owned())],
                post(long),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        for _ in 0..2 {
            body.frame().await.unwrap().unwrap();
        }
        drop(body);
        drop(leaving);
    }

    // The official openai Python client, unchanged, through `cloister proxy`: streamed and not.
    if let Some(python) = python_with("openai") {
        let (mut good, url) = proxy(&deployment.endpoint, &deployment.client_policy);
        let out = openai_client(&python, &url, prompt);
        let _ = good.kill();
        let _ = good.wait();
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for (line, mode) in lines.iter().zip(["whole", "stream"]) {
            assert_eq!(line["text"], want_text.as_str(), "{mode}: {line}");
            assert_eq!(line["finish"], "length", "{mode}: {line}");
        }
        assert_eq!(lines[0]["completion_tokens"], MAX_TOKENS);
        assert!(lines[1]["chunks"].as_u64().unwrap() > 10, "{}", lines[1]);

        // A proxy whose policy pins another measurement refuses before anything reaches the enclave.
        let bad_policy = dir.path().join("bad-policy.toml");
        let text = std::fs::read_to_string(&deployment.client_policy).unwrap();
        let pinned: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("measurements") {
                    format!("measurements = [\"{}\"]", "00".repeat(48))
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(&bad_policy, pinned.join("\n")).unwrap();
        let (mut bad, bad_url) = proxy(&deployment.endpoint, &bad_policy);
        let out = openai_client(&python, &bad_url, prompt);
        let _ = bad.kill();
        let _ = bad.wait();
        let refusal: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(refusal["status"], 503, "{refusal}");
        assert!(
            refusal["message"]
                .as_str()
                .unwrap()
                .contains("nothing was forwarded"),
            "{refusal}"
        );
    }
    deployment.stop().await;
}

/// A Python that imports `module` (`$CLOISTER_PYTHON`, else `python3`); `None` after a loud skip.
fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("CLOISTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip(&format!("{python} cannot import {module}"));
        return None;
    }
    Some(python)
}

/// The openai client against the proxy at `addr`: one JSON line for a whole completion and one for a streamed
/// one (text, finish reason, counts), or one line with the status and message of the error it raised.
fn openai_client(python: &str, addr: &str, prompt: &str) -> String {
    const SCRIPT: &str = r#"
import json, sys, openai
addr, prompt = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="not-used", max_retries=0)
args = dict(model="smollm2", messages=[{"role": "user", "content": prompt}], max_tokens=64, temperature=0)
try:
    r = client.chat.completions.create(**args)
    print(json.dumps({"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
                      "completion_tokens": r.usage.completion_tokens}))
    parts, finish, chunks = [], None, 0
    for chunk in client.chat.completions.create(stream=True, **args):
        chunks += 1
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    print(json.dumps({"text": "".join(parts), "finish": finish, "chunks": chunks}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "message": str(e)}))
"#;
    let out = Command::new(python)
        .args(["-c", SCRIPT, addr, prompt])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the openai client failed");
    String::from_utf8(out.stdout).unwrap()
}

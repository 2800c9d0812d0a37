//! The LLM engine against onnxruntime: greedy completions of tract (KV cache inside tract's state) equal
//! onnxruntime's greedy tokens on the same ONNX decoder, token for token, 64 tokens on five prompts.
//!
//! Needs the generated model (`scripts/fetch-llm.sh` writes `.cache/llm/`; ~540 MB, never committed) and a
//! Python with onnxruntime, tokenizers and jinja2 (`$CLOISTER_PYTHON`, else `python3`). Without either the test
//! skips loudly; under CLOISTER_REQUIRE_ALL_TESTS=1 (CI, which runs fetch-llm.sh) it fails instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cloister_inference::llm::{
    ChatMessage, CompletionRequest, FinishReason, Llm, LlmBundle, SamplingParams,
};

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

/// The bundle of the generated model, as `cloister seal --llm` would build it.
pub(crate) fn bundle() -> Option<LlmBundle> {
    let dir = llm_dir();
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let files = (
        read("model.onnx")?,
        read("tokenizer.json")?,
        read("chat_template.jinja")?,
        read("generation.json")?,
    );
    Some(LlmBundle::parse(LlmBundle::build(&files.0, &files.1, &files.2, &files.3)).unwrap())
}

/// onnxruntime's greedy ids per prompt (scripts/llm/check-export.py --greedy-json).
fn onnxruntime_greedy() -> Option<BTreeMap<String, Vec<u32>>> {
    let python = std::env::var("CLOISTER_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.json");
    std::fs::write(&prompts, serde_json::to_vec(&PROMPTS).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/llm/check-export.py");
    let out = Command::new(&python)
        .arg(script)
        .arg("--dir")
        .arg(llm_dir())
        .arg("--greedy-json")
        .arg(&prompts)
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
    let Some(bundle) = bundle() else {
        return skip("the LLM is not generated (.cache/llm)");
    };
    let Some(reference) = onnxruntime_greedy() else {
        return skip("onnxruntime's greedy reference could not be computed");
    };
    let llm = Llm::from_bundle(&bundle).unwrap();
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

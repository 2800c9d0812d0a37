//! The enclave's audit log from untrusted bytes (the host stores it): `audit::verify_log` and the line parser
//! (`audit::Line`, serde_json).
//!
//! Properties, not just "never panics":
//! - every line that parses re-serialises to text that parses to the same line;
//! - the log is verified with the key of each of its start lines (the key is the input's, so that mutations
//!   of the seeds, which the real writer made, reach the signatures), and with keys of no chain;
//! - what verifies is what the enclave wrote: the verified chain is, line for line, a prefix of a chain in the
//!   seeds (the real writer's output, embedded below) that ends at a signed line, its last line is the stop
//!   exactly when the report says sealed, and the report's counts add up. Without the enclave's private key
//!   no mutation can make anything else verify; one that does is a forgery (issue 21, item 3: a checkpoint
//!   relabelled `stop` verified as sealed).
#![no_main]

use std::sync::OnceLock;

use cloister_governance::audit::{verify_log, Line, LogReport};
use libfuzzer_sys::fuzz_target;

/// Logs the real writer made (`write_fuzz_seeds` in governance/src/audit/tests.rs), also in the corpus.
const GENUINE: [&str; 4] = [
    include_str!("../corpus/audit_log/sealed.jsonl"),
    include_str!("../corpus/audit_log/cut-at-checkpoint.jsonl"),
    include_str!("../corpus/audit_log/unsigned-tail.jsonl"),
    include_str!("../corpus/audit_log/two-instances.jsonl"),
];

/// Keys tried per input: its start lines' (at most this many), then two no chain has.
const MAX_KEYS: usize = 4;

fn parse(raw: &str) -> Option<Line> {
    serde_json::from_str(raw).ok()
}

/// The chain of `key_hex` as `verify_log` walks it: from its start line to the next start line (or the end),
/// blank lines skipped.
fn chain_of<'a>(text: &'a str, key_hex: &str) -> Vec<&'a str> {
    let mut chain = Vec::new();
    for raw in text.lines() {
        if raw.trim().is_empty() {
            continue;
        }
        let is_start = parse(raw).is_some_and(|l| l.kind == "start");
        if is_start {
            if !chain.is_empty() {
                break;
            }
            if parse(raw).and_then(|l| l.receipt_key).as_deref() == Some(key_hex) {
                chain.push(raw);
            }
        } else if !chain.is_empty() {
            chain.push(raw);
        }
    }
    chain
}

fn genuine_chains() -> &'static [Vec<&'static str>] {
    static CHAINS: OnceLock<Vec<Vec<&'static str>>> = OnceLock::new();
    CHAINS.get_or_init(|| {
        let mut chains = Vec::new();
        for log in GENUINE {
            let mut current: Vec<&'static str> = Vec::new();
            for raw in log.lines().filter(|l| !l.trim().is_empty()) {
                if parse(raw).is_some_and(|l| l.kind == "start") && !current.is_empty() {
                    chains.push(std::mem::take(&mut current));
                }
                current.push(raw);
            }
            chains.push(current);
        }
        chains
    })
}

fn check_verified(text: &str, key_hex: &str, report: &LogReport) {
    let chain = chain_of(text, key_hex);
    assert_eq!(
        report.lines as usize,
        chain.len(),
        "every line of the chain is counted"
    );
    let resumes = u64::from(report.resumed_state_version.is_some());
    assert_eq!(
        report.lines,
        1 + report.requests + report.tallies + resumes + report.checkpoints,
        "every verified line is a start, a request, a tally, the resume or a signed line"
    );
    assert!(
        report.checkpoints >= 1,
        "a verified chain ends at a signed line"
    );
    let last = parse(chain[chain.len() - 1]).map(|l| l.kind);
    let want = if report.stopped { "stop" } else { "checkpoint" };
    assert_eq!(last.as_deref(), Some(want), "the last verified line");
    let Some(source) = genuine_chains().iter().find(|g| g.starts_with(&chain)) else {
        panic!(
            "a chain the enclave did not write verified:\n{}",
            chain.join("\n")
        );
    };
    if report.stopped {
        assert_eq!(
            source.len(),
            chain.len(),
            "sealed, yet the enclave wrote more"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut keys: Vec<String> = Vec::new();
    for raw in text.lines() {
        let Some(line) = parse(raw) else {
            continue;
        };
        let again = serde_json::to_string(&line).expect("a parsed line serialises");
        let back: Line = serde_json::from_str(&again).expect("a serialised line parses");
        assert_eq!(back, line, "{raw} -> {again}");
        if line.kind == "start" && keys.len() < MAX_KEYS {
            if let Some(key) = line.receipt_key.filter(|k| !keys.contains(k)) {
                keys.push(key);
            }
        }
    }
    keys.push(String::new());
    keys.push("42".repeat(32));
    for key_hex in keys {
        // A key that is not hex is tried as its bytes: any key is the caller's to give.
        let key = hex::decode(&key_hex).unwrap_or_else(|_| key_hex.as_bytes().to_vec());
        match verify_log(text, &key) {
            Ok(report) => check_verified(text, &hex::encode(&key), &report),
            Err(e) => assert!(e.to_string().starts_with("audit log"), "{e}"),
        }
    }
});

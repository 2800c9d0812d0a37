//! The enclave's tamper-evident audit log: one JSON line per request (and per start, checkpoint and stop),
//! each naming the SHA-256 of the line before it, with a checkpoint signed by the enclave's record key every
//! N lines and a signed `stop` at shutdown.
//!
//! ```text
//! {"seq":0,"prev":"00…00","time":T,"kind":"start","receipt_key":"<hex>","config_digest":"sha384:…"}
//! {"seq":1,"prev":"<sha256 of line 0>","time":T,"kind":"request","session":"<hex16>"|null,
//!  "client":"sha256:<cert>"|"anonymous","model":"…","model_digest":"sha384:…","input_elements":N,
//!  "output_elements":N,"latency_ms":N,"outcome":"ok"|"refused:<status>","budget":"…"|null}
//! {"seq":k,"prev":"…","time":T,"kind":"checkpoint"|"stop","signature":"<hex Ed25519, 64 bytes>"}
//!   signature over "cloister-audit-checkpoint-v1" ‖ seq (u64 LE) ‖ prev (32 bytes)
//! ```
//!
//! Never inputs, outputs or their digests: sizes, times and outcomes only. The enclave hands the lines to the
//! host (stdout, prefixed `cloister-audit `), which stores them: it cannot forge a line (the next `prev` and the
//! next checkpoint would not match), reorder or drop one (`seq` and `prev`), or cut the log after a checkpoint
//! without leaving an unsigned tail or a log without its `stop`. [`verify_log`] finds the first such break.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::signer::{self, RecordSigner};
use crate::Error;

/// The prefix of audit lines on the enclave's stdout.
pub const STDOUT_PREFIX: &str = "cloister-audit ";
const CHECKPOINT_DOMAIN: &[u8] = b"cloister-audit-checkpoint-v1";

/// One request, as the audit log records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The session ([`crate::session_id`]), hex; `None` when the client did not attest.
    pub session: Option<String>,
    /// `sha256:<client certificate>` or `anonymous`.
    pub client: String,
    /// The model's name.
    pub model: String,
    /// The model's digest (`sha384:…`).
    pub model_digest: String,
    /// Elements in the request's inputs.
    pub input_elements: u64,
    /// Elements in the response's outputs.
    pub output_elements: u64,
    /// Time from the request's arrival to its answer.
    pub latency_ms: u64,
    /// `ok`, or `refused:<HTTP status>`.
    pub outcome: String,
    /// The client's budget state after this request (e.g. `minute 58/60, day 120/10000`), if budgets apply.
    pub budget: Option<String>,
}

/// A line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// SHA-256 of the previous line's bytes (zeros for a start).
    pub prev: String,
    /// Unix seconds.
    pub time: u64,
    /// `start`, `request`, `checkpoint` or `stop`.
    pub kind: String,
    /// start: the record key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_key: Option<String>,
    /// start: the enclave configuration's digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// checkpoint, stop: the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// request: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub request: Option<RequestRecord>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

fn checkpoint_message(seq: u64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = CHECKPOINT_DOMAIN.to_vec();
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(prev);
    m
}

struct Chain {
    seq: u64,
    prev: [u8; 32],
    since_checkpoint: u32,
    stopped: bool,
}

/// The enclave side: appends lines and signs checkpoints. Thread-safe; lines go to `sink` in order.
pub struct AuditWriter {
    chain: Mutex<Chain>,
    signer: Arc<RecordSigner>,
    every: u32,
    sink: Box<dyn Fn(&str) + Send + Sync>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("checkpoint_every", &self.every)
            .finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Starts a chain (writes its `start` line): a checkpoint every `every` lines (at least 1).
    pub fn start(
        signer: Arc<RecordSigner>,
        every: u32,
        config_digest: &str,
        sink: Box<dyn Fn(&str) + Send + Sync>,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        let writer = AuditWriter {
            chain: Mutex::new(Chain {
                seq: 0,
                prev: [0; 32],
                since_checkpoint: 0,
                stopped: false,
            }),
            every: every.max(1),
            sink,
            clock,
            signer,
        };
        let key = hex::encode(writer.signer.public_key());
        writer.append(|seq, prev, time| Line {
            seq,
            prev,
            time,
            kind: "start".into(),
            receipt_key: Some(key),
            config_digest: Some(config_digest.to_owned()),
            signature: None,
            request: None,
        });
        writer
    }

    fn append(&self, make: impl FnOnce(u64, String, u64) -> Line) -> bool {
        let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        if chain.stopped {
            return false;
        }
        let line = make(chain.seq, hex::encode(chain.prev), (self.clock)());
        let text = serde_json::to_string(&line).unwrap_or_default();
        chain.prev = sha256(text.as_bytes());
        chain.seq += 1;
        chain.since_checkpoint += 1;
        (self.sink)(&text);
        true
    }

    fn signed(&self, kind: &'static str) {
        let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        if chain.stopped {
            return;
        }
        let (seq, prev) = (chain.seq, chain.prev);
        let signature = self
            .signer
            .sign(&checkpoint_message(seq, &prev))
            .map(hex::encode)
            .unwrap_or_default();
        let line = Line {
            seq,
            prev: hex::encode(prev),
            time: (self.clock)(),
            kind: kind.into(),
            receipt_key: None,
            config_digest: None,
            signature: Some(signature),
            request: None,
        };
        let text = serde_json::to_string(&line).unwrap_or_default();
        chain.prev = sha256(text.as_bytes());
        chain.seq += 1;
        chain.since_checkpoint = 0;
        chain.stopped = kind == "stop";
        (self.sink)(&text);
    }

    /// Records a request; signs a checkpoint when `every` lines have passed since the last.
    pub fn record(&self, record: RequestRecord) {
        let written = self.append(|seq, prev, time| Line {
            seq,
            prev,
            time,
            kind: "request".into(),
            receipt_key: None,
            config_digest: None,
            signature: None,
            request: Some(record),
        });
        let due = self
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since_checkpoint
            >= self.every;
        if written && due {
            self.signed("checkpoint");
        }
    }

    /// Seals the log at shutdown: a signed `stop` line; nothing is written after it.
    pub fn stop(&self) {
        self.signed("stop");
    }
}

/// What [`verify_log`] established.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogReport {
    /// Lines of the chain that verified (start through the last checkpoint or stop).
    pub lines: u64,
    /// Request lines among them.
    pub requests: u64,
    /// Signed checkpoints (stop included).
    pub checkpoints: u64,
    /// Whether the chain ends with its signed `stop`.
    pub stopped: bool,
    /// Chains in the file made by other keys (other enclave instances), not verified against this evidence.
    pub other_chains: u64,
}

/// Verifies the chain of `log` made by `receipt_key` (the key in the evidence's claims): every line in order
/// (`seq`, `prev`), every checkpoint's signature, and no line after the last signed one. The first problem is
/// an error naming the line (1-based in the file) and what is wrong. Chains of other keys are counted, not
/// verified.
pub fn verify_log(log: &str, receipt_key: &[u8]) -> Result<LogReport, Error> {
    let key_hex = hex::encode(receipt_key);
    let mut report = LogReport::default();
    let mut chain: Option<(u64, [u8; 32])> = None; // next seq, previous line's hash
    let mut in_ours = false;
    let mut found = false;
    let mut unsigned_since: Option<usize> = None;
    let at = |n: usize, detail: String| Error::Malformed {
        what: "audit log",
        detail: format!("line {n}: {detail}"),
    };
    for (index, raw) in log.lines().enumerate() {
        let n = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).map_err(|e| at(n, format!("not an audit line: {e}")))?;
        if line.kind == "start" {
            if in_ours {
                if let Some(from) = unsigned_since {
                    return Err(at(from, "unsigned tail: no checkpoint or stop signs this line and the lines after it before a new chain starts".into()));
                }
            }
            in_ours = line.receipt_key.as_deref() == Some(key_hex.as_str());
            if !in_ours {
                report.other_chains += 1;
                chain = None;
                continue;
            }
            if found {
                return Err(at(n, "a second chain with this enclave's key".into()));
            }
            found = true;
            if line.seq != 0 || line.prev != hex::encode([0u8; 32]) {
                return Err(at(n, "a start line must have seq 0 and a zero prev".into()));
            }
            chain = Some((1, sha256(raw.as_bytes())));
            report.lines = 1;
            unsigned_since = Some(n);
            continue;
        }
        if !in_ours {
            continue;
        }
        let Some((next, prev)) = chain else {
            continue;
        };
        if report.stopped {
            return Err(at(n, "a line after the signed stop".into()));
        }
        if line.seq != next {
            return Err(at(
                n,
                format!(
                    "seq {}, expected {next} ({})",
                    line.seq,
                    if line.seq > next {
                        "lines missing"
                    } else {
                        "lines reordered or repeated"
                    }
                ),
            ));
        }
        if line.prev != hex::encode(prev) {
            return Err(at(
                n,
                format!(
                    "prev is {}, the SHA-256 of the line before is {} (a line was edited, dropped or reordered)",
                    line.prev,
                    hex::encode(prev)
                ),
            ));
        }
        match line.kind.as_str() {
            "request" => {
                report.requests += 1;
                unsigned_since.get_or_insert(n);
            }
            "checkpoint" | "stop" => {
                let signature = line
                    .signature
                    .as_deref()
                    .and_then(|s| hex::decode(s).ok())
                    .unwrap_or_default();
                if !signer::verify(
                    receipt_key,
                    &checkpoint_message(line.seq, &prev),
                    &signature,
                ) {
                    return Err(at(
                        n,
                        format!(
                            "the {} signature does not verify with the enclave's key",
                            line.kind
                        ),
                    ));
                }
                report.checkpoints += 1;
                report.stopped = line.kind == "stop";
                unsigned_since = None;
            }
            other => return Err(at(n, format!("unknown kind {other:?}"))),
        }
        report.lines += 1;
        chain = Some((next + 1, sha256(raw.as_bytes())));
    }
    if !found {
        return Err(Error::mismatch(
            "audit log",
            format!("a chain started by key {}…", &key_hex[..16]),
            format!("none ({} chain(s) of other keys)", report.other_chains),
        ));
    }
    if let Some(from) = unsigned_since {
        return Err(at(
            from,
            "unsigned tail: no checkpoint or stop signs this line and the lines after it (the log was cut, or the enclave has not checkpointed them yet)".into(),
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests;

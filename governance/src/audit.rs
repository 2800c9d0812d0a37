//! The enclave's tamper-evident audit log: one JSON line per request (and per start, checkpoint and stop),
//! each naming the SHA-256 of the line before it, with a checkpoint signed by the enclave's record key every
//! N lines and a signed `stop` at shutdown.
//!
//! ```text
//! {"seq":0,"prev":"00…00","time":T,"kind":"start","receipt_key":"<hex>","config_digest":"sha384:…"}
//! {"seq":1,"prev":"<sha256 of line 0>","time":T,"kind":"request","session":"<hex16>"|null,
//!  "client":"sha256:<cert>"|"anonymous","model":"…","model_digest":"sha384:…","input_elements":N,
//!  "output_elements":N,"latency_ms":N,"outcome":"ok"|"refused:<status>","budget":"…"|null}
//! {"seq":k,"prev":"…","time":T,"kind":"tally","tally":{"client":"…","what":"POST /v2/attestation"|
//!  "GET /metrics"|"infer <model>","outcome":"ok"|"refused:<status>","count":N,"since":T0}}
//! {"seq":k,"prev":"…","time":T,"kind":"resume","resume":{"state_version":V,"previous_seq":S,
//!  "previous_line":"<sha256 of the previous run's last line>"}}
//! {"seq":k,"prev":"…","time":T,"kind":"checkpoint"|"stop","signature":"<hex Ed25519, 64 bytes>"}
//!   signature over "cloister-audit-checkpoint-v2" ‖ 0x00 ‖ the line without its signature field, i.e. the
//!   exact bytes {"seq":k,"prev":"…","time":T,"kind":"checkpoint"|"stop"}
//! ```
//!
//! Every line is exactly serde_json's compact form of [`Line`] (no spaces, fields in the order above, hex in
//! lower case, absent fields omitted); [`verify_log`] refuses a line that is not, so that the bytes it hashes
//! and the signatures cover are the bytes it reads. Only the line terminator (`\n` or `\r\n`) and blank lines
//! are not content.
//!
//! What covers what: each line is covered by the next line's `prev` (SHA-256 of its exact bytes), and a
//! signed line by its own signature, over all of its fields but the signature itself — `seq`, `prev` (hence,
//! through the chain, every line before it), `time` and `kind`. Lines after the last signed line are covered by
//! nothing, so [`verify_log`] refuses them as an unsigned tail. The last line of a verified log is therefore
//! always a signed one, and no field of any line can change unnoticed. The v1 format signed only
//! `seq ‖ prev`, which left a checkpoint's `kind` and `time` (and a stop's) unsigned: a log cut at any
//! checkpoint, that checkpoint relabelled `stop`, verified as sealed by the enclave (issue 21, item 3).
//!
//! Never inputs, outputs or their digests: sizes, times and outcomes only. The enclave hands the lines to the
//! host (stdout, prefixed `cloister-audit `), which stores them: it cannot forge a line (the next `prev` and the
//! next checkpoint would not match), reorder or drop one (`seq` and `prev`), relabel a checkpoint as the
//! `stop` (the signature covers `kind`), or cut the log after a checkpoint without leaving an unsigned tail or
//! a log without its `stop`. [`verify_log`] finds the first such break.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::signer::{self, RecordSigner};
use crate::Error;

/// The prefix of audit lines on the enclave's stdout.
pub const STDOUT_PREFIX: &str = "cloister-audit ";

/// The domain of checkpoint and stop signatures. The separator keeps the domain and the line apart, and the
/// signed bytes are the whole line but its signature: `kind` is among them, so a checkpoint's signature is
/// never a stop's (nor the other way round), and no other Cloister signature (receipts are COSE
/// `Signature1` structures, a CBOR array) starts with these bytes.
const SEAL_DOMAIN: &[u8] = b"cloister-audit-checkpoint-v2";
const SEAL_SEPARATOR: u8 = 0x00;

/// The retired v1 domain: its message was `domain ‖ seq (u64 LE) ‖ prev (32 bytes)`, with `kind` and `time`
/// unsigned. Never accepted; kept only to tell an auditor that a refused line was signed in that format.
const RETIRED_V1_DOMAIN: &[u8] = b"cloister-audit-checkpoint-v1";

const START: &str = "start";
const REQUEST: &str = "request";
const TALLY: &str = "tally";
const RESUME: &str = "resume";
const CHECKPOINT: &str = "checkpoint";
const STOP: &str = "stop";

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

/// Events counted rather than written one by one: refused requests, attestations, metrics scrapes, per
/// client, endpoint and outcome since `since` (issue 21, item 6: refusals cost a client nothing, and one line
/// each let one client grow the log by thousands of lines a second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyRecord {
    /// `sha256:<client certificate>` or `anonymous`.
    pub client: String,
    /// The endpoint: `POST /v2/attestation`, `GET /metrics`, `infer <model>`.
    pub what: String,
    /// `ok`, or `refused:<HTTP status>`.
    pub outcome: String,
    /// How many.
    pub count: u64,
    /// Unix seconds when counting started.
    pub since: u64,
}

/// A restarted enclave resumed its durable state (`state_version`), whose audit chain had ended at
/// `previous_seq` with a line whose SHA-256 is `previous_line`: an auditor joins the runs with it, and a
/// previous run's log cut short shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRecord {
    /// The durable state's version.
    pub state_version: u64,
    /// The previous run's last line's `seq`.
    pub previous_seq: u64,
    /// The previous run's last line's SHA-256 (hex).
    pub previous_line: String,
}

/// A line of the log. Its serde_json compact form is the line's text, byte for byte (the module's docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// SHA-256 of the previous line's bytes (zeros for a start).
    pub prev: String,
    /// Unix seconds.
    pub time: u64,
    /// `start`, `request`, `tally`, `resume`, `checkpoint` or `stop`.
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
    /// tally: what was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<TallyRecord>,
    /// resume: where the previous run's chain ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeRecord>,
    /// request: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub request: Option<RequestRecord>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The message a checkpoint or stop signs: the domain, the separator, and the line's text without its
/// `signature` field. Why the whole line: the last line of a log has no successor whose `prev` would cover it,
/// so its own signature is all that binds its `time` and `kind`; signing every field but the signature leaves
/// nothing of a signed line for the host to change.
fn seal_message(line: &Line) -> Result<Vec<u8>, serde_json::Error> {
    let unsigned = Line {
        signature: None,
        ..line.clone()
    };
    let mut message = SEAL_DOMAIN.to_vec();
    message.push(SEAL_SEPARATOR);
    message.extend_from_slice(serde_json::to_string(&unsigned)?.as_bytes());
    Ok(message)
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
            kind: START.into(),
            receipt_key: Some(key),
            config_digest: Some(config_digest.to_owned()),
            signature: None,
            tally: None,
            resume: None,
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
        let mut line = Line {
            seq: chain.seq,
            prev: hex::encode(chain.prev),
            time: (self.clock)(),
            kind: kind.into(),
            receipt_key: None,
            config_digest: None,
            signature: None,
            tally: None,
            resume: None,
            request: None,
        };
        // The signature covers the line as written, `time` and `kind` included (see `seal_message`). A failure
        // (none is possible: the line serialises, and ring's Ed25519 signing is infallible) leaves an empty
        // signature, which the verifier refuses, rather than an unsigned line that looks signed.
        let signature = seal_message(&line)
            .ok()
            .and_then(|message| self.signer.sign(&message).ok())
            .map(hex::encode)
            .unwrap_or_default();
        line.signature = Some(signature);
        let text = serde_json::to_string(&line).unwrap_or_default();
        chain.prev = sha256(text.as_bytes());
        chain.seq += 1;
        chain.since_checkpoint = 0;
        chain.stopped = kind == STOP;
        (self.sink)(&text);
    }

    /// Records a request; signs a checkpoint when `every` lines have passed since the last.
    pub fn record(&self, record: RequestRecord) {
        let written = self.append(|seq, prev, time| Line {
            seq,
            prev,
            time,
            kind: REQUEST.into(),
            receipt_key: None,
            config_digest: None,
            signature: None,
            tally: None,
            resume: None,
            request: Some(record),
        });
        let due = self
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since_checkpoint
            >= self.every;
        if written && due {
            self.signed(CHECKPOINT);
        }
    }

    /// Records counted events (one line); signs a checkpoint when `every` lines have passed since the last.
    pub fn tally(&self, tally: TallyRecord) {
        let written = self.append(|seq, prev, time| Line {
            seq,
            prev,
            time,
            kind: TALLY.into(),
            receipt_key: None,
            config_digest: None,
            signature: None,
            tally: Some(tally),
            resume: None,
            request: None,
        });
        self.checkpoint_if_due(written);
    }

    /// Records that this run resumed durable state `state_version`, whose chain ended at `previous_seq`
    /// with the line of SHA-256 `previous_line` (hex).
    pub fn resume(&self, state_version: u64, previous_seq: u64, previous_line: &str) {
        let written = self.append(|seq, prev, time| Line {
            seq,
            prev,
            time,
            kind: RESUME.into(),
            receipt_key: None,
            config_digest: None,
            signature: None,
            tally: None,
            resume: Some(ResumeRecord {
                state_version,
                previous_seq,
                previous_line: previous_line.to_owned(),
            }),
            request: None,
        });
        self.checkpoint_if_due(written);
    }

    fn checkpoint_if_due(&self, written: bool) {
        let due = self
            .chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since_checkpoint
            >= self.every;
        if written && due {
            self.signed(CHECKPOINT);
        }
    }

    /// The chain's last line: its `seq` and its SHA-256 (what the next line's `prev` will name).
    pub fn head(&self) -> (u64, [u8; 32]) {
        let chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
        (chain.seq.saturating_sub(1), chain.prev)
    }

    /// Seals the log at shutdown: a signed `stop` line; nothing is written after it.
    pub fn stop(&self) {
        self.signed(STOP);
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
    /// Tally lines among them.
    pub tallies: u64,
    /// Events those tally lines count (refusals, attestations, metrics scrapes).
    pub tallied_events: u64,
    /// The durable-state version this run resumed, if it did.
    pub resumed_state_version: Option<u64>,
    /// Chains in the file made by other keys (other enclave instances), not verified against this evidence.
    pub other_chains: u64,
}

/// Refuses a line that is not exactly the canonical text of what it parsed to. Why: the chain hashes and the
/// signatures are over bytes, the verdict is about the parsed fields; were several texts to parse to the same
/// line (spaces, key order, `\u` escapes, upper-case hex in a string the parser does not read as hex, a field
/// serde skipped), what is hashed and what is believed could part. Nothing but the enclave's writer makes
/// these lines, and it writes exactly this form.
fn check_canonical(line: &Line, raw: &str) -> Result<(), String> {
    let canonical =
        serde_json::to_string(line).map_err(|e| format!("cannot re-serialise the line: {e}"))?;
    if canonical == raw {
        return Ok(());
    }
    let at = canonical
        .bytes()
        .zip(raw.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(canonical.len().min(raw.len()));
    Err(format!(
        "not written as the enclave writes lines (compact JSON, fields in their order, nothing else): it \
         differs from that form at byte {at}"
    ))
}

/// Which of the optional fields a line of each kind carries, named for the refusal. Every kind has exactly
/// one shape, so no line can carry a field the verifier does not look at (a start's `signature`, a
/// checkpoint's `receipt_key`, …).
fn check_shape(line: &Line) -> Result<(), String> {
    let present = [
        ("receipt_key", line.receipt_key.is_some()),
        ("config_digest", line.config_digest.is_some()),
        ("signature", line.signature.is_some()),
        ("tally", line.tally.is_some()),
        ("resume", line.resume.is_some()),
        ("the request's fields", line.request.is_some()),
    ];
    let wanted: &[&str] = match line.kind.as_str() {
        START => &["receipt_key", "config_digest"],
        REQUEST => &["the request's fields"],
        TALLY => &["tally"],
        RESUME => &["resume"],
        CHECKPOINT | STOP => &["signature"],
        other => return Err(format!("kind: unknown kind {other:?}")),
    };
    for (field, is_present) in present {
        let wants = wanted.contains(&field);
        if wants && !is_present {
            return Err(format!("a {} line without {field}", line.kind));
        }
        if !wants && is_present {
            return Err(format!(
                "a {} line carrying {field}, which it may not have",
                line.kind
            ));
        }
    }
    Ok(())
}

/// Checks a checkpoint's or stop's signature over the line as written. On a failure, says which field it was
/// when that can be known: a line the enclave signed as the other kind (a checkpoint relabelled `stop` to fake
/// a sealed log), or a line signed in the retired v1 format.
fn check_seal(line: &Line, prev: &[u8; 32], receipt_key: &[u8]) -> Result<(), String> {
    let text = line.signature.as_deref().unwrap_or_default();
    let signature = hex::decode(text).unwrap_or_default();
    if signature.len() != signer::SIGNATURE_LEN || hex::encode(&signature) != text {
        return Err(format!(
            "signature: not {} bytes of lower-case hex",
            signer::SIGNATURE_LEN
        ));
    }
    let verifies = |l: &Line| {
        seal_message(l).is_ok_and(|message| signer::verify(receipt_key, &message, &signature))
    };
    if verifies(line) {
        return Ok(());
    }
    let other_kind = if line.kind == STOP { CHECKPOINT } else { STOP };
    let relabelled = Line {
        kind: other_kind.into(),
        ..line.clone()
    };
    if verifies(&relabelled) {
        return Err(format!(
            "kind: the enclave signed this line as a {other_kind}, it says {} (a {})",
            line.kind,
            if other_kind == CHECKPOINT {
                "log cut at a checkpoint and relabelled as sealed"
            } else {
                "stop relabelled as a checkpoint"
            }
        ));
    }
    let mut v1 = RETIRED_V1_DOMAIN.to_vec();
    v1.extend_from_slice(&line.seq.to_le_bytes());
    v1.extend_from_slice(prev);
    if signer::verify(receipt_key, &v1, &signature) {
        return Err(format!(
            "signature: in the retired v1 format ({}), which left time and kind unsigned; not accepted",
            String::from_utf8_lossy(RETIRED_V1_DOMAIN)
        ));
    }
    Err(format!(
        "the {} signature does not verify with the enclave's key over this line's seq, prev, time and kind as \
         written (one of them was changed, or the line was not signed by this enclave)",
        line.kind
    ))
}

/// Verifies the chain of `log` made by `receipt_key` (the key in the evidence's claims): every line in order
/// (`seq`, `prev`), in its canonical form and shape, every checkpoint's and the stop's signature over the whole
/// line, no line after the stop and no line after the last signed one. The first problem is an error naming
/// the line (1-based in the file) and what is wrong. Chains of other keys are counted, not verified.
pub fn verify_log(log: &str, receipt_key: &[u8]) -> Result<LogReport, Error> {
    let mut walk = LogWalk::new(receipt_key);
    for (index, raw) in log.lines().enumerate() {
        let n = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).map_err(|e| at(n, format!("not an audit line: {e}")))?;
        if line.kind == START {
            walk.start(n, raw, &line)?;
        } else {
            walk.next_line(n, raw, &line)?;
        }
    }
    walk.finish()
}

/// The error for line `n` (1-based in the file) of the audit log.
fn at(n: usize, detail: String) -> Error {
    Error::Malformed {
        what: "audit log",
        detail: format!("line {n}: {detail}"),
    }
}

/// [`verify_log`]'s walk through the file, one line at a time.
struct LogWalk<'a> {
    receipt_key: &'a [u8],
    key_hex: String,
    report: LogReport,
    /// The next seq and the previous line's hash, in a chain being followed.
    chain: Option<(u64, [u8; 32])>,
    /// Whether the lines being read belong to the chain of `receipt_key`.
    in_ours: bool,
    /// Whether the chain of `receipt_key` has started.
    found: bool,
    /// The first line of our chain that no checkpoint or stop signs yet.
    unsigned_since: Option<usize>,
}

impl<'a> LogWalk<'a> {
    fn new(receipt_key: &'a [u8]) -> Self {
        LogWalk {
            receipt_key,
            key_hex: hex::encode(receipt_key),
            report: LogReport::default(),
            chain: None,
            in_ours: false,
            found: false,
            unsigned_since: None,
        }
    }

    /// A `start` line (line `n`): ends the chain being read and begins ours or another instance's.
    fn start(&mut self, n: usize, raw: &str, line: &Line) -> Result<(), Error> {
        // Every start, ours or not, must be one: otherwise a line of our chain after a checkpoint, its kind
        // changed to `start`, would end our chain there as if another instance's began (the report would
        // still say unsealed, but the edit would go unnamed).
        check_shape(line).map_err(|d| at(n, d))?;
        if self.in_ours {
            if let Some(from) = self.unsigned_since {
                return Err(at(from, "unsigned tail: no checkpoint or stop signs this line and the lines after it before a new chain starts".into()));
            }
        }
        self.in_ours = line.receipt_key.as_deref() == Some(self.key_hex.as_str());
        if !self.in_ours {
            self.report.other_chains += 1;
            self.chain = None;
            return Ok(());
        }
        if self.found {
            return Err(at(n, "a second chain with this enclave's key".into()));
        }
        self.found = true;
        if line.seq != 0 || line.prev != hex::encode([0u8; 32]) {
            return Err(at(n, "a start line must have seq 0 and a zero prev".into()));
        }
        check_canonical(line, raw).map_err(|d| at(n, d))?;
        self.chain = Some((1, sha256(raw.as_bytes())));
        self.report.lines = 1;
        self.unsigned_since = Some(n);
        Ok(())
    }

    /// Any other line (line `n`): in our chain, it must follow the line before it (`seq`, `prev`), be
    /// canonical and well shaped, and come before the stop. Lines of other chains are skipped.
    fn next_line(&mut self, n: usize, raw: &str, line: &Line) -> Result<(), Error> {
        if !self.in_ours {
            return Ok(());
        }
        let Some((next, prev)) = self.chain else {
            return Ok(());
        };
        if self.report.stopped {
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
        check_canonical(line, raw).map_err(|d| at(n, d))?;
        check_shape(line).map_err(|d| at(n, d))?;
        self.count(n, line, &prev)?;
        self.report.lines += 1;
        self.chain = Some((next + 1, sha256(raw.as_bytes())));
        Ok(())
    }

    /// Counts line `n` of our chain by its kind, checking a checkpoint's or stop's signature; a signed line
    /// covers every line before it.
    fn count(&mut self, n: usize, line: &Line, prev: &[u8; 32]) -> Result<(), Error> {
        match line.kind.as_str() {
            REQUEST => {
                self.report.requests += 1;
                self.unsigned_since.get_or_insert(n);
            }
            TALLY => {
                self.report.tallies += 1;
                let count = line.tally.as_ref().map_or(0, |t| t.count);
                self.report.tallied_events = self.report.tallied_events.saturating_add(count);
                self.unsigned_since.get_or_insert(n);
            }
            RESUME => {
                if self.report.resumed_state_version.is_some() {
                    return Err(at(n, "a second resume line in one run".into()));
                }
                self.report.resumed_state_version = line.resume.as_ref().map(|r| r.state_version);
                self.unsigned_since.get_or_insert(n);
            }
            CHECKPOINT | STOP => {
                check_seal(line, prev, self.receipt_key).map_err(|d| at(n, d))?;
                self.report.checkpoints += 1;
                self.report.stopped = line.kind == STOP;
                self.unsigned_since = None;
            }
            // Unreachable (`check_shape` refused it), and refused again should that ever change.
            other => return Err(at(n, format!("kind: unknown kind {other:?}"))),
        }
        Ok(())
    }

    /// The end of the file: our chain must have been found, and end with a signed line.
    fn finish(self) -> Result<LogReport, Error> {
        if !self.found {
            // `get`, not indexing: the key is the caller's, and may be shorter than 8 bytes.
            let short = self.key_hex.get(..16).unwrap_or(&self.key_hex);
            return Err(Error::mismatch(
                "audit log",
                format!("a chain started by key {short}…"),
                format!("none ({} chain(s) of other keys)", self.report.other_chains),
            ));
        }
        if let Some(from) = self.unsigned_since {
            return Err(at(
                from,
                "unsigned tail: no checkpoint or stop signs this line and the lines after it (the log was cut, or the enclave has not checkpointed them yet)".into(),
            ));
        }
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests;

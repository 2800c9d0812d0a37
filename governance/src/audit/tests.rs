//! The audit chain: a good log verifies; a dropped, reordered, edited or truncated line is found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use super::*;

fn log(requests: usize, every: u32, stop: bool) -> (Vec<String>, Arc<RecordSigner>) {
    let signer = Arc::new(RecordSigner::generate().unwrap());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let writer = AuditWriter::start(
        Arc::clone(&signer),
        every,
        "sha384:00",
        Box::new(move |l| sink.lock().unwrap().push(l.to_owned())),
        Box::new(|| 1_700_000_000),
    );
    for i in 0..requests {
        writer.record(RequestRecord {
            session: Some("00".repeat(16)),
            client: "anonymous".into(),
            model: format!("m{i}"),
            model_digest: "sha384:11".into(),
            input_elements: 16,
            output_elements: 4,
            latency_ms: 3,
            outcome: "ok".into(),
            budget: None,
        });
    }
    if stop {
        writer.stop();
    }
    let out = lines.lock().unwrap().clone();
    (out, signer)
}

fn check(lines: &[String], signer: &RecordSigner) -> Result<LogReport, Error> {
    verify_log(&(lines.join("\n") + "\n"), &signer.public_key())
}

fn err(lines: &[String], signer: &RecordSigner) -> String {
    check(lines, signer).unwrap_err().to_string()
}

/// `line` changed by `change`, re-serialised as the writer would have written it: the change is canonical, so
/// only the chain and the signatures can catch it.
fn edit(line: &str, change: impl FnOnce(&mut Line)) -> String {
    let mut parsed: Line = serde_json::from_str(line).unwrap();
    change(&mut parsed);
    serde_json::to_string(&parsed).unwrap()
}

fn kind(line: &str) -> String {
    serde_json::from_str::<Line>(line).unwrap().kind
}

/// Indices of the checkpoints and the stop.
fn signed_lines(lines: &[String]) -> Vec<usize> {
    (0..lines.len())
        .filter(|&i| matches!(kind(&lines[i]).as_str(), "checkpoint" | "stop"))
        .collect()
}

#[test]
fn a_whole_log_verifies_and_says_what_it_holds() {
    let (lines, signer) = log(5, 2, true);
    // start r0 cp r1 r2 cp r3 r4 cp stop: the start counts towards the first checkpoint.
    assert_eq!(lines.len(), 10);
    let report = check(&lines, &signer).unwrap();
    assert_eq!(
        (report.requests, report.checkpoints, report.stopped),
        (5, 4, true)
    );
    for line in &lines {
        assert!(
            !line.contains("input\":[") && !line.contains("data"),
            "{line}"
        );
    }
}

#[test]
fn dropped_reordered_edited_and_truncated_lines_are_found() {
    let (lines, signer) = log(5, 2, true);
    let mut dropped = lines.clone();
    dropped.remove(3);
    assert!(
        err(&dropped, &signer).contains("lines missing"),
        "{}",
        err(&dropped, &signer)
    );
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    let e = err(&reordered, &signer);
    assert!(
        e.contains("line 2") && (e.contains("seq") || e.contains("prev")),
        "{e}"
    );
    let mut edited = lines.clone();
    edited[1] = edited[1].replace("\"m0\"", "\"mX\"");
    let e = err(&edited, &signer);
    assert!(e.contains("line 3") && e.contains("edited"), "{e}");
    // A forged checkpoint signature.
    let mut forged = lines.clone();
    let cp = forged
        .iter()
        .position(|l| l.contains("\"checkpoint\""))
        .unwrap();
    forged[cp] = edit(&forged[cp], |l| l.signature = Some("00".repeat(64)));
    assert!(
        err(&forged, &signer).contains("signature"),
        "{}",
        err(&forged, &signer)
    );
    // Cut after a checkpoint, mid-way: the requests after it are an unsigned tail.
    let cut: Vec<String> = lines[..5].to_vec(); // start r r cp r
    assert!(
        err(&cut, &signer).contains("unsigned tail"),
        "{}",
        err(&cut, &signer)
    );
    // Cut exactly at a checkpoint: consistent so far, but not sealed by a stop.
    let at_checkpoint = check(&lines[..3], &signer).unwrap();
    assert!(!at_checkpoint.stopped);
    // A line after the stop.
    let mut after = lines.clone();
    after.push(lines[1].clone());
    assert!(err(&after, &signer).contains("after the signed stop"));
}

#[test]
fn chains_of_other_keys_are_counted_not_verified() {
    let (ours, signer) = log(2, 1, true);
    let (theirs, _) = log(3, 1, true);
    let mut both = theirs.clone();
    both.extend(ours);
    let report = check(&both, &signer).unwrap();
    assert_eq!((report.requests, report.other_chains), (2, 1));
    let e = err(&theirs, &signer);
    assert!(e.contains("none (1 chain(s) of other keys)"), "{e}");
    assert!(check(&["not json".to_owned()], &signer).is_err());
}

/// Issue 21, item 3. The v1 signature covered only `seq ‖ prev`, so a log cut at any checkpoint, that checkpoint
/// relabelled `stop`, verified as sealed (`Ok`, `stopped: true`: reproduced on the v1 code before the fix). The
/// signature now covers the whole line, `kind` included.
#[test]
fn cutting_the_log_at_a_checkpoint_and_renaming_it_stop_is_refused() {
    let (lines, signer) = log(5, 2, true);
    let checkpoints: Vec<usize> = (0..lines.len())
        .filter(|&i| kind(&lines[i]) == "checkpoint")
        .collect();
    assert_eq!(checkpoints.len(), 3);
    for cp in checkpoints {
        let cut = lines[..=cp].to_vec();
        // Cut honestly, the log verifies and says it is not sealed.
        assert!(!check(&cut, &signer).unwrap().stopped);
        // Relabelled, exactly as the issue says (a text substitution): refused, naming the line and the field.
        let mut forged = cut.clone();
        forged[cp] = forged[cp].replace("\"kind\":\"checkpoint\"", "\"kind\":\"stop\"");
        assert_eq!(forged[cp], edit(&cut[cp], |l| l.kind = "stop".into()));
        let e = err(&forged, &signer);
        assert!(
            e.contains(&format!(
                "line {}: kind: the enclave signed this line as a checkpoint, it says stop",
                cp + 1
            )),
            "{e}"
        );
    }
    // And the other way round: a stop relabelled as a checkpoint (to append unsigned lines as "not yet
    // checkpointed") is refused too.
    let mut unsealed = lines;
    let last = unsealed.len() - 1;
    unsealed[last] = edit(&unsealed[last], |l| l.kind = "checkpoint".into());
    let e = err(&unsealed, &signer);
    assert!(
        e.contains(&format!(
            "line {}: kind: the enclave signed this line as a stop",
            last + 1
        )),
        "{e}"
    );
}

/// A field's name, and a change to it.
type Change = (&'static str, fn(&mut Line));

/// Every signed line, whether it is followed by more lines (its successor's `prev` covers it too) or it is the
/// last line (its signature alone covers it): a changed `time`, `kind`, `seq` or `prev` is refused, and the
/// refusal names that line and the field.
#[test]
fn changing_time_kind_or_seq_on_any_signed_line_is_refused() {
    let (lines, signer) = log(5, 2, true);
    let changes: [Change; 4] = [
        ("time", |l| l.time -= 86_400),
        ("kind", |l| {
            l.kind = if l.kind == "stop" {
                "checkpoint"
            } else {
                "stop"
            }
            .into()
        }),
        ("seq", |l| l.seq += 1),
        ("prev", |l| l.prev = "ab".repeat(32)),
    ];
    let signed = signed_lines(&lines);
    assert_eq!(signed.len(), 4);
    for i in signed {
        for (field, change) in changes {
            for cut_after_it in [false, true] {
                let mut forged = if cut_after_it {
                    lines[..=i].to_vec()
                } else {
                    lines.clone()
                };
                forged[i] = edit(&forged[i], change);
                let e = err(&forged, &signer);
                assert!(
                    e.contains(&format!("line {}: ", i + 1)) && e.contains(field),
                    "{field} of line {} (cut after it: {cut_after_it}): {e}",
                    i + 1
                );
            }
        }
    }
}

/// Every field of every line, start and requests included, is covered: by the next line's `prev` and, through
/// the chain, by the next signature.
#[test]
fn every_field_of_every_line_is_covered() {
    let (lines, signer) = log(3, 2, true);
    let common: [fn(&mut Line); 4] = [
        |l| l.seq += 1,
        |l| l.prev = "cd".repeat(32),
        |l| l.time += 1,
        |l| {
            l.kind = if l.kind == "request" {
                "start"
            } else {
                "request"
            }
            .into()
        },
    ];
    let specific: [fn(&mut Line); 9] = [
        |l| l.config_digest = Some("sha384:22".into()),
        |l| l.receipt_key = Some("00".repeat(32)),
        |l| l.signature = Some("11".repeat(64)),
        |l| {
            if let Some(r) = &mut l.request {
                r.model = "other".into();
            }
        },
        |l| {
            if let Some(r) = &mut l.request {
                r.outcome = "refused:429".into();
            }
        },
        |l| {
            if let Some(r) = &mut l.request {
                r.latency_ms += 1;
            }
        },
        |l| {
            if let Some(r) = &mut l.request {
                r.session = None;
            }
        },
        |l| {
            if let Some(r) = &mut l.request {
                r.budget = Some("minute 1/60".into());
            }
        },
        |l| {
            if let Some(r) = &mut l.request {
                r.input_elements = 0;
            }
        },
    ];
    let mut tried = 0;
    for i in 0..lines.len() {
        for change in common.iter().chain(&specific) {
            let mut forged = lines.clone();
            forged[i] = edit(&forged[i], change);
            if forged[i] == lines[i] {
                continue; // that field is not on this kind of line
            }
            tried += 1;
            assert!(
                check(&forged, &signer).is_err(),
                "line {}: {}",
                i + 1,
                forged[i]
            );
        }
    }
    assert!(tried > 50, "{tried}");
}

/// The other ways to make a log look sealed, or to slip a field past the verifier, each refused with its reason.
#[test]
fn a_seal_cannot_be_faked_by_reshaping_the_log() {
    let (lines, signer) = log(5, 2, true);
    let stop = lines.len() - 1;
    let first_cp = signed_lines(&lines)[0];
    let expect = |forged: &[String], want: &str| {
        let e = err(forged, &signer);
        assert!(e.contains(want), "want {want:?}: {e}");
    };
    // Two stops.
    let mut two = lines.clone();
    two.push(lines[stop].clone());
    expect(
        &two,
        &format!("line {}: a line after the signed stop", stop + 2),
    );
    // The stop moved up, after a request: it is not at its place in the chain.
    let mut early = lines[..=first_cp + 1].to_vec();
    early.push(lines[stop].clone());
    expect(
        &early,
        &format!(
            "line {}: seq {stop}, expected {}",
            first_cp + 3,
            first_cp + 2
        ),
    );
    // A checkpoint moved to another position.
    let mut moved = lines.clone();
    moved.swap(first_cp, first_cp + 1);
    expect(&moved, &format!("line {}: seq", first_cp + 1));
    // A checkpoint copied to a later place, its seq changed to fit: its prev (and signature) are its old place's.
    let mut renumbered = lines[..=first_cp + 1].to_vec();
    renumbered.push(edit(&lines[first_cp], |l| l.seq = first_cp as u64 + 2));
    expect(&renumbered, &format!("line {}: prev is", first_cp + 3));
    // Our start again in the middle.
    let mut restart = lines.clone();
    restart.insert(first_cp + 1, lines[0].clone());
    expect(
        &restart,
        &format!(
            "line {}: a second chain with this enclave's key",
            first_cp + 2
        ),
    );
    // Another instance's start in the middle: our chain ends at the checkpoint before it, not sealed.
    let (theirs, _) = log(0, 1, false);
    let mut interleaved = lines.clone();
    interleaved.insert(first_cp + 1, theirs[0].clone());
    let report = check(&interleaved, &signer).unwrap();
    assert_eq!(
        (report.lines, report.stopped, report.other_chains),
        (first_cp as u64 + 1, false, 1)
    );
    // One of our lines after a checkpoint made a start, to end our chain there unnoticed: not a start.
    let mut restarted = lines.clone();
    restarted[first_cp + 1] = edit(&lines[first_cp + 1], |l| l.kind = "start".into());
    expect(
        &restarted,
        &format!("line {}: a start line without receipt_key", first_cp + 2),
    );
    // Lines of the wrong shape: a request with a signature, a checkpoint without, a checkpoint carrying a key.
    let mut shaped = lines.clone();
    shaped[1] = edit(&lines[1], |l| l.signature = Some("00".repeat(64)));
    expect(
        &shaped,
        "line 2: a request line carrying signature, which it may not have",
    );
    let mut unsigned = lines[..=first_cp].to_vec();
    unsigned[first_cp] = edit(&lines[first_cp], |l| l.signature = None);
    expect(
        &unsigned,
        &format!("line {}: a checkpoint line without signature", first_cp + 1),
    );
    let mut keyed = lines.clone();
    keyed[stop] = edit(&lines[stop], |l| l.receipt_key = Some("00".into()));
    expect(
        &keyed,
        &format!(
            "line {}: a stop line carrying receipt_key, which it may not have",
            stop + 1
        ),
    );
    let mut unknown = lines.clone();
    unknown[stop] = edit(&lines[stop], |l| l.kind = "sealed".into());
    expect(
        &unknown,
        &format!("line {}: kind: unknown kind \"sealed\"", stop + 1),
    );
    // Not the canonical text: a space, and the signature in upper case (both on the last line, which only its
    // own signature covers).
    let mut spaced = lines.clone();
    spaced[stop] = lines[stop].replacen("\"seq\":", "\"seq\": ", 1);
    expect(
        &spaced,
        &format!(
            "line {}: not written as the enclave writes lines (compact JSON, fields in their order, nothing \
             else): it differs from that form at byte 7",
            stop + 1
        ),
    );
    let mut upper = lines.clone();
    upper[stop] = edit(&lines[stop], |l| {
        l.signature = l.signature.as_ref().map(|s| s.to_uppercase())
    });
    expect(
        &upper,
        &format!(
            "line {}: signature: not 64 bytes of lower-case hex",
            stop + 1
        ),
    );
    // A stop signed in the retired v1 format (seq and prev only): named, and refused.
    let mut v1 = lines.clone();
    let parsed: Line = serde_json::from_str(&lines[stop]).unwrap();
    let mut message = RETIRED_V1_DOMAIN.to_vec();
    message.extend_from_slice(&parsed.seq.to_le_bytes());
    message.extend_from_slice(&hex::decode(&parsed.prev).unwrap());
    let old = hex::encode(signer.sign(&message).unwrap());
    v1[stop] = edit(&lines[stop], |l| l.signature = Some(old));
    expect(
        &v1,
        &format!(
            "line {}: signature: in the retired v1 format (cloister-audit-checkpoint-v1)",
            stop + 1
        ),
    );
    // Unchanged, all of it verifies.
    assert!(check(&lines, &signer).unwrap().stopped);
}

/// The signed message is the documented bytes: the domain, 0x00, and the line without its signature field;
/// the line is those bytes with `,"signature":"<hex>"` before the closing brace.
#[test]
fn the_signed_message_is_the_documented_bytes() {
    let (lines, signer) = log(1, 1, true);
    for i in signed_lines(&lines) {
        let line: Line = serde_json::from_str(&lines[i]).unwrap();
        let unsigned = format!(
            "{{\"seq\":{},\"prev\":\"{}\",\"time\":{},\"kind\":\"{}\"}}",
            line.seq, line.prev, line.time, line.kind
        );
        let signature = line.signature.clone().unwrap();
        assert_eq!(
            lines[i],
            format!(
                "{},\"signature\":\"{signature}\"}}",
                unsigned.strip_suffix('}').unwrap()
            )
        );
        let mut message = b"cloister-audit-checkpoint-v2\x00".to_vec();
        message.extend_from_slice(unsigned.as_bytes());
        assert!(signer::verify(
            &signer.public_key(),
            &message,
            &hex::decode(signature).unwrap()
        ));
    }
}

/// A line terminator (`\r\n`) and blank lines are not content: such a log verifies as written.
#[test]
fn crlf_and_blank_lines_are_not_content() {
    let (lines, signer) = log(3, 2, true);
    let text = lines.join("\r\n\n") + "\r\n";
    assert!(verify_log(&text, &signer.public_key()).unwrap().stopped);
}

/// The key is the caller's: one shorter than 8 bytes (here empty, and 2 bytes) is an error, not a panic (v1
/// sliced its hex to 16 characters).
#[test]
fn a_short_key_is_an_error_not_a_panic() {
    let (lines, _) = log(1, 1, true);
    let text = lines.join("\n");
    for key in [&[][..], &[1, 2][..]] {
        let e = verify_log(&text, key).unwrap_err().to_string();
        assert!(e.contains("none (1 chain(s) of other keys)"), "{e}");
    }
}

/// Writes the seed corpora of the `audit_log` and `receipt` fuzz targets (`fuzz/`) from the real writers:
/// `CLOISTER_FUZZ_SEEDS=$PWD/fuzz/corpus cargo test -p cloister-governance -- --ignored write_fuzz_seeds`.
/// The targets also read some of these files as the records the enclave really signed (their oracle).
#[test]
#[ignore = "writes files; run by hand to regenerate the fuzz seeds"]
fn write_fuzz_seeds() {
    use crate::{Receipt, ReceiptFile, ReceiptPayload};
    let root = std::path::PathBuf::from(std::env::var("CLOISTER_FUZZ_SEEDS").unwrap());
    let audit = root.join("audit_log");
    let receipt = root.join("receipt");
    std::fs::create_dir_all(&audit).unwrap();
    std::fs::create_dir_all(&receipt).unwrap();
    let write = |path: std::path::PathBuf, text: &[u8]| std::fs::write(path, text).unwrap();
    let joined = |lines: &[String]| lines.join("\n") + "\n";

    // A sealed log with every kind of line (a resume, tallies) and of request line: attested or not,
    // certificate or anonymous, refused, budgets, and a model name that needs JSON escapes.
    let signer = Arc::new(RecordSigner::generate().unwrap());
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let time = Arc::new(Mutex::new(1_700_000_000u64));
    let clock = Arc::clone(&time);
    let writer = AuditWriter::start(
        Arc::clone(&signer),
        2,
        "sha384:0123",
        Box::new(move |l| sink.lock().unwrap().push(l.to_owned())),
        Box::new(move || {
            let mut t = clock.lock().unwrap();
            *t += 1;
            *t
        }),
    );
    let records = [
        (Some("ab".repeat(16)), "anonymous", "mlp", "ok", None),
        (
            None,
            "sha256:00ff",
            "magika \"v1\"\\é\n",
            "refused:429",
            Some("minute 60/60, day 61/10000"),
        ),
        (
            Some("cd".repeat(16)),
            "anonymous",
            "mlp",
            "refused:400",
            None,
        ),
    ];
    writer.resume(3, 17, &"ef".repeat(32));
    for (session, client, model, outcome, budget) in records {
        writer.record(RequestRecord {
            session,
            client: client.into(),
            model: model.into(),
            model_digest: format!("sha384:{}", "11".repeat(48)),
            input_elements: 784,
            output_elements: 10,
            latency_ms: 2,
            outcome: outcome.into(),
            budget: budget.map(Into::into),
        });
    }
    for (what, count) in [("POST /v2/attestation", 2), ("infer mlp", 6_998)] {
        writer.tally(TallyRecord {
            client: "sha256:00ff".into(),
            what: what.into(),
            outcome: "refused:429".into(),
            count,
            since: 1_699_999_999,
        });
    }
    writer.stop();
    let varied = out.lock().unwrap().clone();
    assert!(check(&varied, &signer).unwrap().stopped);
    write(audit.join("sealed.jsonl"), joined(&varied).as_bytes());

    // Cut at a checkpoint (verifies, not sealed); an unsigned tail; two instances in one file.
    let (at_checkpoint, _) = log(3, 2, false);
    write(
        audit.join("cut-at-checkpoint.jsonl"),
        joined(&at_checkpoint).as_bytes(),
    );
    let (tail, _) = log(4, 2, false);
    write(audit.join("unsigned-tail.jsonl"), joined(&tail).as_bytes());
    let (first, _) = log(1, 1, true);
    let (second, _) = log(2, 3, true);
    write(
        audit.join("two-instances.jsonl"),
        (joined(&first) + &joined(&second)).as_bytes(),
    );

    // Receipts: the target's input is the public key (32 bytes) then the COSE_Sign1.
    let signer = RecordSigner::generate().unwrap();
    let payload = |i: u8, model: &str| ReceiptPayload {
        evidence: [i; 48],
        model: model.into(),
        model_digest: [i + 1; 48],
        request: [i + 2; 32],
        response: [i + 3; 32],
        time: 1_700_000_000 + u64::from(i),
        session: [i + 4; 16],
        seq: u64::from(i),
        provenance: None,
    };
    for (i, model) in [(1u8, "mlp"), (2, "magika")] {
        let signed = Receipt::sign(&signer, &payload(i, model)).unwrap();
        let mut bytes = signer.public_key();
        bytes.extend_from_slice(&signed.0);
        write(receipt.join(format!("signed-{i}.bin")), &bytes);
        if i == 1 {
            write(receipt.join("header.txt"), signed.to_header().as_bytes());
            let file = ReceiptFile {
                receipt: signed,
                evidence: b"evidence bytes (not parsed by ReceiptFile)".to_vec(),
            };
            write(receipt.join("file.json"), &file.to_json());
        }
    }
    write(
        receipt.join("payload.cbor"),
        &payload(3, "classifier").to_cbor().unwrap(),
    );
}

/// Issue 21, items 4 and 6: tally lines (counted refusals and control calls) and a resume line (the durable
/// state this run resumed) are chained and checkpointed like requests; a changed count is found.
#[test]
fn tally_and_resume_lines_are_chained_like_requests() {
    let signer = Arc::new(RecordSigner::generate().unwrap());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let writer = AuditWriter::start(
        Arc::clone(&signer),
        2,
        "sha384:00",
        Box::new(move |l| sink.lock().unwrap().push(l.to_owned())),
        Box::new(|| 1_700_000_000),
    );
    writer.resume(7, 41, &"ab".repeat(32));
    for (what, count) in [("infer m", 6_998), ("POST /v2/attestation", 2)] {
        writer.tally(TallyRecord {
            client: "anonymous".into(),
            what: what.into(),
            outcome: "refused:429".into(),
            count,
            since: 1_699_999_999,
        });
    }
    writer.stop();
    let lines = lines.lock().unwrap().clone();
    let report = check(&lines, &signer).unwrap();
    assert!(report.stopped);
    assert_eq!((report.tallies, report.tallied_events), (2, 7_000));
    assert_eq!(report.resumed_state_version, Some(7));
    assert!(lines[1].contains("\"kind\":\"resume\""), "{}", lines[1]);
    // A count changed, even re-serialised canonically: the next line's prev no longer matches.
    let tally = lines.iter().position(|l| kind(l) == "tally").unwrap();
    let mut changed = lines.clone();
    changed[tally] = edit(&lines[tally], |l| l.tally.as_mut().unwrap().count = 1);
    assert!(
        err(&changed, &signer).contains("prev"),
        "{}",
        err(&changed, &signer)
    );
    // A tally line carrying a request's fields, or none of its own: refused by shape.
    let mut shapeless = lines.clone();
    shapeless[tally] = edit(&lines[tally], |l| l.tally = None);
    assert!(err(&shapeless, &signer).contains("without tally"));
}

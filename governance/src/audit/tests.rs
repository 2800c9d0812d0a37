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
    let mut v: serde_json::Value = serde_json::from_str(&forged[cp]).unwrap();
    v["signature"] = "00".repeat(64).into();
    forged[cp] = serde_json::to_string(&v).unwrap();
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

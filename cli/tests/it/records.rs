//! Issue 21, item 2: `cloister receipt verify` and `cloister audit verify` trust a record only as far as the
//! policy its evidence satisfies. Under a policy that pins no workload, any code on a genuine AMD platform
//! could have attested a key and signed a receipt for a made-up answer (or a log of made-up requests): both
//! refuse such a policy (exit 2, naming what to pin) before they read the record, and `audit verify` no
//! longer defaults to the baseline policy. The whole path with real receipts is in
//! `tests/it/governance.rs`.

use crate::common::cloister;

#[test]
fn offline_verifiers_refuse_a_policy_that_pins_no_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let unpinned = tmp.path().join("unpinned.toml");
    std::fs::write(&unpinned, "allow_debug = false\n").unwrap();
    let any = tmp.path().join("any.toml");
    std::fs::write(&any, "allow_any_workload = true\n").unwrap();
    let missing = tmp.path().join("no-such-record.json");
    let (unpinned, any, missing) = (
        unpinned.to_str().unwrap(),
        any.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let run = |args: &[&str]| {
        let o = cloister(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, out, err) = run(&[
        "receipt",
        "verify",
        "--receipt",
        missing,
        "--policy",
        unpinned,
        "--json",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("workload_identity: not set"), "{out}");
    assert!(err.contains("allow_any_workload"), "{err}");

    let (code, out, err) = run(&[
        "audit",
        "verify",
        "--log",
        missing,
        "--evidence",
        missing,
        "--json",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("--policy FILE is required"), "{out}");
    let (code, out, _) = run(&[
        "audit",
        "verify",
        "--log",
        missing,
        "--evidence",
        missing,
        "--policy",
        unpinned,
        "--json",
    ]);
    assert_eq!(code, Some(2));
    assert!(out.contains("workload_identity: not set"), "{out}");

    // The explicit escape hatch passes the policy check (with its warning) and goes on to the record.
    let (code, out, err) = run(&[
        "receipt",
        "verify",
        "--receipt",
        missing,
        "--policy",
        any,
        "--json",
    ]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("WARNING"), "{err}");
    assert!(out.contains("no-such-record.json"), "{out}");
}

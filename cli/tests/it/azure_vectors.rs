//! Issue 12's acceptance for the verifier, as a user runs it: `cloister verify --azure-evidence` on every file
//! of `../shared/vectors/azure-snp-vtpm` gives what expected.json says, and each negative fails for its reason.

use std::path::PathBuf;

use serde_json::Value;

use crate::common::cloister;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/azure-snp-vtpm")
}

fn run(args: &[&str]) -> (i32, Value, String) {
    let o = cloister(args);
    let text = format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{text}"));
    (o.status.code().unwrap(), v, text)
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

#[test]
fn every_trustee_evidence_file_verifies_with_the_expected_fields() {
    let want = expected();
    for name in ["evidence-v0.json", "evidence-v1.json", "evidence-v2.json"] {
        let e = &want[name];
        let file = dir().join(name);
        let rd = e["report_data_hex"].as_str().unwrap();
        let (code, v, out) = run(&[
            "verify",
            "--azure-evidence",
            file.to_str().unwrap(),
            "--report-data",
            rd,
            "--at",
            "2025-03-01T00:00:00Z",
            "--json",
        ]);
        assert_eq!(code, 0, "{name}: {out}");
        assert_eq!(v["verified"], e["verified"], "{name}");
        assert_eq!(v["product"], e["product"], "{name}");
        assert_eq!(v["azure"]["pcrs"]["0"], e["pcr00"], "{name}");
        assert_eq!(v["azure"]["report_data"], rd, "{name}");
        assert_eq!(v["azure"]["pcrs"].as_object().unwrap().len(), 24);
        assert_eq!(v["azure"]["vm_configuration"]["secure_boot"], true);
        assert_eq!(v["azure"]["ak_public_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(v["report"]["vmpl"], 0);
    }
}

/// hcl-report.bin + vcek.pem + tpm-quote-v1.json, with a policy that accepts the host's provisional firmware
/// (its COMMITTED_TCB is below CURRENT_TCB: genuine, and refused by the baseline).
fn parts(
    hcl: &std::path::Path,
    quote: &std::path::Path,
    report_data: &str,
) -> (i32, Value, String) {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, "permit_provisional_firmware = true\n").unwrap();
    run(&[
        "verify",
        "--hcl-report",
        hcl.to_str().unwrap(),
        "--tpm-quote",
        quote.to_str().unwrap(),
        "--vcek",
        dir().join("vcek.pem").to_str().unwrap(),
        "--report-data",
        report_data,
        "--policy",
        policy.to_str().unwrap(),
        "--at",
        "2024-01-01T00:00:00Z",
        "--json",
    ])
}

#[test]
fn the_hcl_report_with_its_quote_and_chain_verifies_and_each_negative_fails_for_its_reason() {
    let hcl = dir().join("hcl-report.bin");
    let quote = dir().join("tpm-quote-v1.json");
    let (code, v, out) = parts(&hcl, &quote, "6368616c6c656e6765");
    assert_eq!(code, 0, "{out}");
    assert_eq!(v["product"], "Milan");

    let tmp = tempfile::tempdir().unwrap();
    let flipped = |offset: usize, f: fn(u8) -> u8| {
        let mut b = std::fs::read(&hcl).unwrap();
        b[offset] = f(b[offset]);
        let p = tmp.path().join(format!("hcl-{offset:x}.bin"));
        std::fs::write(&p, b).unwrap();
        p
    };
    let cases: [(PathBuf, &str); 3] = [
        (flipped(0x06e0, |b| b.wrapping_add(1)), "hcl_var_data:"),
        (flipped(0x0540, |_| 0), "hcl_ak:"),
        (flipped(0x01a6, |_| 0), "report_signature:"),
    ];
    for (file, want) in cases {
        let (code, v, out) = parts(&file, &quote, "6368616c6c656e6765");
        assert_eq!(code, 1, "{out}");
        let reason = v["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(want)
                || (want == "report_signature:" && reason.starts_with("reported_tcb.")),
            "{file:?}: {reason}"
        );
    }
    // The quote's signature, one bit off.
    let mut q: Value = serde_json::from_slice(&std::fs::read(&quote).unwrap()).unwrap();
    let mut sig = hex::decode(q["signature"].as_str().unwrap()).unwrap();
    sig[0] ^= 1;
    q["signature"] = hex::encode(sig).into();
    let bad_quote = tmp.path().join("quote.json");
    std::fs::write(&bad_quote, serde_json::to_vec(&q).unwrap()).unwrap();
    let (code, v, _) = parts(&hcl, &bad_quote, "6368616c6c656e6765");
    assert_eq!(code, 1);
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .starts_with("quote_signature:"));
    // Another nonce.
    let (code, v, _) = parts(&hcl, &quote, &hex::encode("egnellahc"));
    assert_eq!(code, 1);
    assert!(v["reason"].as_str().unwrap().starts_with("quote_nonce:"));
    // v2 evidence against other report data: the user-data check names itself.
    let (code, v, _) = run(&[
        "verify",
        "--azure-evidence",
        dir().join("evidence-v2.json").to_str().unwrap(),
        "--report-data",
        "123abc",
        "--at",
        "2025-03-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(
        v["reason"].as_str().unwrap().starts_with("user_data:"),
        "{v}"
    );
    // A PCR policy that does not hold, and bad usage.
    let policy = tmp.path().join("pcr.toml");
    std::fs::write(
        &policy,
        format!("[tpm]\npcrs = {{ 4 = \"{}\" }}\n", "00".repeat(32)),
    )
    .unwrap();
    let (code, v, _) = run(&[
        "verify",
        "--azure-evidence",
        dir().join("evidence-v1.json").to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--at",
        "2025-03-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(v["reason"].as_str().unwrap().contains("pcr_policy"), "{v}");
    let (code, _, _) = run(&[
        "verify",
        "--azure-evidence",
        dir().join("evidence-v1.json").to_str().unwrap(),
        "--report-data",
        "zz",
        "--json",
    ]);
    assert_eq!(code, 2);
}

/// Issue 21, item 1: the paravisor's MEASUREMENT is the same on every Azure CVM. `cloister verify` with a
/// policy that pins only it (the real one, from Trustee's evidence) verifies — the report is genuine — but
/// warns that the verdict says nothing about which code ran; a policy that calls it a bare-SNP measurement
/// (`workload_identity = "measurement"`) refuses vTPM evidence; `"tpm"` with a PCR pin verifies, no warning.
#[test]
fn the_paravisors_measurement_alone_is_not_a_workload_pin() {
    let tmp = tempfile::tempdir().unwrap();
    let file = dir().join("evidence-v1.json");
    let verify = |policy_text: String| {
        let policy = tmp.path().join("policy.toml");
        std::fs::write(&policy, policy_text).unwrap();
        run(&[
            "verify",
            "--azure-evidence",
            file.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
            "--at",
            "2025-03-01T00:00:00Z",
            "--json",
        ])
    };
    let (code, v, _) = run(&[
        "verify",
        "--azure-evidence",
        file.to_str().unwrap(),
        "--at",
        "2025-03-01T00:00:00Z",
        "--json",
    ]);
    assert_eq!(code, 0);
    let measurement = v["report"]["measurement"].as_str().unwrap().to_owned();
    let pcr0 = v["azure"]["pcrs"]["0"].as_str().unwrap().to_owned();
    assert!(
        v["warnings"][0].as_str().unwrap().contains("no --policy"),
        "{v}"
    );

    let (code, v, out) = verify(format!("measurements = [\"{measurement}\"]\n"));
    assert_eq!(code, 0, "{out}");
    let warning = v["warnings"][0].as_str().unwrap();
    assert!(warning.contains("workload_identity: not set"), "{v}");
    assert!(out.contains("warning: "), "{out}");

    let (code, v, out) = verify(format!(
        "workload_identity = \"tpm\"\nmeasurements = [\"{measurement}\"]\n"
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        v["warnings"][0].as_str().unwrap().contains("pin tpm.pcrs"),
        "{v}"
    );

    let (code, v, _) = verify(format!(
        "workload_identity = \"measurement\"\nmeasurements = [\"{measurement}\"]\n"
    ));
    assert_eq!(code, 1);
    assert!(
        v["reason"].as_str().unwrap().contains("workload_identity"),
        "{v}"
    );

    let (code, v, out) = verify(format!(
        "workload_identity = \"tpm\"\nmeasurements = [\"{measurement}\"]\n[tpm]\npcrs = {{ 0 = \"{pcr0}\" }}\n"
    ));
    assert_eq!(code, 0, "{out}");
    assert!(v.get("warnings").is_none(), "{v}");
}

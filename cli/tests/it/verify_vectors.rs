//! `cloister verify` against real AMD evidence from `../shared/vectors/snp`: every set accepted with its
//! fields equal to `verification.json`, every negative rejected for the stated reason.

use std::path::Path;

use serde_json::Value;

use crate::common::{cloister, json_file, vector_sets};

/// An instant inside the validity of every certificate of the set: the latest notBefore.
fn valid_instant(v: &Value) -> String {
    let mut nb: Vec<&str> = ["ark", "ask", "leaf"]
        .iter()
        .map(|k| v[k]["not_before"].as_str().unwrap())
        .collect();
    nb.sort();
    nb.last().unwrap().to_string()
}

/// The latest notBefore of the certificates in `dir`, as RFC 3339.
fn instant_for_dir(dir: &Path) -> String {
    let latest = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            cloister_attestation::snp::certs::AmdCertificate::from_pem_or_der(&bytes)
                .unwrap()
                .not_before_unix()
        })
        .max()
        .unwrap();
    time::OffsetDateTime::from_unix_timestamp(latest)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn policy_file(dir: &Path, text: &str) -> String {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn run_json(args: &[&str]) -> (i32, Value) {
    let out = cloister(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

fn assert_tcb(got: &Value, want: &Value) {
    for k in ["bootloader", "tee", "snp", "microcode"] {
        assert_eq!(num(&got[k]), num(&want[k]), "tcb {k}");
    }
    match want.get("fmc") {
        Some(f) => assert_eq!(num(&got["fmc"]), num(f)),
        None => assert!(got["fmc"].is_null(), "fmc must be null outside Turin"),
    }
}

#[test]
fn every_set_is_accepted_and_its_fields_match_verification_json() {
    let tmp = tempfile::tempdir().unwrap();
    // Everything the baseline refuses but a relying party may allow: the go-sev-guest debug report, the
    // Trustee VLEK report (VMPL 1, provisional firmware). `the_baseline_refuses` checks the refusals.
    let allow_debug = policy_file(
        tmp.path(),
        "allow_debug = true\nvmpls = [0, 1]\npermit_provisional_firmware = true\n",
    );
    for set in vector_sets() {
        let v = json_file(&set.join("verification.json"));
        let at = valid_instant(&v);
        let report = set.join("report.bin");
        let (code, out) = run_json(&[
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--certs",
            set.to_str().unwrap(),
            "--at",
            &at,
            "--policy",
            &allow_debug,
            "--json",
        ]);
        assert_eq!(code, 0, "{}: {out}", set.display());
        assert_eq!(out["verified"], true);
        assert!(out["reason"].is_null());
        assert_eq!(out["product"], v["product"], "{}", set.display());
        assert_eq!(
            out["signing_key"].as_str().unwrap(),
            v["leaf_kind"].as_str().unwrap().to_lowercase()
        );
        let (r, w) = (&out["report"], &v["report"]);
        assert_eq!(num(&r["version"]), num(&w["version"]));
        assert_eq!(num(&r["guest_svn"]), num(&w["guest_svn"]));
        assert_eq!(num(&r["vmpl"]), num(&w["vmpl"]));
        for k in ["debug", "migrate_ma", "smt", "single_socket"] {
            assert_eq!(r["policy"][k], w["policy_decoded"][k], "policy.{k}");
        }
        for k in ["abi_major", "abi_minor"] {
            assert_eq!(num(&r["policy"][k]), num(&w["policy_decoded"][k]));
        }
        for k in [
            "measurement",
            "report_data",
            "host_data",
            "chip_id",
            "id_key_digest",
            "author_key_digest",
            "family_id",
            "image_id",
        ] {
            assert_eq!(r[k], w[k], "{}: {k}", set.display());
        }
        assert_eq!(num(&r["platform_info"]), num(&w["platform_info"]));
        for k in ["reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"] {
            assert_tcb(&r[k], &w[k]);
        }
    }
}

#[test]
fn debug_guest_is_rejected_by_the_baseline() {
    let set = crate::common::vectors_dir().join("go-sev-guest_milan_vcek_v2");
    let v = json_file(&set.join("verification.json"));
    let report = set.join("report.bin");
    let out = cloister(&[
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--certs",
        set.to_str().unwrap(),
        "--at",
        &valid_instant(&v),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allow_debug"), "{stderr}");
}

/// The Trustee VLEK report (Milan, VMPL 1, COMMITTED_TCB ucode 219 below CURRENT_TCB ucode 220) is genuine,
/// and the baseline refuses it twice over: VMPL 0 only, and no provisional firmware.
#[test]
fn the_baseline_refuses_a_vmpl_1_report_and_provisional_firmware() {
    let tmp = tempfile::tempdir().unwrap();
    let set = crate::common::vectors_dir().join("trustee_milan_vlek_v3");
    let v = json_file(&set.join("verification.json"));
    let report = set.join("report.bin");
    let at = valid_instant(&v);
    let verify = |policy: Option<&str>| {
        let mut args = vec![
            "verify".to_owned(),
            "--report".to_owned(),
            report.display().to_string(),
            "--certs".to_owned(),
            set.display().to_string(),
            "--at".to_owned(),
            at.clone(),
            "--json".to_owned(),
        ];
        if let Some(text) = policy {
            args.push("--policy".to_owned());
            args.push(policy_file(tmp.path(), text));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_json(&args)
    };
    for policy in [None, Some("vmpls = [1]\n")] {
        let (code, out) = verify(policy);
        assert_eq!(code, 1, "{out}");
        assert!(
            out["reason"]
                .as_str()
                .unwrap()
                .starts_with("policy: permit_provisional_firmware (committed_tcb)"),
            "{out}"
        );
    }
    let (code, out) = verify(Some("permit_provisional_firmware = true\n"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["reason"].as_str().unwrap().starts_with("policy: vmpls"),
        "{out}"
    );
    let (code, out) = verify(Some("vmpls = [1]\npermit_provisional_firmware = true\n"));
    assert_eq!(code, 0, "{out}");
    // minimum_tcb bounds LAUNCH_TCB too (ucode 219 at launch), unless minimum_launch_tcb says otherwise.
    let (code, out) = verify(Some(
        "vmpls = [1]\npermit_provisional_firmware = true\n[minimum_tcb]\nmicrocode = 217\n",
    ));
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(Some(
        "vmpls = [1]\npermit_provisional_firmware = true\n[minimum_tcb]\nsnp = 25\n",
    ));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["reason"]
            .as_str()
            .unwrap()
            .starts_with("policy: minimum_tcb.snp"),
        "{out}"
    );
}

/// Maps the check names of `expected.json` to the error prefixes `cloister verify` uses.
fn reason_matches(check: &str, reason: &str) -> bool {
    let prefix = match check {
        "report_parse" => "report_parse",
        "report_signature_ecdsa_p384_sha384" | "openssl_report_signature" => "report_signature",
        "hwid_matches_chip_id" => "hwid",
        "ask_signed_by_ark_pss" | "leaf_signed_by_ask_pss" | "openssl_verify_chain" => {
            "certificate"
        }
        other => panic!("unknown check name {other}"),
    };
    reason.starts_with(prefix)
}

#[test]
fn every_negative_vector_is_rejected_for_its_stated_reason() {
    let allow_debug = tempfile::tempdir().unwrap();
    let policy = policy_file(allow_debug.path(), "allow_debug = true\n");
    for set in vector_sets() {
        let v = json_file(&set.join("verification.json"));
        let expected = json_file(&set.join("negative/expected.json"));
        for case in expected.as_array().unwrap() {
            // A directory with the positive set's chain, one file replaced.
            let dir = tempfile::tempdir().unwrap();
            let leaf_name = if v["leaf_kind"] == "VLEK" {
                "vlek"
            } else {
                "vcek"
            };
            let mid_name = if v["leaf_kind"] == "VLEK" {
                "asvk"
            } else {
                "ask"
            };
            std::fs::copy(set.join("ark.pem"), dir.path().join("ark.pem")).unwrap();
            let mid = case["ask"].as_str().map_or_else(
                || set.join(format!("{mid_name}.pem")),
                |f| set.join("negative").join(f),
            );
            std::fs::copy(mid, dir.path().join(format!("{mid_name}.pem"))).unwrap();
            let leaf = case["leaf"].as_str().map_or_else(
                || set.join(format!("{leaf_name}.der")),
                |f| set.join("negative").join(f),
            );
            std::fs::copy(leaf, dir.path().join(format!("{leaf_name}.der"))).unwrap();
            // An instant at which the certificates actually used are all valid, so that the expected
            // failure (not an expiry) is what the verifier reports.
            let at = instant_for_dir(dir.path());
            let report = case["report"]
                .as_str()
                .map_or_else(|| set.join("report.bin"), |f| set.join("negative").join(f));
            let (code, out) = run_json(&[
                "verify",
                "--report",
                report.to_str().unwrap(),
                "--certs",
                dir.path().to_str().unwrap(),
                "--at",
                &at,
                "--policy",
                &policy,
                "--json",
            ]);
            let name = format!("{} / {}", set.display(), case["name"]);
            assert_eq!(code, 1, "{name}: {out}");
            assert_eq!(out["verified"], false);
            let reason = out["reason"].as_str().unwrap();
            let checks = case["expect_failed_checks"].as_array().unwrap();
            assert!(
                checks
                    .iter()
                    .any(|c| reason_matches(c.as_str().unwrap(), reason)),
                "{name}: reason {reason:?} is none of {checks:?}"
            );
        }
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_are_rejected() {
    // The VLEK of this set expired on 2025-12-10; "now" is later.
    let set = crate::common::vectors_dir().join("trustee_milan_vlek_v3");
    let report = set.join("report.bin");
    let out = cloister(&[
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--certs",
        set.to_str().unwrap(),
        "--at",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let out = cloister(&[
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--certs",
        set.to_str().unwrap(),
        "--at",
        "2020-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn crl_signed_by_the_right_ark_is_accepted_and_another_products_is_rejected() {
    let set = crate::common::vectors_dir().join("openpcc_azure_genoa_vcek_v3_with_crls");
    let report = set.join("report.bin");
    let base = [
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--certs",
        set.to_str().unwrap(),
        "--at",
        "2025-07-01T00:00:00Z",
        "--crl",
    ];
    let genoa = set.join("crl_genoa.der");
    let mut args = base.to_vec();
    args.push(genoa.to_str().unwrap());
    let out = cloister(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let milan = set.join("crl_milan.der");
    let mut args = base.to_vec();
    args.push(milan.to_str().unwrap());
    let out = cloister(&args);
    assert_eq!(out.status.code(), Some(1));
    // Both CRLs: each applies to the chains its ARK signs; Milan's does not apply to this Genoa chain.
    let mut args = base.to_vec();
    args.push(genoa.to_str().unwrap());
    args.push("--crl");
    args.push(milan.to_str().unwrap());
    let out = cloister(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A CRL past its nextUpdate is stale: fail closed.
    let mut args = base.to_vec();
    args[6] = "2026-01-01T00:00:00Z";
    args.push(genoa.to_str().unwrap());
    let out = cloister(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("crl"));
}

#[test]
fn another_products_ark_is_not_a_root_for_this_report() {
    let milan = crate::common::vectors_dir().join("oak_milan_vcek_v3_containers");
    let genoa = crate::common::vectors_dir().join("oak_genoa_vcek_v5");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(genoa.join("ark.pem"), dir.path().join("ark.pem")).unwrap();
    std::fs::copy(milan.join("ask.pem"), dir.path().join("ask.pem")).unwrap();
    std::fs::copy(milan.join("vcek.der"), dir.path().join("vcek.der")).unwrap();
    let v = json_file(&milan.join("verification.json"));
    let (code, out) = run_json(&[
        "verify",
        "--report",
        milan.join("report.bin").to_str().unwrap(),
        "--certs",
        dir.path().to_str().unwrap(),
        "--at",
        &valid_instant(&v),
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(out["reason"].as_str().unwrap().starts_with("root"), "{out}");
}

#[test]
fn embedded_chain_is_used_when_only_the_leaf_is_given() {
    let set = crate::common::vectors_dir().join("oak_turin_vcek_v5");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(set.join("vcek.der"), dir.path().join("vcek.der")).unwrap();
    let v = json_file(&set.join("verification.json"));
    let out = cloister(&[
        "verify",
        "--report",
        set.join("report.bin").to_str().unwrap(),
        "--certs",
        dir.path().to_str().unwrap(),
        "--at",
        &valid_instant(&v),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_leaf_is_a_rejection_and_bad_inputs_are_usage_errors() {
    let set = crate::common::vectors_dir().join("oak_genoa_vcek_v5");
    let report = set.join("report.bin");
    let (code, out) = run_json(&["verify", "--report", report.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    assert!(out["reason"].as_str().unwrap().contains("missing"), "{out}");
    // The report is still decoded for display.
    assert_eq!(out["report"]["version"], 5);

    let (code, out) = run_json(&["verify", "--report", "/nonexistent/report.bin", "--json"]);
    assert_eq!(code, 2);
    assert_eq!(out["verified"], false);
    let out = cloister(&[
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--at",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let bad = policy_file(dir.path(), "allow_debugg = true\n");
    let out = cloister(&[
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--policy",
        &bad,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_debugg"));
    let out = cloister(&["verify"]);
    assert_eq!(out.status.code(), Some(2));
    // --json holds for usage errors too: one object on stdout.
    let (code, out) = run_json(&["verify", "--json", "--at"]);
    assert_eq!(code, 2);
    assert_eq!(out["verified"], false);
    assert!(out["reason"].as_str().unwrap().starts_with("usage"));
}

#[test]
fn a_policy_can_name_the_crl_relative_to_itself() {
    let set = crate::common::vectors_dir().join("openpcc_azure_genoa_vcek_v3_with_crls");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(set.join("crl_genoa.der"), dir.path().join("genoa.crl")).unwrap();
    std::fs::copy(set.join("crl_milan.der"), dir.path().join("milan.crl")).unwrap();
    let report = set.join("report.bin");
    let run = |policy_text: &str, at: &str| {
        let policy = policy_file(dir.path(), policy_text);
        cloister(&[
            "verify",
            "--report",
            report.to_str().unwrap(),
            "--certs",
            set.to_str().unwrap(),
            "--at",
            at,
            "--policy",
            &policy,
        ])
    };
    let out = run("crl = \"genoa.crl\"\n", "2025-07-01T00:00:00Z");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("crl = \"milan.crl\"\n", "2025-07-01T00:00:00Z");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.starts_with("rejected: crl")),
        "{stderr}"
    );
    // Stale at that instant: fail closed.
    let out = run("crl = \"genoa.crl\"\n", "2026-01-01T00:00:00Z");
    assert_eq!(out.status.code(), Some(1));
    let out = run("crl = \"missing.crl\"\n", "2025-07-01T00:00:00Z");
    assert_eq!(out.status.code(), Some(2));
    // `crls`: one per chain (product, signing key); each applies to the chains its ARK signs.
    let out = run(
        "crls = [\"milan.crl\", \"genoa.crl\"]\n",
        "2025-07-01T00:00:00Z",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("crls = [\"milan.crl\"]\n", "2025-07-01T00:00:00Z");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("none of the 1 CRL(s)"), "{stderr}");
}

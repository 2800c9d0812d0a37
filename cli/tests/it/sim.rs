//! `cloister sim` end to end, as a user runs it: `sim init`, `sim report`, then `cloister verify` (the
//! production verifier) with and without the simulated root; the real vectors' negative mutations
//! applied to simulated reports; VLEK and Turin round trips; CRL revocation; the policy's
//! `simulated_root`; the state directory's safety; and the independent openssl check
//! (`scripts/check-sim-openssl.sh`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cloister_attestation::snp::certs::CertRole;
use cloister_sim::{simulated_launch_measurement, SimPlatform};
use serde_json::Value;

use crate::common::{cloister, json_file, vectors_dir};

/// A directory that outlives the test (platforms are shared by the tests of this binary; RSA-4096 key
/// generation takes a few seconds per key).
pub(crate) fn kept_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep()
}

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cloister sim init --dir <new dir>/platform <args>` and returns the platform directory.
pub(crate) fn init(prefix: &str, args: &[&str]) -> PathBuf {
    let dir = kept_dir(prefix).join("platform");
    let mut all = vec!["sim", "init", "--dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = cloister(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sim init {args:?}: {}",
        stderr(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SIMULATED"), "{stdout}");
    dir
}

const GENOA_TCB: &str = "bootloader=9,tee=1,snp=21,microcode=210";
const TURIN_TCB: &str = "bootloader=2,tee=1,snp=4,microcode=72,fmc=3";

/// Genoa, VCEK only, TCB [`GENOA_TCB`].
pub(crate) fn genoa() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| init("sim-genoa-", &["--tcb", GENOA_TCB]))
}

/// Milan with a VLEK, default TCB.
pub(crate) fn milan() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| init("sim-milan-", &["--product", "Milan", "--vlek"]))
}

/// Turin with a VLEK, TCB [`TURIN_TCB`].
pub(crate) fn turin() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        init(
            "sim-turin-",
            &["--product", "turin", "--tcb", TURIN_TCB, "--vlek"],
        )
    })
}

/// `cloister sim report --dir DIR --out <tmp>/report.bin <args>`; returns the report path.
pub(crate) fn report(platform: &Path, tmp: &Path, args: &[&str]) -> PathBuf {
    let out_path = tmp.join(format!("report-{}.bin", args.len()));
    let mut all = vec![
        "sim",
        "report",
        "--dir",
        platform.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = cloister(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sim report {args:?}: {}",
        stderr(&out)
    );
    assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 1184);
    out_path
}

/// `cloister verify --report R --certs C [--sim-root S] --json <extra>`.
pub(crate) fn verify(
    report: &Path,
    certs: &Path,
    sim_root: Option<&Path>,
    extra: &[&str],
) -> (i32, Value) {
    let mut args = vec![
        "verify",
        "--report",
        report.to_str().unwrap(),
        "--certs",
        certs.to_str().unwrap(),
        "--json",
    ];
    if let Some(root) = sim_root {
        args.push("--sim-root");
        args.push(root.to_str().unwrap());
    }
    args.extend_from_slice(extra);
    let out = cloister(&args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

pub(crate) fn root(platform: &Path) -> PathBuf {
    platform.join("certs/ark.pem")
}

pub(crate) fn hex_of(byte: u8, len: usize) -> String {
    hex::encode(vec![byte; len])
}

#[test]
fn genoa_report_verifies_with_the_simulated_root_and_every_field_is_as_requested() {
    let tmp = tempfile::tempdir().unwrap();
    let p = genoa();
    let measurement = hex::encode(simulated_launch_measurement(b"enclave", b"config"));
    let report_data = hex::encode((0..64u8).collect::<Vec<_>>());
    let host_data = hex_of(0x5A, 32);
    let r = report(
        p,
        tmp.path(),
        &[
            "--report-data",
            &report_data,
            "--measurement",
            &measurement,
            "--host-data",
            &host_data,
            "--vmpl",
            "2",
            "--policy",
            "0x120102", // single socket, no SMT, ABI 1.2 (and the must-be-one bit 17)
        ],
    );
    // VMPL 2 is outside the baseline (VMPL 0 only): rejected, then accepted by a policy that allows it.
    let (code, v) = verify(&r, &p.join("certs"), Some(&root(p)), &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["reason"].as_str().unwrap().starts_with("policy: vmpls"),
        "{v}"
    );
    let vmpl2 = tmp.path().join("vmpl2.toml");
    std::fs::write(&vmpl2, "vmpls = [2]\n").unwrap();
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        Some(&root(p)),
        &["--policy", vmpl2.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["simulated"], true);
    assert_eq!(v["product"], "Genoa");
    assert_eq!(v["signing_key"], "vcek");
    let rep = &v["report"];
    assert_eq!(rep["version"], 3);
    assert_eq!(rep["report_data"], report_data);
    assert_eq!(rep["measurement"], measurement);
    assert_eq!(rep["host_data"], host_data);
    assert_eq!(rep["vmpl"], 2);
    assert_eq!(rep["policy"]["single_socket"], true);
    assert_eq!(rep["policy"]["smt"], false);
    assert_eq!(rep["policy"]["debug"], false);
    assert_eq!(rep["policy"]["abi_major"], 1);
    assert_eq!(rep["policy"]["abi_minor"], 2);
    let platform = SimPlatform::open(p).unwrap();
    assert_eq!(rep["chip_id"], hex::encode(platform.chip_id()));
    for tcb in ["reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"] {
        let t = &rep[tcb];
        assert_eq!(
            (&t["bootloader"], &t["tee"], &t["snp"], &t["microcode"]),
            (
                &Value::from(9),
                &Value::from(1),
                &Value::from(21),
                &Value::from(210)
            ),
            "{tcb}"
        );
        assert!(t["fmc"].is_null());
    }
    // Defaults: everything else zero, policy 0x30000.
    let r = report(p, tmp.path(), &[]);
    let (code, v) = verify(&r, &p.join("certs"), Some(&root(p)), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["report"]["report_data"], hex_of(0, 64));
    assert_eq!(v["report"]["measurement"], hex_of(0, 48));
    assert_eq!(v["report"]["vmpl"], 0);
    assert_eq!(v["report"]["policy"]["smt"], true);
    // The human-readable output says SIMULATED.
    let out = cloister(&[
        "verify",
        "--report",
        r.to_str().unwrap(),
        "--certs",
        p.join("certs").to_str().unwrap(),
        "--sim-root",
        root(p).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIMULATED"));
}

#[test]
fn without_the_simulated_root_the_report_is_rejected_at_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    for p in [genoa(), milan(), turin()] {
        let r = report(p, tmp.path(), &[]);
        let (code, v) = verify(&r, &p.join("certs"), None, &[]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["verified"], false);
        assert_eq!(v["simulated"], false);
        let reason = v["reason"].as_str().unwrap();
        assert!(reason.starts_with("root"), "{reason}");
        assert!(reason.contains("SIMULATED"), "{reason}");
        // Another simulated platform's root does not vouch for it either.
        let other = if p == genoa() { milan() } else { genoa() };
        let (code, v) = verify(&r, &p.join("certs"), Some(&root(other)), &[]);
        assert_eq!(code, 1, "{v}");
        assert!(v["reason"].as_str().unwrap().starts_with("root"), "{v}");
    }
}

/// Maps the check names of a vector set's `negative/expected.json` to `cloister verify`'s reason prefixes
/// (as `verify_vectors.rs` does for the real reports).
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

/// Applies each negative case of the real vector set `set` to a simulated report of `platform` (signed
/// by its VCEK, or VLEK if `vlek`), the intermediate of `other_product_platform` standing in for the
/// other product's ASK, and checks that the rejection reason is one the real case expects.
fn negatives_like(set: &str, platform: &Path, vlek: bool, other_product_platform: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let args: &[&str] = if vlek { &["--vlek"] } else { &[] };
    let good = report(platform, tmp.path(), args);
    let (leaf_name, mid_name, certs) = if vlek {
        ("vlek", "asvk", platform.join("certs-vlek"))
    } else {
        ("vcek", "ask", platform.join("certs"))
    };
    // The positive case first.
    let (code, v) = verify(&good, &certs, Some(&root(platform)), &[]);
    assert_eq!(code, 0, "{set}: {v}");

    let sim = SimPlatform::open(platform).unwrap();
    let expected = json_file(&vectors_dir().join(set).join("negative/expected.json"));
    for case in expected.as_array().unwrap() {
        let name = format!("{set} / {}", case["name"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(certs.join("ark.pem"), dir.path().join("ark.pem")).unwrap();
        std::fs::copy(
            certs.join(format!("{mid_name}.pem")),
            dir.path().join(format!("{mid_name}.pem")),
        )
        .unwrap();
        std::fs::copy(
            certs.join(format!("{leaf_name}.pem")),
            dir.path().join(format!("{leaf_name}.pem")),
        )
        .unwrap();
        let mut raw = std::fs::read(&good).unwrap();
        match (
            case["report"].as_str(),
            case["leaf"].as_str(),
            case["ask"].as_str(),
        ) {
            (Some("report_measurement_flipped.bin"), None, None) => raw[0x90] ^= 0x01,
            (Some("report_signature_flipped.bin"), None, None) => raw[0x2A0] ^= 0x01,
            (Some("report_truncated_1183.bin"), None, None) => raw.truncate(1183),
            (None, Some(leaf), None) if leaf.starts_with("other_chip_") => {
                // Another chip's VCEK (another VLEK), validly signed by the same ASK (ASVK).
                let other = if vlek {
                    sim.issue_vlek_for_other_key().unwrap()
                } else {
                    sim.issue_vcek_for_other_chip(&[0xA5; 64]).unwrap()
                };
                std::fs::remove_file(dir.path().join(format!("{leaf_name}.pem"))).unwrap();
                std::fs::write(dir.path().join(format!("{leaf_name}.der")), other).unwrap();
            }
            (None, None, Some("ask_other_product.pem")) => {
                // The intermediate replaced by another product's ASK.
                std::fs::copy(
                    other_product_platform.join("certs/ask.pem"),
                    dir.path().join(format!("{mid_name}.pem")),
                )
                .unwrap();
            }
            other => panic!("{name}: no simulated equivalent for {other:?}: add one"),
        }
        let mutated = dir.path().join("report.bin");
        std::fs::write(&mutated, &raw).unwrap();
        let (code, v) = verify(&mutated, dir.path(), Some(&root(platform)), &[]);
        assert_eq!(code, 1, "{name}: {v}");
        let reason = v["reason"].as_str().unwrap();
        let checks = case["expect_failed_checks"].as_array().unwrap();
        assert!(
            checks
                .iter()
                .any(|c| reason_matches(c.as_str().unwrap(), reason)),
            "{name}: reason {reason:?} is none of {checks:?}"
        );
    }
}

#[test]
fn the_real_vectors_negative_mutations_fail_for_the_same_reason_on_simulated_reports() {
    negatives_like("oak_genoa_vcek_v5", genoa(), false, milan());
    negatives_like("oak_milan_vcek_v3_containers", milan(), false, genoa());
    negatives_like("oak_turin_vcek_v5", turin(), false, genoa());
    negatives_like("trustee_milan_vlek_v3", milan(), true, genoa());
}

#[test]
fn vlek_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    for (p, product) in [(milan(), "Milan"), (turin(), "Turin")] {
        let report_data = hex_of(0xC3, 64);
        let r = report(p, tmp.path(), &["--vlek", "--report-data", &report_data]);
        let (code, v) = verify(&r, &p.join("certs-vlek"), Some(&root(p)), &[]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["signing_key"], "vlek");
        assert_eq!(v["product"], product);
        assert_eq!(v["simulated"], true);
        assert_eq!(v["report"]["report_data"], report_data);
        // A VLEK is not tied to a chip: CHIP_ID is zero, as in AMD's VLEK reports.
        assert_eq!(v["report"]["chip_id"], hex_of(0, 64));
        // Against the VCEK chain: the signing key does not match.
        let (code, v) = verify(&r, &p.join("certs"), Some(&root(p)), &[]);
        assert_eq!(code, 1, "{v}");
        assert!(
            v["reason"].as_str().unwrap().starts_with("signing_key"),
            "{v}"
        );
    }
    // A policy that requires a VCEK rejects it.
    let policy = tmp.path().join("vcek-only.toml");
    std::fs::write(&policy, "signing_key = \"vcek\"\n").unwrap();
    let r = report(milan(), tmp.path(), &["--vlek"]);
    let (code, v) = verify(
        &r,
        &milan().join("certs-vlek"),
        Some(&root(milan())),
        &["--policy", policy.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("policy"), "{v}");
}

#[test]
fn turin_round_trip_with_fmc() {
    let tmp = tempfile::tempdir().unwrap();
    let p = turin();
    let r = report(p, tmp.path(), &[]);
    let (code, v) = verify(&r, &p.join("certs"), Some(&root(p)), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["product"], "Turin");
    assert_eq!(v["report"]["version"], 5);
    for tcb in ["reported_tcb", "current_tcb", "committed_tcb", "launch_tcb"] {
        let t = &v["report"][tcb];
        assert_eq!(t["fmc"], 3, "{tcb}");
        assert_eq!(t["bootloader"], 2);
        assert_eq!(t["tee"], 1);
        assert_eq!(t["snp"], 4);
        assert_eq!(t["microcode"], 72);
    }
    // Turin's CHIP_ID: the 8 bytes of hwID, then zeros.
    let chip = v["report"]["chip_id"].as_str().unwrap();
    assert_eq!(&chip[16..], hex_of(0, 56));
    assert_ne!(&chip[..16], hex_of(0, 8));
    let sim = SimPlatform::open(p).unwrap();
    let hw_id = sim
        .certificate(CertRole::Vcek)
        .unwrap()
        .amd_extensions()
        .unwrap()
        .hw_id
        .unwrap();
    assert_eq!(hex::encode(hw_id), &chip[..16]);
    // A policy demanding a higher FMC SPL rejects it.
    let policy = tmp.path().join("fmc.toml");
    std::fs::write(&policy, "[minimum_tcb]\nfmc = 4\n").unwrap();
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        Some(&root(p)),
        &["--policy", policy.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("fmc"), "{v}");
}

#[test]
fn a_simulated_crl_that_revokes_the_ask_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let p = genoa();
    let r = report(p, tmp.path(), &[]);
    let sim = SimPlatform::open(p).unwrap();
    let ask_serial = sim
        .certificate(CertRole::Ask)
        .unwrap()
        .serial_number()
        .to_vec();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let write = |name: &str, der: Vec<u8>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, der).unwrap();
        path
    };
    let revoking = write(
        "revoking.crl",
        sim.issue_crl(&[&ask_serial], now - 60, now + 3600).unwrap(),
    );
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        Some(&root(p)),
        &["--crl", revoking.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(reason.starts_with("crl"), "{reason}");
    assert!(reason.contains("revoked"), "{reason}");

    let clean = write(
        "clean.crl",
        sim.issue_crl(&[], now - 60, now + 3600).unwrap(),
    );
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        Some(&root(p)),
        &["--crl", clean.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v}");
    // A CRL of another simulated platform is not signed by this ARK.
    let foreign = write(
        "foreign.crl",
        SimPlatform::open(milan())
            .unwrap()
            .issue_crl(&[], now - 60, now + 3600)
            .unwrap(),
    );
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        Some(&root(p)),
        &["--crl", foreign.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("crl"), "{v}");
}

#[test]
fn a_policys_simulated_root_works_like_sim_root_and_can_pin_the_measurement() {
    let tmp = tempfile::tempdir().unwrap();
    let p = genoa();
    let measurement =
        simulated_launch_measurement(b"the enclave binary", b"firmware = \"simulated\"\n");
    let r = report(p, tmp.path(), &["--measurement", &hex::encode(measurement)]);
    // The policy and a copy of the root travel together: a relative path is relative to the policy file.
    let policy_dir = tmp.path().join("relying-party");
    std::fs::create_dir_all(policy_dir.join("roots")).unwrap();
    std::fs::copy(root(p), policy_dir.join("roots/sim-ark.pem")).unwrap();
    let policy = policy_dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "simulated_root = \"roots/sim-ark.pem\"\nmeasurements = [\"{}\"]\n",
            hex::encode(measurement)
        ),
    )
    .unwrap();
    let policy_arg = ["--policy", policy.to_str().unwrap()];
    let (code, v) = verify(&r, &p.join("certs"), None, &policy_arg);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["simulated"], true);

    // Another launch (a changed configuration) has another measurement: rejected by the pin.
    let other = simulated_launch_measurement(b"the enclave binary", b"firmware = \"simulated\" \n");
    let r2 = report(
        p,
        tmp.path(),
        &["--vmpl", "0", "--measurement", &hex::encode(other)],
    );
    let (code, v) = verify(&r2, &p.join("certs"), None, &policy_arg);
    assert_eq!(code, 1, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("policy"), "{v}");

    // A policy without simulated_root: rejected at the root.
    let plain = policy_dir.join("plain.toml");
    std::fs::write(
        &plain,
        format!("measurements = [\"{}\"]\n", hex::encode(measurement)),
    )
    .unwrap();
    let (code, v) = verify(
        &r,
        &p.join("certs"),
        None,
        &["--policy", plain.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("root"), "{v}");
}

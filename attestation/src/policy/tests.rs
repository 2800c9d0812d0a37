//! Policy checks against real reports (the vectors), and the baseline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::snp::report::AttestationReport;

fn report(set: &str) -> AttestationReport {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/snp")
        .join(set)
        .join("report.bin");
    AttestationReport::from_bytes(&std::fs::read(p).unwrap()).unwrap()
}

fn check(policy: &str, set: &str) -> Result<(), PolicyViolation> {
    check_report(policy, &report(set))
}

fn check_report(policy: &str, r: &AttestationReport) -> Result<(), PolicyViolation> {
    let product = r.cpuid_product().unwrap_or(Product::Milan);
    let facts = ChainFacts {
        report: r,
        product,
        signing_key: r.signing_key,
        simulated: false,
    };
    Policy::from_toml(policy).unwrap().check(&facts)
}

const GENOA: &str = "oak_genoa_vcek_v5"; // bl=10 tee=0 snp=25 ucode=84, vmpl 0, policy 0x30000
const TURIN: &str = "oak_turin_vcek_v5"; // fmc=0 bl=1 tee=0 snp=2 ucode=71
const VLEK: &str = "trustee_milan_vlek_v3"; // vmpl 1, VLEK
const DEBUG: &str = "go-sev-guest_milan_vcek_v2"; // debug bit set

fn rejects(policy: &str, set: &str, field: &str) {
    let err = check(policy, set).expect_err(policy);
    assert_eq!(err.field, field, "{policy}: {err}");
}

#[test]
fn the_baseline_accepts_plain_genuine_reports_and_rejects_debug() {
    for set in [GENOA, TURIN] {
        check("", set).unwrap();
    }
    rejects("", DEBUG, "allow_debug");
    check("allow_debug = true", DEBUG).unwrap();
}

/// A GENOA report with POLICY bits changed (the policy sees decoded fields; signatures are not involved here).
fn genoa_with(edit: impl FnOnce(&mut AttestationReport)) -> AttestationReport {
    let mut r = report(GENOA);
    edit(&mut r);
    r
}

fn rejects_report(policy: &str, r: &AttestationReport, field: &str) {
    let err = check_report(policy, r).expect_err(policy);
    assert_eq!(err.field, field, "{policy}: {err}");
}

#[test]
fn the_baseline_is_at_least_go_sev_guests_zero_value_options() {
    // Migration agent (bit 18) and CXL (bit 21): refused unless allowed.
    let ma = genoa_with(|r| r.policy.0 |= 1 << 18);
    rejects_report("", &ma, "allow_migration_agent");
    check_report("allow_migration_agent = true", &ma).unwrap();
    let cxl = genoa_with(|r| r.policy.0 |= 1 << 21);
    rejects_report("", &cxl, "allow_cxl");
    check_report("allow_cxl = true", &cxl).unwrap();
    // VMPL 0 only.
    rejects("", VLEK, "permit_provisional_firmware (committed_tcb)");
    rejects("permit_provisional_firmware = true", VLEK, "vmpls");
    check("permit_provisional_firmware = true\nvmpls = [1]", VLEK).unwrap();
    // Provisional firmware: committed version differs from current.
    let provisional =
        genoa_with(|r| r.committed_version.build = r.current_version.build.wrapping_sub(1));
    rejects_report(
        "",
        &provisional,
        "permit_provisional_firmware (committed_version)",
    );
    check_report("permit_provisional_firmware = true", &provisional).unwrap();
    // REPORTED_TCB above CURRENT_TCB: always refused.
    let ahead = genoa_with(|r| r.reported_tcb.snp = r.current_tcb.snp + 1);
    rejects_report("allow_debug = true", &ahead, "reported_tcb.snp");
    // SMT is allowed by default (clouds run with it).
    assert!(report(GENOA).policy.smt());
    check("", GENOA).unwrap();
}

#[test]
fn policy_bits_22_to_25_can_be_required() {
    for (knob, bit) in [
        ("require_aes_256_xts", 22),
        ("require_rapl_disabled", 23),
        ("require_ciphertext_hiding", 24),
        ("require_page_swap_disabled", 25),
    ] {
        rejects(&format!("{knob} = true"), GENOA, knob);
        let set = genoa_with(|r| r.policy.0 |= 1 << bit);
        check_report(&format!("{knob} = true"), &set).unwrap();
    }
}

#[test]
fn minimum_tcb_also_bounds_the_launch_tcb_unless_minimum_launch_tcb_is_given() {
    let older_launch = genoa_with(|r| r.launch_tcb.snp = 20);
    rejects_report(
        "[minimum_tcb]\nsnp = 25",
        &older_launch,
        "minimum_tcb.snp (launch_tcb)",
    );
    check_report(
        "[minimum_tcb]\nsnp = 25\n[minimum_launch_tcb]\nsnp = 20",
        &older_launch,
    )
    .unwrap();
}

#[test]
fn config_digests_and_workload_pins() {
    let d = [7u8; 48];
    let p =
        Policy::from_toml(&format!("config_digests = [\"sha384:{}\"]", hex::encode(d))).unwrap();
    p.check_config_digest(&d).unwrap();
    assert_eq!(
        p.check_config_digest(&[8; 48]).unwrap_err().field,
        "config_digests"
    );
    // A configuration digest alone is not a workload identity.
    assert!(p.require_workload_pin().is_err());
    let pinned = |text: &str| Policy::from_toml(text).unwrap().require_workload_pin();
    let m = "00".repeat(48);
    let hd = format!("host_data = \"{}\"", "00".repeat(32));
    let ident = |i: &str, rest: &str| format!("workload_identity = \"{i}\"\n{rest}");
    for pin in ["measurements", "id_key_digests", "author_key_digests"] {
        let text = ident("measurement", &format!("{pin} = [\"{m}\"]"));
        assert_eq!(pinned(&text), Ok(false), "{text}");
    }
    // Undeclared: the same pin means a workload on one platform and nobody in particular on another.
    assert_eq!(
        pinned(&format!("measurements = [\"{m}\"]")),
        Err(NoWorkloadPin::Undeclared)
    );
    // HOST_DATA is the host's choice: pinning it alone would accept any code launched with that value.
    assert!(matches!(
        pinned(&ident("measurement", &hd)),
        Err(NoWorkloadPin::Missing { .. })
    ));
    assert!(pinned(&ident("measurement", "measurements = []")).is_err());
    assert_eq!(pinned("allow_any_workload = true"), Ok(true));
    assert_eq!(pinned(""), Err(NoWorkloadPin::Undeclared));
}

/// Issue 21, item 1: a platform's shared measurement is not a workload pin. On Azure MEASUREMENT is the
/// paravisor's (the same on every Azure CVM), on Kata the pod VM's (the same for every pod of a runtime
/// class): policies for them must pin the PCRs, or HOST_DATA, and say so.
#[test]
fn platform_only_pins_are_not_workload_pins() {
    let pinned = |text: &str| Policy::from_toml(text).unwrap().require_workload_pin();
    let m = format!("measurements = [\"{}\"]", "11".repeat(48));
    let hd = format!("host_data = \"{}\"", "22".repeat(32));
    let pcrs = format!("[tpm]\npcrs = {{ 11 = \"{}\" }}", "33".repeat(32));
    let missing = |r: Result<bool, NoWorkloadPin>| match r {
        Err(NoWorkloadPin::Missing { missing, .. }) => missing,
        other => panic!("expected a missing pin, got {other:?}"),
    };
    // Azure: the paravisor's measurement alone.
    let azure_measurement_only = format!("workload_identity = \"tpm\"\n{m}");
    assert!(missing(pinned(&azure_measurement_only)).contains("tpm.pcrs"));
    assert_eq!(
        pinned(&format!("workload_identity = \"tpm\"\n{m}\n{pcrs}")),
        Ok(false)
    );
    // CoCo: the pod VM's measurement alone, and HOST_DATA alone.
    let coco_measurement_only = format!("workload_identity = \"initdata\"\n{m}");
    assert!(missing(pinned(&coco_measurement_only)).contains("host_data"));
    let coco_host_data_only = format!("workload_identity = \"initdata\"\n{hd}");
    assert!(missing(pinned(&coco_host_data_only)).contains("measurements"));
    assert_eq!(
        pinned(&format!("workload_identity = \"initdata\"\n{m}\n{hd}")),
        Ok(false)
    );
    // The message names the missing pin and the escape hatch.
    let text = pinned(&coco_measurement_only).unwrap_err().to_string();
    assert!(
        text.starts_with("workload_identity = \"initdata\": pin host_data"),
        "{text}"
    );
    assert!(text.contains("allow_any_workload"), "{text}");
    assert!(Policy::from_toml("workload_identity = \"pcr\"").is_err());
}

/// Issue 21, item 1, at verification: evidence of another kind than the policy declares is refused, and a
/// report whose HOST_DATA carries something is refused under a measurement policy that does not pin it.
#[test]
fn evidence_must_be_of_the_declared_kind() {
    let p = |text: &str| Policy::from_toml(text).unwrap();
    let zero = [0u8; 32];
    let initdata = [0x22u8; 32];
    let measurement = p("workload_identity = \"measurement\"");
    measurement.check_workload_identity(false, &zero).unwrap();
    assert_eq!(
        measurement
            .check_workload_identity(true, &zero)
            .unwrap_err()
            .field,
        "workload_identity"
    );
    let v = measurement
        .check_workload_identity(false, &initdata)
        .unwrap_err();
    assert_eq!(v.field, "host_data");
    assert_eq!(v.found, "22".repeat(32));
    p(&format!(
        "workload_identity = \"measurement\"\nhost_data = \"{}\"",
        "22".repeat(32)
    ))
    .check_workload_identity(false, &initdata)
    .unwrap();
    let tpm = p("workload_identity = \"tpm\"");
    tpm.check_workload_identity(true, &zero).unwrap();
    assert_eq!(
        tpm.check_workload_identity(false, &zero).unwrap_err().field,
        "workload_identity"
    );
    let coco = p("workload_identity = \"initdata\"");
    coco.check_workload_identity(false, &initdata).unwrap();
    assert!(coco.check_workload_identity(true, &initdata).is_err());
    // Undeclared: nothing to check here (the callers that release keys refuse such a policy at start).
    p("").check_workload_identity(true, &initdata).unwrap();
}

#[test]
fn unknown_fields_and_bad_values_are_errors() {
    assert!(Policy::from_toml("alow_debug = true").is_err());
    assert!(Policy::from_toml("products = [\"Naples\"]").is_err());
    assert!(Policy::from_toml("measurements = [\"abcd\"]").is_err());
    assert!(Policy::from_toml("[minimum_tcb]\nsnpp = 1").is_err());
    assert!(Policy::from_toml("model_digests = [\"sha256:00\"]").is_err());
    assert!(Policy::from_toml("minimum_abi = \"1\"").is_err());
    assert!(Policy::from_toml("crl_max_staleness = \"7 days\"").is_err());
    assert!(Policy::from_toml("crl_max_staleness = \"7d\"").is_ok());
}

#[test]
fn products() {
    check("products = [\"Genoa\"]", GENOA).unwrap();
    check("products = [\"Siena\"]", GENOA).unwrap();
    rejects("products = [\"Milan\", \"Turin\"]", GENOA, "products");
}

#[test]
fn measurements() {
    let m = "c57729018b0a6fb90dc17bb138b0aa35e4401004283ff4a2c24d3739ff3750f52384370e77b7032862a08c440a9bc4dc";
    check(&format!("measurements = [\"{m}\"]"), GENOA).unwrap();
    let other = format!("measurements = [\"{}\"]", "00".repeat(48));
    rejects(&other, GENOA, "measurements");
    let err = check(&other, GENOA).unwrap_err();
    assert!(err.found == m && err.expected.contains(&"00".repeat(48)));
}

#[test]
fn minimum_tcb_per_component() {
    check(
        "[minimum_tcb]\nbootloader = 10\ntee = 0\nsnp = 25\nmicrocode = 84",
        GENOA,
    )
    .unwrap();
    rejects(
        "[minimum_tcb]\nbootloader = 11",
        GENOA,
        "minimum_tcb.bootloader",
    );
    rejects("[minimum_tcb]\ntee = 1", GENOA, "minimum_tcb.tee");
    rejects("[minimum_tcb]\nsnp = 26", GENOA, "minimum_tcb.snp");
    rejects(
        "[minimum_tcb]\nmicrocode = 85",
        GENOA,
        "minimum_tcb.microcode",
    );
    check("[minimum_tcb]\nfmc = 0", TURIN).unwrap();
    rejects("[minimum_tcb]\nfmc = 1", TURIN, "minimum_tcb.fmc");
    // Genoa has no FMC: a policy that demands one cannot be met.
    rejects("[minimum_tcb]\nfmc = 0", GENOA, "minimum_tcb.fmc");
    check("[minimum_launch_tcb]\nsnp = 25", GENOA).unwrap();
    rejects(
        "[minimum_launch_tcb]\nsnp = 26",
        GENOA,
        "minimum_launch_tcb.snp",
    );
    let err = check("[minimum_tcb]\nsnp = 26", GENOA).unwrap_err();
    assert_eq!((err.expected.as_str(), err.found.as_str()), (">= 26", "25"));
}

#[test]
fn guest_policy_bits() {
    // GENOA policy 0x30000: SMT allowed, no MA, no debug, not single socket, ABI 0.0.
    check("allow_smt = true", GENOA).unwrap();
    rejects("allow_smt = false", GENOA, "allow_smt");
    check("allow_migration_agent = false", GENOA).unwrap();
    rejects(
        "require_single_socket = true",
        GENOA,
        "require_single_socket",
    );
    check("minimum_abi = \"0.0\"", GENOA).unwrap();
    rejects("minimum_abi = \"1.51\"", GENOA, "minimum_abi");
}

#[test]
fn vmpl_guest_svn_and_key_type() {
    // The VLEK set also runs provisional firmware: allowed here, to look at its VMPL and key type.
    const VLEK_OK: &str = "permit_provisional_firmware = true\n";
    check("vmpls = [0]", GENOA).unwrap();
    rejects(&format!("{VLEK_OK}vmpls = [0]"), VLEK, "vmpls");
    check(&format!("{VLEK_OK}vmpls = [1]"), VLEK).unwrap();
    check("minimum_guest_svn = 0", GENOA).unwrap();
    rejects("minimum_guest_svn = 1", GENOA, "minimum_guest_svn");
    check("signing_key = \"vcek\"", GENOA).unwrap();
    rejects("signing_key = \"vlek\"", GENOA, "signing_key");
    check(
        &format!("{VLEK_OK}vmpls = [1]\nsigning_key = \"vlek\""),
        VLEK,
    )
    .unwrap();
    rejects("signing_key = \"vcek\"", VLEK, "signing_key");
    check(
        &format!("{VLEK_OK}vmpls = [1]\nsigning_key = \"either\""),
        VLEK,
    )
    .unwrap();
}

#[test]
fn exact_fields_and_allow_lists() {
    check(&format!("host_data = \"{}\"", "00".repeat(32)), GENOA).unwrap();
    rejects(
        &format!("host_data = \"{}\"", "01".repeat(32)),
        GENOA,
        "host_data",
    );
    rejects(
        &format!("family_id = \"{}\"", "01".repeat(16)),
        GENOA,
        "family_id",
    );
    rejects(
        &format!("image_id = \"{}\"", "01".repeat(16)),
        GENOA,
        "image_id",
    );
    rejects(
        &format!("report_data = \"{}\"", "01".repeat(64)),
        GENOA,
        "report_data",
    );
    rejects(
        &format!("report_id = \"{}\"", "01".repeat(32)),
        GENOA,
        "report_id",
    );
    check(&format!("report_id_ma = \"0x{}\"", "ff".repeat(32)), GENOA).unwrap();
    rejects(
        &format!("id_key_digests = [\"{}\"]", "01".repeat(48)),
        GENOA,
        "id_key_digests",
    );
    check(
        &format!("id_key_digests = [\"{}\"]", "00".repeat(48)),
        GENOA,
    )
    .unwrap();
    let chip = hex::encode(report(GENOA).chip_id);
    check(&format!("chip_ids = [\"{chip}\"]"), GENOA).unwrap();
    rejects(
        &format!("chip_ids = [\"{}\"]", "01".repeat(64)),
        GENOA,
        "chip_ids",
    );
    rejects("require_author_key = true", GENOA, "require_author_key");
    rejects("require_id_block = true", GENOA, "require_id_block");
    check("require_id_block = false", GENOA).unwrap();
    rejects(
        &format!("author_key_digests = [\"{}\"]", "00".repeat(48)),
        GENOA,
        "require_author_key",
    );
}

#[test]
fn firmware_versions_and_provisional_firmware() {
    // GENOA: current = committed = 1.55.43.
    check("minimum_firmware = \"1.55.43\"", GENOA).unwrap();
    rejects(
        "minimum_firmware = \"1.55.44\"",
        GENOA,
        "minimum_firmware (current)",
    );
    check("permit_provisional_firmware = false", GENOA).unwrap();
    // VLEK set: committed TCB (ucode 219) differs from current (ucode 220).
    rejects(
        "permit_provisional_firmware = false",
        VLEK,
        "permit_provisional_firmware (committed_tcb)",
    );
    check("permit_provisional_firmware = true\nvmpls = [1]", VLEK).unwrap();
}

#[test]
fn platform_info_bits() {
    // GENOA platform_info 0x25: SMT, ECC, alias check complete; no TSME.
    check(
        "[platform]\nsmt_enabled = true\necc_enabled = true\ntsme_enabled = false\nalias_check_complete = true",
        GENOA,
    )
    .unwrap();
    rejects(
        "[platform]\ntsme_enabled = true",
        GENOA,
        "platform.tsme_enabled",
    );
    rejects(
        "[platform]\nciphertext_hiding_enabled = true",
        GENOA,
        "platform.ciphertext_hiding_enabled",
    );
    rejects(
        "[platform]\nrapl_disabled = true",
        GENOA,
        "platform.rapl_disabled",
    );
}

#[test]
fn model_digests() {
    let d = [7u8; 48];
    let p = Policy::from_toml(&format!("model_digests = [\"sha384:{}\"]", hex::encode(d))).unwrap();
    p.check_model_digest(&d).unwrap();
    assert_eq!(
        p.check_model_digest(&[8; 48]).unwrap_err().field,
        "model_digests"
    );
    Policy::baseline().check_model_digest(&[8; 48]).unwrap();
}

#[test]
fn model_signers() {
    let (d, s) = ([7u8; 48], [9u8; 32]);
    let pin = format!("sha256:{}", hex::encode(s));
    let p = Policy::from_toml(&format!("model_signers = [\"{pin}\"]")).unwrap();
    p.check_model(&d, Some(&s)).unwrap();
    let other = p.check_model(&d, Some(&[1; 32])).unwrap_err();
    assert_eq!(other.field, "model_signers");
    assert_eq!(other.expected, format!("signed by one of [{pin}]"));
    // Pinning a signer makes the digest alone insufficient (key release knows no signer).
    assert!(p
        .check_model_digest(&d)
        .unwrap_err()
        .found
        .contains("no verified signer"));
    // Written like every digest pin: prefix and length checked.
    for bad in [
        "sha384:00",
        "09",
        &format!("sha256:{}", hex::encode([9u8; 31])),
    ] {
        assert!(
            Policy::from_toml(&format!("model_signers = [\"{bad}\"]")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn release_log_requirement_parses_strictly_and_other_verifiers_refuse_it() {
    let p = Policy::from_toml(
        "[release_log]\nkey = \"example.com/log+01020304+AQ==\"\nproofs = \"proofs.json\"\n",
    )
    .unwrap();
    let log = p.release_log.as_ref().unwrap();
    assert_eq!(log.proofs, PathBuf::from("proofs.json"));
    let err = p.refuse_release_log("the key broker").unwrap_err();
    assert!(
        err.contains("the key broker") && err.contains("release_log"),
        "{err}"
    );
    assert!(Policy::baseline().refuse_release_log("x").is_ok());
    // Both fields are required, and nothing else is accepted.
    assert!(Policy::from_toml("[release_log]\nkey = \"k\"\n").is_err());
    assert!(
        Policy::from_toml("[release_log]\nkey = \"k\"\nproofs = \"p\"\nwitness = 1\n").is_err()
    );
}
